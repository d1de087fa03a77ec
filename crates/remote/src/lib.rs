//! qa-remote: the [`qa_core::RemoteExecutor`] implementations.
//!
//! - [`local`]: local processes in their own process group, in a machine's sandbox directory.
//! - `ssh` (feature `ssh`): OpenSSH-compatible remote execution over libssh2.
//! - `routing` (feature `ssh`): [`RoutingConnector`], one connector for both, by how each machine
//!   is reached.
#![warn(missing_docs)]

pub mod local;
#[cfg(feature = "ssh")]
mod routing;
#[cfg(feature = "ssh")]
pub mod ssh;

#[cfg(feature = "ssh")]
pub use routing::RoutingConnector;
