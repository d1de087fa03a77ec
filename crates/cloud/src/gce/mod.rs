//! Compute Engine: the `gce` backend's name and plan options ([`GceBackend`], [`GceMachine`]),
//! and the client layer its provisioner (`qa_provision::gce`) and its capacity reservations
//! (`qa_capacity::gce`) share, so that nothing GCE-specific is written twice:
//!
//! - [`config`]: the project, Application Default Credentials, the endpoint override, the
//!   clients, `requestId`s and operations waited for by hand ([`GceConfig`], [`until_done`]);
//! - [`errors`]: one classification of Compute Engine's error codes, from a refused call or
//!   from inside a finished operation ([`GceError`]);
//! - [`labels`]: qa-run's tags as labels, names Compute Engine accepts, and how reservations
//!   (which take no labels) carry the test id;
//! - [`zones`]: the zones of a region, those that offer some machine types, and
//!   [`all_items!`](crate::all_items) for listings.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qa_cloud::gce::config::SetupError> {
//! use qa_cloud::gce::GceConfig;
//! let gce = GceConfig::from_env(Some("my-project"), None)?;
//! let clients = gce.clients().await?;
//! # let _ = clients; Ok(()) }
//! ```

pub mod config;
pub mod errors;
pub mod labels;
mod options;
pub mod zones;

/// This host's public address and the SSH readiness probe (shared by every cloud).
pub use crate::net;
pub use config::{GceConfig, OperationWait, SetupError, finished, until_done};
pub use errors::{ErrorClass, GceError};
pub use options::{
    DEFAULT_BOOT_DISK_GB, DEFAULT_DISK_TYPE, DEFAULT_SSH_USER, DiskSpec, GCE, GceBackend,
    GceMachine, is_gce_name, region_of_zone,
};

/// The label key under which Compute Engine keeps the reservation an instance consumes.
pub const RESERVATION_AFFINITY_KEY: &str = "compute.googleapis.com/reservation-name";
