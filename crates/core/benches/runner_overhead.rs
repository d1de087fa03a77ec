//! The runner's own overhead: 10,000 no-op tasks in wide, deep and random graphs (total time and
//! time per task), with and without journaling every transition, and the wall time of a graph of
//! sleeping tasks against its critical path.
//!
//! Run: `cargo bench -p qa-core --bench runner_overhead` (figures go to docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qa_core::dag::{
    EdgeKind, RunCancel, RunnerOptions, TaskExecutor, TaskGraph, TaskNode, TaskOutcome, TaskResult,
    run_graph,
};
use qa_core::journal::{JournalState, RunJournal, TaskRecord, TaskState};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

struct Noop;

#[async_trait]
impl TaskExecutor<Duration> for Noop {
    async fn execute(&self, node: &TaskNode<Duration>, _: u32, _: CancellationToken) -> TaskResult {
        if !node.payload.is_zero() {
            // A thread sleep is accurate to tens of microseconds; tokio's timer wheel rounds every
            // sleep up to the next millisecond, which would be measured as runner overhead.
            let d = node.payload;
            tokio::task::spawn_blocking(move || std::thread::sleep(d))
                .await
                .unwrap();
        }
        TaskResult::pass()
    }
}

/// Journals every transition the way the engine does (update in memory, coalesced flush).
struct Journaled(Arc<RunJournal>);

#[async_trait]
impl TaskExecutor<Duration> for Journaled {
    async fn execute(&self, _: &TaskNode<Duration>, _: u32, _: CancellationToken) -> TaskResult {
        TaskResult::pass()
    }
    fn started(&self, node: &TaskNode<Duration>, attempt: u32) {
        self.0.update(|s| {
            let t = s
                .tasks
                .entry(node.id.clone())
                .or_insert_with(TaskRecord::pending);
            t.state = TaskState::Running;
            t.attempts = attempt;
        });
        let j = self.0.clone();
        tokio::spawn(async move { j.flush().await.ok() });
    }
    fn finished(&self, node: &TaskNode<Duration>, o: &TaskOutcome) {
        self.0.update(|s| {
            let t = s
                .tasks
                .entry(node.id.clone())
                .or_insert_with(TaskRecord::pending);
            t.state = TaskState::Done;
            t.verdict = Some(o.verdict);
        });
        let j = self.0.clone();
        tokio::spawn(async move { j.flush().await.ok() });
    }
}

fn node(i: usize, d: Duration) -> TaskNode<Duration> {
    TaskNode {
        id: format!("t{i}"),
        payload: d,
        always: false,
        retries: 0,
    }
}

fn wide(n: usize) -> TaskGraph<Duration> {
    let mut g = TaskGraph::new();
    for i in 0..n {
        g.add(node(i, Duration::ZERO)).unwrap();
    }
    g
}

fn deep(n: usize) -> TaskGraph<Duration> {
    let mut g = TaskGraph::new();
    for i in 0..n {
        g.add(node(i, Duration::ZERO)).unwrap();
        if i > 0 {
            g.depend(&format!("t{i}"), &format!("t{}", i - 1), EdgeKind::Requires)
                .unwrap();
        }
    }
    g
}

fn random(
    n: usize,
    seed: u64,
    dur: impl Fn(&mut rand::rngs::StdRng) -> Duration,
) -> TaskGraph<Duration> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = TaskGraph::new();
    for i in 0..n {
        let d = dur(&mut rng);
        g.add(node(i, d)).unwrap();
        for _ in 0..rng.random_range(0..4usize) {
            if i > 0 {
                let lo = i.saturating_sub(50);
                let j = rng.random_range(lo..i);
                g.depend(&format!("t{i}"), &format!("t{j}"), EdgeKind::Requires)
                    .unwrap();
            }
        }
    }
    g
}

fn critical_path(g: &TaskGraph<Duration>) -> Duration {
    let mut finish: HashMap<String, Duration> = HashMap::new();
    for id in g.topological_ids().unwrap() {
        let start = g
            .dependencies(&id)
            .iter()
            .map(|(d, _)| finish[d])
            .max()
            .unwrap_or_default();
        finish.insert(id.clone(), start + g.node(&id).unwrap().payload);
    }
    finish.values().copied().max().unwrap_or_default()
}

fn time_it<E: TaskExecutor<Duration>>(
    rt: &tokio::runtime::Runtime,
    g: &Arc<TaskGraph<Duration>>,
    e: Arc<E>,
    concurrency: usize,
) -> Duration {
    let opts = RunnerOptions {
        concurrency,
        backoff: Duration::ZERO,
        ..RunnerOptions::default()
    };
    let t = Instant::now();
    let out = rt.block_on(run_graph(g.clone(), e, opts, RunCancel::new()));
    let el = t.elapsed();
    assert_eq!(out.len(), g.len());
    el
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2048)
        .enable_all()
        .build()
        .unwrap();
    let n = 10_000;
    let rounds = 7;
    println!(
        "runner overhead, {n} no-op tasks, median of {rounds} rounds (rounds interleave the shapes)"
    );
    println!("{:<28} {:>10} {:>12}", "graph", "total", "per task");
    let shapes: Vec<(&str, Arc<TaskGraph<Duration>>, usize)> = vec![
        ("wide, concurrency 16", Arc::new(wide(n)), 16),
        ("wide, concurrency 10000", Arc::new(wide(n)), n),
        ("deep chain", Arc::new(deep(n)), 16),
        (
            "random (≤3 deps/task)",
            Arc::new(random(n, 7, |_| Duration::ZERO)),
            16,
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); shapes.len() + 1];
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..rounds {
        for (i, (_, g, c)) in shapes.iter().enumerate() {
            times[i].push(time_it(&rt, g, Arc::new(Noop), *c));
        }
        let j = Arc::new(
            rt.block_on(RunJournal::create(
                dir.path(),
                JournalState::new("r", "t", "p", "/p"),
            ))
            .unwrap(),
        );
        times[shapes.len()].push(time_it(&rt, &shapes[3].1, Arc::new(Journaled(j)), 16));
    }
    for (i, (name, _, _)) in shapes.iter().enumerate() {
        let m = median(times[i].clone());
        println!(
            "{:<28} {:>8.1}ms {:>10.2}µs",
            name,
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() * 1e6 / n as f64
        );
    }
    let m = median(times[shapes.len()].clone());
    println!(
        "{:<28} {:>8.1}ms {:>10.2}µs",
        "random + journal",
        m.as_secs_f64() * 1e3,
        m.as_secs_f64() * 1e6 / n as f64
    );

    println!();
    println!("wall time against the critical path (tasks sleep 5–50 ms, unlimited concurrency)");
    let g = Arc::new(random(2_000, 11, |r| {
        Duration::from_millis(r.random_range(5..50))
    }));
    let cp = critical_path(&g);
    let walls: Vec<Duration> = (0..5)
        .map(|_| time_it(&rt, &g, Arc::new(Noop), 100_000))
        .collect();
    let w = median(walls);
    println!(
        "2000 tasks: critical path {:.1} ms, wall (median of 5) {:.1} ms, +{:.2}%",
        cp.as_secs_f64() * 1e3,
        w.as_secs_f64() * 1e3,
        (w.as_secs_f64() / cp.as_secs_f64() - 1.0) * 100.0
    );
}
