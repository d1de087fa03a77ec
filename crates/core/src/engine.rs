//! The engine: runs a plan end to end on the backends it is given.
//!
//! It expands the plan into its stage graph ([`crate::stages`]), runs it with the DAG runner
//! ([`crate::dag`]), journals every transition and resource ([`crate::journal`]), writes the
//! results directory, and always tears down. Backends are plugged in as trait objects, so a
//! harness that embeds qa-run chooses which it links.
//!
//! ```no_run
//! # async fn demo(p: std::sync::Arc<dyn qa_core::Provisioner>, c: std::sync::Arc<dyn qa_core::Connector>) {
//! use qa_core::engine::{Engine, RunOptions};
//! let plan = qa_core::plan::load_file("plan.yaml".as_ref()).unwrap();
//! let engine = Engine::new().provisioner(p).connector(c);
//! let run = engine.prepare(&plan, RunOptions::new("results")).await.unwrap();
//! let summary = run.execute().await.unwrap();
//! println!("{} -> exit {}", summary.run_dir.display(), summary.exit_code);
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::capacity::{CapacityRequest, CapacityReservation, Placement};
use crate::dag::{
    RunCancel, RunnerOptions, TaskExecutor, TaskGraph, TaskNode, TaskOutcome, TaskResult, run_graph,
};
use crate::events::{Event, EventSink, NoEvents};
use crate::exit;
use crate::journal::{
    JournalError, JournalState, ResourceLedger, RunJournal, RunStatus, TaskRecord, TaskState,
};
use crate::plan::{BackendKind, LoadedPlan, PlanError, StepAction, StepSpec};
use crate::provision::{MachineRequest, Provisioner, RunContext};
use crate::publish::ResultPublisher;
use crate::recorder::StepRecorder;
use crate::redact::Redactor;
use crate::remote::{CommandSpec, Connector, ExitInfo, OutputSink, RemoteError, RemoteExecutor};
use crate::report::{
    CostEstimate, MachineReport, REPORT_SCHEMA_VERSION, Report, StepReport, TaskReport,
};
use crate::stages::{self, MachineInstance, Stage};
use crate::types::{Machine, Resource, ResourceState, RunId, TestId, Verdict};

/// Default step timeout when neither the step nor `defaults.timeout` sets one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a new machine may take to accept commands.
pub const READY_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// A step type registered by an embedding program, used by steps with `uses: <name>`.
#[async_trait]
pub trait StepType: Send + Sync + 'static {
    /// Runs the step. `Ok` with a non-zero code is FAIL; `Err` is ERROR (and may be retried).
    async fn run(&self, ctx: StepContext) -> Result<ExitInfo, RemoteError>;
}

/// What a custom step type gets.
#[derive(Clone)]
pub struct StepContext {
    /// The step as written in the plan (`with` holds its parameters).
    pub step: StepSpec,
    /// The machine.
    pub machine: Machine,
    /// Runs commands on the machine.
    pub executor: Arc<dyn RemoteExecutor>,
    /// The step's log and recording.
    pub output: Arc<dyn OutputSink>,
    /// The step's environment.
    pub env: BTreeMap<String, String>,
    /// The step's timeout.
    pub timeout: Duration,
    /// Fires when the run is interrupted.
    pub cancel: CancellationToken,
}

/// Writes extra files from a report into the run directory (the CLI writes `junit.xml` here).
/// It gets the run's redactor, so the files mask the plan's secrets.
pub type ReportHook = Arc<dyn Fn(&Report, &Path, &Redactor) -> std::io::Result<()> + Send + Sync>;

/// Makes a publisher for a plan's `publish:` entry.
/// It gets the run's redactor, so publishers mask the plan's secrets too.
pub type PublisherFactory = Arc<
    dyn Fn(
            &crate::plan::PublishTarget,
            &Path,
            &Redactor,
        ) -> Result<Arc<dyn ResultPublisher>, String>
        + Send
        + Sync,
>;

/// An engine failure that stops a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The plan is wrong.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The plan cannot run with what this engine has (a backend not compiled in, a secret
    /// missing from the environment, an unknown step type).
    #[error("{0}")]
    Setup(String),
    /// The journal could not be written or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The results directory could not be written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// The exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Plan(_) | EngineError::Setup(_) => exit::BAD_PLAN_OR_USAGE,
            EngineError::Journal(_) | EngineError::Io { .. } => exit::INFRASTRUCTURE_ERROR,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Io { context, source }
}

/// The backends and hooks a run uses.
#[derive(Clone)]
pub struct Engine {
    provisioners: HashMap<BackendKind, Arc<dyn Provisioner>>,
    reservations: HashMap<BackendKind, Arc<dyn CapacityReservation>>,
    connector: Option<Arc<dyn Connector>>,
    step_types: HashMap<String, Arc<dyn StepType>>,
    publishers: Vec<Arc<dyn ResultPublisher>>,
    publisher_factory: Option<PublisherFactory>,
    report_hook: Option<ReportHook>,
    events: Arc<dyn EventSink>,
    backoff: Duration,
    keepalive: ReservationKeepalive,
}

/// How capacity reservations are kept alive while a run lives: every `interval` their end moves
/// to at least now + `margin` + `interval`. A run that dies stops moving it, so its reservations
/// end on their own at most `margin` + `interval` later (or at budget + margin, if that is later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationKeepalive {
    /// Between two extensions.
    pub interval: Duration,
    /// How long a reservation outlives the last sign of life.
    pub margin: Duration,
}

impl Default for ReservationKeepalive {
    fn default() -> Self {
        ReservationKeepalive {
            interval: Duration::from_secs(10 * 60),
            margin: TEARDOWN_MARGIN,
        }
    }
}

/// Time reservations are given beyond the run's budget, for teardown.
pub const TEARDOWN_MARGIN: Duration = Duration::from_secs(30 * 60);

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "provisioners",
                &self.provisioners.keys().collect::<Vec<_>>(),
            )
            .field(
                "reservations",
                &self.reservations.keys().collect::<Vec<_>>(),
            )
            .field("step_types", &self.step_types.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with no backends.
    pub fn new() -> Self {
        Engine {
            provisioners: HashMap::new(),
            reservations: HashMap::new(),
            connector: None,
            step_types: HashMap::new(),
            publishers: Vec::new(),
            publisher_factory: None,
            report_hook: None,
            events: Arc::new(NoEvents),
            backoff: Duration::from_secs(2),
            keepalive: ReservationKeepalive::default(),
        }
    }

    /// Sets how reservations are kept alive while a run lives.
    pub fn reservation_keepalive(mut self, k: ReservationKeepalive) -> Self {
        self.keepalive = k;
        self
    }

    /// Adds a provisioner (for the backend it reports).
    pub fn provisioner(mut self, p: Arc<dyn Provisioner>) -> Self {
        self.provisioners.insert(p.backend(), p);
        self
    }

    /// Adds a capacity reservation (for the backend it reports).
    pub fn reservation(mut self, r: Arc<dyn CapacityReservation>) -> Self {
        self.reservations.insert(r.backend(), r);
        self
    }

    /// Sets the connector that makes executors for machines.
    pub fn connector(mut self, c: Arc<dyn Connector>) -> Self {
        self.connector = Some(c);
        self
    }

    /// Registers a step type for `uses: <name>`.
    pub fn step_type(mut self, name: impl Into<String>, t: Arc<dyn StepType>) -> Self {
        self.step_types.insert(name.into(), t);
        self
    }

    /// Adds a publisher that runs for every run, besides the plan's.
    pub fn publisher(mut self, p: Arc<dyn ResultPublisher>) -> Self {
        self.publishers.push(p);
        self
    }

    /// Sets how a plan's `publish:` entries become publishers.
    pub fn publisher_factory(mut self, f: PublisherFactory) -> Self {
        self.publisher_factory = Some(f);
        self
    }

    /// Sets a hook that writes extra result files whenever the report is written.
    pub fn report_hook(mut self, h: ReportHook) -> Self {
        self.report_hook = Some(h);
        self
    }

    /// Sets where events go.
    pub fn events(mut self, e: Arc<dyn EventSink>) -> Self {
        self.events = e;
        self
    }

    /// First delay before retrying an ERROR (doubles each time).
    pub fn retry_backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// The provisioner of a backend, if linked.
    pub fn provisioner_for(&self, b: BackendKind) -> Option<&Arc<dyn Provisioner>> {
        self.provisioners.get(&b)
    }

    /// The reservation of a backend, if linked.
    pub fn reservation_for(&self, b: BackendKind) -> Option<&Arc<dyn CapacityReservation>> {
        self.reservations.get(&b)
    }

    /// Checks that the plan can run here: backends linked, step types registered, secrets set.
    /// Returns the secrets' values.
    pub fn check(&self, loaded: &LoadedPlan) -> Result<BTreeMap<String, String>, EngineError> {
        let plan = &loaded.plan;
        let mut problems = Vec::new();
        for m in stages::machine_instances(plan) {
            if !self.provisioners.contains_key(&m.backend) {
                problems.push(format!(
                    "machine `{}` needs the `{}` backend, which this build does not include (build qa-run with the `{}` feature)",
                    m.name, m.backend, m.backend
                ));
            }
        }
        for s in &plan.steps {
            if let StepAction::Custom(name) = s.action() {
                if !self.step_types.contains_key(name) {
                    let mut known: Vec<&str> = self.step_types.keys().map(String::as_str).collect();
                    known.sort();
                    problems.push(format!(
                        "step `{}` uses step type `{name}`, which is not registered (known: {})",
                        s.name,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        if self.connector.is_none() {
            problems.push("no connector: the engine cannot reach machines".into());
        }
        if !plan.publish.is_empty() && self.publisher_factory.is_none() {
            problems.push("the plan publishes results but no publisher factory is set".into());
        }
        let mut secrets = BTreeMap::new();
        for name in &plan.secrets {
            match std::env::var(name) {
                Ok(v) => {
                    secrets.insert(name.clone(), v);
                }
                Err(_) => problems.push(format!(
                    "secret `{name}` is not set in the environment (export {name}=… before running)"
                )),
            }
        }
        if problems.is_empty() {
            Ok(secrets)
        } else {
            Err(EngineError::Setup(format!(
                "{}: cannot run this plan:\n  - {}",
                loaded.path.display(),
                problems.join("\n  - ")
            )))
        }
    }

    fn needs_reservation(&self, loaded: &LoadedPlan) -> bool {
        loaded.plan.machines.iter().any(|m| {
            m.aws.as_ref().is_some_and(|a| a.reserve)
                && self
                    .reservations
                    .get(&BackendKind::Aws)
                    .is_some_and(|r| r.is_enabled())
        })
    }

    /// Expands the plan without running anything: the graph, a journal in `Planned` state and the
    /// rendered artefacts (per-machine settings, the exact script of each step) under
    /// `<run_dir>/plan/`.
    pub async fn plan_only(
        &self,
        loaded: &LoadedPlan,
        opts: RunOptions,
    ) -> Result<(PathBuf, TaskGraph<Stage>), EngineError> {
        let graph = stages::build_graph(loaded, self.needs_reservation(loaded))
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        let run_id = opts
            .run_id
            .clone()
            .unwrap_or_else(|| RunId::generate(&loaded.plan.name));
        let run_dir = opts.results_dir.join(&run_id.0);
        std::fs::create_dir_all(run_dir.join("plan"))
            .map_err(io_err(format!("creating {}", run_dir.display())))?;
        let test_id = opts
            .test_id
            .clone()
            .unwrap_or_else(|| TestId(run_id.0.clone()));
        let mut state =
            JournalState::new(&run_id.0, &test_id.0, &loaded.plan.name, &abs(&loaded.path));
        for id in graph.topological_ids().unwrap_or_default() {
            state.tasks.insert(id, TaskRecord::pending());
        }
        RunJournal::create(&run_dir, state).await?;
        write_plan_artefacts(loaded, &graph, &run_dir.join("plan"))?;
        Ok((run_dir, graph))
    }

    /// Creates the run directory and journal; nothing is created on any backend yet.
    pub async fn prepare(
        &self,
        loaded: &LoadedPlan,
        opts: RunOptions,
    ) -> Result<PreparedRun, EngineError> {
        let secrets = self.check(loaded)?;
        let graph = stages::build_graph(loaded, self.needs_reservation(loaded))
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        let run_id = opts
            .run_id
            .clone()
            .unwrap_or_else(|| RunId::generate(&loaded.plan.name));
        let run_dir = opts.results_dir.join(&run_id.0);
        std::fs::create_dir_all(&run_dir)
            .map_err(io_err(format!("creating {}", run_dir.display())))?;
        let test_id = opts
            .test_id
            .clone()
            .unwrap_or_else(|| TestId(run_id.0.clone()));
        let mut state =
            JournalState::new(&run_id.0, &test_id.0, &loaded.plan.name, &abs(&loaded.path));
        for id in graph.topological_ids().unwrap_or_default() {
            state.tasks.insert(id, TaskRecord::pending());
        }
        state.status = RunStatus::Running;
        state.pid = Some(std::process::id());
        let journal = Arc::new(RunJournal::create(&run_dir, state).await?);
        Ok(self.prepared(
            loaded,
            graph,
            run_id,
            test_id,
            run_dir,
            journal,
            secrets,
            opts,
            HashMap::new(),
        ))
    }

    /// Continues a run from its journal: steps that passed are not run again, machines that
    /// still exist are reused, everything else runs.
    pub async fn prepare_resume(
        &self,
        run_dir: &Path,
        opts: RunOptions,
    ) -> Result<PreparedRun, EngineError> {
        let journal = RunJournal::open(run_dir)?;
        let snap = journal.snapshot();
        let loaded = crate::plan::load_file(Path::new(&snap.plan_path))?;
        let secrets = self.check(&loaded)?;
        let graph = stages::build_graph(&loaded, self.needs_reservation(&loaded))
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        let prior: HashMap<String, Verdict> = snap
            .tasks
            .iter()
            .filter(|(id, t)| id.starts_with("step:") && t.verdict == Some(Verdict::Pass))
            .map(|(id, _)| (id.clone(), Verdict::Pass))
            .collect();
        journal.update(|s| {
            s.status = RunStatus::Running;
            s.pid = Some(std::process::id());
            s.finished = None;
            for id in graph.topological_ids().unwrap_or_default() {
                let keep = prior.contains_key(&id);
                let rec = s.tasks.entry(id).or_insert_with(TaskRecord::pending);
                if !keep {
                    *rec = TaskRecord {
                        attempts: rec.attempts,
                        ..TaskRecord::pending()
                    };
                }
            }
        });
        journal.flush().await?;
        let run_id = RunId(snap.run_id.clone());
        let test_id = TestId(snap.test_id.clone());
        Ok(self.prepared(
            &loaded,
            graph,
            run_id,
            test_id,
            run_dir.to_path_buf(),
            Arc::new(journal),
            secrets,
            opts,
            prior,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn prepared(
        &self,
        loaded: &LoadedPlan,
        graph: TaskGraph<Stage>,
        run_id: RunId,
        test_id: TestId,
        run_dir: PathBuf,
        journal: Arc<RunJournal>,
        secrets: BTreeMap<String, String>,
        opts: RunOptions,
        prior: HashMap<String, Verdict>,
    ) -> PreparedRun {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let budget = loaded
            .plan
            .budget
            .map(|b| b.get())
            .unwrap_or(Duration::from_secs(6 * 3600));
        let keep_until = time::OffsetDateTime::now_utc() + budget + Duration::from_secs(3600);
        let mut tags = BTreeMap::new();
        tags.insert("qa-run:test-id".to_string(), test_id.0.clone());
        tags.insert("qa-run:run-id".to_string(), run_id.0.clone());
        tags.insert("qa-run:plan".to_string(), loaded.plan.name.clone());
        tags.insert("qa-run:user".to_string(), user);
        tags.insert("created-by".to_string(), "qa-run".to_string());
        tags.insert(
            "qa-run:keep-until".to_string(),
            keep_until
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        );
        let ctx = RunContext {
            run_id: run_id.clone(),
            test_id: test_id.clone(),
            plan_name: loaded.plan.name.clone(),
            run_dir: run_dir.clone(),
            tags,
        };
        let redactor = Redactor::new(secrets.values().cloned());
        let concurrency = opts.concurrency.or(loaded.plan.concurrency).unwrap_or(16);
        PreparedRun {
            exec: Arc::new(RunExec {
                engine: self.clone(),
                loaded: loaded.clone(),
                machines: stages::machine_instances(&loaded.plan),
                ctx,
                journal: journal.clone(),
                secrets,
                redactor,
                state: Mutex::new(RunState::default()),
                start: Instant::now(),
                started_at: crate::now_rfc3339(),
                cancel: opts.cancel.clone(),
            }),
            graph: Arc::new(graph),
            journal,
            run_dir,
            options: RunnerOptions {
                concurrency,
                backoff: self.backoff,
                prior,
            },
            cancel: opts.cancel,
        }
    }

    /// Destroys everything a run's journal says may still exist, and cancels its reservations.
    /// Works on the journal of a run that was killed.
    pub async fn cleanup(&self, run_dir: &Path) -> Result<CleanupReport, EngineError> {
        let journal = RunJournal::open(run_dir)?;
        let snap = journal.snapshot();
        let mut report = CleanupReport::default();
        // Kept machines too: asking for a cleanup is asking for them to go.
        // Reservations are the reservation backend's to cancel (below), not a provisioner's.
        let to_destroy = by_backend(snap.resources.iter().filter(|r| {
            r.state != ResourceState::Destroyed && r.kind != crate::capacity::RESERVATION_KIND
        }));
        for (backend, resources) in to_destroy {
            let Some(p) = self.provisioners.get(&backend) else {
                report.remaining.push(format!(
                    "{} {} resource(s): the `{backend}` backend is not in this build",
                    resources.len(),
                    backend
                ));
                continue;
            };
            match p.destroy(&resources, &journal).await {
                Ok(()) => report.destroyed.extend(resources.iter().map(|r| {
                    format!(
                        "{} {} {}",
                        backend,
                        r.kind,
                        r.id.as_deref().unwrap_or(&r.key.0)
                    )
                })),
                Err(e) => report.remaining.push(e.to_string()),
            }
        }
        // A cloud is also asked for what carries the run's test id: a crash inside a create can
        // leave something the journal knows only as an intent, or not at all.
        for (backend, records) in by_backend(&snap.resources) {
            if let Some(p) = self
                .provisioners
                .get(&backend)
                .filter(|_| backend.is_cloud())
            {
                match p.sweep_run(&TestId(snap.test_id.clone()), &records).await {
                    Ok(lines) => report
                        .destroyed
                        .extend(lines.into_iter().map(|l| format!("{backend} {l} (by tag)"))),
                    Err(e) => report.remaining.push(e.to_string()),
                }
            }
        }
        for r in self.reservations.values().filter(|r| r.is_enabled()) {
            match r
                .cancel_run(&TestId(snap.test_id.clone()), &snap.resources)
                .await
            {
                Ok(n) => {
                    if n > 0 {
                        report
                            .destroyed
                            .push(format!("{} reservation(s) on {}", n, r.backend()));
                    }
                    end_reservation_records(&journal, r.backend()).await;
                }
                Err(e) => report.remaining.push(e.to_string()),
            }
        }
        let still: Vec<String> = journal
            .snapshot()
            .live_resources()
            .map(|r| format!("{} {} {}", r.backend, r.kind, r.key))
            .collect();
        for s in still {
            if !report.remaining.iter().any(|x| x.contains(&s)) {
                report.remaining.push(format!("{s} still recorded as live"));
            }
        }
        journal.update(|s| {
            if report.remaining.is_empty() {
                s.status = RunStatus::CleanedUp;
            }
        });
        journal.flush().await?;
        Ok(report)
    }
}

/// Journal records grouped by the backend that owns them.
fn by_backend<'a>(
    records: impl IntoIterator<Item = &'a Resource>,
) -> BTreeMap<BackendKind, Vec<Resource>> {
    let mut out: BTreeMap<BackendKind, Vec<Resource>> = BTreeMap::new();
    for r in records {
        out.entry(r.backend).or_default().push(r.clone());
    }
    out
}

/// Moves the end of the run's reservations forward while the run lives (until `stop`).
async fn keep_reservations_alive(
    r: Arc<dyn CapacityReservation>,
    test_id: TestId,
    mut end_unix: i64,
    k: ReservationKeepalive,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(k.interval) => {}
        }
        let want = time::OffsetDateTime::now_utc().unix_timestamp()
            + (k.margin + k.interval).as_secs() as i64;
        if want <= end_unix {
            continue;
        }
        match r.extend(&test_id, want).await {
            Ok(()) => {
                tracing::debug!(test_id = %test_id.0, end_unix = want, "reservations extended");
                end_unix = want;
            }
            Err(e) => tracing::warn!("extending the run's capacity reservations: {e}"),
        }
    }
}

/// After a successful cancel by test id, the journal's reservation records of that backend are
/// over too.
async fn end_reservation_records(ledger: &dyn ResourceLedger, backend: BackendKind) {
    for r in ledger.resources() {
        if r.backend == backend
            && r.kind == crate::capacity::RESERVATION_KIND
            && r.state != ResourceState::Destroyed
        {
            let _ = ledger.destroyed(&r.key).await;
        }
    }
}

/// What `cleanup` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// Lines describing what was removed.
    pub destroyed: Vec<String>,
    /// Lines describing what could not be removed.
    pub remaining: Vec<String>,
}

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parent of run directories.
    pub results_dir: PathBuf,
    /// Run id (generated if absent).
    pub run_id: Option<RunId>,
    /// Test id for tags (the run id if absent).
    pub test_id: Option<TestId>,
    /// Concurrency (the plan's, else 16, if absent).
    pub concurrency: Option<usize>,
    /// Cancellation.
    pub cancel: RunCancel,
}

impl RunOptions {
    /// Defaults with results under `results_dir`.
    pub fn new(results_dir: impl Into<PathBuf>) -> Self {
        RunOptions {
            results_dir: results_dir.into(),
            run_id: None,
            test_id: None,
            concurrency: None,
            cancel: RunCancel::new(),
        }
    }
}

/// A run ready to execute.
pub struct PreparedRun {
    exec: Arc<RunExec>,
    graph: Arc<TaskGraph<Stage>>,
    /// The journal (the CLI flushes it on a second Ctrl-C).
    pub journal: Arc<RunJournal>,
    /// The run directory.
    pub run_dir: PathBuf,
    options: RunnerOptions,
    cancel: RunCancel,
}

impl std::fmt::Debug for PreparedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRun")
            .field("run_dir", &self.run_dir)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The report (also in `report.json`).
    pub report: Report,
    /// The exit code for the process.
    pub exit_code: i32,
    /// What teardown could not remove.
    pub cleanup_failures: Vec<String>,
}

impl PreparedRun {
    /// The task graph.
    pub fn graph(&self) -> &TaskGraph<Stage> {
        &self.graph
    }

    /// Runs every task, teardown included, and writes the results.
    pub async fn execute(self) -> Result<RunSummary, EngineError> {
        let exec = self.exec.clone();
        exec.engine.events.event(&Event::RunStarted {
            run_id: exec.ctx.run_id.0.clone(),
            run_dir: self.run_dir.display().to_string(),
            tasks: self.graph.len(),
        });
        let outcomes = run_graph(
            self.graph.clone(),
            exec.clone(),
            self.options,
            self.cancel.clone(),
        )
        .await;
        let interrupted = self.cancel.soft.is_cancelled();
        let report = exec.build_report(&outcomes);
        exec.write_report(&report)?;
        let cleanup_failures = exec
            .state
            .lock()
            .expect("run state")
            .cleanup_failures
            .clone();
        let exit_code = if interrupted {
            exit::INTERRUPTED
        } else if !cleanup_failures.is_empty() {
            exit::CLEANUP_INCOMPLETE
        } else {
            match report.outcome {
                Verdict::Pass => exit::ALL_PASSED,
                Verdict::Fail | Verdict::Timeout | Verdict::Skipped => exit::TEST_FAILED,
                Verdict::Error => exit::INFRASTRUCTURE_ERROR,
                Verdict::Interrupted => exit::INTERRUPTED,
            }
        };
        self.journal.update(|s| {
            s.status = if interrupted {
                RunStatus::Interrupted
            } else {
                RunStatus::Finished
            };
            s.finished = Some(crate::now_rfc3339());
            s.pid = None;
        });
        self.journal.flush().await?;
        exec.engine.events.event(&Event::RunFinished {
            run_id: exec.ctx.run_id.0.clone(),
            outcome: report.outcome,
            exit_code,
        });
        Ok(RunSummary {
            run_dir: self.run_dir,
            report,
            exit_code,
            cleanup_failures,
        })
    }
}

#[derive(Default)]
struct RunState {
    machines: HashMap<String, Machine>,
    executors: HashMap<String, Arc<dyn RemoteExecutor>>,
    /// Per backend and region (`None`: the backend has no default region).
    placements: HashMap<(BackendKind, Option<String>), Placement>,
    outcomes: HashMap<String, TaskOutcome>,
    steps: HashMap<String, StepDetail>,
    artifacts: HashMap<String, Vec<String>>,
    kept: Vec<String>,
    cleanup_failures: Vec<String>,
    /// Stops the task that extends reservations.
    keepalive: Option<CancellationToken>,
}

#[derive(Default, Clone)]
struct StepDetail {
    started: Option<String>,
    exit_code: Option<i32>,
    log: Option<String>,
    cast: Option<String>,
    tail: Option<String>,
}

struct RunExec {
    engine: Engine,
    loaded: LoadedPlan,
    machines: Vec<MachineInstance>,
    ctx: RunContext,
    journal: Arc<RunJournal>,
    secrets: BTreeMap<String, String>,
    redactor: Redactor,
    state: Mutex<RunState>,
    start: Instant,
    started_at: String,
    cancel: RunCancel,
}

/// A name safe as one path component.
pub fn file_name_of(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Remote path of an uploaded step script, relative to the machine's work directory.
fn script_remote_path(step: &str) -> String {
    format!(".qa-run/scripts/{}.sh", file_name_of(step))
}

fn verdict_of(info: &ExitInfo) -> TaskResult {
    if info.cancelled {
        TaskResult::new(
            Verdict::Interrupted,
            "interrupted; its process tree was killed",
        )
    } else if info.timed_out {
        TaskResult::new(
            Verdict::Timeout,
            format!(
                "timed out after {:.1}s; its process tree was killed",
                info.duration.as_secs_f64()
            ),
        )
    } else if info.code == Some(0) {
        TaskResult::pass()
    } else if let Some(c) = info.code {
        TaskResult::new(Verdict::Fail, format!("exit status {c}"))
    } else if let Some(s) = info.signal {
        TaskResult::new(Verdict::Fail, format!("killed by signal {s}"))
    } else {
        TaskResult::new(Verdict::Error, "ended without an exit status")
    }
}

impl RunExec {
    fn instance(&self, name: &str) -> &MachineInstance {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .expect("machine from the graph")
    }

    fn machine(&self, name: &str) -> Option<Machine> {
        self.state
            .lock()
            .expect("run state")
            .machines
            .get(name)
            .cloned()
    }

    fn executor(&self, name: &str) -> Option<Arc<dyn RemoteExecutor>> {
        self.state
            .lock()
            .expect("run state")
            .executors
            .get(name)
            .cloned()
    }

    fn step_env(
        &self,
        step: &StepSpec,
        machine: &Machine,
        attempt: u32,
    ) -> BTreeMap<String, String> {
        let mut env = self.loaded.plan.defaults.env.clone();
        env.extend(step.env.clone());
        env.extend(self.secrets.clone());
        env.insert("QA_RUN_ID".into(), self.ctx.run_id.0.clone());
        env.insert("QA_RUN_TEST_ID".into(), self.ctx.test_id.0.clone());
        env.insert("QA_RUN_MACHINE".into(), machine.name.clone());
        env.insert("QA_RUN_ROLE".into(), machine.role.clone());
        env.insert("QA_RUN_STEP".into(), step.name.clone());
        env.insert("QA_RUN_ATTEMPT".into(), attempt.to_string());
        env.insert("QA_RUN_WORKDIR".into(), machine.workdir.clone());
        env
    }

    async fn provision(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        // A resumed run reuses a machine whose resources all still exist.
        let snap = self.journal.snapshot();
        if let Some(m) = snap.machines.get(machine) {
            let alive = !m.resources.is_empty()
                && m.resources.iter().all(|k| {
                    snap.resources
                        .iter()
                        .any(|r| &r.key == k && r.state == ResourceState::Created)
                });
            if alive {
                self.state
                    .lock()
                    .expect("run state")
                    .machines
                    .insert(machine.to_string(), m.clone());
                return TaskResult::new(Verdict::Pass, "reused the machine of the earlier run");
            }
        }
        let Some(p) = self.engine.provisioners.get(&inst.backend).cloned() else {
            return TaskResult::new(
                Verdict::Error,
                format!("no provisioner for backend {}", inst.backend),
            );
        };
        let mut spec = self.loaded.plan.machines[inst.spec_index].clone();
        // Paths in a plan are relative to the plan file, wherever qa-run was started.
        if let Some(root) = spec.local.as_mut().and_then(|l| l.root.as_mut()) {
            *root = self.loaded.resolve(root);
        }
        // Only a machine that asked for a reservation is launched into one, and only into one
        // of its own region.
        let placement = spec.aws.as_ref().filter(|a| a.reserve).and_then(|a| {
            self.state
                .lock()
                .expect("run state")
                .placements
                .get(&(inst.backend, self.reservation_region(a)))
                .cloned()
        });
        let request = MachineRequest {
            name: inst.name.clone(),
            role: inst.role.clone(),
            spec,
            placement,
        };
        match p.create(&request, &self.ctx, &*self.journal).await {
            Ok(m) => {
                self.journal
                    .update(|s| s.machines.insert(m.name.clone(), m.clone()));
                if let Err(e) = self.journal.flush().await {
                    return TaskResult::new(Verdict::Error, e.to_string());
                }
                self.state
                    .lock()
                    .expect("run state")
                    .machines
                    .insert(m.name.clone(), m);
                TaskResult::pass()
            }
            Err(e) => TaskResult::new(
                Verdict::Error,
                format!("{e} (left behind: {:?})", e.leftovers),
            ),
        }
    }

    async fn wait_ready(&self, machine: &str) -> TaskResult {
        let Some(m) = self.machine(machine) else {
            return TaskResult::new(Verdict::Error, "machine was not provisioned");
        };
        let p = self
            .engine
            .provisioners
            .get(&m.backend)
            .cloned()
            .expect("checked before the run");
        let until = std::time::Instant::now() + READY_DEADLINE;
        if let Err(e) = p.wait_ready(&m, READY_DEADLINE).await {
            return TaskResult::new(Verdict::Error, e.to_string());
        }
        let connector = self
            .engine
            .connector
            .clone()
            .expect("checked before the run");
        // A machine the cloud has just made can answer on port 22 before its first-boot setup
        // has installed the run's key: refused logins and dropped connections are tried again
        // until the ready deadline. A host-key problem never is.
        let fresh = m.backend.is_cloud();
        let mut pause = Duration::from_millis(500);
        loop {
            match connector.connect(&m).await {
                Ok(x) => {
                    self.state
                        .lock()
                        .expect("run state")
                        .executors
                        .insert(machine.to_string(), x);
                    return TaskResult::pass();
                }
                Err(
                    e @ (crate::remote::RemoteError::Connect { .. }
                    | crate::remote::RemoteError::Disconnected { .. }),
                ) if fresh && std::time::Instant::now() + pause < until => {
                    tracing::info!(machine, "not accepting the run's login yet ({e}); retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return TaskResult::new(Verdict::Error, e.to_string()),
            }
        }
    }

    async fn upload(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        let spec = &self.loaded.plan.machines[inst.spec_index];
        let Some(x) = self.executor(machine) else {
            return TaskResult::new(Verdict::Error, "not connected");
        };
        for f in &self.loaded.plan.files {
            if !stages::selects(&f.machines, inst, spec) {
                continue;
            }
            let src = self.loaded.resolve(&f.src);
            let mode = match f
                .mode
                .as_deref()
                .map(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8))
            {
                Some(Ok(m)) => Some(m),
                Some(Err(_)) => {
                    return TaskResult::new(
                        Verdict::Error,
                        format!("mode of {} is not octal", f.src.display()),
                    );
                }
                None => None,
            };
            let r = if src.is_dir() {
                x.put_tree(&src, &f.dest).await.map(|_| ())
            } else {
                x.put_file(&src, &f.dest, mode).await
            };
            if let Err(e) = r {
                return TaskResult::new(Verdict::Error, e.to_string());
            }
        }
        for s in &self.loaded.plan.steps {
            if let (StepAction::Script(path), true) =
                (s.action(), stages::selects(&s.machines, inst, spec))
            {
                if let Err(e) = x
                    .put_file(
                        &self.loaded.resolve(path),
                        &script_remote_path(&s.name),
                        Some(0o755),
                    )
                    .await
                {
                    return TaskResult::new(Verdict::Error, e.to_string());
                }
            }
        }
        TaskResult::pass()
    }

    async fn step(
        &self,
        id: &str,
        index: usize,
        machine: &str,
        attempt: u32,
        cancel: CancellationToken,
    ) -> TaskResult {
        let step = self.loaded.plan.steps[index].clone();
        let (Some(m), Some(x)) = (self.machine(machine), self.executor(machine)) else {
            return TaskResult::new(Verdict::Error, "machine not ready");
        };
        let log_rel = format!(
            "logs/{}/{}.log",
            file_name_of(machine),
            file_name_of(&step.name)
        );
        let cast_rel = format!(
            "casts/{}/{}.cast",
            file_name_of(machine),
            file_name_of(&step.name)
        );
        let recorder = match StepRecorder::create(
            &self.ctx.run_dir.join(&log_rel),
            &self.ctx.run_dir.join(&cast_rel),
            &format!("{} on {machine}", step.name),
            self.redactor.clone(),
        ) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                return TaskResult::new(
                    Verdict::Error,
                    format!("cannot write the step's log: {e}"),
                );
            }
        };
        {
            let mut g = self.state.lock().expect("run state");
            let d = g.steps.entry(id.to_string()).or_default();
            d.started = Some(crate::now_rfc3339());
            d.log = Some(log_rel);
            d.cast = Some(cast_rel);
            d.exit_code = None;
        }
        if attempt > 1 {
            recorder.note(&format!("attempt {attempt}"));
        }
        let timeout = step
            .timeout
            .or(self.loaded.plan.defaults.timeout)
            .map(|d| d.get())
            .unwrap_or(DEFAULT_STEP_TIMEOUT);
        let env = self.step_env(&step, &m, attempt);
        let workdir = step
            .workdir
            .clone()
            .or_else(|| self.loaded.plan.defaults.workdir.clone());
        let sink: Arc<dyn OutputSink> = recorder.clone();
        let result = match step.action() {
            StepAction::Reboot => {
                recorder.note("rebooting");
                match x.reboot(timeout).await {
                    Ok(boot) => {
                        recorder.note(&format!("back with boot id {}", boot.0));
                        Ok(ExitInfo {
                            code: Some(0),
                            signal: None,
                            timed_out: false,
                            cancelled: false,
                            duration: Duration::ZERO,
                            rebooted: true,
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            StepAction::Custom(name) => {
                let t = self
                    .engine
                    .step_types
                    .get(name)
                    .cloned()
                    .expect("checked before the run");
                t.run(StepContext {
                    step: step.clone(),
                    machine: m.clone(),
                    executor: x.clone(),
                    output: sink,
                    env,
                    timeout,
                    cancel,
                })
                .await
            }
            action => {
                let command = match action {
                    StepAction::Script(_) => format!(
                        "exec \"$QA_RUN_WORKDIR\"/{}",
                        shell_quote(&script_remote_path(&step.name))
                    ),
                    StepAction::Command(c) => c.to_string(),
                    _ => unreachable!("handled above"),
                };
                let spec = CommandSpec {
                    command,
                    env,
                    workdir,
                    timeout: Some(timeout),
                    sudo: step.sudo,
                    pty: step.pty,
                    detached: step.detached || step.expect_reboot,
                    expect_reboot: step.expect_reboot,
                };
                x.run(&spec, sink, cancel).await
            }
        };
        let tail = recorder.finish();
        match result {
            Ok(info) => {
                let mut g = self.state.lock().expect("run state");
                let d = g.steps.entry(id.to_string()).or_default();
                d.exit_code = info.code;
                d.tail = Some(tail);
                verdict_of(&info)
            }
            Err(e) => {
                let mut g = self.state.lock().expect("run state");
                g.steps.entry(id.to_string()).or_default().tail = Some(tail);
                TaskResult::new(Verdict::Error, e.to_string())
            }
        }
    }

    async fn collect(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        let spec = &self.loaded.plan.machines[inst.spec_index];
        let patterns: Vec<String> = self
            .loaded
            .plan
            .artifacts
            .iter()
            .filter(|a| stages::selects(&a.machines, inst, spec))
            .flat_map(|a| a.paths.iter().cloned())
            .collect();
        if patterns.is_empty() {
            return TaskResult::pass();
        }
        let Some(x) = self.executor(machine) else {
            return TaskResult::new(Verdict::Error, "not connected");
        };
        let dest = self
            .ctx
            .run_dir
            .join("artifacts")
            .join(file_name_of(machine));
        match x.collect(&patterns, &dest).await {
            Ok(paths) => {
                let rel: Vec<String> = paths
                    .iter()
                    .map(|p| {
                        p.strip_prefix(&self.ctx.run_dir)
                            .unwrap_or(p)
                            .display()
                            .to_string()
                    })
                    .collect();
                self.state
                    .lock()
                    .expect("run state")
                    .artifacts
                    .insert(machine.to_string(), rel);
                TaskResult::pass()
            }
            Err(e) => TaskResult::new(Verdict::Error, e.to_string()),
        }
    }

    async fn teardown(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        if let Some(x) = self
            .state
            .lock()
            .expect("run state")
            .executors
            .remove(machine)
        {
            // Close outside the lock.
            tokio::spawn(async move { x.close().await });
        }
        let resources: Vec<_> = self
            .journal
            .snapshot()
            .live_resources()
            .filter(|r| r.machine.as_deref() == Some(machine))
            .cloned()
            .collect();
        if resources.is_empty() {
            return TaskResult::pass();
        }
        let policy = self.loaded.plan.cleanup.policy_for(&inst.role);
        let all_passed = {
            let g = self.state.lock().expect("run state");
            g.outcomes
                .iter()
                .filter(|(id, _)| id.starts_with("step:") && id.ends_with(&format!("@{machine}")))
                .all(|(_, o)| o.verdict == Verdict::Pass)
        };
        use crate::plan::CleanupPolicy;
        let keep = match policy {
            CleanupPolicy::Always => false,
            CleanupPolicy::Never => true,
            CleanupPolicy::OnSuccess => !all_passed,
        };
        if keep {
            for r in &resources {
                if let Err(e) = self.journal.kept(&r.key).await {
                    return TaskResult::new(Verdict::Error, e.to_string());
                }
            }
            let access = self
                .machine(machine)
                .map(|m| format!("{:?}", m.access))
                .unwrap_or_default();
            self.state
                .lock()
                .expect("run state")
                .kept
                .push(machine.to_string());
            self.engine.events.event(&Event::Note {
                task: Some(format!("teardown:{machine}")),
                message: format!("kept {machine} for debugging (cleanup policy {policy:?}): {access}; remove it with `qa-run cleanup {}`", self.ctx.run_dir.display()),
            });
            return TaskResult::pass();
        }
        let p = self
            .engine
            .provisioners
            .get(&inst.backend)
            .cloned()
            .expect("checked before the run");
        match p.destroy(&resources, &*self.journal).await {
            Ok(()) => TaskResult::pass(),
            Err(e) => {
                let msg = e.to_string();
                self.state
                    .lock()
                    .expect("run state")
                    .cleanup_failures
                    .push(msg.clone());
                TaskResult::new(Verdict::Error, msg)
            }
        }
    }

    /// The region a reserving EC2 machine's reservation is in: the machine's own, or the one
    /// the reservation backend uses when none is named.
    fn reservation_region(&self, a: &crate::plan::AwsMachine) -> Option<String> {
        a.region.clone().or_else(|| {
            self.engine
                .reservations
                .get(&BackendKind::Aws)
                .and_then(|r| r.default_region())
        })
    }

    async fn reserve(&self) -> TaskResult {
        let Some(r) = self.engine.reservations.get(&BackendKind::Aws).cloned() else {
            return TaskResult::pass();
        };
        // One request per region: a reservation lives in one zone of one region.
        #[derive(Default)]
        struct Wanted {
            needs: BTreeMap<String, u32>,
            zones: Vec<String>,
        }
        let mut by_region: BTreeMap<Option<String>, Wanted> = BTreeMap::new();
        for m in &self.loaded.plan.machines {
            if let Some(a) = m.aws.as_ref().filter(|a| a.reserve) {
                let w = by_region.entry(self.reservation_region(a)).or_default();
                *w.needs.entry(a.instance_type.clone()).or_default() += m.count;
                for z in &a.zones {
                    if !w.zones.contains(z) {
                        w.zones.push(z.clone());
                    }
                }
            }
        }
        if by_region.is_empty() {
            return TaskResult::pass();
        }
        let budget = self
            .loaded
            .plan
            .budget
            .map(|b| b.get())
            .unwrap_or(Duration::from_secs(6 * 3600));
        let end = time::OffsetDateTime::now_utc() + budget + self.engine.keepalive.margin;
        // The keepalive starts before the first request, so that whatever is reserved is
        // extended even when a later region fails.
        let stop = CancellationToken::new();
        if let Some(old) = self
            .state
            .lock()
            .expect("run state")
            .keepalive
            .replace(stop.clone())
        {
            old.cancel();
        }
        tokio::spawn(keep_reservations_alive(
            r.clone(),
            self.ctx.test_id.clone(),
            end.unix_timestamp(),
            self.engine.keepalive,
            stop,
        ));
        let several = by_region.len() > 1;
        for (region, w) in by_region {
            let request = CapacityRequest {
                test_id: self.ctx.test_id.clone(),
                region: region.clone(),
                needs: w.needs,
                zones: w.zones,
                end_unix: Some(end.unix_timestamp()),
            };
            match r.reserve(&request, &*self.journal).await {
                Ok(p) => {
                    self.state
                        .lock()
                        .expect("run state")
                        .placements
                        .insert((BackendKind::Aws, region), p);
                }
                Err(e) => {
                    let msg = match (&region, several) {
                        (Some(region), true) => format!("{region}: {e}"),
                        _ => e.to_string(),
                    };
                    return TaskResult::new(Verdict::Error, msg);
                }
            }
        }
        TaskResult::pass()
    }

    async fn release(&self) -> TaskResult {
        if let Some(stop) = self.state.lock().expect("run state").keepalive.take() {
            stop.cancel();
        }
        let mut problems = Vec::new();
        // What the machines of a backend shared (a cloud's key pair, security group, placement
        // group) goes once their teardowns are over, unless one of them was kept, which needs it.
        let snap = self.journal.snapshot();
        let shared = by_backend(snap.live_resources().filter(|r| r.machine.is_none()));
        for (backend, resources) in shared {
            let kept_here = {
                let g = self.state.lock().expect("run state");
                self.machines
                    .iter()
                    .any(|m| m.backend == backend && g.kept.contains(&m.name))
            };
            if kept_here {
                for r in &resources {
                    if let Err(e) = self.journal.kept(&r.key).await {
                        problems.push(e.to_string());
                    }
                }
                continue;
            }
            let Some(p) = self.engine.provisioners.get(&backend).cloned() else {
                continue;
            };
            if let Err(e) = p.destroy(&resources, &*self.journal).await {
                problems.push(e.to_string());
            }
        }
        for r in self.engine.reservations.values().filter(|r| r.is_enabled()) {
            match r.cancel_run(&self.ctx.test_id, &snap.resources).await {
                Ok(_) => end_reservation_records(&*self.journal, r.backend()).await,
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            TaskResult::pass()
        } else {
            let msg = problems.join("; ");
            self.state
                .lock()
                .expect("run state")
                .cleanup_failures
                .push(msg.clone());
            TaskResult::new(Verdict::Error, msg)
        }
    }

    async fn publish(&self) -> TaskResult {
        let outcomes = self.state.lock().expect("run state").outcomes.clone();
        let report = self.build_report(&outcomes);
        if let Err(e) = self.write_report(&report) {
            return TaskResult::new(Verdict::Error, e.to_string());
        }
        let mut publishers = self.engine.publishers.clone();
        if let Some(f) = &self.engine.publisher_factory {
            for t in &self.loaded.plan.publish {
                match f(t, &self.loaded.base_dir, &self.redactor) {
                    Ok(p) => publishers.push(p),
                    Err(e) => return TaskResult::new(Verdict::Error, e),
                }
            }
        }
        let mut problems = Vec::new();
        for p in publishers {
            match p.publish(&report, &self.ctx.run_dir).await {
                Ok(receipt) => self.engine.events.event(&Event::Note {
                    task: Some("publish".into()),
                    message: format!("published to {}: {}", receipt.publisher, receipt.location),
                }),
                Err(e) => problems.push(self.redactor.redact(&e.to_string())),
            }
        }
        if problems.is_empty() {
            TaskResult::pass()
        } else {
            TaskResult::new(Verdict::Error, problems.join("; "))
        }
    }

    fn write_report(&self, report: &Report) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec_pretty(report).expect("report serialises");
        crate::journal::write_atomically(&self.ctx.run_dir.join("report.json"), &bytes)?;
        if let Some(h) = &self.engine.report_hook {
            h(report, &self.ctx.run_dir, &self.redactor).map_err(io_err("writing result files"))?;
        }
        Ok(())
    }

    /// What the run's resources cost so far, summed over the provisioners that can price them.
    /// A resource still alive counts until now, a destroyed one until the journal's
    /// `destroyed-at`; the report written after teardown therefore has the run's whole cost, the
    /// one publishers get (written before teardown) the cost up to then.
    fn estimate_cost(&self) -> Option<CostEstimate> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let grouped = by_backend(&self.journal.resources());
        CostEstimate::sum(grouped.iter().filter_map(|(backend, resources)| {
            self.engine
                .provisioners
                .get(backend)?
                .estimate_cost(resources, now)
        }))
    }

    fn build_report(&self, outcomes: &HashMap<String, TaskOutcome>) -> Report {
        let cost = self.estimate_cost();
        let g = self.state.lock().expect("run state");
        let plan = &self.loaded.plan;
        let mut steps = Vec::new();
        let mut counts: BTreeMap<Verdict, u32> = BTreeMap::new();
        for s in &plan.steps {
            for m in &self.machines {
                let id = format!("step:{}@{}", s.name, m.name);
                // Absent: the step does not run on this machine, or has not ended yet.
                let Some(o) = outcomes.get(&id).or_else(|| g.outcomes.get(&id)).cloned() else {
                    continue;
                };
                let d = g.steps.get(&id).cloned().unwrap_or_default();
                *counts.entry(o.verdict).or_default() += 1;
                let tail = if o.verdict == Verdict::Pass {
                    None
                } else {
                    d.tail.clone()
                };
                steps.push(StepReport {
                    step: s.name.clone(),
                    machine: m.name.clone(),
                    verdict: o.verdict,
                    attempts: o.attempts,
                    started: d.started.clone(),
                    duration_ms: o.duration.as_millis() as u64,
                    exit_code: d.exit_code,
                    message: o.message.as_ref().map(|m| self.redactor.redact(m)),
                    log: d.log.clone(),
                    cast: d.cast.clone(),
                    log_tail: tail,
                });
            }
        }
        let mut infrastructure: Vec<TaskReport> = outcomes
            .iter()
            .chain(g.outcomes.iter())
            .filter(|(id, o)| !id.starts_with("step:") && o.verdict != Verdict::Pass)
            .map(|(id, o)| TaskReport {
                task: id.clone(),
                verdict: o.verdict,
                message: o.message.as_ref().map(|m| self.redactor.redact(m)),
            })
            .collect();
        infrastructure.sort_by(|a, b| a.task.cmp(&b.task));
        infrastructure.dedup_by(|a, b| a.task == b.task);
        let any = |v: Verdict| steps.iter().any(|s| s.verdict == v);
        let infra_error = infrastructure.iter().any(|t| t.verdict == Verdict::Error);
        let outcome = if any(Verdict::Interrupted) || self.cancel.soft.is_cancelled() {
            Verdict::Interrupted
        } else if any(Verdict::Error) || infra_error {
            Verdict::Error
        } else if any(Verdict::Timeout) {
            Verdict::Timeout
        } else if any(Verdict::Fail) || any(Verdict::Skipped) {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let machines = self
            .machines
            .iter()
            .map(|m| {
                let machine = g.machines.get(&m.name);
                MachineReport {
                    name: m.name.clone(),
                    role: m.role.clone(),
                    backend: m.backend.to_string(),
                    facts: machine.map(|x| x.facts.clone()).unwrap_or_default(),
                    artifacts: g.artifacts.get(&m.name).cloned().unwrap_or_default(),
                    kept: g.kept.contains(&m.name),
                }
            })
            .collect();
        Report {
            schema_version: REPORT_SCHEMA_VERSION,
            run_id: self.ctx.run_id.0.clone(),
            test_id: self.ctx.test_id.0.clone(),
            plan_name: plan.name.clone(),
            plan_path: self.loaded.path.display().to_string(),
            description: plan.description.clone(),
            started: self.started_at.clone(),
            finished: crate::now_rfc3339(),
            duration_ms: self.start.elapsed().as_millis() as u64,
            outcome,
            counts,
            machines,
            steps,
            infrastructure,
            cost,
        }
    }
}

#[async_trait]
impl TaskExecutor<Stage> for RunExec {
    async fn execute(
        &self,
        node: &TaskNode<Stage>,
        attempt: u32,
        cancel: CancellationToken,
    ) -> TaskResult {
        let work = async {
            match &node.payload {
                Stage::Reserve => self.reserve().await,
                Stage::Provision { machine } => self.provision(machine).await,
                Stage::WaitReady { machine } => self.wait_ready(machine).await,
                Stage::Upload { machine } => self.upload(machine).await,
                Stage::Step { index, machine, .. } => {
                    self.step(&node.id, *index, machine, attempt, cancel.clone())
                        .await
                }
                Stage::Collect { machine } => self.collect(machine).await,
                Stage::Publish => self.publish().await,
                Stage::Teardown { machine } => self.teardown(machine).await,
                Stage::Release => self.release().await,
            }
        };
        if matches!(node.payload, Stage::Step { .. }) {
            // Steps handle cancellation themselves, so that their process tree is killed.
            return work.await;
        }
        tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => TaskResult::new(Verdict::Interrupted, "interrupted"),
        }
    }

    fn started(&self, node: &TaskNode<Stage>, attempt: u32) {
        self.journal.update(|s| {
            let t = s
                .tasks
                .entry(node.id.clone())
                .or_insert_with(TaskRecord::pending);
            t.state = TaskState::Running;
            t.attempts = attempt;
            t.started = Some(crate::now_rfc3339());
        });
        self.flush_later();
        self.engine.events.event(&Event::TaskStarted {
            task: node.id.clone(),
            attempt,
        });
    }

    fn finished(&self, node: &TaskNode<Stage>, outcome: &TaskOutcome) {
        let exit_code = {
            let mut g = self.state.lock().expect("run state");
            g.outcomes.insert(node.id.clone(), outcome.clone());
            g.steps.get(&node.id).and_then(|d| d.exit_code)
        };
        let message = outcome.message.as_ref().map(|m| self.redactor.redact(m));
        self.journal.update(|s| {
            let t = s
                .tasks
                .entry(node.id.clone())
                .or_insert_with(TaskRecord::pending);
            t.state = TaskState::Done;
            t.verdict = Some(outcome.verdict);
            t.attempts = t.attempts.max(outcome.attempts);
            t.duration_ms = outcome.duration.as_millis() as u64;
            t.exit_code = exit_code;
            t.message = message.clone();
        });
        self.flush_later();
        self.engine.events.event(&Event::TaskFinished {
            task: node.id.clone(),
            verdict: outcome.verdict,
            duration_ms: outcome.duration.as_millis() as u64,
            message,
        });
    }
}

impl RunExec {
    fn flush_later(&self) {
        let j = self.journal.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = j.flush().await {
                    tracing::error!("journal write failed: {e}");
                }
            });
        }
    }
}

fn write_plan_artefacts(
    loaded: &LoadedPlan,
    graph: &TaskGraph<Stage>,
    dir: &Path,
) -> Result<(), EngineError> {
    let w = |p: PathBuf, s: String| -> Result<(), EngineError> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        std::fs::write(&p, s).map_err(io_err(format!("writing {}", p.display())))
    };
    w(dir.join("graph.txt"), stages::render_text(graph))?;
    w(dir.join("graph.dot"), graph.to_dot())?;
    w(
        dir.join("graph.json"),
        serde_json::to_string_pretty(&stages::render_json(graph)).expect("json"),
    )?;
    let plan = &loaded.plan;
    for m in stages::machine_instances(plan) {
        let spec = &plan.machines[m.spec_index];
        let settings = serde_json::json!({ "instance": m, "spec": spec });
        w(
            dir.join("machines")
                .join(format!("{}.json", file_name_of(&m.name))),
            serde_json::to_string_pretty(&settings).expect("json"),
        )?;
        for s in plan
            .steps
            .iter()
            .filter(|s| stages::selects(&s.machines, &m, spec))
        {
            let mut env = plan.defaults.env.clone();
            env.extend(s.env.clone());
            let mut text = format!(
                "#!/bin/sh\n# Step `{}` on machine `{}`, as qa-run will run it.\n",
                s.name, m.name
            );
            let timeout = s
                .timeout
                .or(plan.defaults.timeout)
                .map(|d| d.get())
                .unwrap_or(DEFAULT_STEP_TIMEOUT);
            text.push_str(&format!(
                "# timeout: {}\n",
                crate::plan::PlanDuration(timeout)
            ));
            if !s.depends_on.is_empty() {
                text.push_str(&format!("# depends on: {}\n", s.depends_on.join(", ")));
            }
            for (k, v) in &env {
                text.push_str(&format!("export {k}={}\n", shell_quote(v)));
            }
            for k in &plan.secrets {
                text.push_str(&format!(
                    "# secret {k} is passed from qa-run's environment\n"
                ));
            }
            if let Some(wd) = s.workdir.as_ref().or(plan.defaults.workdir.as_ref()) {
                text.push_str(&format!("cd {}\n", shell_quote(wd)));
            }
            match s.action() {
                StepAction::Script(p) => {
                    text.push_str(&format!("# script {}:\n", p.display()));
                    match std::fs::read_to_string(loaded.resolve(p)) {
                        Ok(body) => text.push_str(&body),
                        Err(e) => text.push_str(&format!("# (cannot read: {e})\n")),
                    }
                }
                StepAction::Command(c) => {
                    text.push_str(c);
                    text.push('\n');
                }
                StepAction::Reboot => text.push_str("# reboot, then wait for a new boot id\n"),
                StepAction::Custom(u) => text.push_str(&format!(
                    "# step type `{u}` with {}\n",
                    serde_json::to_string(&s.with).unwrap_or_default()
                )),
            }
            w(
                dir.join("steps")
                    .join(file_name_of(&m.name))
                    .join(format!("{}.sh", file_name_of(&s.name))),
                text,
            )?;
        }
    }
    Ok(())
}
