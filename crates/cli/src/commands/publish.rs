//! `qa-run publish RUN_DIR`: publish a finished run's report to its plan's `publish:` targets
//! again, with the plan's secrets redacted as the run did. Each target that fails is printed
//! and the others still go.

use std::path::Path;

use qa_core::exit;

use crate::error::CliError;

/// Publishes the run in `run_dir` again.
pub(super) async fn publish(run_dir: &Path) -> Result<i32, CliError> {
    let report = qa_publish::load_report(run_dir).map_err(CliError::Report)?;
    let plan = qa_core::plan::load_file(Path::new(&report.plan_path))?;
    if plan.plan.publish.is_empty() {
        return Err(CliError::NoPublishTargets { plan: plan.path });
    }
    let redactor = qa_core::redact::Redactor::new(
        plan.plan
            .secrets
            .iter()
            .filter_map(|k| std::env::var(k).ok()),
    );
    let mut failed = 0;
    for t in &plan.plan.publish {
        let p = qa_publish::from_target_with_redactor(t, &plan.base_dir, redactor.clone());
        match p.publish(&report, run_dir).await {
            Ok(r) => println!("published to {}: {}", r.publisher, r.location),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::PublishIncomplete { failed });
    }
    Ok(exit::ALL_PASSED)
}
