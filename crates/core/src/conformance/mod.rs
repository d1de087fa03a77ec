//! Conformance suites: the behaviour every backend must show, written once and run by each
//! implementation against its real or emulated service.
//!
//! Each trait has a module with public async functions ([`executor`], [`provisioner`],
//! [`capacity`], [`publisher`]). A backend's integration tests call them; they panic with a message
//! naming the backend and the broken rule, like `assert!` does. The suites run against in-memory
//! fakes ([`fakes`]) in qa-core's own tests, so a change to a suite is proven satisfiable before any
//! backend meets it.
//!
//! ```no_run
//! # async fn demo(exec: &dyn qa_core::RemoteExecutor) {
//! let scratch = std::env::temp_dir().join("qa-conformance");
//! std::fs::create_dir_all(&scratch).unwrap();
//! qa_core::conformance::executor::run_all(exec, &scratch).await;
//! # }
//! ```

pub mod capacity;
pub mod executor;
pub mod fakes;
pub mod ledger;
pub mod provisioner;
pub mod publisher;

pub use ledger::CheckingLedger;

/// A name nobody else uses, for markers, files and test ids of one suite run.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
