//! qa-cloud: what provisioning and capacity reservations of one cloud share, one module per
//! cloud behind its cargo feature: the cloud's plan options and their checks (its
//! [`BackendDescriptor`](qa_core::BackendDescriptor)), how its client is built from the user's
//! usual configuration (with an endpoint override for emulators and sovereign clouds), how its
//! errors are classified, the names of its tags, pagination and regions.
//!
//! `qa-provision` and `qa-capacity` build their cloud backends on these modules, so nothing
//! cloud-specific is written twice; the engine and the CLI name no cloud.
#![warn(missing_docs)]

use qa_core::BackendRegistry;

mod class;
pub use class::ErrorClass;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(any(feature = "aws", feature = "gce"))]
mod checks;
pub mod cost;
#[cfg(feature = "gce")]
pub mod gce;
#[cfg(any(feature = "aws", feature = "gce"))]
pub mod net;
#[cfg(feature = "gce")]
pub mod sshkey;

/// The built-in backends plus the descriptor of every cloud this build has; each cloud whose
/// feature is off is recorded as absent, so a plan naming it is told which feature to turn on.
/// Clients are added to it once a command knows which clouds it needs.
pub fn backends() -> BackendRegistry {
    let mut r = BackendRegistry::new();
    #[cfg(feature = "aws")]
    r.register(qa_core::Backend::new(std::sync::Arc::new(aws::AwsBackend)))
        .expect("one registration per cloud");
    #[cfg(not(feature = "aws"))]
    r.absent(qa_core::BackendName::new("aws"), "aws");
    #[cfg(feature = "gce")]
    r.register(qa_core::Backend::new(std::sync::Arc::new(gce::GceBackend)))
        .expect("one registration per cloud");
    #[cfg(not(feature = "gce"))]
    r.absent(qa_core::BackendName::new("gce"), "gce");
    r
}

/// Where a cloud machine's run files go: below the login user's home (root's is `/root`).
#[cfg(any(feature = "aws", feature = "gce"))]
pub fn remote_workdir(user: &str, run_id: &str, machine: &str) -> String {
    let home = if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    };
    format!("{home}/qa-run/{run_id}/{machine}")
}
