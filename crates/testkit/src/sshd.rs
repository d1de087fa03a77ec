//! Real OpenSSH servers on loopback ports: [`TestSshd`] with its own host key, config, log and
//! boot id, the process-wide [`ClientKeys`] every server accepts, a [`Bastion`] in front of a
//! guest, and a [`Fleet`] of servers. A server can be killed with its connections, restarted on
//! the same port, given a new host key, and "rebooted" (restarted with a new boot id) from
//! outside or by a command run on it.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qa_core::{HostKeyPolicy, SshTarget};

use crate::net;
use crate::procs::{self, kill_tree};

/// The environment variable that turns a missing `sshd` from a skip into a failure.
pub const REQUIRE_SSHD_ENV: &str = "QA_REQUIRE_SSHD";

/// Where `sshd` is, if it is installed.
pub fn find_sshd() -> Option<PathBuf> {
    for candidate in ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"] {
        if Path::new(candidate).is_file() {
            return Some(candidate.into());
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("sshd"))
        .find(|p| p.is_file())
}

/// `sshd`, or `None` after printing why the test is skipped. Panics if `sshd` is missing and
/// [`REQUIRE_SSHD_ENV`] is set.
pub fn sshd_or_skip() -> Option<PathBuf> {
    match find_sshd() {
        Some(p) => Some(p),
        None if std::env::var_os(REQUIRE_SSHD_ENV).is_some() => {
            panic!("sshd not found and {REQUIRE_SSHD_ENV} is set: install openssh-server")
        }
        None => {
            eprintln!(
                "SKIPPED: sshd not found (install openssh-server; set {REQUIRE_SSHD_ENV}=1 to make this a failure)"
            );
            None
        }
    }
}

/// Kind of a client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ed25519.
    Ed25519,
    /// ECDSA on nistp256.
    Ecdsa,
    /// RSA, 3072 bits.
    Rsa,
}

impl KeyKind {
    /// All kinds.
    pub const ALL: [KeyKind; 3] = [KeyKind::Ed25519, KeyKind::Ecdsa, KeyKind::Rsa];

    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 => &["-t", "ed25519"],
            KeyKind::Ecdsa => &["-t", "ecdsa", "-b", "256"],
            KeyKind::Rsa => &["-t", "rsa", "-b", "3072"],
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "id_ed25519",
            KeyKind::Ecdsa => "id_ecdsa",
            KeyKind::Rsa => "id_rsa",
        }
    }
}

/// Client key pairs shared by every server a test process starts (generated once per process,
/// because RSA generation is slow). All are in every server's authorized_keys.
#[derive(Debug)]
pub struct ClientKeys {
    dir: PathBuf,
    /// The passphrase of [`ClientKeys::encrypted_ed25519`].
    pub passphrase: String,
}

impl ClientKeys {
    /// The process-wide keys.
    pub fn shared() -> &'static ClientKeys {
        static KEYS: OnceLock<ClientKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            // Kept for the life of the process (servers started later still need the files), so
            // named by pid; directories of test processes that have ended are removed here.
            remove_stale_key_dirs();
            let dir = std::env::temp_dir().join(format!("{KEY_DIR_PREFIX}{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("client key dir");
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            let passphrase = "correct horse battery staple".to_string();
            for kind in KeyKind::ALL {
                keygen(&dir.join(kind.file_name()), kind.keygen_args(), "")
                    .expect("ssh-keygen client key");
            }
            keygen(&dir.join("id_ed25519_enc"), &["-t", "ed25519"], &passphrase)
                .expect("ssh-keygen encrypted key");
            let mut auth = String::new();
            for name in ["id_ed25519", "id_ecdsa", "id_rsa", "id_ed25519_enc"] {
                auth.push_str(
                    fs::read_to_string(dir.join(format!("{name}.pub")))
                        .expect("public key")
                        .trim(),
                );
                auth.push('\n');
            }
            fs::write(dir.join("authorized_keys"), auth).expect("authorized_keys");
            ClientKeys { dir, passphrase }
        })
    }

    /// Private key file of `kind` (no passphrase).
    pub fn private(&self, kind: KeyKind) -> PathBuf {
        self.dir.join(kind.file_name())
    }

    /// An ed25519 private key encrypted with [`ClientKeys::passphrase`].
    pub fn encrypted_ed25519(&self) -> PathBuf {
        self.dir.join("id_ed25519_enc")
    }

    /// The authorized_keys file listing every client key.
    pub fn authorized_keys(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }
}

const KEY_DIR_PREFIX: &str = "qa-testkit-keys-";

fn remove_stale_key_dirs() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix(KEY_DIR_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn keygen(path: &Path, args: &[&str], passphrase: &str) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", passphrase, "-C", "qa-testkit", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ssh-keygen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// How a [`TestSshd`] is set up.
#[derive(Debug, Clone)]
pub struct SshdConfig {
    /// Address to listen on (default 127.0.0.1).
    pub listen: IpAddr,
    /// Allow `direct-tcpip` forwarding (a bastion needs it).
    pub allow_tcp_forwarding: bool,
    /// Restrict forwarding to these `host:port` destinations.
    pub permit_open: Vec<String>,
    /// sshd `LogLevel`; DEBUG1 records forwarding requests.
    pub log_level: String,
    /// Extra `sshd_config` lines.
    pub extra: Vec<String>,
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            allow_tcp_forwarding: false,
            permit_open: Vec::new(),
            log_level: "VERBOSE".into(),
            extra: Vec::new(),
        }
    }
}

/// What the harness does when the host asks for a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootBehaviour {
    /// Kill sshd and its connections, write a new boot id, start sshd again.
    ComeBack,
    /// Kill sshd and its connections and never start it again.
    NeverReturn,
}

struct Shared {
    child: Option<Child>,
    behaviour: RebootBehaviour,
    reboots: u32,
}

/// A running OpenSSH server on a loopback port. Killed, with its connections, on drop.
pub struct TestSshd {
    sshd: PathBuf,
    dir: tempfile::TempDir,
    config: SshdConfig,
    port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestSshd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSshd")
            .field("addr", &self.addr())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TestSshd {
    /// Starts a server with the default configuration, or returns `None` (after saying why) if
    /// `sshd` is missing and `QA_REQUIRE_SSHD` is unset.
    pub fn start_or_skip() -> Option<TestSshd> {
        Self::start_with_or_skip(SshdConfig::default())
    }

    /// Like [`TestSshd::start_or_skip`] with a configuration.
    pub fn start_with_or_skip(config: SshdConfig) -> Option<TestSshd> {
        let sshd = sshd_or_skip()?;
        Some(Self::start_with(&sshd, config).expect("start sshd"))
    }

    /// Starts a server with `sshd` binary and `config`.
    pub fn start_with(sshd: &Path, config: SshdConfig) -> io::Result<TestSshd> {
        let keys = ClientKeys::shared();
        ensure_privsep_dir();
        let dir = tempfile::Builder::new().prefix("qa-sshd-").tempdir()?;
        fs::create_dir_all(dir.path().join("home"))?;
        // Empty start-up files: sshd runs commands through the login shell, which would otherwise
        // source the user's real ~/.bashrc (slow, and different on every machine).
        for rc in [".bashrc", ".profile", ".bash_profile"] {
            fs::write(dir.path().join("home").join(rc), "")?;
        }
        fs::copy(keys.authorized_keys(), dir.path().join("authorized_keys"))?;
        keygen(
            &dir.path().join("ssh_host_ed25519_key"),
            &["-t", "ed25519"],
            "",
        )?;
        fs::write(dir.path().join("boot_id"), format!("{}\n", new_boot_id()))?;
        let mut host = TestSshd {
            sshd: sshd.to_path_buf(),
            dir,
            config,
            port: 0,
            shared: Arc::new(Mutex::new(Shared {
                child: None,
                behaviour: RebootBehaviour::ComeBack,
                reboots: 0,
            })),
            stop: Arc::new(AtomicBool::new(false)),
            watcher: None,
        };
        let mut last_err = None;
        // Another process may take the free port before sshd binds it: try a few.
        for _ in 0..5 {
            host.port = net::free_port(host.config.listen)?;
            match host.spawn() {
                Ok(()) => {
                    host.write_known_hosts()?;
                    host.start_watcher();
                    return Ok(host);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn write_config(&self) -> io::Result<()> {
        let d = self.dir.path();
        let mut c = String::new();
        let _ = writeln!(c, "Port {}", self.port);
        let _ = writeln!(c, "ListenAddress {}", self.config.listen);
        let _ = writeln!(c, "HostKey {}", d.join("ssh_host_ed25519_key").display());
        let _ = writeln!(c, "PidFile none");
        let _ = writeln!(
            c,
            "AuthorizedKeysFile {}",
            d.join("authorized_keys").display()
        );
        c.push_str(
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin yes\nUsePAM no\nMaxStartups 1000:30:2000\n\
             MaxSessions 1000\nMaxAuthTries 20\nPrintMotd no\nPrintLastLog no\nUseDNS no\n\
             Subsystem sftp internal-sftp\n",
        );
        let _ = writeln!(c, "SetEnv HOME={}", d.join("home").display());
        let _ = writeln!(c, "LogLevel {}", self.config.log_level);
        let _ = writeln!(
            c,
            "AllowTcpForwarding {}",
            if self.config.allow_tcp_forwarding {
                "yes"
            } else {
                "no"
            }
        );
        if !self.config.permit_open.is_empty() {
            let _ = writeln!(c, "PermitOpen {}", self.config.permit_open.join(" "));
        }
        for line in &self.config.extra {
            let _ = writeln!(c, "{line}");
        }
        fs::write(self.config_path(), c)
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.write_config()?;
        let log = self.log_path();
        let child = Command::new(&self.sshd)
            .arg("-D")
            .arg("-f")
            .arg(self.config_path())
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.shared.lock().unwrap().child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let mut shared = self.shared.lock().unwrap();
            if let Some(child) = shared.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                shared.child = None;
                return Err(io::Error::other(format!(
                    "sshd exited with {status} on port {}: {}",
                    self.port,
                    fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            drop(shared);
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "sshd did not listen on {} within 10 s",
                    self.addr()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_watcher(&mut self) {
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        let request = self.reboot_request_path();
        let boot_id = self.boot_id_path();
        let restart = Restarter {
            sshd: self.sshd.clone(),
            config: self.config_path(),
            log: self.log_path(),
            addr: self.addr(),
        };
        self.watcher = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(25));
                if fs::remove_file(&request).is_err() {
                    continue;
                }
                let mut s = shared.lock().unwrap();
                kill_tree(&mut s.child);
                s.reboots += 1;
                if s.behaviour == RebootBehaviour::ComeBack {
                    let _ = fs::write(&boot_id, format!("{}\n", new_boot_id()));
                    match restart.spawn() {
                        Ok(c) => s.child = Some(c),
                        Err(e) => eprintln!("qa-testkit: sshd did not come back after reboot: {e}"),
                    }
                }
            }
        }));
    }

    /// Socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.config.listen, self.port)
    }

    /// Listening address as text.
    pub fn host(&self) -> String {
        self.config.listen.to_string()
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Login user (the current user).
    pub fn user(&self) -> String {
        current_user()
    }

    /// The server's private directory (config, keys, log, boot id, home).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The home directory commands run with (`$HOME`); its shell start-up files are empty.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// sshd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A known_hosts file holding this server's current host key (rewritten by
    /// [`TestSshd::replace_host_key`] only if asked).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The known_hosts line for the current host key.
    pub fn known_hosts_line(&self) -> String {
        let pubkey = fs::read_to_string(self.dir.path().join("ssh_host_ed25519_key.pub"))
            .unwrap_or_default();
        let mut parts = pubkey.split_whitespace();
        let (kind, blob) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        format!("[{}]:{} {kind} {blob}\n", self.host(), self.port)
    }

    fn write_known_hosts(&self) -> io::Result<()> {
        fs::write(self.known_hosts(), self.known_hosts_line())
    }

    /// SHA256 fingerprint of the current host key, as `ssh-keygen -l` prints it (`SHA256:…`).
    pub fn host_key_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-l")
            .arg("-E")
            .arg("sha256")
            .arg("-f")
            .arg(self.dir.path().join("ssh_host_ed25519_key.pub"))
            .output()
            .expect("ssh-keygen -l");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    }

    /// An `SshTarget` for this server: current user, the ed25519 client key, Strict host keys
    /// (check against [`TestSshd::known_hosts`]).
    pub fn target(&self) -> SshTarget {
        self.target_with_key(KeyKind::Ed25519)
    }

    /// Like [`TestSshd::target`] with another client key.
    pub fn target_with_key(&self, kind: KeyKind) -> SshTarget {
        SshTarget::new(self.host(), self.port, self.user())
            .identity_file(ClientKeys::shared().private(kind))
            .host_keys(HostKeyPolicy::Strict)
    }

    /// The file the harness keeps the boot id in; point the executor's boot-id path here.
    pub fn boot_id_path(&self) -> PathBuf {
        self.dir.path().join("boot_id")
    }

    /// The current boot id.
    pub fn boot_id(&self) -> String {
        fs::read_to_string(self.boot_id_path())
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn reboot_request_path(&self) -> PathBuf {
        self.dir.path().join("reboot-request")
    }

    /// A shell command that, run on this host, asks the harness for a reboot: sshd and all its
    /// connections are killed, and (unless [`RebootBehaviour::NeverReturn`]) sshd comes back with
    /// a new boot id. Use it as the executor's reboot command.
    pub fn reboot_command(&self) -> String {
        format!("touch '{}'", self.reboot_request_path().display())
    }

    /// What a requested reboot does.
    pub fn set_reboot_behaviour(&self, behaviour: RebootBehaviour) {
        self.shared.lock().unwrap().behaviour = behaviour;
    }

    /// How many reboots were requested so far.
    pub fn reboots(&self) -> u32 {
        self.shared.lock().unwrap().reboots
    }

    /// Reboots now, from the outside (same as running [`TestSshd::reboot_command`]).
    pub fn reboot(&self) {
        let old = self.boot_id();
        let _ = fs::write(self.reboot_request_path(), "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.boot_id() == old && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills sshd and every connection it serves (processes started with `setsid` and left to
    /// run on their own survive, as they would a crashed sshd).
    pub fn kill(&self) {
        kill_tree(&mut self.shared.lock().unwrap().child);
    }

    /// Pid of the listening sshd, if it runs (its reaped connection processes' CPU time is
    /// in its `cutime`/`cstime`).
    pub fn pid(&self) -> Option<u32> {
        self.shared.lock().unwrap().child.as_ref().map(|c| c.id())
    }

    /// Is sshd running?
    pub fn is_running(&self) -> bool {
        let mut s = self.shared.lock().unwrap();
        match s.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts sshd again on the same port (killing the current one first, if any).
    pub fn restart(&self) -> io::Result<()> {
        let mut s = self.shared.lock().unwrap();
        kill_tree(&mut s.child);
        let restart = Restarter {
            sshd: self.sshd.clone(),
            config: self.config_path(),
            log: self.log_path(),
            addr: self.addr(),
        };
        s.child = Some(restart.spawn()?);
        Ok(())
    }

    /// Gives the server a new host key and restarts it. [`TestSshd::known_hosts`] keeps the old
    /// key, so a client checking against it must see a changed key.
    pub fn replace_host_key(&self) -> io::Result<()> {
        keygen(
            &self.dir.path().join("ssh_host_ed25519_key"),
            &["-t", "ed25519"],
            "",
        )?;
        self.restart()
    }

    /// Pids of processes whose command line contains `needle` (for checking that nothing was
    /// left behind); the same as [`crate::procs::processes_matching`].
    pub fn processes_matching(needle: &str) -> Vec<i32> {
        procs::processes_matching(needle)
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        if let Ok(mut s) = self.shared.lock() {
            kill_tree(&mut s.child);
        }
    }
}

struct Restarter {
    sshd: PathBuf,
    config: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
}

impl Restarter {
    fn spawn(&self) -> io::Result<Child> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(&self.sshd)
                .arg("-D")
                .arg("-f")
                .arg(&self.config)
                .arg("-E")
                .arg(&self.log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            // Wait until it listens; a port still held by the old process makes it exit, so try again.
            loop {
                if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                    return Ok(child);
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io::Error::other(format!(
                        "sshd did not listen again on {}",
                        self.addr
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "sshd could not restart on {}",
                    self.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A bastion and a guest that listens on `127.0.0.2`, reachable through the bastion's
/// `direct-tcpip` forwarding (the bastion permits only that destination). The bastion logs at
/// DEBUG1, so a test can see in [`Bastion::forwarded_to_guest`] that a connection really went
/// through it.
#[derive(Debug)]
pub struct Bastion {
    /// The bastion.
    pub bastion: TestSshd,
    /// The guest behind it.
    pub guest: TestSshd,
}

impl Bastion {
    /// Starts both, or `None` if sshd is missing (see [`sshd_or_skip`]).
    pub fn start_or_skip() -> Option<Bastion> {
        let sshd = sshd_or_skip()?;
        let guest = TestSshd::start_with(
            &sshd,
            SshdConfig {
                listen: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                ..SshdConfig::default()
            },
        )
        .expect("start guest sshd");
        let bastion = TestSshd::start_with(
            &sshd,
            SshdConfig {
                allow_tcp_forwarding: true,
                permit_open: vec![format!("{}:{}", guest.host(), guest.port())],
                log_level: "DEBUG1".into(),
                ..SshdConfig::default()
            },
        )
        .expect("start bastion sshd");
        Some(Bastion { bastion, guest })
    }

    /// The guest as a target reached through the bastion; both with the ed25519 client key,
    /// Strict host keys.
    pub fn guest_target(&self) -> SshTarget {
        let mut t = self.guest.target();
        t.jumps = vec![self.bastion.target()];
        t
    }

    /// A known_hosts file with both hosts' keys.
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.bastion.dir().join("known_hosts_both");
        let text = format!(
            "{}{}",
            self.bastion.known_hosts_line(),
            self.guest.known_hosts_line()
        );
        fs::write(&path, text).expect("write known_hosts");
        path
    }

    /// How many times the bastion's log shows a forwarding to the guest.
    pub fn forwarded_to_guest(&self) -> usize {
        let needle = format!("target {} port {}", self.guest.host(), self.guest.port());
        self.bastion.log().matches(&needle).count()
    }
}

/// A fleet of servers (for fan-out benchmarks and tests).
#[derive(Debug)]
pub struct Fleet {
    /// The servers.
    pub hosts: Vec<TestSshd>,
}

impl Fleet {
    /// Starts `n` servers, or `None` if sshd is missing.
    pub fn start_or_skip(n: usize) -> Option<Fleet> {
        let sshd = sshd_or_skip()?;
        let hosts = (0..n)
            .map(|_| TestSshd::start_with(&sshd, SshdConfig::default()).expect("start sshd"))
            .collect();
        Some(Fleet { hosts })
    }

    /// A known_hosts file with every host's key, written into `dir`.
    pub fn known_hosts(&self, dir: &Path) -> PathBuf {
        let path = dir.join("fleet_known_hosts");
        let mut f = fs::File::create(&path).expect("create known_hosts");
        for h in &self.hosts {
            f.write_all(h.known_hosts_line().as_bytes())
                .expect("write known_hosts");
        }
        path
    }
}

fn new_boot_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer to static storage or null; read at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

fn ensure_privsep_dir() {
    // sshd refuses to start as root without its privilege-separation directory, which only the
    // init scripts normally create.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        for d in ["/run/sshd", "/var/run/sshd"] {
            if fs::create_dir_all(d).is_ok() {
                let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
                break;
            }
        }
    }
}
