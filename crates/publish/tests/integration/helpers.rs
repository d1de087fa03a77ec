//! Fake finished runs on disk, as the engine leaves them: `report.json`, logs, recordings and
//! artifacts (including hostile ones).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qa_core::Verdict;
use qa_core::report::{CostEstimate, MachineReport, Report, StepReport};

/// A step to fake: name, verdict, and what it printed.
pub struct FakeStep<'a> {
    pub name: &'a str,
    pub verdict: Verdict,
    pub output: &'a str,
}

pub fn step<'a>(name: &'a str, verdict: Verdict, output: &'a str) -> FakeStep<'a> {
    FakeStep {
        name,
        verdict,
        output,
    }
}

/// Writes a run directory `results/<run_id>` with one machine `box` and returns its report.
pub fn make_run(
    results: &Path,
    run_id: &str,
    plan: &str,
    started: &str,
    steps: &[FakeStep<'_>],
) -> (Report, PathBuf) {
    let dir = results.join(run_id);
    let mut reports = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let log = format!("logs/box/{}.log", s.name);
        let cast = format!("casts/box/{}.cast", s.name);
        write(&dir.join(&log), s.output);
        write(&dir.join(&cast), &cast_of(s.output));
        let tail: String = s
            .output
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        let mut r = StepReport::new(s.name, "box", s.verdict);
        r.attempts = u32::from(s.verdict != Verdict::Skipped);
        r.started = Some(started.into());
        r.duration_ms = 1000 + i as u64 * 250;
        r.exit_code = match s.verdict {
            Verdict::Pass => Some(0),
            Verdict::Fail => Some(1),
            _ => None,
        };
        r.message = (s.verdict != Verdict::Pass).then(|| format!("{} ended {}", s.name, s.verdict));
        r.log = Some(log);
        r.cast = Some(cast);
        r.log_tail = (s.verdict == Verdict::Fail).then_some(tail);
        reports.push(r);
    }
    write(&dir.join("artifacts/box/result.txt"), "result: 42\n");
    write(&dir.join("artifacts/box/nested/deep.txt"), "deep\n");
    write(
        &dir.join("artifacts/box/page.html"),
        "<script>document.title='pwned-by-artifact'</script>",
    );
    write(
        &results.join("outside-secret.txt"),
        "must never be published",
    );
    #[cfg(unix)]
    {
        let _ = std::os::unix::fs::symlink(
            results.join("outside-secret.txt"),
            dir.join("artifacts/box/escape.txt"),
        );
    }
    let mut counts = BTreeMap::new();
    for s in &reports {
        *counts.entry(s.verdict).or_insert(0) += 1;
    }
    let outcome = if reports.iter().all(|s| s.verdict == Verdict::Pass) {
        Verdict::Pass
    } else if reports.iter().any(|s| s.verdict == Verdict::Fail) {
        Verdict::Fail
    } else {
        reports
            .iter()
            .map(|s| s.verdict)
            .find(|v| *v != Verdict::Pass)
            .unwrap_or(Verdict::Pass)
    };
    let mut machine = MachineReport::new("box", "local");
    machine.role = "sut".into();
    machine.facts = BTreeMap::from([("zone".to_string(), "local-1".to_string())]);
    machine.artifacts = vec![
        "artifacts/box".into(),
        "../outside-secret.txt".into(),
        "/etc/passwd".into(),
        "artifacts/box/escape.txt".into(),
    ];
    let mut report = Report::new(run_id, plan);
    report.test_id = format!("qa-{run_id}");
    report.plan_path = format!("plans/{plan}.yaml");
    report.description = Some(format!("The {plan} plan"));
    report.started = started.into();
    report.finished = started.into();
    report.duration_ms = 65_000;
    report.outcome = outcome;
    report.counts = counts;
    report.machines = vec![machine];
    report.steps = reports;
    report.cost = Some(CostEstimate::new("USD", vec![("box".into(), 0.42)]));
    write(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(&report).unwrap(),
    );
    (report, dir)
}

/// An asciicast v2 recording of `output`, a line per event (the last line split in two, so a
/// player must join events).
pub fn cast_of(output: &str) -> String {
    let mut s = String::from(
        "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1700000000, \"env\": {\"TERM\": \"xterm-256color\"}}\n",
    );
    let mut t = 0.0;
    for line in output.split_inclusive('\n') {
        t += 0.05;
        let (a, b) = line.split_at(line.len() / 2);
        for part in [a, b] {
            if !part.is_empty() {
                s.push_str(&serde_json::to_string(&serde_json::json!([t, "o", part])).unwrap());
                s.push('\n');
            }
        }
    }
    s
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Every regular file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A directory under the workspace's `target/test-artifacts/<name>` (kept after the test).
pub fn artifacts_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let d = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Whether a tool is on PATH.
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
