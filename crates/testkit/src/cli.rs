//! Driving the real `qa-run` binary in end-to-end tests: the command to start, a one-machine plan
//! to run, the run directory it leaves, its JSON files, and waiting for something it does.
//!
//! The binary's path is a parameter because only the test crates of qa-cli know it (as
//! `env!("CARGO_BIN_EXE_qa-run")`).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
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

/// A finished command's exit status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The home directory of `user` on this host (root's is `/root`): where cloud provisioners put a
/// machine's work directory, and so where a local sshd standing in for the machine has it.
pub fn home_of(user: &str) -> PathBuf {
    match user {
        "root" => PathBuf::from("/root"),
        u => Path::new("/home").join(u),
    }
}

/// Starts `cmd` (a `qa-run --json …` command: its events are read from stdout) and kills it with
/// SIGKILL as soon as `hit` says so, given the ids of the tasks started so far (it is asked every
/// 2 ms). Returns whether it was killed; `false` means the run ended first. Panics when neither
/// happens within `limit`. It blocks: from an async test, call it in `block_in_place`.
pub fn run_and_kill(
    cmd: &mut Command,
    limit: Duration,
    mut hit: impl FnMut(&[String]) -> bool,
) -> bool {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qa-run starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let started = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let started = started.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["event"] == "task-started"
                {
                    started
                        .lock()
                        .expect("task list")
                        .push(v["task"].as_str().unwrap_or("").to_string());
                }
            }
        });
    }
    let deadline = Instant::now() + limit;
    let killed = loop {
        if hit(&started.lock().expect("task list")) {
            child.kill().expect("kill qa-run");
            break true;
        }
        if child.try_wait().expect("wait for qa-run").is_some() {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "the run neither ended nor reached the kill point within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    child.wait().expect("reap qa-run");
    killed
}
