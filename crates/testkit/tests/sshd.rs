//! The harness against the real `ssh` client.

use std::process::Command;

use qa_testkit::{Bastion, ClientKeys, KeyKind, RebootBehaviour, TestSshd};

fn ssh(
    host: &TestSshd,
    known_hosts: &std::path::Path,
    key: KeyKind,
    cmd: &str,
) -> std::process::Output {
    Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(ClientKeys::shared().private(key))
        .arg("-p")
        .arg(host.port().to_string())
        .arg(format!("{}@{}", host.user(), host.host()))
        .arg(cmd)
        .output()
        .expect("run ssh")
}

#[test]
fn every_client_key_logs_in_with_an_empty_home() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    for kind in KeyKind::ALL {
        let out = ssh(&host, &host.known_hosts(), kind, "echo $HOME");
        assert!(
            out.status.success(),
            "{kind:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            host.home().to_str().unwrap()
        );
    }
}

#[test]
fn reboot_changes_boot_id_and_never_return_stays_down() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let before = host.boot_id();
    host.reboot();
    assert_ne!(host.boot_id(), before);
    assert!(host.is_running());
    let out = ssh(&host, &host.known_hosts(), KeyKind::Ed25519, "true");
    assert!(out.status.success());
    host.set_reboot_behaviour(RebootBehaviour::NeverReturn);
    let _ = ssh(
        &host,
        &host.known_hosts(),
        KeyKind::Ed25519,
        &host.reboot_command(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while host.reboots() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(host.reboots(), 2);
    assert!(!host.is_running());
}

#[test]
fn replaced_host_key_is_refused_by_openssh() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let old = host.host_key_fingerprint();
    host.replace_host_key().unwrap();
    assert_ne!(host.host_key_fingerprint(), old);
    let out = ssh(&host, &host.known_hosts(), KeyKind::Ed25519, "true");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"));
}

#[test]
fn guest_is_reached_through_the_bastion() {
    let Some(b) = Bastion::start_or_skip() else {
        return;
    };
    let kh = b.known_hosts();
    let out = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(ClientKeys::shared().private(KeyKind::Ed25519))
        .arg("-o")
        .arg(format!(
            "ProxyCommand=ssh -o BatchMode=yes -o UserKnownHostsFile={} -i {} -p {} -W %h:%p {}@{}",
            kh.display(),
            ClientKeys::shared().private(KeyKind::Ed25519).display(),
            b.bastion.port(),
            b.bastion.user(),
            b.bastion.host()
        ))
        .arg("-p")
        .arg(b.guest.port().to_string())
        .arg(format!("{}@{}", b.guest.user(), b.guest.host()))
        .arg("echo guest")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "guest");
    assert_eq!(
        b.forwarded_to_guest(),
        1,
        "bastion log: {}",
        b.bastion.log()
    );
}
