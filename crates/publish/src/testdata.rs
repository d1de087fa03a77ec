//! A small report for unit tests.

use std::collections::BTreeMap;

use qa_core::Verdict;
use qa_core::report::{CostEstimate, MachineReport, Report, StepReport, TaskReport};

pub fn step(step: &str, machine: &str, verdict: Verdict, ms: u64) -> StepReport {
    StepReport {
        step: step.into(),
        machine: machine.into(),
        verdict,
        attempts: if verdict == Verdict::Skipped { 0 } else { 1 },
        started: Some("2026-11-20T10:00:05Z".into()),
        duration_ms: ms,
        exit_code: match verdict {
            Verdict::Pass => Some(0),
            Verdict::Fail => Some(1),
            _ => None,
        },
        message: (verdict != Verdict::Pass).then(|| format!("{step} did not pass")),
        log: Some(format!("logs/{machine}/{step}.log")),
        cast: Some(format!("casts/{machine}/{step}.cast")),
        log_tail: (verdict == Verdict::Fail).then(|| {
            "line 1\n<script>document.title='pwned'</script>\n\u{1b}[31mboom\u{1b}[0m".into()
        }),
    }
}

pub fn report() -> Report {
    let steps = vec![
        step("build", "box", Verdict::Pass, 1500),
        step("test", "box", Verdict::Fail, 2500),
        step("infra", "box", Verdict::Error, 10),
        step("slow", "box", Verdict::Timeout, 60_000),
        step("after", "box", Verdict::Skipped, 0),
        step("stopped", "box", Verdict::Interrupted, 5),
    ];
    let mut counts = BTreeMap::new();
    for s in &steps {
        *counts.entry(s.verdict).or_insert(0) += 1;
    }
    Report {
        schema_version: qa_core::report::REPORT_SCHEMA_VERSION,
        run_id: "20261120-100000-abcd".into(),
        test_id: "qa-abcd".into(),
        plan_name: "smoke".into(),
        plan_path: "plans/smoke.yaml".into(),
        description: Some("Smoke tests".into()),
        started: "2026-11-20T10:00:00Z".into(),
        finished: "2026-11-20T10:01:10Z".into(),
        duration_ms: 70_000,
        outcome: Verdict::Fail,
        counts,
        machines: vec![MachineReport {
            name: "box".into(),
            role: "sut".into(),
            backend: "local".into(),
            facts: BTreeMap::from([("zone".to_string(), "here".to_string())]),
            artifacts: vec!["artifacts/box/result.txt".into()],
            kept: false,
        }],
        steps,
        infrastructure: vec![TaskReport {
            task: "collect:box".into(),
            verdict: Verdict::Error,
            message: Some("scp failed".into()),
        }],
        cost: Some(CostEstimate {
            currency: "USD".into(),
            total: 0.125,
            items: vec![("box".into(), 0.125)],
        }),
    }
}
