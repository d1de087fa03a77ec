//! Conformance suite for [`ResultPublisher`].
//!
//! The suite writes a small finished run (a report, a log, a recording, an artifact) into a
//! directory of its own, publishes it twice and checks the rules every publisher shares. Where the
//! results went is the publisher's business; its own tests look there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::publish::{PublishReceipt, ResultPublisher};
use crate::report::{MachineReport, REPORT_SCHEMA_VERSION, Report, StepReport};
use crate::types::Verdict;

/// Writes a finished run with one passing and one failing step under `run_dir` and returns its
/// report.
pub fn sample_run(run_dir: &Path) -> Report {
    let files = [
        ("report.json", ""),
        (
            "logs/box/build.log",
            "[00:00.001] building\n[00:00.120] built\n",
        ),
        (
            "logs/box/check.log",
            "[00:00.001] checking\n[00:00.050] 1 of 3 checks failed\n",
        ),
        (
            "casts/box/build.cast",
            "{\"version\":2,\"width\":80,\"height\":24}\n[0.001,\"o\",\"building\\r\\n\"]\n",
        ),
        ("artifacts/box/out/result.txt", "42\n"),
    ];
    for (rel, text) in files {
        let p = run_dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("make run dir");
        std::fs::write(&p, text).expect("write sample run file");
    }
    let step = |name: &str, verdict, exit_code, message: Option<&str>| StepReport {
        step: name.into(),
        machine: "box".into(),
        verdict,
        attempts: 1,
        started: Some("2026-01-01T00:00:00Z".into()),
        duration_ms: 120,
        exit_code,
        message: message.map(Into::into),
        log: Some(format!("logs/box/{name}.log")),
        cast: (name == "build").then(|| "casts/box/build.cast".into()),
        log_tail: message.map(|_| "1 of 3 checks failed".into()),
    };
    let report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        run_id: "sample-20260101T000000Z-0001".into(),
        test_id: "sample-20260101T000000Z-0001".into(),
        plan_name: "sample".into(),
        plan_path: "/plans/sample.yaml".into(),
        description: Some("A run made up by the conformance suite <&>".into()),
        started: "2026-01-01T00:00:00Z".into(),
        finished: "2026-01-01T00:00:01Z".into(),
        duration_ms: 1000,
        outcome: Verdict::Fail,
        counts: BTreeMap::from([(Verdict::Pass, 1), (Verdict::Fail, 1)]),
        machines: vec![MachineReport {
            name: "box".into(),
            role: "box".into(),
            backend: "local".into(),
            facts: BTreeMap::new(),
            artifacts: vec!["artifacts/box/out/result.txt".into()],
            kept: false,
        }],
        steps: vec![
            step("build", Verdict::Pass, Some(0), None),
            step("check", Verdict::Fail, Some(1), Some("exit status 1")),
        ],
        infrastructure: vec![],
        cost: None,
    };
    let json = serde_json::to_vec_pretty(&report).expect("report serialises");
    std::fs::write(run_dir.join("report.json"), json).expect("write report.json");
    report
}

/// Every file under `dir` with its bytes, for before/after comparisons.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                todo.push(p);
            } else {
                files.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    files
}

/// Publishes a sample run (made in `scratch/run`) twice: both succeed with the same receipt,
/// naming the publisher, and no file of the run directory is changed or removed. Returns the receipt.
pub async fn run_all(p: &dyn ResultPublisher, scratch: &Path) -> PublishReceipt {
    let run_dir = scratch.join("run");
    let report = sample_run(&run_dir);
    publish_is_idempotent_and_read_only(p, &report, &run_dir).await
}

/// Publishes `report` of `run_dir` twice and checks the rules; returns the receipt.
pub async fn publish_is_idempotent_and_read_only(
    p: &dyn ResultPublisher,
    report: &Report,
    run_dir: &Path,
) -> PublishReceipt {
    let who = p.name().to_string();
    assert!(!who.is_empty(), "a publisher needs a name");
    let before = snapshot(run_dir);
    let first = p
        .publish(report, run_dir)
        .await
        .unwrap_or_else(|e| panic!("{who}: publish: {e}"));
    assert_eq!(
        first.publisher, who,
        "{who}: the receipt must name the publisher"
    );
    assert!(
        !first.location.is_empty(),
        "{who}: the receipt must say where the results went"
    );
    let second = p
        .publish(report, run_dir)
        .await
        .unwrap_or_else(|e| panic!("{who}: second publish: {e}"));
    assert_eq!(
        first, second,
        "{who}: publishing the same run twice must give the same result"
    );
    let after = snapshot(run_dir);
    for (path, bytes) in &before {
        // New files are allowed (a JUnit file next to the report, say); existing ones are not
        // to be touched.
        assert_eq!(
            Some(bytes),
            after.get(path),
            "{who}: publish changed or removed {}",
            path.display()
        );
    }
    first
}
