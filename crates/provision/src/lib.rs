//! qa-provision: the [`qa_core::Provisioner`] implementations.
//!
//! - [`local`]: a sandbox directory per machine on this host (the embedded default).
#![warn(missing_docs)]

pub mod local;
