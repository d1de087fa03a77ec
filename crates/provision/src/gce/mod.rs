//! Compute Engine machines ([`GceProvisioner`]).
//!
//! Per run it makes an Ed25519 key of its own (private key `0600` in the run directory, public
//! key in each instance's `ssh-keys` metadata for the login user) and, per VPC network, a
//! firewall rule admitting TCP/22 only from one CIDR (the plan's `ssh-cidr`, the provisioner's
//! option, or the address qa-run runs from as `/32`; never `0.0.0.0/0` unless configured so) to
//! the run's instances, which carry the rule's network tag. Per machine it creates one instance
//! with its boot disk and the spec's extra persistent disks (all deleted with it), Standard or
//! Spot (a Spot VM is deleted, not stopped, when taken back; with `spot-fallback` a capacity
//! error makes it Standard), in the zone and reservation of [`MachineRequest::placement`] when
//! capacity was reserved, else in the spec's zones in order, moving on only on a capacity error.
//!
//! Every insert and delete carries a `requestId`, journaled with the resource's name as an
//! intent before the call, so a retried call never makes a second instance and a crash between
//! the call and its answer leaves a record from which [`Provisioner::destroy`] deletes it.
//! Compute Engine reports stockouts and most quota errors inside the finished operation, not in
//! the HTTP answer: every operation is polled by hand until `DONE` and its error classified by
//! its raw code ([`qa_cloud::gce::errors`]).
//!
//! Instances and their disks carry the run's tags as labels; firewall rules take no labels, so
//! their description carries the test id and keep-until. Teardown deletes instances (waiting for
//! each), then the firewall rules; what is already gone counts as removed.
//! [`Provisioner::sweep`] finds instances by the test-id label in every zone (one aggregated
//! listing) and firewall rules by description.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qa_core::ProvisionError> {
//! use qa_provision::gce::{GceProvisioner, GceProvisionerOptions};
//! let p = GceProvisioner::from_env(GceProvisionerOptions {
//!     project: Some("my-project".into()),
//!     ssh_cidr: Some("203.0.113.7/32".into()),
//!     ..Default::default()
//! })?;
//! # let _ = p; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use qa_cloud::gce::{GCE, GceConfig, GceError, GceMachine, OperationWait};
use qa_core::backend::SweepScope;
use qa_core::journal::ResourceLedger;
use qa_core::types::Resource;
use qa_core::{
    BackendName, Leftovers, Machine, MachineRequest, ProvisionError, Provisioner, RunContext,
    TestId,
};

mod firewall;
mod janitor;
mod launch;
mod teardown;

/// Prices cost estimates are made from ([`qa_cloud::cost`]).
pub use qa_cloud::cost::PriceTable;

/// Journal kind of an instance (with its disks).
pub const KIND_INSTANCE: &str = qa_cloud::cost::KIND_INSTANCE;
/// Journal kind of the run's firewall rule in a network.
pub const KIND_FIREWALL: &str = "firewall";

type PResult<T> = Result<T, ProvisionError>;

fn err(machine: Option<&str>, message: impl Into<String>, leftovers: Leftovers) -> ProvisionError {
    ProvisionError::new(GCE, machine, message, leftovers)
}

/// A Compute Engine error as a [`ProvisionError`]: the call, the code, and what to check.
fn api_error(
    machine: Option<&str>,
    call: &str,
    e: GceError,
    leftovers: Leftovers,
) -> ProvisionError {
    let hint = qa_cloud::gce::errors::hint(e.class);
    err(machine, format!("{call}: {e} ({hint})"), leftovers).with_source(e)
}

/// Options of [`GceProvisioner`] that do not come from the plan.
#[derive(Debug, Clone)]
pub struct GceProvisionerOptions {
    /// Project used when a machine's spec names none (default: from the environment).
    pub project: Option<String>,
    /// Endpoint override, e.g. an emulator on a loopback port.
    pub endpoint: Option<String>,
    /// CIDR admitted to SSH when the plan gives none (default: the caller's address, `/32`).
    pub ssh_cidr: Option<String>,
    /// Where the caller's public address is asked for when no CIDR is configured
    /// (`http://` only; the answer is the address as text).
    pub caller_address_url: String,
    /// Machine name (or `*` for every machine) → address to reach its SSH port at, instead of the
    /// instance's address. For tests that map instances onto a local sshd.
    pub address_overrides: BTreeMap<String, SocketAddr>,
    /// How often operations and instance states are polled.
    pub poll_interval: Duration,
    /// How long an operation, or an instance's way to RUNNING, may take.
    pub state_timeout: Duration,
    /// What cost estimates are priced from (default: [`PriceTable::builtin`]).
    pub prices: PriceTable,
}

impl Default for GceProvisionerOptions {
    fn default() -> Self {
        GceProvisionerOptions {
            project: None,
            endpoint: None,
            ssh_cidr: None,
            caller_address_url: "http://checkip.amazonaws.com/".into(),
            address_overrides: BTreeMap::new(),
            poll_interval: Duration::from_secs(2),
            state_timeout: Duration::from_secs(600),
            prices: PriceTable::builtin(),
        }
    }
}

/// Compute Engine machines.
#[derive(Debug)]
pub struct GceProvisioner {
    gce: GceConfig,
    options: GceProvisionerOptions,
    // Serialises the making of per-run resources (key, firewall rules) so that machines created
    // at once share them.
    shared: tokio::sync::Mutex<()>,
    caller_cidr: tokio::sync::OnceCell<String>,
}

impl GceProvisioner {
    /// Credentials from Application Default Credentials, the project from the options or the
    /// environment.
    pub fn from_env(options: GceProvisionerOptions) -> PResult<Self> {
        let gce = GceConfig::from_env(options.project.as_deref(), options.endpoint.as_deref())
            .map_err(|e| err(None, e.to_string(), Leftovers::Clear))?;
        Ok(Self::with_config(gce, options))
    }

    /// Uses a configuration the caller built (credentials, project, endpoint).
    pub fn with_config(gce: GceConfig, options: GceProvisionerOptions) -> Self {
        GceProvisioner {
            gce,
            options,
            shared: tokio::sync::Mutex::new(()),
            caller_cidr: tokio::sync::OnceCell::new(),
        }
    }

    /// Prices cost estimates from `prices`.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.options.prices = prices;
        self
    }

    fn wait(&self) -> OperationWait {
        OperationWait {
            interval: self.options.poll_interval,
            timeout: self.options.state_timeout,
        }
    }

    async fn clients(&self) -> PResult<&qa_cloud::gce::config::Clients> {
        self.gce
            .clients()
            .await
            .map_err(|e| err(None, e.to_string(), Leftovers::Clear))
    }

    fn project(&self, explicit: Option<&str>, machine: Option<&str>) -> PResult<String> {
        self.gce
            .project(explicit)
            .map_err(|e| err(machine, e.to_string(), Leftovers::Clear))
    }
}

/// The `gce:` block of a request's spec.
fn spec_of(request: &MachineRequest) -> PResult<GceMachine> {
    let name = request.name.as_str();
    match GceMachine::of(&request.spec) {
        Some(Ok(spec)) => Ok(spec),
        Some(Err(e)) => Err(err(
            Some(name),
            format!("the machine's gce section does not read: {e}"),
            Leftovers::Clear,
        )),
        None => Err(err(
            Some(name),
            "the machine has no gce section",
            Leftovers::Clear,
        )),
    }
}

#[async_trait]
impl Provisioner for GceProvisioner {
    fn backend(&self) -> BackendName {
        GCE
    }

    fn estimate_cost(
        &self,
        resources: &[Resource],
        end_unix: i64,
    ) -> Option<qa_core::report::CostEstimate> {
        Some(qa_cloud::cost::estimate(resources, end_unix, &self.options.prices, GCE).to_report())
    }

    async fn create(
        &self,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> PResult<Machine> {
        let spec = spec_of(request)?;
        self.create_machine(request, &spec, run, ledger).await
    }

    async fn wait_ready(&self, machine: &Machine, deadline: Duration) -> PResult<()> {
        self.ssh_ready(machine, deadline).await
    }

    async fn destroy(&self, resources: &[Resource], ledger: &dyn ResourceLedger) -> PResult<()> {
        self.destroy_records(resources, ledger).await
    }

    async fn sweep(&self, test_id: &TestId, scope: SweepScope<'_>) -> PResult<Vec<String>> {
        // One aggregated listing covers every zone of a project, so the scope only adds the
        // projects a run's records name.
        let records = match scope {
            SweepScope::Run(records) => records,
            _ => &[],
        };
        self.sweep_in(test_id, &self.projects(records)).await
    }
}
