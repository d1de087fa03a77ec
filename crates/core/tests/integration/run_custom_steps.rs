//! Custom step types are held to the same rules as commands: the engine times them out at the
//! step's limit and interrupts them when the run is cancelled, whether or not they watch their
//! cancellation token.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qa_core::conformance::fakes::FakeProvisioner;
use qa_core::dag::RunCancel;
use qa_core::engine::{Engine, RunOptions, RunSummary, StepContext, StepType};
use qa_core::{ExitInfo, RemoteError, Verdict};

use crate::LocalDirs;

/// Sleeps far longer than any test waits, and ignores its cancellation token.
struct Stubborn;

#[async_trait]
impl StepType for Stubborn {
    async fn run(&self, _ctx: StepContext) -> Result<ExitInfo, RemoteError> {
        tokio::time::sleep(Duration::from_secs(600)).await;
        unreachable!("the engine stops waiting long before")
    }
}

fn plan(dir: &Path, timeout: &str) -> std::path::PathBuf {
    let path = dir.join("custom.yaml");
    std::fs::write(
        &path,
        format!(
            "name: custom
machines:
  - name: box
steps:
  - name: slow
    uses: stubborn
    timeout: {timeout}
  - name: after
    command: echo after
    depends-on: [slow]
"
        ),
    )
    .unwrap();
    path
}

async fn run(dir: &Path, timeout: &str, cancel: RunCancel) -> RunSummary {
    let engine = Engine::new()
        .provisioner(Arc::new(
            FakeProvisioner::new().with_workdir_root(dir.join("machines")),
        ))
        .connector(Arc::new(LocalDirs))
        .step_type("stubborn", Arc::new(Stubborn));
    let loaded = crate::load_file(&plan(dir, timeout)).unwrap();
    let mut options = RunOptions::new(dir.join("results"));
    options.cancel = cancel;
    engine
        .prepare(&loaded, options)
        .await
        .unwrap()
        .execute()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_step_that_overruns_its_timeout_is_timeout_naming_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let summary = run(dir.path(), "1s", RunCancel::new()).await;
    let slow = &summary.report.steps[0];
    assert_eq!(slow.verdict, Verdict::Timeout, "{slow:?}");
    assert!(
        slow.message
            .as_deref()
            .unwrap_or("")
            .contains("its limit is 1s"),
        "{slow:?}"
    );
    assert_eq!(summary.report.steps[1].verdict, Verdict::Skipped);
    // The step would sleep ten minutes; the run ended at its limit plus the grace.
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_interrupts_a_custom_step() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = RunCancel::new();
    let soft = cancel.soft.clone();
    // Cancel once the step has started: its log exists.
    let log = dir.path().join("results");
    tokio::spawn(async move {
        loop {
            let started = std::fs::read_dir(&log)
                .into_iter()
                .flatten()
                .flatten()
                .any(|run| run.path().join("logs/box/slow.log").exists());
            if started {
                soft.cancel();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let summary = run(dir.path(), "10m", cancel).await;
    assert_eq!(summary.report.steps[0].verdict, Verdict::Interrupted);
    assert_eq!(summary.exit_code, qa_core::exit::INTERRUPTED);
}
