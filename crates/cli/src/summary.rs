//! The end-of-run summary on stderr: the outcome with its counts, one line per step or
//! infrastructure task that did not pass, what teardown left behind, and where the results are.
//! With `--json` the events on stdout say all of this and the summary is not printed.

use qa_core::engine::RunSummary;

/// Prints the summary of a finished run.
pub(crate) fn print_summary(summary: &RunSummary) {
    let report = &summary.report;
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(v, n)| format!("{n} {v}"))
        .collect();
    eprintln!(
        "{}: {} in {:.1}s ({})",
        report.plan_name,
        report.outcome,
        report.duration_ms as f64 / 1000.0,
        counts.join(", ")
    );
    for s in report
        .steps
        .iter()
        .filter(|s| s.verdict != qa_core::Verdict::Pass)
    {
        eprintln!(
            "  {:<11} {}@{}: {}",
            s.verdict.as_str(),
            s.step,
            s.machine,
            s.message.as_deref().unwrap_or("")
        );
    }
    for t in &report.infrastructure {
        eprintln!(
            "  {:<11} {}: {}",
            t.verdict.as_str(),
            t.task,
            t.message.as_deref().unwrap_or("")
        );
    }
    for f in &summary.cleanup_failures {
        eprintln!("  cleanup incomplete: {f}");
    }
    if let Some(f) = &summary.publish_failure {
        eprintln!("  publishing failed: {f}");
    }
    eprintln!(
        "results: {}  (report.json, junit.xml, logs/, casts/)",
        summary.run_dir.display()
    );
}
