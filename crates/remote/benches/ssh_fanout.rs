//! Fan-out over SSH to a fleet of local sshd hosts: qa-run's `SshExecutor` against the tools users
//! would otherwise reach for, in one run, interleaved round by round.
//!
//! `cargo bench -p qa-remote --bench ssh_fanout` (env: `QA_BENCH_HOSTS`, default 32;
//! `QA_BENCH_ROUNDS`, default 5). Prints a Markdown table.
//!
//! Cases: `true` on every host, a 16 MiB upload to every host (each host its own destination,
//! every copy verified by SHA-256), `sleep 1` on every host. Tools:
//! - qa-run, new sessions: connect + authenticate + run, like the command-line tools do;
//! - qa-run, warm sessions: the run's sessions already open (as during a plan's steps);
//! - OpenSSH `ssh`/`scp` driven by `xargs -P N`, with curve25519 (libssh2's kex) and with the
//!   default kex (sntrup761x25519);
//! - parallel-ssh (`parallel-ssh`; not for uploads: `parallel-scp` writes one destination path on
//!   every host, which on one machine is one file, and forces compression).
//!
//! Client CPU is this process's (qa-run) or its children's (tools) user+system time; server CPU
//! is that of every process under the fleet's sshd listeners (live ones and reaped ones).
//! Memory per connected host is this process's RSS growth with every warm session open, divided
//! by the hosts.

mod common;

use common::{median, min, rusage, sha256, tree_cpu};

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qa_core::remote::{CommandSpec, DiscardOutput, RemoteExecutor};
use qa_remote::ssh::{SshExecutor, SshOptions};
use qa_testkit::{ClientKeys, Fleet, KeyKind};
use tokio_util::sync::CancellationToken;

const PAYLOAD: usize = 16 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    True,
    Upload,
    Sleep,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::True => "`true` on all hosts",
            Case::Upload => "16 MiB upload to all hosts",
            Case::Sleep => "`sleep 1` on all hosts",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    QaNew,
    QaWarm,
    SshCurve,
    SshDefault,
    Pssh,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::QaNew => "qa-run (new sessions)",
            Tool::QaWarm => "qa-run (warm sessions)",
            Tool::SshCurve => "OpenSSH, xargs -P, curve25519",
            Tool::SshDefault => "OpenSSH, xargs -P, default kex",
            Tool::Pssh => "parallel-ssh",
        }
    }
}

#[derive(Default, Clone)]
struct Sample {
    wall: Vec<f64>,
    client_cpu: Vec<f64>,
    server_cpu: Vec<f64>,
}

struct Bench {
    fleet: Fleet,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    known_hosts: PathBuf,
    key: PathBuf,
    payload: PathBuf,
    payload_sha: String,
    dest_root: PathBuf,
    ports_file: PathBuf,
    pssh_hosts: PathBuf,
    user: String,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Bench {
    /// CPU of every process in the listeners' trees: each live process's own time plus what it
    /// reaped from exited children, so every second is counted once.
    fn server_cpu(&self) -> f64 {
        let roots: Vec<u32> = self.fleet.hosts.iter().filter_map(|h| h.pid()).collect();
        tree_cpu(&roots)
    }

    fn options(&self) -> SshOptions {
        SshOptions {
            known_hosts: vec![self.known_hosts.clone()],
            use_agent: false,
            ..SshOptions::default()
        }
    }

    fn executors(&self) -> Vec<Arc<SshExecutor>> {
        self.fleet
            .hosts
            .iter()
            .map(|h| {
                Arc::new(SshExecutor::new(
                    h.target_with_key(KeyKind::Ed25519),
                    self.dir.display().to_string(),
                    self.options(),
                ))
            })
            .collect()
    }

    fn dest(&self, port: u16) -> PathBuf {
        self.dest_root.join(port.to_string()).join("payload")
    }

    fn reset_destinations(&self) {
        let _ = std::fs::remove_dir_all(&self.dest_root);
        for h in &self.fleet.hosts {
            std::fs::create_dir_all(self.dest_root.join(h.port().to_string())).unwrap();
        }
    }

    fn verify_destinations(&self, tool: Tool) {
        for h in &self.fleet.hosts {
            let d = self.dest(h.port());
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
                self.payload_sha,
                "{}: {} differs",
                tool.name(),
                d.display()
            );
        }
    }

    fn ssh_args(&self, kex: Option<&str>) -> String {
        let mut s = format!(
            "-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o ControlMaster=no \
             -o ControlPath=none -o LogLevel=ERROR -i {}",
            self.known_hosts.display(),
            self.key.display()
        );
        if let Some(k) = kex {
            s.push_str(&format!(" -o KexAlgorithms={k}"));
        }
        s
    }

    fn external(&self, case: Case, tool: Tool) {
        let n = self.fleet.hosts.len();
        let kex = if tool == Tool::SshCurve {
            Some("curve25519-sha256")
        } else {
            None
        };
        let cmd = match (tool, case) {
            (Tool::Pssh, Case::True | Case::Sleep) => format!(
                "parallel-ssh -h {} -p {n} -t 0 -x '{}' {} > /dev/null",
                self.pssh_hosts.display(),
                self.ssh_args(None),
                if case == Case::True {
                    "true"
                } else {
                    "sleep 1"
                }
            ),
            (_, Case::True | Case::Sleep) => format!(
                "xargs -P {n} -I{{}} ssh {} -p {{}} {}@127.0.0.1 {} < {}",
                self.ssh_args(kex),
                self.user,
                if case == Case::True {
                    "true"
                } else {
                    "'sleep 1'"
                },
                self.ports_file.display()
            ),
            (_, Case::Upload) => format!(
                "xargs -P {n} -I{{}} scp -q {} -P {{}} {} {}@127.0.0.1:{}/{{}}/payload < {}",
                self.ssh_args(kex),
                self.payload.display(),
                self.user,
                self.dest_root.display(),
                self.ports_file.display()
            ),
        };
        let st = Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{}: `{cmd}` failed: {st}", tool.name());
    }

    async fn qa(&self, case: Case, execs: &[Arc<SshExecutor>]) {
        let mut tasks = Vec::new();
        for (i, e) in execs.iter().enumerate() {
            let e = e.clone();
            let dest = self.dest(self.fleet.hosts[i].port()).display().to_string();
            let payload = self.payload.clone();
            tasks.push(tokio::spawn(async move {
                match case {
                    Case::Upload => e.put_file(&payload, &dest, None).await.unwrap(),
                    Case::True | Case::Sleep => {
                        let spec = CommandSpec::new(if case == Case::True {
                            "true"
                        } else {
                            "sleep 1"
                        });
                        let info = e
                            .run(&spec, Arc::new(DiscardOutput), CancellationToken::new())
                            .await
                            .unwrap();
                        assert!(info.success(), "{info:?}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

fn main() {
    let hosts: usize = std::env::var("QA_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rounds: usize = std::env::var("QA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let Some(fleet) = Fleet::start_or_skip(hosts) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("qa-bench-ssh-")
        .tempdir()
        .unwrap();
    let d = dir.path().to_path_buf();
    let known_hosts = fleet.known_hosts(&d);
    let payload = d.join("payload.bin");
    {
        let mut f = std::fs::File::create(&payload).unwrap();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut buf = vec![0u8; PAYLOAD];
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    let ports: String = fleet
        .hosts
        .iter()
        .map(|h| format!("{}\n", h.port()))
        .collect();
    let ports_file = d.join("ports");
    std::fs::write(&ports_file, ports).unwrap();
    let user = fleet.hosts[0].user();
    let pssh: String = fleet
        .hosts
        .iter()
        .map(|h| format!("{user}@127.0.0.1:{}\n", h.port()))
        .collect();
    let pssh_hosts = d.join("pssh_hosts");
    std::fs::write(&pssh_hosts, pssh).unwrap();
    let have_pssh = Command::new("parallel-ssh")
        .arg("--version")
        .output()
        .is_ok();
    let bench = Bench {
        fleet,
        known_hosts,
        key: ClientKeys::shared().private(KeyKind::Ed25519),
        payload_sha: sha256(&payload),
        payload,
        dest_root: d.join("dest"),
        ports_file,
        pssh_hosts,
        user,
        dir: d.clone(),
        _dir: dir,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // Warm sessions, and the memory they cost.
    let rss_before = rss_kib();
    let warm = bench.executors();
    rt.block_on(async {
        for e in &warm {
            e.connect().await.unwrap();
        }
    });
    let rss_per_host = (rss_kib().saturating_sub(rss_before)) as f64 / hosts as f64;

    let mut tools = vec![Tool::QaNew, Tool::QaWarm, Tool::SshCurve, Tool::SshDefault];
    if have_pssh {
        tools.push(Tool::Pssh);
    }
    let cases = [Case::True, Case::Upload, Case::Sleep];
    let mut results: Vec<((Case, Tool), Sample)> = Vec::new();
    for &c in &cases {
        for &t in &tools {
            if !(c == Case::Upload && t == Tool::Pssh) {
                results.push(((c, t), Sample::default()));
            }
        }
    }
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for &case in &cases {
            for &tool in &tools {
                if case == Case::Upload && tool == Tool::Pssh {
                    continue;
                }
                if case == Case::Upload {
                    bench.reset_destinations();
                }
                // Let the listeners reap the previous trial's connection processes.
                std::thread::sleep(Duration::from_millis(300));
                let (s0, c_self, c_kids) = (
                    bench.server_cpu(),
                    rusage(libc::RUSAGE_SELF),
                    rusage(libc::RUSAGE_CHILDREN),
                );
                let t0 = Instant::now();
                match tool {
                    Tool::QaNew => rt.block_on(async {
                        let execs = bench.executors();
                        bench.qa(case, &execs).await;
                        for e in &execs {
                            e.close().await;
                        }
                    }),
                    Tool::QaWarm => rt.block_on(bench.qa(case, &warm)),
                    _ => bench.external(case, tool),
                }
                let wall = t0.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_millis(300));
                let client =
                    (rusage(libc::RUSAGE_SELF) - c_self) + (rusage(libc::RUSAGE_CHILDREN) - c_kids);
                let server = bench.server_cpu() - s0;
                if case == Case::Upload {
                    bench.verify_destinations(tool);
                }
                let s = &mut results
                    .iter_mut()
                    .find(|(k, _)| *k == (case, tool))
                    .unwrap()
                    .1;
                s.wall.push(wall);
                s.client_cpu.push(client);
                s.server_cpu.push(server);
            }
        }
    }

    println!(
        "{hosts} hosts, {rounds} rounds (tools interleaved in every round); times in seconds.\n"
    );
    println!(
        "| case | tool | min | median | vs qa-run new | client CPU | server CPU | aggregate rate |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &case in &cases {
        let base = results
            .iter()
            .find(|(k, _)| *k == (case, Tool::QaNew))
            .map(|(_, s)| median(&s.wall))
            .unwrap();
        for ((c, t), s) in &results {
            if *c != case {
                continue;
            }
            let rate = if case == Case::Upload {
                format!(
                    "{:.0} MiB/s",
                    (hosts * PAYLOAD) as f64 / (1 << 20) as f64 / median(&s.wall)
                )
            } else {
                "".into()
            };
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.2}× | {:.3} | {:.3} | {} |",
                case.name(),
                t.name(),
                min(&s.wall),
                median(&s.wall),
                median(&s.wall) / base,
                median(&s.client_cpu),
                median(&s.server_cpu),
                rate
            );
        }
    }
    println!(
        "\nqa-run memory per connected host (RSS growth with {hosts} warm sessions / {hosts}): {rss_per_host:.0} KiB"
    );
}
