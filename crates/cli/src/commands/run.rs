//! `qa-run run PLAN`: load the plan, add the clouds it needs, run it with progress and the
//! Ctrl-C handling, and print the summary. `execute` is shared with `resume`.

use std::path::Path;
use std::sync::Arc;

use qa_core::RunId;
use qa_core::dag::RunCancel;
use qa_core::engine::{EngineError, PreparedRun, RunOptions};

use super::Globals;
use crate::clouds::{clouds_of_plan, with_clouds};
use crate::error::CliError;
use crate::inventory::resolve_inventory;
use crate::progress::{self, Progress};
use crate::signals::watch_signals;
use crate::summary::print_summary;
use crate::wiring::default_engine;

/// Runs the plan file `plan`.
pub(super) async fn run(
    globals: &Globals,
    plan: &Path,
    run_id: Option<String>,
    test_id: Option<String>,
    concurrency: Option<usize>,
) -> Result<i32, CliError> {
    // The run id names the run's directory: a bad one is refused before anything is set up.
    let run_id = run_id
        .map(|id| RunId::parse(&id))
        .transpose()
        .map_err(EngineError::from)?;
    let loaded = qa_core::plan::load_file_with(plan, &qa_cloud::backends())?;
    let inventory =
        resolve_inventory(&loaded.plan.inventory, &loaded.base_dir).map_err(|source| {
            CliError::Inventory {
                plan: loaded.path.clone(),
                source,
            }
        })?;
    let sink = progress::sink(globals.json);
    let engine = default_engine(
        &globals.engine_settings(&globals.results, inventory),
        sink.clone(),
    );
    let engine = with_clouds(engine, &clouds_of_plan(&loaded.plan)).await?;
    let cancel = RunCancel::new();
    let mut opts = RunOptions::from_env(&globals.results).cancel(cancel.clone());
    if let Some(id) = run_id {
        opts = opts.run_id(id.0);
    }
    if let Some(id) = test_id {
        opts = opts.test_id(id);
    }
    if let Some(n) = concurrency {
        opts = opts.concurrency(n);
    }
    let run = engine.prepare(&loaded, opts).await?;
    execute(run, cancel, sink, globals.json).await
}

/// Executes a prepared run with progress on `sink`, stops it on Ctrl-C, and prints the summary
/// (unless `json`). Returns the exit code of the run's outcome.
pub(super) async fn execute(
    run: PreparedRun,
    cancel: RunCancel,
    sink: Arc<Progress>,
    json: bool,
) -> Result<i32, CliError> {
    sink.set_total(run.graph().len());
    if !json {
        sink.message(&format!("run directory: {}", run.run_dir.display()));
    }
    let mut signals = tokio::spawn(watch_signals(cancel, run.journal.clone(), sink.clone()));
    let outcome = tokio::select! {
        outcome = run.execute() => outcome,
        Ok(aborted) = &mut signals => {
            sink.finish();
            return Err(aborted);
        }
    };
    signals.abort();
    sink.finish();
    let summary = outcome?;
    if !json {
        print_summary(&summary);
    }
    Ok(summary.exit_code)
}
