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
//! - When more tasks are ready than may run, the one deepest in the graph goes first: the one with
//!   the longest chain of dependencies above it, then the one with the longest chain below it,
//!   then the one added first. A machine's next task (wait-ready, upload, its steps) is deeper
//!   than any machine's provisioning, so with 10,000 machines and a limit of 16 a machine's steps
//!   start as soon as it is ready, instead of after every machine was provisioned; machines are
//!   then also torn down early rather than all kept until the last one is up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
#[non_exhaustive]
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
        TaskGraph {
            graph: DiGraph::new(),
            index: HashMap::new(),
        }
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
        let t = *self
            .index
            .get(to)
            .ok_or_else(|| GraphError::Unknown(to.into()))?;
        let f = *self
            .index
            .get(from)
            .ok_or_else(|| GraphError::Unknown(from.into()))?;
        self.graph.update_edge(f, t, kind);
        Ok(())
    }

    /// The node of a task id.
    pub fn node(&self, id: &str) -> Option<&TaskNode<T>> {
        self.index.get(id).map(|&ix| &self.graph[ix])
    }

    /// Every task, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &TaskNode<T>> {
        self.graph.node_weights()
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
        let mut s = String::from(
            "digraph qa_run {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for ix in self.graph.node_indices() {
            let n = &self.graph[ix];
            let style = if n.always { ", style=dashed" } else { "" };
            s.push_str(&format!(
                "  n{} [label=\"{}\"{style}];\n",
                ix.index(),
                n.id.replace('"', "\\\"")
            ));
        }
        for e in self.graph.edge_references() {
            let style = match e.weight() {
                EdgeKind::Requires => "",
                EdgeKind::After => " [style=dotted]",
            };
            s.push_str(&format!(
                "  n{} -> n{}{style};\n",
                e.source().index(),
                e.target().index()
            ));
        }
        s.push_str("}\n");
        s
    }
}

/// What one attempt of a task produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskResult {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, for anything but PASS.
    pub message: Option<String>,
    /// An ERROR that another attempt would meet again: not retried.
    pub final_error: bool,
}

impl TaskResult {
    /// A PASS.
    pub fn pass() -> Self {
        TaskResult {
            verdict: Verdict::Pass,
            message: None,
            final_error: false,
        }
    }

    /// A verdict with a message.
    pub fn new(verdict: Verdict, message: impl Into<String>) -> Self {
        TaskResult {
            verdict,
            message: Some(message.into()),
            final_error: false,
        }
    }

    /// An ERROR that is not worth another attempt (a bad parameter, refused credentials).
    pub fn final_error(message: impl Into<String>) -> Self {
        TaskResult {
            final_error: true,
            ..TaskResult::new(Verdict::Error, message)
        }
    }
}

/// The end of a task in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    async fn execute(
        &self,
        node: &TaskNode<T>,
        attempt: u32,
        cancel: CancellationToken,
    ) -> TaskResult;

    /// A task is about to start an attempt.
    fn started(&self, _node: &TaskNode<T>, _attempt: u32) {}

    /// A task ended (also called for SKIPPED and INTERRUPTED tasks that never ran).
    fn finished(&self, _node: &TaskNode<T>, _outcome: &TaskOutcome) {}

    /// Whether `node` counts against [`RunnerOptions::concurrency`] (the default: every task
    /// does). A task that does not is held only by [`RunnerOptions::fan_out`]: the engine's
    /// machine stages, so that machines never wait for each other's test steps.
    fn is_limited(&self, _node: &TaskNode<T>) -> bool {
        true
    }
}

/// How to run a graph.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Limited tasks ([`TaskExecutor::is_limited`]) running at once.
    pub concurrency: usize,
    /// Tasks of any kind running at once (never fewer than `concurrency`).
    pub fan_out: usize,
    /// First retry delay; doubles on each retry, capped at 60 s.
    pub backoff: Duration,
    /// Verdicts known from a previous run; a PASS here is not run again.
    pub prior: HashMap<String, Verdict>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            concurrency: 16,
            fan_out: usize::MAX,
            backoff: Duration::from_secs(1),
            prior: HashMap::new(),
        }
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
    let mut waiting: Vec<usize> = g
        .node_indices()
        .map(|ix| g.edges_directed(ix, Direction::Incoming).count())
        .collect();
    let mut outcomes: Vec<Option<TaskOutcome>> = vec![None; n];
    let limited: Vec<bool> = g
        .node_indices()
        .map(|ix| executor.is_limited(&g[ix]))
        .collect();
    let mut ready = ReadyTasks::new(g, limited);
    for ix in g.node_indices() {
        if waiting[ix.index()] == 0 {
            ready.push(ix);
        }
    }
    let mut running: JoinSet<(NodeIndex, TaskOutcome)> = JoinSet::new();
    let mut done = 0usize;
    let concurrency = options.concurrency.max(1);
    let fan_out = options.fan_out.max(concurrency);
    let mut running_limited = 0usize;
    let backoff = options.backoff;

    while done < n {
        // Start everything that is ready, up to the limits. Tasks that need not run end here.
        while let Some(ix) = ready.peek(running_limited < concurrency) {
            let node = &g[ix];
            let prior_pass = options.prior.get(&node.id) == Some(&Verdict::Pass);
            let decided = if prior_pass {
                Some(TaskOutcome {
                    verdict: Verdict::Pass,
                    attempts: 0,
                    message: Some("passed in an earlier run".into()),
                    duration: Duration::ZERO,
                })
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
                ready.pop(ix);
                executor.finished(node, &outcome);
                finish(g, ix, outcome, &mut outcomes, &mut waiting, &mut ready);
                done += 1;
                continue;
            }
            if running.len() >= fan_out {
                break;
            }
            ready.pop(ix);
            if ready.is_limited(ix) {
                running_limited += 1;
            }
            let graph = graph.clone();
            let executor = executor.clone();
            let token = if node.always {
                cancel.hard.clone()
            } else {
                cancel.soft.clone()
            };
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
                if ready.is_limited(ix) {
                    running_limited -= 1;
                }
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
                            let o = TaskOutcome {
                                verdict: Verdict::Error,
                                attempts: 0,
                                message: Some(
                                    "never became ready (dependency cycle or lost task)".into(),
                                ),
                                duration: Duration::ZERO,
                            };
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
        .map(|ix| {
            (
                g[ix].id.clone(),
                outcomes[ix.index()]
                    .take()
                    .expect("every task ends with a verdict"),
            )
        })
        .collect()
}

/// The tasks whose dependencies have all ended, best first (see the module's rules).
struct ReadyTasks {
    /// Per task: the longest chain of dependencies above it, and below it (in tasks).
    rank: Vec<(u32, u32)>,
    /// Per task: whether it counts against the concurrency limit.
    limited: Vec<bool>,
    /// Ready tasks that do not count against the limit, and those that do.
    free: BinaryHeap<(u32, u32, Reverse<usize>)>,
    held: BinaryHeap<(u32, u32, Reverse<usize>)>,
}

impl ReadyTasks {
    fn new<T>(g: &DiGraph<TaskNode<T>, EdgeKind>, limited: Vec<bool>) -> Self {
        let mut rank = vec![(0u32, 0u32); g.node_count()];
        // A graph with a cycle gets no ranks: its tasks then go in the order they were added,
        // and those on the cycle never become ready.
        if let Ok(order) = petgraph::algo::toposort(g, None) {
            for &ix in &order {
                let depth = g
                    .neighbors_directed(ix, Direction::Incoming)
                    .map(|d| rank[d.index()].0 + 1)
                    .max()
                    .unwrap_or(0);
                rank[ix.index()].0 = depth;
            }
            for &ix in order.iter().rev() {
                let height = g
                    .neighbors_directed(ix, Direction::Outgoing)
                    .map(|d| rank[d.index()].1 + 1)
                    .max()
                    .unwrap_or(0);
                rank[ix.index()].1 = height;
            }
        }
        ReadyTasks {
            rank,
            limited,
            free: BinaryHeap::new(),
            held: BinaryHeap::new(),
        }
    }

    fn is_limited(&self, ix: NodeIndex) -> bool {
        self.limited[ix.index()]
    }

    fn push(&mut self, ix: NodeIndex) {
        let (depth, height) = self.rank[ix.index()];
        let entry = (depth, height, Reverse(ix.index()));
        if self.is_limited(ix) {
            self.held.push(entry);
        } else {
            self.free.push(entry);
        }
    }

    /// The ready task to go first; limited tasks only if `room_for_limited`.
    fn peek(&self, room_for_limited: bool) -> Option<NodeIndex> {
        let free = self.free.peek();
        let held = self.held.peek().filter(|_| room_for_limited);
        free.max(held).map(|(_, _, Reverse(i))| NodeIndex::new(*i))
    }

    /// Takes `ix`, which [`peek`](Self::peek) just gave.
    fn pop(&mut self, ix: NodeIndex) {
        let heap = if self.is_limited(ix) {
            &mut self.held
        } else {
            &mut self.free
        };
        debug_assert_eq!(heap.peek().map(|e| e.2.0), Some(ix.index()));
        heap.pop();
    }

    fn is_empty(&self) -> bool {
        self.free.is_empty() && self.held.is_empty()
    }
}

fn interrupted(message: &str) -> TaskOutcome {
    TaskOutcome {
        verdict: Verdict::Interrupted,
        attempts: 0,
        message: Some(message.into()),
        duration: Duration::ZERO,
    }
}

/// If a `Requires` dependency did not pass, the outcome this task gets without running.
fn blocked_by<T>(
    g: &DiGraph<TaskNode<T>, EdgeKind>,
    ix: NodeIndex,
    outcomes: &[Option<TaskOutcome>],
) -> Option<TaskOutcome> {
    for e in g.edges_directed(ix, Direction::Incoming) {
        if *e.weight() != EdgeKind::Requires {
            continue;
        }
        let dep = &outcomes[e.source().index()];
        let verdict = dep.as_ref().map(|o| o.verdict).unwrap_or(Verdict::Error);
        if verdict != Verdict::Pass {
            let (v, why) = if verdict == Verdict::Interrupted {
                (
                    Verdict::Interrupted,
                    format!("`{}` was interrupted", g[e.source()].id),
                )
            } else {
                (
                    Verdict::Skipped,
                    format!("`{}` did not pass ({verdict})", g[e.source()].id),
                )
            };
            return Some(TaskOutcome {
                verdict: v,
                attempts: 0,
                message: Some(why),
                duration: Duration::ZERO,
            });
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
    ready: &mut ReadyTasks,
) {
    outcomes[ix.index()] = Some(outcome);
    for e in g.edges_directed(ix, Direction::Outgoing) {
        let t = e.target().index();
        waiting[t] -= 1;
        if waiting[t] == 0 {
            ready.push(e.target());
        }
    }
}

async fn run_attempts<T, E>(
    node: &TaskNode<T>,
    executor: &E,
    cancel: CancellationToken,
    backoff: Duration,
) -> TaskOutcome
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
        let retry = result.verdict == Verdict::Error
            && !result.final_error
            && attempt <= node.retries
            && !cancel.is_cancelled();
        if !retry {
            return TaskOutcome {
                verdict: result.verdict,
                attempts: attempt,
                message: result.message,
                duration,
            };
        }
        let delay = backoff
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(Duration::from_secs(60));
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
async fn futures_catch_unwind<F: Future>(
    fut: std::panic::AssertUnwindSafe<F>,
) -> Result<F::Output, String> {
    struct CatchUnwind<F>(F);
    impl<F: Future> Future for CatchUnwind<std::panic::AssertUnwindSafe<F>> {
        type Output = Result<F::Output, String>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            // SAFETY: structural pinning of the only field; it is never moved out.
            let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0.0) };
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::prelude::*;

    use super::*;

    /// Test payload: the verdict of each attempt (the last repeats).
    #[derive(Debug, Clone)]
    struct Script(Vec<Verdict>);

    #[derive(Default)]
    struct Recorder {
        finished: Mutex<Vec<String>>,
        executed: Mutex<Vec<(String, u32)>>,
        violations: Mutex<Vec<String>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
        /// Tasks that do not count against the concurrency limit.
        free: HashSet<String>,
        running_limited: AtomicUsize,
        max_running_limited: AtomicUsize,
        deps: HashMap<String, Vec<(String, EdgeKind)>>,
        cancel_after: Option<usize>,
        cancel: Option<RunCancel>,
    }

    #[async_trait]
    impl TaskExecutor<Script> for Recorder {
        async fn execute(
            &self,
            node: &TaskNode<Script>,
            attempt: u32,
            _cancel: CancellationToken,
        ) -> TaskResult {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let limited = self.is_limited(node);
            if limited {
                let now = self.running_limited.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_running_limited.fetch_max(now, Ordering::SeqCst);
            }
            {
                let done: HashSet<String> = self.finished.lock().unwrap().iter().cloned().collect();
                for (d, _) in &self.deps[&node.id] {
                    if !done.contains(d) {
                        self.violations
                            .lock()
                            .unwrap()
                            .push(format!("{} started before {d} ended", node.id));
                    }
                }
            }
            let n = {
                let mut e = self.executed.lock().unwrap();
                e.push((node.id.clone(), attempt));
                e.len()
            };
            if self.cancel_after == Some(n) {
                self.cancel.as_ref().unwrap().soft.cancel();
            }
            tokio::task::yield_now().await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if limited {
                self.running_limited.fetch_sub(1, Ordering::SeqCst);
            }
            let v = node
                .payload
                .0
                .get(attempt as usize - 1)
                .or(node.payload.0.last())
                .copied()
                .unwrap_or(Verdict::Pass);
            TaskResult {
                verdict: v,
                message: None,
                final_error: false,
            }
        }

        fn finished(&self, node: &TaskNode<Script>, _outcome: &TaskOutcome) {
            self.finished.lock().unwrap().push(node.id.clone());
        }

        fn is_limited(&self, node: &TaskNode<Script>) -> bool {
            !self.free.contains(&node.id)
        }
    }

    fn verdict() -> impl Strategy<Value = Verdict> {
        prop_oneof![4 => Just(Verdict::Pass), 1 => Just(Verdict::Fail), 2 => Just(Verdict::Error), 1 => Just(Verdict::Timeout)]
    }

    #[derive(Debug, Clone)]
    struct Case {
        nodes: Vec<(Vec<Verdict>, bool, u32, bool)>,
        edges: Vec<(usize, usize, bool)>,
        concurrency: usize,
        /// Per node: it does not count against `concurrency`.
        free: Vec<bool>,
        /// How many more than `concurrency` may run in all.
        fan_out_extra: usize,
        cancel_after: Option<usize>,
    }

    fn case() -> impl Strategy<Value = Case> {
        (2usize..30).prop_flat_map(|n| {
            (
                proptest::collection::vec(
                    (
                        proptest::collection::vec(verdict(), 1..4),
                        proptest::bool::weighted(0.15),
                        0u32..3,
                        proptest::bool::weighted(0.1),
                    ),
                    n,
                ),
                proptest::collection::vec((0..n, 0..n, any::<bool>()), 0..n * 2),
                1usize..6,
                proptest::collection::vec(proptest::bool::weighted(0.4), n),
                0usize..4,
                proptest::option::weighted(0.3, 1usize..20),
            )
                .prop_map(
                    |(nodes, edges, concurrency, free, fan_out_extra, cancel_after)| Case {
                        nodes,
                        edges: edges.into_iter().filter(|(a, b, _)| a < b).collect(),
                        concurrency,
                        free,
                        fan_out_extra,
                        cancel_after,
                    },
                )
        })
    }

    fn check(case: Case) -> Result<(), TestCaseError> {
        let mut g = TaskGraph::new();
        let mut prior = HashMap::new();
        for (i, (script, always, retries, prior_pass)) in case.nodes.iter().enumerate() {
            g.add(TaskNode {
                id: format!("t{i}"),
                payload: Script(script.clone()),
                always: *always,
                retries: *retries,
            })
            .unwrap();
            if *prior_pass {
                prior.insert(format!("t{i}"), Verdict::Pass);
            }
        }
        for (a, b, requires) in &case.edges {
            g.depend(
                &format!("t{b}"),
                &format!("t{a}"),
                if *requires {
                    EdgeKind::Requires
                } else {
                    EdgeKind::After
                },
            )
            .unwrap();
        }
        let deps: HashMap<String, Vec<(String, EdgeKind)>> = (0..case.nodes.len())
            .map(|i| (format!("t{i}"), g.dependencies(&format!("t{i}"))))
            .collect();
        let cancel = RunCancel::new();
        let rec = Arc::new(Recorder {
            free: (0..case.nodes.len())
                .filter(|&i| case.free[i])
                .map(|i| format!("t{i}"))
                .collect(),
            deps: deps.clone(),
            cancel_after: case.cancel_after,
            cancel: Some(cancel.clone()),
            ..Default::default()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let graph = Arc::new(g);
        let opts = RunnerOptions {
            concurrency: case.concurrency,
            fan_out: case.concurrency + case.fan_out_extra,
            backoff: Duration::ZERO,
            prior: prior.clone(),
        };
        let out = rt.block_on(run_graph(graph.clone(), rec.clone(), opts, cancel.clone()));

        // Every task ends with exactly one verdict, reported once.
        prop_assert_eq!(out.len(), case.nodes.len());
        let finished = rec.finished.lock().unwrap().clone();
        prop_assert_eq!(finished.len(), case.nodes.len());
        prop_assert_eq!(
            finished.iter().collect::<HashSet<_>>().len(),
            case.nodes.len()
        );
        // Dependencies respected.
        prop_assert!(
            rec.violations.lock().unwrap().is_empty(),
            "{:?}",
            rec.violations.lock().unwrap()
        );
        prop_assert!(
            rec.max_running.load(Ordering::SeqCst) <= case.concurrency + case.fan_out_extra
        );
        prop_assert!(rec.max_running_limited.load(Ordering::SeqCst) <= case.concurrency);
        let executed = rec.executed.lock().unwrap().clone();
        let attempts = |id: &str| executed.iter().filter(|(x, _)| x == id).count() as u32;
        for (i, (script, always, retries, _)) in case.nodes.iter().enumerate() {
            let id = format!("t{i}");
            let o = &out[&id];
            // Resume never re-runs a PASS.
            if prior.contains_key(&id) {
                prop_assert_eq!(attempts(&id), 0);
                prop_assert_eq!(o.verdict, Verdict::Pass);
                continue;
            }
            let blocked = deps[&id]
                .iter()
                .any(|(d, k)| *k == EdgeKind::Requires && out[d].verdict != Verdict::Pass);
            if *always {
                // Teardown always runs (there is no hard cancel in this test).
                prop_assert!(attempts(&id) >= 1, "always-task {} did not run", id);
            } else if blocked {
                prop_assert_eq!(attempts(&id), 0);
                prop_assert!(matches!(o.verdict, Verdict::Skipped | Verdict::Interrupted));
            }
            if attempts(&id) > 0 {
                let n = attempts(&id);
                prop_assert!(n <= retries + 1);
                // Only ERROR is retried.
                for a in 1..n {
                    let v = script
                        .get(a as usize - 1)
                        .or(script.last())
                        .copied()
                        .unwrap();
                    prop_assert_eq!(v, Verdict::Error, "{} retried after {:?}", id, v);
                }
                prop_assert_eq!(o.attempts, n);
            }
            if case.cancel_after.is_none() && !blocked && !*always {
                prop_assert!(attempts(&id) >= 1, "{} never ran", id);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]
        #[test]
        fn random_graphs_keep_the_rules(c in case()) {
            check(c)?;
        }
    }

    #[tokio::test]
    async fn hard_cancel_interrupts_teardown_but_soft_does_not() {
        let mut g = TaskGraph::new();
        g.add(TaskNode {
            id: "work".into(),
            payload: Script(vec![Verdict::Pass]),
            always: false,
            retries: 0,
        })
        .unwrap();
        g.add(TaskNode {
            id: "teardown".into(),
            payload: Script(vec![Verdict::Pass]),
            always: true,
            retries: 0,
        })
        .unwrap();
        g.depend("teardown", "work", EdgeKind::After).unwrap();
        let deps = ["work", "teardown"]
            .iter()
            .map(|id| (id.to_string(), g.dependencies(id)))
            .collect();
        let graph = Arc::new(g);
        let cancel = RunCancel::new();
        cancel.soft.cancel();
        let rec = Arc::new(Recorder {
            deps,
            ..Default::default()
        });
        let out = run_graph(graph.clone(), rec.clone(), RunnerOptions::default(), cancel).await;
        assert_eq!(out["work"].verdict, Verdict::Interrupted);
        assert_eq!(
            out["teardown"].verdict,
            Verdict::Pass,
            "teardown runs after a soft cancel"
        );
        let hard = RunCancel::new();
        hard.hard.cancel();
        assert!(hard.soft.is_cancelled(), "a hard cancel implies a soft one");
        let out = run_graph(graph, rec, RunnerOptions::default(), hard).await;
        assert_eq!(out["teardown"].verdict, Verdict::Interrupted);
    }

    /// Steps (`s…`) count against the limit; a machine's own tasks (`p…`) do not.
    #[derive(Default)]
    struct MachinesAndSteps {
        p1_ran: std::sync::atomic::AtomicBool,
        p1_notify: tokio::sync::Notify,
    }

    #[async_trait]
    impl TaskExecutor<()> for MachinesAndSteps {
        async fn execute(&self, node: &TaskNode<()>, _: u32, _: CancellationToken) -> TaskResult {
            match node.id.as_str() {
                "p1" => {
                    self.p1_ran.store(true, Ordering::SeqCst);
                    self.p1_notify.notify_waiters();
                }
                "s0" => {
                    // Holds the only step slot until the second machine's task has run.
                    let waited = tokio::time::timeout(Duration::from_secs(10), async {
                        while !self.p1_ran.load(Ordering::SeqCst) {
                            let notified = self.p1_notify.notified();
                            if self.p1_ran.load(Ordering::SeqCst) {
                                break;
                            }
                            notified.await;
                        }
                    })
                    .await;
                    if waited.is_err() {
                        return TaskResult::new(Verdict::Error, "p1 never ran");
                    }
                }
                _ => {}
            }
            TaskResult::pass()
        }

        fn is_limited(&self, node: &TaskNode<()>) -> bool {
            node.id.starts_with('s')
        }
    }

    #[tokio::test]
    async fn a_machines_own_tasks_start_while_steps_fill_the_concurrency() {
        let mut g = TaskGraph::new();
        for id in ["p0", "s0", "p1", "s1"] {
            g.add(TaskNode {
                id: id.into(),
                payload: (),
                always: false,
                retries: 0,
            })
            .unwrap();
        }
        // p1 becomes ready with s0, when p0 ends; s0 takes the one step slot.
        g.depend("s0", "p0", EdgeKind::Requires).unwrap();
        g.depend("p1", "p0", EdgeKind::After).unwrap();
        g.depend("s1", "p1", EdgeKind::Requires).unwrap();
        let options = RunnerOptions {
            concurrency: 1,
            fan_out: 4,
            ..RunnerOptions::default()
        };
        let out = run_graph(
            Arc::new(g),
            Arc::new(MachinesAndSteps::default()),
            options,
            RunCancel::new(),
        )
        .await;
        for id in ["p0", "s0", "p1", "s1"] {
            assert_eq!(out[id].verdict, Verdict::Pass, "{id}: {:?}", out[id]);
        }
    }

    /// Records the order tasks start in.
    #[derive(Default)]
    struct StartOrder(Mutex<Vec<String>>);

    #[async_trait]
    impl TaskExecutor<()> for StartOrder {
        async fn execute(&self, _: &TaskNode<()>, _: u32, _: CancellationToken) -> TaskResult {
            tokio::task::yield_now().await;
            TaskResult::pass()
        }
        fn started(&self, node: &TaskNode<()>, _: u32) {
            self.0.lock().unwrap().push(node.id.clone());
        }
    }

    // Regression: with 10,000 machines and a concurrency limit, every machine was provisioned
    // before any step started (ready tasks went first come, first served, and every provision
    // was ready at once).
    #[tokio::test]
    async fn a_machines_steps_start_when_it_is_ready_not_after_every_provision() {
        let (machines, concurrency) = (300, 4);
        let mut g = TaskGraph::new();
        let task = |id: String| TaskNode {
            id,
            payload: (),
            always: false,
            retries: 0,
        };
        for m in 0..machines {
            for stage in ["provision", "ready", "step"] {
                g.add(task(format!("{stage}:{m}"))).unwrap();
            }
            g.depend(
                &format!("ready:{m}"),
                &format!("provision:{m}"),
                EdgeKind::Requires,
            )
            .unwrap();
            g.depend(
                &format!("step:{m}"),
                &format!("ready:{m}"),
                EdgeKind::Requires,
            )
            .unwrap();
        }
        let order = Arc::new(StartOrder::default());
        let options = RunnerOptions {
            concurrency,
            ..RunnerOptions::default()
        };
        let out = run_graph(Arc::new(g), order.clone(), options, RunCancel::new()).await;
        assert!(out.values().all(|o| o.verdict == Verdict::Pass));
        let order = order.0.lock().unwrap();
        let first_step = order.iter().position(|t| t.starts_with("step:")).unwrap();
        let last_provision = order
            .iter()
            .rposition(|t| t.starts_with("provision:"))
            .unwrap();
        assert!(first_step < last_provision, "{first_step} {last_provision}");
        // Never more machines in the pipeline than tasks may run at once, plus the ones whose
        // provisioning started in the same round: no machine waits provisioned for long.
        let provisions_before = order[..first_step]
            .iter()
            .filter(|t| t.starts_with("provision:"))
            .count();
        assert!(
            provisions_before <= 2 * concurrency,
            "{:?}",
            &order[..first_step]
        );
        // Machines go through in the order they were added.
        assert_eq!(order[0], "provision:0");
        assert_eq!(order[first_step], "step:0");
    }

    #[test]
    fn cycles_and_unknown_tasks_are_refused() {
        let mut g: TaskGraph<()> = TaskGraph::new();
        for id in ["a", "b"] {
            g.add(TaskNode {
                id: id.into(),
                payload: (),
                always: false,
                retries: 0,
            })
            .unwrap();
        }
        assert_eq!(
            g.add(TaskNode {
                id: "a".into(),
                payload: (),
                always: false,
                retries: 0
            })
            .unwrap_err(),
            GraphError::Duplicate("a".into())
        );
        assert_eq!(
            g.depend("a", "zz", EdgeKind::After).unwrap_err(),
            GraphError::Unknown("zz".into())
        );
        g.depend("b", "a", EdgeKind::Requires).unwrap();
        g.depend("a", "b", EdgeKind::Requires).unwrap();
        assert!(matches!(g.topological_ids(), Err(GraphError::Cycle(_))));
    }
}
