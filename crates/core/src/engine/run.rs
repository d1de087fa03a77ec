//! Running a prepared run: the DAG runner drives the tasks, and this module is the one place
//! that journals each task's start and end and tells the event sink, then decides the run's exit
//! code. The stages themselves (in `stages`) do the work and never write the journal's task
//! records.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::context::ActiveRun;
use super::error::EngineError;
use super::run_lock::RunLock;
use crate::dag::{
    RunCancel, RunnerOptions, TaskExecutor, TaskGraph, TaskNode, TaskOutcome, TaskResult, run_graph,
};
use crate::events::{Event, EventStream, TaskId};
use crate::exit;
use crate::journal::{RunJournal, RunStatus, TaskRecord, TaskState};
use crate::report::Report;
use crate::stages::Stage;
use crate::types::Verdict;

/// A run ready to execute.
pub struct PreparedRun {
    run: Arc<ActiveRun>,
    graph: Arc<TaskGraph<Stage>>,
    /// The journal (the CLI flushes it on a second Ctrl-C).
    pub journal: Arc<RunJournal>,
    /// The run directory.
    pub run_dir: PathBuf,
    options: RunnerOptions,
    cancel: RunCancel,
    /// Holds the run directory from setup until the run has ended.
    lock: RunLock,
}

impl std::fmt::Debug for PreparedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRun")
            .field("run_dir", &self.run_dir)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The report: the one in `report.json`, the one every publisher got.
    pub report: Report,
    /// The exit code for the process.
    pub exit_code: i32,
    /// What teardown could not remove.
    pub cleanup_failures: Vec<String>,
    /// Why publishing failed, if it did (the report cannot say: it was published).
    pub publish_failure: Option<String>,
}

impl PreparedRun {
    pub(super) fn new(
        run: Arc<ActiveRun>,
        graph: TaskGraph<Stage>,
        (journal, run_dir, lock): (Arc<RunJournal>, PathBuf, RunLock),
        options: RunnerOptions,
        cancel: RunCancel,
    ) -> Self {
        PreparedRun {
            run,
            graph: Arc::new(graph),
            journal,
            run_dir,
            options,
            cancel,
            lock,
        }
    }

    /// The task graph.
    pub fn graph(&self) -> &TaskGraph<Stage> {
        &self.graph
    }

    /// The run's events as an async stream, from [`Event::RunStarted`] to
    /// [`Event::RunFinished`], after which it ends. Ask for it before [`PreparedRun::execute`];
    /// asking again replaces the earlier stream, which then ends.
    ///
    /// ```no_run
    /// # async fn demo(run: qa_core::engine::PreparedRun) {
    /// let mut run = run;
    /// let mut events = run.events();
    /// let printer = tokio::spawn(async move {
    ///     while let Some(record) = events.next().await {
    ///         println!("{:>6} ms {:?}", record.t_ms, record.event);
    ///     }
    /// });
    /// let summary = run.execute().await;
    /// printer.await.unwrap(); // ends once the run has
    /// # }
    /// ```
    pub fn events(&mut self) -> EventStream {
        self.run.events.listen()
    }

    /// Runs every task, teardown included; the report is written and published once, after
    /// teardown, by the `publish` task.
    pub async fn execute(self) -> Result<RunSummary, EngineError> {
        let run = self.run.clone();
        run.emit(Event::RunStarted {
            run_id: run.ctx.run_id.0.clone(),
            run_dir: self.run_dir.display().to_string(),
            tasks: self.graph.len(),
        });
        let outcomes = run_graph(
            self.graph.clone(),
            run.clone(),
            self.options,
            self.cancel.clone(),
        )
        .await;
        let interrupted = self.cancel.soft.is_cancelled();
        // The publish task always runs and writes the report; built here only if it never ran.
        let written = run.state().report.clone();
        let report = match written {
            Some(r) => r,
            None => {
                let r = run.build_report();
                run.write_report(&r)?;
                r
            }
        };
        let publish_failure = outcomes
            .get("publish")
            .filter(|o| o.verdict != Verdict::Pass)
            .map(|o| o.message.clone().unwrap_or_else(|| o.verdict.to_string()));
        let cleanup_failures = run.state().cleanup_failures.clone();
        let exit_code = if interrupted {
            exit::INTERRUPTED
        } else if !cleanup_failures.is_empty() {
            exit::CLEANUP_INCOMPLETE
        } else {
            match report.outcome {
                Verdict::Pass if publish_failure.is_some() => exit::INFRASTRUCTURE_ERROR,
                Verdict::Pass => exit::ALL_PASSED,
                Verdict::Fail | Verdict::Timeout | Verdict::Skipped => exit::TEST_FAILED,
                Verdict::Error => exit::INFRASTRUCTURE_ERROR,
                Verdict::Interrupted => exit::INTERRUPTED,
            }
        };
        self.journal.update(|s| {
            s.status = if interrupted {
                RunStatus::Interrupted
            } else {
                RunStatus::Finished
            };
            s.finished = Some(crate::now_rfc3339());
            s.pid = None;
        });
        let flushed = self.journal.flush().await;
        // The directory is free once the journal says the run has ended, before anyone hears so.
        drop(self.lock);
        run.emit(Event::RunFinished {
            run_id: run.ctx.run_id.0.clone(),
            outcome: report.outcome,
            exit_code,
        });
        run.events.end();
        flushed?;
        Ok(RunSummary {
            run_dir: self.run_dir,
            report,
            exit_code,
            cleanup_failures,
            publish_failure,
        })
    }
}

#[async_trait]
impl TaskExecutor<Stage> for ActiveRun {
    async fn execute(
        &self,
        node: &TaskNode<Stage>,
        attempt: u32,
        cancel: CancellationToken,
    ) -> TaskResult {
        let work = async {
            match &node.payload {
                Stage::Reserve => self.reserve().await,
                Stage::Provision { machine } => self.provision(machine).await,
                Stage::WaitReady { machine } => self.wait_ready(machine).await,
                Stage::Upload { machine } => self.upload(machine).await,
                Stage::Step { index, machine, .. } => {
                    self.step(&node.payload, *index, machine, attempt, cancel.clone())
                        .await
                }
                Stage::Collect { machine } => self.collect(machine).await,
                Stage::Publish => self.publish().await,
                Stage::Teardown { machine } => self.teardown(machine).await,
                Stage::Release => self.release().await,
            }
        };
        if matches!(node.payload, Stage::Step { .. }) {
            // Steps handle cancellation themselves, so that their process tree is killed.
            return work.await;
        }
        tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => TaskResult::new(Verdict::Interrupted, "interrupted"),
        }
    }

    /// Only steps count against the run's concurrency; a machine's own stages (provisioning,
    /// connecting, uploads, collection, teardown) fan out, so that machines never wait for
    /// each other's steps to get ready.
    fn is_limited(&self, node: &TaskNode<Stage>) -> bool {
        matches!(node.payload, Stage::Step { .. })
    }

    fn started(&self, node: &TaskNode<Stage>, attempt: u32) {
        self.journal.update(|s| {
            let t = s
                .tasks
                .entry(node.id.clone())
                .or_insert_with(TaskRecord::pending);
            t.state = TaskState::Running;
            t.attempts = attempt;
            t.started = Some(crate::now_rfc3339());
        });
        self.flush_later();
        self.emit(Event::TaskStarted {
            task: TaskId::from(&node.payload),
            attempt,
        });
    }

    fn finished(&self, node: &TaskNode<Stage>, outcome: &TaskOutcome) {
        let exit_code = {
            let mut g = self.state();
            g.outcomes.insert(node.payload.clone(), outcome.clone());
            g.steps.get(&node.payload).and_then(|d| d.exit_code)
        };
        let message = outcome.message.as_ref().map(|m| self.redactor.redact(m));
        self.journal.update(|s| {
            let t = s
                .tasks
                .entry(node.id.clone())
                .or_insert_with(TaskRecord::pending);
            t.state = TaskState::Done;
            t.verdict = Some(outcome.verdict);
            t.attempts = t.attempts.max(outcome.attempts);
            t.duration_ms = outcome.duration.as_millis() as u64;
            t.exit_code = exit_code;
            t.message = message.clone();
        });
        self.flush_later();
        self.emit(Event::TaskFinished {
            task: TaskId::from(&node.payload),
            verdict: outcome.verdict,
            duration_ms: outcome.duration.as_millis() as u64,
            message,
        });
    }
}
