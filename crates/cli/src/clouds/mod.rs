//! The cloud backends: which clouds a command needs ([`Clouds`], from a plan or from a run's
//! journal) and adding them to the engine. Whether this build has any is decided here, once:
//! with the `aws` feature the functions come from `enabled.rs`, without it from `disabled.rs`,
//! which has the same functions and says how to get a build that has a cloud.

use std::path::Path;

use qa_core::BackendName;
use qa_core::plan::Plan;

/// The name of the EC2 backend.
const AWS: BackendName = BackendName::new("aws");

#[cfg(feature = "aws")]
#[path = "enabled.rs"]
mod imp;
#[cfg(not(feature = "aws"))]
#[path = "disabled.rs"]
mod imp;

// Both files give `with_clouds` and `janitor`; an aws build also gives the parsers of its
// settings (`aws_settings`, `aws_prices`, `parse_ssh_address_overrides`).
pub use imp::*;

/// Which clouds a command needs, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clouds {
    /// AWS, if needed.
    pub aws: Option<Region>,
}

/// The region a cloud is used in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Region {
    /// The one the cloud's own configuration names (for AWS: `AWS_REGION`, the profile).
    Configured,
    /// This one, named by the plan or recorded in the run's journal.
    Named(String),
}

impl Region {
    fn from_name(name: Option<String>) -> Self {
        name.map_or(Region::Configured, Region::Named)
    }

    /// The region's name, if one was given rather than left to the cloud's configuration.
    pub fn name(&self) -> Option<&str> {
        match self {
            Region::Configured => None,
            Region::Named(n) => Some(n),
        }
    }
}

impl Clouds {
    /// No cloud.
    pub fn none() -> Self {
        Clouds::default()
    }

    /// Every cloud this build has, each in its configured region.
    pub fn all() -> Self {
        Clouds {
            aws: Some(Region::Configured),
        }
    }
}

/// The clouds a plan's machines are on (the region of the first machine on each).
pub(crate) fn clouds_of_plan(plan: &Plan) -> Clouds {
    let machines = qa_core::stages::machine_instances(plan);
    let aws = machines.iter().find(|m| m.backend == AWS).map(|m| {
        Region::from_name(
            plan.machines[m.spec_index]
                .options_of(AWS)
                .and_then(|a| a.get("region"))
                .and_then(|r| r.as_str())
                .map(str::to_string),
        )
    });
    Clouds { aws }
}

/// The clouds a run used: those its journal records resources on (in the region recorded),
/// else those its plan names. No cloud if the journal cannot be read.
pub(crate) fn clouds_of_run(run_dir: &Path) -> Clouds {
    let Ok(state) = qa_core::journal::read_state(&run_dir.join(qa_core::journal::JOURNAL_FILE))
    else {
        return Clouds::none();
    };
    let aws = state
        .resources
        .iter()
        .find(|r| r.backend == AWS)
        .map(|r| Region::from_name(r.details.get("region").cloned()));
    let from_plan =
        qa_core::plan::load_file_with(Path::new(&state.plan_path), &qa_cloud::backends())
            .ok()
            .map(|l| clouds_of_plan(&l.plan))
            .unwrap_or_default();
    Clouds {
        aws: aws.or(from_plan.aws),
    }
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
        "{needed_by}; this build has no cloud backend (it was built with --no-default-features; rebuild with the `aws` feature)"
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
