//! EC2 machines ([`AwsProvisioner`]).
//!
//! Per run it makes a key pair (ed25519, private key saved `0600` in the run directory) and a
//! security group that admits TCP/22 only from one CIDR (the plan's `ssh-cidr`, the provisioner's
//! option, or the address qa-run runs from as `/32`; never `0.0.0.0/0` unless configured so). Per
//! machine spec with `placement-group` it makes a placement group. Per machine it launches one
//! instance, on demand or spot (spot falls back to on demand on a capacity error when the plan
//! says `spot-fallback`), with the spec's extra EBS volumes as block device mappings, into the
//! zone and capacity reservation of [`MachineRequest::placement`] when capacity was reserved.
//!
//! Every resource is tagged at creation (`TagSpecifications`) with [`RunContext::tags`] and is
//! journaled as an intent before the call and with its id after. `RunInstances` carries a client
//! token (also put in the tag `qa-run:client-token` on the instance and its volumes), so a retried
//! call never makes a second instance and a crash between the call and the id leaves a record from
//! which [`Provisioner::destroy`] finds the instance. Key pairs, security groups and placement
//! groups have names derived from the run id, which plays the same part.
//!
//! Teardown terminates instances and waits until they are terminated, then cancels their spot
//! requests, deletes their leftover volumes, security groups, key pairs and placement groups.
//! What is already gone counts as removed. [`Provisioner::sweep`] finds the same kinds by the
//! `qa-run:test-id` tag alone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qa_core::ProvisionError> {
//! use qa_provision::aws::{AwsProvisioner, AwsProvisionerOptions};
//! let p = AwsProvisioner::from_env(AwsProvisionerOptions {
//!     region: Some("eu-west-1".into()),
//!     ssh_cidr: Some("203.0.113.7/32".into()),
//!     ..Default::default()
//! })
//! .await?;
//! # let _ = p; Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, CapacityReservationSpecification, CapacityReservationTarget,
    EbsBlockDevice, Filter, InstanceMarketOptionsRequest, InstanceStateName, InstanceType,
    IpPermission, IpRange, KeyFormat, KeyType, MarketType, Placement as Ec2Placement,
    PlacementStrategy, ResourceType, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
    VolumeType,
};
use qa_cloud::aws::{AWS as AWS_BACKEND, AwsMachine};
use qa_core::BackendName;
use qa_core::backend::{Janitor, SweepScope};
use qa_core::journal::ResourceLedger;
use qa_core::types::{Access, HostKeyPolicy, Resource, ResourceKey, ResourceState, SshTarget};
use qa_core::{
    Leftovers, Machine, MachineRequest, ProvisionError, Provisioner, RunContext, TestId,
};
use tokio::io::AsyncReadExt;

pub mod cost;

/// The tag that carries the test id on every resource.
pub const TEST_ID_TAG: &str = "qa-run:test-id";
/// The tag that carries an instance's client token (on the instance and its volumes).
pub const CLIENT_TOKEN_TAG: &str = "qa-run:client-token";

const KIND_INSTANCE: &str = "instance";
const KIND_KEY_PAIR: &str = "key-pair";
const KIND_SECURITY_GROUP: &str = "security-group";
const KIND_PLACEMENT_GROUP: &str = "placement-group";

/// Options of [`AwsProvisioner`] that do not come from the plan.
#[derive(Debug, Clone)]
pub struct AwsProvisionerOptions {
    /// Region used when a machine's spec names none (default: the AWS configuration's).
    pub region: Option<String>,
    /// Endpoint override, e.g. an emulator on a loopback port.
    pub endpoint_url: Option<String>,
    /// CIDR admitted to SSH when the plan gives none (default: the caller's address, `/32`).
    pub ssh_cidr: Option<String>,
    /// Where the caller's public address is asked for when no CIDR is configured
    /// (`http://` only; the answer is the address as text).
    pub caller_address_url: String,
    /// Machine name (or `*` for every machine) → address to reach its SSH port at, instead of the
    /// instance's address. For tests that map instances onto a local sshd.
    pub address_overrides: BTreeMap<String, SocketAddr>,
    /// How often instance state is polled.
    pub poll_interval: Duration,
    /// How long to wait for an instance to be running, or terminated.
    pub state_timeout: Duration,
    /// Items per page asked of listing calls that page (`MaxResults`; EC2 allows 5 to 1000).
    pub page_size: i32,
    /// What cost estimates are priced from (default: [`cost::PriceTable::builtin`]).
    pub prices: cost::PriceTable,
}

impl Default for AwsProvisionerOptions {
    fn default() -> Self {
        AwsProvisionerOptions {
            region: None,
            endpoint_url: None,
            ssh_cidr: None,
            caller_address_url: "http://checkip.amazonaws.com/".into(),
            address_overrides: BTreeMap::new(),
            poll_interval: Duration::from_secs(5),
            state_timeout: Duration::from_secs(600),
            page_size: 1000,
            prices: cost::PriceTable::builtin(),
        }
    }
}

/// EC2 machines.
#[derive(Debug)]
pub struct AwsProvisioner {
    sdk: SdkConfig,
    region: String,
    options: AwsProvisionerOptions,
    // Serialises the making of per-run resources (key pair, security group, placement group)
    // so that machines created at once share them.
    shared: tokio::sync::Mutex<()>,
    caller_cidr: tokio::sync::OnceCell<String>,
}

type PResult<T> = Result<T, ProvisionError>;

fn err(machine: Option<&str>, message: impl Into<String>, leftovers: Leftovers) -> ProvisionError {
    ProvisionError::new(AWS_BACKEND, machine, message, leftovers)
}

fn describe<E: ProvideErrorMetadata + std::error::Error>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => {
            let mut s = e.to_string();
            let mut src = e.source();
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

fn is_not_found<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code().is_some_and(|c| {
        c.ends_with(".NotFound")
            || c.ends_with(".Unknown")
            || c.ends_with(".Malformed")
            || c == "InvalidGroup.NotFound"
    })
}

fn is_capacity<E: ProvideErrorMetadata>(e: &E) -> bool {
    matches!(
        e.code(),
        Some(
            "InsufficientInstanceCapacity"
                | "InsufficientCapacity"
                | "InsufficientHostCapacity"
                | "SpotMaxPriceTooLow"
        )
    )
}

/// The service answered with an error: the call made nothing.
fn refused<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code().is_some()
}

fn api_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    machine: Option<&str>,
    call: &str,
    e: E,
    leftovers: Leftovers,
) -> ProvisionError {
    let hint = match e.code() {
        Some("AuthFailure" | "UnauthorizedOperation") => " (check credentials and IAM permissions)",
        Some(c) if c.contains("LimitExceeded") => {
            " (an account limit: ask for more or use fewer resources)"
        }
        Some(c) if c.starts_with("Invalid") => " (check the plan's aws section)",
        _ => "",
    };
    err(
        machine,
        format!("{call}: {}{hint}", describe(&e)),
        leftovers,
    )
    .with_source(e)
}

fn new_token() -> String {
    format!("qa-{:032x}", rand::random::<u128>())
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn tag_spec(rt: ResourceType, tags: &[Tag]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(tags.to_vec()))
        .build()
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// Device names for extra volumes: `/dev/sdf` … `/dev/sdz`.
fn device_names(n: usize) -> Option<Vec<String>> {
    let names: Vec<String> = (b'f'..=b'z')
        .map(|c| format!("/dev/sd{}", c as char))
        .collect();
    (n <= names.len()).then(|| names[..n].to_vec())
}

/// A name EC2 accepts for key pairs, security and placement groups (letters, digits, `-`).
fn resource_name(parts: &[&str]) -> String {
    let raw = parts.join("-");
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.chars().take(200).collect()
}

fn run_tags(run: &RunContext, extra: &[(&str, &str)]) -> Vec<Tag> {
    let mut tags: BTreeMap<String, String> = run.tags.clone();
    tags.entry(TEST_ID_TAG.into())
        .or_insert_with(|| run.test_id.0.clone());
    tags.entry("created-by".into())
        .or_insert_with(|| "qa-run".into());
    for (k, v) in extra {
        tags.insert(k.to_string(), v.to_string());
    }
    tags.iter().map(|(k, v)| tag(k, v)).collect()
}

fn details(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl AwsProvisioner {
    /// Loads credentials and region the usual AWS way (environment, profile, instance role).
    pub async fn from_env(options: AwsProvisionerOptions) -> PResult<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let sdk = loader.load().await;
        Self::from_sdk_config(&sdk, options)
    }

    /// Uses an SDK configuration the caller built (credentials, region, endpoint).
    pub fn from_sdk_config(sdk: &SdkConfig, options: AwsProvisionerOptions) -> PResult<Self> {
        let region = options
            .region
            .clone()
            .or_else(|| sdk.region().map(|r| r.to_string()))
            .ok_or_else(|| {
                err(
                    None,
                    "no AWS region configured (set it in the plan, AWS_REGION or the profile)",
                    Leftovers::Clear,
                )
            })?;
        Ok(AwsProvisioner {
            sdk: sdk.clone(),
            region,
            options,
            shared: tokio::sync::Mutex::new(()),
            caller_cidr: tokio::sync::OnceCell::new(),
        })
    }

    /// The default region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The same provisioner (credentials, endpoint, options), working in `region`.
    pub fn in_region(&self, region: &str) -> AwsProvisioner {
        AwsProvisioner {
            sdk: self.sdk.clone(),
            region: region.to_string(),
            options: self.options.clone(),
            shared: tokio::sync::Mutex::new(()),
            caller_cidr: tokio::sync::OnceCell::new(),
        }
    }

    /// [`Provisioner::sweep`] in each of `regions` at once; every line says its region. When
    /// some fail, the others are still swept and the error names the failed ones (`what` says
    /// which regions these were).
    async fn sweep_regions(
        &self,
        test_id: &TestId,
        regions: Vec<String>,
        what: &str,
    ) -> PResult<Vec<String>> {
        let mut tasks = tokio::task::JoinSet::new();
        for region in regions {
            let p = self.in_region(&region);
            let test_id = test_id.clone();
            tasks.spawn(async move {
                let out = p.sweep_here(&test_id).await;
                (region, out)
            });
        }
        let (mut lines, mut failed) = (Vec::new(), Vec::new());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((region, Ok(l))) => {
                    lines.extend(l.into_iter().map(|l| format!("{region}: {l}")))
                }
                Ok((region, Err(e))) => failed.push(format!("{region}: {e}")),
                Err(e) => failed.push(format!("a region's sweep: {e}")),
            }
        }
        if failed.is_empty() {
            return Ok(lines);
        }
        failed.sort();
        Err(err(
            None,
            format!(
                "sweeping {what}: {} (removed meanwhile: {})",
                failed.join("; "),
                lines.len()
            ),
            Leftovers::Unknown,
        ))
    }

    /// The regions enabled for the account (DescribeRegions).
    pub async fn regions(&self) -> PResult<Vec<String>> {
        let out = self
            .client(&self.region)
            .describe_regions()
            .send()
            .await
            .map_err(|e| api_error(None, "DescribeRegions", e, Leftovers::Unknown))?;
        Ok(out
            .regions()
            .iter()
            .filter_map(|r| r.region_name().map(str::to_string))
            .collect())
    }

    fn client(&self, region: &str) -> Client {
        let conf = aws_sdk_ec2::config::Builder::from(&self.sdk)
            .region(Region::new(region.to_string()))
            .build();
        Client::from_conf(conf)
    }

    fn spec_region(&self, spec: &AwsMachine) -> String {
        spec.region.clone().unwrap_or_else(|| self.region.clone())
    }

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
                let ip = caller_address(&self.options.caller_address_url).await.map_err(|e| {
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

    /// A resource of this run already made, from the ledger.
    fn existing(
        ledger: &dyn ResourceLedger,
        kind: &str,
        region: &str,
        name: &str,
    ) -> Option<Resource> {
        ledger.resources().into_iter().find(|r| {
            r.backend == AWS_BACKEND
                && r.kind == kind
                && r.state == ResourceState::Created
                && r.details.get("region").map(String::as_str) == Some(region)
                && r.details.get("name").map(String::as_str) == Some(name)
        })
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
        if let Some(r) = Self::existing(ledger, KIND_KEY_PAIR, region, &name)
            && path.exists()
        {
            return Ok((r.key, name, path));
        }
        let key = ResourceKey(format!(
            "aws/{KIND_KEY_PAIR}/{region}/{name}/{}",
            new_token()
        ));
        let d = details(&[
            ("region", region),
            ("name", &name),
            ("path", &path.to_string_lossy()),
        ]);
        intent(ledger, &key, KIND_KEY_PAIR, None, None, d.clone()).await?;
        let tags = run_tags(run, &[("Name", &name)]);
        let create = || {
            client
                .create_key_pair()
                .key_name(&name)
                .key_type(KeyType::Ed25519)
                .key_format(KeyFormat::Pem)
                .tag_specifications(tag_spec(ResourceType::KeyPair, &tags))
                .send()
        };
        let out = match create().await {
            Ok(out) => out,
            Err(e) if e.code() == Some("InvalidKeyPair.Duplicate") => {
                // Made by this run before a crash; its private key is lost, so make it again.
                let _ = client.delete_key_pair().key_name(&name).send().await;
                match create().await {
                    Ok(o) => o,
                    Err(e) => {
                        return Err(close_if_refused(
                            ledger,
                            &key,
                            self.refused_or_unknown(None, "CreateKeyPair", e, &key),
                        )
                        .await);
                    }
                }
            }
            Err(e) => {
                return Err(close_if_refused(
                    ledger,
                    &key,
                    self.refused_or_unknown(None, "CreateKeyPair", e, &key),
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
        if let Some(r) = Self::existing(ledger, KIND_SECURITY_GROUP, region, &name) {
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
            new_token()
        ));
        let mut d = details(&[("region", region), ("name", &name), ("ssh-cidr", &cidr)]);
        if let Some(v) = &vpc {
            d.insert("vpc".into(), v.clone());
        }
        intent(ledger, &key, KIND_SECURITY_GROUP, None, None, d.clone()).await?;
        let tags = run_tags(run, &[("Name", &name)]);
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
                    self.refused_or_unknown(None, "CreateSecurityGroup", e, &key),
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
        if let Some(r) = Self::existing(ledger, KIND_PLACEMENT_GROUP, region, &name) {
            return Ok((r.key, name));
        }
        let key = ResourceKey(format!(
            "aws/{KIND_PLACEMENT_GROUP}/{region}/{name}/{}",
            new_token()
        ));
        let d = details(&[("region", region), ("name", &name), ("strategy", strategy)]);
        intent(ledger, &key, KIND_PLACEMENT_GROUP, None, None, d.clone()).await?;
        let tags = run_tags(run, &[("Name", &name)]);
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
                    self.refused_or_unknown(Some(&request.name), "CreatePlacementGroup", e, &key),
                )
                .await);
            }
        };
        created(ledger, &key, &id, d).await;
        Ok((key, name))
    }

    /// An error of a create call: refused by EC2 (nothing made: the intent is closed) or not
    /// answered (it may exist: the intent stays for teardown).
    fn refused_or_unknown<E>(
        &self,
        machine: Option<&str>,
        call: &str,
        e: aws_sdk_ec2::error::SdkError<E>,
        key: &ResourceKey,
    ) -> ProvisionError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        aws_sdk_ec2::error::SdkError<E>: ProvideErrorMetadata,
    {
        // Closing a refused intent happens in the caller (it owns the ledger); here the leftovers
        // say whether teardown must look.
        let left = if refused(&e) {
            Leftovers::Clear
        } else {
            Leftovers::Remaining(vec![key.clone()])
        };
        api_error(machine, call, e, left)
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &self,
        client: &Client,
        region: &str,
        request: &MachineRequest,
        spec: &AwsMachine,
        spot: bool,
        shared: &Shared,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<(ResourceKey, aws_sdk_ec2::types::Instance), (ProvisionError, bool)> {
        let token = new_token();
        let key = ResourceKey(format!(
            "aws/{KIND_INSTANCE}/{region}/{}/{token}",
            request.name
        ));
        let zone = request.placement.as_ref().map(|p| p.zone.clone());
        let reservation = request
            .placement
            .as_ref()
            .and_then(|p| p.reservations.get(&spec.instance_type))
            .cloned();
        let mut d = details(&[
            ("region", region),
            ("instance-type", &spec.instance_type),
            ("lifecycle", if spot { "spot" } else { "on-demand" }),
        ]);
        if let Some(z) = &zone {
            d.insert("zone".into(), z.clone());
        }
        if let Some(r) = &reservation {
            d.insert("capacity-reservation".into(), r.clone());
        }
        // For the cost estimate: what the instance carries and since when.
        let volume_list: Vec<String> = spec
            .volumes
            .iter()
            .flat_map(|v| {
                let t = v.r#type.clone().unwrap_or_else(|| "gp3".into());
                std::iter::repeat_n(format!("{t}:{}", v.size_gb), v.count as usize)
            })
            .collect();
        d.insert("volumes".into(), volume_list.join(","));
        intent(
            ledger,
            &key,
            KIND_INSTANCE,
            Some(&request.name),
            Some(&token),
            d.clone(),
        )
        .await
        .map_err(|e| (e, false))?;

        let tags = run_tags(run, &[("Name", &request.name), (CLIENT_TOKEN_TAG, &token)]);
        let volumes: Vec<(String, u32)> = spec
            .volumes
            .iter()
            .flat_map(|v| {
                std::iter::repeat_n(
                    (v.r#type.clone().unwrap_or_else(|| "gp3".into()), v.size_gb),
                    v.count as usize,
                )
            })
            .collect();
        let names = device_names(volumes.len()).ok_or_else(|| {
            (
                err(
                    Some(&request.name),
                    format!("{} extra volumes; at most 21 fit", volumes.len()),
                    Leftovers::Clear,
                ),
                false,
            )
        })?;
        let mut call = client
            .run_instances()
            .client_token(&token)
            .image_id(&spec.image)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .key_name(&shared.key_name)
            .security_group_ids(&shared.group_id)
            .set_subnet_id(spec.subnet.clone())
            .tag_specifications(tag_spec(ResourceType::Instance, &tags))
            .tag_specifications(tag_spec(ResourceType::Volume, &tags));
        for ((vtype, size), device) in volumes.iter().zip(names) {
            call = call.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(*size as i32)
                            .volume_type(VolumeType::from(vtype.as_str()))
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        if zone.is_some() || shared.placement_group.is_some() {
            call = call.placement(
                Ec2Placement::builder()
                    .set_availability_zone(zone.clone())
                    .set_group_name(shared.placement_group.clone())
                    .build(),
            );
        }
        if let Some(r) = &reservation {
            call = call.capacity_reservation_specification(
                CapacityReservationSpecification::builder()
                    .capacity_reservation_target(
                        CapacityReservationTarget::builder()
                            .capacity_reservation_id(r)
                            .build(),
                    )
                    .build(),
            );
        }
        if spot {
            call = call
                .instance_market_options(
                    InstanceMarketOptionsRequest::builder()
                        .market_type(MarketType::Spot)
                        .spot_options(
                            SpotMarketOptions::builder()
                                .spot_instance_type(SpotInstanceType::OneTime)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(tag_spec(ResourceType::SpotInstancesRequest, &tags));
        }
        // A capacity error retried by the SDK only delays the fallback; the client token makes
        // any retry the caller does safe.
        let out = call
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default()
                    .retry_config(RetryConfig::standard().with_max_attempts(1)),
            )
            .send()
            .await;
        match out {
            Ok(out) => {
                let Some(instance) = out.instances().first().cloned() else {
                    return Err((
                        err(
                            Some(&request.name),
                            "RunInstances returned no instance",
                            Leftovers::Remaining(vec![key]),
                        ),
                        false,
                    ));
                };
                let id = instance.instance_id().unwrap_or_default().to_string();
                if let Some(z) = instance.placement().and_then(|p| p.availability_zone()) {
                    d.insert("zone".into(), z.to_string());
                }
                d.insert("launched-at".into(), cost::now_unix().to_string());
                created(ledger, &key, &id, d).await;
                Ok((key, instance))
            }
            Err(e) => {
                let capacity = is_capacity(&e);
                if refused(&e) {
                    let _ = ledger.destroyed(&key).await;
                }
                let left = if refused(&e) {
                    Leftovers::Clear
                } else {
                    Leftovers::Remaining(vec![key])
                };
                let call_name = if spot {
                    "RunInstances (spot)"
                } else {
                    "RunInstances"
                };
                Err((api_error(Some(&request.name), call_name, e, left), capacity))
            }
        }
    }

    async fn wait_state(
        &self,
        client: &Client,
        ids: &[String],
        want: InstanceStateName,
        machine: Option<&str>,
    ) -> PResult<Vec<aws_sdk_ec2::types::Instance>> {
        let deadline = Instant::now() + self.options.state_timeout;
        // Quick looks first (a small instance is often running within seconds), then every
        // poll interval.
        let mut pause = self.options.poll_interval.min(Duration::from_millis(250));
        loop {
            let out = client
                .describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await;
            let instances: Vec<_> = match out {
                Ok(o) => o
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances().iter().cloned())
                    .collect(),
                Err(e) if is_not_found(&e) && want == InstanceStateName::Terminated => {
                    return Ok(Vec::new());
                }
                Err(e) => {
                    return Err(api_error(
                        machine,
                        "DescribeInstances",
                        e,
                        Leftovers::Unknown,
                    ));
                }
            };
            let states: Vec<InstanceStateName> = instances
                .iter()
                .map(|i| {
                    i.state()
                        .and_then(|s| s.name())
                        .cloned()
                        .unwrap_or(InstanceStateName::Pending)
                })
                .collect();
            if states.iter().all(|s| *s == want) {
                return Ok(instances);
            }
            if want == InstanceStateName::Running
                && states.iter().any(|s| {
                    matches!(
                        s,
                        InstanceStateName::Terminated | InstanceStateName::ShuttingDown
                    )
                })
            {
                return Err(err(
                    machine,
                    format!("instance {ids:?} ended while starting ({states:?})"),
                    Leftovers::Unknown,
                ));
            }
            if Instant::now() >= deadline {
                return Err(err(
                    machine,
                    format!(
                        "instances {ids:?} not {} after {:?} (now {states:?})",
                        want.as_str(),
                        self.options.state_timeout
                    ),
                    Leftovers::Unknown,
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.options.poll_interval);
        }
    }

    fn ssh_address(
        &self,
        machine: &str,
        instance: &aws_sdk_ec2::types::Instance,
    ) -> Option<(String, u16)> {
        if let Some(a) = self
            .options
            .address_overrides
            .get(machine)
            .or_else(|| self.options.address_overrides.get("*"))
        {
            return Some((a.ip().to_string(), a.port()));
        }
        instance
            .public_ip_address()
            .or(instance.private_ip_address())
            .map(|ip| (ip.to_string(), 22))
    }

    /// Instances made by one journal record: by id, or by the client-token tag when only the
    /// intent was recorded. Terminated ones are left out.
    async fn instances_of(
        &self,
        client: &Client,
        r: &Resource,
    ) -> PResult<Vec<aws_sdk_ec2::types::Instance>> {
        let mut q = client.describe_instances().filters(filter(
            "instance-state-name",
            &["pending", "running", "stopping", "stopped", "shutting-down"],
        ));
        match (&r.id, &r.client_token) {
            (Some(id), _) => q = q.instance_ids(id),
            (None, Some(token)) => {
                q = q.filters(filter(&format!("tag:{CLIENT_TOKEN_TAG}"), &[token]))
            }
            (None, None) => return Ok(Vec::new()),
        }
        match q.send().await {
            Ok(o) => Ok(o
                .reservations()
                .iter()
                .flat_map(|r| r.instances().iter().cloned())
                .collect()),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(api_error(
                r.machine.as_deref(),
                "DescribeInstances",
                e,
                Leftovers::Remaining(vec![r.key.clone()]),
            )),
        }
    }

    /// Terminates instances, waits until they are gone, cancels their spot requests and deletes
    /// their volumes that outlived them. Returns a line per thing removed.
    async fn remove_instances(
        &self,
        client: &Client,
        instances: &[aws_sdk_ec2::types::Instance],
    ) -> PResult<Vec<String>> {
        let ids: Vec<String> = instances
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        let mut lines = Vec::new();
        if ids.is_empty() {
            return Ok(lines);
        }
        match client
            .terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_error(None, "TerminateInstances", e, Leftovers::Unknown)),
        }
        self.wait_state(client, &ids, InstanceStateName::Terminated, None)
            .await?;
        lines.extend(ids.iter().map(|i| format!("instance {i}")));
        let spot: Vec<String> = instances
            .iter()
            .filter_map(|i| i.spot_instance_request_id().map(str::to_string))
            .collect();
        if !spot.is_empty() {
            match client
                .cancel_spot_instance_requests()
                .set_spot_instance_request_ids(Some(spot.clone()))
                .send()
                .await
            {
                Ok(_) => lines.extend(spot.iter().map(|s| format!("spot-request {s}"))),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(api_error(
                        None,
                        "CancelSpotInstanceRequests",
                        e,
                        Leftovers::Unknown,
                    ));
                }
            }
        }
        for i in instances {
            let tokens: Vec<&str> = i
                .tags()
                .iter()
                .filter(|t| t.key() == Some(CLIENT_TOKEN_TAG))
                .filter_map(|t| t.value())
                .collect();
            for token in tokens {
                lines.extend(
                    self.delete_volumes(
                        client,
                        &[filter(&format!("tag:{CLIENT_TOKEN_TAG}"), &[token])],
                    )
                    .await?,
                );
            }
        }
        Ok(lines)
    }

    async fn delete_volumes(&self, client: &Client, filters: &[Filter]) -> PResult<Vec<String>> {
        let mut lines = Vec::new();
        let mut wanted = filters.to_vec();
        wanted.push(filter("status", &["available", "creating", "error"]));
        for v in list_volumes(client, wanted, Leftovers::Unknown).await? {
            let Some(id) = v.volume_id() else { continue };
            match client.delete_volume().volume_id(id).send().await {
                Ok(_) => lines.push(format!("volume {id}")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error(None, "DeleteVolume", e, Leftovers::Unknown)),
            }
        }
        Ok(lines)
    }

    async fn delete_security_group(&self, client: &Client, group_id: &str) -> PResult<bool> {
        // A security group stays in use for a while after its instances terminate.
        let deadline = Instant::now() + self.options.state_timeout;
        loop {
            match client
                .delete_security_group()
                .group_id(group_id)
                .send()
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if is_not_found(&e) => return Ok(false),
                Err(e) if e.code() == Some("DependencyViolation") && Instant::now() < deadline => {
                    tokio::time::sleep(self.options.poll_interval).await;
                }
                Err(e) => {
                    return Err(api_error(
                        None,
                        &format!("DeleteSecurityGroup {group_id}"),
                        e,
                        Leftovers::Unknown,
                    ));
                }
            }
        }
    }

    async fn delete_key_pair(&self, client: &Client, name: &str) -> PResult<bool> {
        let exists = match client.describe_key_pairs().key_names(name).send().await {
            Ok(o) => !o.key_pairs().is_empty(),
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(api_error(None, "DescribeKeyPairs", e, Leftovers::Unknown)),
        };
        if !exists {
            return Ok(false);
        }
        match client.delete_key_pair().key_name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api_error(
                None,
                &format!("DeleteKeyPair {name}"),
                e,
                Leftovers::Unknown,
            )),
        }
    }

    async fn delete_placement_group(&self, client: &Client, name: &str) -> PResult<bool> {
        match client
            .delete_placement_group()
            .group_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api_error(
                None,
                &format!("DeletePlacementGroup {name}"),
                e,
                Leftovers::Unknown,
            )),
        }
    }

    /// Removes one journal record's resource (not instances: those go together first).
    async fn remove_record(&self, client: &Client, r: &Resource) -> PResult<()> {
        let name = r.details.get("name").cloned().unwrap_or_default();
        match r.kind.as_str() {
            KIND_SECURITY_GROUP => {
                let id = match &r.id {
                    Some(id) => Some(id.clone()),
                    None => find_group_by_name(client, &name).await?,
                };
                if let Some(id) = id {
                    self.delete_security_group(client, &id).await?;
                }
            }
            KIND_KEY_PAIR => {
                if !name.is_empty() {
                    self.delete_key_pair(client, &name).await?;
                }
                if let Some(path) = r.details.get("path") {
                    let _ = std::fs::remove_file(path);
                }
            }
            KIND_PLACEMENT_GROUP if !name.is_empty() => {
                self.delete_placement_group(client, &name).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The tag that says until when a resource may live.
pub const KEEP_UNTIL_TAG: &str = "qa-run:keep-until";

/// A resource qa-run made that outlived its `qa-run:keep-until` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredResource {
    /// `instance`, `volume`, `security-group`, `key-pair` or `placement-group`.
    pub kind: String,
    /// Its EC2 id (name, for key pairs and placement groups).
    pub id: String,
    /// The test id it carries.
    pub test_id: Option<String>,
    /// Its `qa-run:keep-until` tag.
    pub keep_until: String,
}

fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn expired_entry(
    kind: &str,
    id: Option<&str>,
    tags: &[Tag],
    now_unix: i64,
) -> Option<ExpiredResource> {
    let keep_until = tag_value(tags, KEEP_UNTIL_TAG)?;
    let until =
        time::OffsetDateTime::parse(keep_until, &time::format_description::well_known::Rfc3339)
            .ok()?
            .unix_timestamp();
    (until < now_unix).then(|| ExpiredResource {
        kind: kind.to_string(),
        id: id.unwrap_or_default().to_string(),
        test_id: tag_value(tags, TEST_ID_TAG).map(str::to_string),
        keep_until: keep_until.to_string(),
    })
}

impl AwsProvisioner {
    /// Resources in the default region that qa-run made (`created-by=qa-run`) and whose
    /// `qa-run:keep-until` is before `now_unix`: what a janitor lists. Terminated instances and
    /// resources with an unreadable keep-until are left out.
    pub async fn expired(&self, now_unix: i64) -> PResult<Vec<ExpiredResource>> {
        let client = self.client(&self.region);
        let ours = [
            filter("tag:created-by", &["qa-run"]),
            filter("tag-key", &[KEEP_UNTIL_TAG]),
        ];
        let mut out = Vec::new();
        let mut wanted = ours.to_vec();
        wanted.push(filter(
            "instance-state-name",
            &["pending", "running", "stopping", "stopped"],
        ));
        for i in &list_instances(&client, wanted, self.options.page_size, Leftovers::Clear).await? {
            out.extend(expired_entry(
                KIND_INSTANCE,
                i.instance_id(),
                i.tags(),
                now_unix,
            ));
        }
        for v in &list_volumes(&client, ours.to_vec(), Leftovers::Clear).await? {
            out.extend(expired_entry("volume", v.volume_id(), v.tags(), now_unix));
        }
        for g in &list_security_groups(&client, ours.to_vec(), Leftovers::Clear).await? {
            out.extend(expired_entry(
                KIND_SECURITY_GROUP,
                g.group_id(),
                g.tags(),
                now_unix,
            ));
        }
        let keys = client
            .describe_key_pairs()
            .set_filters(Some(ours.to_vec()))
            .send()
            .await
            .map_err(|e| api_error(None, "DescribeKeyPairs", e, Leftovers::Clear))?;
        for k in keys.key_pairs() {
            out.extend(expired_entry(
                KIND_KEY_PAIR,
                k.key_name(),
                k.tags(),
                now_unix,
            ));
        }
        let pgs = client
            .describe_placement_groups()
            .set_filters(Some(ours.to_vec()))
            .send()
            .await
            .map_err(|e| api_error(None, "DescribePlacementGroups", e, Leftovers::Clear))?;
        for g in pgs.placement_groups() {
            out.extend(expired_entry(
                KIND_PLACEMENT_GROUP,
                g.group_name(),
                g.tags(),
                now_unix,
            ));
        }
        Ok(out)
    }

    /// Sweeps every test id that has an expired resource; returns a line per resource removed.
    /// Everything of such a test id goes, as its run is over.
    pub async fn remove_expired(&self, now_unix: i64) -> PResult<Vec<String>> {
        let mut test_ids: Vec<String> = self
            .expired(now_unix)
            .await?
            .into_iter()
            .filter_map(|e| e.test_id)
            .collect();
        test_ids.sort();
        test_ids.dedup();
        let mut lines = Vec::new();
        for t in test_ids {
            lines.extend(self.sweep_here(&TestId(t)).await?);
        }
        Ok(lines)
    }
}

/// What the machines of one run share.
struct Shared {
    keys: Vec<ResourceKey>,
    key_name: String,
    key_path: PathBuf,
    group_id: String,
    placement_group: Option<String>,
}

async fn intent(
    ledger: &dyn ResourceLedger,
    key: &ResourceKey,
    kind: &str,
    machine: Option<&str>,
    token: Option<&str>,
    details: BTreeMap<String, String>,
) -> PResult<()> {
    ledger
        .intent(Resource {
            key: key.clone(),
            backend: AWS_BACKEND,
            kind: kind.into(),
            machine: machine.map(str::to_string),
            id: None,
            client_token: token.map(str::to_string),
            details,
            state: ResourceState::Intent,
        })
        .await
        .map_err(|e| {
            err(
                machine,
                format!("journal: {e}; {kind} not created"),
                Leftovers::Clear,
            )
            .with_source(e)
        })
}

/// A create refused by EC2 made nothing: its intent is closed.
async fn close_if_refused(
    ledger: &dyn ResourceLedger,
    key: &ResourceKey,
    e: ProvisionError,
) -> ProvisionError {
    if e.leftovers == Leftovers::Clear {
        let _ = ledger.destroyed(key).await;
    }
    e
}

async fn created(
    ledger: &dyn ResourceLedger,
    key: &ResourceKey,
    id: &str,
    details: BTreeMap<String, String>,
) {
    if let Err(e) = ledger.created(key, id, details).await {
        // The intent is journaled and the resource is tagged: teardown still finds it.
        tracing::warn!(%key, %id, "journal: {e}");
    }
}

async fn find_group_by_name(client: &Client, name: &str) -> PResult<Option<String>> {
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

/// Asks an `http://` URL for this host's public address.
/// Every instance matching `filters`, across pages.
async fn list_instances(
    client: &Client,
    filters: Vec<Filter>,
    page_size: i32,
    leftovers: Leftovers,
) -> PResult<Vec<aws_sdk_ec2::types::Instance>> {
    let mut pages = client
        .describe_instances()
        .set_filters(Some(filters))
        .max_results(page_size.clamp(5, 1000))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api_error(None, "DescribeInstances", e, leftovers.clone()))?;
        out.extend(
            page.reservations()
                .iter()
                .flat_map(|r| r.instances().iter().cloned()),
        );
    }
    Ok(out)
}

/// Every volume matching `filters`, across pages.
async fn list_volumes(
    client: &Client,
    filters: Vec<Filter>,
    leftovers: Leftovers,
) -> PResult<Vec<aws_sdk_ec2::types::Volume>> {
    let mut pages = client
        .describe_volumes()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api_error(None, "DescribeVolumes", e, leftovers.clone()))?;
        out.extend(page.volumes().iter().cloned());
    }
    Ok(out)
}

/// Every security group matching `filters`, across pages.
async fn list_security_groups(
    client: &Client,
    filters: Vec<Filter>,
    leftovers: Leftovers,
) -> PResult<Vec<aws_sdk_ec2::types::SecurityGroup>> {
    let mut pages = client
        .describe_security_groups()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| api_error(None, "DescribeSecurityGroups", e, leftovers.clone()))?;
        out.extend(page.security_groups().iter().cloned());
    }
    Ok(out)
}

/// Where a machine's run files go: below the login user's home (root's is `/root`).
fn remote_workdir(user: &str, run_id: &str, machine: &str) -> String {
    let home = if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    };
    format!("{home}/qa-run/{run_id}/{machine}")
}

async fn caller_address(url: &str) -> std::io::Result<String> {
    use tokio::io::AsyncWriteExt;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs are supported"))?;
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let host = hostport.split(':').next().unwrap_or(hostport);
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: qa-run\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no HTTP body"))?;
        if head.split(' ').nth(1).is_none_or(|c| c != "200") {
            return Err(std::io::Error::other(format!(
                "answer: {}",
                head.lines().next().unwrap_or("")
            )));
        }
        let ip = body.trim().to_string();
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| std::io::Error::other(format!("not an address: {ip:?}")))?;
        Ok(ip)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}

/// Connects and reads an SSH banner.
async fn ssh_banner(host: &str, port: u16) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| std::io::Error::other("connect timed out"))??;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no banner"))??;
    if &buf == b"SSH-" {
        Ok(())
    } else {
        Err(std::io::Error::other("not an SSH server"))
    }
}

#[async_trait]
impl Provisioner for AwsProvisioner {
    fn backend(&self) -> BackendName {
        AWS_BACKEND
    }

    fn estimate_cost(
        &self,
        resources: &[Resource],
        end_unix: i64,
    ) -> Option<qa_core::report::CostEstimate> {
        Some(cost::estimate(resources, end_unix, &self.options.prices).to_report())
    }

    async fn create(
        &self,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<Machine> {
        let name = request.name.as_str();
        let spec = match AwsMachine::of(&request.spec) {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                return Err(err(
                    Some(name),
                    format!("the machine's aws section does not read: {e}"),
                    Leftovers::Clear,
                ));
            }
            None => {
                return Err(err(
                    Some(name),
                    "the machine has no aws section",
                    Leftovers::Clear,
                ));
            }
        };
        let spec = &spec;
        let region = self.spec_region(spec);
        let client = self.client(&region);

        let shared = {
            let _guard = self.shared.lock().await;
            let (kp_key, key_name, key_path) = self
                .ensure_key_pair(&client, &region, run, ledger)
                .await
                .map_err(|e| named(e, name))?;
            let (sg_key, group_id) = self
                .ensure_security_group(&client, &region, spec, run, ledger)
                .await
                .map_err(|e| with_leftovers(named(e, name), std::slice::from_ref(&kp_key)))?;
            let mut keys = vec![kp_key, sg_key];
            let placement_group = match &spec.placement_group {
                Some(strategy) => {
                    let (pg_key, pg) = self
                        .ensure_placement_group(&client, &region, strategy, request, run, ledger)
                        .await
                        .map_err(|e| with_leftovers(e, &keys))?;
                    keys.push(pg_key);
                    Some(pg)
                }
                None => None,
            };
            Shared {
                keys,
                key_name,
                key_path,
                group_id,
                placement_group,
            }
        };

        let launched = match self
            .launch(
                &client, &region, request, spec, spec.spot, &shared, run, ledger,
            )
            .await
        {
            Ok(l) => l,
            Err((e, true)) if spec.spot && spec.spot_fallback => {
                tracing::info!(
                    machine = name,
                    "no spot capacity ({e}); launching on demand"
                );
                self.launch(&client, &region, request, spec, false, &shared, run, ledger)
                    .await
                    .map_err(|(e, _)| with_leftovers(e, &shared.keys))?
            }
            Err((e, _)) => return Err(with_leftovers(e, &shared.keys)),
        };
        let (instance_key, instance) = launched;
        let instance_id = instance.instance_id().unwrap_or_default().to_string();
        let mut all_keys = shared.keys.clone();
        all_keys.push(instance_key.clone());

        let running = self
            .wait_state(
                &client,
                std::slice::from_ref(&instance_id),
                InstanceStateName::Running,
                Some(name),
            )
            .await
            .map_err(|e| with_leftovers(e, &all_keys))?;
        let instance = running.into_iter().next().unwrap_or(instance);
        let (host, port) = self.ssh_address(name, &instance).ok_or_else(|| {
            err(
                Some(name),
                format!("instance {instance_id} has no address"),
                Leftovers::Remaining(all_keys.clone()),
            )
        })?;

        let mut facts = BTreeMap::new();
        facts.insert("region".to_string(), region.clone());
        facts.insert("instance-id".to_string(), instance_id.clone());
        facts.insert("instance-type".to_string(), spec.instance_type.clone());
        facts.insert("address".to_string(), host.clone());
        if let Some(z) = instance.placement().and_then(|p| p.availability_zone()) {
            facts.insert("zone".to_string(), z.to_string());
        }
        let lifecycle = instance
            .instance_lifecycle()
            .map(|l| l.as_str().to_string())
            .unwrap_or_else(|| "on-demand".into());
        facts.insert("lifecycle".to_string(), lifecycle);
        if let Some(cr) = request
            .placement
            .as_ref()
            .and_then(|p| p.reservations.get(&spec.instance_type))
        {
            facts.insert("capacity-reservation".to_string(), cr.clone());
        }
        if let Some(ip) = instance.public_ip_address() {
            facts.insert("public-ip".to_string(), ip.to_string());
        }
        if let Some(ip) = instance.private_ip_address() {
            facts.insert("private-ip".to_string(), ip.to_string());
        }
        let user = spec.ssh_user.clone().unwrap_or_else(|| "ec2-user".into());
        Ok(Machine {
            name: request.name.clone(),
            role: request.role.clone(),
            backend: AWS_BACKEND,
            access: Access::Ssh(SshTarget {
                host,
                port,
                user: user.clone(),
                identity_file: Some(shared.key_path.clone()),
                passphrase_env: None,
                jumps: Vec::new(),
                host_keys: HostKeyPolicy::TrustFirstUse {
                    known_hosts: run.run_dir.join("known_hosts"),
                },
            }),
            workdir: remote_workdir(&user, &run.run_id.0, &request.name),
            resources: all_keys,
            facts,
        })
    }

    async fn wait_ready(&self, machine: &Machine, deadline: Duration) -> PResult<()> {
        let name = machine.name.as_str();
        let Access::Ssh(target) = &machine.access else {
            return Err(err(
                Some(name),
                "an EC2 machine without SSH access",
                Leftovers::Unknown,
            ));
        };
        let region = machine
            .facts
            .get("region")
            .cloned()
            .unwrap_or_else(|| self.region.clone());
        let instance_id = machine.facts.get("instance-id").ok_or_else(|| {
            err(
                Some(name),
                "machine has no instance-id fact",
                Leftovers::Unknown,
            )
        })?;
        let client = self.client(&region);
        let until = Instant::now() + deadline;
        // The instance must still be running (a spot instance can be taken back meanwhile).
        let out = client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| api_error(Some(name), "DescribeInstances", e, Leftovers::Unknown))?;
        let state = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id.as_str()))
            .and_then(|i| i.state().and_then(|s| s.name()).cloned());
        if state != Some(InstanceStateName::Running) {
            return Err(err(
                Some(name),
                format!("instance {instance_id} is {state:?}, not running"),
                Leftovers::Unknown,
            ));
        }
        loop {
            match ssh_banner(&target.host, target.port).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= until => {
                    return Err(err(
                        Some(name),
                        format!(
                            "SSH on {}:{} not ready after {deadline:?}: {e}",
                            target.host, target.port
                        ),
                        Leftovers::Unknown,
                    ));
                }
                Err(_) => {
                    tokio::time::sleep(self.options.poll_interval.min(Duration::from_secs(2))).await
                }
            }
        }
    }

    async fn destroy(&self, resources: &[Resource], ledger: &dyn ResourceLedger) -> PResult<()> {
        let ours: Vec<&Resource> = resources
            .iter()
            .filter(|r| r.backend == AWS_BACKEND && r.state != ResourceState::Destroyed)
            .collect();
        let mut failed: Vec<(ResourceKey, String)> = Vec::new();
        let region_of = |r: &Resource| {
            r.details
                .get("region")
                .cloned()
                .unwrap_or_else(|| self.region.clone())
        };

        // Instances first: security groups and placement groups are in use until they are gone.
        let mut by_region: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for r in ours.iter().filter(|r| r.kind == KIND_INSTANCE) {
            by_region.entry(region_of(r)).or_default().push(r);
        }
        for (region, records) in by_region {
            let client = self.client(&region);
            let mut instances = Vec::new();
            let mut ok = Vec::new();
            for r in records {
                match self.instances_of(&client, r).await {
                    Ok(found) => {
                        instances.extend(found);
                        ok.push(r);
                    }
                    Err(e) => failed.push((r.key.clone(), e.to_string())),
                }
            }
            match self.remove_instances(&client, &instances).await {
                Ok(_) => {
                    for r in ok {
                        // Volumes of an instance that never reached the journal's id.
                        if let Some(token) = &r.client_token
                            && let Err(e) = self
                                .delete_volumes(
                                    &client,
                                    &[filter(&format!("tag:{CLIENT_TOKEN_TAG}"), &[token])],
                                )
                                .await
                        {
                            failed.push((r.key.clone(), e.to_string()));
                            continue;
                        }
                        let _ = ledger.destroyed(&r.key).await;
                    }
                }
                Err(e) => failed.extend(ok.iter().map(|r| (r.key.clone(), e.to_string()))),
            }
        }
        if !failed.is_empty() {
            // Groups still in use by an instance we could not remove would fail too.
            let keys: Vec<ResourceKey> = ours.iter().map(|r| r.key.clone()).collect();
            return Err(err(
                None,
                format!(
                    "teardown incomplete: {}",
                    failed
                        .iter()
                        .map(|(k, e)| format!("{k}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                Leftovers::Remaining(keys),
            ));
        }
        for kind in [KIND_SECURITY_GROUP, KIND_KEY_PAIR, KIND_PLACEMENT_GROUP] {
            for r in ours.iter().filter(|r| r.kind == kind) {
                let client = self.client(&region_of(r));
                match self.remove_record(&client, r).await {
                    Ok(()) => {
                        let _ = ledger.destroyed(&r.key).await;
                    }
                    Err(e) => failed.push((r.key.clone(), e.to_string())),
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(err(
                None,
                format!(
                    "teardown incomplete: {}",
                    failed
                        .iter()
                        .map(|(k, e)| format!("{k}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                Leftovers::Remaining(failed.into_iter().map(|(k, _)| k).collect()),
            ))
        }
    }

    async fn sweep(&self, test_id: &TestId, scope: SweepScope<'_>) -> PResult<Vec<String>> {
        match scope {
            SweepScope::AllRegions => {
                self.sweep_regions(test_id, self.regions().await?, "every region")
                    .await
            }
            SweepScope::Run(records) => {
                let mut others: BTreeSet<String> = records
                    .iter()
                    .filter(|r| r.backend == AWS_BACKEND)
                    .filter_map(|r| r.details.get("region").cloned())
                    .collect();
                others.remove(&self.region);
                if others.is_empty() {
                    return self.sweep_here(test_id).await;
                }
                let regions = std::iter::once(self.region.clone()).chain(others).collect();
                self.sweep_regions(test_id, regions, "the run's regions")
                    .await
            }
            _ => self.sweep_here(test_id).await,
        }
    }
}

impl AwsProvisioner {
    /// Removes everything tagged with `test_id` in the configured region.
    async fn sweep_here(&self, test_id: &TestId) -> PResult<Vec<String>> {
        let client = self.client(&self.region);
        let by_tag = filter(&format!("tag:{TEST_ID_TAG}"), &[&test_id.0]);
        let mut lines = Vec::new();

        let instances = list_instances(
            &client,
            vec![
                by_tag.clone(),
                filter(
                    "instance-state-name",
                    &["pending", "running", "stopping", "stopped", "shutting-down"],
                ),
            ],
            self.options.page_size,
            Leftovers::Unknown,
        )
        .await?;
        lines.extend(self.remove_instances(&client, &instances).await?);

        let mut spot_pages = client
            .describe_spot_instance_requests()
            .filters(by_tag.clone())
            .filters(filter("state", &["open", "active"]))
            .into_paginator()
            .send();
        let mut ids: Vec<String> = Vec::new();
        while let Some(page) = spot_pages.next().await {
            let page = page.map_err(|e| {
                api_error(None, "DescribeSpotInstanceRequests", e, Leftovers::Unknown)
            })?;
            ids.extend(
                page.spot_instance_requests()
                    .iter()
                    .filter_map(|s| s.spot_instance_request_id().map(str::to_string)),
            );
        }
        if !ids.is_empty() {
            client
                .cancel_spot_instance_requests()
                .set_spot_instance_request_ids(Some(ids.clone()))
                .send()
                .await
                .map_err(|e| {
                    api_error(None, "CancelSpotInstanceRequests", e, Leftovers::Unknown)
                })?;
            lines.extend(ids.iter().map(|s| format!("spot-request {s}")));
        }

        lines.extend(
            self.delete_volumes(&client, std::slice::from_ref(&by_tag))
                .await?,
        );

        for g in &list_security_groups(&client, vec![by_tag.clone()], Leftovers::Unknown).await? {
            if let Some(id) = g.group_id()
                && self.delete_security_group(&client, id).await?
            {
                lines.push(format!("security-group {id}"));
            }
        }

        let keys = client
            .describe_key_pairs()
            .filters(by_tag.clone())
            .send()
            .await
            .map_err(|e| api_error(None, "DescribeKeyPairs", e, Leftovers::Unknown))?;
        for k in keys.key_pairs() {
            if let Some(name) = k.key_name()
                && self.delete_key_pair(&client, name).await?
            {
                lines.push(format!("key-pair {name}"));
            }
        }

        let pgs = client
            .describe_placement_groups()
            .filters(by_tag)
            .send()
            .await
            .map_err(|e| api_error(None, "DescribePlacementGroups", e, Leftovers::Unknown))?;
        for g in pgs.placement_groups() {
            if let Some(name) = g.group_name()
                && self.delete_placement_group(&client, name).await?
            {
                lines.push(format!("placement-group {name}"));
            }
        }
        Ok(lines)
    }
}

fn named(mut e: ProvisionError, machine: &str) -> ProvisionError {
    if e.machine.is_none() {
        e.machine = Some(machine.to_string());
    }
    e
}

/// Adds resources made earlier in the same `create` to an error's leftovers.
fn with_leftovers(mut e: ProvisionError, earlier: &[ResourceKey]) -> ProvisionError {
    e.leftovers = match e.leftovers {
        Leftovers::Clear => Leftovers::Remaining(earlier.to_vec()),
        Leftovers::Remaining(mut keys) => {
            for k in earlier {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            Leftovers::Remaining(keys)
        }
        other => other,
    };
    e
}

#[async_trait]
impl Janitor for AwsProvisioner {
    async fn regions(&self) -> PResult<Vec<String>> {
        AwsProvisioner::regions(self).await
    }

    fn default_region(&self) -> String {
        self.region.clone()
    }

    async fn expired(
        &self,
        region: &str,
        cutoff_unix: i64,
    ) -> PResult<Vec<qa_core::backend::ExpiredResource>> {
        Ok(self
            .in_region(region)
            .expired(cutoff_unix)
            .await?
            .into_iter()
            .map(|e| {
                qa_core::backend::ExpiredResource::new(
                    region,
                    e.kind,
                    e.id,
                    e.test_id,
                    e.keep_until,
                )
            })
            .collect())
    }

    async fn remove_expired(&self, region: &str, cutoff_unix: i64) -> PResult<Vec<String>> {
        self.in_region(region).remove_expired(cutoff_unix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_volumes_get_device_names_after_the_root_device() {
        assert_eq!(device_names(2).unwrap(), vec!["/dev/sdf", "/dev/sdg"]);
        assert_eq!(device_names(21).unwrap().last().unwrap(), "/dev/sdz");
        assert!(device_names(22).is_none());
    }

    #[test]
    fn resource_names_keep_only_what_ec2_accepts() {
        assert_eq!(
            resource_name(&["qa-run", "plan x_20260101T000000Z-00ab"]),
            "qa-run-plan-x-20260101T000000Z-00ab"
        );
    }

    #[test]
    fn earlier_resources_join_an_errors_leftovers() {
        let k = ResourceKey("aws/key-pair/x".into());
        let e = with_leftovers(err(None, "x", Leftovers::Clear), std::slice::from_ref(&k));
        assert_eq!(e.leftovers, Leftovers::Remaining(vec![k]));
    }
}
