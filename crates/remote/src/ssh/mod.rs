//! Remote execution over SSH with libssh2 (the `ssh2` crate).
//!
//! [`SshExecutor`] implements [`RemoteExecutor`] for one machine. It keeps one authenticated
//! session per machine and multiplexes every step, transfer and probe over channels of it (see
//! `conn` for how libssh2 is shared between threads); all libssh2 work happens on blocking threads,
//! never on the async runtime. A dead connection is noticed (socket errors, failed keepalives) and
//! replaced on the next call.
//!
//! - **Host keys** follow the target's [`HostKeyPolicy`]: `Strict` checks known_hosts files
//!   ([`SshOptions::known_hosts`], else `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`) and
//!   fails on an unknown key or a changed one (naming both SHA256 fingerprints);
//!   `TrustFirstUse` records the first key in the run-local file, then requires it; `Insecure`
//!   logs a warning on every connection.
//! - **Jump hosts** at any depth: each hop opens a `direct-tcpip` channel on the previous one,
//!   bridged to the next session through a socket pair.
//! - **Commands** run in the session and process group sshd makes for each channel, under a
//!   small supervisor shell and with a step tag of their own ([`crate::step_tag`]). The group's id
//!   is kept in a file, so a timeout or cancellation ends the whole tree on the machine, and
//!   every tagged process that left it, even when the channel is gone. When the command exits,
//!   the supervisor ends whatever it left running (after a short grace for children holding its
//!   output) and reports it; the executor turns those reports into notes.
//! - **Detached runs** are started under a small shell supervisor writing output and the exit
//!   status to files in a job directory; the executor follows the files over SFTP and, if the
//!   connection drops, reconnects and goes on from the byte offsets it had reached.
//! - **Reboots** read the boot id, issue the reboot command, and reconnect with backoff until the
//!   boot id differs, within a deadline.
//! - [`config`] reads HostName, User, Port, IdentityFile and ProxyJump from OpenSSH config files.
//!
//! ```no_run
//! use std::sync::Arc;
//! use qa_core::remote::{CommandSpec, DiscardOutput, RemoteExecutor};
//! use qa_core::HostKeyPolicy;
//! use qa_remote::ssh::{OpenSshConfig, SshExecutor, SshOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // `db-1` as ~/.ssh/config describes it (HostName, User, Port, IdentityFile, ProxyJump).
//! let target = OpenSshConfig::load_user_default()?.target("db-1", "root", HostKeyPolicy::Strict)?;
//! let exec = SshExecutor::new(target, "/var/tmp/qa", SshOptions::default());
//! let spec = CommandSpec::new("uname -r");
//! let info = exec.run(&spec, Arc::new(DiscardOutput), Default::default()).await?;
//! assert!(info.success());
//! # Ok(()) }
//! ```

pub mod config;
mod conn;
mod hostkeys;
mod notes;
mod shell;
mod transfer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qa_core::plan::PlanDuration;
use qa_core::remote::{
    CommandSpec, Connector, ExitInfo, OutputSink, OutputStream, RemoteError, RemoteExecutor,
};
use qa_core::{Access, BootId, HostKeyPolicy, Machine, SshTarget};

use crate::step_tag;
use tokio_util::sync::CancellationToken;

pub use config::{HostSettings, OpenSshConfig, SshConfigError};
pub use hostkeys::fingerprint;

use conn::{Conn, ConnSettings, Readable, Wait};
use notes::NoteFilter;
use transfer::SftpChannel;

/// Between SIGTERM and SIGKILL when a step's processes are ended on the machine.
const KILL_GRACE: Duration = crate::local::DEFAULT_KILL_GRACE;

/// Settings of SSH executors (the same for every machine of a run).
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// known_hosts files for the `Strict` policy; empty means `~/.ssh/known_hosts` and
    /// `/etc/ssh/ssh_known_hosts`.
    pub known_hosts: Vec<PathBuf>,
    /// TCP connect, handshake and authentication, per hop.
    pub connect_timeout: Duration,
    /// Longest wait for one request/response exchange before the connection is declared dead.
    pub io_timeout: Duration,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// Try ssh-agent (`SSH_AUTH_SOCK`) when the key file is missing or refused.
    pub use_agent: bool,
    /// Where the machine's boot id is read.
    pub boot_id_path: String,
    /// Shell command that reboots the machine. It is started in the background (so that the
    /// channel can close before the machine goes down).
    pub reboot_command: String,
    /// First and longest wait between reconnection attempts.
    pub reconnect_backoff: (Duration, Duration),
    /// How long a detached run keeps trying to reattach after its connection dropped.
    pub reattach_deadline: Duration,
    /// How long a command with `expect_reboot` may take to come back.
    pub expect_reboot_deadline: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            known_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            io_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(15),
            use_agent: true,
            boot_id_path: "/proc/sys/kernel/random/boot_id".into(),
            reboot_command: "if [ \"$(id -u)\" = 0 ]; then reboot; else sudo -n reboot; fi".into(),
            reconnect_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            reattach_deadline: Duration::from_secs(600),
            expect_reboot_deadline: Duration::from_secs(600),
        }
    }
}

impl SshOptions {
    fn conn_settings(&self) -> ConnSettings {
        ConnSettings {
            connect_timeout: self.connect_timeout,
            io_timeout: self.io_timeout,
            keepalive: self.keepalive,
            known_hosts: self.known_hosts.clone(),
            use_agent: self.use_agent,
        }
    }
}

/// A [`RemoteExecutor`] reaching one machine over SSH.
pub struct SshExecutor {
    target: SshTarget,
    workdir: String,
    opts: Arc<SshOptions>,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Pid files of finished commands, removed by the next command.
    finished_pidfiles: std::sync::Mutex<Vec<String>>,
    /// Where its connection goes when it is dropped without being closed (see [`SshConnector`]).
    idle: Option<Arc<IdleConns>>,
}

/// How long a connection given back by a dropped executor waits for the next executor of its
/// target before it is closed.
const IDLE_KEEP: Duration = Duration::from_secs(30);

/// Connections of executors dropped without being closed, each waiting for the next executor of
/// the same target: a host its provisioner logged in to for verification is then used by the run
/// on the same connection, one handshake instead of two.
#[derive(Default)]
struct IdleConns(std::sync::Mutex<Vec<IdleConn>>);

struct IdleConn {
    key: String,
    conn: Arc<Conn>,
    since: Instant,
}

impl IdleConns {
    /// The identity of a connection: everything of the target that shapes it.
    fn key(target: &SshTarget) -> String {
        format!("{target:?}")
    }

    fn put(&self, key: String, conn: Arc<Conn>) {
        let expired = {
            let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
            g.push(IdleConn {
                key,
                conn,
                since: Instant::now(),
            });
            Self::take_expired(&mut g)
        };
        Self::close_later(expired);
    }

    /// The youngest live connection kept for `key`, if any.
    fn take(&self, key: &str) -> Option<Arc<Conn>> {
        let (found, expired) = {
            let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let expired = Self::take_expired(&mut g);
            let found = g
                .iter()
                .rposition(|c| c.key == key)
                .map(|i| g.remove(i).conn);
            (found, expired)
        };
        Self::close_later(expired);
        found
    }

    fn take_expired(g: &mut Vec<IdleConn>) -> Vec<Arc<Conn>> {
        let mut expired = Vec::new();
        let mut i = 0;
        while i < g.len() {
            if g[i].conn.is_dead() || g[i].since.elapsed() > IDLE_KEEP {
                expired.push(g.remove(i).conn);
            } else {
                i += 1;
            }
        }
        expired
    }

    /// Closing a connection talks to its socket: never on the caller's thread, which may be
    /// the async runtime's.
    fn close_later(conns: Vec<Arc<Conn>>) {
        if conns.is_empty() {
            return;
        }
        let close = move || drop(conns);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(close)),
            Err(_) => close(),
        }
    }
}

impl fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map(|g| g.len()).unwrap_or_default();
        f.debug_struct("IdleConns").field("kept", &n).finish()
    }
}

impl Drop for SshExecutor {
    fn drop(&mut self) {
        let (Some(idle), Some(conn)) = (&self.idle, self.conn.get_mut().take()) else {
            return;
        };
        if conn.is_dead() {
            IdleConns::close_later(vec![conn]);
        } else {
            idle.put(IdleConns::key(&self.target), conn);
        }
    }
}

impl fmt::Debug for SshExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshExecutor")
            .field("target", &conn::describe_target(&self.target))
            .finish()
    }
}

/// Output of a small internal command.
pub(crate) struct Captured {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs a short internal command and collects its output (blocking).
pub(crate) fn exec_capture(
    conn: &Conn,
    cmd: &str,
    limit: Duration,
    started: &AtomicBool,
) -> Result<Captured, ssh2::Error> {
    let mut out = Captured {
        status: -1,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let sink = CaptureSink(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let end = run_channel(
        conn,
        cmd,
        false,
        &sink,
        None,
        Some(Instant::now() + limit),
        started,
        None,
    )?;
    let (o, e) = sink.0.into_inner().unwrap_or_else(|e| e.into_inner());
    out.stdout = o;
    out.stderr = e;
    match end {
        ChannelEnd::Exited { code, .. } => out.status = code.unwrap_or(-1),
        _ => {
            return Err(ssh2::Error::new(
                ssh2::ErrorCode::Session(-9),
                "internal command timed out",
            ));
        }
    }
    Ok(out)
}

struct CaptureSink(std::sync::Mutex<(Vec<u8>, Vec<u8>)>);

impl OutputSink for CaptureSink {
    fn output(&self, stream: OutputStream, data: &[u8]) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match stream {
            OutputStream::Stdout => g.0.extend_from_slice(data),
            OutputStream::Stderr => g.1.extend_from_slice(data),
            // A stream added to qa-core after this was written: kept with stderr, where
            // whatever is not the command's output goes.
            _ => g.1.extend_from_slice(data),
        }
    }
}

/// Whether a command's end says it was killed rather than that it exited: no exit status, or
/// the 128 + signal number a shell reports for a child killed by a signal. During a reboot every
/// process is killed, so for a step that expects one this is the reboot under way.
fn killed(code: Option<i32>) -> bool {
    code.is_none_or(|c| c > 128)
}

/// Passes the notes of a `kill_step` script on to `sink`.
fn note_kill_report(out: &Captured, tag: &str, sink: &dyn OutputSink) {
    let marker = shell::note_marker(tag);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(note) = line.strip_prefix(&marker) {
            sink.note(note);
        }
    }
}

enum ChannelEnd {
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    TimedOut,
    Cancelled,
}

/// Runs `script` on a new channel, streaming output into `sink`, until it exits, `deadline`
/// passes or `cancel` fires. In the last two cases `stop` (which ends the command on the
/// machine) runs before the channel is closed: sshd answers the close only once the command's
/// output is closed, so closing first would wait on processes about to be killed.
#[allow(clippy::too_many_arguments)]
fn run_channel(
    conn: &Conn,
    script: &str,
    pty: bool,
    sink: &dyn OutputSink,
    cancel: Option<&CancellationToken>,
    deadline: Option<Instant>,
    started: &AtomicBool,
    stop: Option<&dyn Fn(&Conn)>,
) -> Result<ChannelEnd, ssh2::Error> {
    use std::io::Read;
    let limit = Some(Duration::from_secs(60));
    let mut ch = conn.call(Wait::Session, limit, || conn.sess.channel_session())?;
    let result = (|| {
        if pty {
            conn.call(Wait::Session, limit, || {
                ch.request_pty("xterm", None, Some((160, 48, 0, 0)))
            })?;
        }
        // Once the request is on its way the command may run, whatever happens next.
        started.store(true, Ordering::SeqCst);
        conn.call(Wait::Session, limit, || ch.exec(script))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut idle_rounds = 0u32;
        loop {
            let mut progressed = false;
            for (id, stream) in [(0, OutputStream::Stdout), (1, OutputStream::Stderr)] {
                let mut s = ch.stream(id);
                match conn.try_once(|| s.read(&mut buf)) {
                    Ok(Some(n)) if n > 0 => {
                        sink.output(stream, &buf[..n]);
                        progressed = true;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ssh2::Error::from_errno(ssh2::ErrorCode::Session(
                            io_to_code(&e),
                        )));
                    }
                }
            }
            if !progressed && conn.try_once(|| Ok::<bool, ssh2::Error>(ch.eof()))? == Some(true) {
                break;
            }
            if cancel.is_some_and(|c| c.is_cancelled()) {
                return Ok(ChannelEnd::Cancelled);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(ChannelEnd::TimedOut);
            }
            if !progressed {
                idle_rounds += 1;
                conn.wait_readable(if idle_rounds < 50 { 5 } else { 20 });
            } else {
                idle_rounds = 0;
            }
        }
        conn.call(Wait::Channel, limit, || ch.wait_close())?;
        let code = ch.exit_status().ok();
        let signal = ch
            .exit_signal()
            .ok()
            .and_then(|s| s.exit_signal)
            .map(|name| signal_number(&name));
        Ok(ChannelEnd::Exited {
            code: if signal.is_some() { None } else { code },
            signal,
        })
    })();
    if !matches!(result, Ok(ChannelEnd::Exited { .. })) {
        if let (Some(stop), Ok(_)) = (stop, &result) {
            stop(conn);
        }
        let _ = conn.call(Wait::Channel, Some(Duration::from_secs(2)), || ch.close());
    }
    conn.drop_locked(ch);
    result
}

fn io_to_code(e: &std::io::Error) -> i32 {
    match e.kind() {
        std::io::ErrorKind::TimedOut => -9,
        _ => -13,
    }
}

fn signal_number(name: &str) -> i32 {
    match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "USR1" => 10,
        "USR2" => 12,
        _ => -1,
    }
}

fn unique_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{:08x}", t.as_millis(), rand::random::<u32>())
}

impl SshExecutor {
    /// An executor for `target`, with remote relative paths inside `workdir`. Connects lazily.
    pub fn new(target: SshTarget, workdir: impl Into<String>, opts: SshOptions) -> Self {
        SshExecutor {
            target,
            workdir: workdir.into(),
            opts: Arc::new(opts),
            conn: tokio::sync::Mutex::new(None),
            finished_pidfiles: std::sync::Mutex::new(Vec::new()),
            idle: None,
        }
    }

    /// The target.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Connects now (if not connected) and returns once the session is authenticated.
    pub async fn connect(&self) -> Result<(), RemoteError> {
        self.conn().await.map(|_| ())
    }

    /// The key exchange and cipher of its connection (connecting first if need be), e.g.
    /// `("curve25519-sha256", "aes128-gcm@openssh.com")`.
    pub async fn negotiated(&self) -> Result<(String, String), RemoteError> {
        let c = self.conn().await?;
        tokio::task::spawn_blocking(move || c.negotiated())
            .await
            .map_err(|e| RemoteError::Io {
                context: format!("{}: blocking task", self.name()),
                source: std::io::Error::other(e.to_string()),
            })
    }

    fn name(&self) -> String {
        conn::describe_target(&self.target)
    }

    fn state_dir(&self) -> String {
        format!("{}/.qa-run", self.workdir.trim_end_matches('/'))
    }

    async fn conn(&self) -> Result<Arc<Conn>, RemoteError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_dead()
        {
            return Ok(c.clone());
        }
        if let Some(old) = slot.take() {
            // Its destructor talks to a dead socket; keep that off the runtime.
            tokio::task::spawn_blocking(move || drop(old));
        }
        let target = self.target.clone();
        let settings = self.opts.conn_settings();
        let c = tokio::task::spawn_blocking(move || conn::connect(&target, &settings))
            .await
            .map_err(|e| RemoteError::Connect {
                target: self.name(),
                message: format!("connect task failed: {e}"),
                source: None,
            })??;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget_conn(&self, c: &Arc<Conn>) {
        c.mark_dead();
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, c)) {
            let old = slot.take();
            tokio::task::spawn_blocking(move || drop(old));
        }
    }

    /// Runs `f` with the connection on a blocking thread. A call that fails because the
    /// connection was already dead is retried once on a fresh connection — unless `f` set the
    /// flag it is given, saying it started something on the machine that must not run twice.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl Fn(&Conn, &AtomicBool) -> Result<T, RemoteError> + Send + Sync + Clone + 'static,
    ) -> Result<T, RemoteError> {
        for attempt in 0..2 {
            let c = self.conn().await?;
            let f2 = f.clone();
            let c2 = c.clone();
            let started = Arc::new(AtomicBool::new(false));
            let started2 = started.clone();
            let r = tokio::task::spawn_blocking(move || f2(&c2, &started2))
                .await
                .map_err(|e| RemoteError::Io {
                    context: format!("{}: blocking task", self.name()),
                    source: std::io::Error::other(e.to_string()),
                })?;
            match r {
                Err(e) if c.is_dead() && attempt == 0 && !started.load(Ordering::SeqCst) => {
                    tracing::debug!(target = %self.name(), "connection was lost ({e}); reconnecting");
                    self.forget_conn(&c).await;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn lost(&self, message: impl fmt::Display) -> RemoteError {
        RemoteError::Disconnected {
            target: self.name(),
            message: message.to_string(),
        }
    }

    async fn capture(&self, cmd: String) -> Result<Captured, RemoteError> {
        let name = self.name();
        let limit = self.opts.io_timeout;
        self.with_conn(move |c, started| {
            exec_capture(c, &cmd, limit, started).map_err(|e| RemoteError::Disconnected {
                target: name.clone(),
                message: format!("`{cmd}`: {}", e.readable()),
            })
        })
        .await
    }

    /// Ends a running command on the machine (see [`shell::kill_step`]), trying a few times on a
    /// fresh connection if the connection is what failed. Its notes go to `sink`.
    async fn kill_step(&self, pidfile: &str, tag: &str, sudo: bool, sink: &dyn OutputSink) {
        let cmd = shell::kill_step(pidfile, tag, KILL_GRACE, sudo);
        for _ in 0..3 {
            match self.capture(cmd.clone()).await {
                Ok(out) => {
                    note_kill_report(&out, tag, sink);
                    return;
                }
                Err(e) => {
                    tracing::warn!(target = %self.name(), "ending the command of {pidfile}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        sink.note(&format!(
            "could not reach the machine to end the command of {pidfile}; its processes may still run"
        ));
    }

    /// Reads the boot id once (no retries).
    async fn read_boot_id(&self) -> Result<BootId, RemoteError> {
        let out = self
            .capture(format!("cat {}", shell::quote(&self.opts.boot_id_path)))
            .await?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status != 0 || id.is_empty() {
            return Err(RemoteError::Io {
                context: format!(
                    "{}: reading boot id from {}",
                    self.name(),
                    self.opts.boot_id_path
                ),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ),
            });
        }
        Ok(BootId(id))
    }

    /// Reconnects with backoff until the boot id differs from `old`, or `deadline` passes.
    async fn wait_new_boot(
        &self,
        old: &BootId,
        deadline: Duration,
        sink: Option<&dyn OutputSink>,
    ) -> Result<BootId, RemoteError> {
        let start = Instant::now();
        let (mut delay, max_delay) = self.opts.reconnect_backoff;
        let (mut attempts, mut same_boot, mut last_err) = (0u32, 0u32, String::from("none"));
        let mut saw_drop = false;
        loop {
            attempts += 1;
            match tokio::time::timeout(
                deadline
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_millis(1)),
                self.read_boot_id(),
            )
            .await
            {
                Ok(Ok(id)) if &id != old => {
                    if let Some(s) = sink {
                        s.note(&format!(
                            "machine is back with boot id {} after {}",
                            id.0,
                            PlanDuration(start.elapsed())
                        ));
                    }
                    return Ok(id);
                }
                Ok(Ok(_)) => same_boot += 1,
                Ok(Err(e)) => {
                    if !saw_drop {
                        saw_drop = true;
                        if let Some(s) = sink {
                            s.note("connection dropped; waiting for the machine to come back");
                        }
                    }
                    if let Some(c) = self.conn.lock().await.take() {
                        tokio::task::spawn_blocking(move || drop(c));
                    }
                    last_err = e.to_string();
                }
                Err(_) => last_err = "reading the boot id hung".into(),
            }
            if start.elapsed() >= deadline {
                return Err(RemoteError::RebootTimeout {
                    target: self.name(),
                    deadline,
                    old_boot_id: old.0.clone(),
                    tried: format!(
                        "{attempts} attempts to connect and read {} (backoff {}..{}); {same_boot} answered with the old boot id; connection dropped: {}; last error: {last_err}",
                        self.opts.boot_id_path,
                        PlanDuration(self.opts.reconnect_backoff.0),
                        PlanDuration(max_delay),
                        if saw_drop { "yes" } else { "no" }
                    ),
                });
            }
            tokio::time::sleep(delay.min(deadline.saturating_sub(start.elapsed()))).await;
            delay = (delay * 2).min(max_delay);
        }
    }

    async fn run_foreground(
        &self,
        cmd: &CommandSpec,
        sink: Arc<dyn OutputSink>,
        cancel: CancellationToken,
    ) -> Result<ExitInfo, RemoteError> {
        let start = Instant::now();
        let old_boot = if cmd.expect_reboot {
            Some(self.read_boot_id().await?)
        } else {
            None
        };
        let pidfile = format!("{}/pids/{}", self.state_dir(), unique_id());
        let stale: Vec<String> = std::mem::take(
            &mut *self
                .finished_pidfiles
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let tag = step_tag::new_tag();
        let script = shell::foreground(cmd, &self.workdir, &pidfile, &stale, &tag, KILL_GRACE)
            .map_err(|m| RemoteError::Io {
                context: m,
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?;
        let deadline = cmd.timeout.map(|t| start + t);
        let pty = cmd.pty;
        let filter = NoteFilter::new(sink.clone(), shell::note_marker(&tag));
        // Whether the command was ended on the machine from the channel's own thread, at once;
        // if not (the connection failed), it is ended below, on a fresh connection.
        let ended = Arc::new(AtomicBool::new(false));
        let end = {
            let sink: Arc<dyn OutputSink> = filter.clone();
            let cancel = cancel.clone();
            let name = self.name();
            let kill = shell::kill_step(&pidfile, &tag, KILL_GRACE, cmd.sudo);
            let (tag, ended, limit, timeout) = (
                tag.clone(),
                ended.clone(),
                self.opts.io_timeout,
                cmd.timeout.unwrap_or_default(),
            );
            self.with_conn(move |c, started| {
                let stop = |c: &Conn| {
                    sink.note(&if cancel.is_cancelled() {
                        "cancelled: ending the command's process group and every process of the command".to_string()
                    } else {
                        format!(
                            "timed out after {}: ending the command's process group and every process of the command",
                            PlanDuration(timeout)
                        )
                    });
                    if let Ok(out) = exec_capture(c, &kill, limit, &AtomicBool::new(false)) {
                        note_kill_report(&out, &tag, sink.as_ref());
                        ended.store(true, Ordering::SeqCst);
                    }
                };
                run_channel(
                    c,
                    &script,
                    pty,
                    sink.as_ref(),
                    Some(&cancel),
                    deadline,
                    started,
                    Some(&stop),
                )
                .map_err(|e| RemoteError::Disconnected {
                    target: name.clone(),
                    message: e.readable(),
                })
            })
            .await
        };
        filter.finish();
        // The expected reboot took the connection, or killed the command, with it.
        let taken_by_reboot = old_boot.is_some()
            && match &end {
                Ok(ChannelEnd::Exited { code, .. }) => killed(*code),
                Ok(_) => false,
                Err(_) => true,
            };
        let mut info = match end {
            _ if taken_by_reboot => {
                let old = old_boot.as_ref().expect("checked");
                let _ = self
                    .wait_new_boot(old, self.opts.expect_reboot_deadline, Some(sink.as_ref()))
                    .await?;
                let mut info = ExitInfo::exited(0, Duration::ZERO);
                info.rebooted = true;
                info
            }
            Ok(ChannelEnd::Exited { code, signal }) => {
                let mut info = ExitInfo::exited(0, Duration::ZERO);
                info.code = code;
                info.signal = signal;
                if let Some(old) = &old_boot
                    && code == Some(0)
                {
                    let new = self
                        .wait_new_boot(old, self.opts.expect_reboot_deadline, Some(sink.as_ref()))
                        .await?;
                    info.rebooted = new != *old;
                }
                info
            }
            Ok(end @ (ChannelEnd::TimedOut | ChannelEnd::Cancelled)) => {
                if !ended.load(Ordering::SeqCst) {
                    self.kill_step(&pidfile, &tag, cmd.sudo, filter.as_ref())
                        .await;
                }
                ExitInfo::stopped(matches!(end, ChannelEnd::TimedOut), Duration::ZERO)
            }
            Err(e) => return Err(e),
        };
        self.finished_pidfiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pidfile);
        if let Some(why) = filter.not_started() {
            return Err(RemoteError::Io {
                context: format!("{}: the command could not start", self.name()),
                source: std::io::Error::other(why),
            });
        }
        info.duration = start.elapsed();
        info.leftovers = filter.leftovers();
        Ok(info)
    }

    /// A command without the supervisor ([`CommandSpec::bare`]): the login shell runs
    /// `/bin/sh -c` with the directory and environment, and its timeout or cancellation closes
    /// the channel.
    async fn run_bare(
        &self,
        cmd: &CommandSpec,
        sink: Arc<dyn OutputSink>,
        cancel: CancellationToken,
    ) -> Result<ExitInfo, RemoteError> {
        let start = Instant::now();
        let script = shell::inner_argv(cmd, &self.workdir).map_err(|m| RemoteError::Io {
            context: m,
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        let (deadline, pty, name) = (cmd.timeout.map(|t| start + t), cmd.pty, self.name());
        let end = self
            .with_conn(move |c, started| {
                run_channel(
                    c,
                    &script,
                    pty,
                    sink.as_ref(),
                    Some(&cancel),
                    deadline,
                    started,
                    None,
                )
                .map_err(|e| RemoteError::Disconnected {
                    target: name.clone(),
                    message: e.readable(),
                })
            })
            .await?;
        let mut info = match end {
            ChannelEnd::Exited { code, signal } => {
                let mut info = ExitInfo::exited(0, Duration::ZERO);
                info.code = code;
                info.signal = signal;
                info
            }
            ChannelEnd::TimedOut => ExitInfo::stopped(true, Duration::ZERO),
            ChannelEnd::Cancelled => ExitInfo::stopped(false, Duration::ZERO),
        };
        info.duration = start.elapsed();
        Ok(info)
    }

    /// The launch of an `expect_reboot` step did not answer: the step is over once the
    /// machine is back with a new boot, with the job's status if it left one (a machine whose
    /// boot id does not change is a reboot timeout, and a launch that never happened is one too).
    async fn launch_lost_to_reboot(
        &self,
        jobdir: &str,
        old: BootId,
        lost: &str,
        sink: &dyn OutputSink,
        start: Instant,
    ) -> Result<ExitInfo, RemoteError> {
        sink.note(&format!(
            "the launch did not answer ({lost}); waiting for the expected reboot"
        ));
        let new = self
            .wait_new_boot(&old, self.opts.expect_reboot_deadline, Some(sink))
            .await?;
        let status = self
            .capture(format!("cat {}/status", shell::quote(jobdir)))
            .await
            .ok()
            .filter(|c| c.status == 0)
            .and_then(|c| {
                String::from_utf8_lossy(&c.stdout)
                    .trim()
                    .parse::<i32>()
                    .ok()
            });
        if status.is_none() {
            sink.note("the machine rebooted during the step, as expected");
        }
        let mut info = ExitInfo::exited(status.unwrap_or(0), start.elapsed());
        info.rebooted = new != old;
        Ok(info)
    }

    async fn run_detached(
        &self,
        cmd: &CommandSpec,
        sink: Arc<dyn OutputSink>,
        cancel: CancellationToken,
    ) -> Result<ExitInfo, RemoteError> {
        let start = Instant::now();
        let jobdir = format!("{}/jobs/{}", self.state_dir(), unique_id());
        let tag = step_tag::new_tag();
        let script = shell::detached(
            cmd,
            &self.workdir,
            &jobdir,
            &self.opts.boot_id_path,
            &tag,
            KILL_GRACE,
        )
        .map_err(|m| RemoteError::Io {
            context: m,
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        // The supervisor's notes come in the job's stderr file.
        let filter = NoteFilter::new(sink.clone(), shell::note_marker(&tag));
        let sink: Arc<dyn OutputSink> = filter.clone();
        // A step that reboots at once can take the machine down before its launch answers.
        let boot_before = if cmd.expect_reboot {
            Some(self.read_boot_id().await?)
        } else {
            None
        };
        // It then loses its connection, or its shell is killed under it.
        let launched = self.capture(script).await;
        let confirmed =
            |l: &Captured| l.status == 0 && String::from_utf8_lossy(&l.stdout).contains("started");
        if let Some(old) = &boot_before {
            let lost = match &launched {
                Err(e @ RemoteError::Disconnected { .. }) => Some(e.to_string()),
                Ok(l) if !confirmed(l) && killed((l.status != -1).then_some(l.status)) => {
                    Some(format!("its shell was killed (exit status {})", l.status))
                }
                _ => None,
            };
            if let Some(lost) = lost {
                return self
                    .launch_lost_to_reboot(&jobdir, old.clone(), &lost, sink.as_ref(), start)
                    .await;
            }
        }
        let launched = launched?;
        if !confirmed(&launched) {
            return Err(RemoteError::Io {
                context: format!(
                    "{}: starting detached run in {jobdir} (exit status {})",
                    self.name(),
                    launched.status
                ),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&launched.stderr).trim().to_string(),
                ),
            });
        }
        // The boot the job started in: an expect-reboot step has read it already; otherwise
        // the launch wrote it down.
        let boot_at_start = match boot_before {
            Some(b) => Some(b.0),
            None => self
                .capture(format!("cat {}/boot", shell::quote(&jobdir)))
                .await
                .ok()
                .map(|c| String::from_utf8_lossy(&c.stdout).trim().to_string()),
        };
        sink.note(&format!("detached run started in {jobdir}"));
        let deadline = cmd.timeout.map(|t| start + t);
        let mut offsets = (0u64, 0u64);
        let mut info = ExitInfo::exited(0, Duration::ZERO);
        info.code = None;
        let mut lost_since: Option<Instant> = None;
        let (mut delay, max_delay) = self.opts.reconnect_backoff;
        loop {
            let follow = {
                let sink = sink.clone();
                let cancel = cancel.clone();
                let job = Job {
                    dir: jobdir.clone(),
                    boot_id_path: self.opts.boot_id_path.clone(),
                    deadline,
                    limit: self.opts.io_timeout,
                };
                let off = offsets;
                async {
                    let c = self.conn().await?;
                    tokio::task::spawn_blocking(move || {
                        follow_job(&c, &job, off, sink.as_ref(), &cancel)
                    })
                    .await
                    .map_err(|e| self.lost(e))
                }
                .await
            };
            match follow {
                Ok(Follow::Done { status }) => {
                    info.code = Some(status);
                    break;
                }
                Ok(Follow::Vanished { rebooted }) if rebooted && cmd.expect_reboot => {
                    // The step rebooted the machine, as declared; the reboot is its result.
                    sink.note("the machine rebooted during the step, as expected");
                    info.code = Some(0);
                    break;
                }
                Ok(Follow::Vanished { rebooted }) => {
                    return Err(self.lost(format!(
                        "detached run in {jobdir} ended without an exit status ({})",
                        if rebooted {
                            "the machine rebooted under it"
                        } else {
                            "its supervisor was killed"
                        }
                    )));
                }
                Ok(Follow::TimedOut) => {
                    sink.note(&format!(
                        "timed out after {}: ending the detached run's process group and every process of the command",
                        PlanDuration(cmd.timeout.unwrap_or_default())
                    ));
                    self.kill_step(&format!("{jobdir}/pgid"), &tag, cmd.sudo, sink.as_ref())
                        .await;
                    info = ExitInfo::stopped(true, Duration::ZERO);
                    break;
                }
                Ok(Follow::Cancelled) => {
                    self.kill_step(&format!("{jobdir}/pgid"), &tag, cmd.sudo, sink.as_ref())
                        .await;
                    info = ExitInfo::stopped(false, Duration::ZERO);
                    break;
                }
                Ok(Follow::Lost { offsets: o, error }) => {
                    offsets = o;
                    if lost_since.is_none() {
                        sink.note(&format!("connection lost ({error}); reattaching"));
                    }
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if let Some(c) = self.conn.lock().await.take() {
                        c.mark_dead();
                        tokio::task::spawn_blocking(move || drop(c));
                    }
                    if since.elapsed() > self.opts.reattach_deadline {
                        return Err(self.lost(format!(
                            "detached run in {jobdir} could not be reattached within {}: {error}",
                            PlanDuration(self.opts.reattach_deadline)
                        )));
                    }
                    if cancel.is_cancelled() {
                        info = ExitInfo::stopped(false, Duration::ZERO);
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max_delay);
                    continue;
                }
                Err(e) => {
                    // Could not even connect: keep trying within the reattach deadline.
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.opts.reattach_deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max_delay);
                    continue;
                }
            }
        }
        if lost_since.is_some() {
            sink.note("reattached to the detached run");
        }
        if let Some(b) = boot_at_start
            && let Ok(now) = self.read_boot_id().await
        {
            info.rebooted = !b.is_empty() && now.0 != b;
            // A script that asks for the reboot and exits at once finishes before the machine
            // goes down: the step is over only once the machine is back with a new boot.
            if cmd.expect_reboot && !info.rebooted && info.code == Some(0) && !b.is_empty() {
                let old = BootId(b);
                let new = self
                    .wait_new_boot(&old, self.opts.expect_reboot_deadline, Some(sink.as_ref()))
                    .await?;
                info.rebooted = new != old;
            }
        }
        filter.finish();
        info.duration = start.elapsed();
        info.leftovers = filter.leftovers();
        Ok(info)
    }
}

enum Follow {
    Done {
        status: i32,
    },
    TimedOut,
    Cancelled,
    Lost {
        offsets: (u64, u64),
        error: String,
    },
    /// The supervisor is gone and left no status: killed, or the machine rebooted under it.
    Vanished {
        rebooted: bool,
    },
}

/// Is the job's supervisor still there? Asked when following starts (after every reattach) and
/// every few seconds, so that a job that died without writing its status (a real reboot, the
/// OOM killer) does not keep us waiting until the timeout.
fn job_liveness(
    conn: &Conn,
    jobdir: &str,
    boot_id_path: &str,
    limit: Duration,
) -> Option<&'static str> {
    let jd = shell::quote(jobdir);
    // The supervisor is recognised by its command line (which names the job directory), so that
    // a pid reused after a reboot is not mistaken for it; without /proc, `kill -0` within the
    // same boot has to do.
    let cmd = format!(
        "b_now=$(cat {boot} 2>/dev/null); b_job=$(cat {jd}/boot 2>/dev/null); p=$(cat {jd}/pgid 2>/dev/null); \
         if [ -e {jd}/status ]; then echo done; \
         elif [ -n \"$p\" ] && [ -r /proc/$p/cmdline ] && tr '\\000' ' ' < /proc/$p/cmdline | grep -qF -- {jd}; then echo alive; \
         elif [ ! -d /proc/self ] && [ \"$b_now\" = \"$b_job\" ] && kill -0 \"$p\" 2>/dev/null; then echo alive; \
         elif [ \"$b_now\" != \"$b_job\" ]; then echo rebooted; else echo gone; fi",
        boot = shell::quote(boot_id_path)
    );
    let out = exec_capture(conn, &cmd, limit, &AtomicBool::new(false)).ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "done" => Some("done"),
        "rebooted" => Some("rebooted"),
        "alive" => Some("alive"),
        "gone" => Some("gone"),
        _ => None,
    }
}

/// A detached job being followed.
struct Job {
    dir: String,
    boot_id_path: String,
    deadline: Option<Instant>,
    /// Longest wait for one request/response exchange.
    limit: Duration,
}

/// Follows a detached job's output files from `offsets` until its status file appears.
fn follow_job(
    conn: &Conn,
    job: &Job,
    mut offsets: (u64, u64),
    sink: &dyn OutputSink,
    cancel: &CancellationToken,
) -> Follow {
    let (jobdir, deadline, limit, boot_id_path) = (
        job.dir.as_str(),
        job.deadline,
        job.limit,
        job.boot_id_path.as_str(),
    );
    let sftp = match SftpChannel::open(conn, limit) {
        Ok(s) => s,
        Err(e) => {
            return Follow::Lost {
                offsets,
                error: e.readable(),
            };
        }
    };
    let out = format!("{jobdir}/out");
    let err = format!("{jobdir}/err");
    let status = format!("{jobdir}/status");
    let mut idle = Duration::from_millis(20);
    let mut last_check: Option<Instant> = None;
    loop {
        let mut vanished = None;
        if last_check.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
            last_check = Some(Instant::now());
            match job_liveness(conn, jobdir, boot_id_path, limit) {
                Some("rebooted") => vanished = Some(true),
                Some("gone") => vanished = Some(false),
                _ => {}
            }
        }
        // Read the status first: once it exists, the output files are complete.
        let finished = match sftp.read_from(&status, 0) {
            Ok(s) => Some(
                String::from_utf8_lossy(&s)
                    .trim()
                    .parse::<i32>()
                    .unwrap_or(-1),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                if conn.is_dead() {
                    return Follow::Lost {
                        offsets,
                        error: e.readable(),
                    };
                }
                None
            }
        };
        let mut progressed = false;
        for (i, path, stream) in [
            (0, &out, OutputStream::Stdout),
            (1, &err, OutputStream::Stderr),
        ] {
            let off = if i == 0 { offsets.0 } else { offsets.1 };
            match sftp.read_from(path, off) {
                Ok(data) if !data.is_empty() => {
                    sink.output(stream, &data);
                    let n = data.len() as u64;
                    if i == 0 {
                        offsets.0 += n
                    } else {
                        offsets.1 += n
                    }
                    progressed = true;
                }
                Ok(_) => {}
                Err(e) => {
                    if conn.is_dead() {
                        return Follow::Lost {
                            offsets,
                            error: e.readable(),
                        };
                    }
                }
            }
        }
        if let Some(status) = finished {
            return Follow::Done { status };
        }
        if let Some(rebooted) = vanished {
            return Follow::Vanished { rebooted };
        }
        if cancel.is_cancelled() {
            return Follow::Cancelled;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Follow::TimedOut;
        }
        if progressed {
            idle = Duration::from_millis(20);
        } else {
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(250));
        }
    }
}

#[async_trait]
impl RemoteExecutor for SshExecutor {
    fn describe(&self) -> String {
        let t = &self.target;
        let mut s = format!("ssh://{}@{}:{}", t.user, t.host, t.port);
        if !t.jumps.is_empty() {
            let hops: Vec<String> = t
                .jumps
                .iter()
                .map(|j| format!("{}@{}:{}", j.user, j.host, j.port))
                .collect();
            s.push_str(&format!(" via {}", hops.join(",")));
        }
        s
    }

    async fn run(
        &self,
        cmd: &CommandSpec,
        sink: Arc<dyn OutputSink>,
        cancel: CancellationToken,
    ) -> Result<ExitInfo, RemoteError> {
        if cmd.detached {
            self.run_detached(cmd, sink, cancel).await
        } else if cmd.bare {
            self.run_bare(cmd, sink, cancel).await
        } else {
            self.run_foreground(cmd, sink, cancel).await
        }
    }

    async fn put_file(
        &self,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), RemoteError> {
        let remote = shell::resolve(&self.workdir, remote);
        let local = local.to_path_buf();
        let limit = self.opts.io_timeout;
        let name = self.name();
        self.with_conn(move |c, _started| {
            let sftp = SftpChannel::open(c, limit).map_err(|e| RemoteError::Disconnected {
                target: name.clone(),
                message: e.readable(),
            })?;
            sftp.upload(&local, &remote, mode).map(|_| ())
        })
        .await
    }

    async fn put_tree(&self, local: &Path, remote: &str) -> Result<u64, RemoteError> {
        let remote = shell::resolve(&self.workdir, remote);
        let local = local.to_path_buf();
        let limit = self.opts.io_timeout;
        let name = self.name();
        self.with_conn(move |c, _started| {
            let sftp = SftpChannel::open(c, limit).map_err(|e| RemoteError::Disconnected {
                target: name.clone(),
                message: e.readable(),
            })?;
            transfer::put_tree(&sftp, &local, &remote)
        })
        .await
    }

    async fn get_file(&self, remote: &str, local: &Path) -> Result<(), RemoteError> {
        let remote = shell::resolve(&self.workdir, remote);
        let local = local.to_path_buf();
        let limit = self.opts.io_timeout;
        let name = self.name();
        self.with_conn(move |c, _started| {
            let sftp = SftpChannel::open(c, limit).map_err(|e| RemoteError::Disconnected {
                target: name.clone(),
                message: e.readable(),
            })?;
            sftp.download(&remote, &local).map(|_| ())
        })
        .await
    }

    async fn collect(&self, patterns: &[String], dest: &Path) -> Result<Vec<PathBuf>, RemoteError> {
        let root = self.workdir.trim_end_matches('/').to_string();
        for p in patterns {
            transfer::check_pattern(p, &root)?;
        }
        let patterns = patterns.to_vec();
        let dest = dest.to_path_buf();
        let limit = self.opts.io_timeout;
        let name = self.name();
        self.with_conn(move |c, _started| {
            let sftp = SftpChannel::open(c, limit).map_err(|e| RemoteError::Disconnected {
                target: name.clone(),
                message: e.readable(),
            })?;
            let rels = transfer::find_matches(&sftp, &root, &patterns)?;
            let mut written = Vec::new();
            for rel in rels {
                let local = transfer::local_dest(&dest, &rel)?;
                sftp.download(&format!("{root}/{rel}"), &local)?;
                written.push(local);
            }
            Ok(written)
        })
        .await
    }

    async fn boot_id(&self) -> Result<BootId, RemoteError> {
        self.read_boot_id().await
    }

    async fn reboot(&self, deadline: Duration) -> Result<BootId, RemoteError> {
        let old = self.read_boot_id().await?;
        // In the background, so that the channel closes cleanly before the machine goes down.
        let cmd = format!(
            "setsid /bin/sh -c {} < /dev/null > /dev/null 2>&1 &",
            shell::quote(&format!("sleep 0.2; {}", self.opts.reboot_command))
        );
        let started = self.capture(cmd).await;
        if let Err(e) = &started {
            // A connection cut by the reboot itself is fine; anything else shows up as a timeout.
            tracing::debug!(target = %self.name(), "reboot command: {e}");
        }
        self.wait_new_boot(&old, deadline, None).await
    }

    async fn close(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = tokio::task::spawn_blocking(move || drop(c)).await;
        }
    }
}

/// Makes [`SshExecutor`]s for machines with [`Access::Ssh`].
///
/// An executor it made that is dropped without being [closed](RemoteExecutor::close) leaves its
/// connection with the connector for a short while, and the next executor it makes for the same
/// target takes it instead of logging in again: a static host verified by its provisioner is
/// then used by the run over the connection the verification opened.
#[derive(Debug, Clone, Default)]
pub struct SshConnector {
    /// Options for every executor it makes.
    pub options: SshOptions,
    idle: Arc<IdleConns>,
}

impl SshConnector {
    /// A connector with `options`.
    pub fn new(options: SshOptions) -> Self {
        SshConnector {
            options,
            idle: Arc::default(),
        }
    }
}

#[async_trait]
impl Connector for SshConnector {
    async fn connect(&self, machine: &Machine) -> Result<Arc<dyn RemoteExecutor>, RemoteError> {
        let Access::Ssh(target) = &machine.access else {
            return Err(RemoteError::Unsupported {
                executor: "ssh".into(),
                operation: format!("machine {} without SSH access", machine.name),
            });
        };
        let mut exec = SshExecutor::new(
            target.clone(),
            machine.workdir.clone(),
            self.options.clone(),
        );
        exec.idle = Some(self.idle.clone());
        match self.idle.take(&IdleConns::key(target)) {
            Some(conn) => *exec.conn.get_mut() = Some(conn),
            None => exec.connect().await?,
        }
        Ok(Arc::new(exec))
    }
}

/// Host-key policy helper: the run-local known_hosts file under a run directory.
pub fn trust_first_use_in(run_dir: &Path) -> HostKeyPolicy {
    HostKeyPolicy::TrustFirstUse {
        known_hosts: run_dir.join("known_hosts"),
    }
}
