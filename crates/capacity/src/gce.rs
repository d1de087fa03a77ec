//! Compute Engine capacity reservations ([`GceCapacity`]), reserved zone after zone by the shared
//! [`crate::fallback`] algorithm.
//!
//! - Candidate zones are the region's zones that are up and offer every requested machine type
//!   (`machineTypes.aggregatedList` filtered by name), the plan's preferred zones first.
//! - Each reservation is a zonal *specific* reservation (`specificReservationRequired: true`, so
//!   only instances that name it use it) of one machine type. Reservations take no labels in the
//!   v1 API: the name starts with a prefix made from the test id
//!   ([`reservation_prefix`](qa_cloud::gce::labels::reservation_prefix)) and the description
//!   carries the test id, which is what cancelling compares.
//! - A reservation ends by itself at [`CapacityRequest::end_unix`] (`deleteAtTime`), so the
//!   reservations of a crashed orchestrator do not outlive the run's budget; [`GceCapacity::extend`]
//!   moves that time while the run lives (`reservations.update`).
//! - Every insert carries a `requestId` journaled with the reservation's name before the call;
//!   stockouts are reported inside the finished operation and read from its raw code:
//!   `ZONE_RESOURCE_POOL_EXHAUSTED…` moves to the next zone; quota, permission and request
//!   errors stop at once as the matching [`CapacityError`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), qa_core::CapacityError> {
//! use qa_capacity::gce::GceCapacity;
//! let capacity = GceCapacity::from_env(Some("my-project"), None)?;
//! # let _ = capacity; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_compute_v1::model::{
    AllocationSpecificSKUAllocationReservedInstanceProperties as InstanceProperties,
    AllocationSpecificSKUReservation, Reservation,
};
use google_cloud_gax::options::RequestOptionsBuilder;
use qa_cloud::all_items;
use qa_cloud::gce::config::Clients;
use qa_cloud::gce::labels::{reservation_description, reservation_is_of, reservation_name};
use qa_cloud::gce::{ErrorClass, GCE, GceConfig, GceError, OperationWait, config, finished, zones};
use qa_core::journal::ResourceLedger;
use qa_core::types::{Resource, ResourceKey};
use qa_core::{
    BackendName, CapacityError, CapacityRequest, CapacityReservation, Leftovers, Placement,
    SweepScope, TestId,
};

use crate::fallback::{ZoneAttempt, ZoneReserver, reserve_with_fallback};

/// Journal kind of a capacity reservation.
pub const RESERVATION_KIND: &str = qa_core::capacity::RESERVATION_KIND;

/// Compute Engine capacity reservations in one project.
#[derive(Debug)]
pub struct GceCapacity {
    gce: GceConfig,
    wait: OperationWait,
    // Reservation name → its zone and journal key, from this process's `reserve`.
    zones: Mutex<BTreeMap<String, (String, ResourceKey)>>,
    // (zone, machine type) → reservation name.
    ids: Mutex<BTreeMap<(String, String), String>>,
}

/// An error that stops the zone fallback, as the core error.
fn fatal(e: GceError, call: &str) -> CapacityError {
    let message = format!("{call}: {e} ({})", qa_cloud::gce::errors::hint(e.class));
    let backend = GCE;
    match e.class {
        ErrorClass::Auth => CapacityError::Auth { backend, message },
        ErrorClass::Quota => CapacityError::Quota { backend, message },
        ErrorClass::InvalidRequest | ErrorClass::NotFound | ErrorClass::NotOffered => {
            CapacityError::InvalidRequest { backend, message }
        }
        _ => CapacityError::Other {
            backend,
            message,
            leftovers: Leftovers::Unknown,
        },
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl GceCapacity {
    /// Credentials from Application Default Credentials; the project from `project` or the
    /// environment.
    pub fn from_env(project: Option<&str>, endpoint: Option<&str>) -> Result<Self, CapacityError> {
        let gce =
            GceConfig::from_env(project, endpoint).map_err(|e| CapacityError::InvalidRequest {
                backend: GCE,
                message: e.to_string(),
            })?;
        Ok(Self::with_config(gce))
    }

    /// Uses a configuration the caller built.
    pub fn with_config(gce: GceConfig) -> Self {
        GceCapacity {
            gce,
            wait: OperationWait {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(600),
            },
            zones: Mutex::new(BTreeMap::new()),
            ids: Mutex::new(BTreeMap::new()),
        }
    }

    /// Polls operations every `interval`, for at most `timeout`.
    pub fn with_operation_wait(mut self, interval: Duration, timeout: Duration) -> Self {
        self.wait = OperationWait { interval, timeout };
        self
    }

    fn project(&self) -> Result<String, CapacityError> {
        self.gce
            .project(None)
            .map_err(|e| CapacityError::InvalidRequest {
                backend: GCE,
                message: e.to_string(),
            })
    }

    async fn clients(&self) -> Result<&Clients, CapacityError> {
        self.gce
            .clients()
            .await
            .map_err(|e| CapacityError::InvalidRequest {
                backend: GCE,
                message: e.to_string(),
            })
    }

    /// Every reservation in the project made for `test_id`: (zone, name). Without a project
    /// configured there is nowhere to look, and nothing is found.
    async fn of_test_id(&self, test_id: &TestId) -> Result<Vec<(String, String)>, CapacityError> {
        let Some(project) = self.gce.default_project().map(str::to_string) else {
            tracing::warn!(
                "no GCE project configured (GOOGLE_CLOUD_PROJECT): no reservation of {test_id} looked for"
            );
            return Ok(Vec::new());
        };
        let clients = self.clients().await?;
        let scopes = all_items!(clients.reservations.aggregated_list().set_project(&project))
            .map_err(|e| fatal(e, "reservations.aggregatedList"))?;
        let mut out = Vec::new();
        for (scope, list) in scopes {
            let Some(zone) = scope.strip_prefix("zones/") else {
                continue;
            };
            for r in list.reservations {
                if reservation_is_of(r.description.as_deref(), &test_id.0)
                    && let Some(name) = r.name
                {
                    out.push((zone.to_string(), name));
                }
            }
        }
        Ok(out)
    }

    /// Deletes one reservation; gone is done.
    async fn delete(&self, zone: &str, name: &str) -> Result<(), CapacityError> {
        let project = self.project()?;
        let clients = self.clients().await?;
        let sent = clients
            .reservations
            .delete()
            .set_project(&project)
            .set_zone(zone)
            .set_reservation(name)
            .set_request_id(config::request_id())
            .send()
            .await;
        let done = finished(sent, self.wait, |op| {
            clients
                .reservations
                .get_operation()
                .set_project(&project)
                .set_zone(zone)
                .set_operation(op)
                .send()
        })
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(fatal(e, &format!("reservations.delete {name} in {zone}"))),
        }
    }
}

#[async_trait]
impl ZoneReserver for GceCapacity {
    async fn zones_offering(
        &self,
        request: &CapacityRequest,
    ) -> Result<Vec<String>, CapacityError> {
        let project = self.project()?;
        let clients = self.clients().await?;
        let region = request
            .region
            .clone()
            .or_else(|| {
                request
                    .zones
                    .first()
                    .and_then(|z| qa_cloud::gce::region_of_zone(z))
            })
            .ok_or_else(|| CapacityError::InvalidRequest {
                backend: GCE,
                message: "no region to reserve in: give the machine `region` or `zones`".into(),
            })?;
        let types: Vec<String> = request.needs.keys().cloned().collect();
        zones::zones_offering(clients, &project, &region, &types)
            .await
            .map_err(|e| fatal(e, "machineTypes.aggregatedList"))
    }

    async fn reserve_in_zone(
        &self,
        zone: &str,
        instance_type: &str,
        count: u32,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> ZoneAttempt {
        let project = match self.project() {
            Ok(p) => p,
            Err(e) => return ZoneAttempt::Fatal(e),
        };
        let clients = match self.clients().await {
            Ok(c) => c,
            Err(e) => return ZoneAttempt::Fatal(e),
        };
        let request_id = config::request_id();
        // Unique per call: machines that come to this zone and type later (a fallback) get
        // reservations of their own.
        let name = reservation_name(&request.test_id.0, zone, instance_type, &request_id[..6]);
        let key = ResourceKey(format!("gce/{RESERVATION_KIND}/{zone}/{name}"));
        let mut intent = Resource::new(key.clone(), GCE, RESERVATION_KIND);
        intent.client_token = Some(request_id.clone());
        intent.details = [
            ("project", project.as_str()),
            ("zone", zone),
            ("name", name.as_str()),
            ("instance-type", instance_type),
            ("count", &count.to_string()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Err(e) = ledger.intent(intent).await {
            return ZoneAttempt::Fatal(CapacityError::Other {
                backend: GCE,
                message: format!("journal: {e}; reservation not made"),
                leftovers: Leftovers::Clear,
            });
        }
        let mut body = Reservation::new()
            .set_name(name.clone())
            .set_description(reservation_description(&request.test_id.0))
            .set_specific_reservation_required(true)
            .set_specific_reservation(
                AllocationSpecificSKUReservation::new()
                    .set_count(i64::from(count))
                    .set_instance_properties(
                        InstanceProperties::new().set_machine_type(instance_type),
                    ),
            );
        if let Some(end) = request.end_unix {
            body = body.set_delete_at_time(rfc3339(end));
        }
        let sent = clients
            .reservations
            .insert()
            .set_project(&project)
            .set_zone(zone)
            .set_request_id(request_id)
            .set_body(body)
            .with_idempotency(true)
            .send()
            .await;
        let done = finished(sent, self.wait, |op| {
            clients
                .reservations
                .get_operation()
                .set_project(&project)
                .set_zone(zone)
                .set_operation(op)
                .send()
        })
        .await;
        match done {
            Ok(_) => {
                let _ = ledger.created(&key, &name, BTreeMap::new()).await;
                self.zones
                    .lock()
                    .expect("zones lock")
                    .insert(name.clone(), (zone.to_string(), key.clone()));
                self.ids
                    .lock()
                    .expect("ids lock")
                    .insert((zone.to_string(), instance_type.to_string()), name.clone());
                ZoneAttempt::Reserved(name)
            }
            Err(e) => {
                if e.answered {
                    let _ = ledger.destroyed(&key).await;
                }
                if e.class == ErrorClass::Capacity {
                    ZoneAttempt::NoCapacity(e.to_string())
                } else {
                    ZoneAttempt::Fatal(fatal(
                        e,
                        &format!("reservations.insert {instance_type} × {count} in {zone}"),
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
        let made = self.zones.lock().expect("zones lock").get(id).cloned();
        let Some((zone, key)) = made else {
            return Err(CapacityError::Other {
                backend: GCE,
                message: format!("reservation {id} was not made by this process"),
                leftovers: Leftovers::Unknown,
            });
        };
        self.delete(&zone, id).await?;
        let _ = ledger.destroyed(&key).await;
        self.zones.lock().expect("zones lock").remove(id);
        self.ids.lock().expect("ids lock").retain(|_, v| v != id);
        Ok(())
    }
}

#[async_trait]
impl CapacityReservation for GceCapacity {
    fn backend(&self) -> BackendName {
        GCE
    }

    fn is_enabled(&self) -> bool {
        true
    }

    async fn reserve(
        &self,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> Result<Placement, CapacityError> {
        reserve_with_fallback(self, request, ledger).await
    }

    fn get_id(&self, zone: &str, instance_type: &str) -> Option<String> {
        self.ids
            .lock()
            .expect("ids lock")
            .get(&(zone.to_string(), instance_type.to_string()))
            .cloned()
    }

    async fn extend(&self, test_id: &TestId, end_unix: i64) -> Result<(), CapacityError> {
        let project = self.project()?;
        let clients = self.clients().await?;
        for (zone, name) in self.of_test_id(test_id).await? {
            let sent = clients
                .reservations
                .update()
                .set_project(&project)
                .set_zone(&zone)
                .set_reservation(&name)
                .set_paths("deleteAtTime")
                .set_request_id(config::request_id())
                .set_body(Reservation::new().set_delete_at_time(rfc3339(end_unix)))
                .send()
                .await;
            let done = finished(sent, self.wait, |op| {
                clients
                    .reservations
                    .get_operation()
                    .set_project(&project)
                    .set_zone(&zone)
                    .set_operation(op)
                    .send()
            })
            .await;
            if let Err(e) = done {
                return Err(fatal(e, &format!("reservations.update {name} in {zone}")));
            }
        }
        Ok(())
    }

    async fn cancel(&self, test_id: &TestId, scope: SweepScope<'_>) -> Result<u32, CapacityError> {
        // One aggregated listing covers every zone, so every scope cancels the same way.
        let _ = scope;
        let mut n = 0;
        for (zone, name) in self.of_test_id(test_id).await? {
            self.delete(&zone, &name).await?;
            n += 1;
        }
        self.zones.lock().expect("zones lock").clear();
        self.ids.lock().expect("ids lock").clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_capacity_moves_on_and_the_rest_stops_as_its_class() {
        let e = |code: &str, status: u16| GceError::new(Some(code), Some(status), "refused");
        assert!(matches!(
            fatal(e("forbidden", 403), "c"),
            CapacityError::Auth { .. }
        ));
        assert!(matches!(
            fatal(e("QUOTA_EXCEEDED", 403), "c"),
            CapacityError::Quota { .. }
        ));
        assert!(matches!(
            fatal(e("invalid", 400), "c"),
            CapacityError::InvalidRequest { .. }
        ));
        assert!(matches!(
            fatal(e("backendError", 503), "c"),
            CapacityError::Other { .. }
        ));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
