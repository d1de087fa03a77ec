//! Reservations found by their test-id tag rather than by this process's memory: reused on a
//! resume, extended while the run lives, cancelled at teardown or by a sweep. Every function
//! works in the region of the client it is given and reads every page of the listing.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_ec2::types::{
    CapacityReservation as Ec2Reservation, CapacityReservationState, EndDateType,
};
use qa_cloud::aws::{ErrorClass, classify, pages, tags};
use qa_core::{CapacityError, CapacityRequest, Placement, TestId};

use super::fatal;

/// Every reservation in the client's region tagged with `test_id` (any state).
pub(super) async fn tagged_with(
    client: &Client,
    test_id: &TestId,
) -> Result<Vec<Ec2Reservation>, CapacityError> {
    pages::capacity_reservations(client, vec![tags::tag_filter(tags::TEST_ID, &[&test_id.0])])
        .await
        .map_err(|e| fatal(&e, "DescribeCapacityReservations"))
}

/// Cancels every live reservation tagged with `test_id`; returns how many it cancelled.
pub(super) async fn cancel_in(client: &Client, test_id: &TestId) -> Result<u32, CapacityError> {
    let mut n = 0;
    for r in tagged_with(client, test_id).await? {
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

/// Active reservations tagged with the test id that cover the whole request in one zone.
pub(super) async fn reusable(
    client: &Client,
    request: &CapacityRequest,
) -> Result<Option<Placement>, CapacityError> {
    let existing = tagged_with(client, &request.test_id).await?;
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
        .map(|(zone, reservations)| Placement::new(zone, reservations)))
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
pub(super) async fn cancel_one(client: &Client, id: &str) -> Result<bool, CapacityError> {
    match client
        .cancel_capacity_reservation()
        .capacity_reservation_id(id)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if classify(&e) == ErrorClass::NotFound => Ok(false),
        Err(e) => Err(fatal(&e, "CancelCapacityReservation")),
    }
}

/// Moves the end of every live reservation tagged with `test_id` to `end_unix`.
pub(super) async fn extend_in(
    client: &Client,
    test_id: &TestId,
    end_unix: i64,
) -> Result<(), CapacityError> {
    for r in tagged_with(client, test_id).await? {
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
            .map_err(|e| fatal(&e, &format!("ModifyCapacityReservation {id}")))?;
    }
    Ok(())
}
