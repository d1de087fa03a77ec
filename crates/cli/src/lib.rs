//! The `qa-run` command line: argument parsing, wiring of the linked backends into an
//! [`Engine`], progress output, signal handling and the mapping of every outcome to a documented
//! exit code ([`qa_core::exit`]). `main.rs` only calls [`main`], so tests can drive the same code.
#![warn(missing_docs)]

mod args;
mod inventory;
mod progress;
mod settings;
mod wiring;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use qa_core::dag::RunCancel;
use qa_core::engine::{Engine, PreparedRun, RunOptions};
use qa_core::exit;
use qa_core::journal::RunStatus;
use qa_core::{RunId, TestId};

pub use args::{Cli, Command, GraphFormat};
use inventory::plan_inventory_of;
pub use inventory::{InventoryError, resolve_inventory};
pub use settings::Settings;
pub use wiring::{AccessConnector, EngineSettings, default_engine};

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
    let settings = Settings::from_env();
    init_tracing(cli.verbose, settings.log_filter.as_deref());
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
    let code = rt.block_on(dispatch(cli, &settings));
    ExitCode::from(code as u8)
}

/// Logs to stderr at the level `-v` asks for, unless `QA_RUN_LOG` holds a valid filter.
fn init_tracing(verbose: u8, log_filter: Option<&str>) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = log_filter
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one parsed command and returns its exit code.
pub async fn dispatch(cli: Cli, settings: &Settings) -> i32 {
    match cli.command {
        Command::Run {
            ref plan,
            ref run_id,
            ref test_id,
            concurrency,
        } => {
            let loaded = match qa_core::plan::load_file(plan) {
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
                &engine_settings(&cli, settings, &cli.results, inventory),
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
                &engine_settings(&cli, settings, results, inventory),
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
            let loaded = match qa_core::plan::load_file(plan) {
                Ok(l) => l,
                Err(e) => return fail(&e.to_string(), exit::BAD_PLAN_OR_USAGE),
            };
            let engine = default_engine(
                &engine_settings(&cli, settings, &cli.results, loaded.plan.inventory.clone()),
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
                match qa_core::plan::load_file(p) {
                    Ok(l) => match qa_core::stages::build_graph(&l, false) {
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
            cleanup(
                &engine_settings(&cli, settings, &cli.results, inventory),
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

/// What the engine needs from the command line, the plan and the environment.
fn engine_settings(
    cli: &Cli,
    settings: &Settings,
    results: &Path,
    inventory: Vec<qa_core::plan::InventoryHost>,
) -> EngineSettings {
    EngineSettings {
        results: results.to_path_buf(),
        inventory,
        known_hosts: cli.known_hosts.clone(),
        environment: settings.clone(),
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
    let aws = machines
        .iter()
        .find(|m| m.backend == qa_core::plan::BackendKind::Aws)
        .map(|m| {
            plan.machines[m.spec_index]
                .aws
                .as_ref()
                .and_then(|a| a.region.clone())
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
        .find(|r| r.backend == qa_core::plan::BackendKind::Aws)
        .map(|r| r.details.get("region").cloned());
    let from_plan = qa_core::plan::load_file(Path::new(&state.plan_path))
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
        std::env::var("QA_RUN_AWS_SSH_ADDRESS")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .as_deref(),
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
    Ok(engine.provisioner(Arc::new(p)).reservation(Arc::new(c)))
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
fn aws_prices_path() -> Option<std::path::PathBuf> {
    std::env::var_os(AWS_PRICES_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
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
    let p = match qa_provision::aws::AwsProvisioner::from_env(Default::default()).await {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string(), exit::INFRASTRUCTURE_ERROR),
    };
    let regions = if all_regions {
        match p.regions().await {
            Ok(r) => r,
            Err(e) => return fail(&e.to_string(), exit::INFRASTRUCTURE_ERROR),
        }
    } else {
        vec![p.region().to_string()]
    };
    let cutoff = time::OffsetDateTime::now_utc().unix_timestamp() - older_than.as_secs() as i64;
    let mut tasks = tokio::task::JoinSet::new();
    for region in regions {
        let p = p.in_region(&region);
        tasks.spawn(async move {
            let listed = p.expired(cutoff).await;
            (region, p, listed)
        });
    }
    let mut code = exit::ALL_PASSED;
    let mut found = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((region, p, listed)) = joined else {
            code = exit::INFRASTRUCTURE_ERROR;
            continue;
        };
        match listed {
            Ok(list) if list.is_empty() => {}
            Ok(list) => found.push((region, p, list)),
            Err(e) => {
                eprintln!("error: {region}: {e}");
                code = exit::INFRASTRUCTURE_ERROR;
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    if found.is_empty() {
        if code == exit::ALL_PASSED {
            println!("nothing has outlived its keep-until");
        }
        return code;
    }
    let mut total = 0;
    for (region, _, list) in &found {
        for r in list {
            total += 1;
            println!(
                "{region:<14} {:<16} {:<24} test-id {:<30} keep-until {}",
                r.kind,
                r.id,
                r.test_id.as_deref().unwrap_or("-"),
                r.keep_until
            );
        }
    }
    if !yes {
        eprintln!("{total} resource(s) listed; nothing removed (add --yes to remove them)");
        return code;
    }
    for (region, p, _) in &found {
        match p.remove_expired(cutoff).await {
            Ok(removed) => removed
                .iter()
                .for_each(|r| println!("removed {region}: {r}")),
            Err(e) => {
                eprintln!("left: {region}: {e}");
                code = exit::CLEANUP_INCOMPLETE;
            }
        }
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
        let id = TestId(id.to_string());
        for b in [
            qa_core::plan::BackendKind::Local,
            qa_core::plan::BackendKind::Static,
            qa_core::plan::BackendKind::Aws,
        ] {
            if let Some(p) = engine.provisioner_for(b) {
                let swept = if all_regions {
                    p.sweep_all_regions(&id).await
                } else {
                    p.sweep(&id).await
                };
                match swept {
                    Ok(lines) => lines.iter().for_each(|l| println!("swept {l}")),
                    Err(e) => {
                        eprintln!("left: {e}");
                        remaining += 1;
                    }
                }
            }
            if let Some(r) = engine.reservation_for(b) {
                let res = if all_regions {
                    r.cancel_all_regions(&id).await
                } else {
                    r.cancel(&id).await
                };
                match res {
                    Ok(n) => println!("cancelled {n} reservation(s) on {b}"),
                    Err(e) => {
                        eprintln!("left: {e}");
                        remaining += 1;
                    }
                }
            }
        }
    }
    if remaining > 0 {
        exit::CLEANUP_INCOMPLETE
    } else {
        exit::ALL_PASSED
    }
}

async fn publish_again(run_dir: &Path) -> i32 {
    let report = match qa_publish::load_report(run_dir) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), exit::BAD_PLAN_OR_USAGE),
    };
    let plan = match qa_core::plan::load_file(Path::new(&report.plan_path)) {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string(), exit::BAD_PLAN_OR_USAGE),
    };
    if plan.plan.publish.is_empty() {
        return fail(
            &format!("plan {} has no `publish:` targets", plan.path.display()),
            exit::BAD_PLAN_OR_USAGE,
        );
    }
    let redactor = qa_core::redact::Redactor::new(
        plan.plan
            .secrets
            .iter()
            .filter_map(|k| std::env::var(k).ok()),
    );
    let mut code = exit::ALL_PASSED;
    for t in &plan.plan.publish {
        let p = qa_publish::from_target_with_redactor(t, &plan.base_dir, redactor.clone());
        match p.publish(&report, run_dir).await {
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
