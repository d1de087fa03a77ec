//! Why a run could not start or finish.

use std::fmt;
use std::path::PathBuf;

use crate::backend::BackendName;
use crate::exit;
use crate::journal::JournalError;
use crate::plan::PlanError;
use crate::types::RunIdError;

use super::run_lock::LockHolder;

/// An engine failure that stops a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The plan is wrong.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The plan cannot run with what this engine has (a backend not compiled in, a secret not
    /// given, an unknown step type): every problem, each with its place in the plan.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A finished run cannot be published again (no report, no targets, no publisher).
    #[error("{0}")]
    Republish(String),
    /// The run id given cannot name a run directory.
    #[error(transparent)]
    RunId(#[from] RunIdError),
    /// The run id given is taken: its directory exists, so a run with it would overwrite
    /// another's results.
    #[error(
        "run id `{run_id}` is taken: {} already exists; choose another run id, or continue that run with `qa-run resume {}`",
        run_dir.display(),
        run_dir.display()
    )]
    RunExists {
        /// The run id.
        run_id: String,
        /// Its directory.
        run_dir: PathBuf,
    },
    /// Another process works in the run directory (a run or resume, for as long as it lives; a
    /// cleanup; a publish): nothing was done.
    #[error(
        "cannot {wanted} {}: it is in use by {}; wait for it to end{}, then try again",
        run_dir.display(),
        holder.as_ref().map_or_else(|| "another process (it has not written its name yet)".to_string(), |h| h.to_string()),
        holder.as_ref().map(|h| format!(" or stop it (`kill -INT {}` on {})", h.pid, h.host)).unwrap_or_default()
    )]
    RunInUse {
        /// The run directory.
        run_dir: PathBuf,
        /// What was refused: `resume`, `clean up`, `publish`, …
        wanted: &'static str,
        /// Who holds its lock, if it has said so yet.
        holder: Option<Box<LockHolder>>,
    },
    /// A path given as a run directory is not one.
    #[error(
        "{} is not a run directory (it has neither state.json nor report.json); give a directory that qa-run made under its results directory",
        path.display()
    )]
    NotARunDir {
        /// The path given.
        path: PathBuf,
    },
    /// The journal could not be written or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The run directory was only planned (`qa-run plan`): there is no run to resume.
    #[error(
        "{} was only planned (`qa-run plan`), never run: there is nothing to resume; start a run with `qa-run run {plan}`",
        run_dir.display()
    )]
    OnlyPlanned {
        /// The run directory.
        run_dir: PathBuf,
        /// The plan file its journal names.
        plan: String,
    },
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
            EngineError::Plan(_)
            | EngineError::Setup(_)
            | EngineError::Republish(_)
            | EngineError::OnlyPlanned { .. }
            | EngineError::RunId(_)
            | EngineError::RunExists { .. }
            | EngineError::RunInUse { .. }
            | EngineError::NotARunDir { .. } => exit::BAD_PLAN_OR_USAGE,
            EngineError::Journal(_) | EngineError::Io { .. } => exit::INFRASTRUCTURE_ERROR,
        }
    }
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Io { context, source }
}

/// Why a plan cannot run with an engine: every problem found, in plan order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct SetupError {
    /// The plan file (or the label of a plan built in code).
    pub plan: PathBuf,
    /// What is missing, in plan order.
    pub problems: Vec<SetupProblem>,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: cannot run this plan:", self.plan.display())?;
        for p in &self.problems {
            write!(f, "\n  - ")?;
            match (p.line, p.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: ", self.plan.display())?,
                _ => {
                    if let Some(k) = &p.key_path {
                        write!(f, "{k}: ")?;
                    }
                }
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

/// One thing a plan needs that the engine does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetupProblem {
    /// What kind of problem.
    pub kind: SetupProblemKind,
    /// Where in the plan, as a key path (`steps[2].uses`); `None` when it is not about one place.
    pub key_path: Option<String>,
    /// 1-based line of that place in the plan file, when the plan came from a file.
    pub line: Option<u64>,
    /// 1-based column of that place.
    pub column: Option<u64>,
    /// What is wrong and what to do, for people.
    pub message: String,
}

impl SetupProblem {
    pub(crate) fn new(
        kind: SetupProblemKind,
        key_path: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        SetupProblem {
            kind,
            key_path,
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for SetupProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(k) = &self.key_path {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The kinds of [`SetupProblem`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupProblemKind {
    /// A machine's backend is known but was left out of this build.
    BackendNotBuilt {
        /// The backend.
        backend: BackendName,
        /// The cargo feature that builds it in.
        feature: String,
    },
    /// A machine's backend is registered without a provisioner.
    NoProvisioner {
        /// The backend.
        backend: BackendName,
    },
    /// A step uses a step type that is not registered.
    UnknownStepType {
        /// The step type's name.
        name: String,
    },
    /// The engine has no connector to reach machines.
    NoConnector,
    /// The plan publishes results, and the engine has no publisher factory.
    NoPublisherFactory,
    /// A secret the plan declares was not given.
    SecretMissing {
        /// The secret's name.
        name: String,
    },
    /// A secret's value cannot be masked safely (too short, empty, white space at an end).
    SecretUnsafe {
        /// The secret's name.
        name: String,
    },
    /// The plan's task graph cannot be built.
    Graph,
}
