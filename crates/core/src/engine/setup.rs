//! Setting a run up: checking that a plan can run with this engine, making its directory and
//! journal (or reopening them to resume), and the run's identity and tags.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::artefacts::write_plan_artefacts;
use super::builder::Engine;
use super::context::{ActiveRun, RunState, budget};
use super::error::{EngineError, io_err};
use super::layout::absolute;
use super::run::PreparedRun;
use crate::dag::{RunCancel, RunnerOptions, TaskGraph};
use crate::journal::{JournalState, RunJournal, RunStatus, TaskRecord};
use crate::plan::{LoadedPlan, StepAction};
use crate::provision::RunContext;
use crate::redact::Redactor;
use crate::stages::{self, Stage};
use crate::types::{RunId, TestId, Verdict};

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parent of run directories.
    pub results_dir: PathBuf,
    /// Run id (generated if absent).
    pub run_id: Option<RunId>,
    /// Test id for tags (the run id if absent).
    pub test_id: Option<TestId>,
    /// Concurrency (the plan's, else 16, if absent).
    pub concurrency: Option<usize>,
    /// Cancellation.
    pub cancel: RunCancel,
}

impl RunOptions {
    /// Defaults with results under `results_dir`.
    pub fn new(results_dir: impl Into<PathBuf>) -> Self {
        RunOptions {
            results_dir: results_dir.into(),
            run_id: None,
            test_id: None,
            concurrency: None,
            cancel: RunCancel::new(),
        }
    }
}

/// A run's identity and journal, made once for `plan_only` and `prepare` alike.
struct NewRun {
    graph: TaskGraph<Stage>,
    run_id: RunId,
    test_id: TestId,
    run_dir: PathBuf,
    state: JournalState,
}

impl Engine {
    /// Checks that the plan can run here: backends linked, step types registered, secrets set.
    /// Returns the secrets' values.
    pub fn check(&self, loaded: &LoadedPlan) -> Result<BTreeMap<String, String>, EngineError> {
        let plan = &loaded.plan;
        let mut problems = Vec::new();
        for m in stages::machine_instances(plan) {
            if self.backends.provisioner(m.backend).is_none() {
                let why = match self.backends.absent_feature(m.backend) {
                    Some(feature) => format!(
                        "which this build does not include (build qa-run with the `{feature}` feature)"
                    ),
                    None if self.backends.get(m.backend).is_some() => {
                        "which has no provisioner in this program".to_string()
                    }
                    None => "which is not registered".to_string(),
                };
                problems.push(format!(
                    "machine `{}` needs the `{}` backend, {why}",
                    m.name, m.backend
                ));
            }
        }
        for s in &plan.steps {
            if let StepAction::Custom(name) = s.action() {
                if !self.step_types.contains_key(name) {
                    let mut known: Vec<&str> = self.step_types.keys().map(String::as_str).collect();
                    known.sort();
                    problems.push(format!(
                        "step `{}` uses step type `{name}`, which is not registered (known: {})",
                        s.name,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        if self.connector.is_none() {
            problems.push("no connector: the engine cannot reach machines".into());
        }
        if !plan.publish.is_empty() && self.publisher_factory.is_none() {
            problems.push("the plan publishes results but no publisher factory is set".into());
        }
        let mut secrets = BTreeMap::new();
        for name in &plan.secrets {
            match std::env::var(name) {
                Ok(v) => {
                    secrets.insert(name.clone(), v);
                }
                Err(_) => problems.push(format!(
                    "secret `{name}` is not set in the environment (export {name}=… before running)"
                )),
            }
        }
        if problems.is_empty() {
            Ok(secrets)
        } else {
            Err(EngineError::Setup(format!(
                "{}: cannot run this plan:\n  - {}",
                loaded.path.display(),
                problems.join("\n  - ")
            )))
        }
    }

    fn new_run(&self, loaded: &LoadedPlan, opts: &RunOptions) -> Result<NewRun, EngineError> {
        let graph = stages::build_graph(loaded, &self.backends)
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        let run_id = opts
            .run_id
            .clone()
            .unwrap_or_else(|| RunId::generate(&loaded.plan.name));
        let run_dir = opts.results_dir.join(&run_id.0);
        std::fs::create_dir_all(&run_dir)
            .map_err(io_err(format!("creating {}", run_dir.display())))?;
        let test_id = opts
            .test_id
            .clone()
            .unwrap_or_else(|| TestId(run_id.0.clone()));
        let mut state = JournalState::new(
            &run_id.0,
            &test_id.0,
            &loaded.plan.name,
            &absolute(&loaded.path),
        );
        for id in graph.topological_ids().unwrap_or_default() {
            state.tasks.insert(id, TaskRecord::pending());
        }
        Ok(NewRun {
            graph,
            run_id,
            test_id,
            run_dir,
            state,
        })
    }

    /// Expands the plan without running anything: the graph, a journal in `Planned` state and the
    /// rendered artefacts (per-machine settings, the exact script of each step) under
    /// `<run_dir>/plan/`.
    pub async fn plan_only(
        &self,
        loaded: &LoadedPlan,
        opts: RunOptions,
    ) -> Result<(PathBuf, TaskGraph<Stage>), EngineError> {
        let run = self.new_run(loaded, &opts)?;
        RunJournal::create(&run.run_dir, run.state.clone()).await?;
        write_plan_artefacts(
            loaded,
            &run.graph,
            &run.run_dir.join("plan"),
            (&run.run_id.0, &run.test_id.0),
        )?;
        Ok((run.run_dir, run.graph))
    }

    /// Creates the run directory and journal; nothing is created on any backend yet.
    pub async fn prepare(
        &self,
        loaded: &LoadedPlan,
        opts: RunOptions,
    ) -> Result<PreparedRun, EngineError> {
        let secrets = self.check(loaded)?;
        let mut run = self.new_run(loaded, &opts)?;
        run.state.status = RunStatus::Running;
        run.state.pid = Some(std::process::id());
        let journal = Arc::new(RunJournal::create(&run.run_dir, run.state).await?);
        Ok(self.prepared(
            loaded,
            run.graph,
            (run.run_id, run.test_id, run.run_dir, journal),
            secrets,
            opts,
            HashMap::new(),
        ))
    }

    /// Continues a run from its journal: steps that passed are not run again, machines that
    /// still exist are reused, everything else runs.
    pub async fn prepare_resume(
        &self,
        run_dir: &Path,
        opts: RunOptions,
    ) -> Result<PreparedRun, EngineError> {
        let journal = RunJournal::open(run_dir)?;
        let snap = journal.snapshot();
        let loaded = crate::plan::load_file_with(Path::new(&snap.plan_path), &self.backends)?;
        let secrets = self.check(&loaded)?;
        let graph = stages::build_graph(&loaded, &self.backends)
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        let prior: HashMap<String, Verdict> = graph
            .nodes()
            .filter(|n| matches!(n.payload, Stage::Step { .. }))
            .filter(|n| {
                snap.tasks
                    .get(&n.id)
                    .is_some_and(|t| t.verdict == Some(Verdict::Pass))
            })
            .map(|n| (n.id.clone(), Verdict::Pass))
            .collect();
        journal.update(|s| {
            s.status = RunStatus::Running;
            s.pid = Some(std::process::id());
            s.finished = None;
            for id in graph.topological_ids().unwrap_or_default() {
                let keep = prior.contains_key(&id);
                let rec = s.tasks.entry(id).or_insert_with(TaskRecord::pending);
                if !keep {
                    *rec = TaskRecord {
                        attempts: rec.attempts,
                        ..TaskRecord::pending()
                    };
                }
            }
        });
        journal.flush().await?;
        let ids = (
            RunId(snap.run_id.clone()),
            TestId(snap.test_id.clone()),
            run_dir.to_path_buf(),
            Arc::new(journal),
        );
        Ok(self.prepared(&loaded, graph, ids, secrets, opts, prior))
    }

    fn prepared(
        &self,
        loaded: &LoadedPlan,
        graph: TaskGraph<Stage>,
        (run_id, test_id, run_dir, journal): (RunId, TestId, PathBuf, Arc<RunJournal>),
        secrets: BTreeMap<String, String>,
        opts: RunOptions,
        prior: HashMap<String, Verdict>,
    ) -> PreparedRun {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let keep_until =
            time::OffsetDateTime::now_utc() + budget(&loaded.plan) + Duration::from_secs(3600);
        let tags = BTreeMap::from([
            (crate::tags::TEST_ID.to_string(), test_id.0.clone()),
            (crate::tags::RUN_ID.to_string(), run_id.0.clone()),
            (crate::tags::PLAN.to_string(), loaded.plan.name.clone()),
            (crate::tags::USER.to_string(), user),
            (
                crate::tags::CREATED_BY.to_string(),
                crate::tags::CREATED_BY_VALUE.to_string(),
            ),
            (
                crate::tags::KEEP_UNTIL.to_string(),
                keep_until
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            ),
        ]);
        let ctx = RunContext {
            run_id,
            test_id,
            plan_name: loaded.plan.name.clone(),
            run_dir: run_dir.clone(),
            tags,
        };
        let redactor = Redactor::new(secrets.values().cloned());
        let concurrency = opts.concurrency.or(loaded.plan.concurrency).unwrap_or(16);
        PreparedRun::new(
            Arc::new(ActiveRun {
                engine: self.clone(),
                loaded: loaded.clone(),
                machines: stages::machine_instances(&loaded.plan),
                ctx,
                journal: journal.clone(),
                secrets,
                redactor,
                state: Mutex::new(RunState::default()),
                start: Instant::now(),
                started_at: crate::now_rfc3339(),
                cancel: opts.cancel.clone(),
            }),
            graph,
            journal,
            run_dir,
            RunnerOptions {
                concurrency,
                backoff: self.backoff,
                prior,
            },
            opts.cancel,
        )
    }
}
