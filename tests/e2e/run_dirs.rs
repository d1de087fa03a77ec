//! Hostile uses of run directories through the real binary: cleanup, resume and publish of a
//! live run are refused and leave it running; run ids that would write outside `--results` (or
//! into its root) and run ids already taken are refused with exit 2; a resumed run whose machine
//! is gone runs again what had passed on it and keeps every attempt's log.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use qa_testkit::cli::{json, only_run_dir, wait_until, write_plan};
use qa_testkit::procs::processes_mentioning;

use super::{run, signal, start_and_wait_for, stderr_of, step_verdicts, task_state, wait_exit};

#[test]
fn cleanup_resume_and_publish_of_a_live_run_are_refused_and_it_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "live",
        "  - name: long\n    command: \"sleep 307\"\n    timeout: 10m\n",
        "",
    );
    let mut child = start_and_wait_for(&results, &plan, &[], "step:long@box", Stdio::null());
    let run_dir = only_run_dir(&results);
    let dir = run_dir.to_str().unwrap();
    // Once `sleep` itself runs, the step starts no more processes.
    wait_until("the step's sleep", Duration::from_secs(10), || {
        processes_mentioning("sleep 307")
            .iter()
            .any(|p| p.contains(": sleep 307"))
    });
    let step_processes = processes_mentioning("sleep 307");
    let holder = format!("in use by qa-run run (pid {} on ", child.id());
    for (command, verb) in [
        ("cleanup", "clean up"),
        ("resume", "resume"),
        ("publish", "publish"),
    ] {
        let out = run(&["--results", results.to_str().unwrap(), command, dir]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.starts_with(&format!("error: cannot {verb} {dir}: "))
                && err.contains(&holder)
                && err.contains(&format!("kill -INT {}", child.id())),
            "{command}: {err}"
        );
    }
    // Nothing of the run was touched: its step still runs, its machine is there.
    assert_eq!(
        task_state(&run_dir, "step:long@box").as_deref(),
        Some("running")
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run is still going"
    );
    assert_eq!(processes_mentioning("sleep 307"), step_processes);
    let state = json(&run_dir.join("state.json"));
    assert_eq!(state["status"], "running");
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "created"),
        "{state}"
    );

    signal(&child, libc::SIGINT);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).code(),
        Some(130)
    );
    // Once it has ended, its directory is free.
    let out = run(&["cleanup", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn run_ids_that_are_not_one_safe_path_component_are_refused_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "ids",
        "  - name: s\n    command: \"true\"\n",
        "",
    );
    let abs = tmp.path().join("elsewhere");
    for id in ["../..", abs.to_str().unwrap(), "", "a/b"] {
        let out = run(&[
            "--results",
            results.to_str().unwrap(),
            "run",
            "--run-id",
            id,
            plan.to_str().unwrap(),
        ]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{id:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: run id {id:?} cannot name a run directory: "
            )) && err.contains("use letters, digits, `.`, `_` and `-`"),
            "{id:?}: {err}"
        );
    }
    let made: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(made, ["ids.yaml"], "nothing was made anywhere");
}

#[test]
fn a_reused_run_id_is_refused_and_the_first_run_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "again",
        "  - name: s\n    command: \"true\"\n",
        "",
    );
    let args = [
        "--results",
        results.to_str().unwrap(),
        "run",
        "--run-id",
        "nightly-1",
        plan.to_str().unwrap(),
    ];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let run_dir = results.join("nightly-1");
    let files = ["state.json", "report.json", "logs/box/s.log"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(run_dir.join(f)).unwrap())
        .collect();

    let out = run(&args);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "run id `nightly-1` is taken: {} already exists",
            run_dir.display()
        )) && err.contains("choose another run id"),
        "{err}"
    );
    for (f, bytes) in files.iter().zip(before) {
        assert_eq!(std::fs::read(run_dir.join(f)).unwrap(), bytes, "{f}");
    }
    assert_eq!(only_run_dir(&results), run_dir);
}

#[test]
fn resume_on_a_new_machine_runs_again_what_passed_on_the_old_one_and_keeps_both_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let counter = tmp.path().join("counter");
    let flag = tmp.path().join("flag");
    // `check` needs what `build` left on the machine; the first run fails at `check` and its
    // machine is destroyed (the default cleanup policy), so the resumed run gets a new one.
    let steps = format!(
        "  - name: build\n    command: \"echo run >> {c}; echo built > out.txt; echo building\"\n  - name: check\n    command: \"echo checking; test -f out.txt && test -f {f}\"\n    depends-on: [build]\n",
        c = counter.display(),
        f = flag.display()
    );
    let plan = write_plan(tmp.path(), "regone", &steps, "");
    let out = run(&[
        "--results",
        results.to_str().unwrap(),
        "run",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let run_dir = only_run_dir(&results);
    let state = json(&run_dir.join("state.json"));
    assert!(
        state["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "destroyed"),
        "{state}"
    );
    let check_log = std::fs::read(run_dir.join("logs/box/check.log")).unwrap();

    std::fs::write(&flag, "").unwrap();
    let out = run(&["resume", run_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2,
        "`build` passed on a machine that is gone: it ran again on the new one"
    );
    let report = json(&run_dir.join("report.json"));
    assert_eq!(report["outcome"], "PASS");
    assert!(step_verdicts(&report).iter().all(|(_, v)| v == "PASS"));
    assert_eq!(report["steps"][0]["log"], "logs/box/build~2.log");
    assert_eq!(report["steps"][1]["cast"], "casts/box/check~2.cast");

    // Both attempts' logs and recordings are kept; the first's unchanged.
    assert_eq!(
        std::fs::read(run_dir.join("logs/box/check.log")).unwrap(),
        check_log
    );
    for f in [
        "logs/box/build.log",
        "logs/box/build~2.log",
        "casts/box/build.cast",
        "casts/box/build~2.cast",
    ] {
        let text = std::fs::read_to_string(run_dir.join(f)).unwrap();
        assert!(text.contains("building"), "{f}: {text}");
    }
    assert!(
        std::fs::read_to_string(run_dir.join("logs/box/check~2.log"))
            .unwrap()
            .contains("attempt 2")
    );
    assert_no_lock_holder(&run_dir);
}

/// The lock file of an ended run names nobody.
fn assert_no_lock_holder(run_dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(run_dir.join(qa_core::engine::LOCK_FILE)).unwrap(),
        ""
    );
}
