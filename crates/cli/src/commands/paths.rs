//! The paths a command is given, checked before it starts: a wrong one is a usage error (exit 2)
//! that says what to give, not an I/O failure of the run (exit 3).

use std::path::Path;

use qa_core::journal::JOURNAL_FILE;

use crate::args::{Cli, Command};
use crate::error::CliError;

/// Checks the directories `cli` names: `--results` where a run writes (`run`, `plan`) or reads
/// (`report`), and the run directory of `resume`, `publish` and `cleanup`.
pub(super) fn check(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Run { .. } | Command::Plan { .. } => can_hold_directories(&cli.results),
        Command::Report { results_dir, site } => {
            let results = results_dir.as_deref().unwrap_or(&cli.results);
            is_results_directory(results)?;
            site.as_deref().map_or(Ok(()), can_hold_directories)
        }
        Command::Resume { run_dir } | Command::Publish { run_dir } => is_run_directory(run_dir),
        Command::Cleanup {
            run_dir: Some(run_dir),
            ..
        } => is_run_directory(run_dir),
        _ => Ok(()),
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> CliError {
    CliError::BadPath {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// `path` is a directory, or can be made one: the nearest part of it that exists is a directory.
fn can_hold_directories(path: &Path) -> Result<(), CliError> {
    let Some(existing) = path.ancestors().find(|p| p.exists()) else {
        return Ok(());
    };
    if existing.is_dir() {
        return Ok(());
    }
    if existing == path {
        Err(bad(
            path,
            "is a file, not a directory: give a directory for the results (it is made if missing)",
        ))
    } else {
        Err(bad(
            path,
            format!(
                "cannot be made a directory: {} is a file; give a directory for the results",
                existing.display()
            ),
        ))
    }
}

fn is_results_directory(path: &Path) -> Result<(), CliError> {
    if path.is_dir() {
        Ok(())
    } else if path.exists() {
        Err(bad(
            path,
            "is a file, not a results directory: give the directory `qa-run run --results` wrote to",
        ))
    } else {
        Err(bad(
            path,
            "does not exist: give the directory `qa-run run --results` wrote to (default `results`)",
        ))
    }
}

fn is_run_directory(path: &Path) -> Result<(), CliError> {
    if !path.exists() {
        return Err(bad(
            path,
            "does not exist: give the directory of a run, `<results>/<run-id>`",
        ));
    }
    if !path.is_dir() {
        return Err(bad(
            path,
            "is a file, not a run directory: give the directory of a run, `<results>/<run-id>`",
        ));
    }
    if !path.join(JOURNAL_FILE).is_file() {
        return Err(bad(
            path,
            format!(
                "is not a run directory: it has no {JOURNAL_FILE}; give the directory of a run, `<results>/<run-id>` (a run whose journal is lost is cleaned up with `qa-run cleanup --test-id ID`)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(r: Result<(), CliError>) -> String {
        match r {
            Err(e) => {
                assert_eq!(e.exit_code(), qa_core::exit::BAD_PLAN_OR_USAGE);
                e.to_string()
            }
            Ok(()) => panic!("accepted"),
        }
    }

    #[test]
    fn results_that_are_a_file_are_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(can_hold_directories(&tmp.path().join("new/results")).is_ok());
        assert!(can_hold_directories(tmp.path()).is_ok());
        assert!(problem(can_hold_directories(&file)).ends_with("f: is a file, not a directory: give a directory for the results (it is made if missing)"));
        let below = problem(can_hold_directories(&file.join("results")));
        assert!(
            below.contains("f/results: cannot be made a directory:"),
            "{below}"
        );
        assert!(
            problem(is_results_directory(&file)).contains("is a file, not a results directory")
        );
        assert!(problem(is_results_directory(&tmp.path().join("none"))).contains("does not exist"));
    }

    #[test]
    fn a_run_directory_must_have_a_journal() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            problem(is_run_directory(&tmp.path().join("gone"))).contains("gone: does not exist")
        );
        assert!(problem(is_run_directory(tmp.path())).contains("it has no state.json"));
        std::fs::write(tmp.path().join(JOURNAL_FILE), "{}").unwrap();
        assert!(is_run_directory(tmp.path()).is_ok());
    }
}
