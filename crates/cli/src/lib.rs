//! The `qa-run` command line. `main.rs` only calls [`main`], which parses the arguments, reads
//! the environment once ([`Settings`]), starts the runtime and hands the command to
//! [`dispatch`]; a failure comes back as a [`CliError`], which alone chooses the documented exit
//! code ([`qa_core::exit`]) and prints itself. The modules:
//!
//! - `args`: the command line and its `--help` text;
//! - `settings`: the `QA_RUN_*` variables;
//! - `wiring`: the engine with the backends every build has ([`default_engine`]);
//! - [`clouds`]: which clouds a command needs, and the cloud backends (chosen once, by feature);
//! - `inventory`: a plan's static hosts filled in from their OpenSSH config;
//! - `commands`: one file per subcommand;
//! - `error`, `signals`, `progress`, `summary`: failures, Ctrl-C, live progress and the
//!   end-of-run summary;
//! - `terminal`: names and messages from outside made safe to print.
#![warn(missing_docs)]
// The doc comments of arguments are their `--help` text, where `<run-id>` is a placeholder.
#![allow(rustdoc::invalid_html_tags)]

mod args;
pub mod clouds;
mod commands;
mod error;
mod inventory;
mod progress;
mod settings;
mod signals;
mod summary;
mod terminal;
mod wiring;

use std::process::ExitCode;

use clap::Parser;
use qa_core::exit;

pub use args::{Cli, Command, GraphFormat};
pub use commands::dispatch;
pub use error::CliError;
pub use inventory::{InventoryError, resolve_inventory};
pub use settings::Settings;
pub use wiring::{EngineSettings, default_engine};

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // `--help` and `--version` come here too, and are not errors.
            let code = if e.use_stderr() {
                exit::BAD_PLAN_OR_USAGE
            } else {
                exit::ALL_PASSED
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let settings = Settings::from_env();
    init_tracing(cli.verbose, settings.log_filter.as_deref());
    let outcome = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let outcome = rt.block_on(dispatch(cli, &settings));
            if let Err(CliError::Aborted { .. }) = outcome {
                // The run's tasks were left where they were. Dropping them kills the process
                // groups of local steps still running (the local executor's guard against
                // orphans); a blocking call under way, such as a command over SSH, gets a tenth
                // of a second and is then left behind, so the exit is still at once.
                rt.shutdown_timeout(std::time::Duration::from_millis(100));
            }
            outcome
        }
        Err(e) => Err(CliError::Runtime(e)),
    };
    match outcome {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Logs to stderr at the level `-v` asks for, unless `QA_RUN_LOG` holds a valid filter.
fn init_tracing(verbose: u8, log_filter: Option<&str>) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = log_filter
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
