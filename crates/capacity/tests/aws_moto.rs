//! EC2 capacity reservations against moto with the EC2 layer of qa-testkit's emulator in front
//! of it (`qa_testkit::aws`). Needs `python3 -m pip install "moto[server]"`; run with
//! `cargo test -p qa-capacity --features aws --test aws_moto`.

use std::collections::BTreeMap;

use qa_capacity::aws::{AwsCapacity, TEST_ID_TAG};
use qa_core::conformance::CheckingLedger;
use qa_core::journal::{MemoryLedger, ResourceLedger};
use qa_core::types::ResourceState;
use qa_core::{CapacityError, CapacityRequest, CapacityReservation, SweepScope, TestId};
use qa_testkit::aws::Ec2Emulator;

const REGION: &str = "us-east-1";
const END: i64 = 1_900_000_000; // 2030-03-17T17:46:40Z

fn request(test_id: &str, zones: &[&str]) -> CapacityRequest {
    CapacityRequest::new(
        TestId(test_id.into()),
        [("m5.large".to_string(), 2), ("r5.large".to_string(), 1)]
            .into_iter()
            .collect(),
    )
    .region(REGION)
    .zones(zones.iter().copied())
    .end_unix(END)
}

async fn capacity(emu: &Ec2Emulator, region: &str) -> AwsCapacity {
    AwsCapacity::from_sdk_config(&emu.sdk_config(region).await, None).unwrap()
}

#[tokio::test]
async fn conformance() {
    let emu = Ec2Emulator::start().await;
    let cap = capacity(&emu, REGION).await;
    qa_core::conformance::capacity::run_all(
        &cap,
        &request("conformance", &["us-east-1b", "us-east-1c"]),
    )
    .await;
    let st = emu.proxy.lock();
    assert!(!st.reservations.is_empty());
    assert!(
        st.reservations.iter().all(|r| r.state == "cancelled"),
        "{:?}",
        st.reservations
    );
}

#[tokio::test]
async fn zone_without_capacity_for_one_type_is_released_and_the_next_zone_used() {
    let emu = Ec2Emulator::start().await;
    emu.proxy
        .lock()
        .no_capacity
        .insert(("us-east-1a".into(), "r5.large".into()));
    let cap = capacity(&emu, REGION).await;
    // Each intent must be journaled before EC2 sees a request with its client token.
    let calls = emu.proxy.state.clone();
    let ledger = CheckingLedger::new().with_intent_probe(Box::new(move |r| {
        let seen = calls.lock().unwrap().calls.iter().any(|c| {
            c.action == "CreateCapacityReservation"
                && c.params.get("ClientToken") == r.client_token.as_ref()
        });
        if seen {
            Err("CreateCapacityReservation already sent".into())
        } else {
            Ok(())
        }
    }));
    let placement = cap
        .reserve(&request("fallback", &["us-east-1a", "us-east-1b"]), &ledger)
        .await
        .unwrap();
    ledger.assert_clean("reserve with fallback");
    assert_eq!(placement.zone, "us-east-1b");

    let st = emu.proxy.lock();
    let creates: Vec<(String, String)> = st
        .calls_of("CreateCapacityReservation")
        .iter()
        .map(|c| {
            (
                c.params["AvailabilityZone"].clone(),
                c.params["InstanceType"].clone(),
            )
        })
        .collect();
    // One call per zone and type: the capacity error was not retried.
    assert_eq!(
        creates,
        [
            ("us-east-1a", "m5.large"),
            ("us-east-1a", "r5.large"),
            ("us-east-1b", "m5.large"),
            ("us-east-1b", "r5.large")
        ]
        .map(|(z, t)| (z.to_string(), t.to_string()))
    );
    for c in st.calls_of("CreateCapacityReservation") {
        assert_eq!(c.params["InstanceMatchCriteria"], "targeted");
        assert_eq!(c.params["EndDateType"], "limited");
        assert!(
            c.params["EndDate"].starts_with("2030-03-17T17:46:40"),
            "{}",
            c.params["EndDate"]
        );
        assert!(c.params.get("ClientToken").is_some_and(|t| !t.is_empty()));
    }
    let in_a: Vec<_> = st
        .reservations
        .iter()
        .filter(|r| r.zone == "us-east-1a")
        .collect();
    assert_eq!(in_a.len(), 1);
    assert_eq!(
        in_a[0].state, "cancelled",
        "zone a's partial reservation must be cancelled"
    );
    let live: BTreeMap<String, String> = st
        .reservations
        .iter()
        .filter(|r| r.state == "active")
        .map(|r| (r.instance_type.clone(), r.id.clone()))
        .collect();
    assert_eq!(live, placement.reservations);
    for r in st.reservations.iter().filter(|r| r.state == "active") {
        assert_eq!(r.zone, "us-east-1b");
        assert!(
            r.tags
                .contains(&(TEST_ID_TAG.to_string(), "fallback".to_string())),
            "{:?}",
            r.tags
        );
        assert_eq!(
            cap.get_id("us-east-1b", &r.instance_type).as_ref(),
            Some(&r.id)
        );
    }
    assert_eq!(cap.get_id("us-east-1a", "m5.large"), None);
    drop(st);

    // Journal: zone b's two are created, zone a's two are gone (one cancelled, one refused).
    let recs = ledger.resources();
    assert_eq!(recs.len(), 4, "{recs:?}");
    assert_eq!(
        recs.iter()
            .filter(|r| r.state == ResourceState::Created)
            .count(),
        2
    );
    assert_eq!(
        recs.iter()
            .filter(|r| r.state == ResourceState::Destroyed)
            .count(),
        2
    );
    assert!(recs.iter().all(|r| r.client_token.is_some()));
}

#[tokio::test]
async fn auth_quota_and_parameter_errors_stop_without_trying_other_zones() {
    let emu = Ec2Emulator::start().await;
    let cap = capacity(&emu, REGION).await;
    for (code, status) in [
        ("UnauthorizedOperation", 403),
        ("ReservationLimitExceeded", 400),
        ("InvalidParameterValue", 400),
    ] {
        {
            let mut st = emu.proxy.lock();
            st.calls.clear();
            st.failures.insert(
                "CreateCapacityReservation".into(),
                (code.into(), format!("refused: {code}"), status),
            );
        }
        let ledger = MemoryLedger::default();
        let e = cap
            .reserve(&request("stops", &[]), &ledger)
            .await
            .unwrap_err();
        match (code, &e) {
            ("UnauthorizedOperation", CapacityError::Auth { .. })
            | ("ReservationLimitExceeded", CapacityError::Quota { .. })
            | ("InvalidParameterValue", CapacityError::InvalidRequest { .. }) => {}
            _ => panic!("{code} classified as {e:?}"),
        }
        assert!(e.to_string().contains(code), "{e}");
        let st = emu.proxy.lock();
        assert_eq!(
            st.calls_of("CreateCapacityReservation").len(),
            1,
            "{code}: only the first zone is tried"
        );
        assert!(
            ledger
                .resources()
                .iter()
                .all(|r| r.state == ResourceState::Destroyed)
        );
    }
}

#[tokio::test]
async fn no_capacity_anywhere_leaves_nothing() {
    let emu = Ec2Emulator::start().await;
    let cap = capacity(&emu, REGION).await;
    {
        let mut st = emu.proxy.lock();
        for z in [
            "us-east-1a",
            "us-east-1b",
            "us-east-1c",
            "us-east-1d",
            "us-east-1e",
            "us-east-1f",
        ] {
            st.no_capacity.insert((z.into(), "r5.large".into()));
        }
    }
    let e = cap
        .reserve(&request("nowhere", &[]), &MemoryLedger::default())
        .await
        .unwrap_err();
    let CapacityError::NoCapacity { tried, .. } = e else {
        panic!("{e:?}")
    };
    assert!(tried.len() >= 3, "{tried:?}");
    assert!(
        emu.proxy
            .lock()
            .reservations
            .iter()
            .all(|r| r.state == "cancelled")
    );
}

#[tokio::test]
async fn cancel_finds_reservations_by_tag_across_pages_and_leaves_other_tests_alone() {
    let emu = Ec2Emulator::start().await;
    emu.proxy.lock().page_size = 1;
    let cap = capacity(&emu, REGION).await;
    cap.reserve(&request("mine", &[]), &MemoryLedger::default())
        .await
        .unwrap();
    cap.reserve(&request("theirs", &[]), &MemoryLedger::default())
        .await
        .unwrap();

    // A fresh instance (as after a crash) cancels by tag alone.
    let fresh = capacity(&emu, REGION).await;
    assert_eq!(
        fresh
            .cancel(&TestId("mine".into()), SweepScope::Configured)
            .await
            .unwrap(),
        2
    );
    assert!(
        emu.proxy
            .lock()
            .calls_of("DescribeCapacityReservations")
            .iter()
            .any(|c| c.params.contains_key("NextToken"))
    );
    assert_eq!(
        fresh
            .cancel(&TestId("mine".into()), SweepScope::Configured)
            .await
            .unwrap(),
        0
    );
    let st = emu.proxy.lock();
    for r in &st.reservations {
        let mine = r.tags.iter().any(|(k, v)| k == TEST_ID_TAG && v == "mine");
        assert_eq!(r.state, if mine { "cancelled" } else { "active" }, "{r:?}");
    }
}

#[tokio::test]
async fn cancel_all_regions_reaches_every_region() {
    let emu = Ec2Emulator::start().await;
    let east = capacity(&emu, REGION).await;
    let west = capacity(&emu, "eu-west-1").await;
    east.reserve(&request("spread", &[]), &MemoryLedger::default())
        .await
        .unwrap();
    let mut west_req = request("spread", &[]);
    west_req.region = Some("eu-west-1".into());
    west.reserve(&west_req, &MemoryLedger::default())
        .await
        .unwrap();
    assert_eq!(
        east.cancel_all_regions(&TestId("spread".into()))
            .await
            .unwrap(),
        4
    );
    let st = emu.proxy.lock();
    assert_eq!(
        st.reservations
            .iter()
            .filter(|r| r.region == "eu-west-1")
            .count(),
        2
    );
    assert!(
        st.reservations.iter().all(|r| r.state == "cancelled"),
        "{:?}",
        st.reservations
    );
}

#[tokio::test]
async fn extend_moves_the_end_and_resume_reuses_tagged_reservations() {
    let emu = Ec2Emulator::start().await;
    let cap = capacity(&emu, REGION).await;
    let req = request("resume", &[]);
    let first = cap.reserve(&req, &MemoryLedger::default()).await.unwrap();
    cap.extend(&req.test_id, END + 3600).await.unwrap();
    {
        let st = emu.proxy.lock();
        for r in &st.reservations {
            assert!(
                r.end_date
                    .as_deref()
                    .unwrap()
                    .starts_with("2030-03-17T18:46:40"),
                "{r:?}"
            );
        }
    }

    let fresh = capacity(&emu, REGION).await;
    let creates_before = emu.proxy.lock().calls_of("CreateCapacityReservation").len();
    let again = fresh.reserve(&req, &MemoryLedger::default()).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(
        emu.proxy.lock().calls_of("CreateCapacityReservation").len(),
        creates_before
    );
    assert_eq!(
        fresh.get_id(&first.zone, "r5.large"),
        first.reservations.get("r5.large").cloned()
    );

    // A request for more than is reserved is not satisfied by the old reservations.
    let mut bigger = req.clone();
    bigger.needs.insert("m5.large".into(), 5);
    let third = fresh
        .reserve(&bigger, &MemoryLedger::default())
        .await
        .unwrap();
    assert_ne!(
        third.reservations["m5.large"],
        first.reservations["m5.large"]
    );
}
