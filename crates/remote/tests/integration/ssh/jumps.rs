//! Jump hosts: a guest reached only through a bastion, also from an OpenSSH config file.

use std::time::Duration;

use qa_core::HostKeyPolicy;
use qa_core::conformance::executor;
use qa_core::remote::{CommandSpec, OutputStream, RemoteExecutor};
use qa_remote::ssh::{OpenSshConfig, SshExecutor};
use qa_testkit::{Bastion, ClientKeys, KeyKind};

use super::{options_for, remote_workdir, scratch};

fn spec(cmd: &str) -> CommandSpec {
    CommandSpec::new(cmd).timeout(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_behind_a_bastion_runs_commands_and_moves_files() {
    let Some(b) = Bastion::start_or_skip() else {
        return;
    };
    let kh = b.known_hosts();
    let (wd, dir) = remote_workdir();
    let exec = SshExecutor::new(b.guest_target(), dir, options_for(&b.guest, &kh));
    assert!(exec.describe().contains("via"), "{}", exec.describe());
    let (info, out) = executor::run_recorded(&exec, &spec("echo $SSH_CONNECTION; exit 3")).await;
    assert_eq!(info.code, Some(3));
    // The guest saw a connection to its own address and port: 127.0.0.2 <port>.
    let conn = out.text(OutputStream::Stdout);
    assert!(
        conn.trim_end()
            .ends_with(&format!("127.0.0.2 {}", b.guest.port())),
        "{conn}"
    );
    assert_eq!(
        b.forwarded_to_guest(),
        1,
        "the bastion forwarded exactly one connection to the guest"
    );

    let (_s, scratch) = scratch();
    let f = scratch.join("f");
    std::fs::write(&f, vec![7u8; 3 << 20]).unwrap();
    exec.put_file(&f, "f", None).await.unwrap();
    exec.get_file("f", &scratch.join("g")).await.unwrap();
    assert_eq!(
        std::fs::read(scratch.join("g")).unwrap(),
        vec![7u8; 3 << 20]
    );
    assert!(wd.path().join("f").exists());
    assert_eq!(
        b.forwarded_to_guest(),
        1,
        "transfers reuse the tunnelled session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bastion_host_key_is_checked_too() {
    let Some(b) = Bastion::start_or_skip() else {
        return;
    };
    // Only the guest's key is known: the bastion must be refused before any forwarding.
    let (wd_guard, dir) = remote_workdir();
    let exec = SshExecutor::new(
        b.guest_target(),
        dir,
        options_for(&b.guest, &b.guest.known_hosts()),
    );
    let err = exec.connect().await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("[127.0.0.1]:{}", b.bastion.port())),
        "{err}"
    );
    assert_eq!(b.forwarded_to_guest(), 0);
    drop(wd_guard);
}

#[tokio::test(flavor = "multi_thread")]
async fn openssh_config_alias_with_proxyjump() {
    let Some(b) = Bastion::start_or_skip() else {
        return;
    };
    let key = ClientKeys::shared().private(KeyKind::Ecdsa);
    let text = format!(
        "Host lab-bastion\n  HostName {}\n  Port {}\n  User {}\n  IdentityFile {}\n\n\
         Host guest-*\n  HostName {}\n  Port {}\n  ProxyJump lab-bastion\n\n\
         Host *\n  User {}\n  IdentityFile {}\n",
        b.bastion.host(),
        b.bastion.port(),
        b.bastion.user(),
        key.display(),
        b.guest.host(),
        b.guest.port(),
        b.guest.user(),
        key.display(),
    );
    let cfg = OpenSshConfig::parse(&text, "test-config").unwrap();
    let target = cfg
        .target("guest-1", "nobody", HostKeyPolicy::Strict)
        .unwrap();
    assert_eq!(target.jumps.len(), 1);
    assert_eq!(target.identity_file.as_deref(), Some(key.as_path()));
    let (_wd, dir) = remote_workdir();
    let exec = SshExecutor::new(target, dir, options_for(&b.guest, &b.known_hosts()));
    let (info, out) = executor::run_recorded(&exec, &spec("echo via-config")).await;
    assert!(info.success(), "{info:?}");
    assert_eq!(out.text(OutputStream::Stdout), "via-config\n");
    assert_eq!(b.forwarded_to_guest(), 1);
}

/// Two bastions in a row: outer -> inner -> guest, each hop forwarding only to the next.
#[tokio::test(flavor = "multi_thread")]
async fn two_jump_hosts_deep() {
    let Some(sshd) = qa_testkit::sshd_or_skip() else {
        return;
    };
    use qa_testkit::{SshdConfig, TestSshd};
    let guest = TestSshd::start_with(
        &sshd,
        SshdConfig {
            listen: "127.0.0.2".parse().unwrap(),
            ..SshdConfig::default()
        },
    )
    .unwrap();
    let inner = TestSshd::start_with(
        &sshd,
        SshdConfig {
            listen: "127.0.0.3".parse().unwrap(),
            allow_tcp_forwarding: true,
            permit_open: vec![format!("{}:{}", guest.host(), guest.port())],
            log_level: "DEBUG1".into(),
            ..SshdConfig::default()
        },
    )
    .unwrap();
    let outer = TestSshd::start_with(
        &sshd,
        SshdConfig {
            allow_tcp_forwarding: true,
            permit_open: vec![format!("{}:{}", inner.host(), inner.port())],
            log_level: "DEBUG1".into(),
            ..SshdConfig::default()
        },
    )
    .unwrap();
    let (_s, dir) = scratch();
    let kh = dir.join("known_hosts");
    std::fs::write(
        &kh,
        format!(
            "{}{}{}",
            outer.known_hosts_line(),
            inner.known_hosts_line(),
            guest.known_hosts_line()
        ),
    )
    .unwrap();
    let mut target = guest.target();
    target.jumps = vec![outer.target(), inner.target()];
    let (_wd, wd) = remote_workdir();
    let exec = SshExecutor::new(target, wd, options_for(&guest, &kh));
    let (info, out) = executor::run_recorded(&exec, &spec("echo $SSH_CONNECTION")).await;
    assert!(info.success(), "{info:?}");
    assert!(
        out.text(OutputStream::Stdout)
            .trim_end()
            .ends_with(&format!("127.0.0.2 {}", guest.port()))
    );
    assert_eq!(
        outer
            .log()
            .matches(&format!("target {} port {}", inner.host(), inner.port()))
            .count(),
        1
    );
    assert_eq!(
        inner
            .log()
            .matches(&format!("target {} port {}", guest.host(), guest.port()))
            .count(),
        1
    );
}
