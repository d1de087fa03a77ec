//! A whole `qa-run run` on a fleet of local sshd hosts, against the tools a user would otherwise
//! drive the same fleet with, in one run, interleaved round by round; and a profile of what
//! `qa-run run` does on each host (SSH logins, commands, SFTP sessions and requests).
//!
//! ```text
//! cargo build --release -p qa-cli --no-default-features   # the qa-run measured
//! cargo bench -p qa-remote --bench fanout_run
//! ```
//!
//! It lives in qa-remote, not qa-cli, so that `cargo bench` does not build the AWS SDK (a
//! dev-dependency of qa-cli's tests) with optimisations: it measures the `qa-run` binary next to
//! its own directory (`target/release/qa-run`), or the one `QA_RUN_BIN` names.
//!
//! Environment: `QA_BENCH_HOSTS` (comma-separated fleet sizes, default `8,32`; 128 works too),
//! `QA_BENCH_ROUNDS` (default 5), `QA_BENCH_PYTHON` (a Python with `parallel-ssh` and `pyinfra`
//! installed, default `python3`; a tool it lacks is left out and said so), `QA_BENCH_PART`
//! (`profile`, `timing` or both, the default).
//!
//! Every sshd (qa-testkit: `MaxStartups`/`MaxSessions` raised, an empty home) runs in a mount
//! namespace of its own, in which the bench directory's `dest/` is that host's private directory:
//! every tool uploads to the same path, each host gets its own copy, and every copy is checked
//! by SHA-256 after each upload trial (and deleted before the next). Needs root (for the
//! namespaces) and `unshare` (util-linux).
//!
//! What each tool runs, per case (`true`, `sleep 1`, a 16 MiB upload):
//! - qa-run: `qa-run run PLAN` with a plan of N machines, `backend: static`, one inventory host
//!   each, read from an OpenSSH config (`ssh-config:`), host keys checked against a known_hosts
//!   file (`--known-hosts`), `concurrency` 2N; one step (`true` or `sleep 1`); for the upload,
//!   `files:` with the payload and the step `true`;
//! - OpenSSH, `xargs -P N`: `ssh -F CONFIG hostN CMD` (`scp` for the upload) with the same
//!   config, host keys checked against the same file, once with `KexAlgorithms
//!   curve25519-sha256` (what libssh2, and so qa-run, negotiates) and once with OpenSSH's default;
//! - parallel-ssh (the Python library, `ParallelSSHClient`, libssh2 underneath): `run_command`,
//!   `copy_file` (SFTP) for the upload. It has no host-key checking;
//! - pyinfra: `pyinfra -y --parallel N INVENTORY exec -- CMD`, `files.put` for the upload
//!   (paramiko; host keys checked against the same file).
//!
//! Measured per trial: wall time of the whole command; client CPU (user+system of the tool and
//! every process it waited for); sshd CPU (every process under the N listeners, live and
//! reaped); and, from the sshd logs, logins (`Accepted publickey`), command sessions and SFTP
//! sessions per host. For qa-run, the median duration of each of its stages per machine, from
//! the run's own journal (`state.json`).
//!
//! The profile (on a fleet of its own, sshd at `LogLevel DEBUG1`, commands recorded by the
//! login shell, SFTP requests logged by an `sftp-server -l VERBOSE` in place of internal-sftp)
//! lists, per host, every connection, command and SFTP request of a 1-step run, and of a run
//! with a file, a step and an artifact, in order, and what a supervised command costs sshd in
//! CPU against the bare command.

mod common;

use common::{median, min, rusage, sha256, tree_cpu};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qa_testkit::{ClientKeys, Fleet, KeyKind, SshdConfig, TestSshd, find_sshd};

const PAYLOAD: usize = 16 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    True,
    Sleep,
    Upload,
}

impl Case {
    const ALL: [Case; 3] = [Case::True, Case::Sleep, Case::Upload];

    fn name(self) -> &'static str {
        match self {
            Case::True => "`true`",
            Case::Sleep => "`sleep 1`",
            Case::Upload => "16 MiB upload",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Case::True => "true",
            Case::Sleep => "sleep",
            Case::Upload => "upload",
        }
    }

    fn command(self) -> &'static str {
        match self {
            Case::Sleep => "sleep 1",
            Case::True | Case::Upload => "true",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    QaRun,
    SshCurve,
    SshDefault,
    Pssh,
    Pyinfra,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::QaRun => "qa-run run",
            Tool::SshCurve => "OpenSSH + xargs -P, curve25519",
            Tool::SshDefault => "OpenSSH + xargs -P, default kex",
            Tool::Pssh => "parallel-ssh (Python)",
            Tool::Pyinfra => "pyinfra",
        }
    }
}

#[derive(Default, Clone)]
struct Sample {
    wall: Vec<f64>,
    client_cpu: Vec<f64>,
    server_cpu: Vec<f64>,
    logins: Vec<f64>,
    commands: Vec<f64>,
    sftp: Vec<f64>,
    /// qa-run only: stage → durations (s), one per machine and round.
    stages: BTreeMap<String, Vec<f64>>,
    /// Peak resident memory of the process the tool is (MiB).
    peak_rss_mib: Vec<f64>,
    /// qa-run only: the wall time outside its tasks (s): start-up, loading the plan, setting up
    /// the run directory and journal, and what follows the last task.
    outside_tasks: Vec<f64>,
}

/// What sshd logged since the last look: per host.
#[derive(Default, Debug, Clone, Copy)]
struct LogCounts {
    logins: usize,
    commands: usize,
    sftp: usize,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The qa-run binary measured: `QA_RUN_BIN`, else `qa-run` in this bench's profile directory
/// (`target/release/deps/fanout_run-…` → `target/release/qa-run`).
fn qa_run_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("QA_RUN_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("qa-run"))
        .expect("bench binary in target/<profile>/deps")
}

fn find_sftp_server() -> Option<PathBuf> {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/libexec/sftp-server",
        "/usr/lib/ssh/sftp-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Name of the profile's logging SFTP server script in a host's directory.
const SFTP_LOGGED: &str = "sftp-logged";

/// A script that qa-testkit starts in place of sshd (`SCRIPT -D -f CONFIG -E LOG`): it starts sshd
/// in a mount namespace of its own in which `common` is the host's private `dest/` directory.
/// With `sftp_server`, SFTP is served by that program at `-l VERBOSE`, logging every request to
/// the host's `sftp.log` (internal-sftp's log does not reach sshd's `-E` file).
fn write_sshd_wrapper(
    path: &Path,
    sshd: &Path,
    common: &Path,
    sftp_server: Option<&Path>,
) -> PathBuf {
    let mut s = String::from("#!/bin/sh\n# Started as: sshd -D -f CONFIG -E LOG\n");
    s.push_str("cfg=$3; host_dir=${cfg%/*}\nmkdir -p \"$host_dir/dest\" || exit 1\n");
    if let Some(server) = sftp_server {
        let _ = write!(
            s,
            "printf '#!/bin/sh\\nexec %s -e -l VERBOSE 2>>%s/sftp.log\\n' {server} \"$host_dir\" > \"$host_dir/{SFTP_LOGGED}\"\n\
             chmod 755 \"$host_dir/{SFTP_LOGGED}\"\n\
             sed \"s|^Subsystem sftp .*|Subsystem sftp $host_dir/{SFTP_LOGGED}|\" \"$cfg\" > \"$cfg.profile\" || exit 1\n\
             set -- \"$1\" \"$2\" \"$cfg.profile\" \"$4\" \"$5\"\n",
            server = quote(&server.display().to_string()),
        );
    }
    let _ = writeln!(
        s,
        "exec unshare --mount --propagation private /bin/sh -c 'mount --bind \"$1\" \"$2\" || exit 1; shift 2; exec \"$@\"' \
         sh \"$host_dir/dest\" {common} {sshd} \"$@\"",
        common = quote(&common.display().to_string()),
        sshd = quote(&sshd.display().to_string()),
    );
    std::fs::write(path, s).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

fn start_fleet(n: usize, wrapper: &Path, log_level: &str) -> Fleet {
    let hosts = (0..n)
        .map(|_| {
            TestSshd::start_with(
                wrapper,
                SshdConfig {
                    log_level: log_level.into(),
                    ..SshdConfig::default()
                },
            )
            .expect("start sshd in its own mount namespace")
        })
        .collect();
    Fleet { hosts }
}

/// The files every tool reads: OpenSSH config, known_hosts, host list, plans, tool scripts.
struct Setup {
    dir: PathBuf,
    common: PathBuf,
    ssh_config: PathBuf,
    known_hosts: PathBuf,
    names: PathBuf,
    payload: PathBuf,
    payload_sha: String,
    results: PathBuf,
    leases: PathBuf,
    qa_run: PathBuf,
}

impl Setup {
    fn new(dir: &Path, fleet: &Fleet, common: &Path, qa_run: &Path) -> Setup {
        let key = ClientKeys::shared().private(KeyKind::Ed25519);
        let known_hosts = fleet.known_hosts(dir);
        let mut cfg = String::new();
        let mut names = String::new();
        for (i, h) in fleet.hosts.iter().enumerate() {
            let _ = write!(
                cfg,
                "Host h{n}\n  HostName {host}\n  Port {port}\n  User {user}\n  IdentityFile {key}\n",
                n = i + 1,
                host = h.host(),
                port = h.port(),
                user = h.user(),
                key = key.display(),
            );
            let _ = writeln!(names, "h{}", i + 1);
        }
        // What only OpenSSH reads: the same host-key file, no agent, no multiplexing.
        let _ = write!(
            cfg,
            "Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
             BatchMode yes\n  IdentitiesOnly yes\n  IdentityAgent none\n  ControlMaster no\n  ControlPath none\n  \
             LogLevel ERROR\n",
            known_hosts.display()
        );
        let ssh_config = dir.join("ssh_config");
        std::fs::write(&ssh_config, cfg).unwrap();
        let names_path = dir.join("names");
        std::fs::write(&names_path, names).unwrap();
        let payload = dir.join("payload.bin");
        if !payload.exists() {
            let mut x: u64 = 0x2545_F491_4F6C_DD1D;
            let mut buf = vec![0u8; PAYLOAD];
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            std::fs::write(&payload, buf).unwrap();
        }
        Setup {
            dir: dir.to_path_buf(),
            common: common.to_path_buf(),
            ssh_config,
            known_hosts,
            names: names_path,
            payload_sha: sha256(&payload),
            payload,
            results: dir.join("results"),
            leases: dir.join("leases"),
            qa_run: qa_run.to_path_buf(),
        }
    }

    /// A plan of one static machine per host of `fleet`, running `command` once on each, with
    /// `extra` (top-level YAML: `files:`, `artifacts:`) added.
    fn plan(&self, name: &str, n: usize, command: &str, extra: &str) -> PathBuf {
        let mut p = format!(
            "name: fanout-{name}\nbackend: static\nconcurrency: {}\ninventory:\n",
            2 * n
        );
        for i in 1..=n {
            let _ = write!(
                p,
                "  - name: h{i}\n    ssh-config: {}\n",
                self.ssh_config.display()
            );
        }
        p.push_str("machines:\n");
        for i in 1..=n {
            let _ = write!(p, "  - name: m{i}\n    static: {{hosts: [h{i}]}}\n");
        }
        let _ = write!(
            p,
            "steps:\n  - name: step\n    command: {}\n{extra}",
            quote(command)
        );
        let path = self.dir.join(format!("plan-{name}.yaml"));
        std::fs::write(&path, p).unwrap();
        path
    }

    fn upload_files(&self) -> String {
        format!(
            "files:\n  - src: {}\n    dest: {}/payload\n",
            self.payload.display(),
            self.common.display()
        )
    }

    /// Runs `qa-run run plan` as run `run_id`; panics with its output if it fails. Returns the
    /// run directory.
    fn qa_run(&self, plan: &Path, run_id: &str) -> PathBuf {
        let log = self.dir.join("qa-run.log");
        let out = std::fs::File::create(&log).unwrap();
        let status = Command::new(&self.qa_run)
            .arg("--results")
            .arg(&self.results)
            .arg("--known-hosts")
            .arg(&self.known_hosts)
            .arg("run")
            .arg(plan)
            .arg("--run-id")
            .arg(run_id)
            .env("QA_RUN_LEASE_DIR", &self.leases)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .expect("start qa-run");
        assert!(
            status.success(),
            "qa-run run {} failed ({status}):\n{}",
            plan.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.results.join(run_id)
    }
}

struct Bench {
    fleet: Fleet,
    setup: Setup,
    python: Option<PathBuf>,
    tools: Vec<Tool>,
    plans: BTreeMap<&'static str, PathBuf>,
    log_offsets: Vec<u64>,
    trial: usize,
}

impl Bench {
    fn n(&self) -> usize {
        self.fleet.hosts.len()
    }

    fn server_cpu(&self) -> f64 {
        let roots: Vec<u32> = self.fleet.hosts.iter().filter_map(|h| h.pid()).collect();
        tree_cpu(&roots)
    }

    /// Logins, command sessions and SFTP sessions sshd logged on all hosts since the last call.
    fn log_counts(&mut self) -> LogCounts {
        let mut c = LogCounts::default();
        for (i, h) in self.fleet.hosts.iter().enumerate() {
            let Ok(mut f) = std::fs::File::open(h.log_path()) else {
                continue;
            };
            let _ = f.seek(SeekFrom::Start(self.log_offsets[i]));
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            // Only whole lines; a line being written is read next time.
            let whole = text.rfind('\n').map(|p| p + 1).unwrap_or(0);
            self.log_offsets[i] += whole as u64;
            for line in text[..whole].lines() {
                if line.starts_with("Accepted publickey for ") {
                    c.logins += 1;
                } else if line.starts_with("Starting session: command") {
                    c.commands += 1;
                } else if line.starts_with("Starting session: subsystem 'sftp'") {
                    c.sftp += 1;
                }
            }
        }
        c
    }

    fn dest(&self, i: usize) -> PathBuf {
        self.fleet.hosts[i].dir().join("dest")
    }

    fn reset_destinations(&self) {
        for i in 0..self.n() {
            for e in std::fs::read_dir(self.dest(i)).unwrap().flatten() {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }

    fn verify_destinations(&self, tool: Tool) {
        for i in 0..self.n() {
            let d = self.dest(i).join("payload");
            let len = std::fs::metadata(&d).map(|m| m.len()).unwrap_or(0);
            assert_eq!(
                len,
                PAYLOAD as u64,
                "{}: {} has {len} bytes",
                tool.name(),
                d.display()
            );
            assert_eq!(
                sha256(&d),
                self.setup.payload_sha,
                "{}: {} differs",
                tool.name(),
                d.display()
            );
        }
    }

    fn python_command(&self, script: &str) -> Command {
        let mut c = Command::new(self.python.as_ref().expect("python tools need a python"));
        c.arg("-c").arg(script);
        c
    }

    fn command(&self, case: Case, tool: Tool, run_id: &str) -> Command {
        let n = self.n();
        let s = &self.setup;
        match tool {
            Tool::QaRun => {
                let mut c = Command::new(&s.qa_run);
                c.arg("--results")
                    .arg(&s.results)
                    .arg("--known-hosts")
                    .arg(&s.known_hosts)
                    .arg("run")
                    .arg(&self.plans[case.slug()])
                    .arg("--run-id")
                    .arg(run_id)
                    .env("QA_RUN_LEASE_DIR", &s.leases);
                c
            }
            Tool::SshCurve | Tool::SshDefault => {
                let kex = if tool == Tool::SshCurve {
                    "-o KexAlgorithms=curve25519-sha256 "
                } else {
                    ""
                };
                let cmd = match case {
                    Case::Upload => format!(
                        "xargs -P {n} -I{{}} scp -q -F {cfg} {kex}{payload} {{}}:{common}/payload < {names}",
                        cfg = s.ssh_config.display(),
                        payload = s.payload.display(),
                        common = s.common.display(),
                        names = s.names.display(),
                    ),
                    _ => format!(
                        "xargs -P {n} -I{{}} ssh -F {cfg} {kex}{{}} {cmd} < {names}",
                        cfg = s.ssh_config.display(),
                        cmd = quote(case.command()),
                        names = s.names.display(),
                    ),
                };
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(cmd);
                c
            }
            Tool::Pssh => {
                let mut c = self.python_command(PSSH_SCRIPT);
                c.arg(s.dir.join("hosts.json")).arg(case.slug());
                c
            }
            Tool::Pyinfra => {
                let mut c = self.python_command(PYINFRA_MAIN);
                c.args(["-y", "--parallel", &n.to_string()])
                    .arg(s.dir.join("inventory.py"));
                match case {
                    Case::Upload => {
                        c.arg("files.put")
                            .arg(format!("src={}", s.payload.display()))
                            .arg(format!("dest={}/payload", s.common.display()));
                    }
                    _ => {
                        c.args(["exec", "--", case.command()]);
                    }
                }
                c
            }
        }
    }

    /// One trial: returns its sample, or panics (with the tool's output) if anything failed.
    fn trial(&mut self, case: Case, tool: Tool, sample: &mut Sample) {
        self.trial += 1;
        let run_id = format!("fanout-{}-{}", case.slug(), self.trial);
        if case == Case::Upload {
            self.reset_destinations();
        }
        let log = self.setup.dir.join("tool.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = self.command(case, tool, &run_id);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // Let the listeners reap the previous trial's connection processes.
        std::thread::sleep(Duration::from_millis(300));
        self.log_counts();
        let (s0, c0) = (self.server_cpu(), rusage(libc::RUSAGE_CHILDREN));
        let t0 = Instant::now();
        // Reaped by wait4, which also gives its peak memory.
        #[allow(clippy::zombie_processes)]
        let pid = cmd.spawn().expect("start the tool").id() as i32;
        let (status, peak_rss_kib) = wait_with_peak_rss(pid);
        let wall = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        let client = rusage(libc::RUSAGE_CHILDREN) - c0;
        let server = self.server_cpu() - s0;
        let counts = self.log_counts();
        assert!(
            status == 0,
            "{} ({}) failed (wait status {status}):\n{}",
            tool.name(),
            case.name(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if case == Case::Upload {
            self.verify_destinations(tool);
        }
        if tool == Tool::QaRun {
            let run_dir = self.setup.results.join(&run_id);
            for (stage, secs) in stage_durations(&run_dir) {
                sample.stages.entry(stage).or_default().push(secs);
            }
            if let Some(span) = tasks_span(&run_dir) {
                sample.outside_tasks.push(wall - span);
            }
            let _ = std::fs::remove_dir_all(&run_dir);
            let _ = std::fs::remove_dir_all(Path::new("/tmp/qa-run").join(&run_id));
        }
        let n = self.n() as f64;
        sample.peak_rss_mib.push(peak_rss_kib as f64 / 1024.0);
        sample.wall.push(wall);
        sample.client_cpu.push(client);
        sample.server_cpu.push(server);
        sample.logins.push(counts.logins as f64 / n);
        sample.commands.push(counts.commands as f64 / n);
        sample.sftp.push(counts.sftp as f64 / n);
    }
}

/// Waits for child `pid` (whose `Child` was dropped without a wait) and returns its wait status
/// and peak resident set (KiB), from `wait4`.
fn wait_with_peak_rss(pid: i32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: wait4 writes only the status and the rusage struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    (status, usage.ru_maxrss)
}

/// From the first task's start to the last task's end (s), from the run's journal.
fn tasks_span(run_dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(run_dir.join("state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    let (mut first, mut last) = (None::<time::OffsetDateTime>, None::<time::OffsetDateTime>);
    for t in state["tasks"].as_object()?.values() {
        let Some(start) = t["started"].as_str().and_then(parse) else {
            continue;
        };
        let end = start + time::Duration::milliseconds(t["duration-ms"].as_i64().unwrap_or(0));
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    Some((last? - first?).as_seconds_f64())
}

/// Stage → duration (s) of each of its tasks, from the run's journal (`state.json`: `tasks`,
/// by id `stage:machine…`, with `duration-ms`).
fn stage_durations(run_dir: &Path) -> Vec<(String, f64)> {
    let Ok(text) = std::fs::read_to_string(run_dir.join("state.json")) else {
        return Vec::new();
    };
    let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, t) in state["tasks"].as_object().into_iter().flatten() {
        let stage = id.split(':').next().unwrap_or(id);
        if let Some(ms) = t["duration-ms"].as_f64() {
            out.push((stage.to_string(), ms / 1000.0));
        }
    }
    out
}

/// parallel-ssh: argv[1] hosts.json, argv[2] the case.
const PSSH_SCRIPT: &str = r#"
import json, sys
from gevent import joinall
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
cfg = json.load(open(sys.argv[1]))
case = sys.argv[2]
hosts = ["127.0.0.1"] * len(cfg["ports"])
host_config = [HostConfig(port=p, user=cfg["user"], private_key=cfg["key"], allow_agent=False) for p in cfg["ports"]]
client = ParallelSSHClient(hosts, host_config=host_config, pool_size=len(hosts), num_retries=1, allow_agent=False)
if case == "upload":
    joinall(client.copy_file(cfg["payload"], cfg["dest"]), raise_error=True)
else:
    output = client.run_command("sleep 1" if case == "sleep" else "true", stop_on_errors=True)
    client.join(output)
    bad = [(o.host, o.exit_code, o.exception) for o in output if o.exit_code != 0]
    if bad:
        sys.exit("failed: %r" % bad)
"#;

const PYINFRA_MAIN: &str =
    "import sys; from pyinfra_cli.main import main; sys.argv[0] = 'pyinfra'; sys.exit(main())";

fn python_has(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn write_python_inputs(setup: &Setup, fleet: &Fleet) {
    let key = ClientKeys::shared().private(KeyKind::Ed25519);
    let ports: Vec<u16> = fleet.hosts.iter().map(|h| h.port()).collect();
    let user = fleet.hosts[0].user();
    let hosts = serde_json::json!({
        "ports": ports,
        "user": user,
        "key": key,
        "payload": setup.payload,
        "dest": format!("{}/payload", setup.common.display()),
    });
    std::fs::write(setup.dir.join("hosts.json"), hosts.to_string()).unwrap();
    let mut inv = String::from("hosts = [\n");
    for (i, h) in fleet.hosts.iter().enumerate() {
        let _ = writeln!(
            inv,
            "    (\"h{}\", {{\"ssh_hostname\": \"{}\", \"ssh_port\": {}, \"ssh_user\": \"{user}\", \"ssh_key\": \"{}\", \
             \"ssh_known_hosts_file\": \"{}\", \"ssh_strict_host_key_checking\": \"yes\", \"ssh_allow_agent\": False, \
             \"ssh_look_for_keys\": False}}),",
            i + 1,
            h.host(),
            h.port(),
            key.display(),
            setup.known_hosts.display(),
        );
    }
    inv.push_str("]\n");
    std::fs::write(setup.dir.join("inventory.py"), inv).unwrap();
}

fn timing(n: usize, rounds: usize, sshd: &Path, qa_run: &Path, python: Option<&Path>) {
    let dir = tempfile::Builder::new()
        .prefix("qa-bench-fanout-")
        .tempdir()
        .unwrap();
    let common = dir.path().join("dest");
    std::fs::create_dir_all(&common).unwrap();
    let wrapper = write_sshd_wrapper(&dir.path().join("sshd-ns"), sshd, &common, None);
    eprintln!("starting {n} sshd");
    let fleet = start_fleet(n, &wrapper, "VERBOSE");
    let setup = Setup::new(dir.path(), &fleet, &common, qa_run);
    write_python_inputs(&setup, &fleet);
    let mut tools = vec![Tool::QaRun, Tool::SshCurve, Tool::SshDefault];
    let mut missing = Vec::new();
    for (tool, module) in [(Tool::Pssh, "pssh.clients"), (Tool::Pyinfra, "pyinfra_cli")] {
        match python {
            Some(py) if python_has(py, module) => tools.push(tool),
            _ => missing.push(tool.name()),
        }
    }
    let mut plans = BTreeMap::new();
    plans.insert("true", setup.plan("true", n, "true", ""));
    plans.insert("sleep", setup.plan("sleep", n, "sleep 1", ""));
    plans.insert(
        "upload",
        setup.plan("upload", n, "true", &setup.upload_files()),
    );
    let mut bench = Bench {
        log_offsets: vec![0; n],
        fleet,
        setup,
        python: python.map(Path::to_path_buf),
        tools,
        plans,
        trial: 0,
    };
    // A run that is not measured: the first `qa-run run` reads its binary from disk.
    let warm_up = bench.setup.qa_run(&bench.plans["true"], "fanout-warm-up");
    let _ = std::fs::remove_dir_all(warm_up);
    let _ = std::fs::remove_dir_all("/tmp/qa-run/fanout-warm-up");
    let mut results: Vec<((Case, Tool), Sample)> = Vec::new();
    for &c in &Case::ALL {
        for &t in &bench.tools {
            results.push(((c, t), Sample::default()));
        }
    }
    for round in 0..rounds {
        eprintln!("{n} hosts: round {}/{rounds}", round + 1);
        for &case in &Case::ALL {
            for tool in bench.tools.clone() {
                let i = results
                    .iter()
                    .position(|(k, _)| *k == (case, tool))
                    .unwrap();
                let mut s = std::mem::take(&mut results[i].1);
                bench.trial(case, tool, &mut s);
                results[i].1 = s;
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### {n} hosts\n\n{rounds} rounds, tools interleaved in every round; times in seconds (median of the rounds); \
         \"vs OpenSSH\" is the median over that of OpenSSH + xargs -P with curve25519; CPU in seconds per run; \
         logins, commands and SFTP sessions per host, from the sshd logs.\n"
    );
    if !missing.is_empty() {
        let _ = writeln!(
            out,
            "Not measured (not installed for `QA_BENCH_PYTHON`): {}.\n",
            missing.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "| case | tool | min | median | vs OpenSSH | client CPU | sshd CPU | logins | commands | SFTP | peak RSS (MiB) |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &case in &Case::ALL {
        let base = results
            .iter()
            .find(|(k, _)| *k == (case, Tool::SshCurve))
            .map(|(_, s)| median(&s.wall))
            .unwrap();
        for ((c, t), s) in &results {
            if *c != case {
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.2}× | {:.2} | {:.2} | {} | {} | {} | {:.1} |",
                case.name(),
                t.name(),
                min(&s.wall),
                median(&s.wall),
                median(&s.wall) / base,
                median(&s.client_cpu),
                median(&s.server_cpu),
                median(&s.logins),
                median(&s.commands),
                median(&s.sftp),
                median(&s.peak_rss_mib),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nqa-run's stages, median duration per machine (s), from the run's journal (state.json):\n"
    );
    let stages: Vec<String> = {
        let mut v: Vec<String> = results
            .iter()
            .flat_map(|(_, s)| s.stages.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let _ = writeln!(out, "| case | {} | outside the tasks |", stages.join(" | "));
    let _ = writeln!(out, "| --- |{} ---: |", " ---: |".repeat(stages.len()));
    for ((c, t), s) in &results {
        if *t != Tool::QaRun {
            continue;
        }
        let cells: Vec<String> = stages
            .iter()
            .map(|st| {
                s.stages
                    .get(st)
                    .map(|v| format!("{:.3}", median(v)))
                    .unwrap_or_else(|| "—".into())
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} |",
            c.name(),
            cells.join(" | "),
            median(&s.outside_tasks)
        );
    }
    println!("{out}");
    let _ = std::io::stdout().flush();
}

/// One exec channel as the login shell recorded it.
struct RecordedCommand {
    at: f64,
    text: String,
}

fn recorded_commands(host: &TestSshd) -> Vec<RecordedCommand> {
    let text = std::fs::read_to_string(host.home().join("commands.log")).unwrap_or_default();
    text.split("\n\x1e\n")
        .filter(|r| !r.trim().is_empty())
        .filter_map(|r| {
            let (at, cmd) = r.split_once('\n')?;
            Some(RecordedCommand {
                at: at.trim().parse().ok()?,
                text: cmd.to_string(),
            })
        })
        .collect()
}

/// What a command qa-run sent is, from its text.
fn describe_command(text: &str) -> String {
    let inner = if text.contains("qa-run-step") {
        "supervised (foreground supervisor: /proc/*/environ scans before and after)"
    } else if text.contains("qa-run-supervisor") {
        "detached supervisor"
    } else {
        "bare"
    };
    let what = if text.contains(SFTP_LOGGED) {
        return "SFTP subsystem (this profile's logging sftp-server, started by sshd through the login shell; \
                not a command of qa-run's)"
            .to_string();
    } else if text.contains("set -e") && text.contains("mkdir -p") {
        "static-host verification script (`set -e; mkdir -p WORKDIR; …`)".to_string()
    } else if text.contains("qa-bench-step") {
        "the plan's step".to_string()
    } else if text.contains("mv -f --") {
        "rename after SFTP upload (`mv -f`)".to_string()
    } else {
        let first: String = text.chars().take(80).collect();
        format!("`{}`", first.replace('\n', " "))
    };
    format!("{what}; {inner}; {} bytes of shell", text.len())
}

fn sftp_requests(host: &TestSshd) -> Vec<String> {
    std::fs::read_to_string(host.dir().join("sftp.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.to_string())
        .collect()
}

/// Turns paths that differ per host or per run into placeholders, so hosts can be compared.
fn generalise(line: &str, run_id: &str, machine: &str, common: &Path) -> String {
    let mut s = line
        .replace(run_id, "RUN")
        .replace(&common.display().to_string(), "DEST");
    s = s.replace(&format!("/{machine}/"), "/MACHINE/");
    if s.ends_with(&format!("/{machine}\"")) {
        s = s.replace(&format!("/{machine}\""), "/MACHINE\"");
    }
    // Random parts of temporary names and pid files.
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find(".qa-tmp-") {
        out.push_str(&rest[..i + 8]);
        rest = &rest[i + 8..];
        let hex = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        out.push_str("XXXXXXXX");
        rest = &rest[hex..];
    }
    out.push_str(rest);
    out
}

fn profile(sshd: &Path, qa_run: &Path) {
    let n = env_or("QA_BENCH_PROFILE_HOSTS", 4usize);
    let Some(sftp_server) = find_sftp_server() else {
        println!("SKIPPED profile: no sftp-server binary to log SFTP requests with");
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("qa-bench-profile-")
        .tempdir()
        .unwrap();
    let common = dir.path().join("dest");
    std::fs::create_dir_all(&common).unwrap();
    let wrapper = write_sshd_wrapper(
        &dir.path().join("sshd-ns"),
        sshd,
        &common,
        Some(&sftp_server),
    );
    let fleet = start_fleet(n, &wrapper, "DEBUG1");
    // The login shell (bash, which reads ~/.bashrc when sshd starts it) records each command
    // it is given, with the time, without starting a process.
    for h in &fleet.hosts {
        std::fs::write(
            h.home().join(".bashrc"),
            "printf '%s\\n%s\\n\\036\\n' \"$EPOCHREALTIME\" \"$BASH_EXECUTION_STRING\" >> \"$HOME/commands.log\"\n",
        )
        .unwrap();
    }
    let setup = Setup::new(dir.path(), &fleet, &common, qa_run);
    let cases = [
        (
            "1 step (`true`)",
            "one-step",
            setup.plan("one-step", n, "true # qa-bench-step", ""),
        ),
        (
            "1 file (16 MiB) + 1 step + 1 artifact",
            "file-step-artifact",
            setup.plan(
                "file-step-artifact",
                n,
                "mkdir -p out && echo x > out/a.txt # qa-bench-step",
                &format!(
                    "{}artifacts:\n  - paths: [\"out/*\"]\n",
                    setup.upload_files()
                ),
            ),
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Profile: what `qa-run run` does per host\n\n{n} static hosts, sshd at LogLevel DEBUG1, \
         commands recorded by the login shell, SFTP requests by `sftp-server -l VERBOSE`. Counts are per host \
         (every host the same unless a range is shown).\n"
    );
    let mut step_text = None;
    for (title, slug, plan) in &cases {
        for h in &fleet.hosts {
            let _ = std::fs::remove_file(h.home().join("commands.log"));
            let _ = std::fs::remove_file(h.dir().join("sftp.log"));
        }
        let offsets: Vec<usize> = fleet.hosts.iter().map(|h| h.log().len()).collect();
        let run_id = format!("profile-{slug}");
        let roots: Vec<u32> = fleet.hosts.iter().filter_map(|h| h.pid()).collect();
        let cpu0 = tree_cpu(&roots);
        let run_dir = setup.qa_run(plan, &run_id);
        std::thread::sleep(Duration::from_millis(500));
        let cpu = tree_cpu(&roots) - cpu0;
        let mut per_host: Vec<Vec<(&str, usize)>> = Vec::new();
        for (i, h) in fleet.hosts.iter().enumerate() {
            let log = h.log();
            let new = &log[offsets[i]..];
            let count = |needle: &str| new.lines().filter(|l| l.contains(needle)).count();
            let m = vec![
                ("TCP connections", count("Connection from ")),
                (
                    "SSH logins (handshake + auth)",
                    count("Accepted publickey for "),
                ),
                (
                    "auth requests (`userauth-request`)",
                    count("userauth-request for user"),
                ),
                (
                    "public keys offered before the signed request (`Postponed publickey`)",
                    count("Postponed publickey for "),
                ),
                (
                    "session channels opened",
                    count("server_input_channel_open: ctype session"),
                ),
                ("exec requests", count("req exec")),
                (
                    "SFTP subsystem starts",
                    count("Starting session: subsystem 'sftp'"),
                ),
                ("SFTP requests (logged by sftp-server)", {
                    sftp_requests(h)
                        .iter()
                        .filter(|l| {
                            !l.starts_with("session opened")
                                && !l.starts_with("session closed")
                                && !l.starts_with("received client version")
                        })
                        .count()
                }),
                (
                    "commands the login shell ran (qa-run's)",
                    recorded_commands(h)
                        .iter()
                        .filter(|c| !c.text.contains(SFTP_LOGGED))
                        .count(),
                ),
            ];
            per_host.push(m);
        }
        let _ = writeln!(
            out,
            "#### {title}\n\nsshd CPU for the whole run: {cpu:.2} s ({:.3} s per host).\n",
            cpu / n as f64
        );
        let _ = writeln!(out, "| per host | count |\n| --- | ---: |");
        for (row, (key, _)) in per_host[0].iter().enumerate() {
            let vals: Vec<usize> = per_host.iter().map(|m| m[row].1).collect();
            let (lo, hi) = (*vals.iter().min().unwrap(), *vals.iter().max().unwrap());
            let cell = if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            };
            let _ = writeln!(out, "| {key} | {cell} |");
        }
        // The sequence on the first host, commands and SFTP requests in order of time.
        let h = &fleet.hosts[0];
        let negotiated: Vec<String> = h.log()[offsets[0]..]
            .lines()
            .filter_map(|l| l.strip_prefix("debug1: kex: "))
            .filter(|l| l.starts_with("algorithm:") || l.starts_with("client->server cipher:"))
            .map(|l| format!("`{l}`"))
            .collect();
        let _ = writeln!(out, "\nNegotiated on host h1: {}.", negotiated.join(", "));
        let cmds = recorded_commands(h);
        if step_text.is_none() {
            step_text = cmds
                .iter()
                .find(|c| c.text.contains("qa-bench-step"))
                .map(|c| c.text.clone());
        }
        let t0 = cmds.first().map(|c| c.at).unwrap_or(0.0);
        let _ = writeln!(out, "\nCommands on host h1, in order:\n");
        for (i, c) in cmds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. +{:.3} s: {}",
                i + 1,
                c.at - t0,
                describe_command(&c.text)
            );
        }
        let reqs = sftp_requests(h);
        if !reqs.is_empty() {
            let _ = writeln!(out, "\nSFTP requests on host h1, in order:\n\n```");
            for r in &reqs {
                let _ = writeln!(out, "{}", generalise(r, &run_id, "m1", &common));
            }
            let _ = writeln!(out, "```");
        }
        // The raw commands of host 1, for reading.
        let raw = dir.path().join(format!("commands-{slug}-h1.txt"));
        let mut f = std::fs::File::create(&raw).unwrap();
        for c in &cmds {
            let _ = writeln!(f, "{}\n----", c.text);
        }
        let keep = std::env::temp_dir().join(format!("qa-bench-profile-{slug}-h1-commands.txt"));
        let _ = std::fs::copy(&raw, &keep);
        let _ = writeln!(out, "\n(Full text of these commands: {})\n", keep.display());
        let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (stage, secs) in stage_durations(&run_dir) {
            stages.entry(stage).or_default().push(secs);
        }
        let medians: Vec<String> = stages
            .iter()
            .map(|(k, v)| format!("{k} {:.3} s", median(v)))
            .collect();
        let _ = writeln!(
            out,
            "Stages, median per machine (journal): {}.\n",
            medians.join(", ")
        );
        let _ = std::fs::remove_dir_all(Path::new("/tmp/qa-run").join(&run_id));
    }

    // What the foreground supervisor costs sshd, against the bare command: the step command
    // qa-run sent to h1, replayed with OpenSSH (curve25519) one at a time.
    if let Some(step_text) = step_text {
        for h in &fleet.hosts {
            std::fs::write(h.home().join(".bashrc"), "").unwrap();
        }
        let reps = 20;
        let host = &fleet.hosts[0];
        let root = [host.pid().unwrap()];
        let measure = |cmd: &str| {
            let c0 = tree_cpu(&root);
            let t0 = Instant::now();
            for _ in 0..reps {
                let st = Command::new("ssh")
                    .args(["-F"])
                    .arg(&setup.ssh_config)
                    .args(["-o", "KexAlgorithms=curve25519-sha256", "h1", cmd])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success(), "ssh h1 {cmd}");
            }
            let wall = t0.elapsed().as_secs_f64() / reps as f64;
            std::thread::sleep(Duration::from_millis(300));
            ((tree_cpu(&root) - c0) / reps as f64, wall)
        };
        let (bare_cpu, bare_wall) = measure("true");
        let (sup_cpu, sup_wall) = measure(&step_text);
        // The replayed step made its work directory again.
        let _ = std::fs::remove_dir_all("/tmp/qa-run/profile-one-step");
        let _ = writeln!(
            out,
            "\n#### One command: bare against supervised\n\nOne login + one command, {reps} times one after \
             another with OpenSSH (curve25519), sshd CPU per login:\n\n| command | sshd CPU | wall |\n| --- | ---: | ---: |\n\
             | `true` | {bare_cpu:.3} s | {bare_wall:.3} s |\n\
             | the step `true` as qa-run sends it (supervisor script, {} bytes) | {sup_cpu:.3} s | {sup_wall:.3} s |",
            step_text.len()
        );
    }
    println!("{out}");
    let _ = std::io::stdout().flush();
}

fn main() {
    let Some(sshd) = find_sshd() else {
        println!("SKIPPED: sshd not found (install openssh-server)");
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare_ok = Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !root || !unshare_ok {
        println!(
            "SKIPPED: every sshd runs in a mount namespace of its own, which needs root and `unshare` (util-linux)"
        );
        return;
    }
    let qa_run = qa_run_binary();
    assert!(
        qa_run.is_file(),
        "{} not found: build it first with `cargo build --release -p qa-cli --no-default-features` \
         (same CARGO_TARGET_DIR), or point QA_RUN_BIN at a qa-run binary",
        qa_run.display()
    );
    let version = Command::new(&qa_run)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let modified = std::fs::metadata(&qa_run)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ssh_version = Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    println!(
        "qa-run: {} ({version}, modified {modified} s after the epoch); {ssh_version}",
        qa_run.display()
    );
    let python: Option<PathBuf> = Some(
        std::env::var_os("QA_BENCH_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| "python3".into()),
    );
    let part = std::env::var("QA_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "profile" {
        profile(&sshd, &qa_run);
    }
    if part.is_empty() || part == "timing" {
        let rounds = env_or("QA_BENCH_ROUNDS", 5usize);
        let sizes = std::env::var("QA_BENCH_HOSTS").unwrap_or_else(|_| "8,32".into());
        for n in sizes
            .split(',')
            .filter_map(|s| s.trim().parse::<usize>().ok())
        {
            timing(n, rounds, &sshd, &qa_run, python.as_deref());
        }
    }
}
