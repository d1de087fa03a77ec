//! The `static` provisioner: hosts that already exist, listed in the plan's `inventory:`.
//!
//! "Creating" a machine is taking a *lease* on one of the hosts its spec allows, so that two runs
//! at once never get the same host: a lease is a file created with `O_EXCL` in a lease directory
//! shared by the runs of this machine (default `~/.cache/qa-run/leases`), naming the run, its test
//! id and the process that holds it. A lease whose process is gone (on this machine) is stale and
//! is taken over. Destroying the machine releases the lease; nothing on the host is deleted.
//!
//! Before a host is used it is verified over its executor: reachable, the work directory can be
//! made, enough free disk space, required commands present. If verification fails and the host
//! has a `repair` command, it runs and verification runs once more.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use qa_core::SweepScope;
use qa_core::journal::ResourceLedger;
use qa_core::plan::{BackendName, InventoryHost};
use qa_core::provision::{MachineRequest, ProvisionError, Provisioner, RunContext};
use qa_core::remote::DiscardOutput;
use qa_core::types::{
    Access, HostKeyPolicy, Leftovers, Machine, Resource, ResourceKey, ResourceState, SshTarget,
    TestId,
};
use qa_core::{CommandSpec, Connector};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Resource kind of a lease in the journal.
pub const LEASE_KIND: &str = "lease";

/// What a lease file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lease {
    /// Inventory host name.
    pub host: String,
    /// Run holding it.
    pub run_id: String,
    /// Test id of that run.
    pub test_id: String,
    /// Machine name in that run.
    pub machine: String,
    /// Process holding it.
    pub pid: u32,
    /// Host name of the machine that process runs on.
    pub holder_host: String,
}

/// Gives machines from an inventory of existing hosts.
#[derive(Debug, Clone)]
pub struct StaticProvisioner {
    inventory: Vec<InventoryHost>,
    lease_dir: PathBuf,
    connector: Option<Arc<dyn Connector>>,
    host_keys: HostKeyPolicy,
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn lease_file_name(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{s}.lease")
}

impl StaticProvisioner {
    /// A provisioner for these hosts, with leases in `lease_dir`.
    pub fn new(inventory: Vec<InventoryHost>, lease_dir: impl Into<PathBuf>) -> Self {
        StaticProvisioner {
            inventory,
            lease_dir: lease_dir.into(),
            connector: None,
            host_keys: HostKeyPolicy::Strict,
        }
    }

    /// The default lease directory: `$XDG_CACHE_HOME/qa-run/leases` or `~/.cache/qa-run/leases`.
    pub fn default_lease_dir() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("qa-run/leases")
    }

    /// Verifies hosts through this connector before they are used.
    pub fn with_connector(mut self, c: Arc<dyn Connector>) -> Self {
        self.connector = Some(c);
        self
    }

    /// Host-key policy of the machines handed out (default: strict known_hosts checking).
    pub fn with_host_keys(mut self, p: HostKeyPolicy) -> Self {
        self.host_keys = p;
        self
    }

    fn host(&self, name: &str) -> Option<&InventoryHost> {
        self.inventory.iter().find(|h| h.name == name)
    }

    /// The SSH target of an inventory host.
    pub fn target(&self, h: &InventoryHost) -> SshTarget {
        let user = h
            .user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".into());
        let jumps = h
            .proxy_jump
            .iter()
            .map(|j| match self.host(j) {
                Some(inner) => self.target(inner),
                None => parse_jump(j, &user),
            })
            .collect();
        let mut target = SshTarget::new(
            h.host.clone().unwrap_or_else(|| h.name.clone()),
            h.port.unwrap_or(22),
            user,
        )
        .host_keys(self.host_keys.clone());
        target.identity_file = h.identity_file.clone();
        target.passphrase_env = h.passphrase_env.clone();
        target.jumps = jumps;
        target
    }

    /// Tries to take the lease of `host`, off the async runtime (the lease is written and
    /// synced to disk). `Ok(None)`: someone else holds it.
    async fn try_lease(&self, lease: &Lease) -> std::io::Result<Option<PathBuf>> {
        let (dir, lease) = (self.lease_dir.clone(), lease.clone());
        tokio::task::spawn_blocking(move || try_lease(&dir, &lease))
            .await
            .map_err(std::io::Error::other)?
    }

    fn release(
        &self,
        path: &Path,
        run_id: Option<&str>,
        test_id: Option<&str>,
    ) -> std::io::Result<bool> {
        let holder: Option<Lease> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(h) = holder else { return Ok(false) };
        let ours = run_id.is_some_and(|r| r == h.run_id) || test_id.is_some_and(|t| t == h.test_id);
        if !ours {
            return Ok(false);
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn verify(&self, machine: &Machine, host: &InventoryHost) -> Result<(), String> {
        let Some(connector) = &self.connector else {
            return Ok(());
        };
        // The login is the check of reachability, host key and credentials. The executor is
        // dropped at the end, and its connector keeps the connection for the run.
        let exec = connector
            .connect(machine)
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        if host.require_commands.is_empty() && host.min_free_mib.is_none() {
            // Nothing to ask the host: the work directory is made by the first upload or
            // command, so a command here would only cost a round trip.
            return Ok(());
        }
        let mut script = format!(
            "set -e\nmkdir -p '{}'\n",
            machine.workdir.replace('\'', "'\\''")
        );
        for c in &host.require_commands {
            script.push_str(&format!(
                "command -v '{c}' >/dev/null || {{ echo 'missing command: {c}' >&2; exit 3; }}\n"
            ));
        }
        if let Some(min) = host.min_free_mib {
            script.push_str(&format!(
                "free=$(df -Pm '{wd}' | awk 'NR==2 {{print $4}}')\n[ \"$free\" -ge {min} ] || {{ echo \"only $free MiB free in {wd}, need {min}\" >&2; exit 4; }}\n",
                wd = machine.workdir
            ));
        }
        let sink = Arc::new(CollectStderr::default());
        // One command, without the step supervisor: it starts nothing that could outlive it.
        let cmd = CommandSpec::new(script)
            .timeout(Duration::from_secs(60))
            .workdir("/")
            .bare(true);
        let info = exec
            .run(&cmd, sink.clone(), CancellationToken::new())
            .await
            .map_err(|e| e.to_string())?;
        if info.success() {
            Ok(())
        } else {
            Err(format!(
                "verification failed ({}): {}",
                info.code
                    .map(|c| format!("exit {c}"))
                    .unwrap_or("killed".into()),
                sink.text().trim()
            ))
        }
    }
}

#[derive(Default)]
struct CollectStderr(std::sync::Mutex<Vec<u8>>);

impl CollectStderr {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("stderr")).into_owned()
    }
}

impl qa_core::OutputSink for CollectStderr {
    fn output(&self, stream: qa_core::OutputStream, data: &[u8]) {
        if stream == qa_core::OutputStream::Stderr {
            self.0.lock().expect("stderr").extend_from_slice(data);
        }
    }
}

/// `user@host:port` (user and port optional).
fn parse_jump(s: &str, default_user: &str) -> SshTarget {
    let (user, rest) = s
        .split_once('@')
        .map(|(u, r)| (u.to_string(), r))
        .unwrap_or((default_user.to_string(), s));
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(22)),
        _ => (rest.to_string(), 22),
    };
    SshTarget::new(host, port, user).host_keys(HostKeyPolicy::Strict)
}

/// Takes the lease of `lease.host` in `dir` (blocking). `Ok(None)`: someone else holds it.
fn try_lease(dir: &Path, lease: &Lease) -> std::io::Result<Option<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(lease_file_name(&lease.host));
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(&serde_json::to_vec_pretty(lease).expect("lease serialises"))?;
                f.sync_all()?;
                return Ok(Some(path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder: Option<Lease> = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                match holder {
                    // Our own run already holds it (a resumed run): keep it.
                    Some(h) if h.run_id == lease.run_id && h.machine == lease.machine => {
                        return Ok(Some(path));
                    }
                    // The holder died on this machine: the lease is stale.
                    Some(h) if h.holder_host == lease.holder_host && !pid_alive(h.pid) => {
                        tracing::warn!(host = %lease.host, stale_run = %h.run_id, "taking over a stale lease");
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn err(machine: &str, message: impl Into<String>, leftovers: Leftovers) -> ProvisionError {
    ProvisionError::new(BackendName::STATIC, Some(machine), message, leftovers)
}

#[async_trait]
impl Provisioner for StaticProvisioner {
    fn backend(&self) -> BackendName {
        BackendName::STATIC
    }

    async fn create(
        &self,
        req: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError> {
        let candidates = req
            .spec
            .static_hosts
            .as_ref()
            .map(|s| s.hosts.clone())
            .unwrap_or_default();
        if candidates.is_empty() {
            return Err(err(
                &req.name,
                "no `static.hosts` to choose from",
                Leftovers::Clear,
            ));
        }
        let key = ResourceKey(format!("{}/lease", req.name));
        ledger
            .intent(
                Resource::new(key.clone(), BackendName::STATIC, LEASE_KIND)
                    .machine(req.name.clone())
                    .detail("lease-dir", self.lease_dir.display().to_string()),
            )
            .await
            .map_err(|e| err(&req.name, e.to_string(), Leftovers::Clear))?;
        let mut busy = Vec::new();
        for name in &candidates {
            let Some(host) = self.host(name) else {
                busy.push(format!("{name}: not in the inventory"));
                continue;
            };
            let lease = Lease {
                host: name.clone(),
                run_id: run.run_id.0.clone(),
                test_id: run.test_id.0.clone(),
                machine: req.name.clone(),
                pid: std::process::id(),
                holder_host: this_host(),
            };
            match self.try_lease(&lease).await {
                Ok(Some(path)) => {
                    let details: BTreeMap<String, String> = [
                        ("path".to_string(), path.display().to_string()),
                        ("host".to_string(), name.clone()),
                    ]
                    .into();
                    ledger.created(&key, name, details).await.map_err(|e| {
                        err(
                            &req.name,
                            e.to_string(),
                            Leftovers::Remaining(vec![key.clone()]),
                        )
                    })?;
                    let target = self.target(host);
                    let mut facts = BTreeMap::new();
                    facts.insert(
                        "host".to_string(),
                        format!("{}@{}:{}", target.user, target.host, target.port),
                    );
                    facts.insert("inventory-host".to_string(), name.clone());
                    let mut machine = Machine::new(
                        req.name.clone(),
                        BackendName::STATIC,
                        Access::Ssh(target),
                        format!("/tmp/qa-run/{}/{}", run.run_id.0, req.name),
                    )
                    .in_role(req.role.clone())
                    .resource(key);
                    machine.facts = facts;
                    return Ok(machine);
                }
                Ok(None) => {
                    let holder: Option<Lease> =
                        std::fs::read(self.lease_dir.join(lease_file_name(name)))
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok());
                    busy.push(match holder {
                        Some(h) => format!(
                            "{name}: leased by run {} (pid {} on {})",
                            h.run_id, h.pid, h.holder_host
                        ),
                        None => format!("{name}: leased"),
                    });
                }
                Err(e) => busy.push(format!(
                    "{name}: cannot write lease in {}: {e}",
                    self.lease_dir.display()
                )),
            }
        }
        let _ = ledger.destroyed(&key).await;
        Err(err(
            &req.name,
            format!(
                "no host is free: {}; wait for those runs or add hosts to the inventory",
                busy.join("; ")
            ),
            Leftovers::Clear,
        ))
    }

    async fn wait_ready(
        &self,
        machine: &Machine,
        _deadline: Duration,
    ) -> Result<(), ProvisionError> {
        let host_name = machine.facts.get("inventory-host").cloned();
        let Access::Ssh(t) = &machine.access else {
            return Err(err(
                &machine.name,
                "a static machine is reached over SSH",
                Leftovers::Unknown,
            ));
        };
        let host = host_name.and_then(|n| self.host(&n).cloned()).or_else(|| {
            self.inventory
                .iter()
                .find(|h| {
                    h.host.as_deref().unwrap_or(&h.name) == t.host && h.port.unwrap_or(22) == t.port
                })
                .cloned()
        });
        let Some(host) = host else { return Ok(()) };
        match self.verify(machine, &host).await {
            Ok(()) => Ok(()),
            Err(first) => {
                let Some(repair) = &host.repair else {
                    return Err(err(
                        &machine.name,
                        format!("{}: {first}", host.name),
                        Leftovers::Remaining(machine.resources.clone()),
                    ));
                };
                tracing::warn!(host = %host.name, "verification failed ({first}); running the repair command");
                if let Some(c) = &self.connector
                    && let Ok(x) = c.connect(machine).await
                {
                    let cmd = CommandSpec::new(repair.clone())
                        .timeout(Duration::from_secs(600))
                        .workdir("/");
                    let _ = x
                        .run(&cmd, Arc::new(DiscardOutput), CancellationToken::new())
                        .await;
                }
                self.verify(machine, &host).await.map_err(|second| {
                    err(
                        &machine.name,
                        format!("{}: {first}; after repair: {second}", host.name),
                        Leftovers::Remaining(machine.resources.clone()),
                    )
                })
            }
        }
    }

    async fn destroy(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError> {
        for r in resources
            .iter()
            .filter(|r| r.backend == BackendName::STATIC && r.kind == LEASE_KIND)
        {
            if r.state == ResourceState::Destroyed {
                continue;
            }
            if let Some(path) = r.details.get("path") {
                // Release only a lease this run holds: read its holder first.
                let holder: Option<Lease> = std::fs::read(path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(h) = holder.filter(|h| Some(&h.machine) == r.machine.as_ref()) {
                    self.release(Path::new(path), Some(&h.run_id), None)
                        .map_err(|e| {
                            err(
                                r.machine.as_deref().unwrap_or("?"),
                                format!("cannot release lease {path}: {e}"),
                                Leftovers::Remaining(vec![r.key.clone()]),
                            )
                        })?;
                }
            }
            ledger.destroyed(&r.key).await.map_err(|e| {
                err(
                    r.machine.as_deref().unwrap_or("?"),
                    e.to_string(),
                    Leftovers::Clear,
                )
            })?;
        }
        Ok(())
    }

    async fn sweep(
        &self,
        test_id: &TestId,
        _scope: SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.lease_dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("lease") {
                continue;
            }
            match self.release(&p, None, Some(&test_id.0)) {
                Ok(true) => out.push(format!("static lease {}", p.display())),
                Ok(false) => {}
                Err(e) => {
                    return Err(ProvisionError::new(
                        BackendName::STATIC,
                        None,
                        format!("{}: {e}", p.display()),
                        Leftovers::Unknown,
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use qa_core::conformance::fakes::FakeExecutor;
    use qa_core::journal::MemoryLedger;
    use qa_core::plan::MachineSpec;
    use qa_core::{RemoteError, RemoteExecutor, RunId};

    use super::*;

    fn host(name: &str) -> InventoryHost {
        InventoryHost::new(name)
            .host("127.0.0.1")
            .port(2200)
            .user("tester")
    }

    fn request(name: &str, hosts: &[&str]) -> MachineRequest {
        MachineRequest::new(
            name,
            name,
            MachineSpec::new(name).static_hosts(hosts.iter().copied()),
        )
    }

    fn run(id: &str) -> RunContext {
        RunContext::new(
            RunId(id.into()),
            TestId(format!("t-{id}")),
            "p",
            std::env::temp_dir(),
        )
    }

    #[tokio::test]
    async fn two_runs_never_get_the_same_host() {
        let dir = tempfile::tempdir().unwrap();
        let p = StaticProvisioner::new(vec![host("h1"), host("h2")], dir.path());
        let (l1, l2, l3) = (
            MemoryLedger::default(),
            MemoryLedger::default(),
            MemoryLedger::default(),
        );
        let a = p
            .create(&request("m", &["h1", "h2"]), &run("r1"), &l1)
            .await
            .unwrap();
        let b = p
            .create(&request("m", &["h1", "h2"]), &run("r2"), &l2)
            .await
            .unwrap();
        assert_ne!(a.facts["host"], "");
        assert_ne!(
            l1.resources()[0].id,
            l2.resources()[0].id,
            "different hosts"
        );
        let e = p
            .create(&request("m", &["h1", "h2"]), &run("r3"), &l3)
            .await
            .unwrap_err();
        assert!(
            e.message.contains("no host is free") && e.message.contains("leased by run r1"),
            "{e}"
        );
        assert_eq!(
            l3.resources()[0].state,
            ResourceState::Destroyed,
            "the failed create leaves nothing"
        );

        // Releasing r1's machine frees its host for r3; destroy is idempotent.
        p.destroy(&l1.resources(), &l1).await.unwrap();
        p.destroy(&l1.resources(), &l1).await.unwrap();
        let l4 = MemoryLedger::default();
        let c = p
            .create(&request("m", &["h1", "h2"]), &run("r3"), &l4)
            .await
            .unwrap();
        assert_eq!(c.facts["host"], a.facts["host"]);
        drop(b);
    }

    #[tokio::test]
    async fn a_stale_lease_is_taken_over_and_sweep_releases_by_test_id() {
        let dir = tempfile::tempdir().unwrap();
        let stale = Lease {
            host: "h1".into(),
            run_id: "dead".into(),
            test_id: "t-dead".into(),
            machine: "m".into(),
            pid: u32::MAX - 1,
            holder_host: this_host(),
        };
        std::fs::write(
            dir.path().join("h1.lease"),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        let p = StaticProvisioner::new(vec![host("h1")], dir.path());
        let l = MemoryLedger::default();
        p.create(&request("m", &["h1"]), &run("r1"), &l)
            .await
            .unwrap();
        assert_eq!(
            p.sweep(&TestId("t-other".into()), SweepScope::Configured)
                .await
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            p.sweep(&TestId("t-r1".into()), SweepScope::Configured)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(!dir.path().join("h1.lease").exists());
    }

    /// Connects every machine to a local sandbox, so verification really runs commands.
    #[derive(Debug)]
    struct SandboxConnector(PathBuf);

    #[async_trait]
    impl Connector for SandboxConnector {
        async fn connect(&self, _: &Machine) -> Result<Arc<dyn RemoteExecutor>, RemoteError> {
            Ok(Arc::new(FakeExecutor::new(&self.0)))
        }
    }

    #[tokio::test]
    async fn hosts_are_verified_and_repaired_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("repaired");
        let mut h = host("h1");
        h.require_commands = vec!["sh".into(), "qa-run-test-missing-command".into()];
        let p = StaticProvisioner::new(vec![h.clone()], dir.path().join("leases"))
            .with_connector(Arc::new(SandboxConnector(dir.path().to_path_buf())));
        let l = MemoryLedger::default();
        let m = p
            .create(&request("m", &["h1"]), &run("r1"), &l)
            .await
            .unwrap();
        let e = p.wait_ready(&m, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            e.message
                .contains("missing command: qa-run-test-missing-command"),
            "{e}"
        );

        // A repair that makes the host pass.
        h.require_commands = vec!["sh".into()];
        h.min_free_mib = Some(1);
        h.repair = Some(format!("touch '{}'", marker.display()));
        let mut bad = h.clone();
        bad.require_commands
            .push(format!("test-repair-{}", std::process::id()));
        let p2 = StaticProvisioner::new(vec![bad], dir.path().join("leases2"))
            .with_connector(Arc::new(SandboxConnector(dir.path().to_path_buf())));
        let e = p2.wait_ready(&m, Duration::from_secs(5)).await.unwrap_err();
        assert!(marker.exists(), "the repair command ran");
        assert!(e.message.contains("after repair"), "{e}");
        let p3 = StaticProvisioner::new(vec![h], dir.path().join("leases3"))
            .with_connector(Arc::new(SandboxConnector(dir.path().to_path_buf())));
        p3.wait_ready(&m, Duration::from_secs(5)).await.unwrap();
    }

    #[test]
    fn jump_hosts_resolve_through_the_inventory() {
        let mut guest = host("guest");
        guest.proxy_jump = vec!["bastion".into(), "ops@10.1.2.3:2222".into()];
        let p = StaticProvisioner::new(vec![host("bastion"), guest.clone()], "/nonexistent");
        let t = p.target(&guest);
        assert_eq!(t.jumps.len(), 2);
        assert_eq!(
            (t.jumps[0].host.as_str(), t.jumps[0].port),
            ("127.0.0.1", 2200)
        );
        assert_eq!(
            (
                t.jumps[1].user.as_str(),
                t.jumps[1].host.as_str(),
                t.jumps[1].port
            ),
            ("ops", "10.1.2.3", 2222)
        );
    }
}
