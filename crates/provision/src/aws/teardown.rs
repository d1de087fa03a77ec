//! Removing what a run's journal records: instances first (terminated and waited for, then their
//! spot requests cancelled and their leftover volumes deleted), then the security groups, key
//! pairs and placement groups they used. What is already gone counts as removed, so teardown is
//! idempotent and works from the journal alone.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};
use qa_cloud::aws::errors::{ErrorClass, classify};
use qa_cloud::aws::pages;
use qa_cloud::aws::tags::{CLIENT_TOKEN, filter, tag_filter, tag_value};
use qa_core::Leftovers;
use qa_core::journal::ResourceLedger;
use qa_core::types::{Resource, ResourceKey, ResourceState};

use super::errors::{PResult, api_error, err};
use super::records::{KIND_INSTANCE, KIND_KEY_PAIR, KIND_PLACEMENT_GROUP, KIND_SECURITY_GROUP};
use super::shared::find_group_by_name;
use super::{AWS_BACKEND, AwsProvisioner};

/// Instance states in which an instance still exists (or is about to stop existing).
pub(super) const NOT_TERMINATED: &[&str] =
    &["pending", "running", "stopping", "stopped", "shutting-down"];

fn is_not_found<E: ProvideErrorMetadata>(e: &E) -> bool {
    classify(e) == ErrorClass::NotFound
}

/// `failed` as one message: `key: error; …`.
fn incomplete(failed: &[(ResourceKey, String)]) -> String {
    format!(
        "teardown incomplete: {}",
        failed
            .iter()
            .map(|(k, e)| format!("{k}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

impl AwsProvisioner {
    /// [`Provisioner::destroy`](qa_core::Provisioner::destroy): the EC2 records among
    /// `resources` that are not destroyed yet, instances first.
    pub(super) async fn destroy_records(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> PResult<()> {
        let ours: Vec<&Resource> = resources
            .iter()
            .filter(|r| r.backend == AWS_BACKEND && r.state != ResourceState::Destroyed)
            .collect();
        let mut failed: Vec<(ResourceKey, String)> = Vec::new();
        let region_of = |r: &Resource| {
            r.details
                .get("region")
                .cloned()
                .unwrap_or_else(|| self.region().to_string())
        };

        // Instances first: security groups and placement groups are in use until they are gone.
        let mut by_region: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for r in ours.iter().filter(|r| r.kind == KIND_INSTANCE) {
            by_region.entry(region_of(r)).or_default().push(r);
        }
        for (region, records) in by_region {
            let client = self.ec2.client_in(&region);
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
                                .delete_volumes(&client, &[tag_filter(CLIENT_TOKEN, &[token])])
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
            return Err(err(None, incomplete(&failed), Leftovers::Remaining(keys)));
        }
        for kind in [KIND_SECURITY_GROUP, KIND_KEY_PAIR, KIND_PLACEMENT_GROUP] {
            for r in ours.iter().filter(|r| r.kind == kind) {
                let client = self.ec2.client_in(&region_of(r));
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
                incomplete(&failed),
                Leftovers::Remaining(failed.into_iter().map(|(k, _)| k).collect()),
            ))
        }
    }

    /// Instances made by one journal record: by id, or by the client-token tag when only the
    /// intent was recorded. Terminated ones are left out.
    async fn instances_of(&self, client: &Client, r: &Resource) -> PResult<Vec<Instance>> {
        let mut q = client
            .describe_instances()
            .filters(filter("instance-state-name", NOT_TERMINATED));
        match (&r.id, &r.client_token) {
            (Some(id), _) => q = q.instance_ids(id),
            (None, Some(token)) => q = q.filters(tag_filter(CLIENT_TOKEN, &[token])),
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
    pub(super) async fn remove_instances(
        &self,
        client: &Client,
        instances: &[Instance],
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
            if let Some(token) = tag_value(i.tags(), CLIENT_TOKEN) {
                lines.extend(
                    self.delete_volumes(client, &[tag_filter(CLIENT_TOKEN, &[token])])
                        .await?,
                );
            }
        }
        Ok(lines)
    }

    /// Deletes the volumes matching `filters` that no instance holds.
    pub(super) async fn delete_volumes(
        &self,
        client: &Client,
        filters: &[Filter],
    ) -> PResult<Vec<String>> {
        let mut lines = Vec::new();
        let mut wanted = filters.to_vec();
        wanted.push(filter("status", &["available", "creating", "error"]));
        let volumes = pages::volumes(client, wanted)
            .await
            .map_err(|e| api_error(None, "DescribeVolumes", e, Leftovers::Unknown))?;
        for v in volumes {
            let Some(id) = v.volume_id() else { continue };
            match client.delete_volume().volume_id(id).send().await {
                Ok(_) => lines.push(format!("volume {id}")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error(None, "DeleteVolume", e, Leftovers::Unknown)),
            }
        }
        Ok(lines)
    }

    /// Deletes a security group, waiting while it is still in use; `false` when it was gone.
    pub(super) async fn delete_security_group(
        &self,
        client: &Client,
        group_id: &str,
    ) -> PResult<bool> {
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

    /// Deletes a key pair; `false` when it was gone.
    pub(super) async fn delete_key_pair(&self, client: &Client, name: &str) -> PResult<bool> {
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

    /// Deletes a placement group; `false` when it was gone.
    pub(super) async fn delete_placement_group(
        &self,
        client: &Client,
        name: &str,
    ) -> PResult<bool> {
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
