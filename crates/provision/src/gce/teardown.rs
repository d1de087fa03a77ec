//! Removing what a run made: from the journal's records (instances first, all deletes sent before
//! any is waited for, then the firewall rules they used), or by the test id alone (instances by
//! label in every zone, one aggregated listing; firewall rules by description). What is already
//! gone counts as removed, so teardown is idempotent and works from the journal alone.

use std::collections::{BTreeMap, BTreeSet};

use google_cloud_compute_v1::model::Operation;
use qa_cloud::all_items;
use qa_cloud::gce::labels::test_id_filter;
use qa_cloud::gce::{GceError, config, finished, until_done};
use qa_core::journal::ResourceLedger;
use qa_core::types::{Resource, ResourceKey, ResourceState};
use qa_core::{Leftovers, TestId};

use super::firewall::firewall_owner;
use super::{GCE, GceProvisioner, KIND_FIREWALL, KIND_INSTANCE, PResult, err};

/// An instance to delete.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct InstanceRef {
    pub(super) project: String,
    pub(super) zone: String,
    pub(super) name: String,
}

/// `failed` as one message: `what: error; …`.
fn incomplete(failed: &[(String, String)]) -> String {
    format!(
        "teardown incomplete: {}",
        failed
            .iter()
            .map(|(k, e)| format!("{k}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

impl GceProvisioner {
    /// Deletes instances: every delete is sent, then each operation waited for. Gone is done.
    /// Returns the error of each instance that could not be deleted.
    pub(super) async fn delete_instances(
        &self,
        instances: &[InstanceRef],
    ) -> PResult<Vec<(InstanceRef, GceError)>> {
        let clients = self.clients().await?;
        let mut sent: Vec<(InstanceRef, Operation)> = Vec::new();
        let mut failed = Vec::new();
        for i in instances {
            let r = clients
                .instances
                .delete()
                .set_project(&i.project)
                .set_zone(&i.zone)
                .set_instance(&i.name)
                .set_request_id(config::request_id())
                .send()
                .await
                .map_err(|e| GceError::of_call(&e));
            match r {
                Ok(op) => sent.push((i.clone(), op)),
                Err(e) if e.is_not_found() => {}
                Err(e) => failed.push((i.clone(), e)),
            }
        }
        for (i, op) in sent {
            let done = until_done(op, self.wait(), |op| {
                clients
                    .instances
                    .get_operation()
                    .set_project(&i.project)
                    .set_zone(&i.zone)
                    .set_operation(op)
                    .send()
            })
            .await;
            match done {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => failed.push((i, e)),
            }
        }
        Ok(failed)
    }

    /// Deletes a firewall rule. Gone is done.
    pub(super) async fn delete_firewall(&self, project: &str, name: &str) -> Result<(), GceError> {
        let clients = self
            .gce
            .clients()
            .await
            .map_err(|e| GceError::new(None, None, e.to_string()))?;
        let sent = clients
            .firewalls
            .delete()
            .set_project(project)
            .set_firewall(name)
            .set_request_id(config::request_id())
            .send()
            .await;
        let done = finished(sent, self.wait(), |op| {
            clients
                .firewalls
                .get_operation()
                .set_project(project)
                .set_operation(op)
                .send()
        })
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Provisioner::destroy`](qa_core::Provisioner::destroy): the GCE records among
    /// `resources` that are not destroyed yet, instances first.
    pub(super) async fn destroy_records(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> PResult<()> {
        let ours: Vec<&Resource> = resources
            .iter()
            .filter(|r| r.backend == GCE && r.state != ResourceState::Destroyed)
            .collect();
        let detail = |r: &Resource, k: &str| r.details.get(k).cloned();
        let mut failed: Vec<(String, String)> = Vec::new();
        let mut by_instance: BTreeMap<InstanceRef, Vec<ResourceKey>> = BTreeMap::new();
        for r in ours.iter().filter(|r| r.kind == KIND_INSTANCE) {
            let project =
                detail(r, "project").or_else(|| self.gce.default_project().map(str::to_string));
            match (project, detail(r, "zone"), detail(r, "name")) {
                (Some(project), Some(zone), Some(name)) => by_instance
                    .entry(InstanceRef {
                        project,
                        zone,
                        name,
                    })
                    .or_default()
                    .push(r.key.clone()),
                _ => failed.push((
                    r.key.0.clone(),
                    "the record names no project, zone and name".into(),
                )),
            }
        }
        let instances: Vec<InstanceRef> = by_instance.keys().cloned().collect();
        let not_deleted = self.delete_instances(&instances).await?;
        for (i, keys) in &by_instance {
            match not_deleted.iter().find(|(f, _)| f == i) {
                Some((_, e)) => {
                    failed.push((format!("instance {} in {}", i.name, i.zone), e.to_string()))
                }
                None => {
                    for k in keys {
                        let _ = ledger.destroyed(k).await;
                    }
                }
            }
        }
        if !failed.is_empty() {
            let keys: Vec<ResourceKey> = ours.iter().map(|r| r.key.clone()).collect();
            return Err(err(None, incomplete(&failed), Leftovers::Remaining(keys)));
        }
        for r in ours.iter().filter(|r| r.kind == KIND_FIREWALL) {
            let project =
                detail(r, "project").or_else(|| self.gce.default_project().map(str::to_string));
            let (Some(project), Some(name)) = (project, detail(r, "name")) else {
                failed.push((
                    r.key.0.clone(),
                    "the record names no project and name".into(),
                ));
                continue;
            };
            match self.delete_firewall(&project, &name).await {
                Ok(()) => {
                    let _ = ledger.destroyed(&r.key).await;
                }
                Err(e) => failed.push((format!("firewall rule {name}"), e.to_string())),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            let keys: Vec<ResourceKey> = ours.iter().map(|r| r.key.clone()).collect();
            Err(err(None, incomplete(&failed), Leftovers::Remaining(keys)))
        }
    }

    /// The projects to look in: the default one and those `records` name.
    pub(super) fn projects(&self, records: &[Resource]) -> Vec<String> {
        let mut out: BTreeSet<String> = records
            .iter()
            .filter(|r| r.backend == GCE)
            .filter_map(|r| r.details.get("project").cloned())
            .collect();
        out.extend(self.gce.default_project().map(str::to_string));
        out.into_iter().collect()
    }

    /// The instances in `project` that carry `filter`'s labels, in every zone.
    pub(super) async fn labelled_instances(
        &self,
        project: &str,
        filter: &str,
    ) -> Result<Vec<(InstanceRef, std::collections::HashMap<String, String>)>, GceError> {
        let clients = self
            .gce
            .clients()
            .await
            .map_err(|e| GceError::new(None, None, e.to_string()))?;
        let scopes = all_items!(
            clients
                .instances
                .aggregated_list()
                .set_project(project)
                .set_filter(filter)
        )?;
        let mut out = Vec::new();
        for (scope, list) in scopes {
            let Some(zone) = scope.strip_prefix("zones/") else {
                continue;
            };
            for i in list.instances {
                if let Some(name) = i.name {
                    out.push((
                        InstanceRef {
                            project: project.to_string(),
                            zone: zone.to_string(),
                            name,
                        },
                        i.labels,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The firewall rules in `project` that qa-run made, with the test id and keep-until their
    /// descriptions carry.
    pub(super) async fn owned_firewalls(
        &self,
        project: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, GceError> {
        let clients = self
            .gce
            .clients()
            .await
            .map_err(|e| GceError::new(None, None, e.to_string()))?;
        let rules: Vec<google_cloud_compute_v1::model::Firewall> =
            all_items!(clients.firewalls.list().set_project(project))?;
        Ok(rules
            .into_iter()
            .filter_map(|f| {
                let (test_id, keep_until) = firewall_owner(f.description.as_deref())?;
                Some((f.name?, test_id, keep_until))
            })
            .collect())
    }

    /// Deletes everything of `test_id` in each of `projects`: instances by label (every zone),
    /// then firewall rules by description.
    pub(super) async fn sweep_in(
        &self,
        test_id: &TestId,
        projects: &[String],
    ) -> PResult<Vec<String>> {
        let mut removed = Vec::new();
        let mut failed: Vec<(String, String)> = Vec::new();
        if projects.is_empty() {
            tracing::warn!(
                "no GCE project configured (GOOGLE_CLOUD_PROJECT): nothing of {test_id} looked for"
            );
        }
        for project in projects {
            let found = match self
                .labelled_instances(project, &test_id_filter(&test_id.0))
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    failed.push((format!("project {project}"), e.to_string()));
                    continue;
                }
            };
            let refs: Vec<InstanceRef> = found.into_iter().map(|(i, _)| i).collect();
            let not_deleted = self.delete_instances(&refs).await?;
            for i in &refs {
                match not_deleted.iter().find(|(f, _)| f == i) {
                    Some((_, e)) => {
                        failed.push((format!("instance {} in {}", i.name, i.zone), e.to_string()))
                    }
                    None => removed.push(format!(
                        "gce instance {} ({}, {})",
                        i.name, i.zone, i.project
                    )),
                }
            }
            if !not_deleted.is_empty() {
                continue;
            }
            match self.owned_firewalls(project).await {
                Ok(rules) => {
                    for (name, _, _) in rules.into_iter().filter(|(_, t, _)| *t == test_id.0) {
                        match self.delete_firewall(project, &name).await {
                            Ok(()) => removed.push(format!("gce firewall rule {name} ({project})")),
                            Err(e) => failed.push((format!("firewall rule {name}"), e.to_string())),
                        }
                    }
                }
                Err(e) => failed.push((format!("firewalls of {project}"), e.to_string())),
            }
        }
        if failed.is_empty() {
            Ok(removed)
        } else {
            Err(err(
                None,
                format!(
                    "sweep of test id {test_id} incomplete (removed {}): {}",
                    removed.len(),
                    incomplete(&failed)
                ),
                Leftovers::Unknown,
            ))
        }
    }
}
