//! Conformance suite for [`Provisioner`].
//!
//! Every check creates the requested machine, so `request` must be something the backend can make
//! several times in a row (each check destroys what it made before the next starts), and
//! `run.test_id` must be used by nobody else while the suite runs: [`sweep_by_test_id`] removes
//! everything carrying it.

use std::time::Duration;

use super::CheckingLedger;
use crate::backend::SweepScope;
use crate::journal::ResourceLedger;
use crate::provision::{MachineRequest, Provisioner, RunContext};
use crate::types::{Machine, Resource, ResourceState, TestId};

const READY_DEADLINE: Duration = Duration::from_secs(300);

/// Runs every check. `fresh` is a second instance of the same backend that shares nothing in
/// memory with `p` (as a new process after a crash would be); it destroys what `p` made.
pub async fn run_all(
    p: &dyn Provisioner,
    fresh: &dyn Provisioner,
    request: &MachineRequest,
    run: &RunContext,
) {
    lifecycle(p, request, run).await;
    destroy_from_journal(p, fresh, request, run).await;
    destroy_from_intent_alone(p, fresh, request, run).await;
    sweep_by_test_id(p, request, run).await;
}

async fn create_checked(
    p: &dyn Provisioner,
    request: &MachineRequest,
    run: &RunContext,
    ledger: &CheckingLedger,
) -> Machine {
    let who = p.backend();
    let m = p.create(request, run, ledger).await.unwrap_or_else(|e| {
        panic!(
            "{who}: create of {} failed: {e} (leftovers {:?})",
            request.name, e.leftovers
        )
    });
    ledger.assert_clean(&format!("{who} create"));
    assert_eq!(m.name, request.name, "{who}: machine name");
    assert_eq!(m.role, request.role, "{who}: machine role");
    assert_eq!(m.backend, p.backend(), "{who}: machine backend");
    assert!(
        !m.resources.is_empty(),
        "{who}: a machine must name the journaled resources it is made of"
    );
    let recorded = ledger.resources();
    for key in &m.resources {
        let r = recorded
            .iter()
            .find(|r| &r.key == key)
            .unwrap_or_else(|| panic!("{who}: machine resource {key} is not in the ledger"));
        assert_eq!(
            r.state,
            ResourceState::Created,
            "{who}: {key} must be recorded as created"
        );
        assert!(r.id.is_some(), "{who}: {key} must carry its id");
        assert_eq!(r.backend, p.backend(), "{who}: {key} backend");
    }
    for r in &recorded {
        assert_eq!(
            r.state,
            ResourceState::Created,
            "{who}: after a successful create {} is still {:?}",
            r.key,
            r.state
        );
    }
    m
}

fn assert_all_destroyed(who: &str, ledger: &CheckingLedger) {
    for r in ledger.resources() {
        assert_eq!(
            r.state,
            ResourceState::Destroyed,
            "{who}: {} not marked destroyed",
            r.key
        );
    }
}

/// Journal records survive a trip through JSON, as they do through `state.json`.
fn through_json(resources: Vec<Resource>) -> Vec<Resource> {
    let text = serde_json::to_string(&resources).expect("resources serialise");
    serde_json::from_str(&text).expect("resources deserialise")
}

/// Create journals intent before id; the machine becomes ready; destroy removes it, marks it
/// destroyed, and is idempotent. Returns the machine (already destroyed) so that the caller can
/// check with backend means that it is gone.
pub async fn lifecycle(p: &dyn Provisioner, request: &MachineRequest, run: &RunContext) -> Machine {
    let who = p.backend().to_string();
    let ledger = CheckingLedger::new();
    let m = create_checked(p, request, run, &ledger).await;
    p.wait_ready(&m, READY_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{who}: wait_ready: {e}"));

    let resources = ledger.resources();
    p.destroy(&resources, &ledger)
        .await
        .unwrap_or_else(|e| panic!("{who}: destroy: {e}"));
    ledger.assert_clean(&format!("{who} destroy"));
    assert_all_destroyed(&who, &ledger);

    p.destroy(&resources, &ledger)
        .await
        .unwrap_or_else(|e| panic!("{who}: second destroy must be Ok (idempotent): {e}"));
    let destroyed = ledger.resources();
    p.destroy(&destroyed, &ledger).await.unwrap_or_else(|e| {
        panic!("{who}: destroy of records already marked destroyed must be Ok: {e}")
    });
    ledger.assert_clean(&format!("{who} repeated destroy"));
    assert_all_destroyed(&who, &ledger);
    m
}

/// A fresh provisioner destroys what another one made, from journal records alone.
pub async fn destroy_from_journal(
    p: &dyn Provisioner,
    fresh: &dyn Provisioner,
    request: &MachineRequest,
    run: &RunContext,
) -> Machine {
    let who = p.backend().to_string();
    let ledger = CheckingLedger::new();
    let m = create_checked(p, request, run, &ledger).await;
    let records = through_json(ledger.resources());
    let journal = CheckingLedger::from_resources(records.clone());
    fresh.destroy(&records, &journal).await.unwrap_or_else(|e| {
        panic!("{who}: a fresh provisioner could not destroy from the journal: {e}")
    });
    journal.assert_clean(&format!("{who} destroy from journal"));
    assert_all_destroyed(&who, &journal);
    m
}

/// A crash between the intent and the id leaves only intent records; destroying from them must
/// remove what was made (or find nothing) and be `Ok`. The full records destroy cleanly afterwards.
pub async fn destroy_from_intent_alone(
    p: &dyn Provisioner,
    fresh: &dyn Provisioner,
    request: &MachineRequest,
    run: &RunContext,
) -> Machine {
    let who = p.backend().to_string();
    let ledger = CheckingLedger::new();
    let m = create_checked(p, request, run, &ledger).await;
    let intents = through_json(ledger.intents());
    assert!(!intents.is_empty(), "{who}: create recorded no intent");
    for r in &intents {
        assert_eq!(r.state, ResourceState::Intent);
        assert!(
            r.id.is_none(),
            "{who}: intent {} must not carry an id",
            r.key
        );
    }
    let journal = CheckingLedger::from_resources(intents.clone());
    fresh
        .destroy(&intents, &journal)
        .await
        .unwrap_or_else(|e| panic!("{who}: destroy from intent records failed: {e}"));
    journal.assert_clean(&format!("{who} destroy from intents"));
    assert_all_destroyed(&who, &journal);
    let full = ledger.resources();
    p.destroy(&full, &ledger)
        .await
        .unwrap_or_else(|e| panic!("{who}: destroy after the intent-only destroy must be Ok: {e}"));
    assert_all_destroyed(&who, &ledger);
    m
}

/// `sweep` removes what carries this test id and nothing else; a second sweep finds nothing, and
/// destroying the swept resources from the journal is still `Ok`.
pub async fn sweep_by_test_id(
    p: &dyn Provisioner,
    request: &MachineRequest,
    run: &RunContext,
) -> Machine {
    let who = p.backend().to_string();
    let ledger = CheckingLedger::new();
    let m = create_checked(p, request, run, &ledger).await;

    let other = TestId(super::unique(&format!("{}-other", run.test_id)));
    let removed = p
        .sweep(&other, SweepScope::Configured)
        .await
        .unwrap_or_else(|e| panic!("{who}: sweep of another test id: {e}"));
    assert!(
        removed.is_empty(),
        "{who}: a sweep of {other} removed {removed:?}"
    );
    p.wait_ready(&m, READY_DEADLINE).await.unwrap_or_else(|e| {
        panic!("{who}: the machine is gone after a sweep of another test id: {e}")
    });

    let removed = p
        .sweep(&run.test_id, SweepScope::Configured)
        .await
        .unwrap_or_else(|e| panic!("{who}: sweep: {e}"));
    assert!(
        !removed.is_empty(),
        "{who}: sweep of {} removed nothing",
        run.test_id
    );
    let again = p
        .sweep(&run.test_id, SweepScope::Configured)
        .await
        .unwrap_or_else(|e| panic!("{who}: second sweep: {e}"));
    assert!(
        again.is_empty(),
        "{who}: a second sweep still removed {again:?}"
    );

    p.destroy(&ledger.resources(), &ledger)
        .await
        .unwrap_or_else(|e| panic!("{who}: destroy after a sweep must be Ok: {e}"));
    assert_all_destroyed(&who, &ledger);
    m
}
