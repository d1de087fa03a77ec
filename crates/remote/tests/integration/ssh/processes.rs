//! Processes that try to outlive their step on an SSH host: the same escape forms as locally,
//! ended by the supervisor and the kill script on the host.

use std::time::Duration;

use qa_core::conformance::executor::RecordedOutput;
use qa_core::remote::{CommandSpec, OutputStream, RemoteExecutor};
use qa_testkit::TestSshd;
use qa_testkit::procs::processes_with_env;
use tokio_util::sync::CancellationToken;

use super::executor;
use crate::escapes::{Escape, leaves_no_survivor};

async fn check(form: Escape) {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    leaves_no_survivor(&exec, form).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn setsid_child_does_not_outlive_its_remote_step() {
    check(Escape::Setsid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn double_forked_child_does_not_outlive_its_remote_step() {
    check(Escape::DoubleFork).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nohup_child_does_not_outlive_its_remote_step() {
    check(Escape::Nohup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn child_that_left_the_workdir_does_not_outlive_its_remote_step() {
    check(Escape::CdAway).await;
}

/// Regression: a remote step whose shell exited 0 while a background child held its stdout was
/// reported as TIMEOUT after the whole timeout.
#[tokio::test(flavor = "multi_thread")]
async fn child_holding_the_output_does_not_keep_its_remote_step_running() {
    check(Escape::HeldPipe).await;
}

/// A detached run's supervisor ends what the command left running before it writes the status,
/// and the note reaches the log, not the step's stderr.
#[tokio::test(flavor = "multi_thread")]
async fn detached_run_ends_what_its_command_left_running() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let mark = format!("detached-{}", std::process::id());
    let spec =
        CommandSpec::new("setsid sleep 600 > /dev/null 2>&1 < /dev/null & echo done; exit 3")
            .timeout(Duration::from_secs(600))
            .detached(true)
            .env("QA_TEST_DETACHED_MARK", mark.clone());
    let out = RecordedOutput::new();
    let info = exec
        .run(&spec, out.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(info.code, Some(3), "{info:?}");
    assert_eq!(out.text(OutputStream::Stdout), "done\n");
    assert_eq!(out.text(OutputStream::Stderr), "");
    assert!(
        out.notes()
            .iter()
            .any(|n| n.contains("ended 1 process") && n.contains("sleep 600")),
        "{:?}",
        out.notes()
    );
    assert_eq!(
        processes_with_env("QA_TEST_DETACHED_MARK", &mark),
        Vec::<String>::new()
    );
}
