//! The local executor against the executor conformance suite, and the process-tree guarantees
//! checked from outside the executor.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qa_core::conformance::executor::{self, RecordedOutput};
use qa_core::remote::{CommandSpec, Connector, OutputStream, RemoteError, RemoteExecutor};
use qa_core::types::{Access, Machine};
use qa_remote::local::{LocalConnector, LocalExecutor};
use tokio_util::sync::CancellationToken;

use crate::escapes::{Escape, leaves_no_survivor};

fn sandbox() -> (tempfile::TempDir, LocalExecutor, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sandbox");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    // A short grace keeps the kill tests quick; the default is exercised by the suite below.
    (dir, LocalExecutor::new(&root), scratch)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_executor_passes_the_conformance_suite() {
    let (_dir, exec, scratch) = sandbox();
    executor::run_all(&exec, &scratch).await;
}

/// Pids of live (not zombie) processes whose command line contains `marker`, read from this
/// host's /proc directly rather than through the executor.
fn live_pids_with_marker(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread")]
async fn forked_children_of_a_timed_out_step_leave_no_process_behind() {
    let (_dir, exec, _scratch) = sandbox();
    let exec = exec.with_kill_grace(Duration::from_millis(200));
    let marker = format!("qa-remote-orphan-{}-{}", std::process::id(), rand_suffix());
    // Three generations: a background subshell that itself backgrounds a sleeper, one that
    // ignores SIGTERM, and a foreground wait. All must be gone when run returns.
    let command = format!(
        "/bin/sh -c '/bin/sh -c \"sleep 600; : {marker}\" & sleep 600; : {marker}' & \
         /bin/sh -c 'trap \"\" TERM; sleep 600; : {marker}' & \
         echo started; wait"
    );
    let spec = CommandSpec::new(command).timeout(Duration::from_secs(2));
    let out = RecordedOutput::new();
    let info = exec
        .run(&spec, out.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert!(info.timed_out, "{info:?}");
    assert_eq!(out.text(OutputStream::Stdout), "started\n");
    assert_eq!(
        live_pids_with_marker(&marker),
        Vec::<u32>::new(),
        "processes survived the timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_step_leaves_no_process_behind() {
    let (_dir, exec, _scratch) = sandbox();
    let marker = format!("qa-remote-cancel-{}-{}", std::process::id(), rand_suffix());
    let command = format!("/bin/sh -c 'sleep 600; : {marker}' & echo started; wait");
    let spec = CommandSpec::new(command).timeout(Duration::from_secs(600));
    let out = RecordedOutput::new();
    let token = CancellationToken::new();
    let run = exec.run(&spec, out.clone(), token.clone());
    let control = async {
        assert!(
            out.wait_for(OutputStream::Stdout, "started", Duration::from_secs(60))
                .await
        );
        let before = live_pids_with_marker(&marker);
        token.cancel();
        before
    };
    let (info, before) = tokio::join!(run, control);
    let info = info.unwrap();
    assert!(
        !before.is_empty(),
        "the marked child was not found while it ran"
    );
    assert!(info.cancelled && !info.timed_out, "{info:?}");
    assert_eq!(
        live_pids_with_marker(&marker),
        Vec::<u32>::new(),
        "processes survived cancellation"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_running_command_kills_its_process_group() {
    let (_dir, exec, _scratch) = sandbox();
    let marker = format!("qa-remote-drop-{}-{}", std::process::id(), rand_suffix());
    let command = format!("/bin/sh -c 'sleep 600; : {marker}' & echo started; wait");
    let spec = CommandSpec::new(command);
    let out = RecordedOutput::new();
    {
        let run = exec.run(&spec, out.clone(), CancellationToken::new());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("the command ended by itself: {r:?}"),
            seen = out.wait_for(OutputStream::Stdout, "started", Duration::from_secs(60)) => assert!(seen),
        }
        assert!(
            !live_pids_with_marker(&marker).is_empty(),
            "the marked child was not found while it ran"
        );
    }
    // SIGKILL is delivered asynchronously and nobody waits for the killed processes here, so
    // poll until they are gone (bounded; the assertion below reports what survived).
    let mut left = live_pids_with_marker(&marker);
    for _ in 0..500 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        left = live_pids_with_marker(&marker);
    }
    assert_eq!(
        left,
        Vec::<u32>::new(),
        "processes survived dropping the run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn setsid_child_does_not_outlive_its_step() {
    let (_dir, exec, _scratch) = sandbox();
    leaves_no_survivor(&exec, Escape::Setsid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn double_forked_child_does_not_outlive_its_step() {
    let (_dir, exec, _scratch) = sandbox();
    leaves_no_survivor(&exec, Escape::DoubleFork).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nohup_child_does_not_outlive_its_step() {
    let (_dir, exec, _scratch) = sandbox();
    leaves_no_survivor(&exec, Escape::Nohup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn child_that_left_the_sandbox_does_not_outlive_its_step() {
    let (_dir, exec, _scratch) = sandbox();
    leaves_no_survivor(&exec, Escape::CdAway).await;
}

/// Regression: a step whose shell exited 0 while a background child held its stdout open was
/// reported as TIMEOUT after the whole timeout.
#[tokio::test(flavor = "multi_thread")]
async fn child_holding_the_output_does_not_keep_its_step_running() {
    let (_dir, exec, _scratch) = sandbox();
    leaves_no_survivor(&exec, Escape::HeldPipe).await;
}

/// Dropping `run` (a caller's own timeout) also ends a child that left the process group.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_running_command_ends_children_that_left_its_group() {
    let (_dir, exec, _scratch) = sandbox();
    let marker = format!(
        "qa-remote-drop-setsid-{}-{}",
        std::process::id(),
        rand_suffix()
    );
    let spec =
        CommandSpec::new("setsid sleep 600 > /dev/null 2>&1 < /dev/null & echo started; wait")
            .env("QA_TEST_DROP_MARK", marker.clone());
    let out = RecordedOutput::new();
    {
        let run = exec.run(&spec, out.clone(), CancellationToken::new());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("the command ended by itself: {r:?}"),
            seen = out.wait_for(OutputStream::Stdout, "started", Duration::from_secs(60)) => assert!(seen),
        }
    }
    let mut left = qa_testkit::procs::processes_with_env("QA_TEST_DROP_MARK", &marker);
    // SIGKILL lands asynchronously and nobody waits for the killed processes here: poll, bounded.
    for _ in 0..500 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        left = qa_testkit::procs::processes_with_env("QA_TEST_DROP_MARK", &marker);
    }
    assert_eq!(
        left,
        Vec::<String>::new(),
        "processes survived dropping the run"
    );
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn puts_and_collects_refuse_paths_leaving_the_sandbox() {
    let (dir, exec, scratch) = sandbox();
    let file = scratch.join("f");
    std::fs::write(&file, "x").unwrap();
    let err = exec.put_file(&file, "../outside", None).await.unwrap_err();
    assert!(matches!(err, RemoteError::PathEscape { .. }), "{err:?}");
    assert!(!dir.path().join("outside").exists());
    let err = exec
        .get_file("a/../../outside", &scratch.join("g"))
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::PathEscape { .. }), "{err:?}");
}

#[tokio::test]
async fn collect_takes_files_under_a_matched_directory_and_links_inside() {
    let (_dir, exec, scratch) = sandbox();
    let root = exec.root().to_path_buf();
    std::fs::create_dir_all(root.join("out/deep")).unwrap();
    std::fs::write(root.join("out/deep/x.txt"), "x").unwrap();
    std::fs::write(root.join("inside.txt"), "inside").unwrap();
    std::os::unix::fs::symlink(root.join("inside.txt"), root.join("out/link.txt")).unwrap();
    let dest = scratch.join("dest");
    let got = exec.collect(&["out".to_string()], &dest).await.unwrap();
    assert_eq!(
        got,
        vec![dest.join("out/deep/x.txt"), dest.join("out/link.txt")]
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("out/link.txt")).unwrap(),
        "inside"
    );
    assert!(
        !std::fs::symlink_metadata(dest.join("out/link.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn connector_binds_executors_to_the_machine_sandbox() {
    let (_dir, exec, _scratch) = sandbox();
    let root = exec.root().to_path_buf();
    let machine = Machine::new(
        "box",
        qa_core::BackendName::LOCAL,
        Access::Local { root: root.clone() },
        root.display().to_string(),
    );
    let exec: Arc<dyn RemoteExecutor> = LocalConnector::new().connect(&machine).await.unwrap();
    let (info, out) = executor::run_recorded(exec.as_ref(), &CommandSpec::new("pwd -P")).await;
    assert!(info.success());
    assert_eq!(
        Path::new(out.text(OutputStream::Stdout).trim()),
        root.canonicalize().unwrap()
    );

    std::fs::remove_dir_all(&root).unwrap();
    let err = LocalConnector::new().connect(&machine).await.unwrap_err();
    assert!(matches!(err, RemoteError::Connect { .. }), "{err:?}");
}
