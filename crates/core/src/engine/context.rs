//! The run in progress: its plan, journal, secrets and the state its stages share, and the one
//! place a step's environment, timeout and the run's budget are decided.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::builder::Engine;
use crate::backend::BackendName;
use crate::capacity::Placement;
use crate::dag::{RunCancel, TaskOutcome};
use crate::events::{Event, EventRecord, EventSink, EventStream};
use crate::journal::RunJournal;
use crate::plan::{LoadedPlan, Plan, StepSpec};
use crate::provision::RunContext;
use crate::redact::Redactor;
use crate::remote::RemoteExecutor;
use crate::stages::{MachineInstance, Stage};
use crate::types::{Machine, Resource};

/// Default step timeout when neither the step nor `defaults.timeout` sets one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a new machine may take to accept commands.
pub const READY_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// The run's budget when the plan sets none.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(6 * 3600);

/// A step's timeout: its own, else the plan's default, else [`DEFAULT_STEP_TIMEOUT`].
pub(crate) fn step_timeout(plan: &Plan, step: &StepSpec) -> Duration {
    step.timeout
        .or(plan.defaults.timeout)
        .map(|d| d.get())
        .unwrap_or(DEFAULT_STEP_TIMEOUT)
}

/// The run's wall-time budget: the plan's, else [`DEFAULT_BUDGET`].
pub(crate) fn budget(plan: &Plan) -> Duration {
    plan.budget.map(|b| b.get()).unwrap_or(DEFAULT_BUDGET)
}

/// The variables qa-run gives every step, besides the plan's `env` and secrets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepIdentity<'a> {
    pub run_id: &'a str,
    pub test_id: &'a str,
    pub machine: &'a str,
    pub role: &'a str,
    pub step: &'a str,
    pub attempt: u32,
    pub workdir: &'a str,
}

/// A step's environment: the run's (given in code), the plan's defaults, the step's own, then (`secrets`, when given) the
/// secrets' values and qa-run's `QA_RUN_*` variables. The rendered plan artefacts use the same
/// function, with the secrets left out.
pub(crate) fn step_env(
    plan: &Plan,
    step: &StepSpec,
    (run_env, secrets): (&BTreeMap<String, String>, Option<&BTreeMap<String, String>>),
    id: &StepIdentity<'_>,
) -> BTreeMap<String, String> {
    let mut env = run_env.clone();
    env.extend(plan.defaults.env.clone());
    env.extend(step.env.clone());
    if let Some(secrets) = secrets {
        env.extend(secrets.clone());
    }
    for (k, v) in [
        ("QA_RUN_ID", id.run_id),
        ("QA_RUN_TEST_ID", id.test_id),
        ("QA_RUN_MACHINE", id.machine),
        ("QA_RUN_ROLE", id.role),
        ("QA_RUN_STEP", id.step),
        ("QA_RUN_WORKDIR", id.workdir),
    ] {
        env.insert(k.into(), v.into());
    }
    env.insert("QA_RUN_ATTEMPT".into(), id.attempt.to_string());
    env
}

/// Journal records grouped by the backend that owns them.
pub(crate) fn by_backend<'a>(
    records: impl IntoIterator<Item = &'a Resource>,
) -> BTreeMap<BackendName, Vec<Resource>> {
    let mut out: BTreeMap<BackendName, Vec<Resource>> = BTreeMap::new();
    for r in records {
        out.entry(r.backend).or_default().push(r.clone());
    }
    out
}

/// What the stages of a run learn and share while it runs.
#[derive(Default)]
pub(crate) struct RunState {
    pub machines: HashMap<String, Machine>,
    pub executors: HashMap<String, Arc<dyn RemoteExecutor>>,
    /// Per machine that reserved: where its reservation is (on the backend it is on now).
    pub placements: HashMap<String, Placement>,
    /// Per machine that left its own backend: the index of the backend it is on now among its
    /// alternatives (`MachineSpec::alternatives`).
    pub alternative: HashMap<String, usize>,
    /// Per machine: what each backend it left said, in order.
    pub tried: HashMap<String, Vec<String>>,
    pub outcomes: HashMap<Stage, TaskOutcome>,
    pub steps: HashMap<Stage, StepDetail>,
    pub artifacts: HashMap<String, Vec<String>>,
    pub kept: Vec<String>,
    pub cleanup_failures: Vec<String>,
    /// Stops the tasks that extend reservations.
    pub keepalive: Option<CancellationToken>,
    /// The report, once the publish task has written it.
    pub report: Option<crate::report::Report>,
}

/// What a step's stage records for the report.
#[derive(Default, Clone)]
pub(crate) struct StepDetail {
    pub started: Option<String>,
    pub exit_code: Option<i32>,
    pub log: Option<String>,
    pub cast: Option<String>,
    pub tail: Option<String>,
}

/// A run in progress.
pub(crate) struct ActiveRun {
    pub engine: Engine,
    pub loaded: LoadedPlan,
    pub machines: Vec<MachineInstance>,
    pub ctx: RunContext,
    pub journal: Arc<RunJournal>,
    pub secrets: BTreeMap<String, String>,
    /// Variables every step gets, given in code.
    pub run_env: BTreeMap<String, String>,
    pub redactor: Redactor,
    pub state: Mutex<RunState>,
    pub start: Instant,
    pub started_at: String,
    pub cancel: RunCancel,
    pub events: Emitter,
}

/// Sends a run's events to the engine's sink and, while someone listens, to the run's stream.
#[derive(Clone)]
pub(crate) struct Emitter {
    sink: Arc<dyn EventSink>,
    stream: Arc<Mutex<Option<mpsc::UnboundedSender<EventRecord>>>>,
    start: Instant,
}

impl Emitter {
    pub fn new(sink: Arc<dyn EventSink>, start: Instant) -> Self {
        Emitter {
            sink,
            stream: Arc::default(),
            start,
        }
    }

    /// Tells the sink and the stream of `event`.
    pub fn emit(&self, event: Event) {
        self.sink.event(&event);
        let mut g = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = g.as_ref()
            && tx
                .send(EventRecord::new(event, self.start.elapsed()))
                .is_err()
        {
            // Nobody reads the stream any more.
            *g = None;
        }
    }

    /// A new stream of the events from now on; an earlier one ends.
    pub fn listen(&self) -> EventStream {
        let (tx, stream) = EventStream::channel();
        *self.stream.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        stream
    }

    /// Ends the stream.
    pub fn end(&self) {
        self.stream.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl ActiveRun {
    /// The shared state. A stage that panicked while holding it left nothing half-written that
    /// the others cannot read, so a poisoned lock is taken as it is.
    pub fn state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn instance(&self, name: &str) -> &MachineInstance {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .expect("machine from the graph")
    }

    pub fn machine(&self, name: &str) -> Option<Machine> {
        self.state().machines.get(name).cloned()
    }

    pub fn executor(&self, name: &str) -> Option<Arc<dyn RemoteExecutor>> {
        self.state().executors.get(name).cloned()
    }

    /// A step's environment on `machine`, for this attempt.
    pub fn step_env(
        &self,
        step: &StepSpec,
        machine: &Machine,
        attempt: u32,
    ) -> BTreeMap<String, String> {
        step_env(
            &self.loaded.plan,
            step,
            (&self.run_env, Some(&self.secrets)),
            &StepIdentity {
                run_id: &self.ctx.run_id.0,
                test_id: &self.ctx.test_id.0,
                machine: &machine.name,
                role: &machine.role,
                step: &step.name,
                attempt,
                workdir: &machine.workdir,
            },
        )
    }

    /// Tells the engine's sink and the run's event stream (if one was asked for) of `event`.
    pub fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// Writes the journal in the background; a failure is logged, and the next write tries again.
    pub fn flush_later(&self) {
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
