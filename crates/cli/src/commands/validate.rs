//! `qa-run validate PLAN...`: load each plan and build its task graph, printing `ok:` with its
//! size or every problem found, so one call reports on all the files.

use std::path::PathBuf;

use qa_core::exit;

use super::print_stdout;
use crate::error::CliError;
use crate::terminal::safe_lines;

/// Checks each plan file; the problems are printed as each file is read.
pub(super) fn validate(plans: &[PathBuf]) -> Result<i32, CliError> {
    let backends = qa_cloud::backends();
    let mut invalid = 0;
    for p in plans {
        match qa_core::plan::load_file_with(p, &backends) {
            Ok(l) => match qa_core::stages::build_graph(&l, &backends) {
                Ok(g) => print_stdout(&format!(
                    "ok: {} ({} machine(s), {} step(s), {} tasks)\n",
                    p.display(),
                    qa_core::stages::machine_instances(&l.plan).len(),
                    l.plan.steps.len(),
                    g.len()
                )),
                Err(e) => {
                    eprintln!("{}: {}", p.display(), safe_lines(&e.to_string()));
                    invalid += 1;
                }
            },
            Err(e) => {
                // A plan error names the file on each of its lines and ends with a newline.
                eprint!("{}", safe_lines(&e.to_string()));
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        return Err(CliError::InvalidPlans { count: invalid });
    }
    Ok(exit::ALL_PASSED)
}
