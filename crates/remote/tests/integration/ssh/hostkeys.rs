//! Host keys: unknown and changed keys are refused, trust on first use records then enforces.

use qa_core::HostKeyPolicy;
use qa_core::remote::{CommandSpec, RemoteError, RemoteExecutor};
use qa_remote::ssh::SshExecutor;
use qa_testkit::TestSshd;

use super::{executor, options_for, remote_workdir, scratch};

#[tokio::test(flavor = "multi_thread")]
async fn changed_host_key_is_an_error_naming_both_fingerprints() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_wd, exec) = executor(&host);
    exec.connect().await.unwrap();
    exec.close().await;
    let old = host.host_key_fingerprint();
    host.replace_host_key().unwrap();
    let new = host.host_key_fingerprint();
    assert_ne!(old, new);
    let err = exec.boot_id().await.unwrap_err();
    match &err {
        RemoteError::HostKeyChanged {
            host: h,
            known_fingerprint,
            presented_fingerprint,
            known_hosts,
        } => {
            assert_eq!(h, &format!("[127.0.0.1]:{}", host.port()));
            assert_eq!(known_fingerprint, &old);
            assert_eq!(presented_fingerprint, &new);
            assert_eq!(known_hosts, &host.known_hosts().display().to_string());
        }
        other => panic!("expected HostKeyChanged, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_is_refused_under_strict() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_s, dir) = scratch();
    let empty = dir.join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let (_wd, wd) = remote_workdir();
    let exec = SshExecutor::new(host.target(), wd, options_for(&host, &empty));
    let err = exec.connect().await.unwrap_err();
    match err {
        RemoteError::HostKeyUnknown { fingerprint, .. } => {
            assert_eq!(fingerprint, host.host_key_fingerprint())
        }
        other => panic!("expected HostKeyUnknown, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_first_use_records_the_key_then_enforces_it() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_s, dir) = scratch();
    let run_known = dir.join("run/known_hosts");
    let mut target = host.target();
    target.host_keys = HostKeyPolicy::TrustFirstUse {
        known_hosts: run_known.clone(),
    };
    let (_wd, wd) = remote_workdir();
    // The Strict list is empty on purpose: TOFU must not need it.
    let mut opts = options_for(&host, &dir.join("none"));
    opts.known_hosts.clear();
    let exec = SshExecutor::new(target.clone(), wd.clone(), opts.clone());
    exec.connect().await.unwrap();
    let text = std::fs::read_to_string(&run_known).unwrap();
    assert_eq!(
        text,
        host.known_hosts_line(),
        "the first key is recorded as OpenSSH would write it"
    );
    // A second executor of the same run matches the record and adds nothing.
    let again = SshExecutor::new(target.clone(), wd.clone(), opts.clone());
    again.connect().await.unwrap();
    assert_eq!(std::fs::read_to_string(&run_known).unwrap(), text);
    // A different key later in the run is refused.
    host.replace_host_key().unwrap();
    let third = SshExecutor::new(target, wd, opts);
    assert!(matches!(
        third.connect().await.unwrap_err(),
        RemoteError::HostKeyChanged { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_connects_to_anything() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_s, dir) = scratch();
    let mut target = host.target();
    target.host_keys = HostKeyPolicy::Insecure;
    let (_wd, wd) = remote_workdir();
    let exec = SshExecutor::new(target, wd, options_for(&host, &dir.join("missing")));
    let spec = CommandSpec::new("true");
    let info = exec
        .run(
            &spec,
            std::sync::Arc::new(qa_core::remote::DiscardOutput),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(info.success());
}

/// Hashed known_hosts lines (`ssh-keygen -H`, or `HashKnownHosts yes`) are matched too, and a
/// changed key is still reported with the recorded fingerprint.
#[tokio::test(flavor = "multi_thread")]
async fn hashed_known_hosts_entries_are_understood() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (_s, dir) = scratch();
    let kh = dir.join("known_hosts");
    std::fs::copy(host.known_hosts(), &kh).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .arg("-q")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(st.status.success());
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(
        text.starts_with("|1|") && !text.contains("127.0.0.1"),
        "{text}"
    );
    let (_wd, wd) = remote_workdir();
    let exec = SshExecutor::new(host.target(), wd.clone(), options_for(&host, &kh));
    exec.connect().await.unwrap();
    let old = host.host_key_fingerprint();
    host.replace_host_key().unwrap();
    let exec = SshExecutor::new(host.target(), wd, options_for(&host, &kh));
    match exec.connect().await.unwrap_err() {
        RemoteError::HostKeyChanged {
            known_fingerprint, ..
        } => assert_eq!(known_fingerprint, old),
        other => panic!("expected HostKeyChanged, got {other}"),
    }
}

/// A server with several host keys: whichever type is on record is the one asked for (as
/// OpenSSH does), so a record of either key type verifies.
#[tokio::test(flavor = "multi_thread")]
async fn the_recorded_key_type_is_negotiated() {
    let Some(sshd) = qa_testkit::sshd_or_skip() else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let ecdsa = keys.path().join("host_ecdsa");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&ecdsa)
        .status()
        .unwrap();
    assert!(st.success());
    let host = TestSshd::start_with(
        &sshd,
        qa_testkit::SshdConfig {
            extra: vec![format!("HostKey {}", ecdsa.display())],
            ..Default::default()
        },
    )
    .unwrap();
    let (_s, dir) = scratch();
    let pubkey = std::fs::read_to_string(ecdsa.with_extension("pub")).unwrap();
    let mut parts = pubkey.split_whitespace();
    let ecdsa_line = format!(
        "[127.0.0.1]:{} {} {}\n",
        host.port(),
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    for (name, line) in [("ecdsa", ecdsa_line), ("ed25519", host.known_hosts_line())] {
        let kh = dir.join(name);
        std::fs::write(&kh, line).unwrap();
        let (_wd, wd) = remote_workdir();
        let exec = SshExecutor::new(host.target(), wd, options_for(&host, &kh));
        exec.connect()
            .await
            .unwrap_or_else(|e| panic!("only the {name} key on record: {e}"));
    }
}
