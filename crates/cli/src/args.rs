//! The command line as clap parses it: global options, the subcommands and their `--help` text.
//! Nothing here acts: the `commands` module runs what was parsed.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use qa_core::exit;

const AFTER_HELP: &str = "\
Examples:
  qa-run run examples/plans/local-smoke.yaml      run a plan; results in results/<run-id>/
  qa-run plan examples/plans/local-smoke.yaml     show the task graph, touch nothing
  qa-run validate plans/*.yaml                    check plans, report every problem
  qa-run resume results/<run-id>                  continue a run; steps that passed on a machine
                                                  that still exists are not re-run
  qa-run cleanup results/<run-id>                 destroy what a killed run left behind
  qa-run report results                           rebuild the results site from every run

Environment:
  QA_RUN_LOG                  log filter for -v output (e.g. `qa_remote=debug`)
  QA_RUN_LEASE_DIR            where static-host leases are kept (default ~/.cache/qa-run/leases)
  QA_RUN_SSH_BOOT_ID_PATH     file read for a machine's boot id (default /proc/sys/kernel/random/boot_id)
  QA_RUN_SSH_REBOOT_COMMAND   command a `reboot: true` step runs (default: reboot, with sudo -n if not root)
  AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...  the usual AWS configuration (aws builds)
  QA_RUN_AWS_SSH_ADDRESS      reach EC2 machines' SSH at HOST:PORT instead of their own address,
                              for all (`HOST:PORT`) or some (`NAME=HOST:PORT,...`); for port
                              forwards, tunnels and emulators
  QA_RUN_AWS_PRICES           JSON file of EC2 prices laid over the built-in table
  GOOGLE_APPLICATION_CREDENTIALS, GOOGLE_CLOUD_PROJECT, ...  the usual Google configuration
                              (Application Default Credentials; gce builds)
  QA_RUN_GCE_ENDPOINT         reach Compute Engine at this URL instead of Google's (emulators,
                              private endpoints)
  QA_RUN_GCE_SSH_ADDRESS      as QA_RUN_AWS_SSH_ADDRESS, for GCE machines
  QA_RUN_GCE_PRICES           JSON file of Compute Engine prices laid over the built-in table

";

/// qa-run: runs test plans on machines it gets for you, and always cleans up.
#[derive(Debug, Parser)]
#[command(name = "qa-run", version, about, long_about = None, after_help = format!("{AFTER_HELP}{}", exit::EXIT_CODES_HELP))]
pub struct Cli {
    /// Directory that holds one directory per run.
    #[arg(long, global = true, default_value = "results", value_name = "DIR")]
    pub results: PathBuf,
    /// Write events as JSON lines to stdout instead of progress on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// known_hosts file for checking SSH host keys (repeatable; default ~/.ssh/known_hosts and
    /// /etc/ssh/ssh_known_hosts). Machines qa-run creates use a run-local file instead.
    #[arg(long, global = true, value_name = "FILE")]
    pub known_hosts: Vec<PathBuf>,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plan: provision, upload, run the steps, collect, publish, tear down.
    #[command(
        after_help = "The run directory is printed at the start and the end; open its report.json, junit.xml, logs/ and casts/.

Cost: report.json (and junit.xml, the site, the markdown summary) carries an estimate of what the
run's cloud machines cost, priced from a built-in table of list prices (EC2 in us-east-1, Compute
Engine in us-central1).
  QA_RUN_AWS_PRICES=FILE   a JSON price table laid over the built-in one for EC2 machines, e.g.
                           {\"on-demand-hourly\": {\"r5.large\": 0.133}, \"spot-fraction\": 0.4,
                            \"volume-gb-month\": {\"gp3\": 0.088}}
                           (keys: on-demand-hourly, spot-hourly, spot-fraction, volume-gb-month;
                           see docs/plan.md). A file that cannot be read or parsed stops the run.
  QA_RUN_GCE_PRICES=FILE   the same for Compute Engine machines (machine types, disk types)."
    )]
    Run {
        /// The plan file (YAML).
        plan: PathBuf,
        /// Use this run id instead of a generated one: letters, digits, `.`, `_` and `-`, not
        /// the id of an existing run.
        #[arg(long)]
        run_id: Option<String>,
        /// Tag resources with this test id (default: the run id).
        #[arg(long)]
        test_id: Option<String>,
        /// Steps at once, from 1 to 1024 (default: the plan's `concurrency`, else 16). Machines
        /// are provisioned, connected and cleaned up all at once, whatever this says.
        #[arg(long, value_parser = parse_concurrency)]
        concurrency: Option<usize>,
    },
    /// Expand a plan into its task graph and write the rendered artefacts, without touching anything.
    Plan {
        /// The plan file.
        plan: PathBuf,
        /// How to print the graph.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Check plan files and report every problem in each.
    Validate {
        /// Plan files.
        #[arg(required = true)]
        plans: Vec<PathBuf>,
    },
    /// Destroy everything a run created, from its journal (works after a crash).
    #[command(
        after_help = "With RUN_DIR, what the run's journal lists is destroyed and its \
reservations cancelled, and every cloud it used is also swept by the run's test id tag in every \
region the journal names (a crash inside a create can leave something the journal knows only as \
an intent). Kept machines go too. With --test-id alone, for a run whose directory is lost, \
resources are found by tag only.

Examples:
  qa-run cleanup results/btrfsqa-20261123T101500Z-1a2b
  qa-run cleanup --test-id btrfsqa-20261123T101500Z-1a2b --aws
  qa-run cleanup --test-id btrfsqa-20261123T101500Z-1a2b --gce
  qa-run cleanup --test-id btrfsqa-20261123T101500Z-1a2b --all-regions

Exit codes: 0 nothing is left, 2 bad usage or cloud settings, 3 a cloud could not be reached, \
4 something could not be removed (listed on stderr)."
    )]
    Cleanup {
        /// The run directory (results/<run-id>).
        run_dir: Option<PathBuf>,
        /// Also sweep resources tagged with this test id (when the journal is lost).
        #[arg(long)]
        test_id: Option<String>,
        /// With --test-id: sweep and cancel in every region, not only the configured one
        /// (implies every cloud of the build).
        #[arg(long)]
        all_regions: bool,
        /// With --test-id: also sweep AWS (credentials from the usual AWS configuration).
        #[arg(long)]
        aws: bool,
        /// With --test-id: also sweep Compute Engine, every zone of the configured project
        /// (credentials from Application Default Credentials).
        #[arg(long)]
        gce: bool,
    },
    /// Continue a run from its journal; steps that passed are not run again.
    Resume {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Rebuild the results site from every run's report.json under a results directory.
    Report {
        /// The results directory (default: --results).
        results_dir: Option<PathBuf>,
        /// Where to write the site (default: <results>/site).
        #[arg(long)]
        site: Option<PathBuf>,
    },
    /// Publish a finished run to the plan's `publish:` targets again.
    Publish {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// List cloud resources qa-run made that outlived their keep-until tag; remove them with --yes.
    #[command(
        after_help = "Credentials and region come from the usual AWS configuration \
(AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, …). Without --yes nothing is removed."
    )]
    Janitor {
        /// Only resources whose keep-until passed at least this long ago (e.g. 14h).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        older_than: std::time::Duration,
        /// Remove what is listed (default: list only).
        #[arg(long)]
        yes: bool,
        /// Look in every region, not only the configured one.
        #[arg(long)]
        all_regions: bool,
    },
}

/// Reads a `--older-than` value in the plans' duration syntax (`90s`, `14h`, `2d`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    qa_core::plan::PlanDuration::parse(s).map(|d| d.get())
}

/// Reads `--concurrency`, in the range a plan's `concurrency` has.
fn parse_concurrency(s: &str) -> Result<usize, String> {
    let max = qa_core::plan::MAX_CONCURRENCY;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {max}")),
    }
}

/// Formats of `qa-run plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// One task a line with its dependencies.
    Text,
    /// Graphviz dot.
    Dot,
    /// JSON.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `--concurrency 0` was accepted, though a plan's `concurrency: 0` is refused.
    #[test]
    fn concurrency_has_the_range_of_the_plans() {
        let parse = |n: &str| {
            Cli::try_parse_from(["qa-run", "run", "p.yaml", &format!("--concurrency={n}")])
        };
        for bad in ["0", "1025", "-1", "many"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("expected a whole number from 1 to 1024"),
                "{bad}: {e}"
            );
        }
        for ok in ["1", "1024"] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
    }
}
