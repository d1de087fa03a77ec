//! End-to-end tests: they drive the real `qa-run` binary on the local backend and check what a
//! user would look at — exit codes, report.json, junit.xml, logs, recordings, the journal — and
//! that nothing is left running or on disk afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use qa_testkit::cli::{bin, json, only_run_dir, wait_until, write_plan};
use qa_testkit::procs::processes_mentioning;
use serde_json::Value;

mod hostile;
mod run_dirs;
mod secrets;

/// The binary under test.
const QA_RUN: &str = env!("CARGO_BIN_EXE_qa-run");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn run(args: &[&str]) -> Output {
    bin(QA_RUN).args(args).output().expect("qa-run runs")
}

/// What a command printed on stderr, as text.
fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("qa-run did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn step_verdicts(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn task_state(run_dir: &Path, task: &str) -> Option<String> {
    let s: Value = serde_json::from_slice(&std::fs::read(run_dir.join("state.json")).ok()?).ok()?;
    s["tasks"][task]["state"].as_str().map(str::to_string)
}

/// Starts `qa-run run` in the background and returns once `task` is running.
fn start_and_wait_for(
    results: &Path,
    plan: &Path,
    extra: &[&str],
    task: &str,
    stderr: Stdio,
) -> Child {
    let mut args = vec!["--results", results.to_str().unwrap(), "run"];
    args.extend_from_slice(extra);
    args.push(plan.to_str().unwrap());
    let child = bin(QA_RUN)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_until(task, Duration::from_secs(30), || {
        std::fs::read_dir(results)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| task_state(&e.ok()?.path(), task))
            == Some("running".into())
    });
    child
}

#[test]
fn local_smoke_shows_every_verdict_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = workspace().join("examples/plans/local-smoke.yaml");
    let out = bin(QA_RUN)
        .args([
            "--results",
            results.to_str().unwrap(),
            "--json",
            "run",
            plan.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed step exits 1; stderr: {stderr}"
    );

    // --json: every stdout line is an event with a schema version.
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert!(events.iter().all(|e| e["v"] == 1 && e["event"].is_string()));
    assert_eq!(events.first().unwrap()["event"], "run-started");
    assert_eq!(events.last().unwrap()["event"], "run-finished");
    assert_eq!(events.last().unwrap()["exit_code"], 1);

    let run_dir = only_run_dir(&results);
    let report = json(&run_dir.join("report.json"));
    assert_eq!(report["schema-version"], 1);
    assert_eq!(
        step_verdicts(&report),
        [
            ("01-build", "PASS"),
            ("02-check", "FAIL"),
            ("03-stress", "TIMEOUT"),
            ("04-report", "SKIPPED")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let check = &report["steps"][1];
    assert_eq!(check["exit-code"], 1);
    assert!(
        check["log-tail"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch")
    );

    // Logs and recordings of the steps that ran; none for the skipped one.
    let log = std::fs::read_to_string(run_dir.join("logs/box/01-build.log")).unwrap();
    assert!(log.contains("building 64 blocks on box"), "{log}");
    let cast = std::fs::read_to_string(run_dir.join("casts/box/01-build.cast")).unwrap();
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert!(cast.contains("build ok"));
    assert!(!run_dir.join("logs/box/04-report.log").exists());

    // Artifacts came back; the uploaded config too.
    let built =
        std::fs::read_to_string(run_dir.join("artifacts/box/out/build-report.txt")).unwrap();
    assert!(built.starts_with("blocks=64 checksum="), "{built}");
    assert!(
        run_dir
            .join("artifacts/box/config/fstests.config")
            .is_file()
    );

    // JUnit: one testcase per step, with a failure, an error (timeout) and a skip.
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 4, "{junit}");
    assert!(
        junit.contains("<failure") && junit.contains("<skipped"),
        "{junit}"
    );

    // The journal: finished, every task done, the sandbox destroyed.
    let state = json(&run_dir.join("state.json"));
    assert_eq!(state["status"], "finished");
    assert!(
        state["tasks"]
            .as_object()
            .unwrap()
            .values()
            .all(|t| t["state"] == "done")
    );
    let resources = state["resources"].as_array().unwrap();
    assert!(!resources.is_empty());
    assert!(
        resources.iter().all(|r| r["state"] == "destroyed"),
        "{resources:?}"
    );
    assert!(
        !run_dir.join("machines/box").exists(),
        "the sandbox is removed by teardown"
    );

    // The timed-out step forked workers; none survives.
    let left = processes_mentioning(run_dir.to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn plan_prints_the_graph_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = workspace().join("examples/plans/local-smoke.yaml");
    let out = run(&[
        "--results",
        results.to_str().unwrap(),
        "plan",
        "--format",
        "json",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = graph["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let pos = |id: &str| {
        ids.iter()
            .position(|x| *x == id)
            .unwrap_or_else(|| panic!("{id} missing from {ids:?}"))
    };
    assert!(pos("provision:box") < pos("upload:box"));
    assert!(pos("step:01-build@box") < pos("step:02-check@box"));
    assert!(pos("step:04-report@box") < pos("collect:box"));
    assert!(pos("collect:box") < pos("teardown:box"));

    let run_dir = only_run_dir(&results);
    let state = json(&run_dir.join("state.json"));
    assert_eq!(state["status"], "planned");
    assert!(
        state["resources"].as_array().unwrap().is_empty(),
        "planning creates nothing"
    );
    assert!(!run_dir.join("machines").exists());
    let script = std::fs::read_to_string(run_dir.join("plan/steps/box/01-build.sh")).unwrap();
    assert!(
        script.contains("export QA_SMOKE_SIZE='64'") && script.contains("building"),
        "{script}"
    );
    assert!(run_dir.join("plan/graph.dot").is_file());

    let dot = run(&[
        "--results",
        results.to_str().unwrap(),
        "plan",
        "--format",
        "dot",
        plan.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph"));
}

#[test]
fn validate_reports_every_problem_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_plan(
        tmp.path(),
        "bad",
        "  - name: a\n    command: true\n    depends_on: [b]\n  - name: a\n    comand: x\n",
        "",
    );
    let out = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("depends-on"), "typo hint expected: {err}");
    assert!(err.contains("command"), "second typo expected: {err}");
    assert!(err.contains("bad.yaml:"), "{err}");
    let good = workspace().join("examples/plans/local-smoke.yaml");
    let out = run(&["validate", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[test]
fn ctrl_c_interrupts_steps_runs_teardown_and_completes_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "sigint",
        "  - name: long\n    command: \"sleep 300 & sleep 300; wait\"\n    timeout: 10m\n  - name: later\n    command: \"true\"\n    depends-on: [long]\n",
        "",
    );
    let mut child = start_and_wait_for(&results, &plan, &[], "step:long@box", Stdio::piped());
    let run_dir = only_run_dir(&results);
    wait_until("the step's processes", Duration::from_secs(10), || {
        processes_mentioning("sleep 300").len() >= 2
    });
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));

    let state = json(&run_dir.join("state.json"));
    assert_eq!(state["status"], "interrupted");
    let tasks = state["tasks"].as_object().unwrap();
    assert!(tasks.values().all(|t| t["state"] == "done"), "{tasks:?}");
    assert_eq!(tasks["step:long@box"]["verdict"], "INTERRUPTED");
    assert_eq!(tasks["step:later@box"]["verdict"], "INTERRUPTED");
    assert_eq!(tasks["teardown:box"]["verdict"], "PASS");
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "destroyed")
    );
    assert_eq!(json(&run_dir.join("report.json"))["outcome"], "INTERRUPTED");
    let left = processes_mentioning(run_dir.to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn a_killed_run_is_cleaned_up_from_its_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "killed",
        // The step also leaves a process that moved out of the sandbox and its session.
        "  - name: long\n    command: \"(cd / && setsid sleep 3017 > /dev/null 2>&1 < /dev/null &); sleep 300\"\n",
        "",
    );
    let mut child = start_and_wait_for(&results, &plan, &[], "step:long@box", Stdio::null());
    wait_until(
        "the step's escaped process",
        Duration::from_secs(30),
        || !processes_mentioning("sleep 3017").is_empty(),
    );
    signal(&child, libc::SIGKILL);
    wait_exit(&mut child, Duration::from_secs(10));
    let run_dir = only_run_dir(&results);
    let state = json(&run_dir.join("state.json"));
    assert_eq!(
        state["status"], "running",
        "a killed run's journal says it was running"
    );
    let live: Vec<&Value> = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "created")
        .collect();
    assert_eq!(live.len(), 1, "{state}");
    let sandbox = PathBuf::from(
        live[0]["details"]["path"]
            .as_str()
            .expect("sandbox path in the journal"),
    );
    assert!(sandbox.is_dir());

    let out = run(&["cleanup", run_dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("destroyed"));
    assert!(!sandbox.exists(), "cleanup removes the sandbox");
    let state = json(&run_dir.join("state.json"));
    assert_eq!(state["status"], "cleaned-up");
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "destroyed")
    );
    let left = processes_mentioning(sandbox.to_str().unwrap());
    assert!(
        left.is_empty(),
        "cleanup also ends the orphaned step: {left:?}"
    );
    let left = processes_mentioning("sleep 3017");
    assert!(
        left.is_empty(),
        "and what it left running outside the sandbox: {left:?}"
    );
    // Idempotent.
    let again = run(&["cleanup", run_dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0));
}

/// The machine is kept when a step fails (`on-success`), so the resumed run reuses it; for a
/// machine that is gone, see `run_dirs::resume_on_a_new_machine_…`.
#[test]
fn resume_on_a_kept_machine_continues_without_rerunning_passed_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let counter = tmp.path().join("counter");
    let flag = tmp.path().join("flag");
    let steps = format!(
        "  - name: first\n    command: \"echo run >> {c}\"\n  - name: second\n    command: \"test -f {f}\"\n    depends-on: [first]\n  - name: third\n    command: \"echo run >> {c}.third\"\n    depends-on: [second]\n",
        c = counter.display(),
        f = flag.display()
    );
    let plan = write_plan(
        tmp.path(),
        "resume",
        &steps,
        "cleanup:\n  default: on-success\n",
    );
    let out = run(&[
        "--results",
        results.to_str().unwrap(),
        "run",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = only_run_dir(&results);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1
    );

    std::fs::write(&flag, "").unwrap();
    let out = run(&["resume", run_dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1,
        "a passed step is not run again"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{}.third", counter.display()))
            .unwrap()
            .lines()
            .count(),
        1
    );
    let report = json(&run_dir.join("report.json"));
    assert_eq!(report["outcome"], "PASS");
    assert!(step_verdicts(&report).iter().all(|(_, v)| v == "PASS"));
    // The step kept from the first run still points at its log.
    assert_eq!(report["steps"][0]["log"], "logs/box/first.log");
    // The kept machine was the resumed run's: everything passed, so `on-success` removed it.
    let state = json(&run_dir.join("state.json"));
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "destroyed"),
        "{state}"
    );
    assert!(!run_dir.join("machines/box").exists());
}

#[test]
fn secrets_are_passed_to_steps_and_masked_in_every_result_file() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "secret",
        "  - name: leak\n    command: \"echo token=$QA_E2E_TOKEN; exit 3\"\n",
        "secrets: [QA_E2E_TOKEN]\n",
    );
    let out = bin(QA_RUN)
        .env("QA_E2E_TOKEN", "s3cr3t-value-123")
        .args([
            "--results",
            results.to_str().unwrap(),
            "run",
            plan.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let run_dir = only_run_dir(&results);
    let log = std::fs::read_to_string(run_dir.join("logs/box/leak.log")).unwrap();
    assert!(
        log.contains("token=[REDACTED]"),
        "the step saw the secret, the log does not: {log}"
    );
    for f in [
        "logs/box/leak.log",
        "casts/box/leak.cast",
        "report.json",
        "junit.xml",
        "state.json",
    ] {
        let text = std::fs::read_to_string(run_dir.join(f)).unwrap();
        assert!(!text.contains("s3cr3t-value-123"), "{f} holds the secret");
    }
    // Without the secret in the environment the run refuses to start, creating nothing.
    let out = run(&[
        "--results",
        tmp.path().join("r2").to_str().unwrap(),
        "run",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("QA_E2E_TOKEN"));
}

#[test]
fn a_relative_sandbox_root_is_relative_to_the_plan_file() {
    let tmp = tempfile::tempdir().unwrap();
    let plans = tmp.path().join("plans");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&plans).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        &plans,
        "rooted",
        "  - name: broken\n    command: \"pwd; exit 1\"\n",
        "    local:\n      root: sandboxes\ncleanup:\n  default: on-success\n",
    );
    let out = bin(QA_RUN)
        .current_dir(&elsewhere)
        .args(["--results", results.to_str().unwrap(), "run"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        plans.join("sandboxes/box").is_dir(),
        "the kept sandbox is beside the plan"
    );
    assert!(!elsewhere.join("sandboxes").exists());
    let run_dir = only_run_dir(&results);
    let log = std::fs::read_to_string(run_dir.join("logs/broken@box.log"))
        .or_else(|_| std::fs::read_to_string(run_dir.join("logs/broken.log")))
        .unwrap_or_default();
    let report = std::fs::read_to_string(run_dir.join("report.json")).unwrap();
    let sandbox = plans.join("sandboxes/box").canonicalize().unwrap();
    assert!(
        log.contains(sandbox.to_str().unwrap()) || report.contains(sandbox.to_str().unwrap()),
        "the step ran in {}:\n{log}",
        sandbox.display()
    );
}

#[test]
fn cleanup_policy_on_success_keeps_a_failed_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "keep",
        "  - name: broken\n    command: \"exit 1\"\n",
        "cleanup:\n  default: on-success\n",
    );
    let out = run(&[
        "--results",
        results.to_str().unwrap(),
        "run",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let run_dir = only_run_dir(&results);
    assert!(
        run_dir.join("machines/box").is_dir(),
        "the failed machine is kept for debugging"
    );
    let state = json(&run_dir.join("state.json"));
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "kept")
    );
    assert_eq!(
        json(&run_dir.join("report.json"))["machines"][0]["kept"],
        true
    );
}

#[test]
fn a_run_whose_journal_is_lost_is_swept_by_test_id() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "lost",
        "  - name: long\n    command: \"sleep 300\"\n",
        "",
    );
    let mut child = start_and_wait_for(
        &results,
        &plan,
        &["--test-id", "lost-journal-1"],
        "step:long@box",
        Stdio::null(),
    );
    signal(&child, libc::SIGKILL);
    wait_exit(&mut child, Duration::from_secs(10));
    let run_dir = only_run_dir(&results);
    std::fs::remove_file(run_dir.join("state.json")).unwrap();
    let sandbox = run_dir.join("machines/box");
    assert!(sandbox.is_dir());

    // Another test id sweeps nothing.
    let out = run(&[
        "--results",
        results.to_str().unwrap(),
        "cleanup",
        "--test-id",
        "someone-else",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(sandbox.is_dir());

    let out = run(&[
        "--results",
        results.to_str().unwrap(),
        "cleanup",
        "--test-id",
        "lost-journal-1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("swept"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!sandbox.exists());
    assert!(processes_mentioning(sandbox.to_str().unwrap()).is_empty());
}

#[test]
fn results_are_published_to_the_plans_targets_and_the_site_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "published",
        "  - name: ok\n    command: \"echo fine\"\n  - name: broken\n    command: \"echo '<script>alert(1)</script>'; exit 2\"\n",
        "publish:\n  - markdown:\n      path: out/summary.md\n  - site:\n      dir: out/site\n",
    );
    let out = run(&[
        "--results",
        results.to_str().unwrap(),
        "run",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(tmp.path().join("out/summary.md")).unwrap();
    assert!(md.contains("broken") && md.contains("FAIL"), "{md}");
    let index = std::fs::read_to_string(tmp.path().join("out/site/index.html")).unwrap();
    assert!(index.contains("published"), "the plan's run is on the site");

    // Publishing again and rebuilding the site from stored reports need no re-run.
    let run_dir = only_run_dir(&results);
    std::fs::remove_file(tmp.path().join("out/summary.md")).unwrap();
    let out = run(&["publish", run_dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("out/summary.md").is_file());
    let site = tmp.path().join("site2");
    let out = run(&[
        "report",
        results.to_str().unwrap(),
        "--site",
        site.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(site.join("index.html")).unwrap();
    assert!(
        index.contains(run_dir.file_name().unwrap().to_str().unwrap())
            || index.contains("published")
    );
    // Logs and reports are kept as data files (.txt, .json); every page and script escapes them.
    let pages: String = walk(&site)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "html" || e == "js"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert!(
        pages.contains("alert(1)"),
        "the failing step's output is shown on the site"
    );
    assert!(
        !pages.contains("<script>alert(1)</script>"),
        "printed markup is escaped in every page and script"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn published_site_files_are_readable_by_a_web_server() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "perm",
        "  - name: ok\n    command: \"true\"\n",
        "",
    );
    assert_eq!(
        run(&[
            "--results",
            results.to_str().unwrap(),
            "run",
            plan.to_str().unwrap()
        ])
        .status
        .code(),
        Some(0)
    );
    let site = tmp.path().join("site");
    assert_eq!(
        run(&[
            "report",
            results.to_str().unwrap(),
            "--site",
            site.to_str().unwrap()
        ])
        .status
        .code(),
        Some(0)
    );
    for f in walk(&site) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o044,
            0o044,
            "{} is not world-readable ({mode:o})",
            f.display()
        );
    }
}

#[test]
fn a_plan_runs_on_an_existing_host_over_ssh_and_releases_its_lease() {
    let Some(sshd) = qa_testkit::TestSshd::start_or_skip() else {
        return;
    };
    let t = sshd.target();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let leases = tmp.path().join("leases");
    std::fs::write(tmp.path().join("input.txt"), "uploaded over sftp\n").unwrap();
    let inventory = format!(
        "inventory:\n  - name: lab1\n    host: {}\n    port: {}\n    user: {}\n    identity-file: {}\n    require-commands: [sh, cat]\n    min-free-mib: 1\nfiles:\n  - src: input.txt\n    dest: in/input.txt\nartifacts:\n  - paths: [\"out/*\"]\n",
        t.host,
        t.port,
        t.user,
        t.identity_file.as_ref().unwrap().display()
    );
    let p = tmp.path().join("ssh.yaml");
    std::fs::write(
        &p,
        format!(
            "name: over-ssh\nmachines:\n  - name: box\n    static:\n      hosts: [lab1]\n{inventory}steps:\n  - name: remote\n    command: \"mkdir -p out && cat in/input.txt > out/copy.txt && echo on $QA_RUN_MACHINE in $PWD\"\n  - name: fails\n    command: \"echo nope >&2; exit 4\"\n    after: [remote]\n"
        ),
    )
    .unwrap();
    let out = bin(QA_RUN)
        .env("QA_RUN_LEASE_DIR", &leases)
        .args([
            "--results",
            results.to_str().unwrap(),
            "--known-hosts",
            sshd.known_hosts().to_str().unwrap(),
            "run",
            p.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let run_dir = only_run_dir(&results);
    let report = json(&run_dir.join("report.json"));
    assert_eq!(
        step_verdicts(&report),
        vec![
            ("remote".to_string(), "PASS".to_string()),
            ("fails".to_string(), "FAIL".to_string())
        ]
    );
    assert_eq!(report["steps"][1]["exit-code"], 4);
    let log = std::fs::read_to_string(run_dir.join("logs/box/remote.log")).unwrap();
    assert!(log.contains("on box in /tmp/qa-run/"), "{log}");
    assert_eq!(
        std::fs::read_to_string(run_dir.join("artifacts/box/out/copy.txt")).unwrap(),
        "uploaded over sftp\n"
    );
    assert_eq!(report["machines"][0]["backend"], "static");
    // One login for the whole run: the host's verification, the upload, both steps and the
    // collection share it.
    assert_eq!(
        sshd.log().matches("Accepted publickey").count(),
        1,
        "{}",
        sshd.log()
    );
    let state = json(&run_dir.join("state.json"));
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "destroyed")
    );
    assert_eq!(
        std::fs::read_dir(&leases).unwrap().count(),
        0,
        "the lease is released"
    );

    // An unknown host key stops the run as an infrastructure error, naming the fingerprint.
    let out = bin(QA_RUN)
        .env("QA_RUN_LEASE_DIR", &leases)
        .args([
            "--results",
            results.to_str().unwrap(),
            "--known-hosts",
            tmp.path().join("empty").to_str().unwrap(),
            "run",
            p.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SHA256:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_leaves_a_journal_cleanup_can_use() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    // The step ignores SIGTERM, so stopping it takes the executor's grace period: time enough for
    // the second interrupt to arrive while the first is still being handled.
    let plan = write_plan(
        tmp.path(),
        "twice",
        "  - name: long\n    command: \"trap '' TERM; sleep 300\"\n",
        "",
    );
    let mut child = start_and_wait_for(&results, &plan, &[], "step:long@box", Stdio::null());
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    let run_dir = only_run_dir(&results);
    let state = json(&run_dir.join("state.json"));
    assert_eq!(state["status"], "aborted");
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "created"),
        "teardown did not run: {state}"
    );
    let out = run(&["cleanup", run_dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(processes_mentioning(run_dir.to_str().unwrap()).is_empty());
}
