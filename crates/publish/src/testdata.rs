//! A small report for unit tests.

use std::collections::BTreeMap;

use qa_core::Verdict;
use qa_core::report::{CostEstimate, MachineReport, Report, StepReport, TaskReport};

pub fn step(step: &str, machine: &str, verdict: Verdict, ms: u64) -> StepReport {
    let mut r = StepReport::new(step, machine, verdict);
    r.attempts = if verdict == Verdict::Skipped { 0 } else { 1 };
    r.started = Some("2026-11-20T10:00:05Z".into());
    r.duration_ms = ms;
    r.exit_code = match verdict {
        Verdict::Pass => Some(0),
        Verdict::Fail => Some(1),
        _ => None,
    };
    r.message = (verdict != Verdict::Pass).then(|| format!("{step} did not pass"));
    r.log = Some(format!("logs/{machine}/{step}.log"));
    r.cast = Some(format!("casts/{machine}/{step}.cast"));
    r.log_tail = (verdict == Verdict::Fail)
        .then(|| "line 1\n<script>document.title='pwned'</script>\n\u{1b}[31mboom\u{1b}[0m".into());
    r
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
    let mut machine = MachineReport::new("box", "local");
    machine.role = "sut".into();
    machine.facts = BTreeMap::from([("zone".to_string(), "here".to_string())]);
    machine.artifacts = vec!["artifacts/box/result.txt".into()];
    let mut r = Report::new("20261120-100000-abcd", "smoke");
    r.test_id = "qa-abcd".into();
    r.plan_path = "plans/smoke.yaml".into();
    r.description = Some("Smoke tests".into());
    r.started = "2026-11-20T10:00:00Z".into();
    r.finished = "2026-11-20T10:01:10Z".into();
    r.duration_ms = 70_000;
    r.outcome = Verdict::Fail;
    r.counts = counts;
    r.machines = vec![machine];
    r.steps = steps;
    r.infrastructure = vec![TaskReport::new(
        "collect:box",
        Verdict::Error,
        Some("scp failed".into()),
    )];
    r.cost = Some(CostEstimate::new("USD", vec![("box".into(), 0.125)]));
    r
}
