//! The engine: runs a plan end to end on the backends it is given.
//!
//! It expands the plan into its stage graph ([`crate::stages`]), runs it with the DAG runner
//! ([`crate::dag`]), journals every transition and resource ([`crate::journal`]), writes the
//! results directory, and always tears down. Backends are registered by name
//! ([`crate::backend`]), so a harness that embeds qa-run chooses which it links and can add its
//! own.
//!
//! The rooms: [`Engine`] and its extension points (`builder`), setting up a run or resuming one
//! (`setup`), the run's shared state and the one place a step's environment, timeout and budget
//! come from (`context`), one module per kind of stage (`stages`), the dispatch loop that journals
//! and reports each task (`run`), cleanup after a crash and sweeps by test id (`cleanup`), the
//! rendered plan artefacts (`artefacts`), the run directory's layout (`layout`) and its lock, one
//! process at a time (`run_lock`), and errors.
//!
//! ```no_run
//! # async fn demo(p: std::sync::Arc<dyn qa_core::Provisioner>, c: std::sync::Arc<dyn qa_core::Connector>) {
//! use qa_core::engine::{Engine, RunOptions};
//! let plan = qa_core::plan::load_file("plan.yaml".as_ref()).unwrap();
//! let engine = Engine::new().provisioner(p).connector(c);
//! let run = engine.prepare(&plan, RunOptions::new("results")).await.unwrap();
//! let summary = run.execute().await.unwrap();
//! println!("{} -> exit {}", summary.run_dir.display(), summary.exit_code);
//! # }
//! ```

mod artefacts;
mod builder;
mod cleanup;
mod context;
mod error;
mod layout;
mod republish;
mod run;
mod run_lock;
mod setup;
mod stages;

pub use builder::{
    Engine, PublisherFactory, ReportHook, ReservationKeepalive, StepContext, StepOutcome, StepType,
    TEARDOWN_MARGIN,
};
pub use cleanup::{CleanupObserver, CleanupProgress, CleanupReport, JanitorReport, SweepReport};
pub use context::{DEFAULT_BUDGET, DEFAULT_STEP_TIMEOUT, READY_DEADLINE};
pub use error::{EngineError, SetupError, SetupProblem, SetupProblemKind};
pub use layout::file_name_of;
pub use run::{PreparedRun, RunSummary};
pub use run_lock::{LOCK_FILE, LockHolder};
pub use setup::{RunOptions, UNKNOWN_USER};
