//! The history of one plan: a grid of step × the last N runs, steps that flipped between passing
//! and failing flagged as flaky, and for a failing step the run where its current failure began.

use std::collections::HashMap;
use std::fmt::Write as _;

use qa_core::Verdict;

use super::RunEntry;
use super::page;
use crate::text::html;

/// How many runs the grid shows.
pub const HISTORY_RUNS: usize = 30;

/// One step's row: verdict per run (newest first), `None` where the run lacked the step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepHistory {
    /// Step name.
    pub step: String,
    /// Machine name.
    pub machine: String,
    /// Verdicts, newest run first.
    pub verdicts: Vec<Option<Verdict>>,
}

impl StepHistory {
    /// Passed in one run and failed in another (runs where it did not run are ignored). Only a
    /// test's own verdicts count: an ERROR is the infrastructure's, not the step's, flakiness.
    pub fn flaky(&self) -> bool {
        let seq: Vec<bool> = self
            .verdicts
            .iter()
            .flatten()
            .filter(|v| matches!(v, Verdict::Pass | Verdict::Fail | Verdict::Timeout))
            .map(|v| *v == Verdict::Pass)
            .collect();
        seq.windows(2).any(|w| w[0] != w[1])
    }

    /// Index (into the runs, newest first) of the run where the current streak of failures began:
    /// `None` when the newest run where the step ran passed it.
    pub fn failing_since(&self) -> Option<usize> {
        let mut since = None;
        for (i, v) in self.verdicts.iter().enumerate() {
            match v {
                None | Some(Verdict::Skipped) | Some(Verdict::Interrupted) => continue,
                Some(Verdict::Pass) => break,
                Some(_) => since = Some(i),
            }
        }
        since
    }
}

/// The grid rows for runs of one plan (newest first), steps in the newest run's order first.
pub fn rows(runs: &[&RunEntry]) -> Vec<StepHistory> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for run in runs {
        for s in &run.report.steps {
            let key = (s.step.clone(), s.machine.clone());
            if !index.contains_key(&key) {
                index.insert(key.clone(), order.len());
                order.push(key);
            }
        }
    }
    let mut rows: Vec<StepHistory> = order
        .into_iter()
        .map(|(step, machine)| StepHistory {
            step,
            machine,
            verdicts: vec![None; runs.len()],
        })
        .collect();
    for (ri, run) in runs.iter().enumerate() {
        for s in &run.report.steps {
            if let Some(&i) = index.get(&(s.step.clone(), s.machine.clone())) {
                rows[i].verdicts[ri] = Some(s.verdict);
            }
        }
    }
    rows
}

fn letter(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "P",
        Verdict::Fail => "F",
        Verdict::Error => "E",
        Verdict::Timeout => "T",
        Verdict::Skipped => "S",
        Verdict::Interrupted => "I",
        // A verdict added to qa-core after this was written: shown like an error.
        _ => "E",
    }
}

/// Renders the history page of `plan`; `runs` are that plan's runs, newest first.
pub fn render(plan: &str, runs: &[&RunEntry]) -> String {
    let shown = &runs[..runs.len().min(HISTORY_RUNS)];
    let rows = rows(shown);
    let mut out = String::with_capacity(4096 + rows.len() * shown.len() * 60);
    page::open(&mut out, &format!("History of {plan}"), "../");
    let flaky = rows.iter().filter(|r| r.flaky()).count();
    let failing = rows.iter().filter(|r| r.failing_since().is_some()).count();
    let _ = writeln!(
        out,
        "<header>\n<nav aria-label=\"Site\"><a href=\"../index.html\">All runs</a></nav>\n<h1>History of {}</h1>\n<p>The last {} of {} run(s): {} step(s), {} failing now, {} flaky.</p>\n<p class=\"muted\">Legend: P PASS, F FAIL, E ERROR, T TIMEOUT, S SKIPPED, I INTERRUPTED, – not run. Newest run first.</p>\n</header>\n<main>",
        html(plan),
        shown.len(),
        runs.len(),
        rows.len(),
        failing,
        flaky
    );
    out.push_str("<section aria-labelledby=\"grid-h\">\n<h2 id=\"grid-h\">Steps by run</h2>\n<div class=\"scroll\">\n<table class=\"grid\">\n<caption>Verdict of each step in each run</caption>\n<thead><tr><th scope=\"col\">Step</th><th scope=\"col\">Machine</th><th scope=\"col\">Flaky</th><th scope=\"col\">Failing since</th>");
    for (i, run) in shown.iter().enumerate() {
        let when = page::when(&run.report.started);
        let _ = write!(
            out,
            "<th scope=\"col\" class=\"run\"><a href=\"../runs/{}/index.html\" title=\"{}\">#{}</a><small>{}</small></th>",
            html(&run.dir),
            html(&format!(
                "{} ({when}, {})",
                run.report.run_id, run.report.outcome
            )),
            i + 1,
            html(when.get(5..10).unwrap_or(""))
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &rows {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>",
            html(&row.step),
            html(&row.machine),
            if row.flaky() {
                "<span class=\"flaky\">flaky</span>"
            } else {
                ""
            }
        );
        if let Some(i) = row.failing_since() {
            let run = shown[i];
            let _ = write!(
                out,
                "<a href=\"../runs/{}/index.html\">{}</a>",
                html(&run.dir),
                html(&run.report.run_id)
            );
        }
        out.push_str("</td>");
        for (i, v) in row.verdicts.iter().enumerate() {
            match v {
                // Passing cells stay small (200 steps × 30 runs add up); the others link to
                // their run, which is where a reader goes next.
                Some(Verdict::Pass) => {
                    out.push_str("<td class=\"cell c-PASS\" title=\"PASS\">P</td>")
                }
                Some(v) => {
                    let _ = write!(
                        out,
                        "<td class=\"cell c-{v}\"><a href=\"../runs/{}/index.html\" title=\"{v}\">{}</a></td>",
                        html(&shown[i].dir),
                        letter(*v)
                    );
                }
                None => out.push_str("<td class=\"cell\">–</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</div>\n</section>\n</main>\n");
    page::close(&mut out, "../", false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[Option<Verdict>]) -> StepHistory {
        StepHistory {
            step: "s".into(),
            machine: "m".into(),
            verdicts: v.to_vec(),
        }
    }

    #[test]
    fn flaky_means_flipping_between_pass_and_fail() {
        use Verdict::*;
        assert!(h(&[Some(Pass), Some(Fail), Some(Pass)]).flaky());
        assert!(h(&[Some(Fail), None, Some(Pass)]).flaky());
        assert!(!h(&[Some(Fail), Some(Fail), Some(Error)]).flaky());
        assert!(
            !h(&[Some(Pass), Some(Error), Some(Pass)]).flaky(),
            "an infrastructure error is not the step's flakiness"
        );
    }

    #[test]
    fn failing_since_is_start_of_current_streak() {
        use Verdict::*;
        assert_eq!(
            h(&[Some(Fail), Some(Fail), Some(Pass), Some(Fail)]).failing_since(),
            Some(1)
        );
        assert_eq!(
            h(&[Some(Fail), Some(Skipped), Some(Timeout), Some(Pass)]).failing_since(),
            Some(2)
        );
        assert_eq!(h(&[Some(Pass), Some(Fail)]).failing_since(), None);
        assert_eq!(h(&[None, Some(Fail)]).failing_since(), Some(1));
    }
}
