//! A generic runner for a DAG of tasks: every ready task starts at once (up to a concurrency
//! limit), failures skip what requires them, ERROR is retried with backoff, cancellation interrupts
//! what runs and what waits, and tasks marked `always` (teardown) run whatever happened.
//!
//! It knows nothing of plans or machines; [`crate::engine`] gives it tasks. That keeps the
//! scheduling rules in one place, where property tests check them on random graphs.
//!
//! Rules:
//! - An edge is [`EdgeKind::Requires`] (the dependency must PASS, else the task is SKIPPED) or
//!   [`EdgeKind::After`] (the dependency must only have ended).
//! - A task marked `always` waits for all its dependencies to end and then runs, whatever their
//!   verdicts and even after cancellation; only a hard cancel stops it.
//! - Only [`Verdict::Error`] is retried, up to the task's `retries`, with exponential backoff.
//! - A task whose verdict is given in `prior` (a resumed run's PASS) is not run again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::types::Verdict;

/// How a task depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// The dependency must PASS; otherwise the dependent is SKIPPED.
    Requires,
    /// The dependency must only have ended, whatever its verdict.
    After,
}

/// A task in the graph.
#[derive(Debug, Clone)]
pub struct TaskNode<T> {
    /// Unique id, e.g. `step:build@box`.
    pub id: String,
    /// What the executor needs to run it.
    pub payload: T,
    /// Runs whatever its dependencies' verdicts, and after cancellation (teardown).
    pub always: bool,
    /// How many times an ERROR is retried.
    pub retries: u32,
}

/// The graph of tasks.
#[derive(Debug, Clone)]
pub struct TaskGraph<T> {
    /// The petgraph graph; an edge points from dependency to dependent.
    pub graph: DiGraph<TaskNode<T>, EdgeKind>,
    index: HashMap<String, NodeIndex>,
}

impl<T> Default for TaskGraph<T> {
    fn default() -> Self {
        TaskGraph { graph: DiGraph::new(), index: HashMap::new() }
    }
}

/// A graph problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Two tasks with one id.
    #[error("task `{0}` is defined twice")]
    Duplicate(String),
    /// An edge names a task that does not exist.
    #[error("task `{0}` does not exist")]
    Unknown(String),
    /// The graph has a cycle through this task.
    #[error("tasks form a cycle through `{0}`")]
    Cycle(String),
}

impl<T> TaskGraph<T> {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task.
    pub fn add(&mut self, node: TaskNode<T>) -> Result<NodeIndex, GraphError> {
        if self.index.contains_key(&node.id) {
            return Err(GraphError::Duplicate(node.id));
        }
        let id = node.id.clone();
        let ix = self.graph.add_node(node);
        self.index.insert(id, ix);
        Ok(ix)
    }

    /// Adds an edge `from` (dependency) → `to` (dependent).
    pub fn depend(&mut self, to: &str, from: &str, kind: EdgeKind) -> Result<(), GraphError> {
        let t = *self.index.get(to).ok_or_else(|| GraphError::Unknown(to.into()))?;
        let f = *self.index.get(from).ok_or_else(|| GraphError::Unknown(from.into()))?;
        self.graph.update_edge(f, t, kind);
        Ok(())
    }

    /// The node of a task id.
    pub fn node(&self, id: &str) -> Option<&TaskNode<T>> {
        self.index.get(id).map(|&ix| &self.graph[ix])
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// No tasks.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Task ids in an order where every dependency comes first.
    pub fn topological_ids(&self) -> Result<Vec<String>, GraphError> {
        petgraph::algo::toposort(&self.graph, None)
            .map(|v| v.into_iter().map(|ix| self.graph[ix].id.clone()).collect())
            .map_err(|c| GraphError::Cycle(self.graph[c.node_id()].id.clone()))
    }

    /// Ids of the direct dependencies of a task, with the edge kind.
    pub fn dependencies(&self, id: &str) -> Vec<(String, EdgeKind)> {
        match self.index.get(id) {
            Some(&ix) => self
                .graph
                .edges_directed(ix, Direction::Incoming)
                .map(|e| (self.graph[e.source()].id.clone(), *e.weight()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The graph in Graphviz dot.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph qa_run {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
        for ix in self.graph.node_indices() {
            let n = &self.graph[ix];
            let style = if n.always { ", style=dashed" } else { "" };
            s.push_str(&format!("  n{} [label=\"{}\"{style}];\n", ix.index(), n.id.replace('"', "\\\"")));
        }
        for e in self.graph.edge_references() {
            let style = match e.weight() {
                EdgeKind::Requires => "",
                EdgeKind::After => " [style=dotted]",
            };
            s.push_str(&format!("  n{} -> n{}{style};\n", e.source().index(), e.target().index()));
        }
        s.push_str("}\n");
        s
    }
}

/// What one attempt of a task produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, for anything but PASS.
    pub message: Option<String>,
}

impl TaskResult {
    /// A PASS.
    pub fn pass() -> Self {
        TaskResult { verdict: Verdict::Pass, message: None }
    }

    /// A verdict with a message.
    pub fn new(verdict: Verdict, message: impl Into<String>) -> Self {
        TaskResult { verdict, message: Some(message.into()) }
    }
}

/// The end of a task in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// Final verdict.
    pub verdict: Verdict,
    /// Attempts made (0 if it never ran).
    pub attempts: u32,
    /// Why, for anything but PASS.
    pub message: Option<String>,
    /// Wall time of the last attempt.
    pub duration: Duration,
}

/// Runs tasks and hears about transitions.
#[async_trait]
pub trait TaskExecutor<T>: Send + Sync + 'static {
    /// Runs one attempt. `cancel` fires on interruption (for `always` tasks, only on a hard
    /// cancel); the task should then stop promptly and return [`Verdict::Interrupted`].
    async fn execute(&self, node: &TaskNode<T>, attempt: u32, cancel: CancellationToken) -> TaskResult;

    /// A task is about to start an attempt.
    fn started(&self, _node: &TaskNode<T>, _attempt: u32) {}

    /// A task ended (also called for SKIPPED and INTERRUPTED tasks that never ran).
    fn finished(&self, _node: &TaskNode<T>, _outcome: &TaskOutcome) {}
}

/// How to run a graph.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Tasks running at once.
    pub concurrency: usize,
    /// First retry delay; doubles on each retry, capped at 60 s.
    pub backoff: Duration,
    /// Verdicts known from a previous run; a PASS here is not run again.
    pub prior: HashMap<String, Verdict>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions { concurrency: 16, backoff: Duration::from_secs(1), prior: HashMap::new() }
    }
}

/// Cancellation of a run: `soft` interrupts tasks that are not `always`; `hard` interrupts all.
#[derive(Debug, Clone, Default)]
pub struct RunCancel {
    /// Interrupts ordinary tasks; teardown still runs.
    pub soft: CancellationToken,
    /// Interrupts everything, teardown included.
    pub hard: CancellationToken,
}

impl RunCancel {
    /// Fresh tokens.
    pub fn new() -> Self {
        let hard = CancellationToken::new();
        // A hard cancel implies a soft one.
        let soft = hard.child_token();
        RunCancel { soft, hard }
    }
}

/// Runs every task of `graph` and returns each one's outcome, keyed by id.
///
/// Every task ends with exactly one verdict. The run's wall time is its critical path plus the
/// runner's small overhead, as long as the concurrency limit is not reached.
pub async fn run_graph<T, E>(
    graph: Arc<TaskGraph<T>>,
    executor: Arc<E>,
    options: RunnerOptions,
    cancel: RunCancel,
) -> HashMap<String, TaskOutcome>
where
    T: Send + Sync + 'static,
    E: TaskExecutor<T> + ?Sized,
{
    let g = &graph.graph;
    let n = g.node_count();
    let mut waiting: Vec<usize> = g.node_indices().map(|ix| g.edges_directed(ix, Direction::Incoming).count()).collect();
    let mut outcomes: Vec<Option<TaskOutcome>> = vec![None; n];
    let mut ready: std::collections::VecDeque<NodeIndex> =
        g.node_indices().filter(|ix| waiting[ix.index()] == 0).collect();
    let mut running: JoinSet<(NodeIndex, TaskOutcome)> = JoinSet::new();
    let mut done = 0usize;
    let concurrency = options.concurrency.max(1);
    let backoff = options.backoff;

    while done < n {
        // Start everything that is ready, up to the limit. Tasks that need not run end here.
        while let Some(&ix) = ready.front() {
            let node = &g[ix];
            let prior_pass = options.prior.get(&node.id) == Some(&Verdict::Pass);
            let decided = if prior_pass {
                Some(TaskOutcome { verdict: Verdict::Pass, attempts: 0, message: Some("passed in an earlier run".into()), duration: Duration::ZERO })
            } else if node.always {
                if cancel.hard.is_cancelled() {
                    Some(interrupted("cancelled before it started"))
                } else {
                    None
                }
            } else if cancel.soft.is_cancelled() {
                Some(interrupted("cancelled before it started"))
            } else {
                blocked_by(g, ix, &outcomes)
            };
            if let Some(outcome) = decided {
                ready.pop_front();
                executor.finished(node, &outcome);
                finish(g, ix, outcome, &mut outcomes, &mut waiting, &mut ready);
                done += 1;
                continue;
            }
            if running.len() >= concurrency {
                break;
            }
            ready.pop_front();
            let graph = graph.clone();
            let executor = executor.clone();
            let token = if node.always { cancel.hard.clone() } else { cancel.soft.clone() };
            running.spawn(async move {
                let node = &graph.graph[ix];
                let outcome = run_attempts(node, &*executor, token, backoff).await;
                executor.finished(node, &outcome);
                (ix, outcome)
            });
        }
        if done >= n {
            break;
        }
        match running.join_next().await {
            Some(Ok((ix, outcome))) => {
                finish(g, ix, outcome, &mut outcomes, &mut waiting, &mut ready);
                done += 1;
            }
            Some(Err(join_error)) => {
                // Panics are caught inside the task, so this only happens when the runtime shuts
                // down. The task's outcome is then filled in below, once nothing else runs.
                tracing::error!("a task was lost: {join_error}");
            }
            None => {
                if ready.is_empty() {
                    // Nothing runs and nothing is ready: only possible with a cycle or a lost task.
                    for ix in g.node_indices() {
                        if outcomes[ix.index()].is_none() {
                            let o = TaskOutcome { verdict: Verdict::Error, attempts: 0, message: Some("never became ready (dependency cycle or lost task)".into()), duration: Duration::ZERO };
                            executor.finished(&g[ix], &o);
                            outcomes[ix.index()] = Some(o);
                            done += 1;
                        }
                    }
                }
            }
        }
    }
    g.node_indices()
        .map(|ix| (g[ix].id.clone(), outcomes[ix.index()].take().expect("every task ends with a verdict")))
        .collect()
}

fn interrupted(message: &str) -> TaskOutcome {
    TaskOutcome { verdict: Verdict::Interrupted, attempts: 0, message: Some(message.into()), duration: Duration::ZERO }
}

/// If a `Requires` dependency did not pass, the outcome this task gets without running.
fn blocked_by<T>(g: &DiGraph<TaskNode<T>, EdgeKind>, ix: NodeIndex, outcomes: &[Option<TaskOutcome>]) -> Option<TaskOutcome> {
    for e in g.edges_directed(ix, Direction::Incoming) {
        if *e.weight() != EdgeKind::Requires {
            continue;
        }
        let dep = &outcomes[e.source().index()];
        let verdict = dep.as_ref().map(|o| o.verdict).unwrap_or(Verdict::Error);
        if verdict != Verdict::Pass {
            let (v, why) = if verdict == Verdict::Interrupted {
                (Verdict::Interrupted, format!("`{}` was interrupted", g[e.source()].id))
            } else {
                (Verdict::Skipped, format!("`{}` did not pass ({verdict})", g[e.source()].id))
            };
            return Some(TaskOutcome { verdict: v, attempts: 0, message: Some(why), duration: Duration::ZERO });
        }
    }
    None
}

fn finish<T>(
    g: &DiGraph<TaskNode<T>, EdgeKind>,
    ix: NodeIndex,
    outcome: TaskOutcome,
    outcomes: &mut [Option<TaskOutcome>],
    waiting: &mut [usize],
    ready: &mut std::collections::VecDeque<NodeIndex>,
) {
    outcomes[ix.index()] = Some(outcome);
    for e in g.edges_directed(ix, Direction::Outgoing) {
        let t = e.target().index();
        waiting[t] -= 1;
        if waiting[t] == 0 {
            ready.push_back(e.target());
        }
    }
}

async fn run_attempts<T, E>(node: &TaskNode<T>, executor: &E, cancel: CancellationToken, backoff: Duration) -> TaskOutcome
where
    T: Send + Sync + 'static,
    E: TaskExecutor<T> + ?Sized,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        executor.started(node, attempt);
        let start = Instant::now();
        let fut = std::panic::AssertUnwindSafe(executor.execute(node, attempt, cancel.clone()));
        let result = match futures_catch_unwind(fut).await {
            Ok(r) => r,
            Err(msg) => TaskResult::new(Verdict::Error, format!("task panicked: {msg}")),
        };
        let duration = start.elapsed();
        let retry = result.verdict == Verdict::Error && attempt <= node.retries && !cancel.is_cancelled();
        if !retry {
            return TaskOutcome { verdict: result.verdict, attempts: attempt, message: result.message, duration };
        }
        let delay = backoff.saturating_mul(1 << (attempt - 1).min(16)).min(Duration::from_secs(60));
        tracing::info!(task = %node.id, attempt, ?delay, "retrying after ERROR: {}", result.message.as_deref().unwrap_or(""));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => {
                return TaskOutcome { verdict: Verdict::Interrupted, attempts: attempt, message: Some("cancelled while waiting to retry".into()), duration };
            }
        }
    }
}

/// Catches a panic inside a future, so one broken task cannot take the run (and its teardown) down.
async fn futures_catch_unwind<F: std::future::Future>(fut: std::panic::AssertUnwindSafe<F>) -> Result<F::Output, String> {
    struct CatchUnwind<F>(F);
    impl<F: std::future::Future> std::future::Future for CatchUnwind<std::panic::AssertUnwindSafe<F>> {
        type Output = Result<F::Output, String>;
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
            // SAFETY: structural pinning of the only field; it is never moved out.
            let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0 .0) };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
                Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
                Err(payload) => {
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    std::task::Poll::Ready(Err(msg))
                }
            }
        }
    }
    CatchUnwind(fut).await
}
