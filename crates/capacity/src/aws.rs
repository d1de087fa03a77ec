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
//! - Errors are classified by their EC2 code: `InsufficientInstanceCapacity` and
//!   `InsufficientCapacity` move to the next zone; `AuthFailure`/`UnauthorizedOperation`,
//!   `*LimitExceeded` and `InvalidParameter*` stop at once.
//! - On a resume, active reservations already tagged with the test id are reused when one zone
//!   holds one for every requested type with at least the requested count.
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
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_ec2::types::{
    CapacityReservation as Ec2Reservation, CapacityReservationInstancePlatform,
    CapacityReservationState, EndDateType, Filter, InstanceMatchCriteria, LocationType,
    ResourceType, Tag, TagSpecification,
};
use qa_cloud::aws::AWS as AWS_BACKEND;
use qa_core::journal::ResourceLedger;
use qa_core::types::{Resource, ResourceKey, ResourceState};
use qa_core::{BackendName, SweepScope};
use qa_core::{CapacityError, CapacityRequest, CapacityReservation, Leftovers, Placement, TestId};

use crate::fallback::{ZoneAttempt, ZoneReserver, reserve_with_fallback};

/// The tag that carries the test id on every reservation.
pub const TEST_ID_TAG: &str = "qa-run:test-id";

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
    sdk: SdkConfig,
    client: Client,
    region: String,
    platform: CapacityReservationInstancePlatform,
    // (zone, instance type) → reservation id, from this process's `reserve`.
    ids: Mutex<BTreeMap<(String, String), String>>,
    // Regions other than `region` that this process reserved in: `extend` and `cancel` go there too.
    other_regions: Mutex<BTreeSet<String>>,
}

impl AwsCapacity {
    /// Loads credentials and region the usual AWS way (environment, profile, instance role).
    pub async fn from_env(options: AwsCapacityOptions) -> Result<Self, CapacityError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let sdk = loader.load().await;
        Self::from_sdk_config(&sdk, options.instance_platform.as_deref())
    }

    /// Uses an SDK configuration the caller built (credentials, region, endpoint).
    pub fn from_sdk_config(
        sdk: &SdkConfig,
        instance_platform: Option<&str>,
    ) -> Result<Self, CapacityError> {
        let region =
            sdk.region()
                .map(|r| r.to_string())
                .ok_or_else(|| CapacityError::InvalidRequest {
                    backend: AWS_BACKEND,
                    message:
                        "no AWS region configured (set it in the plan, AWS_REGION or the profile)"
                            .into(),
                })?;
        Ok(AwsCapacity {
            sdk: sdk.clone(),
            client: Client::new(sdk),
            region,
            platform: CapacityReservationInstancePlatform::from(
                instance_platform.unwrap_or("Linux/UNIX"),
            ),
            ids: Mutex::new(BTreeMap::new()),
            other_regions: Mutex::new(BTreeSet::new()),
        })
    }

    /// The region this instance reserves in when a request names none.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The configured region, the regions this process reserved in, and `more`, each once,
    /// with a client for each.
    fn clients(&self, more: impl IntoIterator<Item = String>) -> Vec<(String, Client)> {
        let mut regions: BTreeSet<String> = self.other_regions.lock().expect("regions").clone();
        regions.extend(more);
        regions.remove(&self.region);
        std::iter::once((self.region.clone(), self.client.clone()))
            .chain(regions.into_iter().map(|r| {
                let c = self.client_for(&r);
                (r, c)
            }))
            .collect()
    }

    /// Cancels in each of `clients` (in parallel), all of them even when one fails. With one
    /// region its error is returned as it is; with several, the failed regions are listed.
    async fn cancel_in_each(
        &self,
        clients: Vec<(String, Client)>,
        test_id: &TestId,
    ) -> Result<u32, CapacityError> {
        let several = clients.len() > 1;
        let mut tasks = tokio::task::JoinSet::new();
        for (region, client) in clients {
            let test_id = test_id.clone();
            tasks.spawn(async move { (region, Self::cancel_in(&client, &test_id).await) });
        }
        let mut total = 0;
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(n))) => total += n,
                Ok((_, Err(e))) if !several => return Err(e),
                Ok((region, Err(e))) => failed.push(format!("{region}: {e}")),
                Err(e) => failed.push(format!("a region's task: {e}")),
            }
        }
        self.ids.lock().expect("ids lock").clear();
        if failed.is_empty() {
            return Ok(total);
        }
        failed.sort();
        Err(CapacityError::Other {
            backend: AWS_BACKEND,
            message: format!(
                "cancelled {total} reservation(s), but these regions failed and may still hold reservations tagged {TEST_ID_TAG}={test_id}: {}",
                failed.join("; ")
            ),
            leftovers: Leftovers::Orphaned(format!("reservations tagged {TEST_ID_TAG}={test_id}")),
        })
    }

    fn client_for(&self, region: &str) -> Client {
        let conf = aws_sdk_ec2::config::Builder::from(&self.sdk)
            .region(Region::new(region.to_string()))
            .build();
        Client::from_conf(conf)
    }

    /// Every reservation in the region tagged with `test_id` (any state), all pages.
    async fn tagged(
        client: &Client,
        test_id: &TestId,
    ) -> Result<Vec<Ec2Reservation>, CapacityError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = client
                .describe_capacity_reservations()
                .filters(
                    Filter::builder()
                        .name(format!("tag:{TEST_ID_TAG}"))
                        .values(test_id.0.clone())
                        .build(),
                )
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify_fatal(&e, "DescribeCapacityReservations"))?;
            out.extend(page.capacity_reservations().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn cancel_in(client: &Client, test_id: &TestId) -> Result<u32, CapacityError> {
        let mut n = 0;
        for r in Self::tagged(client, test_id).await? {
            if !is_live(&r) {
                continue;
            }
            let Some(id) = r.capacity_reservation_id() else {
                continue;
            };
            if cancel_one(client, id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn extend_in(
        &self,
        client: &Client,
        test_id: &TestId,
        end_unix: i64,
    ) -> Result<(), CapacityError> {
        for r in Self::tagged(client, test_id).await? {
            if !is_live(&r) {
                continue;
            }
            let Some(id) = r.capacity_reservation_id() else {
                continue;
            };
            client
                .modify_capacity_reservation()
                .capacity_reservation_id(id)
                .end_date_type(EndDateType::Limited)
                .end_date(DateTime::from_secs(end_unix))
                .send()
                .await
                .map_err(|e| classify_fatal(&e, &format!("ModifyCapacityReservation {id}")))?;
        }
        Ok(())
    }

    /// Active reservations tagged with the test id that cover the whole request in one zone.
    async fn reusable(
        client: &Client,
        request: &CapacityRequest,
    ) -> Result<Option<Placement>, CapacityError> {
        let existing = Self::tagged(client, &request.test_id).await?;
        let mut by_zone: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in existing.iter().filter(|r| is_live(r)) {
            let (Some(zone), Some(t), Some(id)) = (
                r.availability_zone(),
                r.instance_type(),
                r.capacity_reservation_id(),
            ) else {
                continue;
            };
            let need = request.needs.get(t).copied().unwrap_or(0);
            if need > 0 && r.total_instance_count().unwrap_or(0) >= need as i32 {
                by_zone
                    .entry(zone.to_string())
                    .or_default()
                    .insert(t.to_string(), id.to_string());
            }
        }
        let allowed = |z: &String| request.zones.is_empty() || request.zones.contains(z);
        Ok(by_zone
            .into_iter()
            .find(|(zone, got)| allowed(zone) && request.needs.keys().all(|t| got.contains_key(t)))
            .map(|(zone, reservations)| Placement { zone, reservations }))
    }
}

fn is_live(r: &Ec2Reservation) -> bool {
    matches!(
        r.state(),
        Some(
            CapacityReservationState::Active
                | CapacityReservationState::Pending
                | CapacityReservationState::Scheduled
        )
    )
}

/// Cancels one reservation; `false` when it was already gone.
async fn cancel_one(client: &Client, id: &str) -> Result<bool, CapacityError> {
    match client
        .cancel_capacity_reservation()
        .capacity_reservation_id(id)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(classify_fatal(&e, "CancelCapacityReservation")),
    }
}

fn is_not_found<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code().is_some_and(|c| {
        c.ends_with(".NotFound") || c.ends_with(".Unknown") || c.ends_with(".Malformed")
    })
}

/// What an EC2 error code means for zone fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The zone has no capacity: try the next one.
    Capacity,
    /// Credentials or permissions.
    Auth,
    /// An account quota or limit.
    Quota,
    /// The request is wrong.
    InvalidRequest,
    /// Anything else.
    Other,
}

/// Classifies an EC2 error code.
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientCapacityOnHost" => ErrorClass::Capacity,
        "AuthFailure"
        | "UnauthorizedOperation"
        | "Blocked"
        | "OptInRequired"
        | "SignatureDoesNotMatch" => ErrorClass::Auth,
        c if c.contains("LimitExceeded") || c == "ReservationCapacityExceeded" => ErrorClass::Quota,
        c if c.starts_with("InvalidParameter")
            || c.starts_with("Invalid")
            || c == "MissingParameter" =>
        {
            ErrorClass::InvalidRequest
        }
        _ => ErrorClass::Other,
    }
}

fn describe<E: ProvideErrorMetadata + std::error::Error>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => {
            // No EC2 error body: a connection or timeout error; the chain says which.
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

/// An error that is not a capacity error, as the core error.
fn classify_fatal<E: ProvideErrorMetadata + std::error::Error>(e: &E, call: &str) -> CapacityError {
    let message = format!("{call}: {}", describe(e));
    let backend = AWS_BACKEND;
    match e.code().map(classify_code) {
        Some(ErrorClass::Auth) => CapacityError::Auth { backend, message },
        Some(ErrorClass::Quota) => CapacityError::Quota { backend, message },
        Some(ErrorClass::InvalidRequest) => CapacityError::InvalidRequest { backend, message },
        _ => CapacityError::Other {
            backend,
            message,
            leftovers: Leftovers::Unknown,
        },
    }
}

fn reservation_key(region: &str, zone: &str, instance_type: &str, token: &str) -> ResourceKey {
    ResourceKey(format!(
        "aws/reservation/{region}/{zone}/{instance_type}/{token}"
    ))
}

fn new_client_token() -> String {
    // EC2 client tokens are up to 64 ASCII characters; 128 random bits are plenty.
    format!("qa-{:032x}", rand::random::<u128>())
}

/// Reservations in the request's region (which may differ from the configured one).
struct RegionReserver<'a> {
    cap: &'a AwsCapacity,
    client: Client,
    region: String,
}

#[async_trait]
impl ZoneReserver for RegionReserver<'_> {
    async fn zones_offering(
        &self,
        request: &CapacityRequest,
    ) -> Result<Vec<String>, CapacityError> {
        let types: Vec<String> = request.needs.keys().cloned().collect();
        let mut offered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_instance_type_offerings()
                .location_type(LocationType::AvailabilityZone)
                .filters(
                    Filter::builder()
                        .name("instance-type")
                        .set_values(Some(types.clone()))
                        .build(),
                )
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify_fatal(&e, "DescribeInstanceTypeOfferings"))?;
            for o in page.instance_type_offerings() {
                if let (Some(t), Some(zone)) = (o.instance_type(), o.location()) {
                    offered
                        .entry(zone.to_string())
                        .or_default()
                        .insert(t.as_str().to_string());
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(offered
            .into_iter()
            .filter(|(_, have)| types.iter().all(|t| have.contains(t)))
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
        let token = new_client_token();
        let key = reservation_key(&self.region, zone, instance_type, &token);
        let details: BTreeMap<String, String> = [
            ("region".to_string(), self.region.clone()),
            ("zone".to_string(), zone.to_string()),
            ("instance-type".to_string(), instance_type.to_string()),
            ("count".to_string(), count.to_string()),
        ]
        .into_iter()
        .collect();
        let intent = Resource {
            key: key.clone(),
            backend: AWS_BACKEND,
            kind: RESERVATION_KIND.into(),
            machine: None,
            id: None,
            client_token: Some(token.clone()),
            details: details.clone(),
            state: ResourceState::Intent,
        };
        if let Err(e) = ledger.intent(intent).await {
            return ZoneAttempt::Fatal(CapacityError::Other {
                backend: AWS_BACKEND,
                message: format!("journal: {e}; nothing was reserved in {zone}"),
                leftovers: Leftovers::Clear,
            });
        }
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::CapacityReservation)
            .tags(
                Tag::builder()
                    .key(TEST_ID_TAG)
                    .value(request.test_id.0.clone())
                    .build(),
            )
            .tags(Tag::builder().key("created-by").value("qa-run").build())
            .build();
        let mut call = self
            .client
            .create_capacity_reservation()
            .client_token(token)
            .instance_type(instance_type)
            .instance_platform(self.cap.platform.clone())
            .availability_zone(zone)
            .instance_count(count as i32)
            .instance_match_criteria(InstanceMatchCriteria::Targeted)
            .tag_specifications(tags);
        call = match request.end_unix {
            Some(end) => call
                .end_date_type(EndDateType::Limited)
                .end_date(DateTime::from_secs(end)),
            None => call.end_date_type(EndDateType::Unlimited),
        };
        let result = call
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default()
                    .retry_config(RetryConfig::standard().with_max_attempts(1)),
            )
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
                let class = e.code().map(classify_code);
                if class == Some(ErrorClass::Capacity)
                    || class == Some(ErrorClass::Auth)
                    || class == Some(ErrorClass::Quota)
                    || class == Some(ErrorClass::InvalidRequest)
                {
                    // EC2 refused the request: nothing was made.
                    let _ = ledger.destroyed(&key).await;
                }
                if class == Some(ErrorClass::Capacity) {
                    ZoneAttempt::NoCapacity(describe(&e))
                } else {
                    ZoneAttempt::Fatal(classify_fatal(
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
            .unwrap_or_else(|| self.region.clone());
        if region != self.region {
            self.other_regions
                .lock()
                .expect("regions")
                .insert(region.clone());
        }
        let reserver = RegionReserver {
            cap: self,
            client: if region == self.region {
                self.client.clone()
            } else {
                self.client_for(&region)
            },
            region,
        };
        if let Some(found) = Self::reusable(&reserver.client, request).await? {
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
        Some(self.region.clone())
    }

    async fn extend(&self, test_id: &TestId, end_unix: i64) -> Result<(), CapacityError> {
        for (_, client) in self.clients([]) {
            self.extend_in(&client, test_id, end_unix).await?;
        }
        Ok(())
    }

    async fn cancel(&self, test_id: &TestId, scope: SweepScope<'_>) -> Result<u32, CapacityError> {
        let clients = match scope {
            SweepScope::AllRegions => {
                let regions = self
                    .client
                    .describe_regions()
                    .send()
                    .await
                    .map_err(|e| classify_fatal(&e, "DescribeRegions"))?;
                regions
                    .regions()
                    .iter()
                    .filter_map(|r| r.region_name())
                    .map(|name| (name.to_string(), self.client_for(name)))
                    .collect()
            }
            SweepScope::Run(records) => self.clients(
                records
                    .iter()
                    .filter(|r| r.backend == AWS_BACKEND && r.kind == RESERVATION_KIND)
                    .filter_map(|r| r.details.get("region").cloned()),
            ),
            _ => self.clients([]),
        };
        self.cancel_in_each(clients, test_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_capacity_codes_move_to_the_next_zone() {
        assert_eq!(
            classify_code("InsufficientInstanceCapacity"),
            ErrorClass::Capacity
        );
        assert_eq!(classify_code("InsufficientCapacity"), ErrorClass::Capacity);
        assert_eq!(classify_code("AuthFailure"), ErrorClass::Auth);
        assert_eq!(classify_code("UnauthorizedOperation"), ErrorClass::Auth);
        assert_eq!(classify_code("InstanceLimitExceeded"), ErrorClass::Quota);
        assert_eq!(classify_code("ReservationLimitExceeded"), ErrorClass::Quota);
        assert_eq!(
            classify_code("InvalidParameterValue"),
            ErrorClass::InvalidRequest
        );
        assert_eq!(
            classify_code("InvalidParameterCombination"),
            ErrorClass::InvalidRequest
        );
        assert_eq!(classify_code("InternalError"), ErrorClass::Other);
    }

    #[test]
    fn client_tokens_differ_and_fit_ec2s_limit() {
        let a = new_client_token();
        let b = new_client_token();
        assert_ne!(a, b);
        assert!(a.len() <= 64 && a.is_ascii());
    }
}
