//! Step names that are not safe file names each get a log and a recording of their own.

use std::collections::BTreeSet;
use std::sync::Arc;

use qa_core::Verdict;
use qa_core::conformance::fakes::FakeProvisioner;
use qa_core::engine::{Engine, RunOptions};

use crate::LocalDirs;

/// Steps named `a b`, `a_b`, `a/b` and `a:b` all wrote `logs/box/a_b.log` (one mixed log and
/// recording), and so did names made only of non-ASCII letters of the same length.
#[tokio::test(flavor = "multi_thread")]
async fn names_that_once_shared_a_log_each_get_their_own() {
    let names = ["a b", "a_b", "a/b", "a:b", "тест", "тотт", "a_b~00000000"];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.yaml");
    let mut plan = String::from("name: names\nmachines: [{name: box}, {name: \"b x\"}]\nsteps:\n");
    for (i, n) in names.iter().enumerate() {
        plan.push_str(&format!(
            "  - {{name: {n:?}, command: 'echo only-step-{i}'}}\n"
        ));
    }
    std::fs::write(&path, plan).unwrap();
    let engine = Engine::new()
        .provisioner(Arc::new(
            FakeProvisioner::new().with_workdir_root(dir.path().join("machines")),
        ))
        .connector(Arc::new(LocalDirs));
    let summary = engine
        .prepare(
            &crate::load_file(&path).unwrap_or_else(|e| panic!("{e}")),
            RunOptions::new(dir.path().join("results")),
        )
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    let report = &summary.report;
    assert_eq!(report.steps.len(), names.len() * 2);
    let mut logs = BTreeSet::new();
    for s in &report.steps {
        assert_eq!(s.verdict, Verdict::Pass, "{s:?}");
        let i = names.iter().position(|n| *n == s.step).unwrap();
        let log = s.log.clone().expect("every step has a log");
        let text = std::fs::read_to_string(summary.run_dir.join(&log)).unwrap();
        assert_eq!(
            text.matches("only-step-").collect::<Vec<_>>().len(),
            1,
            "{log} holds the output of more than one step:\n{text}"
        );
        assert!(text.contains(&format!("only-step-{i}")), "{log}: {text}");
        assert!(logs.insert(log.clone()), "{log} is used twice");
    }
    assert!(logs.contains("logs/box/a_b.log"), "{logs:?}");
}
