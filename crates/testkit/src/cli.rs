//! Driving the real `qa-run` binary in end-to-end tests: the command to start, a one-machine plan
//! to run, the run directory it leaves, its JSON files, and waiting for something it does.
//!
//! The binary's path is a parameter because only the test crates of qa-cli know it (as
//! `env!("CARGO_BIN_EXE_qa-run")`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A command running the `qa-run` binary at `exe`, without the caller's `QA_RUN_LOG`.
pub fn bin(exe: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(exe);
    c.env_remove("QA_RUN_LOG");
    c
}

/// A plan `NAME.yaml` in `dir` with one machine, `box`, and the given steps (YAML list items);
/// `extra` goes between the machines and the steps.
pub fn write_plan(dir: &Path, name: &str, steps: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!("name: {name}\nmachines:\n  - name: box\n{extra}steps:\n{steps}"),
    )
    .unwrap();
    p
}

/// The one run directory in `results`; panics if there is not exactly one.
pub fn only_run_dir(results: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "expected one run directory in {}: {dirs:?}",
        results.display()
    );
    dirs.into_iter().next().unwrap()
}

/// A JSON file (report.json, state.json, …); panics with the path if it cannot be read or parsed.
pub fn json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Polls `f` every 50 ms until it is true; panics ("timed out waiting for WHAT") after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
