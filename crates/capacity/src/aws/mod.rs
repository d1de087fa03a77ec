//! EC2 capacity reservations ([`AwsCapacity`]), reserved zone after zone by the shared
//! [`crate::fallback`] algorithm.
//!
//! - Candidate zones are those that offer every requested instance type
//!   (`DescribeInstanceTypeOfferings`, location type `availability-zone`).
//! - Each reservation is `targeted` (only instances that name it use it), tagged at creation with
//!   `qa-run:test-id` and `created-by`, and ends at [`CapacityRequest::end_unix`], so the
//!   reservations of a crashed orchestrator expire on their own; [`AwsCapacity::extend`] moves the
//!   end while the run lives.
//! - It is journaled as an intent with its client token before `CreateCapacityReservation`, so a
//!   retried call never makes a second reservation and a crash leaves a record of it.
//! - `CreateCapacityReservation` is sent with retries off: a capacity error retried three times
//!   in every zone only delays the move to the next zone. Other calls keep the SDK's standard
//!   retries (throttling, transient network errors).
//! - Errors are classified by their EC2 code with [`qa_cloud::aws::errors`]: capacity errors
//!   move to the next zone; auth, quota and invalid-request errors stop at once as the
//!   matching [`CapacityError`], anything else as [`CapacityError::Other`].
//! - On a resume, active reservations already tagged with the test id are reused when one zone
//!   holds one for every requested type with at least the requested count.
//!
//! Reserving in a zone lives in `reserve`, finding, extending and cancelling reservations by
//! their tag in `tagged`; both reach EC2 through [`qa_cloud::aws`] (configuration, error
//! classes, tags, pages, regions).
//!
//! ```no_run
//! # async fn demo() -> Result<(), qa_core::CapacityError> {
//! use qa_capacity::aws::{AwsCapacity, AwsCapacityOptions};
//! let capacity = AwsCapacity::from_env(AwsCapacityOptions { region: Some("eu-west-1".into()), ..Default::default() }).await?;
//! # let _ = capacity; Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::CapacityReservationInstancePlatform;
use qa_cloud::aws::regions::{self, RegionFailure};
use qa_cloud::aws::{AWS as AWS_BACKEND, ClassifiedError, Ec2Config, NoRegion};
use qa_core::journal::ResourceLedger;
use qa_core::{BackendName, SweepScope};
use qa_core::{CapacityError, CapacityRequest, CapacityReservation, Leftovers, Placement, TestId};

use crate::fallback::reserve_with_fallback;

mod reserve;
mod tagged;

use reserve::RegionReserver;

/// The SDK configuration [`AwsCapacity::from_sdk_config`] takes.
pub use qa_cloud::aws::config::SdkConfig;
pub use qa_cloud::aws::errors::{ErrorClass, classify_code};
/// The tag that carries the test id on every reservation.
pub use qa_cloud::aws::tags::TEST_ID as TEST_ID_TAG;

/// Journal kind of a capacity reservation.
pub const RESERVATION_KIND: &str = qa_core::capacity::RESERVATION_KIND;

/// How to reach EC2.
#[derive(Debug, Clone, Default)]
pub struct AwsCapacityOptions {
    /// Region (default: from the AWS configuration: `AWS_REGION`, profile).
    pub region: Option<String>,
    /// Endpoint override, e.g. an emulator on a loopback port (default: the real EC2 endpoint).
    pub endpoint_url: Option<String>,
    /// Platform of the reserved instances (default `Linux/UNIX`).
    pub instance_platform: Option<String>,
}

/// EC2 capacity reservations for one region.
#[derive(Debug)]
pub struct AwsCapacity {
    ec2: Ec2Config,
    platform: CapacityReservationInstancePlatform,
    // (zone, instance type) → reservation id, from this process's `reserve`.
    ids: Mutex<BTreeMap<(String, String), String>>,
    // Regions other than the configured one that this process reserved in: `extend` and
    // `cancel` go there too.
    other_regions: Mutex<BTreeSet<String>>,
}

fn no_region(e: NoRegion) -> CapacityError {
    CapacityError::InvalidRequest {
        backend: AWS_BACKEND,
        message: e.to_string(),
    }
}

impl AwsCapacity {
    /// Loads credentials and region the usual AWS way (environment, profile, instance role).
    pub async fn from_env(options: AwsCapacityOptions) -> Result<Self, CapacityError> {
        let ec2 = Ec2Config::from_env(options.region.as_deref(), options.endpoint_url.as_deref())
            .await
            .map_err(no_region)?;
        Ok(Self::with_config(ec2, options.instance_platform.as_deref()))
    }

    /// Uses an SDK configuration the caller built (credentials, region, endpoint).
    pub fn from_sdk_config(
        sdk: &SdkConfig,
        instance_platform: Option<&str>,
    ) -> Result<Self, CapacityError> {
        let ec2 = Ec2Config::from_sdk_config(sdk, None).map_err(no_region)?;
        Ok(Self::with_config(ec2, instance_platform))
    }

    fn with_config(ec2: Ec2Config, instance_platform: Option<&str>) -> Self {
        AwsCapacity {
            ec2,
            platform: CapacityReservationInstancePlatform::from(
                instance_platform.unwrap_or("Linux/UNIX"),
            ),
            ids: Mutex::new(BTreeMap::new()),
            other_regions: Mutex::new(BTreeSet::new()),
        }
    }

    /// The region this instance reserves in when a request names none.
    pub fn region(&self) -> &str {
        self.ec2.region()
    }

    /// The configured region, the regions this process reserved in, and `more`, each once.
    fn regions(&self, more: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut regions: BTreeSet<String> = self.other_regions.lock().expect("regions").clone();
        regions.extend(more);
        regions.remove(self.region());
        std::iter::once(self.region().to_string())
            .chain(regions)
            .collect()
    }

    /// Cancels in each of `regions` (in parallel), all of them even when one fails. With one
    /// region its error is returned as it is; with several, the failed regions are listed.
    async fn cancel_in_each(
        &self,
        regions: Vec<String>,
        test_id: &TestId,
    ) -> Result<u32, CapacityError> {
        let several = regions.len() > 1;
        let out = regions::in_each_region(regions, |region| {
            let client = self.ec2.client_in(&region);
            let test_id = test_id.clone();
            async move { tagged::cancel_in(&client, &test_id).await }
        })
        .await;
        let total: u32 = out.done.iter().map(|(_, n)| n).sum();
        let failures = out.failure_lines();
        if !several && let Some((_, RegionFailure::Failed(e))) = out.failed.into_iter().next() {
            return Err(e);
        }
        self.ids.lock().expect("ids lock").clear();
        if failures.is_empty() {
            return Ok(total);
        }
        Err(CapacityError::Other {
            backend: AWS_BACKEND,
            message: format!(
                "cancelled {total} reservation(s), but these regions failed and may still hold reservations tagged {TEST_ID_TAG}={test_id}: {}",
                failures.join("; ")
            ),
            leftovers: Leftovers::Orphaned(format!("reservations tagged {TEST_ID_TAG}={test_id}")),
        })
    }
}

/// An error that is not a capacity error, as the core error. A not-found id in a request is a
/// bad request (every EC2 not-found code is an `Invalid…` one).
fn fatal<E: ProvideErrorMetadata + std::error::Error>(e: &E, call: &str) -> CapacityError {
    let e = ClassifiedError::of(e);
    let message = format!("{call}: {e}");
    let backend = AWS_BACKEND;
    match e.class {
        ErrorClass::Auth => CapacityError::Auth { backend, message },
        ErrorClass::Quota => CapacityError::Quota { backend, message },
        ErrorClass::InvalidRequest | ErrorClass::NotFound => {
            CapacityError::InvalidRequest { backend, message }
        }
        _ => CapacityError::Other {
            backend,
            message,
            leftovers: Leftovers::Unknown,
        },
    }
}

#[async_trait]
impl CapacityReservation for AwsCapacity {
    fn backend(&self) -> BackendName {
        AWS_BACKEND
    }

    fn is_enabled(&self) -> bool {
        true
    }

    async fn reserve(
        &self,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> Result<Placement, CapacityError> {
        let region = request
            .region
            .clone()
            .unwrap_or_else(|| self.region().to_string());
        if region != self.region() {
            self.other_regions
                .lock()
                .expect("regions")
                .insert(region.clone());
        }
        let reserver = RegionReserver {
            cap: self,
            client: self.ec2.client_in(&region),
            region,
        };
        if let Some(found) = tagged::reusable(&reserver.client, request).await? {
            tracing::info!(zone = %found.zone, "reusing reservations already tagged {TEST_ID_TAG}={}", request.test_id);
            let mut ids = self.ids.lock().expect("ids lock");
            for (t, id) in &found.reservations {
                ids.insert((found.zone.clone(), t.clone()), id.clone());
            }
            return Ok(found);
        }
        reserve_with_fallback(&reserver, request, ledger).await
    }

    fn get_id(&self, zone: &str, instance_type: &str) -> Option<String> {
        self.ids
            .lock()
            .expect("ids lock")
            .get(&(zone.to_string(), instance_type.to_string()))
            .cloned()
    }

    fn default_region(&self) -> Option<String> {
        Some(self.region().to_string())
    }

    async fn extend(&self, test_id: &TestId, end_unix: i64) -> Result<(), CapacityError> {
        for region in self.regions([]) {
            tagged::extend_in(&self.ec2.client_in(&region), test_id, end_unix).await?;
        }
        Ok(())
    }

    async fn cancel(&self, test_id: &TestId, scope: SweepScope<'_>) -> Result<u32, CapacityError> {
        let regions = match scope {
            SweepScope::AllRegions => regions::enabled(&self.ec2.client())
                .await
                .map_err(|e| fatal(&e, "DescribeRegions"))?,
            SweepScope::Run(records) => self.regions(
                records
                    .iter()
                    .filter(|r| r.backend == AWS_BACKEND && r.kind == RESERVATION_KIND)
                    .filter_map(|r| r.details.get("region").cloned()),
            ),
            _ => self.regions([]),
        };
        self.cancel_in_each(regions, test_id).await
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::error::ErrorMetadata;

    use super::*;

    fn failing(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder()
            .code(code)
            .message("refused")
            .build()
    }

    #[test]
    fn only_capacity_codes_move_to_the_next_zone() {
        for code in [
            "InsufficientInstanceCapacity",
            "InsufficientCapacity",
            "InsufficientReservedInstanceCapacity",
        ] {
            assert_eq!(classify_code(code), ErrorClass::Capacity, "{code}");
        }
        for code in [
            "AuthFailure",
            "InstanceLimitExceeded",
            "InvalidParameterValue",
            "InternalError",
        ] {
            assert_ne!(classify_code(code), ErrorClass::Capacity, "{code}");
        }
    }

    #[test]
    fn other_errors_stop_as_the_matching_capacity_error() {
        let call = "CreateCapacityReservation r5.large in eu-west-1a";
        assert!(matches!(
            fatal(&failing("AuthFailure"), call),
            CapacityError::Auth { .. }
        ));
        assert!(matches!(
            fatal(&failing("UnauthorizedOperation"), call),
            CapacityError::Auth { .. }
        ));
        assert!(matches!(
            fatal(&failing("InstanceLimitExceeded"), call),
            CapacityError::Quota { .. }
        ));
        assert!(matches!(
            fatal(&failing("ReservationLimitExceeded"), call),
            CapacityError::Quota { .. }
        ));
        assert!(matches!(
            fatal(&failing("InvalidParameterValue"), call),
            CapacityError::InvalidRequest { .. }
        ));
        assert!(matches!(
            fatal(&failing("InvalidParameterCombination"), call),
            CapacityError::InvalidRequest { .. }
        ));
        assert!(matches!(
            fatal(&failing("InvalidCapacityReservationId.NotFound"), call),
            CapacityError::InvalidRequest { .. }
        ));
        match fatal(&failing("InternalError"), call) {
            CapacityError::Other {
                message, leftovers, ..
            } => {
                assert_eq!(message, format!("{call}: InternalError: refused"));
                assert_eq!(leftovers, Leftovers::Unknown);
            }
            other => panic!("{other:?}"),
        }
    }
}
