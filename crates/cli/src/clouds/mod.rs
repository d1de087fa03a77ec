//! The cloud backends: which clouds a command needs ([`Clouds`], from a plan or from a run's
//! journal), adding them to the engine, and the janitor across them. Each cloud this build has is
//! one module behind its cargo feature (`aws.rs`, `gce.rs`) that gives a [`CloudWiring`]; the
//! list `wirings()` is the only place that names them. A build without any has an empty list:
//! a plan that needs a cloud is refused by the engine's check, which names the feature to build.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use qa_core::backend::Janitor;
use qa_core::engine::Engine;
use qa_core::plan::Plan;
use qa_core::{BackendName, BackendRegistry, Provisioner};

use crate::error::CliError;
use crate::terminal::safe;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "gce")]
pub mod gce;

/// Every cloud this build has.
fn wirings() -> Vec<&'static dyn CloudWiring> {
    vec![
        #[cfg(feature = "aws")]
        &aws::Aws,
        #[cfg(feature = "gce")]
        &gce::Gce,
    ]
}

/// Where a cloud is used: for AWS the region, for GCE the project.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// The one the cloud's own configuration names (`AWS_REGION`, `GOOGLE_CLOUD_PROJECT`, …).
    Configured,
    /// This one, named by the plan or recorded in the run's journal.
    Named(String),
}

impl Place {
    fn from_name(name: Option<String>) -> Self {
        name.map_or(Place::Configured, Place::Named)
    }

    /// The name, if one was given rather than left to the cloud's configuration.
    pub fn name(&self) -> Option<&str> {
        match self {
            Place::Configured => None,
            Place::Named(n) => Some(n),
        }
    }
}

/// Which clouds a command needs, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clouds(BTreeMap<BackendName, Place>);

impl Clouds {
    /// No cloud.
    pub fn none() -> Self {
        Clouds::default()
    }

    /// Every cloud this build has, each where its configuration says.
    pub fn all() -> Self {
        Clouds(
            wirings()
                .into_iter()
                .map(|w| (w.name(), Place::Configured))
                .collect(),
        )
    }

    /// The clouds named, each where its configuration says; a name this build lacks is
    /// [`CloudError::NotBuiltIn`].
    pub fn named(names: &[&str]) -> Result<Self, CloudError> {
        let mut out = BTreeMap::new();
        for n in names {
            let w = wirings()
                .into_iter()
                .find(|w| w.name().as_str() == *n)
                .ok_or(CloudError::NotBuiltIn {
                    needed_by: "sweeping a cloud by test id",
                })?;
            out.insert(w.name(), Place::Configured);
        }
        Ok(Clouds(out))
    }

    /// Where `cloud` is needed, if it is.
    pub fn get(&self, cloud: BackendName) -> Option<&Place> {
        self.0.get(&cloud)
    }
}

/// What the CLI knows of one cloud: how to add its backends to the engine, where a plan or a
/// journal says it is used, and its janitor.
#[async_trait]
pub trait CloudWiring: Sync {
    /// The backend's name.
    fn name(&self) -> BackendName;

    /// The key of a machine's options (and of a journal record's details) that says where it is
    /// (`region`, `project`).
    fn place_key(&self) -> &'static str;

    /// Adds the cloud's provisioner, reservations and janitor to `backends`, with credentials
    /// from the usual places and settings from the environment.
    async fn add(&self, backends: &mut BackendRegistry, place: &Place) -> Result<(), CloudError>;

    /// The cloud's janitor, where its configuration says.
    async fn janitor(&self) -> Result<(Arc<dyn Provisioner>, Arc<dyn Janitor>), CloudError>;
}

/// The clouds a plan's machines are on (where the first machine on each says).
pub(crate) fn clouds_of_plan(plan: &Plan) -> Clouds {
    let machines = qa_core::stages::machine_instances(plan);
    let mut out = BTreeMap::new();
    for w in wirings() {
        // A machine needs the cloud it is on, and each one it may fall back to.
        if let Some(m) = machines.iter().find(|m| {
            m.backend == w.name() || plan.machines[m.spec_index].fallback.contains(&w.name())
        }) {
            let place = plan.machines[m.spec_index]
                .options_of(w.name())
                .and_then(|o| o.get(w.place_key()))
                .and_then(|r| r.as_str())
                .map(str::to_string);
            out.insert(w.name(), Place::from_name(place));
        }
    }
    Clouds(out)
}

/// The clouds a run used: those its journal records resources on (where recorded), else those
/// its plan names. No cloud if the journal cannot be read.
pub(crate) fn clouds_of_run(run_dir: &Path) -> Clouds {
    let Ok(state) = qa_core::journal::read_state(&run_dir.join(qa_core::journal::JOURNAL_FILE))
    else {
        return Clouds::none();
    };
    let from_plan =
        qa_core::plan::load_file_with(Path::new(&state.plan_path), &qa_cloud::backends())
            .ok()
            .map(|l| clouds_of_plan(&l.plan))
            .unwrap_or_default();
    let mut out = from_plan.0;
    for w in wirings() {
        if let Some(r) = state.resources.iter().find(|r| r.backend == w.name()) {
            out.insert(
                w.name(),
                Place::from_name(r.details.get(w.place_key()).cloned()),
            );
        }
    }
    Clouds(out)
}

/// Adds the cloud backends a command needs, with credentials from the usual places.
pub async fn with_clouds(engine: Engine, clouds: &Clouds) -> Result<Engine, CloudError> {
    if clouds.0.is_empty() {
        return Ok(engine);
    }
    let mut backends = engine.backend_registry().clone();
    for w in wirings() {
        if let Some(place) = clouds.get(w.name()) {
            w.add(&mut backends, place).await?;
        }
    }
    Ok(engine.backends(backends))
}

/// Why a cloud backend could not be added or used.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An environment variable the backend reads has a value it cannot use; nothing was asked
    /// of the cloud.
    #[error("{variable}: {source}")]
    Setting {
        /// The variable.
        variable: &'static str,
        /// What is wrong with its value.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The price file an environment variable names cannot be read or parsed; nothing was
    /// asked of the cloud.
    #[error(
        "{variable}: {source} (see `qa-run run --help`; unset {variable} for the built-in prices)"
    )]
    PriceFile {
        /// The variable.
        variable: &'static str,
        /// What is wrong with the file, and where.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The command needs a cloud and this build has none.
    #[error(
        "{needed_by}; this build has no cloud backend (it was built with --no-default-features; rebuild with the `aws` or `gce` feature)"
    )]
    NotBuiltIn {
        /// What needs a cloud, and why.
        needed_by: &'static str,
    },
    /// The cloud's machine backend could not be set up or asked (credentials, region, the API).
    #[error(transparent)]
    Provisioner(#[from] qa_core::ProvisionError),
    /// The cloud's capacity reservations could not be set up.
    #[error(transparent)]
    Reservations(#[from] qa_core::CapacityError),
}

/// What is wrong with an SSH address override (`QA_RUN_AWS_SSH_ADDRESS`, `QA_RUN_GCE_SSH_ADDRESS`).
#[derive(Debug, thiserror::Error)]
pub enum SshAddressError {
    /// An address that does not resolve as `HOST:PORT`.
    #[error("`{0}` is not HOST:PORT (expected `HOST:PORT` or `NAME=HOST:PORT,...`)")]
    NotHostPort(String),
    /// `=HOST:PORT`.
    #[error("`{0}` has no machine name before `=`")]
    NoMachineName(String),
}

/// Parses an SSH address override: `HOST:PORT` (every machine, stored under `*`) or
/// `NAME=HOST:PORT,...`.
pub fn parse_ssh_address_overrides(
    value: &str,
) -> Result<BTreeMap<String, SocketAddr>, SshAddressError> {
    let mut out = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, addr) = match part.split_once('=') {
            Some((n, a)) => (n.trim(), a.trim()),
            None => ("*", part),
        };
        let parsed = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SshAddressError::NotHostPort(addr.to_string()))?;
        if name.is_empty() {
            return Err(SshAddressError::NoMachineName(part.to_string()));
        }
        out.insert(name.to_string(), parsed);
    }
    Ok(out)
}

/// The SSH address overrides `variable` holds (none when unset or empty).
#[cfg_attr(not(any(feature = "aws", feature = "gce")), allow(dead_code))]
pub(crate) fn ssh_address_overrides(
    variable: &'static str,
) -> Result<BTreeMap<String, SocketAddr>, CloudError> {
    match std::env::var(variable)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => parse_ssh_address_overrides(&v).map_err(|e| CloudError::Setting {
            variable,
            source: Box::new(e),
        }),
        None => Ok(BTreeMap::new()),
    }
}

/// The path a price variable names (none when unset or empty).
#[cfg_attr(not(any(feature = "aws", feature = "gce")), allow(dead_code))]
pub(crate) fn price_file(variable: &'static str) -> Option<std::path::PathBuf> {
    std::env::var_os(variable)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// The built-in price table with the JSON file `path` laid over it; what is wrong is a
/// [`CloudError::PriceFile`] naming `variable`, the file and the problem.
#[cfg_attr(not(any(feature = "aws", feature = "gce")), allow(dead_code))]
pub(crate) fn prices(
    variable: &'static str,
    path: Option<&Path>,
) -> Result<qa_cloud::cost::PriceTable, CloudError> {
    let Some(path) = path else {
        return Ok(qa_cloud::cost::PriceTable::builtin());
    };
    qa_cloud::cost::PriceTable::load_overrides(path).map_err(|e| CloudError::PriceFile {
        variable,
        source: Box::new(e),
    })
}

/// What `qa-run janitor` looks for, and whether it removes what it finds.
#[derive(Debug, Clone, Copy)]
pub struct JanitorOptions {
    /// Only resources whose keep-until passed at least this long ago.
    pub older_than: std::time::Duration,
    /// Remove what is listed (otherwise list only).
    pub remove: bool,
    /// Look in every region, not only the configured one.
    pub all_regions: bool,
}

/// Lists the resources of every cloud of this build whose keep-until passed, where each cloud's
/// configuration says (or in all regions), and removes them if asked. A region that cannot be
/// searched or emptied is printed as it happens, and the rest go on.
pub async fn janitor(options: JanitorOptions) -> Result<i32, CliError> {
    let wirings = wirings();
    if wirings.is_empty() {
        return Err(CloudError::NotBuiltIn {
            needed_by: "the janitor looks at cloud resources",
        }
        .into());
    }
    let mut backends = qa_cloud::backends();
    for w in wirings {
        let (p, j) = w.janitor().await?;
        backends.set_provisioner(p);
        backends
            .set_janitor(w.name(), j)
            .expect("qa_cloud::backends() registers every cloud of the build");
    }
    let report = Engine::new()
        .backends(backends)
        .janitor(options.older_than, options.all_regions, options.remove)
        .await;
    for e in &report.errors {
        eprintln!("error: {}", safe(e));
    }
    let searched = || {
        if report.errors.is_empty() {
            Ok(qa_core::exit::ALL_PASSED)
        } else {
            Err(CliError::ListingIncomplete {
                failed: report.errors.len(),
            })
        }
    };
    if report.expired.is_empty() {
        if report.errors.is_empty() {
            println!("nothing has outlived its keep-until");
        }
        return searched();
    }
    for (backend, r) in &report.expired {
        println!(
            "{:<5} {:<14} {:<16} {:<40} test-id {:<30} keep-until {}",
            backend,
            safe(&r.region),
            safe(&r.kind),
            safe(&r.id),
            safe(r.test_id.as_deref().unwrap_or("-")),
            safe(&r.keep_until)
        );
    }
    if !options.remove {
        eprintln!(
            "{} resource(s) listed; nothing removed (add --yes to remove them)",
            report.expired.len()
        );
        return searched();
    }
    for r in &report.removed {
        println!("removed {}", safe(r));
    }
    for l in &report.left {
        eprintln!("left: {}", safe(l));
    }
    if !report.left.is_empty() {
        return Err(CliError::CleanupIncomplete {
            remaining: report.left.len(),
        });
    }
    searched()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_address_overrides_take_one_address_or_one_per_machine() {
        let all = parse_ssh_address_overrides("127.0.0.1:2222").unwrap();
        assert_eq!(all["*"], "127.0.0.1:2222".parse().unwrap());
        let some = parse_ssh_address_overrides("a=127.0.0.1:1, b = 127.0.0.2:2 ,").unwrap();
        assert_eq!(some.len(), 2);
        assert_eq!(some["b"], "127.0.0.2:2".parse().unwrap());
        let bad = parse_ssh_address_overrides("a=127.0.0.1").unwrap_err();
        assert!(
            bad.to_string().starts_with("`127.0.0.1` is not HOST:PORT"),
            "{bad}"
        );
        assert!(matches!(
            parse_ssh_address_overrides("=127.0.0.2:2"),
            Err(SshAddressError::NoMachineName(_))
        ));
    }
}
