//! EC2: the `aws` backend's name and plan options ([`AwsBackend`], [`AwsMachine`]), and the
//! client layer its provisioner (`qa_provision::aws`) and its capacity reservations
//! (`qa_capacity::aws`) share, so that nothing EC2-specific is written twice:
//!
//! - [`config`]: one loader for the SDK configuration, a client per region, the retry setting of
//!   create calls and client tokens ([`Ec2Config`]);
//! - [`errors`]: one classification of EC2 error codes ([`ErrorClass`]) and one [`describe`];
//! - [`tags`]: qa-run's tags and filters as EC2 spells them;
//! - [`pages`]: the listings read to their last page;
//! - [`regions`]: the account's regions and work done in each of them at once;
//! - [`net`]: this host's public address and the SSH readiness probe.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qa_cloud::aws::NoRegion> {
//! use qa_cloud::aws::{Ec2Config, regions};
//! let ec2 = Ec2Config::from_env(Some("eu-west-1"), None).await?;
//! let everywhere = regions::enabled(&ec2.client()).await;
//! # let _ = everywhere; Ok(()) }
//! ```

pub mod config;
/// This host's public address and the SSH readiness probe (shared by every cloud).
pub use crate::net;
pub mod errors;
mod options;
pub mod pages;
pub mod regions;
pub mod tags;

pub use config::{Ec2Config, NoRegion};
pub use errors::{ClassifiedError, ErrorClass, classify, classify_code, describe};
pub use options::{AWS, AwsBackend, AwsMachine, VolumeSpec};
