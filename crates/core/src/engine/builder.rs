//! The [`Engine`] builder and the extension points a run's stages use: step types, publishers,
//! result hooks and how reservations are kept alive.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendName, BackendRegistry, RegistryError};
use crate::capacity::CapacityReservation;
use crate::events::{EventSink, NoEvents};
use crate::plan::StepSpec;
use crate::provision::Provisioner;
use crate::publish::ResultPublisher;
use crate::redact::Redactor;
use crate::remote::{Connector, ExitInfo, OutputSink, RemoteError, RemoteExecutor};
use crate::report::Report;
use crate::types::Machine;

/// A step type registered by an embedding program, used by steps with `uses: <name>`.
///
/// # Contract
/// - The engine enforces the step's timeout and the run's cancellation: when either comes,
///   `ctx.cancel` fires; a step type that does not return within a few seconds after is left
///   behind and the step ends TIMEOUT or INTERRUPTED.
/// - What the step says goes to its log and recording through `ctx.output`.
#[async_trait]
pub trait StepType: Send + Sync + 'static {
    /// Runs the step and says how it went.
    async fn run(&self, ctx: StepContext) -> StepOutcome;
}

/// How a custom step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// It passed.
    Pass,
    /// The test said no, for this reason; never retried.
    Fail {
        /// Shown in the report as the step's message.
        reason: String,
    },
    /// Infrastructure failed (ERROR): retried up to the step's `retries` when `retryable`.
    Error {
        /// What went wrong.
        message: String,
        /// Whether another attempt could succeed.
        retryable: bool,
    },
}

impl StepOutcome {
    /// PASS.
    pub fn pass() -> Self {
        StepOutcome::Pass
    }

    /// FAIL with a reason.
    pub fn fail(reason: impl Into<String>) -> Self {
        StepOutcome::Fail {
            reason: reason.into(),
        }
    }

    /// ERROR that another attempt may not meet (a dropped connection, a busy service).
    pub fn error(message: impl Into<String>) -> Self {
        StepOutcome::Error {
            message: message.into(),
            retryable: true,
        }
    }

    /// ERROR that another attempt would meet again (a bad parameter): not retried.
    pub fn fatal(message: impl Into<String>) -> Self {
        StepOutcome::Error {
            message: message.into(),
            retryable: false,
        }
    }

    /// The outcome of a command the step ran: PASS on status 0, FAIL otherwise (with the
    /// status or signal as its reason).
    pub fn from_exit(info: &ExitInfo) -> Self {
        match (info.code, info.signal) {
            (Some(0), _) if !info.timed_out && !info.cancelled => StepOutcome::Pass,
            _ if info.timed_out => StepOutcome::fail("its command timed out"),
            _ if info.cancelled => StepOutcome::fail("its command was cancelled"),
            (Some(c), _) => StepOutcome::fail(format!("exit status {c}")),
            (None, Some(s)) => StepOutcome::fail(format!("killed by signal {s}")),
            (None, None) => StepOutcome::error("its command ended without an exit status"),
        }
    }
}

/// An executor's error is an infrastructure error, worth another attempt.
impl From<RemoteError> for StepOutcome {
    fn from(e: RemoteError) -> Self {
        StepOutcome::error(e.to_string())
    }
}

/// What a custom step type gets.
#[derive(Clone)]
#[non_exhaustive]
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

/// The backends and hooks a run uses.
#[derive(Clone)]
pub struct Engine {
    pub(super) backends: BackendRegistry,
    pub(super) connector: Option<Arc<dyn Connector>>,
    pub(super) step_types: HashMap<String, Arc<dyn StepType>>,
    pub(super) publishers: Vec<Arc<dyn ResultPublisher>>,
    pub(super) publisher_factory: Option<PublisherFactory>,
    pub(super) report_hook: Option<ReportHook>,
    pub(super) events: Arc<dyn EventSink>,
    pub(super) backoff: Duration,
    pub(super) keepalive: ReservationKeepalive,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backends", &self.backends)
            .field("step_types", &self.step_types.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with the built-in backends' descriptors and no clients.
    pub fn new() -> Self {
        Engine {
            backends: BackendRegistry::new(),
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

    /// Replaces the backends with `backends` (descriptors, clients and absent names).
    pub fn backends(mut self, backends: BackendRegistry) -> Self {
        self.backends = backends;
        self
    }

    /// Registers a backend; a name registered before is an error.
    pub fn register(mut self, backend: Backend) -> Result<Self, RegistryError> {
        self.backends.register(backend)?;
        Ok(self)
    }

    /// Sets how reservations are kept alive while a run lives.
    pub fn reservation_keepalive(mut self, k: ReservationKeepalive) -> Self {
        self.keepalive = k;
        self
    }

    /// Sets the provisioner of the backend it reports (a backend registered without one, or a
    /// new backend that takes no plan options).
    pub fn provisioner(mut self, p: Arc<dyn Provisioner>) -> Self {
        self.backends.set_provisioner(p);
        self
    }

    /// Sets the capacity reservation of the backend it reports, which must be registered (with
    /// [`Engine::register`] or [`Engine::provisioner`]).
    pub fn reservation(mut self, r: Arc<dyn CapacityReservation>) -> Result<Self, RegistryError> {
        self.backends.set_reservation(r)?;
        Ok(self)
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

    /// Sets a hook that writes extra result files when the report is written.
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

    /// The backends.
    pub fn backend_registry(&self) -> &BackendRegistry {
        &self.backends
    }

    /// The provisioner of a backend, if registered and built.
    pub fn provisioner_for(&self, b: BackendName) -> Option<&Arc<dyn Provisioner>> {
        self.backends.provisioner(b)
    }

    /// The enabled capacity reservation of a backend, if registered and built.
    pub fn reservation_for(&self, b: BackendName) -> Option<&Arc<dyn CapacityReservation>> {
        self.backends.reservation(b)
    }
}
