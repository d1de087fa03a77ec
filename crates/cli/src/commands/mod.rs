//! One function per subcommand, each in its own file. A command returns the exit code of a job
//! done (0, or for `run` and `resume` the code of the run's outcome) or the [`CliError`] that
//! stopped it; choosing the code for an error and printing it is left to `main`.

mod cleanup;
mod janitor;
mod paths;
mod plan;
mod publish;
mod report;
mod resume;
mod run;
mod validate;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::args::{Cli, Command};
use crate::error::CliError;
use crate::settings::Settings;
use crate::wiring::EngineSettings;

/// What every command takes besides its own arguments: the global options and the environment.
struct Globals {
    /// `--results`.
    results: PathBuf,
    /// `--json`.
    json: bool,
    /// `--known-hosts`.
    known_hosts: Vec<PathBuf>,
    /// The `QA_RUN_*` variables.
    settings: Settings,
}

impl Globals {
    /// The engine settings for run directories under `results` and the plan's `inventory`.
    fn engine_settings(
        &self,
        results: &Path,
        inventory: Vec<qa_core::plan::InventoryHost>,
    ) -> EngineSettings {
        EngineSettings {
            results: results.to_path_buf(),
            inventory,
            known_hosts: self.known_hosts.clone(),
            environment: self.settings.clone(),
        }
    }
}

/// Runs one parsed command and returns its exit code, or the error that stopped it.
pub async fn dispatch(cli: Cli, settings: &Settings) -> Result<i32, CliError> {
    paths::check(&cli)?;
    let globals = Globals {
        results: cli.results,
        json: cli.json,
        known_hosts: cli.known_hosts,
        settings: settings.clone(),
    };
    match cli.command {
        Command::Run {
            plan,
            run_id,
            test_id,
            concurrency,
        } => run::run(&globals, &plan, run_id, test_id, concurrency).await,
        Command::Resume { run_dir } => resume::resume(&globals, &run_dir).await,
        Command::Plan { plan, format } => plan::plan(&globals, &plan, format).await,
        Command::Validate { plans } => validate::validate(&plans),
        Command::Cleanup {
            run_dir,
            test_id,
            all_regions,
            aws,
            gce,
        } => {
            cleanup::cleanup(
                &globals,
                cleanup::Targets {
                    run_dir: run_dir.as_deref(),
                    test_id: test_id.as_deref(),
                    all_regions,
                    aws,
                    gce,
                },
            )
            .await
        }
        Command::Report { results_dir, site } => {
            report::report(&globals, results_dir.as_deref(), site.as_deref())
        }
        Command::Publish { run_dir } => publish::publish(&run_dir).await,
        Command::Janitor {
            older_than,
            yes,
            all_regions,
        } => janitor::janitor(older_than, yes, all_regions).await,
    }
}

/// Writes to stdout; a closed pipe (`qa-run plan x | head`) is not an error.
fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}
