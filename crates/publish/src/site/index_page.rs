//! The index: every run present, newest first, one compact row each (the page must stay small
//! with a thousand runs), and a link to each plan's history.

use std::fmt::Write as _;

use super::page::{self, badge};
use super::{RunEntry, history_file};
use crate::text::{duration, html};

/// Runs per index page: 1,000 compact rows stay under 300 KB.
pub const RUNS_PER_PAGE: usize = 1000;

/// The file of index page `n` (0 is the newest): `index.html`, `index-2.html`, …
pub fn page_file(n: usize) -> String {
    if n == 0 {
        "index.html".into()
    } else {
        format!("index-{}.html", n + 1)
    }
}

/// How many index pages `runs` need (at least one).
pub fn page_count(runs: usize) -> usize {
    runs.div_ceil(RUNS_PER_PAGE).max(1)
}

/// Renders index page `n` of all `runs` (newest first).
pub fn render(runs: &[RunEntry], n: usize) -> String {
    let pages = page_count(runs.len());
    let shown = runs.chunks(RUNS_PER_PAGE).nth(n).unwrap_or(&[]);
    let mut out = String::with_capacity(2048 + shown.len() * 200);
    let title = if n == 0 {
        "Test runs".to_string()
    } else {
        format!("Test runs, page {} of {pages}", n + 1)
    };
    page::open(&mut out, &title, "");
    let mut plans: Vec<&str> = runs.iter().map(|r| r.report.plan_name.as_str()).collect();
    plans.sort_unstable();
    plans.dedup();
    let _ = writeln!(
        out,
        "<header>\n<h1>Test runs</h1>\n<p>{} run(s) of {} plan(s).</p>\n</header>\n<main>",
        runs.len(),
        plans.len()
    );
    if !plans.is_empty() {
        out.push_str("<section aria-labelledby=\"plans-h\">\n<h2 id=\"plans-h\">History by plan</h2>\n<ul>\n");
        for p in &plans {
            let _ = writeln!(
                out,
                "<li><a href=\"{}\">{}</a></li>",
                html(&history_file(p)),
                html(p)
            );
        }
        out.push_str("</ul>\n</section>\n");
    }
    out.push_str("<section aria-labelledby=\"runs-h\">\n<h2 id=\"runs-h\">Runs</h2>\n<div class=\"scroll\">\n<table class=\"runs\">\n<caption>Newest first</caption>\n<thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Plan</th><th scope=\"col\">Started</th><th scope=\"col\">Outcome</th><th scope=\"col\">Steps</th><th scope=\"col\" class=\"num\">Duration</th><th scope=\"col\" class=\"wide\">Machines</th><th scope=\"col\" class=\"wide\">Backend</th><th scope=\"col\" class=\"num\">Cost</th></tr></thead>\n<tbody>\n");
    for run in shown {
        let r = &run.report;
        let mut backends: Vec<&str> = r.machines.iter().map(|m| m.backend.as_str()).collect();
        backends.sort_unstable();
        backends.dedup();
        let machines = match r.machines.len() {
            0 => "none".to_string(),
            n if n <= 3 => r
                .machines
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            n => format!(
                "{n}: {}, …",
                r.machines
                    .iter()
                    .take(2)
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let cost = r
            .cost
            .as_ref()
            .map(|c| crate::text::cost(c.total, &c.currency))
            .unwrap_or_default();
        // Cells are left unclosed, as HTML allows, to keep a thousand rows small.
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\"><a href=\"runs/{dir}/index.html\">{id}</a><td>{plan}<td>{when}<td>{badge}<td>{counts}<td class=\"num\">{dur}<td class=\"wide\">{machines}<td class=\"wide\">{backend}<td class=\"num\">{cost}",
            dir = html(&run.dir),
            id = html(&r.run_id),
            plan = html(&r.plan_name),
            when = html(&page::when(&r.started)),
            badge = badge(r.outcome),
            counts = html(&page::counts(&r.counts)),
            dur = duration(r.duration_ms),
            machines = html(&machines),
            backend = html(&backends.join(", ")),
            cost = html(&cost),
        );
    }
    out.push_str("</tbody>\n</table>\n</div>\n");
    if pages > 1 {
        let _ = write!(
            out,
            "<nav aria-label=\"Pages of runs\"><p>Page {} of {pages}.",
            n + 1
        );
        if n > 0 {
            let _ = write!(
                out,
                " <a href=\"{}\" rel=\"prev\">Newer runs</a>",
                page_file(n - 1)
            );
        }
        if n + 1 < pages {
            let _ = write!(
                out,
                " <a href=\"{}\" rel=\"next\">Older runs</a>",
                page_file(n + 1)
            );
        }
        out.push_str("</p></nav>\n");
    }
    out.push_str("</section>\n</main>\n");
    page::close(&mut out, "", false);
    out
}
