//! Sweeping by test id: everything carrying the [`TEST_ID`] tag, found by the tag alone, for
//! when the journal is lost or a crash inside a create left something unrecorded. In the
//! configured region, in every region of the account, or in the regions a run's records name;
//! several regions are swept at once, and one that fails does not stop the others.

use std::collections::BTreeSet;

use qa_cloud::aws::pages;
use qa_cloud::aws::regions::in_each_region;
use qa_cloud::aws::tags::{TEST_ID, filter, tag_filter};
use qa_core::backend::SweepScope;
use qa_core::{Leftovers, TestId};

use super::errors::{PResult, api_error, err};
use super::teardown::NOT_TERMINATED;
use super::{AWS_BACKEND, AwsProvisioner};

impl AwsProvisioner {
    /// [`Provisioner::sweep`](qa_core::Provisioner::sweep) in `scope`.
    pub(super) async fn sweep_scope(
        &self,
        test_id: &TestId,
        scope: SweepScope<'_>,
    ) -> PResult<Vec<String>> {
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
                others.remove(self.region());
                if others.is_empty() {
                    return self.sweep_here(test_id).await;
                }
                let regions = std::iter::once(self.region().to_string())
                    .chain(others)
                    .collect();
                self.sweep_regions(test_id, regions, "the run's regions")
                    .await
            }
            _ => self.sweep_here(test_id).await,
        }
    }

    /// Sweeps each of `regions` at once; every line says its region. When some fail, the
    /// others are still swept and the error names the failed ones (`what` says which regions
    /// these were).
    async fn sweep_regions(
        &self,
        test_id: &TestId,
        regions: Vec<String>,
        what: &str,
    ) -> PResult<Vec<String>> {
        let out = in_each_region(regions, |region| {
            let p = self.in_region(&region);
            let test_id = test_id.clone();
            async move { p.sweep_here(&test_id).await }
        })
        .await;
        let failed = out.failure_lines();
        let lines: Vec<String> = out
            .done
            .into_iter()
            .flat_map(|(region, lines)| lines.into_iter().map(move |l| format!("{region}: {l}")))
            .collect();
        if failed.is_empty() {
            return Ok(lines);
        }
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

    /// Removes everything tagged with `test_id` in the configured region.
    pub(super) async fn sweep_here(&self, test_id: &TestId) -> PResult<Vec<String>> {
        let client = self.ec2.client();
        let by_tag = tag_filter(TEST_ID, &[&test_id.0]);
        let mut lines = Vec::new();

        let instances = pages::instances(
            &client,
            vec![
                by_tag.clone(),
                filter("instance-state-name", NOT_TERMINATED),
            ],
            self.options.page_size,
        )
        .await
        .map_err(|e| api_error(None, "DescribeInstances", e, Leftovers::Unknown))?;
        lines.extend(self.remove_instances(&client, &instances).await?);

        let spot = pages::spot_requests(
            &client,
            vec![by_tag.clone(), filter("state", &["open", "active"])],
        )
        .await
        .map_err(|e| api_error(None, "DescribeSpotInstanceRequests", e, Leftovers::Unknown))?;
        let ids: Vec<String> = spot
            .iter()
            .filter_map(|s| s.spot_instance_request_id().map(str::to_string))
            .collect();
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

        let groups = pages::security_groups(&client, vec![by_tag.clone()])
            .await
            .map_err(|e| api_error(None, "DescribeSecurityGroups", e, Leftovers::Unknown))?;
        for g in &groups {
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
