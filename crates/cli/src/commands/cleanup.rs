//! `qa-run cleanup [RUN_DIR] [--test-id ID]`: destroy what a run's journal lists and cancel its
//! reservations, and sweep every linked backend for resources tagged with a test id. Each thing
//! removed goes to stdout and each thing left to stderr; while a run directory's resources go,
//! stderr says how many of them are gone (`removed 120 of 10000`), every few seconds.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qa_core::SweepScope;
use qa_core::TestId;
use qa_core::engine::CleanupProgress;
use qa_core::exit;

use super::Globals;
use crate::clouds::{Clouds, clouds_of_run, with_clouds};
use crate::error::CliError;
use crate::inventory::plan_inventory_of;
use crate::terminal::safe;
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
    /// With a test id: sweep Compute Engine too.
    pub gce: bool,
}

/// Cleans up after a run (its directory, its test id, or both).
pub(super) async fn cleanup(globals: &Globals, targets: Targets<'_>) -> Result<i32, CliError> {
    let Targets {
        run_dir,
        test_id,
        all_regions,
        aws,
        gce,
    } = targets;
    if run_dir.is_none() && test_id.is_none() {
        return Err(CliError::NothingToCleanUp);
    }
    let inventory = run_dir.map(plan_inventory_of).unwrap_or_default();
    let engine = default_engine(
        &globals.engine_settings(&globals.results, inventory),
        Arc::new(qa_core::events::NoEvents),
    );
    // A run directory asks the clouds it used; a sweep by test id only those named (--aws,
    // --gce), or every one with --all-regions.
    let named: Vec<&str> = [("aws", aws), ("gce", gce)]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
    let clouds = match (run_dir, test_id) {
        (_, Some(_)) if all_regions => Clouds::all(),
        (_, Some(_)) if !named.is_empty() => Clouds::named(&named).map_err(CliError::Cloud)?,
        (Some(dir), _) => clouds_of_run(dir),
        (None, _) => Clouds::none(),
    };
    let engine = with_clouds(engine, &clouds).await?;
    let mut remaining = 0;
    if let Some(dir) = run_dir {
        let progress = ProgressLines::new(PROGRESS_EVERY);
        let r = engine
            .cleanup_with_progress(dir, &|p| progress.show(p))
            .await?;
        for d in &r.destroyed {
            println!("destroyed {}", safe(d));
        }
        for d in &r.remaining {
            eprintln!("left: {}", safe(d));
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
        swept
            .swept
            .iter()
            .for_each(|l| println!("swept {}", safe(l)));
        for (b, n) in &swept.cancelled {
            println!("cancelled {n} reservation(s) on {b}");
        }
        for e in &swept.remaining {
            eprintln!("left: {}", safe(e));
        }
        remaining += swept.remaining.len();
    }
    if remaining > 0 {
        return Err(CliError::CleanupIncomplete { remaining });
    }
    Ok(exit::ALL_PASSED)
}

/// How often a line of progress is printed while resources go.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Prints a cleanup's progress on stderr: a line when it starts, then one every `every` at most,
/// and one when the last resource is gone.
struct ProgressLines {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl ProgressLines {
    fn new(every: Duration) -> Self {
        ProgressLines {
            every,
            last: Mutex::new(None),
        }
    }

    fn show(&self, p: CleanupProgress) {
        if let Some(line) = self.line(p.removed, p.total, Instant::now()) {
            eprintln!("{line}");
        }
    }

    /// The line to print at `now` when `removed` of `total` are gone, if one is due.
    fn line(&self, removed: usize, total: usize, now: Instant) -> Option<String> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if removed == 0 {
            *last = Some(now);
            return Some(format!("removing {total} resource(s) the journal lists"));
        }
        let due = last.is_none_or(|t| now.duration_since(t) >= self.every);
        if removed < total && !due {
            return None;
        }
        *last = Some(now);
        Some(format!(
            "removed {removed} of {total} ({}%)",
            removed * 100 / total.max(1)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_printed_at_the_start_every_few_seconds_and_at_the_end() {
        let lines = ProgressLines::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(
            lines.line(0, 10_000, t0).as_deref(),
            Some("removing 10000 resource(s) the journal lists")
        );
        assert_eq!(lines.line(1, 10_000, t0 + s(1)), None);
        assert_eq!(
            lines.line(120, 10_000, t0 + s(2)).as_deref(),
            Some("removed 120 of 10000 (1%)")
        );
        assert_eq!(lines.line(121, 10_000, t0 + s(3)), None);
        assert_eq!(
            lines.line(10_000, 10_000, t0 + s(3)).as_deref(),
            Some("removed 10000 of 10000 (100%)")
        );
    }
}
