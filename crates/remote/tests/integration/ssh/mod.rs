//! The SSH executor against real OpenSSH servers started by qa-testkit.
//!
//! Every test starts its own `sshd` (so kills, restarts and key changes stay private to it) and
//! skips with a message if `sshd` is not installed, unless `QA_REQUIRE_SSHD` is set.

mod files;
mod hostkeys;
mod jumps;
mod processes;
mod reboots;
mod running;

use std::path::{Path, PathBuf};
use std::time::Duration;

use qa_core::SshTarget;
use qa_remote::ssh::{SshExecutor, SshOptions};
use qa_testkit::TestSshd;

/// Options pointing at the harness: its known_hosts, boot-id file and reboot command; short
/// backoff so that tests do not sit in sleeps.
pub fn options_for(host: &TestSshd, known_hosts: &Path) -> SshOptions {
    SshOptions {
        known_hosts: vec![known_hosts.to_path_buf()],
        boot_id_path: host.boot_id_path().display().to_string(),
        reboot_command: host.reboot_command(),
        reconnect_backoff: (Duration::from_millis(50), Duration::from_millis(500)),
        reattach_deadline: Duration::from_secs(30),
        expect_reboot_deadline: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        use_agent: false,
        ..SshOptions::default()
    }
}

/// A work directory on the "remote" side (the same machine), removed with the returned guard.
pub fn remote_workdir() -> (tempfile::TempDir, String) {
    let d = tempfile::Builder::new()
        .prefix("qa-ssh-work-")
        .tempdir()
        .unwrap();
    let s = d.path().display().to_string();
    (d, s)
}

/// An executor for `host` with Strict checking against the harness's known_hosts.
pub fn executor(host: &TestSshd) -> (tempfile::TempDir, SshExecutor) {
    executor_for(host, host.target(), &host.known_hosts())
}

/// An executor for `target` on `host`.
pub fn executor_for(
    host: &TestSshd,
    target: SshTarget,
    known_hosts: &Path,
) -> (tempfile::TempDir, SshExecutor) {
    let (dir, wd) = remote_workdir();
    (
        dir,
        SshExecutor::new(target, wd, options_for(host, known_hosts)),
    )
}

/// A fresh local scratch directory.
pub fn scratch() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

/// How many public-key logins sshd has accepted (one per new session).
pub fn logins(host: &TestSshd) -> usize {
    host.log().matches("Accepted publickey").count()
}
