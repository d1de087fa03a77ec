//! One authenticated libssh2 session and the rules for sharing it between threads.
//!
//! The session runs in non-blocking mode so that many channels (commands, SFTP transfers, the
//! jump-host bridge) can make progress at once. libssh2 keeps per-session state for operations
//! that span several packets (opening a channel, a half-sent packet), so two threads must never
//! interleave such operations. [`Conn::call`] encodes the rule:
//!
//! - every libssh2 call is made while holding the connection's operation lock;
//! - when a call would block because a packet is half sent, or the call has session-wide state
//!   ([`Wait::Session`]: channel open, exec, SFTP start-up, keepalive), the caller keeps the lock
//!   and waits on the socket, so nobody else can disturb that state;
//! - when a channel or SFTP-file call ([`Wait::Channel`]) only waits for inbound data, the lock is
//!   released while waiting, so other channels proceed.
//!
//! Waits poll the socket with a short timeout, because another thread may consume the bytes a
//! waiter was woken for (libssh2 then queues them on the right channel).

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qa_core::{HostKeyPolicy, RemoteError, SshTarget};
use ssh2::{BlockDirections, ErrorCode, Session};

use super::hostkeys;

/// How a waiting call treats the operation lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Keep the lock while waiting: the operation has session-wide state.
    Session,
    /// Release the lock while waiting for inbound data: the state is per channel or file.
    Channel,
}

/// An error of the SSH layer as people read it: an ssh2 error's own message, without the code
/// (`[Session(-9)]`) its `Display` puts first, also when it is inside an I/O error.
pub(crate) trait Readable {
    fn readable(&self) -> String;
}

impl Readable for ssh2::Error {
    fn readable(&self) -> String {
        match (self.message(), self.code()) {
            ("", ErrorCode::Session(n)) => format!("libssh2 error {n}"),
            ("", ErrorCode::SFTP(n)) => format!("SFTP error {n}"),
            (m, _) => m.to_string(),
        }
    }
}

impl Readable for io::Error {
    fn readable(&self) -> String {
        match self.get_ref().and_then(|e| e.downcast_ref::<ssh2::Error>()) {
            Some(e) => e.readable(),
            None => self.to_string(),
        }
    }
}

/// Errors that may mean "try again later".
pub(crate) trait WouldBlock {
    fn would_block(&self) -> bool;
    /// The transport is gone (the connection must be re-established).
    fn is_fatal(&self) -> bool;
    /// An error for "the connection is gone" or "no answer in time".
    fn lost(timed_out: bool) -> Self;
}

const LIBSSH2_ERROR_EAGAIN: i32 = -37;

impl WouldBlock for ssh2::Error {
    fn would_block(&self) -> bool {
        self.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
    }
    fn is_fatal(&self) -> bool {
        // Socket send/recv/disconnect/timeout, kex and protocol failures, "bad use" (a
        // corrupted state machine): none of these leave a usable session.
        matches!(self.code(), ErrorCode::Session(c) if matches!(c, -5 | -7 | -9 | -13 | -14 | -34 | -39 | -43 | -8 | -3 | -4))
    }
    fn lost(timed_out: bool) -> Self {
        if timed_out {
            ssh2::Error::new(ErrorCode::Session(-9), "no answer from the server in time")
        } else {
            ssh2::Error::new(ErrorCode::Session(-13), "connection lost")
        }
    }
}

impl WouldBlock for io::Error {
    fn would_block(&self) -> bool {
        self.kind() == io::ErrorKind::WouldBlock
    }
    fn is_fatal(&self) -> bool {
        matches!(
            self.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::TimedOut
                | io::ErrorKind::UnexpectedEof
        ) || self
            .get_ref()
            .and_then(|e| e.downcast_ref::<ssh2::Error>())
            .is_some_and(|e| e.is_fatal())
    }
    fn lost(timed_out: bool) -> Self {
        if timed_out {
            io::Error::new(io::ErrorKind::TimedOut, "no answer from the server in time")
        } else {
            io::Error::new(io::ErrorKind::ConnectionAborted, "connection lost")
        }
    }
}

/// Settings that shape a connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    pub connect_timeout: Duration,
    /// Longest wait for one request/response exchange before the connection is declared dead.
    pub io_timeout: Duration,
    pub keepalive: Duration,
    pub known_hosts: Vec<PathBuf>,
    pub use_agent: bool,
}

/// An authenticated session, maybe tunnelled through other sessions.
pub(crate) struct Conn {
    pub sess: Session,
    fd: RawFd,
    lock: Mutex<()>,
    dead: AtomicBool,
    pub target: String,
    /// Outer hops and the bridge that carries this session's bytes; kept alive with it.
    _tunnel: Option<Tunnel>,
    keepalive_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("target", &self.target)
            .field("dead", &self.is_dead())
            .finish()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.keepalive_stop.store(true, Ordering::SeqCst);
        let _g = self.lock.lock();
        self.sess.set_blocking(true);
        self.sess.set_timeout(500);
        let _ = self.sess.disconnect(None, "bye", None);
    }
}

impl Conn {
    /// The key exchange and client-to-server cipher the session negotiated.
    pub fn negotiated(&self) -> (String, String) {
        let _g = self.lock.lock();
        (
            self.sess
                .methods(ssh2::MethodType::Kex)
                .unwrap_or_default()
                .to_string(),
            self.sess
                .methods(ssh2::MethodType::CryptCs)
                .unwrap_or_default()
                .to_string(),
        )
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    pub fn mark_dead(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` until it stops saying "would block", following the locking rule in the module
    /// docs. Gives up with a timeout after `limit` (if any) of waiting.
    pub fn call<T, E: WouldBlock>(
        &self,
        wait: Wait,
        limit: Option<Duration>,
        mut f: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let mut guard = Some(self.guard());
        loop {
            if self.is_dead() {
                return Err(E::lost(false));
            }
            if guard.is_none() {
                guard = Some(self.guard());
            }
            match f() {
                Err(e) if e.would_block() => {
                    let dirs = self.sess.block_directions();
                    let outbound =
                        matches!(dirs, BlockDirections::Outbound | BlockDirections::Both);
                    if wait == Wait::Channel && !outbound {
                        guard = None;
                    }
                    if let Some(limit) = limit
                        && start.elapsed() > limit
                    {
                        self.mark_dead();
                        return Err(E::lost(true));
                    }
                    poll_fd(self.fd, dirs, 20);
                }
                Err(e) => {
                    if e.is_fatal() {
                        self.mark_dead();
                    }
                    return Err(e);
                }
                Ok(v) => return Ok(v),
            }
        }
    }

    /// One attempt at a channel read-like call: `Ok(None)` if it would only wait for inbound data.
    pub fn try_once<T, E: WouldBlock>(
        &self,
        mut f: impl FnMut() -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        let _g = self.guard();
        loop {
            if self.is_dead() {
                return Err(E::lost(false));
            }
            match f() {
                Err(e) if e.would_block() => {
                    let dirs = self.sess.block_directions();
                    if matches!(dirs, BlockDirections::Outbound | BlockDirections::Both) {
                        poll_fd(self.fd, dirs, 20);
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => {
                    if e.is_fatal() {
                        self.mark_dead();
                    }
                    return Err(e);
                }
                Ok(v) => return Ok(Some(v)),
            }
        }
    }

    /// Waits until the socket is readable or `ms` pass (used between [`Conn::try_once`] rounds).
    pub fn wait_readable(&self, ms: i32) {
        poll_fd(self.fd, BlockDirections::Inbound, ms);
    }

    /// Drops a libssh2 object (channel, SFTP handle) under the lock: their destructors talk to
    /// the server in blocking mode and must not interleave with other threads' calls.
    pub fn drop_locked<T>(&self, value: T) {
        let _g = self.guard();
        drop(value);
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }
}

fn poll_fd(fd: RawFd, dirs: BlockDirections, ms: i32) {
    let events = match dirs {
        BlockDirections::Inbound | BlockDirections::None => libc::POLLIN,
        BlockDirections::Outbound => libc::POLLOUT,
        BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
    };
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack. Errors (EINTR) just end this wait early.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// The outer hop of a tunnelled session and the thread pumping bytes between them.
struct Tunnel {
    _outer: Arc<Conn>,
    stop: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

/// `user@host:port`, with the hops in front.
pub(crate) fn describe_target(t: &SshTarget) -> String {
    let mut s = String::new();
    for j in &t.jumps {
        s.push_str(&format!("{}@{}:{} -> ", j.user, j.host, j.port));
    }
    s.push_str(&format!("{}@{}:{}", t.user, t.host, t.port));
    s
}

fn connect_err(
    target: &str,
    message: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> RemoteError {
    RemoteError::Connect {
        target: target.to_string(),
        message: message.into(),
        source,
    }
}

/// Connects to `target`, through its jump hosts (outermost first), verifying host keys and
/// authenticating at every hop. Blocking: call from a blocking thread.
pub(crate) fn connect(
    target: &SshTarget,
    settings: &ConnSettings,
) -> Result<Arc<Conn>, RemoteError> {
    let mut outer: Option<Arc<Conn>> = None;
    for hop in target.jumps.iter().chain(std::iter::once(target)) {
        // A hop inherits nothing from the target except what it states itself; a jump without a
        // key uses the target's key (the usual "same key everywhere" bastion set-up).
        let mut hop = hop.clone();
        if hop.identity_file.is_none() {
            hop.identity_file = target.identity_file.clone();
            hop.passphrase_env = hop.passphrase_env.or_else(|| target.passphrase_env.clone());
        }
        let conn = match outer.take() {
            None => connect_direct(&hop, settings)?,
            Some(o) => connect_through(o, &hop, settings)?,
        };
        outer = Some(conn);
    }
    Ok(outer.expect("at least one hop"))
}

fn connect_direct(hop: &SshTarget, settings: &ConnSettings) -> Result<Arc<Conn>, RemoteError> {
    let name = format!("{}@{}:{}", hop.user, hop.host, hop.port);
    let addrs: Vec<_> = (hop.host.as_str(), hop.port)
        .to_socket_addrs()
        .map_err(|e| connect_err(&name, "cannot resolve host", Some(Box::new(e))))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, settings.connect_timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match tcp {
        Some(t) => t,
        None => {
            let e = last.unwrap_or_else(|| io::Error::other("no address"));
            return Err(connect_err(
                &name,
                format!("TCP connect failed: {e}"),
                Some(Box::new(e)),
            ));
        }
    };
    // Small request/response exchanges dominate; Nagle would add delayed-ACK stalls to each.
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    set_tcp_keepalive(fd, settings.keepalive);
    establish(hop, settings, tcp, fd, None)
}

/// SSH keepalives only prove the path works while we write; a peer that vanished without a FIN
/// (a machine powered off, a dropped route) would leave a waiting read hanging. TCP keepalive
/// makes the kernel fail the socket after `idle` plus three unanswered probes 5 s apart, which
/// turns into a dead connection and a reconnect.
fn set_tcp_keepalive(fd: RawFd, idle: Duration) {
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    #[cfg(target_os = "linux")]
    {
        set(
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            idle.as_secs().clamp(1, 3600) as libc::c_int,
        );
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = idle;
}

fn connect_through(
    outer: Arc<Conn>,
    hop: &SshTarget,
    settings: &ConnSettings,
) -> Result<Arc<Conn>, RemoteError> {
    let name = format!("{}@{}:{}", hop.user, hop.host, hop.port);
    let limit = Some(settings.io_timeout);
    let channel = outer
        .call(Wait::Session, limit, || {
            outer.sess.channel_direct_tcpip(&hop.host, hop.port, None)
        })
        .map_err(|e| {
            connect_err(
                &name,
                format!(
                    "jump host {} refused to forward: {}",
                    outer.target,
                    e.readable()
                ),
                Some(Box::new(e)),
            )
        })?;
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| connect_err(&name, "socketpair", Some(Box::new(e))))?;
    let stop = Arc::new(AtomicBool::new(false));
    let pump = {
        let outer = outer.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("ssh-tunnel {name}"))
            .spawn(move || pump_tunnel(outer, channel, theirs, stop))
            .map_err(|e| connect_err(&name, "cannot start tunnel thread", Some(Box::new(e))))?
    };
    let fd = ours.as_raw_fd();
    let tunnel = Tunnel {
        _outer: outer,
        stop,
        pump: Some(pump),
    };
    establish(hop, settings, ours, fd, Some(tunnel))
}

/// Moves bytes between the inner session's socket and the outer session's direct-tcpip channel
/// until either side closes.
fn pump_tunnel(
    outer: Arc<Conn>,
    mut channel: ssh2::Channel,
    sock: UnixStream,
    stop: Arc<AtomicBool>,
) {
    use std::io::{Read, Write};
    let _ = sock.set_nonblocking(true);
    let mut sock_r = &sock;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new(); // from the channel, not yet written to the socket
    let mut sock_eof = false;
    'outer: while !stop.load(Ordering::SeqCst) && !outer.is_dead() {
        let mut progressed = false;
        // socket -> channel
        if !sock_eof {
            match sock_r.read(&mut buf) {
                Ok(0) => {
                    sock_eof = true;
                    let _ = outer.call(Wait::Channel, Some(Duration::from_secs(5)), || {
                        channel.send_eof()
                    });
                }
                Ok(n) => {
                    progressed = true;
                    let mut off = 0;
                    while off < n {
                        match outer.call(Wait::Channel, None, || channel.write(&buf[off..n])) {
                            Ok(w) => off += w,
                            Err(_) => break 'outer,
                        }
                        if stop.load(Ordering::SeqCst) {
                            break 'outer;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        // channel -> socket
        if pending.is_empty() {
            match outer.try_once(|| channel.read(&mut buf)) {
                Ok(Some(0)) => {
                    if channel.eof() {
                        break;
                    }
                }
                Ok(Some(n)) => {
                    progressed = true;
                    pending.extend_from_slice(&buf[..n]);
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            match (&sock).write(&pending) {
                Ok(n) => {
                    progressed = true;
                    pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if !progressed {
            let mut fds = [
                libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: if sock_eof { 0 } else { libc::POLLIN },
                    revents: 0,
                },
                libc::pollfd {
                    fd: outer.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if !pending.is_empty() {
                fds[0].events |= libc::POLLOUT;
            }
            // SAFETY: two valid pollfds on the stack.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 10) };
        }
    }
    let _ = outer.call(Wait::Channel, Some(Duration::from_secs(2)), || {
        channel.close()
    });
    outer.drop_locked(channel);
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

/// Key exchanges in order of preference: curve25519 first (one cheap scalar multiplication
/// each side), then the ones libssh2 falls back on.
const KEX: &str = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,\
ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group16-sha512,\
diffie-hellman-group14-sha256,diffie-hellman-group-exchange-sha256";

/// Ciphers in order of preference: AES-GCM first (AES in hardware, encryption and integrity in
/// one pass), then ChaCha20-Poly1305 and AES-CTR.
const CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

fn establish<S: AsRawFd + 'static>(
    hop: &SshTarget,
    settings: &ConnSettings,
    stream: S,
    fd: RawFd,
    tunnel: Option<Tunnel>,
) -> Result<Arc<Conn>, RemoteError> {
    let name = format!("{}@{}:{}", hop.user, hop.host, hop.port);
    let mut sess =
        Session::new().map_err(|e| connect_err(&name, "libssh2 session", Some(Box::new(e))))?;
    sess.set_tcp_stream(stream);
    // Handshake and authentication are done blocking (this is a fresh session nobody else uses),
    // bounded by the connect timeout.
    sess.set_blocking(true);
    sess.set_timeout(settings.connect_timeout.as_millis().min(u32::MAX as u128) as u32);
    let plan = hostkeys::HostKeyCheck::new(hop, settings);
    if let Some(prefs) = plan.preferred_algorithms(&sess) {
        let _ = sess.method_pref(ssh2::MethodType::HostKey, &prefs);
    }
    // A server that offers none of these still gets libssh2's whole list: method_pref keeps
    // only what this libssh2 supports, and the server picks from what is left.
    let _ = sess.method_pref(ssh2::MethodType::Kex, KEX);
    let _ = sess.method_pref(ssh2::MethodType::CryptCs, CIPHERS);
    let _ = sess.method_pref(ssh2::MethodType::CryptSc, CIPHERS);
    sess.handshake().map_err(|e| {
        connect_err(
            &name,
            format!("SSH handshake failed: {}", e.readable()),
            Some(Box::new(e)),
        )
    })?;
    plan.verify(&sess)?;
    authenticate(&sess, hop, settings, &name)?;
    sess.set_keepalive(true, settings.keepalive.as_secs().max(1) as u32);
    sess.set_blocking(false);
    let conn = Arc::new(Conn {
        sess,
        fd,
        lock: Mutex::new(()),
        dead: AtomicBool::new(false),
        target: name.clone(),
        _tunnel: tunnel,
        keepalive_stop: Arc::new(AtomicBool::new(false)),
    });
    start_keepalive(&conn, settings.keepalive);
    if matches!(hop.host_keys, HostKeyPolicy::Insecure) {
        tracing::warn!(target = %name, "host key checking is OFF for this connection (policy: insecure)");
    }
    Ok(conn)
}

/// Sends keepalives so that idle connections survive NAT and firewalls, and notices a dead
/// transport between steps.
fn start_keepalive(conn: &Arc<Conn>, every: Duration) {
    let weak = Arc::downgrade(conn);
    let stop = conn.keepalive_stop.clone();
    let _ = std::thread::Builder::new()
        .name("ssh-keepalive".into())
        .spawn(move || {
            let tick = Duration::from_millis(200);
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < every {
                    continue;
                }
                waited = Duration::ZERO;
                let Some(conn) = weak.upgrade() else { return };
                if conn.is_dead() {
                    return;
                }
                if let Err(e) = conn.call(Wait::Session, Some(Duration::from_secs(10)), || {
                    conn.sess.keepalive_send()
                }) {
                    tracing::debug!(target = %conn.target, "keepalive failed: {e}");
                    conn.mark_dead();
                    return;
                }
            }
        });
}

fn authenticate(
    sess: &Session,
    hop: &SshTarget,
    settings: &ConnSettings,
    name: &str,
) -> Result<(), RemoteError> {
    let mut tried = Vec::new();
    let passphrase = hop
        .passphrase_env
        .as_ref()
        .and_then(|v| std::env::var(v).ok());
    if let Some(v) = &hop.passphrase_env
        && passphrase.is_none()
    {
        tried.push(format!("passphrase variable {v} is not set"));
    }
    let mut key_files: Vec<PathBuf> = Vec::new();
    if let Some(k) = &hop.identity_file {
        key_files.push(expand_home(k));
    }
    let try_key = |key: &Path, tried: &mut Vec<String>| -> bool {
        match sess.userauth_pubkey_file(&hop.user, None, key, passphrase.as_deref()) {
            Ok(()) if sess.authenticated() => true,
            Ok(()) => false,
            Err(e) => {
                tried.push(format!("key {}: {}", key.display(), e.readable()));
                false
            }
        }
    };
    for k in &key_files {
        if try_key(k, &mut tried) {
            return Ok(());
        }
    }
    if settings.use_agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match agent_auth(sess, &hop.user) {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push("ssh-agent: no identity accepted".into()),
            Err(e) => tried.push(format!("ssh-agent: {}", e.readable())),
        }
    }
    if hop.identity_file.is_none()
        && let Some(home) = std::env::var_os("HOME")
    {
        for n in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let k = Path::new(&home).join(".ssh").join(n);
            if k.is_file() && try_key(&k, &mut tried) {
                return Ok(());
            }
        }
    }
    if tried.is_empty() {
        tried.push("no identity file, no ssh-agent, no default key".into());
    }
    Err(connect_err(
        name,
        format!("authentication failed ({})", tried.join("; ")),
        None,
    ))
}

fn agent_auth(sess: &Session, user: &str) -> Result<bool, ssh2::Error> {
    let mut agent = sess.agent()?;
    agent.connect()?;
    agent.list_identities()?;
    for id in agent.identities()? {
        if agent.userauth(user, &id).is_ok() && sess.authenticated() {
            let _ = agent.disconnect();
            return Ok(true);
        }
    }
    let _ = agent.disconnect();
    Ok(false)
}

pub(crate) fn expand_home(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    p.to_path_buf()
}
