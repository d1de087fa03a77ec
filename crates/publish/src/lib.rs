//! qa-publish: the [`qa_core::ResultPublisher`] implementations — where a finished run's results
//! go so that people and CI systems can read them.
//!
//! - [`site`]: a static HTML site (index of runs, a page per run with logs, artifacts and an
//!   in-page recording player, a history grid per plan) that works from `file://`, any static
//!   server and GitHub Pages.
//! - [`junit`]: JUnit XML for CI systems.
//! - [`json`]: the report as JSON for programs.
//! - [`markdown`]: a summary for a CI job summary or a pull-request comment.
//! - [`git`]: the site, committed and pushed to a branch without losing concurrent runs.
//!
//! Every format goes through a [`Redactor`]: the common credential shapes are always masked,
//! and `with_redactor` on each publisher adds the plan's declared secrets. Everything a test
//! printed is escaped for the format it lands in.
//!
//! ```
//! use std::path::Path;
//! use qa_core::plan::PublishTarget;
//!
//! let target = PublishTarget::Junit { path: "junit.xml".into() };
//! let publisher = qa_publish::from_target(&target, Path::new("/tmp/results"));
//! assert_eq!(publisher.name(), "junit");
//! ```
#![warn(missing_docs)]

pub mod git;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod paths;
pub mod redaction;
pub mod site;
pub mod text;

mod fsutil;
#[cfg(test)]
mod testdata;

use std::path::Path;
use std::sync::Arc;

use qa_core::ResultPublisher;
use qa_core::plan::PublishTarget;
use qa_core::redact::Redactor;

pub use git::GitPublisher;
pub use json::JsonPublisher;
pub use junit::JunitPublisher;
pub use markdown::MarkdownPublisher;
pub use site::{SitePublisher, SiteSummary};

/// Reads `run_dir/report.json`, for publishing a finished run again without re-running it
/// (`qa-run publish RUN_DIR`).
pub fn load_report(run_dir: &Path) -> Result<qa_core::report::Report, qa_core::PublishError> {
    let path = run_dir.join("report.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        let mut err =
            qa_core::PublishError::new("report", format!("cannot read {}: {e}", path.display()));
        err.source = Some(Box::new(e));
        err
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let mut err = qa_core::PublishError::new(
            "report",
            format!("{} is not a qa-run report: {e}", path.display()),
        );
        err.source = Some(Box::new(e));
        err
    })
}

/// The branch a git target publishes to when the plan names none.
pub const DEFAULT_BRANCH: &str = "gh-pages";

/// The publisher for a plan's `publish:` entry. Relative paths (and relative git remotes that are
/// paths) are taken from `base_dir`. Only the common credential shapes are masked; see
/// [`from_target_with_redactor`] for a plan's declared secrets.
pub fn from_target(target: &PublishTarget, base_dir: &Path) -> Arc<dyn ResultPublisher> {
    from_target_with_redactor(target, base_dir, Redactor::default())
}

/// [`from_target`] with a redactor that knows the plan's secrets.
pub fn from_target_with_redactor(
    target: &PublishTarget,
    base_dir: &Path,
    redactor: Redactor,
) -> Arc<dyn ResultPublisher> {
    let at = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    match target {
        PublishTarget::Site { dir } => {
            Arc::new(SitePublisher::new(at(dir)).with_redactor(redactor))
        }
        PublishTarget::Junit { path } => {
            Arc::new(JunitPublisher::new(at(path)).with_redactor(redactor))
        }
        PublishTarget::Json { path } => {
            Arc::new(JsonPublisher::new(at(path)).with_redactor(redactor))
        }
        PublishTarget::Markdown { path } => {
            Arc::new(MarkdownPublisher::new(at(path)).with_redactor(redactor))
        }
        PublishTarget::Git { remote, branch } => {
            let branch = branch.clone().unwrap_or_else(|| DEFAULT_BRANCH.to_string());
            Arc::new(
                GitPublisher::new(git::resolve_remote(remote, base_dir), branch)
                    .with_redactor(redactor),
            )
        }
        other => Arc::new(UnknownTarget(format!("{other:?}"))),
    }
}

/// A target added to qa-core after this version of qa-publish: publishing to it fails, saying
/// so, rather than publishing nothing without a word.
#[derive(Debug)]
struct UnknownTarget(String);

#[async_trait::async_trait]
impl ResultPublisher for UnknownTarget {
    fn name(&self) -> &str {
        "unknown"
    }

    async fn publish(
        &self,
        _: &qa_core::report::Report,
        _: &Path,
    ) -> Result<qa_core::PublishReceipt, qa_core::PublishError> {
        Err(qa_core::PublishError::new(
            "unknown",
            format!(
                "this build of qa-publish cannot publish to {}; update qa-publish",
                self.0
            ),
        ))
    }
}
