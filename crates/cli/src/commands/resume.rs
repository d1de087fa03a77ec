//! `qa-run resume RUN_DIR`: continue a run from its journal with the inventory and clouds it
//! used; steps that passed are not run again.

use std::path::Path;

use qa_core::dag::RunCancel;
use qa_core::engine::RunOptions;

use super::Globals;
use super::run::execute;
use crate::clouds::{clouds_of_run, with_clouds};
use crate::error::CliError;
use crate::inventory::plan_inventory_of;
use crate::progress;
use crate::wiring::default_engine;

/// Resumes the run in `run_dir` (its parent holds the run directories).
pub(super) async fn resume(globals: &Globals, run_dir: &Path) -> Result<i32, CliError> {
    let sink = progress::sink(globals.json);
    let results = run_dir.parent().unwrap_or(Path::new("."));
    let inventory = plan_inventory_of(run_dir);
    let engine = default_engine(&globals.engine_settings(results, inventory), sink.clone());
    let engine = with_clouds(engine, &clouds_of_run(run_dir)).await?;
    let cancel = RunCancel::new();
    let opts = RunOptions::from_env(results).cancel(cancel.clone());
    let run = engine.prepare_resume(run_dir, opts).await?;
    execute(run, cancel, sink, globals.json).await
}
