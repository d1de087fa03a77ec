//! `qa-run report [RESULTS_DIR]`: rebuild the static results site from every run's report.json
//! under a results directory, and print the path of its index page. Logs and recordings are
//! streamed into the site, never read whole, so a run with huge logs costs little memory.

use std::path::Path;

use qa_core::exit;

use super::{Globals, print_stdout};
use crate::error::CliError;
use crate::terminal::safe;

/// Rebuilds the site of `results_dir` (default `--results`) in `site` (default
/// `<results>/site`).
pub(super) fn report(
    globals: &Globals,
    results_dir: Option<&Path>,
    site: Option<&Path>,
) -> Result<i32, CliError> {
    let results = results_dir.unwrap_or(globals.results.as_path());
    let site = site.map_or_else(|| results.join("site"), Path::to_path_buf);
    let summary = qa_publish::site::rebuild(results, &site).map_err(CliError::Site)?;
    eprintln!(
        "site rebuilt in {}: {} run(s) of {} plan(s)",
        safe(&site.display().to_string()),
        summary.runs,
        summary.plans
    );
    for (path, why) in &summary.unreadable {
        eprintln!(
            "skipped {}: {}",
            safe(&path.display().to_string()),
            safe(why)
        );
    }
    print_stdout(&format!("{}\n", site.join("index.html").display()));
    Ok(exit::ALL_PASSED)
}
