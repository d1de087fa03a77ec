//! Custom step types are held to the same rules as commands: the engine times them out at the
//! step's limit and interrupts them when the run is cancelled, whether or not they watch their
//! cancellation token.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qa_core::Verdict;
use qa_core::conformance::fakes::FakeProvisioner;
use qa_core::dag::RunCancel;
use qa_core::engine::{Engine, RunOptions, RunSummary, StepContext, StepOutcome, StepType};

use crate::LocalDirs;

/// Sleeps far longer than any test waits, and ignores its cancellation token.
struct Stubborn;

#[async_trait]
impl StepType for Stubborn {
    async fn run(&self, _ctx: StepContext) -> StepOutcome {
        tokio::time::sleep(Duration::from_secs(600)).await;
        unreachable!("the engine stops waiting long before")
    }
}

/// Says what its `with.say` asks (`fail`, `flaky`: an infrastructure error on the first
/// attempt only, `fatal`), counting its attempts.
#[derive(Default)]
struct Says(std::sync::Mutex<std::collections::BTreeMap<String, u32>>);

#[async_trait]
impl StepType for Says {
    async fn run(&self, ctx: StepContext) -> StepOutcome {
        let attempt = {
            let mut g = self.0.lock().unwrap();
            let n = g.entry(ctx.step.name.clone()).or_default();
            *n += 1;
            *n
        };
        match ctx.step.with["say"].as_str().unwrap() {
            "fail" => StepOutcome::fail("parameter `size` is not a size"),
            "flaky" if attempt == 1 => StepOutcome::error("the service was busy"),
            "fatal" => StepOutcome::fatal("credentials refused"),
            _ => StepOutcome::pass(),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_types_own_failure_is_fail_with_its_reason_and_only_retryable_errors_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("says.yaml");
    std::fs::write(
        &path,
        "name: says
machines: [{name: box}]
defaults: {retries: 2}
steps:
  - {name: fails, uses: says, with: {say: fail}}
  - {name: flaky, uses: says, with: {say: flaky}}
  - {name: fatal, uses: says, with: {say: fatal}}
",
    )
    .unwrap();
    let says = Arc::new(Says::default());
    let engine = Engine::new()
        .provisioner(Arc::new(
            FakeProvisioner::new().with_workdir_root(dir.path().join("machines")),
        ))
        .connector(Arc::new(LocalDirs))
        .retry_backoff(Duration::from_millis(10))
        .step_type("says", says.clone());
    let summary = engine
        .prepare(
            &crate::load_file(&path).unwrap(),
            RunOptions::new(dir.path().join("results")),
        )
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    let step = |name: &str| {
        summary
            .report
            .steps
            .iter()
            .find(|s| s.step == name)
            .unwrap()
            .clone()
    };
    let fails = step("fails");
    assert_eq!(
        (fails.verdict, fails.attempts, fails.message.as_deref()),
        (Verdict::Fail, 1, Some("parameter `size` is not a size"))
    );
    let flaky = step("flaky");
    assert_eq!((flaky.verdict, flaky.attempts), (Verdict::Pass, 2));
    let fatal = step("fatal");
    assert_eq!(
        (fatal.verdict, fatal.attempts, fatal.message.as_deref()),
        (Verdict::Error, 1, Some("credentials refused"))
    );
    let attempts = says.0.lock().unwrap().clone();
    assert_eq!(attempts["fails"], 1);
    assert_eq!(attempts["flaky"], 2);
    assert_eq!(attempts["fatal"], 1);
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
    let options = RunOptions::new(dir.join("results")).cancel(cancel);
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
