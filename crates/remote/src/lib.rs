//! qa-remote: the [`qa_core::RemoteExecutor`] implementations.
//!
//! - [`local`]: local processes in their own process group, in a machine's sandbox directory.
//! - [`step_tag`]: how the processes of a step are found, wherever they went, to end them with it.
//! - `ssh` (feature `ssh`): OpenSSH-compatible remote execution over libssh2.
//! - `routing` (feature `ssh`): [`RoutingConnector`], one connector for both, by how each machine
//!   is reached.
#![warn(missing_docs)]

pub mod local;
#[cfg(feature = "ssh")]
mod routing;
#[cfg(feature = "ssh")]
pub mod ssh;
pub mod step_tag;

#[cfg(feature = "ssh")]
pub use routing::RoutingConnector;
