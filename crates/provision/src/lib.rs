//! qa-provision: the [`qa_core::Provisioner`] implementations.
//!
//! - [`local`]: a sandbox directory per machine on this host (the embedded default).
//! - [`static_hosts`]: hosts that already exist, leased so two runs never share one.
#![warn(missing_docs)]

pub mod local;
pub mod static_hosts;
