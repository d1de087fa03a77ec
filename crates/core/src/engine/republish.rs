//! Publishing a finished run again: its `report.json`, exactly as written, to its plan's
//! `publish:` targets (after fixing a target, or to fill a new one).

use std::path::Path;

use super::builder::Engine;
use super::error::EngineError;
use super::layout::REPORT_FILE;
use super::run_lock::{RunDirUse, RunLock, check_run_dir};
use super::setup::RunOptions;
use crate::publish::PublishReceipt;
use crate::redact::Redactor;
use crate::report::Report;

impl Engine {
    /// Publishes the report of the finished run in `run_dir` to its plan's targets, masking the
    /// plan's secrets (given in `opts`, as for a run). Returns each target's receipt
    /// or why it failed; an `Err` says nothing was published: the report or the plan cannot be
    /// read, the plan has no targets, or no publisher factory is set; or another process works in
    /// `run_dir` ([`EngineError::RunInUse`]), such as the run itself, which publishes when it
    /// ends.
    pub async fn publish_again(
        &self,
        run_dir: &Path,
        opts: &RunOptions,
    ) -> Result<Vec<Result<PublishReceipt, String>>, EngineError> {
        check_run_dir(run_dir)?;
        let _lock = RunLock::acquire(run_dir, RunDirUse::Publish)?;
        let path = run_dir.join(REPORT_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            EngineError::Republish(format!("report: cannot read {}: {e}", path.display()))
        })?;
        let report: Report = serde_json::from_slice(&bytes).map_err(|e| {
            EngineError::Republish(format!(
                "report: {} is not a qa-run report: {e}",
                path.display()
            ))
        })?;
        let loaded = crate::plan::load_file_with(Path::new(&report.plan_path), &self.backends)?;
        if loaded.plan.publish.is_empty() {
            return Err(EngineError::Republish(format!(
                "plan {} has no `publish:` targets",
                loaded.path.display()
            )));
        }
        let Some(factory) = &self.publisher_factory else {
            return Err(EngineError::Republish(
                "no publisher factory is set: this program cannot publish".into(),
            ));
        };
        let redactor = Redactor::new(
            loaded
                .plan
                .secrets
                .iter()
                .filter_map(|k| opts.secret_value(k)),
        );
        let mut out = Vec::new();
        for t in &loaded.plan.publish {
            let published = match factory(t, &loaded.base_dir, &redactor) {
                Ok(p) => p
                    .publish(&report, run_dir)
                    .await
                    .map_err(|e| redactor.redact(&e.to_string())),
                Err(e) => Err(e),
            };
            out.push(published);
        }
        Ok(out)
    }
}
