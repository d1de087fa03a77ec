//! JUnit XML, the format every CI system reads (Jenkins, GitLab, GitHub actions that annotate
//! tests). The output follows the Apache Ant JUnit schema that Jenkins validates against: one
//! `<testsuite>` per machine, one `<testcase>` per step on that machine with `classname`
//! `plan/machine`, and `<failure>`, `<error>` or `<skipped>` carrying the step's message and log
//! tail. Infrastructure tasks that did not pass form one more suite, so a run that never got to
//! its steps is still red in CI.
//!
//! Verdicts map as: FAIL → `<failure>`; ERROR, TIMEOUT, INTERRUPTED → `<error type="…">`;
//! SKIPPED → `<skipped>`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use qa_core::redact::Redactor;
use qa_core::report::{Report, StepReport};
use qa_core::{PublishError, PublishReceipt, ResultPublisher, Verdict};

use crate::text::{strip_ansi, xml};

/// The JUnit XML document for a run. Secrets of the common credential shapes are masked; use
/// [`render_with`] to mask a plan's declared secrets too.
pub fn render(report: &Report) -> String {
    render_with(report, &Redactor::default())
}

/// [`render`] with a redactor that knows the plan's secrets.
pub fn render_with(report: &Report, redactor: &Redactor) -> String {
    let report = crate::redaction::report(report, redactor);
    let mut out = String::with_capacity(512 + report.steps.len() * 256);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    let timestamp = junit_timestamp(&report.started);
    let mut machines: Vec<&str> = report.machines.iter().map(|m| m.name.as_str()).collect();
    // Steps may name machines the report's machine list lacks (a machine that never came up).
    for s in &report.steps {
        if !machines.contains(&s.machine.as_str()) {
            machines.push(&s.machine);
        }
    }
    let mut id = 0;
    for machine in machines {
        let steps: Vec<&StepReport> = report
            .steps
            .iter()
            .filter(|s| s.machine == machine)
            .collect();
        let classname = format!("{}/{}", token(&report.plan_name), token(machine));
        let count = |f: fn(Verdict) -> bool| steps.iter().filter(|s| f(s.verdict)).count();
        let failures = count(|v| v == Verdict::Fail);
        let errors =
            count(|v| matches!(v, Verdict::Error | Verdict::Timeout | Verdict::Interrupted));
        let skipped = count(|v| v == Verdict::Skipped);
        let time_ms: u64 = steps.iter().map(|s| s.duration_ms).sum();
        let _ = writeln!(
            out,
            "  <testsuite package=\"{pkg}\" id=\"{id}\" name=\"{name}\" timestamp=\"{timestamp}\" hostname=\"{host}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time}\">",
            pkg = xml(&token(&report.plan_name), true),
            name = xml(&classname, true),
            host = xml(&token(machine), true),
            tests = steps.len(),
            time = seconds(time_ms),
        );
        out.push_str("    <properties>\n");
        let mut props: Vec<(String, String)> = vec![
            ("run-id".into(), report.run_id.clone()),
            ("test-id".into(), report.test_id.clone()),
            ("plan".into(), report.plan_name.clone()),
            ("plan-path".into(), report.plan_path.clone()),
            ("outcome".into(), report.outcome.to_string()),
            ("started".into(), report.started.clone()),
            ("finished".into(), report.finished.clone()),
        ];
        if let Some(m) = report.machines.iter().find(|m| m.name == machine) {
            props.push(("role".into(), m.role.clone()));
            props.push(("backend".into(), m.backend.clone()));
            for (k, v) in &m.facts {
                props.push((format!("fact.{k}"), v.clone()));
            }
        }
        if let Some(c) = &report.cost {
            props.push(("cost".into(), crate::text::cost(c.total, &c.currency)));
        }
        for (k, v) in props {
            let _ = writeln!(
                out,
                "      <property name=\"{}\" value=\"{}\"/>",
                xml(&token(&k), true),
                xml(&v, true)
            );
        }
        out.push_str("    </properties>\n");
        for s in &steps {
            testcase(&mut out, &classname, s);
        }
        out.push_str(
            "    <system-out></system-out>\n    <system-err></system-err>\n  </testsuite>\n",
        );
        id += 1;
    }
    if !report.infrastructure.is_empty() {
        let classname = format!("{}/infrastructure", token(&report.plan_name));
        let errors = report
            .infrastructure
            .iter()
            .filter(|t| t.verdict != Verdict::Pass && t.verdict != Verdict::Skipped)
            .count();
        let skipped = report
            .infrastructure
            .iter()
            .filter(|t| t.verdict == Verdict::Skipped)
            .count();
        let _ = writeln!(
            out,
            "  <testsuite package=\"{pkg}\" id=\"{id}\" name=\"{name}\" timestamp=\"{timestamp}\" hostname=\"localhost\" tests=\"{tests}\" failures=\"0\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"0.000\">\n    <properties></properties>",
            pkg = xml(&token(&report.plan_name), true),
            name = xml(&classname, true),
            tests = report.infrastructure.len(),
        );
        for t in &report.infrastructure {
            let mut step = StepReport::new(t.task.clone(), String::new(), t.verdict);
            step.message = t.message.clone();
            testcase(&mut out, &classname, &step);
        }
        out.push_str(
            "    <system-out></system-out>\n    <system-err></system-err>\n  </testsuite>\n",
        );
    }
    out.push_str("</testsuites>\n");
    out
}

fn testcase(out: &mut String, classname: &str, s: &StepReport) {
    let _ = write!(
        out,
        "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
        xml(&token(&s.step), true),
        xml(classname, true),
        seconds(s.duration_ms)
    );
    let message = s.message.clone().unwrap_or_else(|| s.verdict.to_string());
    let mut body = String::new();
    if let Some(code) = s.exit_code {
        let _ = writeln!(body, "exit status: {code}");
    }
    if s.attempts > 1 {
        let _ = writeln!(body, "attempts: {}", s.attempts);
    }
    if let Some(log) = &s.log {
        let _ = writeln!(body, "log: {log}");
    }
    if let Some(tail) = &s.log_tail {
        let _ = write!(body, "\n{}", strip_ansi(tail));
    }
    let element = match s.verdict {
        Verdict::Pass => None,
        Verdict::Fail => Some(("failure", true)),
        Verdict::Error | Verdict::Timeout | Verdict::Interrupted => Some(("error", true)),
        Verdict::Skipped => Some(("skipped", false)),
        // A verdict added to qa-core after this was written: not a pass, and not known to be
        // the test's fault, so an error (its `type` names it).
        _ => Some(("error", true)),
    };
    match element {
        None => out.push_str("/>\n"),
        Some((name, typed)) => {
            let _ = write!(
                out,
                ">\n      <{name} message=\"{}\"",
                xml(&strip_ansi(&message), true)
            );
            if typed {
                let _ = write!(out, " type=\"{}\"", s.verdict);
            }
            let _ = write!(out, ">{}</{name}>\n    </testcase>\n", xml(&body, false));
        }
    }
}

/// Seconds with millisecond precision, as `xs:decimal`.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// A value for an `xs:token` attribute that is never empty after whitespace collapsing.
fn token(s: &str) -> String {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() { "unnamed".into() } else { t }
}

/// The schema's timestamp: UTC, no zone designator, no fraction.
fn junit_timestamp(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(rfc3339, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => "1970-01-01T00:00:00".into(),
    }
}

/// Writes `junit.xml` for each run to a fixed path.
#[derive(Debug, Clone)]
pub struct JunitPublisher {
    path: PathBuf,
    redactor: Redactor,
}

impl JunitPublisher {
    /// A publisher writing to `path` (parent directories are created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JunitPublisher {
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
impl ResultPublisher for JunitPublisher {
    fn name(&self) -> &str {
        "junit"
    }

    async fn publish(
        &self,
        report: &Report,
        _run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        let text = render_with(report, &self.redactor);
        crate::fsutil::write_atomic(&self.path, text.as_bytes())
            .map_err(|e| crate::fsutil::io_error("junit", &self.path, e))?;
        Ok(PublishReceipt::new(
            "junit",
            self.path.display().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_testcase_per_step_with_verdict_elements() {
        let xml = render(&crate::testdata::report());
        assert_eq!(xml.matches("<testcase ").count(), 7, "{xml}");
        assert!(xml.contains("classname=\"smoke/box\""));
        assert_eq!(xml.matches("<failure ").count(), 1);
        assert_eq!(
            xml.matches("<error ").count(),
            4,
            "3 steps and 1 infrastructure task: {xml}"
        );
        assert_eq!(xml.matches("<skipped ").count(), 1);
        assert!(xml.contains("time=\"2.500\""));
        assert!(xml.contains("timestamp=\"2026-11-20T10:00:00\""));
        assert!(xml.contains("&lt;script&gt;"));
        assert!(!xml.contains('\u{1b}'));
        assert!(xml.contains("<property name=\"run-id\" value=\"20261120-100000-abcd\"/>"));
    }

    #[test]
    fn timestamps_are_utc_without_zone() {
        assert_eq!(
            junit_timestamp("2026-11-20T12:30:00.123+02:00"),
            "2026-11-20T10:30:00"
        );
        assert_eq!(junit_timestamp("garbage"), "1970-01-01T00:00:00");
    }
}
