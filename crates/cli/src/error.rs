//! Everything that can stop a command, as one [`CliError`] type. Its [`CliError::exit_code`] is
//! the only place that chooses an exit code for a failure (the codes themselves are the
//! documented constants of [`qa_core::exit`]), and [`CliError::print`] the only place that shows
//! one. A command that finishes its job returns an exit code instead: 0, or for `run` and
//! `resume` the code of the run's outcome.

use std::path::PathBuf;

use qa_core::engine::EngineError;
use qa_core::exit;
use qa_core::plan::PlanError;

use crate::clouds::CloudError;
use crate::inventory::InventoryError;
use crate::terminal::safe_lines;

/// Why a command stopped or did not do all of its job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The plan file is wrong.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// An inventory host's OpenSSH config cannot be used.
    #[error("{}: {source}", plan.display())]
    Inventory {
        /// The plan file.
        plan: PathBuf,
        /// The host and what is wrong with its config.
        #[source]
        source: InventoryError,
    },
    /// The engine refused the plan or the run failed outside its steps.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A cloud backend could not be added: its settings are wrong, it is not built in, or the
    /// cloud could not be reached.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// A path on the command line is not what the command needs: a run directory without a
    /// journal, a results directory that is a file.
    #[error("{}: {problem}", path.display())]
    BadPath {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it and what to give instead.
        problem: String,
    },
    /// `qa-run cleanup` was given nothing to clean up.
    #[error("give a run directory, --test-id ID, or both")]
    NothingToCleanUp,
    /// A run's report.json cannot be read (`qa-run publish`).
    #[error(transparent)]
    Report(qa_core::PublishError),
    /// The plan of a run to publish again has no `publish:` targets.
    #[error("plan {} has no `publish:` targets", plan.display())]
    NoPublishTargets {
        /// The plan file.
        plan: PathBuf,
    },
    /// The results site could not be rebuilt.
    #[error(transparent)]
    Site(qa_core::PublishError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A second interrupt stopped the run without waiting for teardown; the journal says
    /// `aborted`, and `qa-run cleanup` removes what is left.
    #[error("teardown may be incomplete; run `qa-run cleanup {}`", run_dir.display())]
    Aborted {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Some of the plans given to `qa-run validate` have problems (each was printed).
    #[error("{count} plan(s) have problems")]
    InvalidPlans {
        /// How many.
        count: usize,
    },
    /// Some publish targets failed (each was printed).
    #[error("{failed} publish target(s) failed")]
    PublishIncomplete {
        /// How many.
        failed: usize,
    },
    /// Cleanup could not remove everything (each thing left was printed).
    #[error("{remaining} thing(s) could not be removed")]
    CleanupIncomplete {
        /// How many.
        remaining: usize,
    },
    /// Some regions could not be searched (each was printed).
    #[error("{failed} region(s) could not be searched")]
    ListingIncomplete {
        /// How many.
        failed: usize,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Plan(_)
            | CliError::Inventory { .. }
            | CliError::NothingToCleanUp
            | CliError::BadPath { .. }
            | CliError::Report(_)
            | CliError::NoPublishTargets { .. }
            | CliError::InvalidPlans { .. }
            | CliError::Engine(
                EngineError::Plan(_)
                | EngineError::Setup(_)
                | EngineError::Republish(_)
                | EngineError::OnlyPlanned { .. }
                | EngineError::RunId(_)
                | EngineError::RunExists { .. }
                | EngineError::RunInUse { .. }
                | EngineError::NotARunDir { .. },
            )
            | CliError::Cloud(
                CloudError::Setting { .. }
                | CloudError::PriceFile { .. }
                | CloudError::NotBuiltIn { .. },
            ) => exit::BAD_PLAN_OR_USAGE,
            CliError::Engine(EngineError::Journal(_) | EngineError::Io { .. })
            | CliError::Cloud(CloudError::Provisioner(_) | CloudError::Reservations(_))
            | CliError::Site(_)
            | CliError::Runtime(_)
            | CliError::PublishIncomplete { .. }
            | CliError::ListingIncomplete { .. } => exit::INFRASTRUCTURE_ERROR,
            // An engine error added later counts as infrastructure until it is mapped above.
            CliError::Engine(_) => exit::INFRASTRUCTURE_ERROR,
            CliError::CleanupIncomplete { .. } => exit::CLEANUP_INCOMPLETE,
            CliError::Aborted { .. } => exit::INTERRUPTED,
        }
    }

    /// Writes the error to stderr: `error: …`, `aborted: …` for an abort, and nothing more for
    /// the failures a command printed one by one as they happened.
    pub fn print(&self) {
        match self {
            CliError::InvalidPlans { .. }
            | CliError::PublishIncomplete { .. }
            | CliError::CleanupIncomplete { .. }
            | CliError::ListingIncomplete { .. } => {}
            CliError::Aborted { .. } => eprintln!("aborted: {}", safe_lines(&self.to_string())),
            _ => eprintln!("error: {}", safe_lines(self.to_string().trim_end())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_errors_exit_2_for_bad_configuration_and_3_for_the_cloud() {
        let config = CliError::from(CloudError::Setting {
            variable: "QA_RUN_AWS_SSH_ADDRESS",
            source: "bad".into(),
        });
        assert_eq!(config.exit_code(), exit::BAD_PLAN_OR_USAGE);
        assert_eq!(config.to_string(), "QA_RUN_AWS_SSH_ADDRESS: bad");
        let cloud = CliError::from(CloudError::Provisioner(qa_core::ProvisionError::new(
            qa_core::BackendName::new("aws"),
            None,
            "no credentials",
            qa_core::Leftovers::Clear,
        )));
        assert_eq!(cloud.exit_code(), exit::INFRASTRUCTURE_ERROR);
        assert!(cloud.to_string().contains("no credentials"), "{cloud}");
        let absent = CliError::from(CloudError::NotBuiltIn {
            needed_by: "the janitor looks at cloud resources",
        });
        assert_eq!(absent.exit_code(), exit::BAD_PLAN_OR_USAGE);
        assert!(
            absent
                .to_string()
                .contains("rebuild with the `aws` or `gce` feature")
        );
    }

    #[test]
    fn failures_printed_one_by_one_keep_their_own_exit_codes() {
        assert_eq!(
            CliError::InvalidPlans { count: 1 }.exit_code(),
            exit::BAD_PLAN_OR_USAGE
        );
        assert_eq!(
            CliError::PublishIncomplete { failed: 1 }.exit_code(),
            exit::INFRASTRUCTURE_ERROR
        );
        assert_eq!(
            CliError::ListingIncomplete { failed: 1 }.exit_code(),
            exit::INFRASTRUCTURE_ERROR
        );
        assert_eq!(
            CliError::CleanupIncomplete { remaining: 1 }.exit_code(),
            exit::CLEANUP_INCOMPLETE
        );
        let aborted = CliError::Aborted {
            run_dir: "results/r1".into(),
        };
        assert_eq!(aborted.exit_code(), exit::INTERRUPTED);
        assert_eq!(
            aborted.to_string(),
            "teardown may be incomplete; run `qa-run cleanup results/r1`"
        );
    }
}
