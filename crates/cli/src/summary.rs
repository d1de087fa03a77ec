//! The end-of-run summary on stderr: the outcome with its counts, one line per step or
//! infrastructure task that did not pass, what teardown left behind, and where the results are.
//! With `--json` the events on stdout say all of this and the summary is not printed. Names and
//! messages are shown through [`crate::terminal::safe`]: a step name or an error message cannot
//! add, erase or rewrite a line of the summary.

use std::io::Write;

use qa_core::engine::RunSummary;

use crate::terminal::safe;

/// Prints the summary of a finished run.
pub(crate) fn print_summary(summary: &RunSummary) {
    let mut err = std::io::stderr().lock();
    let _ = write_summary(&mut err, summary);
}

fn write_summary(out: &mut impl Write, summary: &RunSummary) -> std::io::Result<()> {
    let report = &summary.report;
    let counts: Vec<String> = report
        .counts
        .iter()
        .map(|(v, n)| format!("{n} {v}"))
        .collect();
    writeln!(
        out,
        "{}: {} in {:.1}s ({})",
        safe(&report.plan_name),
        report.outcome,
        report.duration_ms as f64 / 1000.0,
        counts.join(", ")
    )?;
    for s in report
        .steps
        .iter()
        .filter(|s| s.verdict != qa_core::Verdict::Pass)
    {
        writeln!(
            out,
            "  {:<11} {}@{}: {}",
            s.verdict.as_str(),
            safe(&s.step),
            safe(&s.machine),
            safe(s.message.as_deref().unwrap_or(""))
        )?;
    }
    for t in &report.infrastructure {
        writeln!(
            out,
            "  {:<11} {}: {}",
            t.verdict.as_str(),
            safe(&t.task),
            safe(t.message.as_deref().unwrap_or(""))
        )?;
    }
    for f in &summary.cleanup_failures {
        writeln!(out, "  cleanup incomplete: {}", safe(f))?;
    }
    if let Some(f) = &summary.publish_failure {
        writeln!(out, "  publishing failed: {}", safe(f))?;
    }
    writeln!(
        out,
        "results: {}  (report.json, junit.xml, logs/, casts/)",
        safe(&summary.run_dir.display().to_string())
    )
}
