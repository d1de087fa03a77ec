//! Reserving in one region, zone by zone: the [`ZoneReserver`] that the shared
//! [`reserve_with_fallback`](crate::fallback::reserve_with_fallback) drives. Zones are those that
//! offer every requested type; each reservation is journaled as an intent with its client token
//! before `CreateCapacityReservation`, which is sent without SDK retries.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_ec2::types::{EndDateType, InstanceMatchCriteria, LocationType, ResourceType};
use qa_cloud::aws::{AWS as AWS_BACKEND, ErrorClass, classify, config, describe, pages, tags};
use qa_core::journal::ResourceLedger;
use qa_core::types::{Resource, ResourceKey, ResourceState};
use qa_core::{CapacityError, CapacityRequest, Leftovers};

use super::tagged::cancel_one;
use super::{AwsCapacity, RESERVATION_KIND, TEST_ID_TAG, fatal};
use crate::fallback::{ZoneAttempt, ZoneReserver};

/// Whether EC2 refused a create for a reason that means it made nothing: the intent is closed.
fn made_nothing(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Capacity
            | ErrorClass::Auth
            | ErrorClass::Quota
            | ErrorClass::InvalidRequest
            | ErrorClass::NotFound
    )
}

fn reservation_key(region: &str, zone: &str, instance_type: &str, token: &str) -> ResourceKey {
    ResourceKey(format!(
        "aws/reservation/{region}/{zone}/{instance_type}/{token}"
    ))
}

/// Reservations in the request's region (which may differ from the configured one).
pub(super) struct RegionReserver<'a> {
    pub(super) cap: &'a AwsCapacity,
    pub(super) client: Client,
    pub(super) region: String,
}

#[async_trait]
impl ZoneReserver for RegionReserver<'_> {
    async fn zones_offering(
        &self,
        request: &CapacityRequest,
    ) -> Result<Vec<String>, CapacityError> {
        let types: Vec<&str> = request.needs.keys().map(String::as_str).collect();
        let offerings = pages::instance_type_offerings(
            &self.client,
            LocationType::AvailabilityZone,
            vec![tags::filter("instance-type", &types)],
        )
        .await
        .map_err(|e| fatal(&e, "DescribeInstanceTypeOfferings"))?;
        let mut offered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for o in &offerings {
            if let (Some(t), Some(zone)) = (o.instance_type(), o.location()) {
                offered
                    .entry(zone.to_string())
                    .or_default()
                    .insert(t.as_str().to_string());
            }
        }
        Ok(offered
            .into_iter()
            .filter(|(_, have)| types.iter().all(|t| have.contains(*t)))
            .map(|(z, _)| z)
            .collect())
    }

    async fn reserve_in_zone(
        &self,
        zone: &str,
        instance_type: &str,
        count: u32,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> ZoneAttempt {
        let token = config::client_token();
        let key = reservation_key(&self.region, zone, instance_type, &token);
        let details: BTreeMap<String, String> = [
            ("region".to_string(), self.region.clone()),
            ("zone".to_string(), zone.to_string()),
            ("instance-type".to_string(), instance_type.to_string()),
            ("count".to_string(), count.to_string()),
        ]
        .into_iter()
        .collect();
        let mut intent =
            Resource::new(key.clone(), AWS_BACKEND, RESERVATION_KIND).client_token(token.clone());
        intent.details = details.clone();
        if let Err(e) = ledger.intent(intent).await {
            return ZoneAttempt::Fatal(CapacityError::Other {
                backend: AWS_BACKEND,
                message: format!("journal: {e}; nothing was reserved in {zone}"),
                leftovers: Leftovers::Clear,
            });
        }
        let tags = tags::resource_tags(&BTreeMap::new(), &request.test_id.0, &[]);
        let mut call = self
            .client
            .create_capacity_reservation()
            .client_token(token)
            .instance_type(instance_type)
            .instance_platform(self.cap.platform.clone())
            .availability_zone(zone)
            .instance_count(count as i32)
            .instance_match_criteria(InstanceMatchCriteria::Targeted)
            .tag_specifications(tags::tag_spec(ResourceType::CapacityReservation, &tags));
        call = match request.end_unix {
            Some(end) => call
                .end_date_type(EndDateType::Limited)
                .end_date(DateTime::from_secs(end)),
            None => call.end_date_type(EndDateType::Unlimited),
        };
        let result = call
            .customize()
            .config_override(config::single_attempt())
            .send()
            .await;
        match result {
            Ok(out) => {
                let Some(id) = out
                    .capacity_reservation()
                    .and_then(|c| c.capacity_reservation_id())
                    .map(str::to_string)
                else {
                    return ZoneAttempt::Fatal(CapacityError::Other {
                        backend: AWS_BACKEND,
                        message: format!(
                            "CreateCapacityReservation in {zone} returned no reservation id"
                        ),
                        leftovers: Leftovers::Orphaned(format!(
                            "a reservation tagged {TEST_ID_TAG}={}",
                            request.test_id
                        )),
                    });
                };
                if let Err(e) = ledger.created(&key, &id, details).await {
                    tracing::warn!(%id, "journal: {e}; the reservation carries the test id tag");
                }
                self.cap
                    .ids
                    .lock()
                    .expect("ids lock")
                    .insert((zone.to_string(), instance_type.to_string()), id.clone());
                ZoneAttempt::Reserved(id)
            }
            Err(e) => {
                let class = classify(&e);
                if made_nothing(class) {
                    let _ = ledger.destroyed(&key).await;
                }
                if class == ErrorClass::Capacity {
                    ZoneAttempt::NoCapacity(describe(&e))
                } else {
                    ZoneAttempt::Fatal(fatal(
                        &e,
                        &format!("CreateCapacityReservation {instance_type} in {zone}"),
                    ))
                }
            }
        }
    }

    async fn cancel_reservation(
        &self,
        id: &str,
        ledger: &dyn ResourceLedger,
    ) -> Result<(), CapacityError> {
        cancel_one(&self.client, id).await?;
        self.cap
            .ids
            .lock()
            .expect("ids lock")
            .retain(|_, v| v != id);
        for r in ledger.resources() {
            if r.id.as_deref() == Some(id) && r.state != ResourceState::Destroyed {
                let _ = ledger.destroyed(&r.key).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_made_nothing_close_the_intent() {
        for class in [
            ErrorClass::Capacity,
            ErrorClass::Auth,
            ErrorClass::Quota,
            ErrorClass::InvalidRequest,
            ErrorClass::NotFound,
        ] {
            assert!(made_nothing(class), "{class:?}");
        }
        for class in [
            ErrorClass::Transient,
            ErrorClass::NotOffered,
            ErrorClass::Other,
        ] {
            assert!(!made_nothing(class), "{class:?}");
        }
    }
}
