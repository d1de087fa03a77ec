//! Integration tests of qa-core: what a user of the library sees.

use std::sync::Arc;

use async_trait::async_trait;
use qa_core::conformance::fakes::FakeExecutor;
use qa_core::remote::{Connector, RemoteError, RemoteExecutor};
use qa_core::types::{Access, Machine};

mod redaction_corpus;
mod run_artifacts;
mod run_cost;
mod run_custom_steps;
mod run_dirs;
mod run_events;
mod run_fallback;
mod run_keepalive;
mod run_names;
mod run_shared;

/// The built-in backends and the fake cloud (`fake-cloud:` machine options), for loading plans.
fn backends() -> qa_core::BackendRegistry {
    let mut r = qa_core::BackendRegistry::new();
    r.register(qa_core::Backend::new(Arc::new(
        qa_core::conformance::fakes::FakeCloudBackend,
    )))
    .unwrap();
    r
}

/// Loads a plan whose machines may be on the fake cloud.
fn load_file(
    path: &std::path::Path,
) -> Result<qa_core::plan::LoadedPlan, qa_core::plan::PlanError> {
    qa_core::plan::load_file_with(path, &backends())
}

/// Runs machines in a local directory (their `Access::Local` root), for runs of fake machines.
#[derive(Debug)]
struct LocalDirs;

#[async_trait]
impl Connector for LocalDirs {
    async fn connect(&self, m: &Machine) -> Result<Arc<dyn RemoteExecutor>, RemoteError> {
        let Access::Local { root } = &m.access else {
            panic!("fake machines are local: {:?}", m.access)
        };
        std::fs::create_dir_all(root).unwrap();
        Ok(Arc::new(FakeExecutor::new(root)))
    }
}
