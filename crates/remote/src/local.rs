//! Local processes in a sandbox directory: the executor of the `local` backend.
//!
//! A [`LocalExecutor`] is bound to one sandbox directory (the machine's work directory). Each
//! command runs as `/bin/sh -c` in a process group of its own and with a [`step_tag`] of its own
//! in its environment. A command ends when its shell exits: what it left running is then ended
//! (after [`OUTPUT_GRACE`] if it still holds the command's output), and listed in the log. A
//! timeout or a cancellation ends the group and every tagged process, wherever it went (SIGTERM,
//! the kill grace, then SIGKILL). Output is handed to the sink chunk by chunk as the pipes
//! deliver it.
//!
//! File transfers are copies on the same host: a temporary file next to the target, then a
//! rename, so a reader sees the old file or the new one and never half of one. Relative paths
//! resolve inside the sandbox and may not climb out of it with `..`; [`collect`] additionally never
//! follows a symlink out of the sandbox.
//!
//! [`collect`]: RemoteExecutor::collect
//! [`step_tag`]: crate::step_tag
//! [`OUTPUT_GRACE`]: crate::step_tag::OUTPUT_GRACE

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qa_core::plan::PlanDuration;
use qa_core::remote::{
    CommandSpec, Connector, ExitInfo, OutputSink, OutputStream, RemoteError, RemoteExecutor,
    sandbox_tag_prefix,
};
use qa_core::types::{Access, BootId, Machine};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::step_tag::{self, OUTPUT_GRACE, STEP_TAG_VAR};

/// Where Linux publishes the id of the current boot.
pub const DEFAULT_BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// How long a killed process group gets between SIGTERM and SIGKILL by default.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// After everything the command started was ended, how long to wait for its output pipes to
/// close. Only a process that cleared its environment can still hold them; its output is then
/// cut off.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);

/// How long to wait for every member of a killed group to be gone.
const GROUP_GONE_LIMIT: Duration = Duration::from_secs(5);

/// Makes temporary names unique among concurrent transfers of this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs commands as local processes inside a sandbox directory.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    root: PathBuf,
    /// The start of every step tag here: the sandbox's ([`sandbox_tag_prefix`]).
    tag_prefix: String,
    boot_id_path: PathBuf,
    kill_grace: Duration,
}

impl LocalExecutor {
    /// An executor for the sandbox at `root` (made absolute against the current directory).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalExecutor {
            tag_prefix: sandbox_tag_prefix(&root),
            root,
            boot_id_path: PathBuf::from(DEFAULT_BOOT_ID_PATH),
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }

    /// An executor for a machine of the local backend: its work directory is the sandbox.
    pub fn for_machine(machine: &Machine) -> Result<Self, RemoteError> {
        match &machine.access {
            Access::Local { root } => {
                let workdir = Path::new(&machine.workdir);
                let mut exec = Self::new(if workdir.is_absolute() {
                    workdir.to_path_buf()
                } else {
                    root.join(workdir)
                });
                // Tagged by the sandbox, not the work directory in it: cleanup knows the former.
                exec.tag_prefix = sandbox_tag_prefix(root);
                Ok(exec)
            }
            Access::Ssh(t) => Err(RemoteError::Connect {
                target: format!("{}@{}:{}", t.user, t.host, t.port),
                message: format!(
                    "machine {} is reached over SSH; the local executor only runs commands in local sandboxes",
                    machine.name
                ),
                source: None,
            }),
            // A kind of access added to qa-core after this executor was written.
            other => Err(RemoteError::Connect {
                target: machine.name.clone(),
                message: format!(
                    "machine {} is reached by {other}; the local executor only runs commands in local sandboxes",
                    machine.name
                ),
                source: None,
            }),
        }
    }

    /// Reads the boot id from `path` instead of [`DEFAULT_BOOT_ID_PATH`] (for tests).
    pub fn with_boot_id_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.boot_id_path = path.into();
        self
    }

    /// Changes the time between SIGTERM and SIGKILL when a command is killed.
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// The sandbox directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a path on the "machine": absolute paths as they are, relative ones inside the
    /// sandbox, refusing any that climb out of it.
    fn resolve(&self, path: &str) -> Result<PathBuf, RemoteError> {
        let p = Path::new(path);
        if p.is_absolute() {
            return Ok(p.to_path_buf());
        }
        let rel = normalize_relative(p).ok_or_else(|| self.escape(path))?;
        Ok(self.root.join(rel))
    }

    fn escape(&self, path: &str) -> RemoteError {
        RemoteError::PathEscape {
            path: path.to_string(),
            root: self.root.display().to_string(),
        }
    }

    fn build_command(
        &self,
        cmd: &CommandSpec,
        workdir: &Path,
        tag: &str,
    ) -> tokio::process::Command {
        let mut c = if cmd.sudo {
            // sudo scrubs the environment, so the extra variables go through env(1) after it.
            let mut c = tokio::process::Command::new("sudo");
            c.arg("-n").arg("--").arg("env");
            for (k, v) in &cmd.env {
                c.arg(format!("{k}={v}"));
            }
            c.arg(format!("{STEP_TAG_VAR}={tag}"));
            c.arg("/bin/sh").arg("-c").arg(&cmd.command);
            c
        } else {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c")
                .arg(&cmd.command)
                .envs(&cmd.env)
                .env(STEP_TAG_VAR, tag);
            c
        };
        c.current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        c
    }
}

/// `p` without `.` and with `..` applied, if it stays inside (never above) its start and holds
/// only ordinary components.
fn normalize_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RemoteError {
    let context = context.into();
    move |source| RemoteError::Io { context, source }
}

fn transfer_err(from: &Path, to: &Path) -> impl Fn(std::io::Error) -> RemoteError {
    let (from, to) = (from.display().to_string(), to.display().to_string());
    move |source| RemoteError::Transfer {
        from: from.clone(),
        to: to.clone(),
        source,
    }
}

/// Copies `from` to `to` through a temporary file in `to`'s directory, renamed into place, with
/// `mode` (or `from`'s mode). Makes missing parent directories.
fn copy_atomically(from: &Path, to: &Path, mode: Option<u32>) -> Result<(), RemoteError> {
    let err = transfer_err(from, to);
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(&err)?;
    let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(format!(
        ".{name}.qa-tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mode = match mode {
            Some(m) => m,
            None => std::fs::metadata(from)?.permissions().mode() & 0o7777,
        };
        std::fs::copy(from, &tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, to)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Copies a tree file by file (each atomically), keeping modes; symlinks are recreated as
/// symlinks. Returns the number of files.
fn copy_tree(from: &Path, to: &Path) -> Result<u64, RemoteError> {
    let err = transfer_err(from, to);
    let meta = std::fs::metadata(from).map_err(&err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "put_tree needs a directory",
        )));
    }
    std::fs::create_dir_all(to).map_err(&err)?;
    let mut count = 0;
    for entry in std::fs::read_dir(from).map_err(&err)? {
        let entry = entry.map_err(&err)?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(&err)?;
        if kind.is_dir() {
            count += copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(&err)?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, &dst).map_err(&err)?;
            count += 1;
        } else {
            copy_atomically(&src, &dst, None)?;
            count += 1;
        }
    }
    std::fs::set_permissions(to, meta.permissions()).map_err(&err)?;
    Ok(count)
}

/// Sends `signal` to process group `pgid`; `false` once the group is empty.
fn signal_group(pgid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) with a negative pid only sends a signal; it touches no memory of ours.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Kills a command's process group and every process carrying its tag when dropped, unless
/// disarmed: a caller that drops `run` (its own timeout, say) leaves nothing running.
struct KillStepOnDrop {
    pgid: i32,
    tag: String,
    armed: bool,
}

impl Drop for KillStepOnDrop {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
            step_tag::kill_tagged_now(&self.tag);
        }
    }
}

async fn pump(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    stream: OutputStream,
    sink: Arc<dyn OutputSink>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => sink.output(stream, &buf[..n]),
        }
    }
}

/// Waits for the output pumps to reach the end of their pipes, forgetting each one that did (so
/// that a wait cut short can be taken up again).
async fn drain(pumps: &mut [Option<tokio::task::JoinHandle<()>>; 2]) {
    for slot in pumps.iter_mut() {
        if let Some(task) = slot {
            let _ = task.await;
            *slot = None;
        }
    }
}

enum Ending {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Cancelled,
}

impl LocalExecutor {
    /// Ends a command that is still running: SIGTERM to its group and to every process carrying
    /// its tag, up to the kill grace for all of them to go, then SIGKILL for anything left.
    /// Returns the shell's status (if it could be had) and the tagged processes that had left the
    /// group, which a group signal alone would have missed.
    async fn kill_step(
        &self,
        pgid: i32,
        tag: &str,
        child: &mut tokio::process::Child,
    ) -> (Option<std::process::ExitStatus>, Vec<step_tag::Leftover>) {
        let escaped: Vec<_> = step_tag::tagged(tag)
            .into_iter()
            .filter(|p| p.pgid != pgid)
            .collect();
        signal_group(pgid, libc::SIGTERM);
        for p in step_tag::tagged(tag) {
            // SAFETY: kill(2) only sends a signal.
            unsafe { libc::kill(p.pid, libc::SIGTERM) };
        }
        let until = Instant::now() + self.kill_grace;
        let mut status = None;
        loop {
            if status.is_none() {
                status = child.try_wait().ok().flatten();
            }
            let quiet = status.is_some()
                && step_tag::tagged(tag).is_empty()
                && !step_tag::group_alive(pgid);
            if quiet || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        signal_group(pgid, libc::SIGKILL);
        let tag2 = tag.to_string();
        let _ = tokio::task::spawn_blocking(move || step_tag::kill_tagged_now(&tag2)).await;
        // Should the shell have left the group, the group signal missed it; kill it by pid.
        let _ = child.start_kill();
        let status = match status {
            Some(s) => Some(s),
            None => child.wait().await.ok(),
        };
        // SIGKILL lands asynchronously; wait until no member of the group is alive (orphans are
        // zombies then, init's to reap).
        let gone_by = Instant::now() + GROUP_GONE_LIMIT;
        while step_tag::group_alive(pgid) && Instant::now() < gone_by {
            signal_group(pgid, libc::SIGKILL);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (status, escaped)
    }

    /// After the shell exited: gives background children holding its output [`OUTPUT_GRACE`] to
    /// finish, then ends everything the command left running and says so in the log (and in
    /// what it returns).
    async fn end_leftovers(
        &self,
        pgid: i32,
        tag: &str,
        pipes: &[String],
        drained: impl Future<Output = ()>,
        cancel: &CancellationToken,
        sink: &dyn OutputSink,
    ) -> Vec<String> {
        let closed = tokio::select! {
            r = tokio::time::timeout(OUTPUT_GRACE, drained) => r.is_ok(),
            _ = cancel.cancelled() => false,
        };
        if !closed {
            let holders = step_tag::holders_of(pipes);
            let held: Vec<_> = step_tag::tagged(tag)
                .into_iter()
                .filter(|p| holders.contains(&p.pid))
                .collect();
            if !held.is_empty() {
                sink.note(&format!(
                    "the command exited, but {} still held its output open {} later: {}",
                    step_tag::count(&held),
                    PlanDuration(OUTPUT_GRACE),
                    step_tag::list(&held)
                ));
            }
        }
        let (ended, left) = step_tag::end_tagged(tag, self.kill_grace).await;
        // A member of the group that cleared its environment is still the command's.
        signal_group(pgid, libc::SIGKILL);
        note_leftovers(sink, &ended, &left)
    }
}

/// Says in the log which processes a command left running were ended, and which could not be;
/// returns the same sentences, for the step's result.
fn note_leftovers(
    sink: &dyn OutputSink,
    ended: &[step_tag::Leftover],
    left: &[step_tag::Leftover],
) -> Vec<String> {
    let mut said = Vec::new();
    if !ended.is_empty() {
        said.push(format!(
            "ended {} the command left running: {}",
            step_tag::count(ended),
            step_tag::list(ended)
        ));
    }
    if !left.is_empty() {
        said.push(format!(
            "could not end {} the command left running: {}",
            step_tag::count(left),
            step_tag::list(left)
        ));
    }
    for s in &said {
        sink.note(s);
    }
    said
}

#[async_trait]
impl RemoteExecutor for LocalExecutor {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn run(
        &self,
        cmd: &CommandSpec,
        sink: Arc<dyn OutputSink>,
        cancel: CancellationToken,
    ) -> Result<ExitInfo, RemoteError> {
        if cmd.expect_reboot {
            return Err(RemoteError::Unsupported {
                executor: self.describe(),
                operation: "expect-reboot".into(),
            });
        }
        if cmd.pty {
            sink.note("the local executor has no pseudo-terminal; running with pipes");
        }
        let workdir = match &cmd.workdir {
            Some(w) => self.resolve(w)?,
            None => self.root.clone(),
        };
        let started = Instant::now();
        let tag = format!("{}{}", self.tag_prefix, step_tag::new_tag());
        let mut child = self
            .build_command(cmd, &workdir, &tag)
            .spawn()
            .map_err(io_err(format!(
                "start {} in {}",
                if cmd.sudo {
                    "`sudo -n /bin/sh -c`"
                } else {
                    "`/bin/sh -c`"
                },
                workdir.display()
            )))?;
        let pgid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| RemoteError::Io {
                context: "process exited before its id was read".into(),
                source: std::io::Error::other("no pid"),
            })?;
        // If this future is dropped instead of cancelled through the token (a caller's own
        // timeout, say), everything the command started dies with it.
        let mut guard = KillStepOnDrop {
            pgid,
            tag: tag.clone(),
            armed: true,
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // What the pipes look like in /proc, to find who else holds them open.
        let pipes: Vec<String> = [stdout.as_raw_fd(), stderr.as_raw_fd()]
            .into_iter()
            .filter_map(step_tag::fd_link)
            .collect();
        let mut pumps = [
            Some(tokio::spawn(pump(
                stdout,
                OutputStream::Stdout,
                sink.clone(),
            ))),
            Some(tokio::spawn(pump(
                stderr,
                OutputStream::Stderr,
                sink.clone(),
            ))),
        ];

        let ending = {
            let limit = async {
                match cmd.timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => Ending::Exited(status),
                _ = limit => Ending::TimedOut,
                _ = cancel.cancelled() => Ending::Cancelled,
            }
        };

        let mut leftovers = Vec::new();
        let (status, timed_out, cancelled) = match ending {
            Ending::Exited(status) => {
                // The command is over when its shell is: background children get a short grace
                // to finish writing, then whatever it left running is ended.
                let status = status.map_err(io_err(format!("wait for `{}`", cmd.command)))?;
                leftovers = self
                    .end_leftovers(
                        pgid,
                        &tag,
                        &pipes,
                        drain(&mut pumps),
                        &cancel,
                        sink.as_ref(),
                    )
                    .await;
                (Some(status), false, false)
            }
            Ending::TimedOut | Ending::Cancelled => {
                let timed_out = matches!(ending, Ending::TimedOut);
                sink.note(&if timed_out {
                    format!(
                        "timed out after {}: ending process group {pgid} and every process of the command",
                        PlanDuration(cmd.timeout.unwrap_or_default())
                    )
                } else {
                    format!("cancelled: ending process group {pgid} and every process of the command")
                });
                let (status, escaped) = self.kill_step(pgid, &tag, &mut child).await;
                if !escaped.is_empty() {
                    let said = format!(
                        "ended {} that had left the command's process group: {}",
                        step_tag::count(&escaped),
                        step_tag::list(&escaped)
                    );
                    sink.note(&said);
                    leftovers.push(said);
                }
                (status, timed_out, !timed_out)
            }
        };
        if tokio::time::timeout(DRAIN_AFTER_KILL, drain(&mut pumps))
            .await
            .is_err()
        {
            for task in pumps.iter().flatten() {
                task.abort();
            }
        }
        guard.armed = false;
        let duration = started.elapsed();
        let mut info = if timed_out || cancelled {
            ExitInfo::stopped(timed_out, duration)
        } else {
            ExitInfo::exited(0, duration)
        };
        info.code = status.and_then(|s| s.code());
        info.signal = status.and_then(|s| s.signal());
        info.leftovers = leftovers;
        Ok(info)
    }

    async fn put_file(
        &self,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), RemoteError> {
        let (from, to) = (local.to_path_buf(), self.resolve(remote)?);
        blocking(move || copy_atomically(&from, &to, mode)).await
    }

    async fn put_tree(&self, local: &Path, remote: &str) -> Result<u64, RemoteError> {
        let (from, to) = (local.to_path_buf(), self.resolve(remote)?);
        blocking(move || copy_tree(&from, &to)).await
    }

    async fn get_file(&self, remote: &str, local: &Path) -> Result<(), RemoteError> {
        let (from, to) = (self.resolve(remote)?, local.to_path_buf());
        blocking(move || copy_atomically(&from, &to, None)).await
    }

    async fn collect(&self, patterns: &[String], dest: &Path) -> Result<Vec<PathBuf>, RemoteError> {
        let mut compiled = Vec::new();
        for p in patterns {
            let rel = Path::new(p);
            if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(self.escape(p));
            }
            let pattern = glob::Pattern::new(p).map_err(|e| RemoteError::Io {
                context: format!("artifact pattern `{p}`"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
            })?;
            compiled.push((p.clone(), pattern));
        }
        let (root, dest) = (self.root.clone(), dest.to_path_buf());
        blocking(move || collect_matches(&root, &compiled, &dest)).await
    }

    async fn boot_id(&self) -> Result<BootId, RemoteError> {
        let text = tokio::fs::read_to_string(&self.boot_id_path)
            .await
            .map_err(io_err(format!(
                "read boot id from {}",
                self.boot_id_path.display()
            )))?;
        Ok(BootId(text.trim().to_string()))
    }

    async fn reboot(&self, _deadline: Duration) -> Result<BootId, RemoteError> {
        Err(RemoteError::Unsupported {
            executor: self.describe(),
            operation: "reboot".into(),
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RemoteError::Io {
            context: "file transfer task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// The directory to start walking from: the pattern's leading components without wildcards.
fn literal_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    let parts: Vec<&str> = pattern.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if part.contains(['*', '?', '[']) {
            break;
        }
        prefix.push(part);
    }
    prefix
}

/// Walks the sandbox without following symlinked directories, copying every file (or every file
/// under a directory) whose path relative to `root` matches a pattern. A symlink is copied as the
/// file it points at only when that file is inside the sandbox; links leading out are left out.
fn collect_matches(
    root: &Path,
    patterns: &[(String, glob::Pattern)],
    dest: &Path,
) -> Result<Vec<PathBuf>, RemoteError> {
    let canonical_root =
        std::fs::canonicalize(root).map_err(io_err(format!("sandbox {}", root.display())))?;
    let mut written = Vec::new();
    for (text, pattern) in patterns {
        let start = literal_prefix(text);
        let mut todo = vec![start];
        while let Some(rel) = todo.pop() {
            let abs = root.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&abs) else {
                continue;
            };
            let matches = !rel.as_os_str().is_empty() && pattern.matches_path_with(&rel, MATCH);
            if meta.is_dir() {
                if matches {
                    collect_dir(root, &canonical_root, &rel, dest, &mut written)?;
                } else if let Ok(entries) = std::fs::read_dir(&abs) {
                    for e in entries.flatten() {
                        todo.push(rel.join(e.file_name()));
                    }
                }
            } else if matches {
                copy_collected(root, &canonical_root, &rel, dest, &mut written)?;
            }
        }
    }
    written.sort();
    written.dedup();
    Ok(written)
}

fn collect_dir(
    root: &Path,
    canonical_root: &Path,
    rel: &Path,
    dest: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), RemoteError> {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let child = rel.join(e.file_name());
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_dir(root, canonical_root, &child, dest, written)?,
            _ => copy_collected(root, canonical_root, &child, dest, written)?,
        }
    }
    Ok(())
}

fn copy_collected(
    root: &Path,
    canonical_root: &Path,
    rel: &Path,
    dest: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), RemoteError> {
    let abs = root.join(rel);
    // The real file behind any symlinks must be a regular file inside the sandbox.
    let Ok(real) = std::fs::canonicalize(&abs) else {
        return Ok(());
    };
    if !real.starts_with(canonical_root)
        || !std::fs::metadata(&real)
            .map(|m| m.is_file())
            .unwrap_or(false)
    {
        return Ok(());
    }
    let target = dest.join(rel);
    copy_atomically(&real, &target, None)?;
    written.push(target);
    Ok(())
}

/// Makes [`LocalExecutor`]s for machines of the local backend.
#[derive(Debug, Clone, Default)]
pub struct LocalConnector {
    boot_id_path: Option<PathBuf>,
}

impl LocalConnector {
    /// A connector reading the real boot id.
    pub fn new() -> Self {
        Self::default()
    }

    /// Executors made by this connector read the boot id from `path` (for tests).
    pub fn with_boot_id_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.boot_id_path = Some(path.into());
        self
    }
}

#[async_trait]
impl Connector for LocalConnector {
    async fn connect(&self, machine: &Machine) -> Result<Arc<dyn RemoteExecutor>, RemoteError> {
        let mut exec = LocalExecutor::for_machine(machine)?;
        if let Some(p) = &self.boot_id_path {
            exec = exec.with_boot_id_path(p);
        }
        if !exec.root.is_dir() {
            return Err(RemoteError::Connect {
                target: exec.describe(),
                message: format!(
                    "the sandbox of machine {} does not exist (destroyed?)",
                    machine.name
                ),
                source: None,
            });
        }
        Ok(Arc::new(exec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_may_not_climb_out() {
        assert_eq!(
            normalize_relative(Path::new("a/./b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(normalize_relative(Path::new("a/../..")), None);
        assert_eq!(normalize_relative(Path::new("../x")), None);
        let exec = LocalExecutor::new("/sandbox");
        assert!(matches!(
            exec.resolve("x/../../etc"),
            Err(RemoteError::PathEscape { .. })
        ));
        assert_eq!(exec.resolve("x/y").unwrap(), PathBuf::from("/sandbox/x/y"));
    }

    #[test]
    fn walking_starts_at_the_literal_prefix() {
        assert_eq!(literal_prefix("logs/sub/*.log"), PathBuf::from("logs/sub"));
        assert_eq!(literal_prefix("logs/**/x"), PathBuf::from("logs"));
        assert_eq!(literal_prefix("*.log"), PathBuf::new());
        assert_eq!(literal_prefix("file.txt"), PathBuf::new());
    }

    #[test]
    fn sudo_wraps_the_shell_and_carries_the_environment_past_it() {
        let exec = LocalExecutor::new("/sandbox");
        let mut spec = CommandSpec::new("id -u").env("A", "1 2");
        let plain = exec.build_command(&spec, Path::new("/sandbox"), "t1");
        assert_eq!(plain.as_std().get_program(), "/bin/sh");
        let args: Vec<_> = plain.as_std().get_args().collect();
        assert_eq!(args, ["-c", "id -u"]);
        spec.sudo = true;
        let sudo = exec.build_command(&spec, Path::new("/sandbox"), "t1");
        assert_eq!(sudo.as_std().get_program(), "sudo");
        let args: Vec<_> = sudo.as_std().get_args().collect();
        assert_eq!(
            args,
            [
                "-n",
                "--",
                "env",
                "A=1 2",
                "QA_RUN_STEP_TAG=t1",
                "/bin/sh",
                "-c",
                "id -u"
            ]
        );
    }

    #[tokio::test]
    async fn boot_id_comes_from_the_configured_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), "abc-123\n").unwrap();
        let exec = LocalExecutor::new(dir.path()).with_boot_id_path(dir.path().join("id"));
        assert_eq!(exec.boot_id().await.unwrap(), BootId("abc-123".into()));
        assert!(matches!(
            exec.reboot(Duration::from_secs(1)).await,
            Err(RemoteError::Unsupported { .. })
        ));
    }

    #[tokio::test]
    async fn ssh_machines_are_refused_by_the_local_connector() {
        let machine = Machine::new(
            "box",
            qa_core::BackendName::STATIC,
            Access::Ssh(qa_core::types::SshTarget::new("10.0.0.5", 22, "root")),
            "/root",
        );
        let err = LocalConnector::new().connect(&machine).await.unwrap_err();
        assert!(matches!(err, RemoteError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("root@10.0.0.5:22"), "{err}");
    }

    #[tokio::test]
    async fn workdir_escaping_the_sandbox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let exec = LocalExecutor::new(dir.path());
        let spec = CommandSpec::new("true").workdir("../");
        let r = exec
            .run(
                &spec,
                Arc::new(qa_core::remote::DiscardOutput),
                CancellationToken::new(),
            )
            .await;
        assert!(matches!(r, Err(RemoteError::PathEscape { .. })), "{r:?}");
    }
}
