//! Fakes of the four backend traits, for tests of the runner and of embedding harnesses that
//! should not need a backend crate, and as proof that each conformance suite can be passed.
//!
//! - [`FakeProvisioner`]: "instances" in a shared in-memory cloud; a second provisioner made with
//!   [`FakeProvisioner::fresh_instance`] sees the same cloud, as a new process would see a real one.
//! - [`FakeExecutor`]: the smallest honest executor: `/bin/sh` in a process group in a directory,
//!   plus a boot id in memory that [`RemoteExecutor::reboot`] changes, and injectable failures.
//! - [`FakeReservation`]: reservations in memory, with zones that can be declared out of capacity.
//! - [`FakePublisher`]: keeps published reports in memory.
//! - [`FakeCloudBackend`]: the descriptor of [`FAKE_CLOUD`], a cloud whose machines take
//!   `fake-cloud: {instance-type, region, zones, reserve}` options, for runs that reserve.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendDescriptor, BackendName, ReservationNeed, SweepScope};
use crate::capacity::{CapacityError, CapacityRequest, CapacityReservation, Placement};
use crate::journal::ResourceLedger;
use crate::plan::schema::{self, Shape};
use crate::provision::{MachineRequest, ProvisionError, Provisioner, RunContext};
use crate::publish::{PublishError, PublishReceipt, ResultPublisher};
use crate::remote::{CommandSpec, ExitInfo, OutputSink, OutputStream, RemoteError, RemoteExecutor};
use crate::report::Report;
use crate::types::{
    Access, BootId, Leftovers, Machine, Resource, ResourceKey, ResourceState, TestId,
};

// ---------------------------------------------------------------------------------------------
// Backend

/// The name of the fake cloud: give it to [`FakeProvisioner::with_backend`] and register
/// [`FakeCloudBackend`] for runs whose machines reserve capacity.
pub const FAKE_CLOUD: BackendName = BackendName::new("fake-cloud");

const FAKE_CLOUD_OPTIONS: Shape = Shape::Struct(&[
    schema::req("instance-type", &schema::STR),
    schema::opt("region", &schema::STR),
    schema::dflt("zones", &schema::STR_LIST),
    schema::dflt("reserve", &schema::BOOL),
]);

/// The descriptor of [`FAKE_CLOUD`]: a cloud (its machines are swept by tag and get a release
/// task) whose machines say `fake-cloud: {instance-type: t, reserve: true}` to be reserved.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeCloudBackend;

impl BackendDescriptor for FakeCloudBackend {
    fn name(&self) -> BackendName {
        FAKE_CLOUD
    }

    fn options_shape(&self) -> Option<&'static Shape> {
        Some(&FAKE_CLOUD_OPTIONS)
    }

    fn reservation_need(&self, options: Option<&serde_json::Value>) -> Option<ReservationNeed> {
        let o = options?;
        if !o.get("reserve").and_then(|r| r.as_bool()).unwrap_or(false) {
            return None;
        }
        let zones = o
            .get("zones")
            .and_then(|z| z.as_array())
            .map(|z| {
                z.iter()
                    .filter_map(|z| z.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Some(ReservationNeed::new(
            o.get("region").and_then(|r| r.as_str()).map(String::from),
            o.get("instance-type")?.as_str()?,
            zones,
        ))
    }

    fn is_cloud(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Provisioner

/// An instance in the fake cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeInstance {
    /// Its id (`fake-N`).
    pub id: String,
    /// The machine name.
    pub name: String,
    /// The test id tag.
    pub test_id: String,
    /// The client token it was created with.
    pub client_token: String,
    /// The tags it was created with.
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct FakeCloud {
    next_id: u64,
    instances: BTreeMap<String, FakeInstance>,
}

/// A [`Provisioner`] whose machines are records in an in-memory cloud.
#[derive(Debug, Clone)]
pub struct FakeProvisioner {
    backend: BackendName,
    cloud: Arc<Mutex<FakeCloud>>,
    workdir_root: PathBuf,
}

impl Default for FakeProvisioner {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeProvisioner {
    /// A provisioner with an empty cloud of its own, reporting itself as the `local` backend.
    pub fn new() -> Self {
        FakeProvisioner {
            backend: BackendName::LOCAL,
            cloud: Arc::default(),
            workdir_root: std::env::temp_dir().join("qa-fake-machines"),
        }
    }

    /// Reports itself (and tags its resources) as `backend`.
    pub fn with_backend(mut self, backend: BackendName) -> Self {
        self.backend = backend;
        self
    }

    /// Machines get `<root>/<name>` as work directory (nothing is made there).
    pub fn with_workdir_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.workdir_root = root.into();
        self
    }

    /// Another provisioner on the same cloud, sharing nothing else (a new process after a crash).
    pub fn fresh_instance(&self) -> Self {
        FakeProvisioner {
            backend: self.backend,
            cloud: self.cloud.clone(),
            workdir_root: self.workdir_root.clone(),
        }
    }

    /// The instances that exist now.
    pub fn instances(&self) -> Vec<FakeInstance> {
        self.cloud
            .lock()
            .expect("cloud lock")
            .instances
            .values()
            .cloned()
            .collect()
    }

    fn error(
        &self,
        machine: Option<&str>,
        message: impl Into<String>,
        leftovers: Leftovers,
    ) -> ProvisionError {
        ProvisionError::new(self.backend, machine, message, leftovers)
    }
}

const INSTANCE_KIND: &str = "instance";

#[async_trait]
impl Provisioner for FakeProvisioner {
    fn backend(&self) -> BackendName {
        self.backend
    }

    async fn create(
        &self,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError> {
        let name = request.name.as_str();
        let key = ResourceKey(format!("fake/instance/{name}"));
        let token = format!("{}-{name}", run.run_id);
        ledger
            .intent(Resource {
                key: key.clone(),
                backend: self.backend,
                kind: INSTANCE_KIND.into(),
                machine: Some(name.into()),
                id: None,
                client_token: Some(token.clone()),
                details: BTreeMap::from([("test-id".to_string(), run.test_id.0.clone())]),
                state: ResourceState::Intent,
            })
            .await
            .map_err(|e| {
                self.error(Some(name), "cannot journal the instance", Leftovers::Clear)
                    .with_source(e)
            })?;
        let id = {
            let mut cloud = self.cloud.lock().expect("cloud lock");
            // Like a cloud API with client tokens: the same token gives back the same instance.
            match cloud.instances.values().find(|i| i.client_token == token) {
                Some(i) => i.id.clone(),
                None => {
                    cloud.next_id += 1;
                    let id = format!("fake-{}", cloud.next_id);
                    let instance = FakeInstance {
                        id: id.clone(),
                        name: name.into(),
                        test_id: run.test_id.0.clone(),
                        client_token: token,
                        tags: run.tags.clone(),
                    };
                    cloud.instances.insert(id.clone(), instance);
                    id
                }
            }
        };
        ledger
            .created(&key, &id, BTreeMap::new())
            .await
            .map_err(|e| {
                self.error(
                    Some(name),
                    format!("instance {id} made but not journaled"),
                    Leftovers::Orphaned(id.clone()),
                )
                .with_source(e)
            })?;
        let workdir = self.workdir_root.join(name);
        Ok(Machine {
            name: name.into(),
            role: request.role.clone(),
            backend: self.backend,
            access: Access::Local {
                root: workdir.clone(),
            },
            workdir: workdir.display().to_string(),
            resources: vec![key],
            facts: BTreeMap::from([("instance-id".to_string(), id)]),
        })
    }

    async fn wait_ready(
        &self,
        machine: &Machine,
        _deadline: Duration,
    ) -> Result<(), ProvisionError> {
        let id = machine
            .facts
            .get("instance-id")
            .cloned()
            .unwrap_or_default();
        if self
            .cloud
            .lock()
            .expect("cloud lock")
            .instances
            .contains_key(&id)
        {
            Ok(())
        } else {
            Err(self.error(
                Some(&machine.name),
                format!("instance {id} does not exist"),
                Leftovers::Unknown,
            ))
        }
    }

    async fn destroy(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError> {
        for r in resources
            .iter()
            .filter(|r| r.backend == self.backend && r.kind == INSTANCE_KIND)
        {
            if matches!(r.state, ResourceState::Destroyed | ResourceState::Kept) {
                continue;
            }
            {
                let mut cloud = self.cloud.lock().expect("cloud lock");
                let found = match &r.id {
                    Some(id) => Some(id.clone()),
                    // Only an intent: find it by the token it was (maybe) created with.
                    None => cloud
                        .instances
                        .values()
                        .find(|i| Some(&i.client_token) == r.client_token.as_ref())
                        .map(|i| i.id.clone()),
                };
                if let Some(id) = found {
                    cloud.instances.remove(&id);
                }
            }
            ledger.destroyed(&r.key).await.map_err(|e| {
                self.error(
                    r.machine.as_deref(),
                    "destroyed but not journaled",
                    Leftovers::Clear,
                )
                .with_source(e)
            })?;
        }
        Ok(())
    }

    async fn sweep(
        &self,
        test_id: &TestId,
        _scope: SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError> {
        let mut cloud = self.cloud.lock().expect("cloud lock");
        let ids: Vec<String> = cloud
            .instances
            .values()
            .filter(|i| i.test_id == test_id.0)
            .map(|i| i.id.clone())
            .collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| cloud.instances.remove(&id))
            .map(|i| format!("instance {} ({})", i.id, i.name))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Capacity

/// A reservation in a [`FakeReservation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCapacityReservation {
    /// Its id.
    pub id: String,
    /// The zone.
    pub zone: String,
    /// The instance type.
    pub instance_type: String,
    /// How many instances.
    pub count: u32,
    /// The test id tag.
    pub test_id: String,
}

/// A [`CapacityReservation`] in memory.
#[derive(Debug, Clone)]
pub struct FakeReservation {
    enabled: bool,
    zones: Vec<String>,
    full_zones: Vec<String>,
    reservations: Arc<Mutex<(u64, Vec<FakeCapacityReservation>)>>,
}

impl Default for FakeReservation {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeReservation {
    /// An enabled reservation service with zones `zone-a`, `zone-b`, `zone-c`, all with capacity.
    pub fn new() -> Self {
        FakeReservation {
            enabled: true,
            zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
            full_zones: Vec::new(),
            reservations: Arc::default(),
        }
    }

    /// One that reserves nothing.
    pub fn disabled() -> Self {
        FakeReservation {
            enabled: false,
            ..Self::new()
        }
    }

    /// `zone` answers every request with a capacity error.
    pub fn without_capacity_in(mut self, zone: &str) -> Self {
        self.full_zones.push(zone.into());
        self
    }

    /// The reservations that exist now.
    pub fn reservations(&self) -> Vec<FakeCapacityReservation> {
        self.reservations
            .lock()
            .expect("reservation lock")
            .1
            .clone()
    }

    fn take(&self, test_id: &TestId) -> u32 {
        let mut g = self.reservations.lock().expect("reservation lock");
        let before = g.1.len();
        g.1.retain(|r| r.test_id != test_id.0);
        (before - g.1.len()) as u32
    }
}

#[async_trait]
impl CapacityReservation for FakeReservation {
    fn backend(&self) -> BackendName {
        FAKE_CLOUD
    }

    fn is_enabled(&self) -> bool {
        self.enabled
    }

    async fn reserve(
        &self,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> Result<Placement, CapacityError> {
        let zones = if request.zones.is_empty() {
            self.zones.clone()
        } else {
            request.zones.clone()
        };
        if !self.enabled {
            return Ok(Placement {
                zone: zones.first().cloned().unwrap_or_default(),
                reservations: BTreeMap::new(),
            });
        }
        let mut tried = Vec::new();
        for zone in zones {
            tried.push(zone.clone());
            if self.full_zones.contains(&zone) {
                continue;
            }
            let mut placement = Placement {
                zone: zone.clone(),
                reservations: BTreeMap::new(),
            };
            for (instance_type, count) in &request.needs {
                let key = ResourceKey(format!("fake/reservation/{zone}/{instance_type}"));
                let other = |message: String| CapacityError::Other {
                    backend: FAKE_CLOUD,
                    message,
                    leftovers: Leftovers::Unknown,
                };
                ledger
                    .intent(Resource {
                        key: key.clone(),
                        backend: FAKE_CLOUD,
                        kind: "reservation".into(),
                        machine: None,
                        id: None,
                        client_token: None,
                        details: BTreeMap::from([("zone".to_string(), zone.clone())]),
                        state: ResourceState::Intent,
                    })
                    .await
                    .map_err(|e| other(e.to_string()))?;
                let id = {
                    let mut g = self.reservations.lock().expect("reservation lock");
                    g.0 += 1;
                    let id = format!("cr-{}", g.0);
                    g.1.push(FakeCapacityReservation {
                        id: id.clone(),
                        zone: zone.clone(),
                        instance_type: instance_type.clone(),
                        count: *count,
                        test_id: request.test_id.0.clone(),
                    });
                    id
                };
                ledger
                    .created(&key, &id, BTreeMap::new())
                    .await
                    .map_err(|e| other(e.to_string()))?;
                placement.reservations.insert(instance_type.clone(), id);
            }
            return Ok(placement);
        }
        Err(CapacityError::NoCapacity {
            tried,
            last: "insufficient capacity".into(),
        })
    }

    fn get_id(&self, zone: &str, instance_type: &str) -> Option<String> {
        let g = self.reservations.lock().expect("reservation lock");
        g.1.iter()
            .find(|r| r.zone == zone && r.instance_type == instance_type)
            .map(|r| r.id.clone())
    }

    async fn cancel(&self, test_id: &TestId, _scope: SweepScope<'_>) -> Result<u32, CapacityError> {
        Ok(self.take(test_id))
    }
}

// ---------------------------------------------------------------------------------------------
// Publisher

/// A [`ResultPublisher`] that keeps the reports it was given.
#[derive(Debug, Default, Clone)]
pub struct FakePublisher {
    published: Arc<Mutex<BTreeMap<String, Report>>>,
}

impl FakePublisher {
    /// An empty publisher.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reports published so far, by run id.
    pub fn published(&self) -> BTreeMap<String, Report> {
        self.published.lock().expect("publisher lock").clone()
    }
}

#[async_trait]
impl ResultPublisher for FakePublisher {
    fn name(&self) -> &str {
        "fake"
    }

    async fn publish(
        &self,
        report: &Report,
        run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        if !run_dir.is_dir() {
            return Err(PublishError::new(
                "fake",
                format!("run directory {} does not exist", run_dir.display()),
            ));
        }
        self.published
            .lock()
            .expect("publisher lock")
            .insert(report.run_id.clone(), report.clone());
        Ok(PublishReceipt {
            publisher: "fake".into(),
            location: format!("memory://fake/{}", report.run_id),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Executor

/// A [`RemoteExecutor`] running `/bin/sh` in a process group inside a directory, with a boot id
/// in memory (changed by [`RemoteExecutor::reboot`]) and failures that tests can inject.
#[derive(Debug)]
pub struct FakeExecutor {
    root: PathBuf,
    boot_id: Mutex<String>,
    commands: Mutex<Vec<String>>,
    failures: Mutex<VecDeque<String>>,
}

static FAKE_TEMP: AtomicU64 = AtomicU64::new(0);

impl FakeExecutor {
    /// An executor whose work directory is `root` (which must exist).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FakeExecutor {
            root: root.into(),
            boot_id: Mutex::new(format!("fake-boot-{:08x}", rand::random::<u32>())),
            commands: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// Every command line run so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().expect("commands lock").clone()
    }

    /// The next `run` fails with [`RemoteError::Disconnected`] carrying `message`, without running.
    pub fn fail_next_run(&self, message: impl Into<String>) {
        self.failures
            .lock()
            .expect("failures lock")
            .push_back(message.into());
    }

    fn resolve(&self, path: &str) -> Result<PathBuf, RemoteError> {
        let p = Path::new(path);
        if p.is_absolute() {
            return Ok(p.to_path_buf());
        }
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !out.pop() {
                        return Err(self.escape(path));
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(self.escape(path)),
            }
        }
        Ok(self.root.join(out))
    }

    fn escape(&self, path: &str) -> RemoteError {
        RemoteError::PathEscape {
            path: path.into(),
            root: self.root.display().to_string(),
        }
    }
}

fn kill_group(pgid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) only sends a signal.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

fn transfer(from: &Path, to: &Path) -> impl Fn(std::io::Error) -> RemoteError {
    let (from, to) = (from.display().to_string(), to.display().to_string());
    move |source| RemoteError::Transfer {
        from: from.clone(),
        to: to.clone(),
        source,
    }
}

fn copy_replacing(from: &Path, to: &Path, mode: Option<u32>) -> Result<(), RemoteError> {
    let err = transfer(from, to);
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(&err)?;
    let tmp = dir.join(format!(
        ".fake-tmp.{}.{}",
        std::process::id(),
        FAKE_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let mode = match mode {
        Some(m) => m,
        None => std::fs::metadata(from).map_err(&err)?.permissions().mode() & 0o7777,
    };
    let r = std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|_| std::fs::rename(&tmp, to));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(err)
}

fn copy_dir(from: &Path, to: &Path) -> Result<u64, RemoteError> {
    let err = transfer(from, to);
    std::fs::create_dir_all(to).map_err(&err)?;
    let mut n = 0;
    for e in std::fs::read_dir(from).map_err(&err)? {
        let e = e.map_err(&err)?;
        if e.file_type().map_err(&err)?.is_dir() {
            n += copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            copy_replacing(&e.path(), &to.join(e.file_name()), None)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Glob matching of one path segment: `*` and `?`.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Glob matching of a relative path; `**` matches any number of whole segments.
fn path_matches(pattern: &[&str], path: &[String]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some(&"**") => (0..=path.len()).any(|skip| path_matches(&pattern[1..], &path[skip..])),
        Some(p) => {
            !path.is_empty()
                && segment_matches(p.as_bytes(), path[0].as_bytes())
                && path_matches(&pattern[1..], &path[1..])
        }
    }
}

fn walk_files(root: &Path, rel: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    let dir = rel.iter().fold(root.to_path_buf(), |p, s| p.join(s));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        rel.push(e.file_name().to_string_lossy().into_owned());
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(root, rel, found),
            _ => found.push(rel.clone()),
        }
        rel.pop();
    }
}

#[async_trait]
impl RemoteExecutor for FakeExecutor {
    fn describe(&self) -> String {
        format!("fake:{}", self.root.display())
    }

    async fn run(
        &self,
        cmd: &CommandSpec,
        sink: Arc<dyn OutputSink>,
        cancel: CancellationToken,
    ) -> Result<ExitInfo, RemoteError> {
        self.commands
            .lock()
            .expect("commands lock")
            .push(cmd.command.clone());
        if let Some(message) = self.failures.lock().expect("failures lock").pop_front() {
            return Err(RemoteError::Disconnected {
                target: self.describe(),
                message,
            });
        }
        let workdir = match &cmd.workdir {
            Some(w) => self.resolve(w)?,
            None => self.root.clone(),
        };
        let started = Instant::now();
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd.command)
            .envs(&cmd.env)
            .current_dir(&workdir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RemoteError::Io {
                context: format!("start /bin/sh in {}", workdir.display()),
                source,
            })?;
        let pgid = child.id().unwrap_or(0) as i32;
        let pump = |mut r: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    stream,
                    sink: Arc<dyn OutputSink>| async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.output(stream, &buf[..n]);
            }
        };
        let mut out = tokio::spawn(pump(
            Box::new(child.stdout.take().expect("piped")),
            OutputStream::Stdout,
            sink.clone(),
        ));
        let mut err = tokio::spawn(pump(
            Box::new(child.stderr.take().expect("piped")),
            OutputStream::Stderr,
            sink,
        ));
        let limit = cmd.timeout.unwrap_or(Duration::from_secs(u32::MAX as u64));
        let mut timed_out = false;
        let mut cancelled = false;
        let status = {
            let finished = async {
                let s = child.wait().await;
                let _ = (&mut out).await;
                let _ = (&mut err).await;
                s
            };
            tokio::select! {
                s = finished => Some(s),
                _ = tokio::time::sleep(limit) => { timed_out = true; None }
                _ = cancel.cancelled() => { cancelled = true; None }
            }
        };
        let status = match status {
            Some(s) => s.map_err(|source| RemoteError::Io {
                context: "wait for /bin/sh".into(),
                source,
            })?,
            None => {
                // No grace period: a fake need not let commands clean up after themselves.
                kill_group(pgid, libc::SIGKILL);
                let s = child.wait().await.map_err(|source| RemoteError::Io {
                    context: "wait".into(),
                    source,
                })?;
                let until = Instant::now() + Duration::from_secs(5);
                while kill_group(pgid, libc::SIGKILL) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                for task in [&mut out, &mut err] {
                    if tokio::time::timeout(Duration::from_secs(1), &mut *task)
                        .await
                        .is_err()
                    {
                        task.abort();
                    }
                }
                s
            }
        };
        use std::os::unix::process::ExitStatusExt;
        Ok(ExitInfo {
            code: status.code(),
            signal: status.signal(),
            timed_out,
            cancelled,
            duration: started.elapsed(),
            rebooted: false,
            leftovers: Vec::new(),
        })
    }

    async fn put_file(
        &self,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), RemoteError> {
        copy_replacing(local, &self.resolve(remote)?, mode)
    }

    async fn put_tree(&self, local: &Path, remote: &str) -> Result<u64, RemoteError> {
        copy_dir(local, &self.resolve(remote)?)
    }

    async fn get_file(&self, remote: &str, local: &Path) -> Result<(), RemoteError> {
        copy_replacing(&self.resolve(remote)?, local, None)
    }

    async fn collect(&self, patterns: &[String], dest: &Path) -> Result<Vec<PathBuf>, RemoteError> {
        for p in patterns {
            let path = Path::new(p);
            if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(self.escape(p));
            }
        }
        let mut files = Vec::new();
        walk_files(&self.root, &mut Vec::new(), &mut files);
        let root = std::fs::canonicalize(&self.root).map_err(|source| RemoteError::Io {
            context: format!("work directory {}", self.root.display()),
            source,
        })?;
        let mut written = Vec::new();
        for rel in files {
            if !patterns
                .iter()
                .any(|p| path_matches(&p.split('/').collect::<Vec<_>>(), &rel))
            {
                continue;
            }
            let rel: PathBuf = rel.iter().collect();
            let Ok(real) = std::fs::canonicalize(self.root.join(&rel)) else {
                continue;
            };
            if real.starts_with(&root) && real.is_file() {
                copy_replacing(&real, &dest.join(&rel), None)?;
                written.push(dest.join(&rel));
            }
        }
        written.sort();
        Ok(written)
    }

    async fn boot_id(&self) -> Result<BootId, RemoteError> {
        Ok(BootId(self.boot_id.lock().expect("boot lock").clone()))
    }

    async fn reboot(&self, _deadline: Duration) -> Result<BootId, RemoteError> {
        let new = format!("fake-boot-{:08x}", rand::random::<u32>());
        *self.boot_id.lock().expect("boot lock") = new.clone();
        Ok(BootId(new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{capacity, executor, provisioner, publisher};
    use crate::plan::MachineSpec;
    use crate::types::RunId;

    fn request(name: &str) -> MachineRequest {
        let spec: MachineSpec =
            serde_json::from_value(serde_json::json!({ "name": name })).expect("minimal spec");
        MachineRequest {
            name: name.into(),
            role: name.into(),
            spec,
            placement: None,
        }
    }

    fn run(dir: &Path) -> RunContext {
        RunContext {
            run_id: RunId("fake-run".into()),
            test_id: TestId(crate::conformance::unique("fake-test")),
            plan_name: "p".into(),
            run_dir: dir.into(),
            tags: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn fake_provisioner_passes_its_suite() {
        let dir = tempfile::tempdir().unwrap();
        let p = FakeProvisioner::new();
        provisioner::run_all(&p, &p.fresh_instance(), &request("box"), &run(dir.path())).await;
        assert!(
            p.instances().is_empty(),
            "the suite left {:?}",
            p.instances()
        );
    }

    #[tokio::test]
    #[should_panic(expected = "has no intent")]
    async fn provisioner_suite_catches_an_id_journaled_without_intent() {
        // Pins down that the suite can fail: a provisioner that skips the intent is caught.
        #[derive(Debug)]
        struct NoIntent(FakeProvisioner);
        #[async_trait]
        impl Provisioner for NoIntent {
            fn backend(&self) -> BackendName {
                self.0.backend()
            }
            async fn create(
                &self,
                r: &MachineRequest,
                run: &RunContext,
                ledger: &dyn ResourceLedger,
            ) -> Result<Machine, ProvisionError> {
                let scratch = crate::journal::MemoryLedger::default();
                let m = self.0.create(r, run, &scratch).await?;
                let id = m.facts["instance-id"].clone();
                let _ = ledger.created(&m.resources[0], &id, BTreeMap::new()).await;
                Ok(m)
            }
            async fn wait_ready(&self, m: &Machine, d: Duration) -> Result<(), ProvisionError> {
                self.0.wait_ready(m, d).await
            }
            async fn destroy(
                &self,
                r: &[Resource],
                l: &dyn ResourceLedger,
            ) -> Result<(), ProvisionError> {
                self.0.destroy(r, l).await
            }
            async fn sweep(
                &self,
                t: &TestId,
                scope: SweepScope<'_>,
            ) -> Result<Vec<String>, ProvisionError> {
                self.0.sweep(t, scope).await
            }
        }
        let dir = tempfile::tempdir().unwrap();
        provisioner::lifecycle(
            &NoIntent(FakeProvisioner::new()),
            &request("box"),
            &run(dir.path()),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn fake_executor_passes_its_suite() {
        let dir = tempfile::tempdir().unwrap();
        let (work, scratch) = (dir.path().join("work"), dir.path().join("scratch"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&scratch).unwrap();
        executor::run_all(&FakeExecutor::new(&work), &scratch).await;
    }

    #[tokio::test]
    async fn fake_executor_injects_failures_and_reboots() {
        let dir = tempfile::tempdir().unwrap();
        let exec = FakeExecutor::new(dir.path());
        exec.fail_next_run("cable pulled");
        let spec = CommandSpec {
            command: "true".into(),
            ..Default::default()
        };
        let sink: Arc<dyn OutputSink> = Arc::new(crate::remote::DiscardOutput);
        let e = exec
            .run(&spec, sink.clone(), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cable pulled"), "{e}");
        assert!(
            exec.run(&spec, sink, CancellationToken::new())
                .await
                .unwrap()
                .success()
        );
        assert_eq!(exec.commands(), vec!["true", "true"]);
        let before = exec.boot_id().await.unwrap();
        assert_ne!(exec.reboot(Duration::from_secs(1)).await.unwrap(), before);
    }

    #[test]
    fn glob_segments_and_double_star() {
        let m = |p: &str, path: &str| {
            path_matches(
                &p.split('/').collect::<Vec<_>>(),
                &path.split('/').map(String::from).collect::<Vec<_>>(),
            )
        };
        assert!(m("logs/**/*.log", "logs/a.log"));
        assert!(m("logs/**/*.log", "logs/x/y/a.log"));
        assert!(!m("logs/**/*.log", "logs/a.txt"));
        assert!(!m("*.log", "sub/a.log"));
        assert!(m("a?c", "abc"));
    }

    fn capacity_request(zones: &[&str]) -> CapacityRequest {
        CapacityRequest {
            test_id: TestId(crate::conformance::unique("fake-cap")),
            region: Some("region-1".into()),
            needs: BTreeMap::from([("m5.large".to_string(), 2), ("c5.xlarge".to_string(), 1)]),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            end_unix: None,
        }
    }

    #[tokio::test]
    async fn fake_reservation_passes_its_suite_enabled_and_disabled() {
        let r = FakeReservation::new().without_capacity_in("zone-a");
        capacity::run_all(&r, &capacity_request(&["zone-a", "zone-b"])).await;
        assert!(r.reservations().is_empty());
        capacity::run_all(&FakeReservation::disabled(), &capacity_request(&[])).await;
    }

    #[tokio::test]
    async fn fake_publisher_passes_its_suite() {
        let dir = tempfile::tempdir().unwrap();
        let p = FakePublisher::new();
        let receipt = publisher::run_all(&p, dir.path()).await;
        assert_eq!(
            receipt.location,
            "memory://fake/sample-20260101T000000Z-0001"
        );
        assert_eq!(p.published().len(), 1);
    }
}
