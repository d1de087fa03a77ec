//! The `qa-run` command line: argument parsing, wiring of the linked backends into an
//! [`Engine`], progress output, signal handling and the mapping of every outcome to a documented
//! exit code ([`qa_core::exit`]). `main.rs` only calls [`main`], so tests can drive the same code.
#![warn(missing_docs)]

mod args;
pub mod clouds;
mod error;
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
use qa_core::engine::{PreparedRun, RunOptions};
use qa_core::exit;
use qa_core::journal::RunStatus;
use qa_core::plan::BackendKind;
use qa_core::{RunId, TestId};

use clouds::{Clouds, JanitorOptions, clouds_of_plan, clouds_of_run, with_clouds};

pub use args::{Cli, Command, GraphFormat};
pub use error::CliError;
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
    let outcome = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(dispatch(cli, &settings)),
        Err(e) => Err(CliError::Runtime(e)),
    };
    match outcome {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code() as u8)
        }
    }
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

/// Runs one parsed command and returns its exit code, or the error that stopped it.
pub async fn dispatch(cli: Cli, settings: &Settings) -> Result<i32, CliError> {
    match cli.command {
        Command::Run {
            ref plan,
            ref run_id,
            ref test_id,
            concurrency,
        } => {
            let loaded = qa_core::plan::load_file(plan)?;
            let inventory =
                resolve_inventory(&loaded.plan.inventory, &loaded.base_dir).map_err(|source| {
                    CliError::Inventory {
                        plan: loaded.path.clone(),
                        source,
                    }
                })?;
            let sink = progress::sink(cli.json);
            let engine = default_engine(
                &engine_settings(&cli, settings, &cli.results, inventory),
                sink.clone(),
            );
            let engine = with_clouds(engine, &clouds_of_plan(&loaded.plan)).await?;
            let cancel = RunCancel::new();
            let mut opts = RunOptions::new(&cli.results);
            opts.run_id = run_id.clone().map(RunId);
            opts.test_id = test_id.clone().map(TestId);
            opts.concurrency = concurrency;
            opts.cancel = cancel.clone();
            let run = engine.prepare(&loaded, opts).await?;
            execute(run, cancel, sink, cli.json).await
        }
        Command::Resume { ref run_dir } => {
            let sink = progress::sink(cli.json);
            let results = run_dir.parent().unwrap_or(Path::new("."));
            let inventory = plan_inventory_of(run_dir);
            let engine = default_engine(
                &engine_settings(&cli, settings, results, inventory),
                sink.clone(),
            );
            let engine = with_clouds(engine, &clouds_of_run(run_dir)).await?;
            let cancel = RunCancel::new();
            let mut opts = RunOptions::new(results);
            opts.cancel = cancel.clone();
            let run = engine.prepare_resume(run_dir, opts).await?;
            execute(run, cancel, sink, cli.json).await
        }
        Command::Plan { ref plan, format } => {
            let loaded = qa_core::plan::load_file(plan)?;
            let engine = default_engine(
                &engine_settings(&cli, settings, &cli.results, loaded.plan.inventory.clone()),
                Arc::new(qa_core::events::NoEvents),
            );
            let (run_dir, graph) = engine
                .plan_only(&loaded, RunOptions::new(&cli.results))
                .await?;
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
            Ok(exit::ALL_PASSED)
        }
        Command::Validate { ref plans } => {
            let mut invalid = 0;
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
                            invalid += 1;
                        }
                    },
                    Err(e) => {
                        // A plan error names the file on each of its lines and ends with a
                        // newline.
                        eprint!("{e}");
                        invalid += 1;
                    }
                }
            }
            if invalid > 0 {
                return Err(CliError::InvalidPlans { count: invalid });
            }
            Ok(exit::ALL_PASSED)
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
            let settings = engine_settings(&cli, settings, &cli.results, inventory);
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
            let summary = qa_publish::site::rebuild(&results, &site).map_err(CliError::Site)?;
            eprintln!("site rebuilt in {} ({summary:?})", site.display());
            print_stdout(&format!("{}\n", site.join("index.html").display()));
            Ok(exit::ALL_PASSED)
        }
        Command::Publish { ref run_dir } => publish_again(run_dir).await,
        Command::Janitor {
            older_than,
            yes,
            all_regions,
        } => {
            clouds::janitor(JanitorOptions {
                older_than,
                remove: yes,
                all_regions,
            })
            .await
        }
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

async fn execute(
    run: PreparedRun,
    cancel: RunCancel,
    sink: Arc<progress::Progress>,
    json: bool,
) -> Result<i32, CliError> {
    sink.set_total(run.graph().len());
    if !json {
        sink.message(&format!("run directory: {}", run.run_dir.display()));
    }
    let journal = run.journal.clone();
    let signals = tokio::spawn(watch_signals(cancel.clone(), journal, sink.clone()));
    let result = run.execute().await;
    signals.abort();
    sink.finish();
    let summary = result?;
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
    Ok(summary.exit_code)
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

async fn cleanup(
    settings: &EngineSettings,
    run_dir: Option<&Path>,
    test_id: Option<&str>,
    all_regions: bool,
    aws: bool,
) -> Result<i32, CliError> {
    if run_dir.is_none() && test_id.is_none() {
        return Err(CliError::NothingToCleanUp);
    }
    let engine = default_engine(settings, Arc::new(qa_core::events::NoEvents));
    // A run directory asks the clouds it used; a sweep by test id only those named (--aws).
    let clouds = match (run_dir, test_id) {
        (_, Some(_)) if aws || all_regions => Clouds::all(),
        (Some(dir), _) => clouds_of_run(dir),
        (None, _) => Clouds::none(),
    };
    let engine = with_clouds(engine, &clouds).await?;
    let mut remaining = 0;
    if let Some(dir) = run_dir {
        let r = engine.cleanup(dir).await?;
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
    if let Some(id) = test_id {
        let id = TestId(id.to_string());
        for b in [BackendKind::Local, BackendKind::Static, BackendKind::Aws] {
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
        return Err(CliError::CleanupIncomplete { remaining });
    }
    Ok(exit::ALL_PASSED)
}

/// Publishes the run in `run_dir` again.
async fn publish_again(run_dir: &Path) -> Result<i32, CliError> {
    let report = qa_publish::load_report(run_dir).map_err(CliError::Report)?;
    let plan = qa_core::plan::load_file(Path::new(&report.plan_path))?;
    if plan.plan.publish.is_empty() {
        return Err(CliError::NoPublishTargets { plan: plan.path });
    }
    let redactor = qa_core::redact::Redactor::new(
        plan.plan
            .secrets
            .iter()
            .filter_map(|k| std::env::var(k).ok()),
    );
    let mut failed = 0;
    for t in &plan.plan.publish {
        let p = qa_publish::from_target_with_redactor(t, &plan.base_dir, redactor.clone());
        match p.publish(&report, run_dir).await {
            Ok(r) => println!("published to {}: {}", r.publisher, r.location),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::PublishIncomplete { failed });
    }
    Ok(exit::ALL_PASSED)
}
