//! Why a run could not start or finish.

use crate::exit;
use crate::journal::JournalError;
use crate::plan::PlanError;

/// An engine failure that stops a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The plan is wrong.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The plan cannot run with what this engine has (a backend not compiled in, a secret
    /// missing from the environment, an unknown step type).
    #[error("{0}")]
    Setup(String),
    /// The journal could not be written or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The results directory could not be written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// The exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Plan(_) | EngineError::Setup(_) => exit::BAD_PLAN_OR_USAGE,
            EngineError::Journal(_) | EngineError::Io { .. } => exit::INFRASTRUCTURE_ERROR,
        }
    }
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Io { context, source }
}
