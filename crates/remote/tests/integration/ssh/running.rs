//! Running commands: the conformance suite, keys, session reuse, timeouts, reconnects and
//! detached runs that survive sshd being killed.

use std::sync::Arc;
use std::time::Duration;

use qa_core::conformance::executor::{self, RecordedOutput};
use qa_core::remote::{CommandSpec, OutputStream, RemoteExecutor};
use qa_testkit::{ClientKeys, KeyKind, TestSshd};
use tokio_util::sync::CancellationToken;

use super::{executor, executor_for, logins, scratch};

fn spec(cmd: &str) -> CommandSpec {
    CommandSpec::new(cmd).timeout(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_executor_passes_the_conformance_suite() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let (_s, scratch) = scratch();
    executor::run_all(&exec, &scratch).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_stderr_with_every_key_type() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    for kind in KeyKind::ALL {
        let (_wd, exec) = executor_for(&host, host.target_with_key(kind), &host.known_hosts());
        let (info, out) =
            executor::run_recorded(&exec, &spec("echo out; echo err >&2; exit 42")).await;
        assert_eq!(info.code, Some(42), "{kind:?}: {info:?}");
        assert!(!info.success());
        assert_eq!(out.text(OutputStream::Stdout), "out\n", "{kind:?}");
        assert_eq!(out.text(OutputStream::Stderr), "err\n", "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_key_uses_the_passphrase_from_the_environment() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let keys = ClientKeys::shared();
    let var = "QA_TEST_SSH_KEY_PASSPHRASE_OK";
    // SAFETY: the variable name is unique to this test; nothing else reads or writes it.
    unsafe { std::env::set_var(var, &keys.passphrase) };
    let mut target = host.target();
    target.identity_file = Some(keys.encrypted_ed25519());
    target.passphrase_env = Some(var.into());
    let (_wd, exec) = executor_for(&host, target.clone(), &host.known_hosts());
    let (info, _) = executor::run_recorded(&exec, &spec("true")).await;
    assert!(info.success());

    // Without the variable the login fails, and the error says why.
    target.passphrase_env = Some("QA_TEST_SSH_KEY_PASSPHRASE_UNSET".into());
    let (_wd, exec) = executor_for(&host, target, &host.known_hosts());
    let err = exec
        .run(
            &spec("true"),
            RecordedOutput::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("QA_TEST_SSH_KEY_PASSPHRASE_UNSET is not set"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_session_carries_many_concurrent_commands() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let exec = Arc::new(exec);
    let before = logins(&host);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            let (info, out) =
                executor::run_recorded(exec.as_ref(), &spec(&format!("sleep 0.2; echo {i}"))).await;
            assert!(info.success(), "{info:?}");
            assert_eq!(out.text(OutputStream::Stdout), format!("{i}\n"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        logins(&host) - before,
        1,
        "every command must share one authenticated session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_leaves_no_remote_process() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let marker = format!("qa-ssh-timeout-{}", std::process::id());
    let mut s = spec(&format!(
        "sh -c 'sleep 300; : {marker}' & sh -c 'sleep 300; : {marker}'; wait"
    ));
    s.timeout = Some(Duration::from_secs(1));
    let out = RecordedOutput::new();
    let info = exec
        .run(&s, out.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert!(info.timed_out, "{info:?}");
    // Checked from outside the executor, on this machine's /proc.
    assert_eq!(TestSshd::processes_matching(&marker), Vec::<i32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn pty_sudo_env_and_workdir() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, exec) = executor(&host);
    let mut s = spec("test -t 1 && echo tty; echo \"$A|$B\"; pwd");
    s.pty = true;
    s.env.insert("A".into(), "it's".into());
    s.env.insert("B".into(), "$x y".into());
    s.workdir = Some("sub/dir".into());
    let (info, out) = executor::run_recorded(&exec, &s).await;
    assert!(info.success(), "{info:?}");
    let text = out.text(OutputStream::Stdout).replace('\r', "");
    assert_eq!(
        text,
        format!("tty\nit's|$x y\n{}/sub/dir\n", wd.path().display())
    );

    // `sudo -n` as root needs no password where sudo is installed; where it is not, the command
    // fails with the shell's "not found" status, which still proves sudo was asked for.
    let mut s = spec("id -u");
    s.sudo = true;
    let (info, out) = executor::run_recorded(&exec, &s).await;
    if info.success() {
        assert_eq!(out.text(OutputStream::Stdout), "0\n");
    } else {
        assert_eq!(
            info.code,
            Some(127),
            "{info:?} {}",
            out.text(OutputStream::Stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_sshd_restart() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let (info, _) = executor::run_recorded(&exec, &spec("true")).await;
    assert!(info.success());
    host.restart().unwrap();
    let (info, out) = executor::run_recorded(&exec, &spec("echo again")).await;
    assert!(info.success(), "{info:?}");
    assert_eq!(out.text(OutputStream::Stdout), "again\n");
    assert_eq!(logins(&host), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_run_survives_sshd_killed_mid_step() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let mut s = spec("echo before; echo e1 >&2; sleep 3; echo after; echo e2 >&2; exit 7");
    s.detached = true;
    let out = RecordedOutput::new();
    let run = exec.run(&s, out.clone(), CancellationToken::new());
    let chaos = async {
        assert!(
            out.wait_for(OutputStream::Stdout, "before", Duration::from_secs(20))
                .await
        );
        host.kill();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!host.is_running());
        host.restart().unwrap();
    };
    let (info, ()) = tokio::join!(run, chaos);
    let info = info.unwrap();
    assert_eq!(info.code, Some(7), "{info:?}");
    assert!(!info.rebooted);
    assert_eq!(
        out.text(OutputStream::Stdout),
        "before\nafter\n",
        "output resumes where it stopped, once"
    );
    assert_eq!(out.text(OutputStream::Stderr), "e1\ne2\n");
    assert!(
        out.notes().iter().any(|n| n.contains("reattach")),
        "{:?}",
        out.notes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_run_timeout_kills_its_process_group() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let marker = format!("qa-ssh-detached-timeout-{}", std::process::id());
    let mut s = spec(&format!(
        "sh -c 'sleep 300; : {marker}' & sh -c 'sleep 300; : {marker}'; wait"
    ));
    s.detached = true;
    s.timeout = Some(Duration::from_secs(1));
    let info = exec
        .run(&s, RecordedOutput::new(), CancellationToken::new())
        .await
        .unwrap();
    assert!(info.timed_out, "{info:?}");
    assert_eq!(TestSshd::processes_matching(&marker), Vec::<i32>::new());
}

/// A foreground step whose connection drops is an infrastructure error, and is not started a
/// second time behind the caller's back (the executor only retries what had not started).
#[tokio::test(flavor = "multi_thread")]
async fn dropped_foreground_step_is_an_error_and_runs_once() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, exec) = executor(&host);
    let out = RecordedOutput::new();
    let step = spec("echo x >> runs; echo started; sleep 30");
    let run = exec.run(&step, out.clone(), CancellationToken::new());
    let chaos = async {
        assert!(
            out.wait_for(OutputStream::Stdout, "started", Duration::from_secs(20))
                .await
        );
        host.restart().unwrap();
    };
    let (result, ()) = tokio::join!(run, chaos);
    let err = result.unwrap_err();
    assert!(
        matches!(err, qa_core::RemoteError::Disconnected { .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(wd.path().join("runs")).unwrap(),
        "x\n"
    );
    // And the executor works again afterwards.
    let (info, _) = executor::run_recorded(&exec, &spec("true")).await;
    assert!(info.success());
}

/// With no usable key file, the login goes through ssh-agent.
#[tokio::test(flavor = "multi_thread")]
async fn ssh_agent_is_the_fallback() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = ClientKeys::shared().private(KeyKind::Ecdsa);
    let st = std::process::Command::new("ssh-add")
        .arg("-q")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .status()
        .unwrap();
    assert!(st.success());
    // SAFETY: only this test's executor reads SSH_AUTH_SOCK; the other tests turn the agent off.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &sock) };
    let mut target = host.target();
    target.identity_file = Some(dir.path().join("no-such-key"));
    let (_wd, wd) = super::remote_workdir();
    let mut opts = super::options_for(&host, &host.known_hosts());
    opts.use_agent = true;
    let exec = qa_remote::ssh::SshExecutor::new(target, wd, opts);
    let (info, _) = executor::run_recorded(&exec, &spec("true")).await;
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(info.success());
    // The key sshd accepted is the agent's ECDSA key.
    let fp = String::from_utf8(
        std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&key)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    let log = host.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Accepted publickey") && l.contains(&fp)),
        "{log}"
    );
}

/// A detached run whose supervisor is killed (no exit status will ever come) is an error soon
/// after, not a wait until the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn detached_run_killed_without_status_is_an_error() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, exec) = executor(&host);
    let mut s = spec("echo started; sleep 300");
    s.detached = true;
    s.timeout = Some(Duration::from_secs(120));
    let out = RecordedOutput::new();
    let run = exec.run(&s, out.clone(), CancellationToken::new());
    let killer = async {
        assert!(
            out.wait_for(OutputStream::Stdout, "started", Duration::from_secs(20))
                .await
        );
        let jobs = wd.path().join(".qa-run/jobs");
        let job = std::fs::read_dir(&jobs)
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
        // SAFETY: kill(2) on the process group the test's own job created.
        assert_eq!(unsafe { libc::kill(-pgid, libc::SIGKILL) }, 0);
    };
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(run, killer);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("without an exit status"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "noticed before the step's timeout"
    );
}

/// The connector makes a connected executor for SSH machines and refuses others.
#[tokio::test(flavor = "multi_thread")]
async fn connector_connects_ssh_machines() {
    use qa_core::remote::Connector;
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, _) = executor(&host);
    let opts = super::options_for(&host, &host.known_hosts());
    let connector = qa_remote::ssh::SshConnector::new(opts);
    let mut machine = qa_core::Machine::new(
        "db-1",
        qa_core::BackendName::STATIC,
        qa_core::Access::Ssh(host.target()),
        wd.path().display().to_string(),
    )
    .in_role("db");
    let exec = connector.connect(&machine).await.unwrap();
    assert_eq!(logins(&host), 1, "connect logs in at once");
    let (info, out) = executor::run_recorded(exec.as_ref(), &spec("pwd")).await;
    assert!(info.success());
    assert_eq!(
        out.text(OutputStream::Stdout).trim(),
        wd.path().display().to_string()
    );
    machine.access = qa_core::Access::Local {
        root: wd.path().to_path_buf(),
    };
    assert!(matches!(
        connector.connect(&machine).await.unwrap_err(),
        qa_core::RemoteError::Unsupported { .. }
    ));
}

/// An executor dropped without being closed leaves its connection to the next executor the
/// connector makes for the same host (a host verified, then used by the run: one login); a
/// closed one does not.
#[tokio::test(flavor = "multi_thread")]
async fn the_next_executor_for_a_host_takes_the_connection_a_dropped_one_left() {
    use qa_core::remote::Connector;
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, _) = executor(&host);
    let opts = super::options_for(&host, &host.known_hosts());
    let connector = qa_remote::ssh::SshConnector::new(opts);
    let machine = qa_core::Machine::new(
        "db-1",
        qa_core::BackendName::STATIC,
        qa_core::Access::Ssh(host.target()),
        wd.path().display().to_string(),
    );
    let first = connector.connect(&machine).await.unwrap();
    assert!(
        executor::run_recorded(first.as_ref(), &spec("true"))
            .await
            .0
            .success()
    );
    drop(first);
    let second = connector.connect(&machine).await.unwrap();
    let (info, out) = executor::run_recorded(second.as_ref(), &spec("echo again")).await;
    assert!(info.success());
    assert_eq!(out.text(OutputStream::Stdout), "again\n");
    assert_eq!(logins(&host), 1, "the second executor did not log in again");

    second.close().await;
    drop(second);
    let third = connector.connect(&machine).await.unwrap();
    assert!(
        executor::run_recorded(third.as_ref(), &spec("true"))
            .await
            .0
            .success()
    );
    assert_eq!(
        logins(&host),
        2,
        "a closed executor's connection is not kept"
    );
}

/// The cheapest key exchange and the fastest cipher both ends offer: curve25519 and AES-GCM
/// against OpenSSH's defaults.
#[tokio::test(flavor = "multi_thread")]
async fn curve25519_and_aes_gcm_are_negotiated_with_openssh() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let (kex, cipher) = exec.negotiated().await.unwrap();
    assert!(kex.starts_with("curve25519-sha256"), "{kex}");
    assert_eq!(cipher, "aes128-gcm@openssh.com");
}

/// A bare command runs as it is: no step tag, the directory and environment it asks for, its
/// status; its timeout ends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_bare_command_runs_without_the_supervisor() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let cmd = CommandSpec::new("echo \"tag=$QA_RUN_STEP_TAG dir=$(pwd) a=$A\"; exit 3")
        .env("A", "b c")
        .workdir("/")
        .timeout(Duration::from_secs(30))
        .bare(true);
    let (info, out) = executor::run_recorded(&exec, &cmd).await;
    assert_eq!(info.code, Some(3), "{info:?}");
    assert_eq!(out.text(OutputStream::Stdout), "tag= dir=/ a=b c\n");
    assert!(out.notes().is_empty(), "{:?}", out.notes());

    let started = std::time::Instant::now();
    let cmd = CommandSpec::new("sleep 30")
        .timeout(Duration::from_millis(500))
        .bare(true);
    let (info, _) = executor::run_recorded(&exec, &cmd).await;
    assert!(info.timed_out, "{info:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "{info:?}");
}

/// A step whose directory cannot be made never started: that is an error of the machine, not a
/// FAIL of the step (its status would otherwise pose as the command's).
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_that_cannot_be_made_is_an_error_not_a_status() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let cmd = spec("echo ran").workdir("/proc/qa-run-cannot-be-made");
    let out = RecordedOutput::new();
    let e = exec
        .run(&cmd, out.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("the command could not start: cannot make /proc/qa-run-cannot-be-made"),
        "{text}"
    );
    assert!(matches!(e, qa_core::RemoteError::Io { .. }), "{e:?}");
    assert_eq!(out.text(OutputStream::Stdout), "");
}

/// Cancelling a detached run kills its process group and returns promptly.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_detached_run_kills_it() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    let marker = format!("qa-ssh-detached-cancel-{}", std::process::id());
    let mut s = spec(&format!("echo started; sh -c 'sleep 300; : {marker}'"));
    s.detached = true;
    let out = RecordedOutput::new();
    let token = CancellationToken::new();
    let run = exec.run(&s, out.clone(), token.clone());
    let cancel = async {
        assert!(
            out.wait_for(OutputStream::Stdout, "started", Duration::from_secs(20))
                .await
        );
        assert!(!TestSshd::processes_matching(&marker).is_empty());
        token.cancel();
    };
    let (info, ()) = tokio::join!(run, cancel);
    let info = info.unwrap();
    assert!(info.cancelled, "{info:?}");
    assert_eq!(TestSshd::processes_matching(&marker), Vec::<i32>::new());
}
