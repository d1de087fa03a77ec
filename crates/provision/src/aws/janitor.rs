//! The janitor: what qa-run made (tagged
//! [`CREATED_BY`](qa_cloud::aws::tags::CREATED_BY)) that outlived its [`KEEP_UNTIL`] tag, listed
//! ([`AwsProvisioner::expired`]) and removed by sweeping its test id
//! ([`AwsProvisioner::remove_expired`]), one region at a time; the [`Janitor`] impl the engine's
//! cleanup drives across regions.

use async_trait::async_trait;
use aws_sdk_ec2::types::Tag;
use qa_cloud::aws::pages;
use qa_cloud::aws::tags::{KEEP_UNTIL, TEST_ID, filter, has_tag, made_by_qa_run, tag_value};
use qa_core::backend::Janitor;
use qa_core::{Leftovers, TestId};

use super::AwsProvisioner;
use super::errors::{PResult, api_error};
use super::records::{KIND_INSTANCE, KIND_KEY_PAIR, KIND_PLACEMENT_GROUP, KIND_SECURITY_GROUP};

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

/// The entry of a resource whose keep-until is before `now_unix`; none when it is later or
/// does not read as RFC 3339.
fn expired_entry(
    kind: &str,
    id: Option<&str>,
    tags: &[Tag],
    now_unix: i64,
) -> Option<ExpiredResource> {
    let keep_until = tag_value(tags, KEEP_UNTIL)?;
    let until =
        time::OffsetDateTime::parse(keep_until, &time::format_description::well_known::Rfc3339)
            .ok()?
            .unix_timestamp();
    (until < now_unix).then(|| ExpiredResource {
        kind: kind.to_string(),
        id: id.unwrap_or_default().to_string(),
        test_id: tag_value(tags, TEST_ID).map(str::to_string),
        keep_until: keep_until.to_string(),
    })
}

impl AwsProvisioner {
    /// Resources in the default region that qa-run made (`created-by=qa-run`) and whose
    /// `qa-run:keep-until` is before `now_unix`: what a janitor lists. Terminated instances and
    /// resources with an unreadable keep-until are left out.
    pub async fn expired(&self, now_unix: i64) -> PResult<Vec<ExpiredResource>> {
        let client = self.ec2.client();
        let ours = [made_by_qa_run(), has_tag(KEEP_UNTIL)];
        let mut out = Vec::new();
        let mut wanted = ours.to_vec();
        wanted.push(filter(
            "instance-state-name",
            &["pending", "running", "stopping", "stopped"],
        ));
        let instances = pages::instances(&client, wanted, self.options.page_size)
            .await
            .map_err(|e| api_error(None, "DescribeInstances", e, Leftovers::Clear))?;
        for i in &instances {
            out.extend(expired_entry(
                KIND_INSTANCE,
                i.instance_id(),
                i.tags(),
                now_unix,
            ));
        }
        let volumes = pages::volumes(&client, ours.to_vec())
            .await
            .map_err(|e| api_error(None, "DescribeVolumes", e, Leftovers::Clear))?;
        for v in &volumes {
            out.extend(expired_entry("volume", v.volume_id(), v.tags(), now_unix));
        }
        let groups = pages::security_groups(&client, ours.to_vec())
            .await
            .map_err(|e| api_error(None, "DescribeSecurityGroups", e, Leftovers::Clear))?;
        for g in &groups {
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

#[async_trait]
impl Janitor for AwsProvisioner {
    async fn regions(&self) -> PResult<Vec<String>> {
        AwsProvisioner::regions(self).await
    }

    fn default_region(&self) -> String {
        self.region().to_string()
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
    use qa_cloud::aws::tags::tag;

    use super::*;

    #[test]
    fn only_a_readable_keep_until_in_the_past_is_expired() {
        let now = 1_767_225_600; // 2026-01-01T00:00:00Z
        let tags = |until: &str| vec![tag(KEEP_UNTIL, until), tag(TEST_ID, "nightly")];
        let e = expired_entry("volume", Some("vol-1"), &tags("2025-12-31T23:00:00Z"), now).unwrap();
        assert_eq!(e.test_id.as_deref(), Some("nightly"));
        assert_eq!(e.keep_until, "2025-12-31T23:00:00Z");
        assert!(
            expired_entry("volume", Some("vol-1"), &tags("2026-01-02T00:00:00Z"), now).is_none()
        );
        assert!(expired_entry("volume", Some("vol-1"), &tags("tomorrow"), now).is_none());
        assert!(expired_entry("volume", Some("vol-1"), &[], now).is_none());
    }
}
