//! Compute Engine reservations with the official client against qa-testkit's emulator
//! (`qa_testkit::gce`). Run with `cargo test -p qa-capacity --features gce --test gce_emulator`.

use std::time::Duration;

use qa_capacity::gce::GceCapacity;
use qa_cloud::gce::GceConfig;
use qa_core::conformance::CheckingLedger;
use qa_core::journal::ResourceLedger;
use qa_core::types::ResourceState;
use qa_core::{CapacityError, CapacityRequest, CapacityReservation, SweepScope, TestId};
use qa_testkit::gce::{Call, FaultRule, GceConfig as EmulatorConfig, GceEmulator};

const END: i64 = 1_900_000_000; // 2030-03-17T17:46:40Z

fn request(test_id: &str, zones: &[&str]) -> CapacityRequest {
    CapacityRequest::new(
        TestId(test_id.into()),
        [
            ("n2-standard-2".to_string(), 2),
            ("e2-standard-2".to_string(), 1),
        ]
        .into_iter()
        .collect(),
    )
    .region("us-central1")
    .zones(zones.iter().copied())
    .end_unix(END)
}

fn capacity(gce: &GceEmulator) -> GceCapacity {
    GceCapacity::with_config(GceConfig::anonymous(gce.project(), &gce.endpoint()))
        .with_operation_wait(Duration::from_millis(10), Duration::from_secs(10))
}

#[tokio::test]
async fn conformance() {
    let gce = GceEmulator::start(EmulatorConfig::default()).await;
    let cap = capacity(&gce);
    qa_core::conformance::capacity::run_all(&cap, &request("conformance", &["us-central1-b"]))
        .await;
    assert!(gce.reservations().is_empty(), "{:?}", gce.reservations());
    assert!(gce.requests_of(Call::ReservationsInsert).len() >= 2);
}

#[tokio::test]
async fn a_zone_short_of_one_type_is_released_and_the_next_zone_used() {
    let gce = GceEmulator::start(EmulatorConfig::default()).await;
    // Zone b first; it has room for e2 (reserved first) but not for n2.
    gce.set_capacity("us-central1-b", "n2-standard-2", 0);
    let cap = capacity(&gce);
    let ledger = CheckingLedger::new();
    let p = cap
        .reserve(
            &request("fallback", &["us-central1-b", "us-central1-a"]),
            &ledger,
        )
        .await
        .unwrap();
    ledger.assert_clean("reserve");
    assert_eq!(p.zone, "us-central1-a");
    // b's e2 reservation was made and then cancelled; a holds both, specific and ending at END.
    let inserts = gce.requests_of(Call::ReservationsInsert);
    assert_eq!(
        inserts
            .iter()
            .filter_map(|r| r.zone.clone())
            .collect::<Vec<_>>(),
        [
            "us-central1-b",
            "us-central1-b",
            "us-central1-a",
            "us-central1-a"
        ]
    );
    let deletes = gce.requests_of(Call::ReservationsDelete);
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].zone.as_deref(), Some("us-central1-b"));
    let left = gce.reservations();
    assert_eq!(left.len(), 2, "{left:?}");
    for r in &left {
        assert_eq!(r.zone, "us-central1-a");
        assert!(r.specific_required);
        assert_eq!(r.json["deleteAtTime"], "2030-03-17T17:46:40Z");
        assert!(
            r.json["description"]
                .as_str()
                .unwrap()
                .contains("qa-run:test-id=fallback")
        );
    }
    assert_eq!(
        cap.get_id("us-central1-a", "n2-standard-2"),
        p.reservations.get("n2-standard-2").cloned()
    );
    // Every journal record is closed but a's two.
    let live: Vec<_> = ledger
        .resources()
        .into_iter()
        .filter(|r| r.state == ResourceState::Created)
        .collect();
    assert_eq!(live.len(), 2);

    // Extending moves the end of both.
    cap.extend(&TestId("fallback".into()), END + 3600)
        .await
        .unwrap();
    for r in gce.reservations() {
        assert_eq!(r.json["deleteAtTime"], "2030-03-17T18:46:40Z");
    }
    // Cancelling by test id finds them by description, in every zone, and is idempotent.
    assert_eq!(
        cap.cancel(&TestId("fallback".into()), SweepScope::Configured)
            .await
            .unwrap(),
        2
    );
    assert!(gce.reservations().is_empty());
    assert_eq!(
        cap.cancel(&TestId("fallback".into()), SweepScope::AllRegions)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn quota_and_permission_errors_stop_without_trying_other_zones() {
    let gce = GceEmulator::start(EmulatorConfig::default()).await;
    let cap = capacity(&gce);
    gce.inject(FaultRule::in_operation(
        Call::ReservationsInsert,
        "QUOTA_EXCEEDED",
    ));
    let e = cap
        .reserve(
            &request("quota", &["us-central1-a", "us-central1-b"]),
            &CheckingLedger::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CapacityError::Quota { .. }), "{e:?}");
    assert!(e.to_string().contains("QUOTA_EXCEEDED"), "{e}");
    assert_eq!(gce.requests_of(Call::ReservationsInsert).len(), 1);

    gce.clear_requests();
    gce.inject(FaultRule::sync(Call::ReservationsInsert, 403, "forbidden"));
    let e = cap
        .reserve(
            &request("auth", &["us-central1-a", "us-central1-b"]),
            &CheckingLedger::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CapacityError::Auth { .. }), "{e:?}");
    assert_eq!(gce.requests_of(Call::ReservationsInsert).len(), 1);
    assert!(gce.reservations().is_empty());
}

#[tokio::test]
async fn every_zone_short_is_no_capacity_naming_the_zones_tried() {
    let gce = GceEmulator::start(EmulatorConfig::default()).await;
    for z in ["us-central1-a", "us-central1-b"] {
        gce.set_capacity(z, "n2-standard-2", 1);
    }
    let cap = capacity(&gce);
    let e = cap
        .reserve(&request("short", &[]), &CheckingLedger::new())
        .await
        .unwrap_err();
    match &e {
        CapacityError::NoCapacity { tried, last } => {
            assert_eq!(tried, &["us-central1-a", "us-central1-b"]);
            assert!(last.contains("ZONE_RESOURCE_POOL_EXHAUSTED"), "{last}");
        }
        other => panic!("{other:?}"),
    }
    // europe-west4-a offers e2 but is in another region: never tried.
    assert!(
        gce.requests_of(Call::ReservationsInsert)
            .iter()
            .all(|r| r.zone.as_deref() != Some("europe-west4-a"))
    );
    assert!(gce.reservations().is_empty());
}
