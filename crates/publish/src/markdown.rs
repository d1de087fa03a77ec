//! A Markdown summary of a run, fit for a CI job summary (`$GITHUB_STEP_SUMMARY`) or a pull-request
//! comment: the outcome, counts, a table of every step that did not pass with its log tail, and
//! the cost. Passing steps are counted, not listed, so a 200-step run stays readable.
//!
//! Everything from the run is escaped: GitHub renders inline HTML in Markdown, so a step message
//! holding `<img onerror=…>` must arrive as text. Log tails go into fenced blocks whose fence is
//! longer than any backtick run inside them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use qa_core::redact::Redactor;
use qa_core::report::Report;
use qa_core::{PublishError, PublishReceipt, ResultPublisher, Verdict};

use crate::text::{duration, markdown as md, strip_ansi};

/// The Markdown summary of a run (common credential shapes masked).
pub fn render(report: &Report) -> String {
    render_with(report, &Redactor::default())
}

/// [`render`] with a redactor that knows the plan's secrets.
pub fn render_with(report: &Report, redactor: &Redactor) -> String {
    let r = crate::redaction::report(report, redactor);
    let mut out = String::new();
    let mark = if r.outcome == Verdict::Pass {
        "✅"
    } else {
        "❌"
    };
    let _ = writeln!(out, "## {mark} {} — {}\n", md(&r.plan_name), r.outcome);
    if let Some(d) = &r.description {
        let _ = writeln!(out, "{}\n", md(d));
    }
    let counts: Vec<String> = r
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(v, n)| format!("{n} {v}"))
        .collect();
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| Run | `{}` |", r.run_id.replace('`', "'"));
    let _ = writeln!(
        out,
        "| Steps | {} |",
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    );
    let _ = writeln!(out, "| Duration | {} |", duration(r.duration_ms));
    let machines: Vec<String> = r
        .machines
        .iter()
        .map(|m| format!("{} ({})", md(&m.name), md(&m.backend)))
        .collect();
    let _ = writeln!(
        out,
        "| Machines | {} |",
        if machines.is_empty() {
            "none".into()
        } else {
            machines.join(", ")
        }
    );
    let _ = writeln!(out, "| Started | {} |", md(&r.started));
    if let Some(c) = &r.cost {
        let _ = writeln!(
            out,
            "| Cost (estimate) | {} |",
            md(&crate::text::cost(c.total, &c.currency))
        );
    }
    out.push('\n');

    let bad: Vec<_> = r
        .steps
        .iter()
        .filter(|s| s.verdict != Verdict::Pass)
        .collect();
    if bad.is_empty() && r.infrastructure.is_empty() {
        let _ = writeln!(out, "All {} steps passed.", r.steps.len());
        return out;
    }
    if !bad.is_empty() {
        let _ = writeln!(
            out,
            "### Steps that did not pass\n\n| Step | Machine | Verdict | Duration | Why |\n| --- | --- | --- | --- | --- |"
        );
        for s in &bad {
            let why = s
                .message
                .as_deref()
                .map(|m| md(&strip_ansi(m)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | **{}** | {} | {} |",
                md(&s.step),
                md(&s.machine),
                s.verdict,
                duration(s.duration_ms),
                why
            );
        }
        out.push('\n');
    }
    if !r.infrastructure.is_empty() {
        let _ = writeln!(
            out,
            "### Infrastructure\n\n| Task | Verdict | Why |\n| --- | --- | --- |"
        );
        for t in &r.infrastructure {
            let why = t
                .message
                .as_deref()
                .map(|m| md(&strip_ansi(m)))
                .unwrap_or_default();
            let _ = writeln!(out, "| {} | **{}** | {} |", md(&t.task), t.verdict, why);
        }
        out.push('\n');
    }
    for s in bad
        .iter()
        .filter(|s| s.log_tail.as_deref().is_some_and(|t| !t.trim().is_empty()))
    {
        let tail = strip_ansi(s.log_tail.as_deref().unwrap_or_default());
        let fence = "`".repeat(longest_backtick_run(&tail).max(2) + 1);
        let _ = writeln!(
            out,
            "<details><summary>{} on {}: log tail</summary>\n\n{fence}text\n{}\n{fence}\n\n</details>\n",
            md(&s.step),
            md(&s.machine),
            tail.trim_end()
        );
    }
    out
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// Writes the Markdown summary to a fixed path.
#[derive(Debug, Clone)]
pub struct MarkdownPublisher {
    path: PathBuf,
    redactor: Redactor,
}

impl MarkdownPublisher {
    /// A publisher writing to `path` (parent directories are created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MarkdownPublisher {
            path: path.into(),
            redactor: Redactor::default(),
        }
    }

    /// Masks these secrets too.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }
}

#[async_trait]
impl ResultPublisher for MarkdownPublisher {
    fn name(&self) -> &str {
        "markdown"
    }

    async fn publish(
        &self,
        report: &Report,
        _run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        let text = render_with(report, &self.redactor);
        crate::fsutil::write_atomic(&self.path, text.as_bytes())
            .map_err(|e| crate::fsutil::io_error("markdown", &self.path, e))?;
        Ok(PublishReceipt::new(
            "markdown",
            self.path.display().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_steps_that_did_not_pass_and_escapes_html() {
        let mut r = crate::testdata::report();
        r.steps[1].message = Some("\"><img src=x onerror=alert(1)>".into());
        r.steps[1].log_tail = Some("```\n<script>x</script>\n```".into());
        let text = render(&r);
        assert!(text.contains("| test | box | **FAIL** |"), "{text}");
        assert!(!text.contains("<img"), "{text}");
        assert!(
            text.contains("````text\n"),
            "fence longer than the tail's: {text}"
        );
        assert!(!text.contains("| build |"), "passing steps are not listed");
        assert!(text.contains("0.12 USD") || text.contains("0.13 USD"));
    }
}
