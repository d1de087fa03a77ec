//! The page of one run: outcome and facts, the step × machine table (verdict, duration, log link,
//! recording), the tail of every failing log inline, infrastructure problems, machines and their
//! artifacts, and the recording player.

use std::fmt::Write as _;

use qa_core::Verdict;
use qa_core::report::Report;

use super::page::{self, badge};
use crate::text::{duration, html, strip_ansi};

/// What was published for one step, relative to the run's page.
#[derive(Debug, Clone, Default)]
pub struct StepFiles {
    /// The log copy.
    pub log: Option<String>,
    /// The recording script.
    pub cast: Option<String>,
    /// The tail to show inline (failing steps only).
    pub tail: Option<String>,
}

/// Renders the page. `files[i]` belongs to `report.steps[i]`; `artifacts` holds, per machine,
/// links relative to the page and the artifact's name.
pub fn render(
    report: &Report,
    files: &[StepFiles],
    artifacts: &[(String, Vec<(String, String)>)],
    history: &str,
) -> String {
    let mut out = String::with_capacity(4096 + report.steps.len() * 400);
    let title = format!(
        "{} — {} — {}",
        report.plan_name, report.run_id, report.outcome
    );
    page::open(&mut out, &title, "../../");
    let _ = writeln!(
        out,
        "<header>\n<nav aria-label=\"Site\"><a href=\"../../index.html\">All runs</a> · <a href=\"../../{}\">History of {}</a></nav>\n<h1>{} <span class=\"muted\">run {}</span></h1>",
        html(history),
        html(&report.plan_name),
        html(&report.plan_name),
        html(&report.run_id)
    );
    let _ = writeln!(
        out,
        "<p>Outcome: {} — {}</p>",
        badge(report.outcome),
        html(&page::counts(&report.counts))
    );
    if let Some(d) = &report.description {
        let _ = writeln!(out, "<p>{}</p>", html(d));
    }
    out.push_str("<dl class=\"facts\">\n");
    let mut fact = |k: &str, v: &str| {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", html(k), html(v));
    };
    fact("Started", &page::when(&report.started));
    fact("Finished", &page::when(&report.finished));
    fact("Duration", &duration(report.duration_ms));
    fact("Plan file", &report.plan_path);
    fact("Test id", &report.test_id);
    let mut backends: Vec<&str> = report.machines.iter().map(|m| m.backend.as_str()).collect();
    backends.sort_unstable();
    backends.dedup();
    fact("Backend", &backends.join(", "));
    if let Some(c) = &report.cost {
        fact("Cost (estimate)", &crate::text::cost(c.total, &c.currency));
    }
    out.push_str("</dl>\n</header>\n<main>\n");

    // Steps.
    let _ = writeln!(
        out,
        "<section aria-labelledby=\"steps-h\">\n<h2 id=\"steps-h\">Steps</h2>\n<div class=\"scroll\">\n<table class=\"steps\">\n<caption>{} step results on {} machine(s)</caption>\n<thead><tr><th scope=\"col\">Step</th><th scope=\"col\">Machine</th><th scope=\"col\">Verdict</th><th scope=\"col\" class=\"num\">Duration</th><th scope=\"col\" class=\"wide\">Attempts</th><th scope=\"col\">Log</th><th scope=\"col\">Recording</th></tr></thead>\n<tbody>",
        report.steps.len(),
        report.machines.len()
    );
    for (i, s) in report.steps.iter().enumerate() {
        let f = files.get(i).cloned().unwrap_or_default();
        let _ = write!(
            out,
            "<tr id=\"step-{i}\"><th scope=\"row\">{}</th><td>{}</td><td class=\"c-{v}\">{}</td><td class=\"num\">{}</td><td class=\"wide num\">{}</td><td>",
            html(&s.step),
            html(&s.machine),
            badge(s.verdict),
            duration(s.duration_ms),
            s.attempts,
            v = s.verdict
        );
        match &f.log {
            Some(l) => {
                let _ = write!(
                    out,
                    "<a href=\"{}\">log<span class=\"sr-only\"> of {} on {}</span></a>",
                    html(l),
                    html(&s.step),
                    html(&s.machine)
                );
            }
            None => out.push_str("<span class=\"muted\">none</span>"),
        }
        out.push_str("</td><td>");
        match &f.cast {
            Some(c) => {
                let _ = write!(
                    out,
                    "<button type=\"button\" class=\"play\" data-key=\"{i}\" data-verdict=\"{v}\" data-cast=\"{}\" data-label=\"{}\">Play<span class=\"sr-only\"> recording of {} on {}</span></button>",
                    html(c),
                    html(&format!("{} on {}", s.step, s.machine)),
                    html(&s.step),
                    html(&s.machine),
                    v = s.verdict,
                );
            }
            None => out.push_str("<span class=\"muted\">none</span>"),
        }
        out.push_str("</td></tr>\n");
        let why = s.message.as_deref().filter(|m| !m.is_empty());
        if s.verdict != Verdict::Pass && (why.is_some() || f.tail.is_some()) {
            let _ = write!(out, "<tr class=\"detail\"><td colspan=\"7\">");
            if let Some(m) = why {
                let _ = write!(out, "<p>{}</p>", html(&strip_ansi(m)));
            }
            if let Some(t) = &f.tail {
                let _ = write!(
                    out,
                    "<details open><summary>Last lines of the log of {} on {}</summary><pre class=\"tail\">{}</pre></details>",
                    html(&s.step),
                    html(&s.machine),
                    html(&strip_ansi(t))
                );
            }
            out.push_str("</td></tr>\n");
        }
    }
    out.push_str("</tbody>\n</table>\n</div>\n</section>\n");

    // The player; hidden until a recording is opened.
    out.push_str(
        "<section aria-labelledby=\"player-h\">\n<h2 id=\"player-h\">Recording</h2>\n<p class=\"muted\">Choose Play in the table to watch a step's recording here.</p>\n<div id=\"player\" class=\"player\" hidden data-state=\"idle\">\n<p class=\"player-title\"></p>\n<div class=\"controls\"><button type=\"button\" class=\"pp\">Play</button><input class=\"seek\" type=\"range\" min=\"0\" max=\"1\" step=\"0.01\" value=\"0\" aria-label=\"Position in the recording\"><span class=\"clock\" aria-live=\"off\"></span><label>Speed <select class=\"speed\"><option value=\"0.5\">0.5×</option><option value=\"1\" selected>1×</option><option value=\"2\">2×</option><option value=\"4\">4×</option><option value=\"8\">8×</option><option value=\"16\">16×</option></select></label></div>\n<pre class=\"term\" aria-label=\"Terminal\"></pre>\n<pre class=\"term-text\" id=\"player-text\" hidden></pre>\n</div>\n<noscript><p>Playing recordings needs JavaScript; the logs are linked in the table.</p></noscript>\n</section>\n",
    );

    if !report.infrastructure.is_empty() {
        out.push_str("<section aria-labelledby=\"infra-h\">\n<h2 id=\"infra-h\">Infrastructure</h2>\n<div class=\"scroll\"><table>\n<thead><tr><th scope=\"col\">Task</th><th scope=\"col\">Verdict</th><th scope=\"col\">Why</th></tr></thead>\n<tbody>\n");
        for t in &report.infrastructure {
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{}</th><td class=\"c-{v}\">{}</td><td>{}</td></tr>",
                html(&t.task),
                badge(t.verdict),
                html(&strip_ansi(t.message.as_deref().unwrap_or(""))),
                v = t.verdict
            );
        }
        out.push_str("</tbody></table></div>\n</section>\n");
    }

    out.push_str("<section aria-labelledby=\"machines-h\">\n<h2 id=\"machines-h\">Machines</h2>\n<div class=\"scroll\"><table>\n<thead><tr><th scope=\"col\">Machine</th><th scope=\"col\">Role</th><th scope=\"col\">Backend</th><th scope=\"col\">Facts</th><th scope=\"col\">Artifacts</th></tr></thead>\n<tbody>\n");
    for m in &report.machines {
        let facts: Vec<String> = m
            .facts
            .iter()
            .map(|(k, v)| format!("{}: {}", html(k), html(v)))
            .collect();
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}{}</th><td>{}</td><td>{}</td><td>{}</td><td>",
            html(&m.name),
            if m.kept { " (kept)" } else { "" },
            html(&m.role),
            html(&m.backend),
            facts.join("<br>")
        );
        match artifacts.iter().find(|(name, _)| *name == m.name) {
            Some((_, list)) if !list.is_empty() => {
                out.push_str("<ul>");
                for (href, name) in list {
                    let _ = write!(
                        out,
                        "<li><a href=\"{}\">{}</a></li>",
                        html(href),
                        html(name)
                    );
                }
                out.push_str("</ul>");
            }
            _ => out.push_str("<span class=\"muted\">none</span>"),
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table></div>\n</section>\n</main>\n");
    page::close(&mut out, "../../", true);
    out
}
