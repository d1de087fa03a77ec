//! What the machines of one run share in one region, made once by the first machine that needs
//! it: the key pair (its private key in the run directory), the security group admitting SSH
//! from one CIDR, and, per machine spec that asks for one, a placement group. Their names come
//! from the run id, so a retried or resumed create finds them instead of making more.

use std::path::{Path, PathBuf};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    IpPermission, IpRange, KeyFormat, KeyType, PlacementStrategy, ResourceType,
};
use qa_cloud::aws::tags::{filter, resource_tags, tag_spec};
use qa_cloud::aws::{AwsMachine, config, net};
use qa_core::journal::ResourceLedger;
use qa_core::types::ResourceKey;
use qa_core::{Leftovers, MachineRequest, ProvisionError, RunContext};

use super::AwsProvisioner;
use super::errors::{
    PResult, api_error, close_if_refused, err, named, refused_or_unknown, with_leftovers,
};
use super::records::{
    KIND_KEY_PAIR, KIND_PLACEMENT_GROUP, KIND_SECURITY_GROUP, created, details, existing, intent,
    resource_name,
};

/// What the machines of one run share in a region.
pub(super) struct RunShared {
    /// Their journal keys, for an error's leftovers.
    pub(super) keys: Vec<ResourceKey>,
    /// The key pair's name.
    pub(super) key_name: String,
    /// Where its private key is.
    pub(super) key_path: PathBuf,
    /// The security group's id.
    pub(super) group_id: String,
    /// The placement group's name, when the spec asks for one.
    pub(super) placement_group: Option<String>,
}

impl AwsProvisioner {
    /// The run's key pair, security group and (when `spec` asks) placement group in `region`,
    /// made when missing. Machines created at once wait for each other here so they share them.
    pub(super) async fn run_shared(
        &self,
        client: &Client,
        region: &str,
        spec: &AwsMachine,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<RunShared> {
        let name = request.name.as_str();
        let _guard = self.shared.lock().await;
        let (kp_key, key_name, key_path) = self
            .ensure_key_pair(client, region, run, ledger)
            .await
            .map_err(|e| named(e, name))?;
        let (sg_key, group_id) = self
            .ensure_security_group(client, region, spec, run, ledger)
            .await
            .map_err(|e| with_leftovers(named(e, name), std::slice::from_ref(&kp_key)))?;
        let mut keys = vec![kp_key, sg_key];
        let placement_group = match &spec.placement_group {
            Some(strategy) => {
                let (pg_key, pg) = self
                    .ensure_placement_group(client, region, strategy, request, run, ledger)
                    .await
                    .map_err(|e| with_leftovers(e, &keys))?;
                keys.push(pg_key);
                Some(pg)
            }
            None => None,
        };
        Ok(RunShared {
            keys,
            key_name,
            key_path,
            group_id,
            placement_group,
        })
    }

    /// The CIDR admitted to SSH: the spec's, the provisioner's, or this host's address.
    async fn ssh_cidr(&self, spec: &AwsMachine) -> PResult<String> {
        let configured = spec
            .ssh_cidr
            .clone()
            .or_else(|| self.options.ssh_cidr.clone());
        if let Some(c) = configured {
            if c == "0.0.0.0/0" || c == "::/0" {
                tracing::warn!(
                    "SSH is open to the whole internet ({c}) because the configuration says so"
                );
            }
            return Ok(c);
        }
        self.caller_cidr
            .get_or_try_init(|| async {
                let ip = net::caller_address(&self.options.caller_address_url).await.map_err(|e| {
                    err(
                        None,
                        format!(
                            "could not learn this host's public address from {} ({e}); set ssh-cidr in the plan",
                            self.options.caller_address_url
                        ),
                        Leftovers::Clear,
                    )
                })?;
                Ok::<_, ProvisionError>(if ip.contains(':') { format!("{ip}/128") } else { format!("{ip}/32") })
            })
            .await
            .cloned()
    }

    async fn ensure_key_pair(
        &self,
        client: &Client,
        region: &str,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<(ResourceKey, String, PathBuf)> {
        let name = resource_name(&["qa-run", &run.run_id.0]);
        // One key pair per region the run uses, each with its own file.
        let path = run.run_dir.join(format!("{name}.{region}.pem"));
        if let Some(r) = existing(ledger, KIND_KEY_PAIR, region, &name)
            && path.exists()
        {
            return Ok((r.key, name, path));
        }
        let key = ResourceKey(format!(
            "aws/{KIND_KEY_PAIR}/{region}/{name}/{}",
            config::client_token()
        ));
        let d = details(&[
            ("region", region),
            ("name", &name),
            ("path", &path.to_string_lossy()),
        ]);
        intent(ledger, &key, KIND_KEY_PAIR, None, None, d.clone()).await?;
        let tags = resource_tags(&run.tags, &run.test_id.0, &[("Name", &name)]);
        let create = || {
            client
                .create_key_pair()
                .key_name(&name)
                .key_type(KeyType::Ed25519)
                .key_format(KeyFormat::Pem)
                .tag_specifications(tag_spec(ResourceType::KeyPair, &tags))
                .send()
        };
        let made = match create().await {
            Err(e) if e.code() == Some("InvalidKeyPair.Duplicate") => {
                // Made by this run before a crash; its private key is lost, so make it again.
                let _ = client.delete_key_pair().key_name(&name).send().await;
                create().await
            }
            other => other,
        };
        let out = match made {
            Ok(out) => out,
            Err(e) => {
                return Err(close_if_refused(
                    ledger,
                    &key,
                    refused_or_unknown(None, "CreateKeyPair", e, &key),
                )
                .await);
            }
        };
        let material = out.key_material().unwrap_or_default();
        write_private_key(&path, material).map_err(|e| {
            err(
                None,
                format!("writing {}: {e}", path.display()),
                Leftovers::Remaining(vec![key.clone()]),
            )
        })?;
        let id = out.key_pair_id().unwrap_or(&name).to_string();
        created(ledger, &key, &id, d).await;
        Ok((key, name, path))
    }

    async fn ensure_security_group(
        &self,
        client: &Client,
        region: &str,
        spec: &AwsMachine,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<(ResourceKey, String)> {
        let name = resource_name(&["qa-run", &run.run_id.0]);
        if let Some(r) = existing(ledger, KIND_SECURITY_GROUP, region, &name) {
            return Ok((r.key.clone(), r.id.unwrap_or_default()));
        }
        let cidr = self.ssh_cidr(spec).await?;
        let vpc = match &spec.subnet {
            Some(subnet) => {
                let out = client
                    .describe_subnets()
                    .subnet_ids(subnet)
                    .send()
                    .await
                    .map_err(|e| api_error(None, "DescribeSubnets", e, Leftovers::Clear))?;
                out.subnets()
                    .first()
                    .and_then(|s| s.vpc_id())
                    .map(str::to_string)
            }
            None => None,
        };
        let key = ResourceKey(format!(
            "aws/{KIND_SECURITY_GROUP}/{region}/{name}/{}",
            config::client_token()
        ));
        let mut d = details(&[("region", region), ("name", &name), ("ssh-cidr", &cidr)]);
        if let Some(v) = &vpc {
            d.insert("vpc".into(), v.clone());
        }
        intent(ledger, &key, KIND_SECURITY_GROUP, None, None, d.clone()).await?;
        let tags = resource_tags(&run.tags, &run.test_id.0, &[("Name", &name)]);
        let created_id = client
            .create_security_group()
            .group_name(&name)
            .description(format!("qa-run {}: SSH from {cidr}", run.run_id))
            .set_vpc_id(vpc.clone())
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, &tags))
            .send()
            .await;
        let group_id = match created_id {
            Ok(out) => out.group_id().unwrap_or_default().to_string(),
            Err(e) if e.code() == Some("InvalidGroup.Duplicate") => {
                find_group_by_name(client, &name).await?.ok_or_else(|| {
                    err(
                        None,
                        format!("security group {name} exists but cannot be found"),
                        Leftovers::Unknown,
                    )
                })?
            }
            Err(e) => {
                return Err(close_if_refused(
                    ledger,
                    &key,
                    refused_or_unknown(None, "CreateSecurityGroup", e, &key),
                )
                .await);
            }
        };
        created(ledger, &key, &group_id, d).await;
        let permission = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22)
            .ip_ranges(
                IpRange::builder()
                    .cidr_ip(&cidr)
                    .description("qa-run SSH")
                    .build(),
            )
            .build();
        match client
            .authorize_security_group_ingress()
            .group_id(&group_id)
            .ip_permissions(permission)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {}
            Err(e) => {
                return Err(api_error(
                    None,
                    "AuthorizeSecurityGroupIngress",
                    e,
                    Leftovers::Remaining(vec![key]),
                ));
            }
        }
        Ok((key, group_id))
    }

    async fn ensure_placement_group(
        &self,
        client: &Client,
        region: &str,
        strategy: &str,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<(ResourceKey, String)> {
        let name = resource_name(&["qa-run", &run.run_id.0, &request.spec.name]);
        if let Some(r) = existing(ledger, KIND_PLACEMENT_GROUP, region, &name) {
            return Ok((r.key, name));
        }
        let key = ResourceKey(format!(
            "aws/{KIND_PLACEMENT_GROUP}/{region}/{name}/{}",
            config::client_token()
        ));
        let d = details(&[("region", region), ("name", &name), ("strategy", strategy)]);
        intent(ledger, &key, KIND_PLACEMENT_GROUP, None, None, d.clone()).await?;
        let tags = resource_tags(&run.tags, &run.test_id.0, &[("Name", &name)]);
        let out = client
            .create_placement_group()
            .group_name(&name)
            .strategy(PlacementStrategy::from(strategy))
            .tag_specifications(tag_spec(ResourceType::PlacementGroup, &tags))
            .send()
            .await;
        let id = match out {
            Ok(o) => o
                .placement_group()
                .and_then(|g| g.group_id())
                .unwrap_or(&name)
                .to_string(),
            Err(e) if e.code() == Some("InvalidPlacementGroup.Duplicate") => name.clone(),
            Err(e) => {
                return Err(close_if_refused(
                    ledger,
                    &key,
                    refused_or_unknown(Some(&request.name), "CreatePlacementGroup", e, &key),
                )
                .await);
            }
        };
        created(ledger, &key, &id, d).await;
        Ok((key, name))
    }
}

/// The id of the security group named `name`, if there is one.
pub(super) async fn find_group_by_name(client: &Client, name: &str) -> PResult<Option<String>> {
    let out = client
        .describe_security_groups()
        .filters(filter("group-name", &[name]))
        .send()
        .await
        .map_err(|e| api_error(None, "DescribeSecurityGroups", e, Leftovers::Unknown))?;
    Ok(out
        .security_groups()
        .first()
        .and_then(|g| g.group_id())
        .map(str::to_string))
}

/// Writes a private key readable by its owner only (`0600`), replacing an older one.
fn write_private_key(path: &Path, material: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(material.as_bytes())?;
    if !material.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    f.sync_all()
}
