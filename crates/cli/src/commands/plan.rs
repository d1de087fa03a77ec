//! `qa-run plan PLAN`: expand a plan into its task graph, write the state and rendered
//! artefacts of a run that never starts, and print the graph as text, dot or JSON. Its journal
//! says `planned`: `qa-run resume` refuses the directory, since nothing ran.

use std::path::Path;
use std::sync::Arc;

use qa_core::engine::RunOptions;
use qa_core::exit;

use super::{Globals, print_stdout};
use crate::args::GraphFormat;
use crate::error::CliError;
use crate::terminal::{safe, safe_lines};
use crate::wiring::default_engine;

/// Prints the task graph of the plan file `plan` in `format`.
pub(super) async fn plan(
    globals: &Globals,
    plan: &Path,
    format: GraphFormat,
) -> Result<i32, CliError> {
    let loaded = qa_core::plan::load_file_with(plan, &qa_cloud::backends())?;
    let engine = default_engine(
        &globals.engine_settings(&globals.results, loaded.plan.inventory.clone()),
        Arc::new(qa_core::events::NoEvents),
    );
    let (run_dir, graph) = engine
        .plan_only(&loaded, RunOptions::from_env(&globals.results))
        .await?;
    let out = match format {
        GraphFormat::Text => qa_core::stages::render_text(&graph),
        GraphFormat::Dot => graph.to_dot(),
        GraphFormat::Json => {
            serde_json::to_string_pretty(&qa_core::stages::render_json(&graph)).unwrap_or_default()
                + "\n"
        }
    };
    // Task ids carry the plan's step and machine names.
    print_stdout(&safe_lines(&out));
    eprintln!(
        "{} tasks; state and rendered artefacts in {} (a plan only: it cannot be resumed; `qa-run run` runs it)",
        graph.len(),
        safe(&run_dir.display().to_string())
    );
    Ok(exit::ALL_PASSED)
}
