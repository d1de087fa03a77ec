//! Zone fallback, shared by every cloud: reserve everything a run needs in one zone, or nothing.
//!
//! 1. Candidate zones are those that offer every requested instance type, the plan's preferred
//!    zones first, in the plan's order.
//! 2. In each zone every type is reserved in turn. On a *capacity* error, what this zone got is
//!    cancelled and the next zone is tried.
//! 3. Any other error (auth, quota, limits, bad parameters) stops at once: another zone would
//!    fail the same way and only waste time and money.
//!
//! A cloud implements [`ZoneReserver`] with its own API calls and error classification; this
//! module owns the policy.

use std::collections::BTreeMap;

use async_trait::async_trait;
use qa_core::journal::ResourceLedger;
use qa_core::{CapacityError, CapacityRequest, Placement};

/// The result of one reservation call, classified.
#[derive(Debug)]
pub enum ZoneAttempt {
    /// Reserved; the reservation id.
    Reserved(String),
    /// The zone lacks capacity for this type: try the next zone.
    NoCapacity(String),
    /// Stop: this error will not go away in another zone.
    Fatal(CapacityError),
}

/// The cloud-specific calls the fallback needs.
#[async_trait]
pub trait ZoneReserver: Send + Sync {
    /// Zones that offer every one of these instance types.
    async fn zones_offering(&self, request: &CapacityRequest)
    -> Result<Vec<String>, CapacityError>;
    /// Reserves `count` instances of `instance_type` in `zone` (journaled and tagged by the
    /// implementation before the call).
    async fn reserve_in_zone(
        &self,
        zone: &str,
        instance_type: &str,
        count: u32,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> ZoneAttempt;
    /// Cancels one reservation (idempotent).
    async fn cancel_reservation(
        &self,
        id: &str,
        ledger: &dyn ResourceLedger,
    ) -> Result<(), CapacityError>;
}

/// Orders candidate zones: preferred first (in their order, only if offered), then the rest.
pub fn candidate_zones(offered: &[String], preferred: &[String]) -> Vec<String> {
    let mut out: Vec<String> = preferred
        .iter()
        .filter(|z| offered.contains(z))
        .cloned()
        .collect();
    for z in offered {
        if !out.contains(z) {
            out.push(z.clone());
        }
    }
    out
}

/// Reserves everything in the first zone that has capacity for all of it.
pub async fn reserve_with_fallback(
    reserver: &dyn ZoneReserver,
    request: &CapacityRequest,
    ledger: &dyn ResourceLedger,
) -> Result<Placement, CapacityError> {
    let offered = reserver.zones_offering(request).await?;
    let zones = candidate_zones(&offered, &request.zones);
    let mut tried = Vec::new();
    let mut last = String::from("no zone offers every requested instance type");
    'zones: for zone in zones {
        tried.push(zone.clone());
        let mut got: BTreeMap<String, String> = BTreeMap::new();
        for (instance_type, &count) in &request.needs {
            match reserver
                .reserve_in_zone(&zone, instance_type, count, request, ledger)
                .await
            {
                ZoneAttempt::Reserved(id) => {
                    got.insert(instance_type.clone(), id);
                }
                ZoneAttempt::NoCapacity(message) => {
                    tracing::info!(%zone, %instance_type, "no capacity: {message}; cancelling this zone's reservations");
                    last = format!("{zone}: {instance_type}: {message}");
                    release(reserver, &got, ledger).await?;
                    continue 'zones;
                }
                ZoneAttempt::Fatal(e) => {
                    release(reserver, &got, ledger).await?;
                    return Err(e);
                }
            }
        }
        return Ok(Placement::new(zone, got));
    }
    Err(CapacityError::NoCapacity { tried, last })
}

async fn release(
    reserver: &dyn ZoneReserver,
    got: &BTreeMap<String, String>,
    ledger: &dyn ResourceLedger,
) -> Result<(), CapacityError> {
    for id in got.values() {
        reserver.cancel_reservation(id, ledger).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use qa_core::TestId;
    use qa_core::journal::MemoryLedger;
    const AWS_BACKEND: qa_core::BackendName = qa_core::BackendName::new("test-cloud");

    use super::*;

    /// Zones with capacity per type; records every call.
    struct Cloud {
        offered: Vec<String>,
        capacity: BTreeMap<(String, String), u32>,
        fatal_in: Option<String>,
        calls: Mutex<Vec<String>>,
        live: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl ZoneReserver for Cloud {
        async fn zones_offering(&self, _: &CapacityRequest) -> Result<Vec<String>, CapacityError> {
            Ok(self.offered.clone())
        }
        async fn reserve_in_zone(
            &self,
            zone: &str,
            t: &str,
            count: u32,
            _: &CapacityRequest,
            _: &dyn ResourceLedger,
        ) -> ZoneAttempt {
            self.calls
                .lock()
                .unwrap()
                .push(format!("reserve {zone} {t}"));
            if self.fatal_in.as_deref() == Some(zone) {
                return ZoneAttempt::Fatal(CapacityError::Auth {
                    backend: AWS_BACKEND,
                    message: "UnauthorizedOperation".into(),
                });
            }
            if self
                .capacity
                .get(&(zone.to_string(), t.to_string()))
                .copied()
                .unwrap_or(0)
                >= count
            {
                let id = format!("cr-{zone}-{t}");
                self.live.lock().unwrap().push(id.clone());
                ZoneAttempt::Reserved(id)
            } else {
                ZoneAttempt::NoCapacity("InsufficientInstanceCapacity".into())
            }
        }
        async fn cancel_reservation(
            &self,
            id: &str,
            _: &dyn ResourceLedger,
        ) -> Result<(), CapacityError> {
            self.calls.lock().unwrap().push(format!("cancel {id}"));
            self.live.lock().unwrap().retain(|x| x != id);
            Ok(())
        }
    }

    fn request(zones: &[&str]) -> CapacityRequest {
        CapacityRequest::new(
            TestId("t".into()),
            [("m5.large".to_string(), 2), ("r5.large".to_string(), 1)]
                .into_iter()
                .collect(),
        )
        .zones(zones.iter().copied())
    }

    fn cloud(cap: &[(&str, &str, u32)], fatal_in: Option<&str>) -> Cloud {
        Cloud {
            offered: vec!["a".into(), "b".into(), "c".into()],
            capacity: cap
                .iter()
                .map(|(z, t, n)| ((z.to_string(), t.to_string()), *n))
                .collect(),
            fatal_in: fatal_in.map(str::to_string),
            calls: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn partial_zone_is_cancelled_and_next_zone_used() {
        let c = cloud(
            &[
                ("a", "m5.large", 2),
                ("b", "m5.large", 5),
                ("b", "r5.large", 1),
            ],
            None,
        );
        let p = reserve_with_fallback(&c, &request(&[]), &MemoryLedger::default())
            .await
            .unwrap();
        assert_eq!(p.zone, "b");
        assert_eq!(p.reservations["m5.large"], "cr-b-m5.large");
        assert_eq!(p.reservations["r5.large"], "cr-b-r5.large");
        assert_eq!(
            *c.calls.lock().unwrap(),
            vec![
                "reserve a m5.large",
                "reserve a r5.large",
                "cancel cr-a-m5.large",
                "reserve b m5.large",
                "reserve b r5.large"
            ]
        );
        assert_eq!(
            c.live.lock().unwrap().len(),
            2,
            "only zone b's reservations remain"
        );
    }

    #[tokio::test]
    async fn preferred_zone_first_and_unoffered_preferences_ignored() {
        assert_eq!(
            candidate_zones(
                &["a".into(), "b".into(), "c".into()],
                &["c".into(), "z".into()]
            ),
            vec!["c", "a", "b"]
        );
        let c = cloud(
            &[
                ("c", "m5.large", 2),
                ("c", "r5.large", 1),
                ("a", "m5.large", 2),
                ("a", "r5.large", 1),
            ],
            None,
        );
        let p = reserve_with_fallback(&c, &request(&["c"]), &MemoryLedger::default())
            .await
            .unwrap();
        assert_eq!(p.zone, "c");
    }

    #[tokio::test]
    async fn fatal_error_stops_without_trying_other_zones() {
        let c = cloud(&[("b", "m5.large", 5), ("b", "r5.large", 1)], Some("a"));
        let e = reserve_with_fallback(&c, &request(&[]), &MemoryLedger::default())
            .await
            .unwrap_err();
        assert!(matches!(e, CapacityError::Auth { .. }), "{e}");
        assert!(
            c.calls
                .lock()
                .unwrap()
                .iter()
                .all(|call| !call.contains(" b ")),
            "{:?}",
            c.calls.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn no_capacity_anywhere_names_every_zone_tried_and_leaves_nothing() {
        let c = cloud(&[("a", "m5.large", 2), ("c", "m5.large", 2)], None);
        let e = reserve_with_fallback(&c, &request(&[]), &MemoryLedger::default())
            .await
            .unwrap_err();
        match e {
            CapacityError::NoCapacity { tried, .. } => assert_eq!(tried, vec!["a", "b", "c"]),
            other => panic!("unexpected {other}"),
        }
        assert!(c.live.lock().unwrap().is_empty());
    }
}
