//! The [`Provisioner`] trait: making machines, making them ready, destroying them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{BackendName, SweepScope};
use crate::journal::ResourceLedger;
use crate::plan::MachineSpec;
use crate::report::CostEstimate;
use crate::types::{Leftovers, Machine, Resource, RunId, TestId};

/// One machine to make.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MachineRequest {
    /// Instance name (`name` or `name-N`).
    pub name: String,
    /// Role.
    pub role: String,
    /// The spec from the plan.
    pub spec: MachineSpec,
    /// Zone and reservation ids, when capacity was reserved.
    pub placement: Option<crate::capacity::Placement>,
}

/// What a provisioner knows about the run it works for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunContext {
    /// The run.
    pub run_id: RunId,
    /// Tag value on every resource.
    pub test_id: TestId,
    /// Plan name, for tags.
    pub plan_name: String,
    /// The run's results directory.
    pub run_dir: PathBuf,
    /// Tags to put on every resource (test id, plan, who ran it, created-by, keep-until).
    pub tags: BTreeMap<String, String>,
}

/// Why provisioning failed, and what it left behind.
#[derive(Debug, thiserror::Error)]
#[error("{backend} provisioner{}: {message}", machine.as_ref().map(|m| format!(" (machine {m})")).unwrap_or_default())]
#[non_exhaustive]
pub struct ProvisionError {
    /// The backend.
    pub backend: BackendName,
    /// The machine, if the error concerns one.
    pub machine: Option<String>,
    /// What went wrong and what to do.
    pub message: String,
    /// What exists now because of the failed call.
    pub leftovers: Leftovers,
    /// The backend had no capacity for the machine in any zone it tried: a machine with a
    /// `fallback` moves on to its next backend.
    pub out_of_capacity: bool,
    /// The cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProvisionError {
    /// An error with no cause and the given leftovers.
    pub fn new(
        backend: BackendName,
        machine: Option<&str>,
        message: impl Into<String>,
        leftovers: Leftovers,
    ) -> Self {
        ProvisionError {
            backend,
            machine: machine.map(str::to_string),
            message: message.into(),
            leftovers,
            out_of_capacity: false,
            source: None,
        }
    }

    /// Marks the error as a lack of capacity in every zone tried.
    pub fn out_of_capacity(mut self) -> Self {
        self.out_of_capacity = true;
        self
    }

    /// Attaches a cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Makes machines from specs and destroys them.
///
/// # Contract
/// - `create` records every resource in the ledger as an intent **before** the call that creates
///   it (with a client token where the API takes one) and with its id after, so that a crash at any
///   point leaves a journal from which `destroy` (or `sweep`) removes it.
/// - `create` that fails returns what it left behind in [`ProvisionError::leftovers`].
/// - `destroy` is idempotent: destroying what is already gone is `Ok`. It marks every resource it
///   removed as destroyed in the ledger. It must work from journal records alone (a fresh process,
///   after a crash).
/// - `sweep` removes everything carrying the test id tag, for when the journal is lost (or after
///   destroying a journal's records, for what a crash inside a create left unrecorded).
/// - Cancellation (dropping a future) may leave a resource in `Intent` state; teardown treats it
///   as possibly existing.
/// - `estimate_cost` is optional (the default prices nothing). It works from journal records
///   alone and never calls the backend's API: the engine calls it while it writes the report.
#[async_trait]
pub trait Provisioner: Send + Sync + Debug + 'static {
    /// The backend this provisioner serves.
    fn backend(&self) -> BackendName;

    /// Makes one machine.
    async fn create(
        &self,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError>;

    /// Waits until the machine accepts commands, up to `deadline`.
    async fn wait_ready(&self, machine: &Machine, deadline: Duration)
    -> Result<(), ProvisionError>;

    /// Destroys these resources (from the journal). Idempotent.
    async fn destroy(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError>;

    /// Destroys everything tagged with `test_id` where `scope` says (the configured region,
    /// every region, or wherever a run's journal records say it made something, plus the
    /// configured region); returns a line per resource removed. Backends without regions sweep
    /// the same way for every scope.
    async fn sweep(
        &self,
        test_id: &TestId,
        scope: SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError>;

    /// Estimates what `resources` cost: this backend's records from a run's journal, in any
    /// state. A resource still alive (or whose end the journal does not know) counts until
    /// `end_unix` (seconds since the epoch; the engine passes the time the report is written).
    ///
    /// `None` (the default) means the backend has no prices, and the report shows no cost for
    /// it; `Some` with a zero total means it has prices and nothing was billed. It must be quick
    /// and must not call the backend's API; it may be called more than once per run, each time
    /// with a later `end_unix`.
    fn estimate_cost(&self, resources: &[Resource], end_unix: i64) -> Option<CostEstimate> {
        let _ = (resources, end_unix);
        None
    }
}
