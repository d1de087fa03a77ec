//! Conformance suite for [`CapacityReservation`].
//!
//! `request.test_id` must be used by nobody else while the suite runs: the suite cancels
//! everything carrying it. The backend must be able to reserve `request` in one of its zones.

use super::CheckingLedger;
use crate::backend::SweepScope;
use crate::capacity::{CapacityRequest, CapacityReservation};
use crate::journal::ResourceLedger;
use crate::types::ResourceState;

/// Runs the checks that fit the reservation: [`disabled_reserves_nothing`] for one that is not
/// enabled, [`reserve_then_cancel`] for one that is.
pub async fn run_all(r: &dyn CapacityReservation, request: &CapacityRequest) {
    if r.is_enabled() {
        reserve_then_cancel(r, request).await;
    } else {
        disabled_reserves_nothing(r, request).await;
    }
}

/// A disabled reservation returns an empty placement, journals nothing and cancels nothing.
pub async fn disabled_reserves_nothing(r: &dyn CapacityReservation, request: &CapacityRequest) {
    let who = r.backend();
    assert!(!r.is_enabled());
    let ledger = CheckingLedger::new();
    let placement = r
        .reserve(request, &ledger)
        .await
        .unwrap_or_else(|e| panic!("{who}: disabled reserve: {e}"));
    assert!(
        placement.reservations.is_empty(),
        "{who}: a disabled reservation reserved {placement:?}"
    );
    assert!(
        ledger.resources().is_empty(),
        "{who}: a disabled reservation journaled something"
    );
    for t in request.needs.keys() {
        assert_eq!(r.get_id(&placement.zone, t), None, "{who}: get_id for {t}");
    }
    assert_eq!(
        r.cancel(&request.test_id, SweepScope::Configured)
            .await
            .unwrap_or_else(|e| panic!("{who}: cancel: {e}")),
        0
    );
    assert_eq!(
        r.cancel_all_regions(&request.test_id)
            .await
            .unwrap_or_else(|e| panic!("{who}: cancel_all: {e}")),
        0
    );
}

/// Reserve gets every needed type in one zone (one of the requested zones, when given), journals
/// each reservation intent-first, answers `get_id` for it; cancel removes them all and is
/// idempotent.
pub async fn reserve_then_cancel(r: &dyn CapacityReservation, request: &CapacityRequest) {
    let who = r.backend();
    assert!(r.is_enabled());
    let ledger = CheckingLedger::new();
    let placement = r
        .reserve(request, &ledger)
        .await
        .unwrap_or_else(|e| panic!("{who}: reserve of {:?} failed: {e}", request.needs));
    ledger.assert_clean(&format!("{who} reserve"));
    if !request.zones.is_empty() {
        assert!(
            request.zones.contains(&placement.zone),
            "{who}: zone {} was not asked for",
            placement.zone
        );
    }
    for t in request.needs.keys() {
        let id = placement
            .reservations
            .get(t)
            .unwrap_or_else(|| panic!("{who}: nothing reserved for {t} (all-or-nothing per zone)"));
        assert_eq!(
            r.get_id(&placement.zone, t).as_ref(),
            Some(id),
            "{who}: get_id({}, {t})",
            placement.zone
        );
        let recorded = ledger.resources();
        assert!(
            recorded
                .iter()
                .any(|res| res.id.as_ref() == Some(id) && res.state == ResourceState::Created),
            "{who}: reservation {id} is not journaled as created: {recorded:?}"
        );
    }
    for res in ledger.resources() {
        assert!(
            matches!(res.state, ResourceState::Created | ResourceState::Destroyed),
            "{who}: reservation {} left as {:?} after reserve returned",
            res.key,
            res.state
        );
    }
    let live = ledger
        .resources()
        .iter()
        .filter(|res| res.state == ResourceState::Created)
        .count() as u32;

    let n = r
        .cancel(&request.test_id, SweepScope::Configured)
        .await
        .unwrap_or_else(|e| panic!("{who}: cancel: {e}"));
    assert_eq!(
        n, live,
        "{who}: cancel must report how many reservations it cancelled"
    );
    let again = r
        .cancel(&request.test_id, SweepScope::Configured)
        .await
        .unwrap_or_else(|e| panic!("{who}: second cancel: {e}"));
    assert_eq!(again, 0, "{who}: cancel is idempotent");
    let everywhere = r
        .cancel_all_regions(&request.test_id)
        .await
        .unwrap_or_else(|e| panic!("{who}: cancel_all_regions: {e}"));
    assert_eq!(everywhere, 0, "{who}: nothing should be left in any region");
}
