//! The [`RemoteExecutor`] trait: running commands on a machine and moving files to and from it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::types::{BootId, Machine};

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandSpec {
    /// A shell command line, run by `/bin/sh -c` on the machine.
    pub command: String,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory; relative paths are inside the machine's work directory.
    pub workdir: Option<String>,
    /// Kill the whole process tree after this long.
    pub timeout: Option<Duration>,
    /// Run with non-interactive sudo (`sudo -n`).
    pub sudo: bool,
    /// Allocate a pseudo-terminal.
    pub pty: bool,
    /// Run under a supervisor on the machine that survives a dropped connection.
    pub detached: bool,
    /// The command is expected to reboot the machine; wait for the new boot and take the status.
    pub expect_reboot: bool,
    /// Run it as it is, without the supervisor that tags a step's processes and ends what they
    /// leave running: one process less and no scan of the machine's processes. At its timeout or
    /// cancellation its channel is closed, which is all that ends it. For short commands of
    /// qa-run's own that start nothing (a host's verification); steps are never bare. Executors
    /// whose supervision costs nothing may ignore it.
    pub bare: bool,
}

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives a command's output as it arrives. Implementations must be cheap: they are called on
/// the executor's read path.
pub trait OutputSink: Send + Sync {
    /// A chunk of output (not necessarily whole lines).
    fn output(&self, stream: OutputStream, data: &[u8]);
    /// A note from the executor itself (reconnecting, reboot seen, …), shown in the log.
    fn note(&self, _message: &str) {}
}

/// An [`OutputSink`] that throws everything away.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardOutput;

impl OutputSink for DiscardOutput {
    fn output(&self, _: OutputStream, _: &[u8]) {}
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitInfo {
    /// Exit status, if it exited.
    pub code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// It ran out of time and its process tree was killed.
    pub timed_out: bool,
    /// It was cancelled and its process tree was killed.
    pub cancelled: bool,
    /// Wall time.
    pub duration: Duration,
    /// The machine rebooted while it ran (only with `expect_reboot` or `detached`).
    pub rebooted: bool,
    /// What the command left running when it ended, one sentence per kind: the processes that
    /// were ended (`ended 2 processes the command left running: 812 (sleep 300), …`) and those
    /// that could not be. The same sentences are notes in the step's log; empty when the command
    /// left nothing behind.
    pub leftovers: Vec<String>,
}

impl ExitInfo {
    /// A command that exited with `code` after `duration`.
    pub fn exited(code: i32, duration: Duration) -> Self {
        ExitInfo {
            code: Some(code),
            signal: None,
            timed_out: false,
            cancelled: false,
            duration,
            rebooted: false,
            leftovers: Vec::new(),
        }
    }

    /// A command that was stopped: at its timeout (`timed_out`) or by cancellation.
    pub fn stopped(timed_out: bool, duration: Duration) -> Self {
        ExitInfo {
            code: None,
            signal: None,
            timed_out,
            cancelled: !timed_out,
            duration,
            rebooted: false,
            leftovers: Vec::new(),
        }
    }

    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.cancelled
    }
}

/// The environment variable that carries a step's tag. Every step runs with a value of its own,
/// which its processes inherit through whatever they do to leave its process group (`setsid`, a
/// double fork, `nohup`, a `cd` away), so what a step left running is found by it.
pub const STEP_TAG_VAR: &str = "QA_RUN_STEP_TAG";

/// The start of the tag of every step run in the local sandbox `sandbox` (see [`STEP_TAG_VAR`]).
/// A cleanup that has only the sandbox (the run that used it was killed) finds by it the
/// processes that run's steps left behind, wherever they moved to.
pub fn sandbox_tag_prefix(sandbox: &Path) -> String {
    let path = sandbox
        .canonicalize()
        .or_else(|_| std::path::absolute(sandbox))
        .unwrap_or_else(|_| sandbox.to_path_buf());
    // FNV-1a: stable across builds and versions, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("sandbox-{hash:016x}.")
}

/// Errors of remote execution. Each is an infrastructure problem (verdict ERROR), never a test
/// failure: a command that runs and exits non-zero is an `Ok(ExitInfo)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// Could not connect or authenticate.
    #[error("cannot connect to {target}: {message}")]
    Connect {
        /// `user@host:port` or a sandbox path.
        target: String,
        /// What went wrong.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The host presented a key that differs from the known one.
    #[error(
        "host key of {host} changed: known {known_fingerprint}, presented {presented_fingerprint}; \
         if the host was really reinstalled, remove its line from {known_hosts}"
    )]
    HostKeyChanged {
        /// The host.
        host: String,
        /// Fingerprint on record.
        known_fingerprint: String,
        /// Fingerprint the host presented.
        presented_fingerprint: String,
        /// The known_hosts file holding the old key.
        known_hosts: String,
    },
    /// The host's key is not known and the policy does not allow trusting it.
    #[error(
        "host key of {host} ({fingerprint}) is not in {known_hosts}; add it with ssh-keyscan or use trust-first-use"
    )]
    HostKeyUnknown {
        /// The host.
        host: String,
        /// Fingerprint it presented.
        fingerprint: String,
        /// The known_hosts file that was consulted.
        known_hosts: String,
    },
    /// The connection dropped and could not be re-established.
    #[error("connection to {target} lost: {message}")]
    Disconnected {
        /// The machine.
        target: String,
        /// What was tried.
        message: String,
    },
    /// A file transfer failed.
    #[error("transfer {from} -> {to} failed: {source}")]
    Transfer {
        /// Source path.
        from: String,
        /// Destination path.
        to: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A path would leave the directory it must stay in.
    #[error("refusing path `{path}`: it leaves {root}")]
    PathEscape {
        /// The offending path.
        path: String,
        /// The directory it must stay in.
        root: String,
    },
    /// The machine did not come back from a reboot in time.
    #[error(
        "{target} did not come back within {} after reboot (old boot id {old_boot_id}); tried: {tried}",
        crate::plan::PlanDuration(*deadline)
    )]
    RebootTimeout {
        /// The machine.
        target: String,
        /// How long was waited.
        deadline: Duration,
        /// Boot id before the reboot.
        old_boot_id: String,
        /// What was tried.
        tried: String,
    },
    /// The operation is not supported by this executor.
    #[error("{executor} does not support {operation}")]
    Unsupported {
        /// The executor.
        executor: String,
        /// The operation.
        operation: String,
    },
    /// Any other I/O problem.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs commands on one machine and moves files to and from it.
///
/// An executor is bound to one [`Machine`]; relative remote paths resolve inside the machine's work
/// directory. All methods may be called concurrently.
///
/// # Contract
/// - `run` returns `Ok` whenever the command ran, whatever its status; `Err` only for
///   infrastructure problems. On timeout or cancellation the *whole process tree* of the command is
///   killed before `run` returns (`timed_out`/`cancelled` set), including processes that left
///   its process group or session.
/// - The command is over when its main process exits, and the status is that process's:
///   children still holding its output get a short grace, then whatever the command left running
///   is ended before `run` returns, and named in a note of the sink.
/// - Cancelling through the token is prompt: `run` returns within a second or two.
/// - `put_file`/`put_tree` land atomically (temporary name, then rename) and are idempotent.
/// - `collect` never writes outside `dest` and never follows a path out of the work directory.
/// - After an `Err`, the executor is still usable; the next call reconnects if needed.
#[async_trait]
pub trait RemoteExecutor: Send + Sync + Debug + 'static {
    /// Short description for logs, e.g. `local:/tmp/x` or `ssh://root@10.0.0.5:22`.
    fn describe(&self) -> String;

    /// Runs a command, streaming its output into `sink`.
    async fn run(
        &self,
        cmd: &CommandSpec,
        sink: Arc<dyn OutputSink>,
        cancel: CancellationToken,
    ) -> Result<ExitInfo, RemoteError>;

    /// Uploads one file; `mode` defaults to the local file's mode.
    async fn put_file(
        &self,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), RemoteError>;

    /// Uploads a directory tree, preserving modes. Returns the number of files.
    async fn put_tree(&self, local: &Path, remote: &str) -> Result<u64, RemoteError>;

    /// Downloads one file.
    async fn get_file(&self, remote: &str, local: &Path) -> Result<(), RemoteError>;

    /// Downloads every file matching the glob patterns (relative to the work directory) into
    /// `dest`, keeping relative paths. Returns the local paths written.
    async fn collect(&self, patterns: &[String], dest: &Path) -> Result<Vec<PathBuf>, RemoteError>;

    /// The current boot id.
    async fn boot_id(&self) -> Result<BootId, RemoteError>;

    /// Reboots and waits, up to `deadline`, for a new boot id. Returns it.
    async fn reboot(&self, deadline: Duration) -> Result<BootId, RemoteError>;

    /// Closes connections. Further calls may reconnect.
    async fn close(&self) {}
}

/// Makes executors for machines (picks local processes or SSH by the machine's access).
#[async_trait]
pub trait Connector: Send + Sync + Debug + 'static {
    /// An executor bound to `machine`.
    async fn connect(&self, machine: &Machine) -> Result<Arc<dyn RemoteExecutor>, RemoteError>;
}
