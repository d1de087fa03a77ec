//! Publishing at scale: rebuilding the site for 1,000 runs × 200 steps, and publishing one run
//! to a git remote that already holds 1,000 runs. Prints figures for docs/benchmarks-publish.md.
//!
//! `cargo bench -p qa-publish --bench publish`; `QA_BENCH_RUNS` and `QA_BENCH_STEPS` scale it,
//! `QA_BENCH_DIR` chooses where the files go.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use qa_core::report::{CostEstimate, MachineReport, Report, StepReport};
use qa_core::{ResultPublisher, Verdict};
use qa_testkit::git::git;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One run directory as the engine leaves it: a log and a recording per step.
fn make_run(results: &Path, i: usize, steps: usize) {
    let run_id = format!("2026{:04}-{:06}", i / 100, i);
    let dir = results.join(&run_id);
    let plan = format!("plan-{}", i % 5);
    let mut out = Vec::with_capacity(steps);
    let mut counts = BTreeMap::new();
    for s in 0..steps {
        let machine = if s % 2 == 0 { "box-a" } else { "box-b" };
        let name = format!("step-{s:03}");
        // A step in twenty-five fails now and then; most pass.
        let verdict = if s % 25 == 7 && (i + s).is_multiple_of(3) {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let output =
            format!("running {name} on {machine}\nchecking things\n\u{1b}[32mok\u{1b}[0m {name}\n");
        let log = format!("logs/{machine}/{name}.log");
        let cast = format!("casts/{machine}/{name}.cast");
        std::fs::create_dir_all(dir.join(format!("logs/{machine}"))).unwrap();
        std::fs::create_dir_all(dir.join(format!("casts/{machine}"))).unwrap();
        std::fs::write(dir.join(&log), &output).unwrap();
        let mut c = String::from("{\"version\":2,\"width\":120,\"height\":40}\n");
        for (k, line) in output.split_inclusive('\n').enumerate() {
            c.push_str(
                &serde_json::to_string(&serde_json::json!([0.1 * k as f64, "o", line])).unwrap(),
            );
            c.push('\n');
        }
        std::fs::write(dir.join(&cast), c).unwrap();
        *counts.entry(verdict).or_insert(0) += 1;
        let mut step = StepReport::new(name, machine, verdict);
        step.started = Some("2026-11-20T10:00:00Z".into());
        step.duration_ms = 1234 + s as u64;
        step.exit_code = Some(i32::from(verdict != Verdict::Pass));
        step.message = (verdict != Verdict::Pass).then(|| "exit status 1".into());
        step.log = Some(log);
        step.cast = Some(cast);
        step.log_tail = (verdict != Verdict::Pass).then(|| output.clone());
        out.push(step);
    }
    let machine = |name: &str| {
        let mut m = MachineReport::new(name, "aws");
        m.role = "sut".into();
        m.facts = BTreeMap::from([("zone".to_string(), "eu-west-1a".to_string())]);
        m
    };
    let mut report = Report::new(run_id.clone(), plan.clone());
    report.test_id = format!("qa-{i}");
    report.plan_path = format!("plans/{plan}.yaml");
    report.started = format!(
        "2026-{:02}-{:02}T{:02}:{:02}:00Z",
        1 + (i / 600) % 12,
        1 + (i / 24) % 25,
        i % 24,
        i % 60
    );
    report.finished = "2026-11-20T11:00:00Z".into();
    report.duration_ms = 3_600_000;
    report.outcome = if counts.contains_key(&Verdict::Fail) {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    report.counts = counts;
    report.machines = vec![machine("box-a"), machine("box-b")];
    report.steps = out;
    report.cost = Some(CostEstimate::new("USD", vec![("instances".into(), 1.23)]));
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec(&report).unwrap(),
    )
    .unwrap();
}

/// Wall time and CPU time (this process and the git processes it waited for): on a shared,
/// busy machine the CPU time is the steadier figure.
struct Timer {
    wall: Instant,
    cpu: f64,
}

fn cpu_seconds() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut u) } == 0 {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            total += tv(u.ru_utime) + tv(u.ru_stime);
        }
    }
    total
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    fn show(&self) -> String {
        format!(
            "{:.2} s wall, {:.2} s CPU",
            self.wall.elapsed().as_secs_f64(),
            cpu_seconds() - self.cpu
        )
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` must not run this for minutes.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs = env("QA_BENCH_RUNS", 1000);
    let steps = env("QA_BENCH_STEPS", 200);
    // QA_BENCH_DIR puts the files elsewhere (a tmpfs, to take the disk out of the figures).
    let base = match std::env::var_os("QA_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let results = base.path().join("results");
    let site = base.path().join("site");

    let t = Timer::start();
    std::thread::scope(|s| {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        for w in 0..workers {
            let results = &results;
            s.spawn(move || {
                (w..runs)
                    .step_by(workers)
                    .for_each(|i| make_run(results, i, steps))
            });
        }
    });
    println!("setup: {runs} runs x {steps} steps written in {}", t.show());

    let t = Timer::start();
    let summary = qa_publish::site::rebuild(&results, &site).unwrap();
    println!(
        "rebuild, cold (every run page, log and recording written): {} for {} runs",
        t.show(),
        summary.runs
    );

    let t = Timer::start();
    qa_publish::site::rebuild(&results, &site).unwrap();
    println!(
        "rebuild, warm (nothing changed; index and histories regenerated): {}",
        t.show()
    );

    make_run(&results, runs, steps);
    let t = Timer::start();
    qa_publish::site::rebuild(&results, &site).unwrap();
    println!("rebuild after one new run: {}", t.show());

    let t = Timer::start();
    let summary = qa_publish::site::regenerate(&site).unwrap();
    println!(
        "regenerate index and histories only: {} ({} runs)",
        t.show(),
        summary.runs
    );

    let index = std::fs::metadata(site.join("index.html")).unwrap().len();
    let history = std::fs::metadata(site.join("history/plan-0.html"))
        .unwrap()
        .len();
    let run_page = std::fs::metadata(site.join("runs/20260000-000000/index.html"))
        .unwrap()
        .len();
    println!(
        "index.html: {} KB; a history page: {} KB; a run page: {} KB",
        index / 1024,
        history / 1024,
        run_page / 1024
    );

    // A remote that already holds the site (as GitHub would: filters allowed).
    let remote = base.path().join("pages.git");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare"]);
    git(&remote, &["config", "uploadpack.allowFilter", "true"]);
    let t = Timer::start();
    git(&site, &["init", "-q"]);
    git(&site, &["add", "-A", "."]);
    git(
        &site,
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-q",
            "-m",
            "seed",
        ],
    );
    git(
        &site,
        &[
            "push",
            "-q",
            remote.to_str().unwrap(),
            "HEAD:refs/heads/gh-pages",
        ],
    );
    println!(
        "setup: seeding the remote with {} runs took {}",
        summary.runs,
        t.show()
    );

    make_run(&results, runs + 1, steps);
    let run_dir = std::fs::read_dir(&results)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    let report: Report =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for url in [
        remote.display().to_string(),
        format!("file://{}", remote.display()),
    ] {
        let publisher = qa_publish::GitPublisher::new(url.clone(), "gh-pages");
        let t = Timer::start();
        rt.block_on(publisher.publish(&report, &run_dir)).unwrap();
        println!(
            "git publish of one run to a remote holding {}+ runs ({}): {}",
            summary.runs,
            if url.starts_with("file://") {
                "file:// URL, partial fetch"
            } else {
                "local path"
            },
            t.show()
        );
    }
}
