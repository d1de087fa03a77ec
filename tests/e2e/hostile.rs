//! Hostile plans and outputs, with the exact outcome each must have: a step that floods its log,
//! names and output made of terminal escape sequences, paths that are not what a command needs,
//! a run directory that was only planned, a cleanup of many machines, and a step that leaves a
//! process running.

use std::path::Path;

use qa_testkit::cli::{bin, json, only_run_dir, write_plan};
use qa_testkit::procs::processes_mentioning;

use super::{QA_RUN, run, stderr_of};

fn results_arg(results: &Path) -> &str {
    results.to_str().unwrap()
}

/// Fails if `text` holds a character that acts on a terminal (escape, carriage return, bell).
fn assert_no_terminal_controls(text: &str) {
    for c in ['\x1b', '\r', '\x07'] {
        assert!(!text.contains(c), "{c:?} reached the terminal: {text:?}");
    }
}

/// `qa-run --results RESULTS run PLAN`.
fn run_plan(results: &Path, plan: &Path) -> std::process::Output {
    bin(QA_RUN)
        .args([
            "--results",
            results_arg(results),
            "run",
            plan.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

/// Lines of a log without their time prefix (`[    0.001s] `).
fn entries(log: &str) -> Vec<&str> {
    log.lines().map(|l| &l[13..]).collect()
}

// Regression: 300 MB of step output became 700 MB on disk and `qa-run report` then took 2.5 GB
// of memory; nothing bounded a step's log.
#[test]
fn a_flooding_step_keeps_the_head_and_tail_of_its_output_within_its_log_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "flood",
        "  - name: flood\n    command: seq 1 200000\n  - name: quiet\n    command: echo fine\n    log-limit: 1MiB\n",
        "defaults:\n  log-limit: 64KiB\n",
    );
    let out = run_plan(&results, &plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let run_dir = only_run_dir(&results);
    let log_path = run_dir.join("logs/box/flood.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.len() <= 64 << 10, "{}", log.len());
    let lines = entries(&log);
    let marker = lines
        .iter()
        .position(|l| l.starts_with('#'))
        .expect("a marker says what was left out");
    // The head is every line from 1, the tail every line to 200000, each without a gap.
    let numbers = |ls: &[&str]| -> Vec<u32> {
        ls.iter()
            .map(|l| l.strip_prefix("| ").unwrap().parse().unwrap())
            .collect()
    };
    let (head, tail) = (numbers(&lines[..marker]), numbers(&lines[marker + 1..]));
    assert_eq!(head, (1..=head.len() as u32).collect::<Vec<_>>());
    assert_eq!(
        tail,
        (200_001 - tail.len() as u32..=200_000).collect::<Vec<_>>()
    );
    let left_out = 200_000 - head.len() - tail.len();
    assert!(
        lines[marker].contains(&format!("bytes of log ({left_out} lines) left out here")),
        "{}",
        lines[marker]
    );
    assert!(
        lines[marker].ends_with("within log-limit 64KiB"),
        "{}",
        lines[marker]
    );
    let cast = std::fs::read_to_string(run_dir.join("casts/box/flood.cast")).unwrap();
    assert!(cast.len() <= 64 << 10, "{}", cast.len());
    assert!(cast.contains("pieces of output left out here"));
    // A step's own limit wins over the default, and a quiet step is untouched.
    let quiet = std::fs::read_to_string(run_dir.join("logs/box/quiet.log")).unwrap();
    assert_eq!(entries(&quiet), ["| fine"]);

    // The site carries the log as the run kept it (streamed, not loaded whole).
    let out = run(&["--results", results_arg(&results), "report"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        stderr_of(&out).lines().next().unwrap(),
        format!(
            "site rebuilt in {}: 1 run(s) of 1 plan(s)",
            results.join("site").display()
        )
    );
    let run_name = run_dir.file_name().unwrap();
    let copy = std::fs::read_to_string(
        results
            .join("site/runs")
            .join(run_name)
            .join("steps/0-box-flood.log.txt"),
    )
    .unwrap();
    assert_eq!(copy, log);
}

#[test]
fn a_log_limit_below_the_minimum_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = write_plan(
        tmp.path(),
        "small",
        "  - name: s\n    command: \"true\"\n    log-limit: 100\n",
        "defaults:\n  log-limit: 12 parsecs\n",
    );
    let out = run(&["validate", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("defaults.log-limit: `12 parsecs` is not a size: unknown unit `parsecs`"),
        "{err}"
    );
    assert!(
        err.contains("steps[0].log-limit: 100B is too small: expected a size of at least 4KiB"),
        "{err}"
    );
}

// Regression: control characters in names could fake or erase summary lines, and escape
// sequences in output (clipboard writes, title changes) reached the terminal. Names holding them
// are now refused when the plan loads; the refusal itself prints them escaped.
#[test]
fn names_and_messages_cannot_act_on_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = tmp.path().join("evil.yaml");
    std::fs::write(
        &plan,
        concat!(
            "name: \"evil\\e]0;owned\\a\"\n",
            "machines:\n  - name: \"box\\e[31m\"\n",
            "steps:\n",
            "  - name: \"s\\r\\e[2KPASS\\nfake\"\n",
            "    command: \"true\"\n",
        ),
    )
    .unwrap();
    let out = run_plan(&results, &plan);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert_no_terminal_controls(&err);
    assert!(
        err.contains("holds the invisible character U+001B"),
        "{err}"
    );

    // Output: a clipboard write reaches the log, not the terminal.
    let plan = tmp.path().join("output.yaml");
    std::fs::write(
        &plan,
        concat!(
            "name: output\n",
            "machines:\n  - name: box\n",
            "steps:\n",
            "  - name: s\n",
            "    command: \"printf '\\\\033]52;c;ZWNobyBoaQ==\\\\007'; exit 3\"\n",
        ),
    )
    .unwrap();
    let out = run_plan(&results, &plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert_no_terminal_controls(&err);
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("FAIL") && l.contains("s@box")),
        "{err}"
    );
    // The log keeps the output as it was: it is a file, not a terminal.
    let run_dir = only_run_dir(&results);
    let report = json(&run_dir.join("report.json"));
    let log =
        std::fs::read_to_string(run_dir.join(report["steps"][0]["log"].as_str().unwrap())).unwrap();
    assert!(log.contains("\x1b]52;c;ZWNobyBoaQ==\x07"));
}

// Regression: usage errors exited 3 (infrastructure) instead of 2.
#[test]
fn paths_that_are_not_what_a_command_needs_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let plan = write_plan(tmp.path(), "p", "  - name: s\n    command: \"true\"\n", "");
    let missing = tmp.path().join("no-such-run");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["resume", missing.to_str().unwrap()],
            format!(
                "error: {}: does not exist: give the directory of a run, `<results>/<run-id>`",
                missing.display()
            ),
        ),
        (
            vec!["cleanup", tmp.path().to_str().unwrap()],
            format!(
                "error: {}: is not a run directory: it has no state.json;",
                tmp.path().display()
            ),
        ),
        (
            vec!["publish", file.to_str().unwrap()],
            format!("error: {}: is a file, not a run directory", file.display()),
        ),
        (
            vec![
                "--results",
                file.to_str().unwrap(),
                "run",
                plan.to_str().unwrap(),
            ],
            format!(
                "error: {}: is a file, not a directory: give a directory for the results (it is made if missing)",
                file.display()
            ),
        ),
        (
            vec![
                "--results",
                file.to_str().unwrap(),
                "plan",
                plan.to_str().unwrap(),
            ],
            format!("error: {}: is a file, not a directory", file.display()),
        ),
        (
            vec!["report", file.to_str().unwrap()],
            format!(
                "error: {}: is a file, not a results directory",
                file.display()
            ),
        ),
    ];
    for (args, expected) in cases {
        let out = run(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(&expected),
            "{args:?}:\n{err}\nexpected:\n{expected}"
        );
    }
}

// Regression: `qa-run plan` made a run directory that `qa-run resume` then ran.
#[test]
fn a_run_directory_that_was_only_planned_is_not_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(tmp.path(), "p", "  - name: s\n    command: \"true\"\n", "");
    let out = run(&[
        "--results",
        results_arg(&results),
        "plan",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("(a plan only: it cannot be resumed; `qa-run run` runs it)"));
    let run_dir = only_run_dir(&results);
    let out = run(&["resume", run_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_of(&out).trim_end(),
        format!(
            "error: {} was only planned (`qa-run plan`), never run: there is nothing to resume; start a run with `qa-run run {}`",
            run_dir.display(),
            plan.display()
        )
    );
    assert_eq!(json(&run_dir.join("state.json"))["status"], "planned");
    assert!(!run_dir.join("logs").exists(), "nothing ran");
}

#[test]
fn cleanup_says_how_many_resources_are_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = tmp.path().join("many.yaml");
    std::fs::write(
        &plan,
        "name: many\nmachines:\n  - name: box\n    count: 5\nsteps:\n  - name: s\n    command: \"true\"\ncleanup:\n  default: never\n",
    )
    .unwrap();
    let out = run_plan(&results, &plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let run_dir = only_run_dir(&results);
    let out = run(&["cleanup", run_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"removing 5 resource(s) the journal lists")
    );
    assert_eq!(lines.last(), Some(&"removed 5 of 5 (100%)"));
    let destroyed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("destroyed local sandbox"))
        .count();
    assert_eq!(destroyed, 5);
}

#[test]
fn what_a_step_left_running_is_ended_and_named_in_its_result() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = write_plan(
        tmp.path(),
        "leaves",
        "  - name: leaves\n    command: \"setsid sleep 3023 > /dev/null 2>&1 < /dev/null & echo started\"\n",
        "",
    );
    let out = run_plan(&results, &plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let report = json(&only_run_dir(&results).join("report.json"));
    let step = &report["steps"][0];
    assert_eq!(step["verdict"], "PASS", "{step}");
    let message = step["message"].as_str().unwrap_or_default();
    assert!(
        // Named by its command line, or by its name (`[sleep]`) if it was caught in the middle
        // of its exec, when the command line reads empty.
        message.starts_with("ended 1 process the command left running: ")
            && (message.ends_with("sleep 3023)") || message.ends_with("([sleep])")),
        "{step}"
    );
    assert_eq!(processes_mentioning("sleep 3023"), Vec::<String>::new());
}
