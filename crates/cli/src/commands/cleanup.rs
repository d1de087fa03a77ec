//! `qa-run cleanup [RUN_DIR] [--test-id ID]`: destroy what a run's journal lists and cancel its
//! reservations, and sweep every linked backend for resources tagged with a test id. Each thing
//! removed goes to stdout and each thing left to stderr as it happens.

use std::path::Path;
use std::sync::Arc;

use qa_core::SweepScope;
use qa_core::TestId;
use qa_core::exit;

use super::Globals;
use crate::clouds::{Clouds, clouds_of_run, with_clouds};
use crate::error::CliError;
use crate::inventory::plan_inventory_of;
use crate::wiring::default_engine;

/// What to clean up.
pub(super) struct Targets<'a> {
    /// A run directory, whose journal says what the run made.
    pub run_dir: Option<&'a Path>,
    /// A test id to sweep by tag.
    pub test_id: Option<&'a str>,
    /// With a test id: sweep and cancel in every region.
    pub all_regions: bool,
    /// With a test id: sweep AWS too.
    pub aws: bool,
}

/// Cleans up after a run (its directory, its test id, or both).
pub(super) async fn cleanup(globals: &Globals, targets: Targets<'_>) -> Result<i32, CliError> {
    let Targets {
        run_dir,
        test_id,
        all_regions,
        aws,
    } = targets;
    if run_dir.is_none() && test_id.is_none() {
        return Err(CliError::NothingToCleanUp);
    }
    let inventory = run_dir.map(plan_inventory_of).unwrap_or_default();
    let engine = default_engine(
        &globals.engine_settings(&globals.results, inventory),
        Arc::new(qa_core::events::NoEvents),
    );
    // A run directory asks the clouds it used; a sweep by test id only those named (--aws).
    let clouds = match (run_dir, test_id) {
        (_, Some(_)) if aws || all_regions => Clouds::all(),
        (Some(dir), _) => clouds_of_run(dir),
        (None, _) => Clouds::none(),
    };
    let engine = with_clouds(engine, &clouds).await?;
    let mut remaining = 0;
    if let Some(dir) = run_dir {
        let r = engine.cleanup(dir).await?;
        for d in &r.destroyed {
            println!("destroyed {d}");
        }
        for d in &r.remaining {
            eprintln!("left: {d}");
        }
        remaining += r.remaining.len();
        if r.destroyed.is_empty() && r.remaining.is_empty() {
            println!("nothing left to clean up in {}", dir.display());
        }
    }
    if let Some(id) = test_id {
        let scope = if all_regions {
            SweepScope::AllRegions
        } else {
            SweepScope::Configured
        };
        let swept = engine.sweep_test_id(&TestId(id.to_string()), scope).await;
        swept.swept.iter().for_each(|l| println!("swept {l}"));
        for (b, n) in &swept.cancelled {
            println!("cancelled {n} reservation(s) on {b}");
        }
        for e in &swept.remaining {
            eprintln!("left: {e}");
        }
        remaining += swept.remaining.len();
    }
    if remaining > 0 {
        return Err(CliError::CleanupIncomplete { remaining });
    }
    Ok(exit::ALL_PASSED)
}
