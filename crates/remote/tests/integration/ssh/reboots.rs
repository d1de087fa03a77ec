//! Reboots: a new boot id after sshd comes back, a host that never returns, a step that reboots.

use std::time::Duration;

use qa_core::conformance::executor::RecordedOutput;
use qa_core::remote::{CommandSpec, RemoteError, RemoteExecutor};
use qa_testkit::{RebootBehaviour, TestSshd};
use tokio_util::sync::CancellationToken;

use super::executor;

#[tokio::test(flavor = "multi_thread")]
async fn reboot_waits_for_a_new_boot_id() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let before = exec.boot_id().await.unwrap();
    assert_eq!(before.0, host.boot_id());
    let after = exec.reboot(Duration::from_secs(30)).await.unwrap();
    assert_ne!(after, before);
    assert_eq!(after.0, host.boot_id());
    assert_eq!(host.reboots(), 1);
    // The executor is usable afterwards.
    assert_eq!(exec.boot_id().await.unwrap(), after);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_that_never_returns_is_a_reboot_timeout_saying_what_was_tried() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    host.set_reboot_behaviour(RebootBehaviour::NeverReturn);
    let (_wd, exec) = executor(&host);
    let old = exec.boot_id().await.unwrap();
    let err = exec.reboot(Duration::from_secs(3)).await.unwrap_err();
    match err {
        RemoteError::RebootTimeout {
            old_boot_id,
            tried,
            deadline,
            ..
        } => {
            assert_eq!(old_boot_id, old.0);
            assert_eq!(deadline, Duration::from_secs(3));
            assert!(tried.contains("attempts"), "{tried}");
            assert!(tried.contains("connection dropped: yes"), "{tried}");
            assert!(tried.contains("last error"), "{tried}");
        }
        other => panic!("expected RebootTimeout, got {other}"),
    }
    assert!(!host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn step_that_reboots_the_machine_is_followed_to_the_new_boot() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let old = host.boot_id();
    let spec = CommandSpec::new(format!(
        "echo going down; {}; sleep 30",
        host.reboot_command()
    ))
    .expect_reboot(true)
    .timeout(Duration::from_secs(60));
    let out = RecordedOutput::new();
    let info = exec
        .run(&spec, out.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert!(info.rebooted, "{info:?}");
    assert!(info.success(), "{info:?}");
    assert_ne!(host.boot_id(), old);
    assert!(
        out.notes().iter().any(|n| n.contains("back with boot id")),
        "{:?}",
        out.notes()
    );
}

/// A detached step that lives through a reboot (the harness's reboot keeps processes that left
/// sshd's tree, as a checkpointing test would resume) is reattached after it and reports the
/// real status, marked as rebooted.
#[tokio::test(flavor = "multi_thread")]
async fn detached_step_is_reattached_after_a_reboot() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let spec = CommandSpec::new("echo a; sleep 2; echo b; exit 3")
        .detached(true)
        .timeout(Duration::from_secs(60));
    let out = RecordedOutput::new();
    let old = host.boot_id();
    let run = exec.run(&spec, out.clone(), CancellationToken::new());
    let reboot = async {
        assert!(
            out.wait_for(
                qa_core::remote::OutputStream::Stdout,
                "a",
                Duration::from_secs(20)
            )
            .await
        );
        tokio::task::spawn_blocking({
            let request = host.reboot_command();
            move || {
                std::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(request)
                    .status()
                    .unwrap()
            }
        })
        .await
        .unwrap();
    };
    let (info, _) = tokio::join!(run, reboot);
    let info = info.unwrap();
    assert_eq!(info.code, Some(3), "{info:?}");
    assert!(info.rebooted, "{info:?}");
    assert_ne!(host.boot_id(), old);
    assert_eq!(out.text(qa_core::remote::OutputStream::Stdout), "a\nb\n");
}

/// A detached step declared `expect_reboot` whose machine really reboots (the job dies with it,
/// leaving no status) succeeds once the machine is back; without the declaration the same
/// thing is an error saying the machine rebooted under the step.
#[tokio::test(flavor = "multi_thread")]
async fn detached_step_lost_to_a_reboot() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    for expect_reboot in [true, false] {
        let (wd, exec) = executor(&host);
        let spec = CommandSpec::new("echo started; sleep 300")
            .detached(true)
            .expect_reboot(expect_reboot)
            .timeout(Duration::from_secs(120));
        let out = RecordedOutput::new();
        let run = exec.run(&spec, out.clone(), CancellationToken::new());
        let reboot = async {
            assert!(
                out.wait_for(
                    qa_core::remote::OutputStream::Stdout,
                    "started",
                    Duration::from_secs(20)
                )
                .await
            );
            let job = std::fs::read_dir(wd.path().join(".qa-run/jobs"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            let pgid: i32 = std::fs::read_to_string(job.join("pgid"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let h = &host;
            tokio::task::block_in_place(|| h.reboot());
            // What a real reboot does to every process.
            // SAFETY: kill(2) on the process group of this test's own job.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        };
        let (result, ()) = tokio::join!(run, reboot);
        if expect_reboot {
            let info = result.unwrap();
            assert!(info.success() && info.rebooted, "{info:?}");
        } else {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("rebooted under it"), "{err}");
        }
    }
}

/// A detached step declared `expect_reboot` whose script asks for the reboot at once: the
/// machine can go down before the launch has answered, which is the step doing what it said,
/// not a failed launch. Tried several times, as how far the launch got before sshd went is a race.
#[tokio::test(flavor = "multi_thread")]
async fn detached_step_that_reboots_at_once_is_followed_to_the_new_boot() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    for attempt in 0..5 {
        let (_wd, exec) = executor(&host);
        let old = host.boot_id();
        let spec = CommandSpec::new(host.reboot_command())
            .detached(true)
            .expect_reboot(true)
            .timeout(Duration::from_secs(60));
        let out = RecordedOutput::new();
        let info = exec
            .run(&spec, out.clone(), CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}\nnotes: {:?}", out.notes()));
        assert!(
            info.success() && info.rebooted,
            "attempt {attempt}: {info:?}"
        );
        assert_ne!(host.boot_id(), old, "attempt {attempt}");
        assert_eq!(host.reboots(), attempt + 1);
    }
}
