//! `qa-run publish RUN_DIR`: publish a finished run's report to its plan's `publish:` targets
//! again, with the plan's secrets redacted as the run did ([`qa_core::engine::Engine::publish_again`]).
//! Each target that fails is printed and the others still go.

use std::path::Path;

use qa_core::engine::RunOptions;
use qa_core::exit;

use crate::error::CliError;
use crate::terminal::{safe, safe_lines};
use crate::wiring::{EngineSettings, default_engine};

/// Publishes the run in `run_dir` again.
pub(super) async fn publish(run_dir: &Path) -> Result<i32, CliError> {
    let engine = default_engine(
        &EngineSettings::default(),
        std::sync::Arc::new(qa_core::events::NoEvents),
    );
    let mut failed = 0;
    for published in engine
        .publish_again(
            run_dir,
            &RunOptions::from_env(run_dir.parent().unwrap_or(run_dir)),
        )
        .await?
    {
        match published {
            Ok(r) => println!("published to {}: {}", safe(&r.publisher), safe(&r.location)),
            Err(e) => {
                eprintln!("error: {}", safe_lines(&e.to_string()));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::PublishIncomplete { failed });
    }
    Ok(exit::ALL_PASSED)
}
