//! The `qa-run` command line: argument parsing, wiring of the linked backends into an
//! [`Engine`], progress output, signal handling and the mapping of every outcome to a documented
//! exit code ([`qa_core::exit`]). `main.rs` only calls [`main`], so tests can drive the same code.
#![warn(missing_docs)]
// The doc comments of arguments are their `--help` text, where `<run-id>` is a placeholder.
#![allow(rustdoc::invalid_html_tags)]

mod progress;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use qa_core::dag::RunCancel;
use qa_core::engine::{Engine, PreparedRun, RunOptions};
use qa_core::events::EventSink;
use qa_core::exit;
use qa_core::journal::RunStatus;
use qa_core::{Access, Connector, Machine, RemoteError, RemoteExecutor, RunId, TestId};

const AFTER_HELP: &str = "\
Examples:
  qa-run run examples/plans/local-smoke.yaml      run a plan; results in results/<run-id>/
  qa-run plan examples/plans/local-smoke.yaml     show the task graph, touch nothing
  qa-run validate plans/*.yaml                    check plans, report every problem
  qa-run resume results/<run-id>                  continue a run; passed steps are not re-run
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
run's EC2 machines cost, priced from a built-in table of us-east-1 on-demand prices.
  QA_RUN_AWS_PRICES=FILE   a JSON price table laid over the built-in one, e.g.
                           {\"on-demand-hourly\": {\"r5.large\": 0.133}, \"spot-fraction\": 0.4,
                            \"volume-gb-month\": {\"gp3\": 0.088}}
                           (keys: on-demand-hourly, spot-hourly, spot-fraction, volume-gb-month;
                           see docs/plan.md). A file that cannot be read or parsed stops the run."
    )]
    Run {
        /// The plan file (YAML).
        plan: PathBuf,
        /// Use this run id instead of a generated one.
        #[arg(long)]
        run_id: Option<String>,
        /// Tag resources with this test id (default: the run id).
        #[arg(long)]
        test_id: Option<String>,
        /// Tasks at once (default: the plan's `concurrency`, else 16).
        #[arg(long)]
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
        /// (implies --aws).
        #[arg(long)]
        all_regions: bool,
        /// With --test-id: also sweep AWS (credentials from the usual AWS configuration).
        #[arg(long)]
        aws: bool,
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

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    qa_core::plan::PlanDuration::parse(s).map(|d| d.get())
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

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::BAD_PLAN_OR_USAGE
            } else {
                exit::ALL_PASSED
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    init_tracing(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INFRASTRUCTURE_ERROR as u8);
        }
    };
    let code = rt.block_on(dispatch(cli));
    ExitCode::from(code as u8)
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QA_RUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one parsed command and returns its exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run {
            ref plan,
            ref run_id,
            ref test_id,
            concurrency,
        } => {
            let loaded = match qa_core::plan::load_file_with(plan, &qa_cloud::backends()) {
                Ok(l) => l,
                Err(e) => return fail(&e.to_string(), exit::BAD_PLAN_OR_USAGE),
            };
            let inventory = match resolve_inventory(&loaded.plan.inventory, &loaded.base_dir) {
                Ok(i) => i,
                Err(e) => {
                    return fail(
                        &format!("{}: {e}", loaded.path.display()),
                        exit::BAD_PLAN_OR_USAGE,
                    );
                }
            };
            let sink = progress::sink(cli.json);
            let engine = default_engine(
                &EngineSettings::from_cli(&cli, &cli.results, inventory),
                sink.clone(),
            );
            let engine = match with_clouds(engine, &clouds_of_plan(&loaded.plan)).await {
                Ok(e) => e,
                Err(e) => return fail(e.message(), e.exit_code()),
            };
            let cancel = RunCancel::new();
            let mut opts = RunOptions::new(&cli.results);
            opts.run_id = run_id.clone().map(RunId);
            opts.test_id = test_id.clone().map(TestId);
            opts.concurrency = concurrency;
            opts.cancel = cancel.clone();
            match engine.prepare(&loaded, opts).await {
                Ok(run) => execute(run, cancel, sink, cli.json).await,
                Err(e) => fail(&e.to_string(), e.exit_code()),
            }
        }
        Command::Resume { ref run_dir } => {
            let sink = progress::sink(cli.json);
            let results = run_dir.parent().unwrap_or(Path::new("."));
            let inventory = plan_inventory_of(run_dir);
            let engine = default_engine(
                &EngineSettings::from_cli(&cli, results, inventory),
                sink.clone(),
            );
            let engine = match with_clouds(engine, &clouds_of_run(run_dir)).await {
                Ok(e) => e,
                Err(e) => return fail(e.message(), e.exit_code()),
            };
            let cancel = RunCancel::new();
            let mut opts = RunOptions::new(results);
            opts.cancel = cancel.clone();
            match engine.prepare_resume(run_dir, opts).await {
                Ok(run) => execute(run, cancel, sink, cli.json).await,
                Err(e) => fail(&e.to_string(), e.exit_code()),
            }
        }
        Command::Plan { ref plan, format } => {
            let loaded = match qa_core::plan::load_file_with(plan, &qa_cloud::backends()) {
                Ok(l) => l,
                Err(e) => return fail(&e.to_string(), exit::BAD_PLAN_OR_USAGE),
            };
            let engine = default_engine(
                &EngineSettings::from_cli(&cli, &cli.results, loaded.plan.inventory.clone()),
                Arc::new(qa_core::events::NoEvents),
            );
            match engine
                .plan_only(&loaded, RunOptions::new(&cli.results))
                .await
            {
                Ok((run_dir, graph)) => {
                    let out = match format {
                        GraphFormat::Text => qa_core::stages::render_text(&graph),
                        GraphFormat::Dot => graph.to_dot(),
                        GraphFormat::Json => {
                            serde_json::to_string_pretty(&qa_core::stages::render_json(&graph))
                                .unwrap_or_default()
                                + "\n"
                        }
                    };
                    print_stdout(&out);
                    eprintln!(
                        "{} tasks; state and rendered artefacts in {}",
                        graph.len(),
                        run_dir.display()
                    );
                    exit::ALL_PASSED
                }
                Err(e) => fail(&e.to_string(), e.exit_code()),
            }
        }
        Command::Validate { ref plans } => {
            let mut code = exit::ALL_PASSED;
            for p in plans {
                match qa_core::plan::load_file_with(p, &qa_cloud::backends()) {
                    Ok(l) => match qa_core::stages::build_graph(&l, &qa_cloud::backends()) {
                        Ok(g) => print_stdout(&format!(
                            "ok: {} ({} machine(s), {} step(s), {} tasks)\n",
                            p.display(),
                            qa_core::stages::machine_instances(&l.plan).len(),
                            l.plan.steps.len(),
                            g.len()
                        )),
                        Err(e) => {
                            eprintln!("{}: {e}", p.display());
                            code = exit::BAD_PLAN_OR_USAGE;
                        }
                    },
                    Err(e) => {
                        eprint!("{e}");
                        code = exit::BAD_PLAN_OR_USAGE;
                    }
                }
            }
            code
        }
        Command::Cleanup {
            ref run_dir,
            ref test_id,
            all_regions,
            aws,
        } => {
            let inventory = run_dir
                .as_deref()
                .map(plan_inventory_of)
                .unwrap_or_default();
            let settings = EngineSettings::from_cli(&cli, &cli.results, inventory);
            cleanup(
                &settings,
                run_dir.as_deref(),
                test_id.as_deref(),
                all_regions,
                aws,
            )
            .await
        }
        Command::Report {
            ref results_dir,
            ref site,
        } => {
            let results = results_dir.clone().unwrap_or(cli.results.clone());
            let site = site.clone().unwrap_or_else(|| results.join("site"));
            match qa_publish::site::rebuild(&results, &site) {
                Ok(summary) => {
                    eprintln!("site rebuilt in {} ({summary:?})", site.display());
                    print_stdout(&format!("{}\n", site.join("index.html").display()));
                    exit::ALL_PASSED
                }
                Err(e) => fail(&e.to_string(), exit::INFRASTRUCTURE_ERROR),
            }
        }
        Command::Publish { ref run_dir } => publish_again(run_dir).await,
        Command::Janitor {
            older_than,
            yes,
            all_regions,
        } => janitor(older_than, yes, all_regions).await,
    }
}

fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`qa-run plan x | head`) is not an error.
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn fail(message: &str, code: i32) -> i32 {
    let m = message.trim_end();
    eprintln!("error: {m}");
    code
}

/// What the engine needs from the command line and the plan.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// Parent of run directories (local sandboxes are swept below it).
    pub results: PathBuf,
    /// Hosts of the plan's `inventory:` (empty for commands without a plan).
    pub inventory: Vec<qa_core::plan::InventoryHost>,
    /// known_hosts files for strict host-key checking.
    pub known_hosts: Vec<PathBuf>,
}

impl EngineSettings {
    fn from_cli(cli: &Cli, results: &Path, inventory: Vec<qa_core::plan::InventoryHost>) -> Self {
        EngineSettings {
            results: results.to_path_buf(),
            inventory,
            known_hosts: cli.known_hosts.clone(),
        }
    }
}

/// Directory of static-host leases: `$QA_RUN_LEASE_DIR`, else `~/.cache/qa-run/leases`.
pub fn lease_dir() -> PathBuf {
    std::env::var_os("QA_RUN_LEASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(qa_provision::static_hosts::StaticProvisioner::default_lease_dir)
}

/// The engine with every backend this build links: local sandboxes, static hosts over SSH, and
/// the publishers.
pub fn default_engine(settings: &EngineSettings, events: Arc<dyn EventSink>) -> Engine {
    let factory: qa_core::engine::PublisherFactory = Arc::new(|t, base, redactor| {
        Ok(qa_publish::from_target_with_redactor(
            t,
            base,
            redactor.clone(),
        ))
    });
    let mut ssh_options = qa_remote::ssh::SshOptions {
        known_hosts: settings.known_hosts.clone(),
        ..Default::default()
    };
    if let Some(path) = env_nonempty("QA_RUN_SSH_BOOT_ID_PATH") {
        ssh_options.boot_id_path = path;
    }
    if let Some(cmd) = env_nonempty("QA_RUN_SSH_REBOOT_COMMAND") {
        ssh_options.reboot_command = cmd;
    }
    let connector = Arc::new(AccessConnector {
        local: qa_remote::local::LocalConnector::new(),
        ssh: qa_remote::ssh::SshConnector::new(ssh_options),
    });
    let static_hosts =
        qa_provision::static_hosts::StaticProvisioner::new(settings.inventory.clone(), lease_dir())
            .with_connector(connector.clone());
    Engine::new()
        .backends(qa_cloud::backends())
        .provisioner(Arc::new(
            qa_provision::local::LocalProvisioner::new().with_sweep_root(&settings.results),
        ))
        .provisioner(Arc::new(static_hosts))
        .connector(connector)
        .publisher_factory(factory)
        .report_hook(Arc::new(|report, run_dir, redactor| {
            std::fs::write(
                run_dir.join("junit.xml"),
                qa_publish::junit::render_with(report, redactor),
            )
        }))
        .events(events)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Parses `QA_RUN_AWS_SSH_ADDRESS`: `HOST:PORT` (every machine, stored under `*`) or
/// `NAME=HOST:PORT,...`.
pub fn parse_ssh_address_overrides(
    value: &str,
) -> Result<std::collections::BTreeMap<String, std::net::SocketAddr>, String> {
    let mut out = std::collections::BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, addr) = match part.split_once('=') {
            Some((n, a)) => (n.trim(), a.trim()),
            None => ("*", part),
        };
        let parsed = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                format!(
                    "QA_RUN_AWS_SSH_ADDRESS: `{addr}` is not HOST:PORT (expected `HOST:PORT` or `NAME=HOST:PORT,...`)"
                )
            })?;
        if name.is_empty() {
            return Err(format!(
                "QA_RUN_AWS_SSH_ADDRESS: `{part}` has no machine name before `=`"
            ));
        }
        out.insert(name.to_string(), parsed);
    }
    Ok(out)
}

/// Picks the executor by how a machine is reached.
#[derive(Debug)]
pub struct AccessConnector {
    local: qa_remote::local::LocalConnector,
    ssh: qa_remote::ssh::SshConnector,
}

#[async_trait::async_trait]
impl Connector for AccessConnector {
    async fn connect(&self, machine: &Machine) -> Result<Arc<dyn RemoteExecutor>, RemoteError> {
        match &machine.access {
            Access::Local { .. } => self.local.connect(machine).await,
            Access::Ssh(_) => self.ssh.connect(machine).await,
        }
    }
}

async fn execute(
    run: PreparedRun,
    cancel: RunCancel,
    sink: Arc<progress::Progress>,
    json: bool,
) -> i32 {
    sink.set_total(run.graph().len());
    if !json {
        sink.message(&format!("run directory: {}", run.run_dir.display()));
    }
    let journal = run.journal.clone();
    let signals = tokio::spawn(watch_signals(cancel.clone(), journal, sink.clone()));
    let result = run.execute().await;
    signals.abort();
    sink.finish();
    match result {
        Ok(summary) => {
            if !json {
                let counts: Vec<String> = summary
                    .report
                    .counts
                    .iter()
                    .map(|(v, n)| format!("{n} {v}"))
                    .collect();
                eprintln!(
                    "{}: {} in {:.1}s ({})",
                    summary.report.plan_name,
                    summary.report.outcome,
                    summary.report.duration_ms as f64 / 1000.0,
                    counts.join(", ")
                );
                for s in summary
                    .report
                    .steps
                    .iter()
                    .filter(|s| s.verdict != qa_core::Verdict::Pass)
                {
                    eprintln!(
                        "  {:<11} {}@{}: {}",
                        s.verdict.as_str(),
                        s.step,
                        s.machine,
                        s.message.as_deref().unwrap_or("")
                    );
                }
                for t in &summary.report.infrastructure {
                    eprintln!(
                        "  {:<11} {}: {}",
                        t.verdict.as_str(),
                        t.task,
                        t.message.as_deref().unwrap_or("")
                    );
                }
                for f in &summary.cleanup_failures {
                    eprintln!("  cleanup incomplete: {f}");
                }
                if let Some(f) = &summary.publish_failure {
                    eprintln!("  publishing failed: {f}");
                }
                eprintln!(
                    "results: {}  (report.json, junit.xml, logs/, casts/)",
                    summary.run_dir.display()
                );
            }
            summary.exit_code
        }
        Err(e) => fail(&e.to_string(), e.exit_code()),
    }
}

async fn watch_signals(
    cancel: RunCancel,
    journal: Arc<qa_core::journal::RunJournal>,
    sink: Arc<progress::Progress>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    sink.message(
        "interrupted: stopping running steps, then tearing down (interrupt again to exit at once)",
    );
    cancel.soft.cancel();
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    journal.update(|s| {
        s.status = RunStatus::Aborted;
        s.finished = Some(qa_core::now_rfc3339());
    });
    let _ = journal.flush_blocking();
    eprintln!(
        "aborted: teardown may be incomplete; run `qa-run cleanup {}`",
        journal
            .path()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    std::process::exit(exit::INTERRUPTED);
}

/// The name of the EC2 backend.
const AWS: qa_core::BackendName = qa_core::BackendName::new("aws");

/// Which clouds a command needs, and their region.
#[derive(Debug, Clone, Default)]
pub struct Clouds {
    /// AWS, with the region the plan names (if any).
    pub aws: Option<Option<String>>,
}

impl Clouds {
    fn all() -> Self {
        Clouds { aws: Some(None) }
    }
}

fn clouds_of_plan(plan: &qa_core::plan::Plan) -> Clouds {
    let machines = qa_core::stages::machine_instances(plan);
    let aws = machines.iter().find(|m| m.backend == AWS).map(|m| {
        plan.machines[m.spec_index]
            .options_of(AWS)
            .and_then(|a| a.get("region"))
            .and_then(|r| r.as_str())
            .map(str::to_string)
    });
    Clouds { aws }
}

fn clouds_of_run(run_dir: &Path) -> Clouds {
    let Ok(state) = qa_core::journal::read_state(&run_dir.join(qa_core::journal::JOURNAL_FILE))
    else {
        return Clouds::default();
    };
    let aws = state
        .resources
        .iter()
        .find(|r| r.backend == AWS)
        .map(|r| r.details.get("region").cloned());
    let from_plan =
        qa_core::plan::load_file_with(Path::new(&state.plan_path), &qa_cloud::backends())
            .ok()
            .map(|l| clouds_of_plan(&l.plan))
            .unwrap_or_default();
    Clouds {
        aws: aws.or(from_plan.aws),
    }
}

/// Why [`with_clouds`] could not add a cloud backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudError {
    /// The user's configuration is wrong (`QA_RUN_AWS_SSH_ADDRESS`, `QA_RUN_AWS_PRICES`);
    /// nothing was asked of the cloud.
    Config(String),
    /// The cloud could not be reached or set up.
    Infrastructure(String),
}

impl CloudError {
    /// The exit code: [`exit::BAD_PLAN_OR_USAGE`] for bad configuration,
    /// [`exit::INFRASTRUCTURE_ERROR`] otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CloudError::Config(_) => exit::BAD_PLAN_OR_USAGE,
            CloudError::Infrastructure(_) => exit::INFRASTRUCTURE_ERROR,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            CloudError::Config(m) | CloudError::Infrastructure(m) => m,
        }
    }
}

impl std::fmt::Display for CloudError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CloudError {}

/// What the AWS backends take from the environment, checked before the cloud is asked anything.
#[cfg(feature = "aws")]
#[derive(Debug)]
pub struct AwsSettings {
    /// From `QA_RUN_AWS_SSH_ADDRESS`.
    pub address_overrides: std::collections::BTreeMap<String, std::net::SocketAddr>,
    /// The built-in prices with the `QA_RUN_AWS_PRICES` file laid over them.
    pub prices: qa_provision::aws::cost::PriceTable,
}

/// Parses the values of `QA_RUN_AWS_SSH_ADDRESS` and `QA_RUN_AWS_PRICES` (`None` when unset or
/// empty); what is wrong with either is a [`CloudError::Config`].
#[cfg(feature = "aws")]
pub fn aws_settings(
    ssh_address: Option<&str>,
    prices: Option<&Path>,
) -> Result<AwsSettings, CloudError> {
    let address_overrides = match ssh_address {
        Some(v) => parse_ssh_address_overrides(v).map_err(CloudError::Config)?,
        None => Default::default(),
    };
    let prices = aws_prices(prices).map_err(CloudError::Config)?;
    Ok(AwsSettings {
        address_overrides,
        prices,
    })
}

/// Adds the cloud backends a command needs, with credentials from the usual places.
#[cfg(feature = "aws")]
pub async fn with_clouds(engine: Engine, clouds: &Clouds) -> Result<Engine, CloudError> {
    let Some(region) = &clouds.aws else {
        return Ok(engine);
    };
    let settings = aws_settings(
        env_nonempty("QA_RUN_AWS_SSH_ADDRESS").as_deref(),
        aws_prices_path().as_deref(),
    )?;
    let p = qa_provision::aws::AwsProvisioner::from_env(qa_provision::aws::AwsProvisionerOptions {
        region: region.clone(),
        prices: settings.prices,
        address_overrides: settings.address_overrides,
        ..Default::default()
    })
    .await
    .map_err(|e| CloudError::Infrastructure(e.to_string()))?;
    let c = qa_capacity::aws::AwsCapacity::from_env(qa_capacity::aws::AwsCapacityOptions {
        region: region.clone(),
        ..Default::default()
    })
    .await
    .map_err(|e| CloudError::Infrastructure(e.to_string()))?;
    let p = Arc::new(p);
    let mut backends = engine.backend_registry().clone();
    backends.set_provisioner(p.clone());
    backends
        .set_reservation(Arc::new(c))
        .and_then(|b| b.set_janitor(AWS, p))
        .map_err(|e| CloudError::Infrastructure(e.to_string()))?;
    Ok(engine.backends(backends))
}

/// Without cloud features, plans that need a cloud are refused by the engine's check with the
/// feature to build.
#[cfg(not(feature = "aws"))]
pub async fn with_clouds(engine: Engine, _clouds: &Clouds) -> Result<Engine, CloudError> {
    Ok(engine)
}

/// Names a JSON file of EC2 prices laid over the built-in table (`qa-run run --help`).
#[cfg(feature = "aws")]
pub const AWS_PRICES_ENV: &str = "QA_RUN_AWS_PRICES";

/// The file [`AWS_PRICES_ENV`] names, when set and not empty.
#[cfg(feature = "aws")]
fn aws_prices_path() -> Option<PathBuf> {
    std::env::var_os(AWS_PRICES_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The built-in EC2 price table with the JSON file `path` laid over it. The error names the
/// variable and the file and says what is wrong where (line and column, unknown key).
#[cfg(feature = "aws")]
pub fn aws_prices(path: Option<&Path>) -> Result<qa_provision::aws::cost::PriceTable, String> {
    use qa_provision::aws::cost::PriceTable;
    let Some(path) = path else {
        return Ok(PriceTable::builtin());
    };
    PriceTable::load_overrides(path).map_err(|e| {
        format!(
            "{AWS_PRICES_ENV}: {e} (see `qa-run run --help`; unset {AWS_PRICES_ENV} for the built-in prices)"
        )
    })
}

#[cfg(feature = "aws")]
async fn janitor(older_than: std::time::Duration, yes: bool, all_regions: bool) -> i32 {
    let engine = default_engine(
        &EngineSettings::default(),
        Arc::new(qa_core::events::NoEvents),
    );
    let engine = match with_clouds(engine, &Clouds::all()).await {
        Ok(e) => e,
        Err(e) => return fail(e.message(), e.exit_code()),
    };
    let report = engine.janitor(older_than, all_regions, yes).await;
    let mut code = exit::ALL_PASSED;
    for e in &report.errors {
        eprintln!("error: {e}");
        code = exit::INFRASTRUCTURE_ERROR;
    }
    if report.expired.is_empty() {
        if code == exit::ALL_PASSED {
            println!("nothing has outlived its keep-until");
        }
        return code;
    }
    for (_, r) in &report.expired {
        println!(
            "{:<14} {:<16} {:<24} test-id {:<30} keep-until {}",
            r.region,
            r.kind,
            r.id,
            r.test_id.as_deref().unwrap_or("-"),
            r.keep_until
        );
    }
    if !yes {
        eprintln!(
            "{} resource(s) listed; nothing removed (add --yes to remove them)",
            report.expired.len()
        );
        return code;
    }
    for r in &report.removed {
        println!("removed {r}");
    }
    for l in &report.left {
        eprintln!("left: {l}");
        code = exit::CLEANUP_INCOMPLETE;
    }
    code
}

#[cfg(not(feature = "aws"))]
async fn janitor(_older_than: std::time::Duration, _yes: bool, _all_regions: bool) -> i32 {
    fail(
        "the janitor looks at cloud resources; this build has no cloud backend (it was built with --no-default-features; rebuild with the `aws` feature)",
        exit::BAD_PLAN_OR_USAGE,
    )
}

/// The inventory of the plan a run used, if its journal and plan can still be read.
fn plan_inventory_of(run_dir: &Path) -> Vec<qa_core::plan::InventoryHost> {
    qa_core::journal::read_state(&run_dir.join(qa_core::journal::JOURNAL_FILE))
        .ok()
        .and_then(|s| {
            qa_core::plan::load_file_with(Path::new(&s.plan_path), &qa_cloud::backends()).ok()
        })
        .map(|l| resolve_inventory(&l.plan.inventory, &l.base_dir).unwrap_or(l.plan.inventory))
        .unwrap_or_default()
}

/// Fills what inventory hosts leave unset from their OpenSSH config entry (`ssh-config:`):
/// HostName, Port, User, IdentityFile and ProxyJump, the way `ssh` would read them.
pub fn resolve_inventory(
    inventory: &[qa_core::plan::InventoryHost],
    base_dir: &Path,
) -> Result<Vec<qa_core::plan::InventoryHost>, String> {
    let mut out = Vec::with_capacity(inventory.len());
    for h in inventory {
        let mut h = h.clone();
        if let Some(file) = &h.ssh_config {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                base_dir.join(file)
            };
            let config = qa_remote::ssh::OpenSshConfig::load(&path)
                .map_err(|e| format!("inventory host `{}`: {e}", h.name))?;
            let alias = h.host.clone().unwrap_or_else(|| h.name.clone());
            let found = config
                .host(&alias)
                .map_err(|e| format!("inventory host `{}`: {e}", h.name))?;
            h.host = Some(found.host_name.unwrap_or(alias));
            h.port = h.port.or(found.port);
            h.user = h.user.or(found.user);
            if h.identity_file.is_none() {
                h.identity_file = found.identity_files.into_iter().next();
            }
            if h.proxy_jump.is_empty() {
                h.proxy_jump = found.proxy_jump;
            }
        }
        out.push(h);
    }
    Ok(out)
}

async fn cleanup(
    settings: &EngineSettings,
    run_dir: Option<&Path>,
    test_id: Option<&str>,
    all_regions: bool,
    aws: bool,
) -> i32 {
    let engine = default_engine(settings, Arc::new(qa_core::events::NoEvents));
    // A run directory asks the clouds it used; a sweep by test id only those named (--aws).
    let clouds = match (run_dir, test_id) {
        (_, Some(_)) if aws || all_regions => Clouds::all(),
        (Some(dir), _) => clouds_of_run(dir),
        (None, _) => Clouds::default(),
    };
    let engine = match with_clouds(engine, &clouds).await {
        Ok(e) => e,
        Err(e) => return fail(e.message(), e.exit_code()),
    };
    let mut remaining = 0;
    if run_dir.is_none() && test_id.is_none() {
        return fail(
            "give a run directory, --test-id ID, or both",
            exit::BAD_PLAN_OR_USAGE,
        );
    }
    if let Some(dir) = run_dir {
        match engine.cleanup(dir).await {
            Ok(r) => {
                for d in &r.destroyed {
                    println!("destroyed {d}");
                }
                for d in &r.remaining {
                    eprintln!("left: {d}");
                }
                remaining += r.remaining.len();
                if r.destroyed.is_empty() && r.remaining.is_empty() {
                    println!("nothing left to clean up in {}", dir.display());
                }
            }
            Err(e) => return fail(&e.to_string(), e.exit_code()),
        }
    }
    if let Some(id) = test_id {
        let scope = if all_regions {
            qa_core::SweepScope::AllRegions
        } else {
            qa_core::SweepScope::Configured
        };
        let swept = engine.sweep_test_id(&TestId(id.to_string()), scope).await;
        swept.swept.iter().for_each(|l| println!("swept {l}"));
        for (b, n) in &swept.cancelled {
            println!("cancelled {n} reservation(s) on {b}");
        }
        for e in &swept.remaining {
            eprintln!("left: {e}");
        }
        remaining += swept.remaining.len();
    }
    if remaining > 0 {
        exit::CLEANUP_INCOMPLETE
    } else {
        exit::ALL_PASSED
    }
}

async fn publish_again(run_dir: &Path) -> i32 {
    let engine = default_engine(
        &EngineSettings::default(),
        Arc::new(qa_core::events::NoEvents),
    );
    let published = match engine.publish_again(run_dir).await {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string(), exit::BAD_PLAN_OR_USAGE),
    };
    let mut code = exit::ALL_PASSED;
    for p in published {
        match p {
            Ok(r) => println!("published to {}: {}", r.publisher, r.location),
            Err(e) => {
                eprintln!("error: {e}");
                code = exit::INFRASTRUCTURE_ERROR;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_hosts_take_what_they_leave_unset_from_their_ssh_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ssh_config"),
            "Host lab-*\n  User qa\n  Port 2222\n  IdentityFile /keys/lab\nHost lab-1\n  HostName 10.0.0.11\n  ProxyJump ops@bastion:22\n",
        )
        .unwrap();
        let host = |name: &str| qa_core::plan::InventoryHost {
            name: name.into(),
            host: None,
            port: None,
            user: None,
            identity_file: None,
            passphrase_env: None,
            proxy_jump: vec![],
            ssh_config: Some("ssh_config".into()),
            require_commands: vec![],
            min_free_mib: None,
            repair: None,
        };
        let mut explicit = host("lab-2");
        explicit.user = Some("root".into());
        let out = resolve_inventory(&[host("lab-1"), explicit], dir.path()).unwrap();
        assert_eq!(out[0].host.as_deref(), Some("10.0.0.11"));
        assert_eq!(
            (out[0].port, out[0].user.as_deref()),
            (Some(2222), Some("qa"))
        );
        assert_eq!(
            out[0].identity_file.as_deref(),
            Some(Path::new("/keys/lab"))
        );
        assert_eq!(out[0].proxy_jump, vec!["ops@bastion:22".to_string()]);
        assert_eq!(
            out[1].host.as_deref(),
            Some("lab-2"),
            "no HostName: the alias is the address"
        );
        assert_eq!(
            out[1].user.as_deref(),
            Some("root"),
            "what the plan sets wins"
        );
        let mut missing = host("x");
        missing.ssh_config = Some("nope".into());
        assert!(
            resolve_inventory(&[missing], dir.path())
                .unwrap_err()
                .contains("inventory host `x`")
        );
    }

    #[cfg(feature = "aws")]
    #[test]
    fn a_bad_price_file_is_an_error_naming_the_variable_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = qa_provision::aws::cost::PriceTable::builtin();
        assert_eq!(aws_prices(None).unwrap(), builtin);

        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"on-demand-hourly": {"t3.micro": 1.5}}"#).unwrap();
        let table = aws_prices(Some(&good)).unwrap();
        assert_eq!(table.on_demand_hourly["t3.micro"], 1.5);
        assert_eq!(
            table.on_demand_hourly["m5.large"],
            builtin.on_demand_hourly["m5.large"]
        );

        let typo = dir.path().join("typo.json");
        std::fs::write(&typo, "{\n  \"on-demand-hourley\": {}\n}").unwrap();
        let e = aws_prices(Some(&typo)).unwrap_err();
        for part in [
            "QA_RUN_AWS_PRICES",
            "typo.json",
            "unknown field `on-demand-hourley`",
            "line 2",
        ] {
            assert!(e.contains(part), "`{part}` missing from: {e}");
        }

        let text = dir.path().join("text.json");
        std::fs::write(&text, r#"{"on-demand-hourly": {"t3.micro": "cheap"}}"#).unwrap();
        let e = aws_prices(Some(&text)).unwrap_err();
        assert!(e.contains("text.json") && e.contains("invalid type"), "{e}");

        let negative = dir.path().join("negative.json");
        std::fs::write(
            &negative,
            r#"{"volume-gb-month": {"gp3": -1}, "spot-fraction": 2}"#,
        )
        .unwrap();
        let e = aws_prices(Some(&negative)).unwrap_err();
        assert!(
            e.contains("negative.json")
                && e.contains("volume-gb-month.gp3")
                && e.contains("spot-fraction"),
            "{e}"
        );

        let e = aws_prices(Some(&dir.path().join("missing.json"))).unwrap_err();
        assert!(
            e.contains("cannot read") && e.contains("missing.json"),
            "{e}"
        );
    }

    #[test]
    fn cloud_errors_exit_2_for_bad_configuration_and_3_for_the_cloud() {
        let config = CloudError::Config("QA_RUN_AWS_SSH_ADDRESS: bad".into());
        assert_eq!(config.exit_code(), exit::BAD_PLAN_OR_USAGE);
        assert_eq!(config.to_string(), "QA_RUN_AWS_SSH_ADDRESS: bad");
        let cloud = CloudError::Infrastructure("no credentials".into());
        assert_eq!(cloud.exit_code(), exit::INFRASTRUCTURE_ERROR);
        assert_eq!(cloud.message(), "no credentials");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn bad_aws_settings_from_the_environment_are_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = aws_settings(None, None).unwrap();
        assert!(s.address_overrides.is_empty());
        assert_eq!(s.prices, qa_provision::aws::cost::PriceTable::builtin());
        let s = aws_settings(Some("box=127.0.0.1:2222"), None).unwrap();
        assert_eq!(
            s.address_overrides["box"],
            "127.0.0.1:2222".parse().unwrap()
        );

        let e = aws_settings(Some("box=127.0.0.1"), None).unwrap_err();
        assert!(matches!(e, CloudError::Config(_)), "{e:?}");
        assert_eq!(e.exit_code(), exit::BAD_PLAN_OR_USAGE);
        assert!(e.message().contains("QA_RUN_AWS_SSH_ADDRESS"), "{e}");

        let bad = dir.path().join("prices.json");
        std::fs::write(&bad, "{\"on-demand-hourley\": {}}").unwrap();
        let e = aws_settings(None, Some(&bad)).unwrap_err();
        assert!(matches!(e, CloudError::Config(_)), "{e:?}");
        assert_eq!(e.exit_code(), exit::BAD_PLAN_OR_USAGE);
        assert!(
            e.message().contains("QA_RUN_AWS_PRICES") && e.message().contains("prices.json"),
            "{e}"
        );
        let e = aws_settings(None, Some(&dir.path().join("missing.json"))).unwrap_err();
        assert_eq!(e.exit_code(), exit::BAD_PLAN_OR_USAGE, "{e}");
    }

    #[test]
    fn ssh_address_overrides_take_one_address_or_one_per_machine() {
        let all = parse_ssh_address_overrides("127.0.0.1:2222").unwrap();
        assert_eq!(all["*"], "127.0.0.1:2222".parse().unwrap());
        let some = parse_ssh_address_overrides("a=127.0.0.1:1, b = 127.0.0.2:2 ,").unwrap();
        assert_eq!(some.len(), 2);
        assert_eq!(some["b"], "127.0.0.2:2".parse().unwrap());
        let bad = parse_ssh_address_overrides("a=127.0.0.1").unwrap_err();
        assert!(bad.contains("`127.0.0.1` is not HOST:PORT"), "{bad}");
        assert!(parse_ssh_address_overrides("=127.0.0.1:2").is_err());
    }
}
