//! qa-provision: the [`qa_core::Provisioner`] implementations.
//!
//! - `aws` (feature `aws`): EC2 instances with their key pair, security group, volumes and
//!   placement group.
//! - `gce` (feature `gce`): Compute Engine instances with their disks, the run's SSH key and
//!   firewall rule.
//! - [`local`]: a sandbox directory per machine on this host (the embedded default).
//! - [`static_hosts`]: hosts that already exist, leased so two runs never share one.
#![warn(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "gce")]
pub mod gce;
pub mod local;
pub mod static_hosts;
