//! Integration tests of qa-remote: one binary, one module per executor, and the escape forms
//! both are checked against.

mod escapes;
mod local;
#[cfg(feature = "ssh")]
mod ssh;
