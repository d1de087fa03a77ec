//! Capacity reservations are kept alive while the run lives: the engine moves their end forward
//! every keepalive interval from `reserve` until `release`, and never after.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qa_core::BackendName;
use qa_core::conformance::fakes::FAKE_CLOUD;
use qa_core::conformance::fakes::{FakeProvisioner, FakeReservation};
use qa_core::engine::{Engine, ReservationKeepalive, RunOptions};
use qa_core::journal::ResourceLedger;
use qa_core::types::TestId;
use qa_core::{CapacityError, CapacityRequest, CapacityReservation, Placement};

use crate::LocalDirs;

/// A fake reservation that records every extension (test id, new end).
#[derive(Debug)]
struct Recording {
    inner: FakeReservation,
    extended: Arc<Mutex<Vec<(String, i64)>>>,
    first_end: Arc<Mutex<Option<i64>>>,
}

#[async_trait]
impl CapacityReservation for Recording {
    fn backend(&self) -> BackendName {
        FAKE_CLOUD
    }
    fn is_enabled(&self) -> bool {
        true
    }
    async fn reserve(
        &self,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> Result<Placement, CapacityError> {
        *self.first_end.lock().unwrap() = request.end_unix;
        self.inner.reserve(request, ledger).await
    }
    fn get_id(&self, zone: &str, instance_type: &str) -> Option<String> {
        self.inner.get_id(zone, instance_type)
    }
    async fn extend(&self, test_id: &TestId, end_unix: i64) -> Result<(), CapacityError> {
        self.extended
            .lock()
            .unwrap()
            .push((test_id.0.clone(), end_unix));
        Ok(())
    }
    async fn cancel(
        &self,
        test_id: &TestId,
        scope: qa_core::SweepScope<'_>,
    ) -> Result<u32, CapacityError> {
        self.inner.cancel(test_id, scope).await
    }
}

fn plan(dir: &Path, step_seconds: f64) -> std::path::PathBuf {
    let path = dir.join("keepalive.yaml");
    std::fs::write(
        &path,
        format!(
            "name: keepalive
budget: 1s
machines:
  - name: cloud
    backend: fake-cloud
    fake-cloud:
      instance-type: t3.micro
      reserve: true
steps:
  - name: long
    command: sleep {step_seconds}
"
        ),
    )
    .unwrap();
    path
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A run that outlives its budget has its reservations extended while it lives, each time to
/// now + margin + interval; once it ends, nothing extends them any more.
#[tokio::test(flavor = "multi_thread")]
async fn reservations_are_extended_while_the_run_lives_and_not_after() {
    let dir = tempfile::tempdir().unwrap();
    let extended = Arc::new(Mutex::new(Vec::new()));
    let first_end = Arc::new(Mutex::new(None));
    let r = Recording {
        inner: FakeReservation::new(),
        extended: extended.clone(),
        first_end: first_end.clone(),
    };
    let keepalive = ReservationKeepalive {
        interval: Duration::from_millis(200),
        margin: Duration::from_secs(2),
    };
    let engine = Engine::new()
        .backends(crate::backends())
        .provisioner(Arc::new(
            FakeProvisioner::new()
                .with_backend(FAKE_CLOUD)
                .with_workdir_root(dir.path().join("machines")),
        ))
        .reservation(Arc::new(r))
        .unwrap()
        .reservation_keepalive(keepalive)
        .connector(Arc::new(LocalDirs));
    let loaded = crate::load_file(&plan(dir.path(), 3.5)).unwrap();
    let started = now_unix();
    let options = RunOptions::new(dir.path().join("results")).test_id("keepalive-test");
    let run = engine.prepare(&loaded, options).await.unwrap();
    let summary = run.execute().await.unwrap();
    assert_eq!(summary.exit_code, 0, "{:?}", summary.report);
    let ended = now_unix();

    // The first end: budget (1 s) + margin (2 s) from the reservation.
    let first = first_end.lock().unwrap().expect("reserved with an end");
    assert!(
        (started + 3..=started + 4).contains(&first),
        "{started} {first}"
    );

    let calls = extended.lock().unwrap().clone();
    assert!(
        calls.len() >= 2,
        "a 3.5 s run with a 3 s reservation is extended while it lives: {calls:?}"
    );
    assert!(
        calls.iter().all(|(t, _)| t == "keepalive-test"),
        "{calls:?}"
    );
    let ends: Vec<i64> = calls.iter().map(|c| c.1).collect();
    assert!(
        ends.windows(2).all(|w| w[0] < w[1]),
        "ends only move forward: {ends:?}"
    );
    assert!(
        ends[0] > first,
        "an extension moves the end: {first} then {ends:?}"
    );
    assert!(
        *ends.last().unwrap() <= ended + 3,
        "never further than now + margin + interval: {ends:?} (ended {ended})"
    );

    // After the run, nothing extends them: a dead orchestrator's reservations run out.
    let n = calls.len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        extended.lock().unwrap().len(),
        n,
        "extended after the run ended"
    );
}
