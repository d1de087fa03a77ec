//! Integration tests of qa-remote: one binary, one module per executor.

mod local;
#[cfg(feature = "ssh")]
mod ssh;
