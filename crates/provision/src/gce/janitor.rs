//! The janitor: what qa-run made (labelled `created-by=qa-run`, or a firewall rule whose
//! description says so) that outlived its keep-until, listed and removed by sweeping its test id.
//! Compute Engine lists every zone of a project at once, so there is one "region", the empty
//! name, and the projects looked in are the default one.

use async_trait::async_trait;
use qa_cloud::gce::labels::{
    KEEP_UNTIL, TEST_ID, keep_until_rfc3339, label_key, made_by_qa_run_filter,
};
use qa_core::backend::{ExpiredResource, Janitor};
use qa_core::{Leftovers, ProvisionError, TestId};

use super::{GceProvisioner, KIND_FIREWALL, KIND_INSTANCE, PResult, api_error};

/// Seconds since the epoch of an RFC 3339 time.
fn unix_of(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl GceProvisioner {
    /// What outlived its keep-until before `cutoff_unix`, in the default project.
    pub async fn expired(&self, cutoff_unix: i64) -> PResult<Vec<ExpiredResource>> {
        let mut out = Vec::new();
        for project in self.projects(&[]) {
            let instances = self
                .labelled_instances(&project, &made_by_qa_run_filter())
                .await
                .map_err(|e| api_error(None, "instances.aggregatedList", e, Leftovers::Unknown))?;
            for (i, labels) in instances {
                let Some(keep_until) = labels
                    .get(&label_key(KEEP_UNTIL))
                    .and_then(|v| keep_until_rfc3339(v))
                else {
                    continue;
                };
                if unix_of(&keep_until).is_some_and(|t| t < cutoff_unix) {
                    out.push(ExpiredResource::new(
                        "",
                        KIND_INSTANCE,
                        format!("{}/{}/{}", i.project, i.zone, i.name),
                        labels.get(&label_key(TEST_ID)).cloned(),
                        keep_until,
                    ));
                }
            }
            let rules = self
                .owned_firewalls(&project)
                .await
                .map_err(|e| api_error(None, "firewalls.list", e, Leftovers::Unknown))?;
            for (name, test_id, keep_until) in rules {
                let Some(keep_until) = keep_until else {
                    continue;
                };
                if unix_of(&keep_until).is_some_and(|t| t < cutoff_unix) {
                    out.push(ExpiredResource::new(
                        "",
                        KIND_FIREWALL,
                        format!("{project}/{name}"),
                        Some(test_id),
                        keep_until,
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Janitor for GceProvisioner {
    async fn regions(&self) -> Result<Vec<String>, ProvisionError> {
        Ok(vec![String::new()])
    }

    fn default_region(&self) -> String {
        String::new()
    }

    async fn expired(
        &self,
        _region: &str,
        cutoff_unix: i64,
    ) -> Result<Vec<ExpiredResource>, ProvisionError> {
        GceProvisioner::expired(self, cutoff_unix).await
    }

    async fn remove_expired(
        &self,
        _region: &str,
        cutoff_unix: i64,
    ) -> Result<Vec<String>, ProvisionError> {
        let expired = GceProvisioner::expired(self, cutoff_unix).await?;
        let mut test_ids: Vec<String> = expired.into_iter().filter_map(|e| e.test_id).collect();
        test_ids.sort();
        test_ids.dedup();
        let mut removed = Vec::new();
        for t in test_ids {
            // Label values are the test id as a label takes it; a sweep maps it the same way.
            removed.extend(self.sweep_in(&TestId(t), &self.projects(&[])).await?);
        }
        Ok(removed)
    }
}
