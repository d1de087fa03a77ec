//! Setting a run up: checking that a plan can run with this engine, making its directory and
//! journal (or reopening them to resume), and the run's identity and tags.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::artefacts::write_plan_artefacts;
use super::builder::Engine;
use super::context::{ActiveRun, Emitter, RunState, budget};
use super::error::{EngineError, SetupError, SetupProblem, SetupProblemKind, io_err};
use super::layout::absolute;
use super::run::PreparedRun;
use super::run_lock::{RunDirUse, RunLock, check_run_dir};
use crate::dag::{RunCancel, RunnerOptions, TaskGraph};
use crate::journal::{JournalState, RunJournal, RunStatus, TaskRecord};
use crate::plan::{LoadedPlan, StepAction};
use crate::provision::RunContext;
use crate::redact::Redactor;
use crate::stages::{self, Stage};
use crate::types::{RunId, TestId, Verdict};

/// Where and how to run, given in code: nothing here comes from the process environment unless
/// [`RunOptions::from_env`] (or [`RunOptions::secrets_from_env`]) says so.
///
/// ```
/// use qa_core::engine::RunOptions;
/// let opts = RunOptions::new("results")
///     .concurrency(4)
///     .user("ci-bot")
///     .secret("API_TOKEN", "s3cr3t-value")
///     .env("LANG", "C.UTF-8");
/// assert_eq!(opts.results_dir(), std::path::Path::new("results"));
/// // Debug output names the secrets, never their values.
/// assert!(!format!("{opts:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RunOptions {
    results_dir: PathBuf,
    run_id: Option<RunId>,
    test_id: Option<TestId>,
    concurrency: Option<usize>,
    cancel: RunCancel,
    secrets: BTreeMap<String, String>,
    secrets_from_env: bool,
    user: Option<String>,
    env: BTreeMap<String, String>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("results_dir", &self.results_dir)
            .field("run_id", &self.run_id)
            .field("test_id", &self.test_id)
            .field("concurrency", &self.concurrency)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("secrets_from_env", &self.secrets_from_env)
            .field("user", &self.user)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// The user name tags carry when none is given.
pub const UNKNOWN_USER: &str = "unknown";

impl RunOptions {
    /// Defaults, with run directories made under `results_dir`: a generated run id, the run id
    /// as test id, the plan's concurrency (else 16), no secrets, user [`UNKNOWN_USER`].
    pub fn new(results_dir: impl Into<PathBuf>) -> Self {
        RunOptions {
            results_dir: results_dir.into(),
            run_id: None,
            test_id: None,
            concurrency: None,
            cancel: RunCancel::new(),
            secrets: BTreeMap::new(),
            secrets_from_env: false,
            user: None,
            env: BTreeMap::new(),
        }
    }

    /// As a command-line tool runs: [`RunOptions::new`], with the user from `USER` (else
    /// `LOGNAME`) and the plan's secrets read from the environment
    /// ([`RunOptions::secrets_from_env`]).
    pub fn from_env(results_dir: impl Into<PathBuf>) -> Self {
        let mut o = RunOptions::new(results_dir).secrets_from_env();
        o.user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty());
        o
    }

    /// The run's id (generated from the plan's name and the time if not set). It names the run's
    /// directory, so setting up the run refuses an id that is not one safe path component
    /// ([`RunId::parse`](crate::types::RunId::parse)) or whose directory exists already: a run
    /// never writes outside the results directory, nor over another run.
    pub fn run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(RunId(id.into()));
        self
    }

    /// The test id resources are tagged with (the run id if not set).
    pub fn test_id(mut self, id: impl Into<String>) -> Self {
        self.test_id = Some(TestId(id.into()));
        self
    }

    /// How many steps run at once (over the plan's `concurrency`); machines get ready all at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Cancels the run when `cancel` fires.
    pub fn cancel(mut self, cancel: RunCancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// The value of a secret the plan declares (`secrets: [NAME]`). It is given to steps as
    /// `NAME` and masked in everything the run writes. Given values win over the environment.
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    /// Reads the plan's secrets that were not given with [`RunOptions::secret`] from
    /// environment variables of the same names, when the run is set up.
    pub fn secrets_from_env(mut self) -> Self {
        self.secrets_from_env = true;
        self
    }

    /// The user name resources are tagged with.
    pub fn user(mut self, name: impl Into<String>) -> Self {
        self.user = Some(name.into());
        self
    }

    /// A variable every step gets, under the plan's own `env` (which wins).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Where run directories are made.
    pub fn results_dir(&self) -> &Path {
        &self.results_dir
    }

    /// The run's cancellation.
    pub fn cancellation(&self) -> &RunCancel {
        &self.cancel
    }

    /// A secret's value: given, else (when asked for) from the environment.
    pub(super) fn secret_value(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned().or_else(|| {
            self.secrets_from_env
                .then(|| std::env::var(name).ok())
                .flatten()
        })
    }
}

/// A run's identity and journal, made once for `plan_only` and `prepare` alike.
struct NewRun {
    graph: TaskGraph<Stage>,
    run_id: RunId,
    test_id: TestId,
    run_dir: PathBuf,
    state: JournalState,
    lock: RunLock,
}

/// How many generated run ids are tried when each one's directory turns out to exist already.
const GENERATED_ID_TRIES: usize = 8;

/// Makes the directory of a new run under `results`: with the id given (refused if it is not one
/// safe path component, or taken), else with a generated one (another is generated if taken).
/// The directory is made with `mkdir`, not `mkdir -p`, so that of two runs given the same id at
/// the same moment only one gets it.
fn make_run_dir(
    results: &Path,
    given: Option<&RunId>,
    plan_name: &str,
) -> Result<(RunId, PathBuf), EngineError> {
    let given = given.map(|id| RunId::parse(&id.0)).transpose()?;
    std::fs::create_dir_all(results).map_err(io_err(format!("creating {}", results.display())))?;
    let mut tries = 0;
    loop {
        let run_id = given.clone().unwrap_or_else(|| RunId::generate(plan_name));
        let run_dir = results.join(&run_id.0);
        match std::fs::create_dir(&run_dir) {
            Ok(()) => return Ok((run_id, run_dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                tries += 1;
                if given.is_some() || tries >= GENERATED_ID_TRIES {
                    return Err(EngineError::RunExists {
                        run_id: run_id.0,
                        run_dir,
                    });
                }
            }
            Err(e) => return Err(io_err(format!("creating {}", run_dir.display()))(e)),
        }
    }
}

impl Engine {
    /// Checks that the plan can run here: backends linked, step types registered, secrets given
    /// (or, with [`RunOptions::secrets_from_env`], set in the environment). Returns the secrets'
    /// values, or every problem with its place in the plan.
    pub fn check(
        &self,
        loaded: &LoadedPlan,
        opts: &RunOptions,
    ) -> Result<BTreeMap<String, String>, SetupError> {
        let plan = &loaded.plan;
        let mut problems = Vec::new();
        let mut seen_specs = std::collections::BTreeSet::new();
        // Every backend a machine may land on: its own, then its fallbacks.
        let mut needed = Vec::new();
        for m in stages::machine_instances(plan) {
            if !seen_specs.insert(m.spec_index) {
                continue;
            }
            let spec = &plan.machines[m.spec_index];
            let own_path = if spec.backend.is_some() {
                format!("machines[{}].backend", m.spec_index)
            } else if plan.backend.is_some() {
                "backend".to_string()
            } else {
                format!("machines[{}]", m.spec_index)
            };
            needed.push((m.clone(), own_path));
            for (j, b) in spec.fallback.iter().enumerate() {
                let mut alt = m.clone();
                alt.backend = *b;
                needed.push((alt, format!("machines[{}].fallback[{j}]", m.spec_index)));
            }
        }
        for (m, key_path) in needed {
            if self.backends.provisioner(m.backend).is_some() {
                continue;
            }
            let spec = &plan.machines[m.spec_index];
            let (kind, why) = match self.backends.absent_feature(m.backend) {
                Some(feature) => (
                    SetupProblemKind::BackendNotBuilt {
                        backend: m.backend,
                        feature: feature.to_string(),
                    },
                    format!(
                        "which this build does not include (build qa-run with the cargo feature `{feature}`)"
                    ),
                ),
                None => (
                    SetupProblemKind::NoProvisioner { backend: m.backend },
                    if self.backends.get(m.backend).is_some() {
                        "which has no provisioner in this program (give one with `Engine::provisioner`)"
                            .to_string()
                    } else {
                        "which is not registered in this program".to_string()
                    },
                ),
            };
            problems.push(SetupProblem::new(
                kind,
                Some(key_path),
                format!(
                    "machine `{}` needs the `{}` backend, {why}",
                    spec.name, m.backend
                ),
            ));
        }
        for (i, s) in plan.steps.iter().enumerate() {
            if let StepAction::Custom(name) = s.action()
                && !self.step_types.contains_key(name)
            {
                let mut known: Vec<&str> = self.step_types.keys().map(String::as_str).collect();
                known.sort();
                problems.push(SetupProblem::new(
                    SetupProblemKind::UnknownStepType {
                        name: name.to_string(),
                    },
                    Some(format!("steps[{i}].uses")),
                    format!(
                        "step `{}` uses step type `{name}`, which is not registered (known: {})",
                        s.name,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        if self.connector.is_none() {
            problems.push(SetupProblem::new(
                SetupProblemKind::NoConnector,
                None,
                "no connector: the engine cannot reach machines (give one with `Engine::connector`)",
            ));
        }
        if !plan.publish.is_empty() && self.publisher_factory.is_none() {
            problems.push(SetupProblem::new(
                SetupProblemKind::NoPublisherFactory,
                Some("publish".into()),
                "the plan publishes results but this program has no publisher factory",
            ));
        }
        let mut secrets = BTreeMap::new();
        for (i, name) in plan.secrets.iter().enumerate() {
            match opts.secret_value(name) {
                Some(v) => {
                    if let Err(why) = crate::redact::check_secret(name, &v) {
                        problems.push(SetupProblem::new(
                            SetupProblemKind::SecretUnsafe { name: name.clone() },
                            Some(format!("secrets[{i}]")),
                            why,
                        ));
                    }
                    secrets.insert(name.clone(), v);
                }
                None => problems.push(SetupProblem::new(
                    SetupProblemKind::SecretMissing { name: name.clone() },
                    Some(format!("secrets[{i}]")),
                    if opts.secrets_from_env {
                        format!(
                            "secret `{name}` is not set in the environment (export {name}=… before running)"
                        )
                    } else {
                        format!("secret `{name}` was not given (`RunOptions::secret`)")
                    },
                )),
            }
        }
        // Values given for secrets the plan does not declare are masked all the same.
        for (k, v) in &opts.secrets {
            secrets.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if problems.is_empty() {
            Ok(secrets)
        } else {
            Err(self.setup_error(loaded, problems))
        }
    }

    /// Places each problem in the plan file and wraps them up.
    fn setup_error(&self, loaded: &LoadedPlan, mut problems: Vec<SetupProblem>) -> SetupError {
        for p in &mut problems {
            if let Some((line, column)) = p
                .key_path
                .as_deref()
                .and_then(|k| crate::plan::locate(&loaded.path, k))
            {
                p.line = Some(line);
                p.column = Some(column);
            }
        }
        SetupError {
            plan: loaded.path.clone(),
            problems,
        }
    }

    fn graph(&self, loaded: &LoadedPlan) -> Result<TaskGraph<Stage>, SetupError> {
        stages::build_graph(loaded, &self.backends).map_err(|e| {
            self.setup_error(
                loaded,
                vec![SetupProblem::new(
                    SetupProblemKind::Graph,
                    None,
                    e.to_string(),
                )],
            )
        })
    }

    fn new_run(
        &self,
        loaded: &LoadedPlan,
        opts: &RunOptions,
        purpose: RunDirUse,
    ) -> Result<NewRun, EngineError> {
        let graph = self.graph(loaded)?;
        let (run_id, run_dir) =
            make_run_dir(&opts.results_dir, opts.run_id.as_ref(), &loaded.plan.name)?;
        // Nobody else can be in a directory just made; locked all the same, so that a resume or
        // cleanup started as soon as it appears is refused rather than racing the new run.
        let lock = RunLock::acquire(&run_dir, purpose)?;
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
            lock,
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
        let run = self.new_run(loaded, &opts, RunDirUse::Plan)?;
        RunJournal::create(&run.run_dir, run.state.clone()).await?;
        write_plan_artefacts(
            loaded,
            &run.graph,
            &run.run_dir.join("plan"),
            (&run.run_id.0, &run.test_id.0),
            &opts.env,
        )?;
        Ok((run.run_dir, run.graph))
    }

    /// Creates the run directory and journal; nothing is created on any backend yet.
    pub async fn prepare(
        &self,
        loaded: &LoadedPlan,
        opts: RunOptions,
    ) -> Result<PreparedRun, EngineError> {
        let secrets = self.check(loaded, &opts)?;
        let mut run = self.new_run(loaded, &opts, RunDirUse::Run)?;
        run.state.status = RunStatus::Running;
        run.state.pid = Some(std::process::id());
        let journal = Arc::new(RunJournal::create(&run.run_dir, run.state).await?);
        Ok(self.prepared(
            loaded,
            run.graph,
            (run.run_id, run.test_id, run.run_dir, journal, run.lock),
            secrets,
            opts,
            HashMap::new(),
        ))
    }

    /// Continues a run from its journal. A machine whose resources all still exist (created, or
    /// kept by its cleanup policy) is reused, and the steps that passed on it are not run again;
    /// a machine that is gone is made anew, and every step on it runs again, since what the
    /// steps that passed left on the old machine is gone with it. Every attempt's log and
    /// recording is kept.
    ///
    /// Refused while another process works in `run_dir` ([`EngineError::RunInUse`]); the
    /// prepared run holds the directory until it has been executed.
    pub async fn prepare_resume(
        &self,
        run_dir: &Path,
        opts: RunOptions,
    ) -> Result<PreparedRun, EngineError> {
        check_run_dir(run_dir)?;
        let lock = RunLock::acquire(run_dir, RunDirUse::Resume)?;
        let journal = RunJournal::open(run_dir)?;
        let snap = journal.snapshot();
        if snap.status == RunStatus::Planned {
            return Err(EngineError::OnlyPlanned {
                run_dir: run_dir.to_path_buf(),
                plan: snap.plan_path,
            });
        }
        let loaded = crate::plan::load_file_with(Path::new(&snap.plan_path), &self.backends)?;
        let secrets = self.check(&loaded, &opts)?;
        let graph = self.graph(&loaded)?;
        let prior: HashMap<String, Verdict> = graph
            .nodes()
            .filter(|n| {
                matches!(&n.payload, Stage::Step { machine, .. } if snap.machine_survives(machine))
            })
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
            lock,
        );
        Ok(self.prepared(&loaded, graph, ids, secrets, opts, prior))
    }

    fn prepared(
        &self,
        loaded: &LoadedPlan,
        graph: TaskGraph<Stage>,
        (run_id, test_id, run_dir, journal, lock): (
            RunId,
            TestId,
            PathBuf,
            Arc<RunJournal>,
            RunLock,
        ),
        secrets: BTreeMap<String, String>,
        opts: RunOptions,
        prior: HashMap<String, Verdict>,
    ) -> PreparedRun {
        let user = opts.user.clone().unwrap_or_else(|| UNKNOWN_USER.into());
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
        let start = Instant::now();
        PreparedRun::new(
            Arc::new(ActiveRun {
                engine: self.clone(),
                loaded: loaded.clone(),
                machines: stages::machine_instances(&loaded.plan),
                ctx,
                journal: journal.clone(),
                secrets,
                run_env: opts.env.clone(),
                redactor,
                state: Mutex::new(RunState::default()),
                start,
                started_at: crate::now_rfc3339(),
                cancel: opts.cancel.clone(),
                events: Emitter::new(self.events.clone(), start),
            }),
            graph,
            (journal, run_dir, lock),
            RunnerOptions {
                concurrency,
                fan_out: machine_fan_out(),
                backoff: self.backoff,
                prior,
            },
            opts.cancel,
        )
    }
}

/// Descriptors one machine may hold while its own stages run: its connection (two more through
/// a jump host), a file being copied.
const FDS_PER_MACHINE: u64 = 4;

/// Descriptors kept for the rest of the run: standard streams, the journal, the run lock, logs
/// and recordings of running steps, the runtime's own.
const FDS_RESERVED: u64 = 256;

/// How many of a machine's own stages may run at once: as many as this process's descriptor
/// limit allows, at least 16.
fn machine_fan_out() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    (soft.saturating_sub(FDS_RESERVED) / FDS_PER_MACHINE).clamp(16, 4096) as usize
}
