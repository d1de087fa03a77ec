//! The local provisioner against the provisioner conformance suite, plus what only a local
//! sandbox can show: the directory does not exist when its intent is journaled, and is gone after
//! destroy.

use std::path::{Path, PathBuf};

use qa_core::conformance::{CheckingLedger, provisioner};
use qa_core::journal::ResourceLedger;
use qa_core::plan::{BackendName, MachineSpec};
use qa_core::provision::{MachineRequest, Provisioner, RunContext};
use qa_core::types::{Access, Leftovers, ResourceState, RunId, TestId};
use qa_provision::local::{LocalProvisioner, PATH_DETAIL, SANDBOX_MARKER};

fn request(name: &str, root: Option<PathBuf>) -> MachineRequest {
    MachineRequest::new(
        name,
        "tester",
        match root {
            Some(root) => MachineSpec::new(name).local_root(root),
            None => MachineSpec::new(name),
        }
        .in_role("tester")
        .backend(BackendName::LOCAL),
    )
}

fn run_context(results: &Path, run: &str) -> RunContext {
    let run_dir = results.join(run);
    std::fs::create_dir_all(&run_dir).unwrap();
    RunContext::new(
        RunId(run.into()),
        TestId(format!("test-{run}")),
        "plan",
        run_dir,
    )
}

/// Fails the intent if the sandbox directory already exists when it is journaled.
fn directory_must_not_exist_yet() -> qa_core::conformance::ledger::IntentProbe {
    Box::new(|r| match r.details.get(PATH_DETAIL) {
        None => Err("intent carries no path".into()),
        Some(p) if Path::new(p).exists() => Err(format!("{p} already exists")),
        Some(_) => Ok(()),
    })
}

#[tokio::test]
async fn local_provisioner_passes_the_conformance_suite() {
    let results = tempfile::tempdir().unwrap();
    let run = run_context(results.path(), "run-1");
    let p = LocalProvisioner::new().with_sweep_root(results.path());
    let fresh = LocalProvisioner::new().with_sweep_root(results.path());
    let req = request("box", None);
    provisioner::run_all(&p, &fresh, &req, &run).await;

    // Each check returns the machine it destroyed; the sandbox must really be gone.
    let m = provisioner::lifecycle(&p, &req, &run).await;
    let Access::Local { root } = &m.access else {
        panic!("local access expected: {m:?}")
    };
    assert_eq!(root, &run.run_dir.join("machines/box"));
    assert_eq!(m.workdir, root.display().to_string());
    assert!(!root.exists(), "destroy left {}", root.display());
}

#[tokio::test]
async fn intent_is_journaled_before_the_directory_exists() {
    let results = tempfile::tempdir().unwrap();
    let run = run_context(results.path(), "run-2");
    let ledger = CheckingLedger::new().with_intent_probe(directory_must_not_exist_yet());
    let m = LocalProvisioner::new()
        .create(&request("box", None), &run, &ledger)
        .await
        .unwrap();
    ledger.assert_clean("local");
    let sandbox = run.run_dir.join("machines/box");
    assert!(sandbox.join(SANDBOX_MARKER).is_file());
    assert_eq!(m.facts.get("sandbox"), Some(&sandbox.display().to_string()));
    let r = &ledger.resources()[0];
    assert_eq!(
        (r.kind.as_str(), r.state),
        ("sandbox", ResourceState::Created)
    );
    assert_eq!(
        r.details.get(PATH_DETAIL),
        Some(&sandbox.display().to_string())
    );
}

#[tokio::test]
async fn spec_root_places_the_sandbox_and_destroy_from_intent_removes_it() {
    let results = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let run = run_context(results.path(), "run-3");
    let p = LocalProvisioner::new();
    let ledger = CheckingLedger::new();
    let m = p
        .create(&request("db", Some(elsewhere.path().into())), &run, &ledger)
        .await
        .unwrap();
    let sandbox = elsewhere.path().join("db");
    assert_eq!(m.workdir, sandbox.display().to_string());
    std::fs::write(sandbox.join("data"), "x").unwrap();
    // A crash between mkdir and `created` leaves only the intent; it still names the path.
    let intents = ledger.intents();
    let journal = CheckingLedger::from_resources(intents.clone());
    LocalProvisioner::new()
        .destroy(&intents, &journal)
        .await
        .unwrap();
    assert!(!sandbox.exists());
    assert_eq!(journal.resources()[0].state, ResourceState::Destroyed);
}

#[tokio::test]
async fn an_existing_directory_is_neither_taken_over_nor_destroyed() {
    let results = tempfile::tempdir().unwrap();
    let run = run_context(results.path(), "run-4");
    let theirs = run.run_dir.join("machines/box");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("precious"), "keep me").unwrap();
    let p = LocalProvisioner::new();
    let ledger = CheckingLedger::new();
    let err = p
        .create(&request("box", None), &run, &ledger)
        .await
        .unwrap_err();
    assert_eq!(err.leftovers, Leftovers::Clear, "{err}");
    // The intent is closed, so teardown from the journal leaves the directory alone ...
    assert_eq!(ledger.resources()[0].state, ResourceState::Destroyed);
    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    assert!(theirs.join("precious").exists());
    // ... and even a journal that still says intent cannot make destroy remove it.
    let stale = CheckingLedger::from_resources(ledger.intents());
    let err = p.destroy(&stale.resources(), &stale).await.unwrap_err();
    assert!(err.to_string().contains("left alone"), "{err}");
    assert!(theirs.join("precious").exists());
}

#[tokio::test]
async fn sweep_finds_sandboxes_of_the_test_id_only() {
    let results = tempfile::tempdir().unwrap();
    let mine = run_context(results.path(), "run-5");
    let other = run_context(results.path(), "run-6");
    let p = LocalProvisioner::new().with_sweep_root(results.path());
    let ledger = CheckingLedger::new();
    p.create(&request("a", None), &mine, &ledger).await.unwrap();
    p.create(&request("b", None), &mine, &ledger).await.unwrap();
    let ledger2 = CheckingLedger::new();
    p.create(&request("a", None), &other, &ledger2)
        .await
        .unwrap();
    let mut removed = p
        .sweep(&mine.test_id, qa_core::SweepScope::Configured)
        .await
        .unwrap();
    removed.sort();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed[0].contains("machine a, run run-5"), "{removed:?}");
    assert!(!mine.run_dir.join("machines/a").exists() && !mine.run_dir.join("machines/b").exists());
    assert!(
        other
            .run_dir
            .join("machines/a")
            .join(SANDBOX_MARKER)
            .exists()
    );
    // A provisioner without a sweep root finds nothing.
    assert!(
        LocalProvisioner::new()
            .sweep(&other.test_id, qa_core::SweepScope::Configured)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn wait_ready_fails_for_a_missing_sandbox() {
    let results = tempfile::tempdir().unwrap();
    let run = run_context(results.path(), "run-7");
    let p = LocalProvisioner::new();
    let ledger = CheckingLedger::new();
    let m = p
        .create(&request("box", None), &run, &ledger)
        .await
        .unwrap();
    p.wait_ready(&m, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    std::fs::remove_dir_all(run.run_dir.join("machines/box")).unwrap();
    assert!(
        p.wait_ready(&m, std::time::Duration::from_secs(1))
            .await
            .is_err()
    );
}
