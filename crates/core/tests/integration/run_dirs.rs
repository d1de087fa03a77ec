//! Run directories are protected: a run id is one safe path component and never reused, one
//! process at a time works in a run directory (a live run refuses resume, cleanup and publish,
//! naming itself), and a resumed run runs again what passed on a machine that is gone, keeping
//! every attempt's log and recording.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use qa_core::conformance::fakes::FakeProvisioner;
use qa_core::engine::{Engine, EngineError, RunOptions, StepContext, StepOutcome, StepType};
use qa_core::exit;
use qa_core::journal::{RunStatus, read_state};
use qa_core::types::ResourceState;

use crate::LocalDirs;

fn engine(dir: &Path) -> Engine {
    Engine::new()
        .provisioner(Arc::new(
            FakeProvisioner::new().with_workdir_root(dir.join("machines")),
        ))
        .connector(Arc::new(LocalDirs))
}

fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_id_that_is_not_one_safe_path_component_is_refused_and_nothing_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        "p.yaml",
        "name: p\nmachines: [{name: box}]\nsteps: [{name: s, command: \"true\"}]\n",
    );
    let loaded = crate::load_file(&plan).unwrap();
    let outside = dir.path().join("outside");
    let results = dir.path().join("results");
    for id in [
        "../..",
        "..",
        "",
        "a/b",
        outside.to_str().unwrap(),
        ".hidden",
    ] {
        let opts = || RunOptions::new(&results).run_id(id);
        for e in [
            engine(dir.path())
                .prepare(&loaded, opts())
                .await
                .unwrap_err(),
            engine(dir.path())
                .plan_only(&loaded, opts())
                .await
                .unwrap_err(),
        ] {
            let EngineError::RunId(why) = &e else {
                panic!("{id:?}: {e:?}")
            };
            assert_eq!(why.id, id);
            assert_eq!(e.exit_code(), exit::BAD_PLAN_OR_USAGE);
            assert!(e.to_string().contains("cannot name a run directory"), "{e}");
        }
    }
    assert_eq!(listing(dir.path()), ["p.yaml"], "nothing was made anywhere");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_run_id_is_refused_and_the_earlier_run_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        "p.yaml",
        "name: p\nmachines: [{name: box}]\nsteps: [{name: s, command: \"echo first run\"}]\n",
    );
    let loaded = crate::load_file(&plan).unwrap();
    let results = dir.path().join("results");
    let e = engine(dir.path());
    let summary = e
        .prepare(&loaded, RunOptions::new(&results).run_id("r1"))
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0);
    let run_dir = results.join("r1");
    let before: Vec<(String, Vec<u8>)> = ["state.json", "report.json", "logs/box/s.log"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(run_dir.join(f)).unwrap()))
        .collect();

    let again = e
        .prepare(&loaded, RunOptions::new(&results).run_id("r1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, EngineError::RunExists { run_id, run_dir: d } if run_id == "r1" && d == &run_dir),
        "{again:?}"
    );
    assert_eq!(again.exit_code(), exit::BAD_PLAN_OR_USAGE);
    let text = again.to_string();
    assert!(
        text.contains("run id `r1` is taken") && text.contains("qa-run resume"),
        "{text}"
    );
    let planned = e
        .plan_only(&loaded, RunOptions::new(&results).run_id("r1"))
        .await
        .unwrap_err();
    assert!(
        matches!(planned, EngineError::RunExists { .. }),
        "{planned:?}"
    );
    for (f, bytes) in before {
        assert_eq!(std::fs::read(run_dir.join(&f)).unwrap(), bytes, "{f}");
    }
    assert_eq!(listing(&results), ["r1"]);
}

/// While it runs, tries to clean up, resume and publish the run it is a step of; passes only if
/// each is refused with the run named as the holder.
struct ProbeOwnRun {
    run_dir: Arc<Mutex<Option<PathBuf>>>,
    other: Engine,
}

#[async_trait]
impl StepType for ProbeOwnRun {
    async fn run(&self, _ctx: StepContext) -> StepOutcome {
        let run_dir = self.run_dir.lock().unwrap().clone().unwrap();
        let refusals = [
            self.other.cleanup(&run_dir).await.err(),
            self.other
                .prepare_resume(&run_dir, RunOptions::new(run_dir.parent().unwrap()))
                .await
                .err(),
            self.other
                .publish_again(&run_dir, &RunOptions::new(run_dir.parent().unwrap()))
                .await
                .err(),
        ];
        for r in refusals {
            match r {
                Some(EngineError::RunInUse {
                    holder: Some(h), ..
                }) if h.pid == std::process::id() && h.command == "run" => {}
                other => {
                    return StepOutcome::Fail {
                        reason: format!("not refused as in use by the run: {other:?}"),
                    };
                }
            }
        }
        StepOutcome::pass()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_run_refuses_cleanup_resume_and_publish_naming_itself_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(
        dir.path(),
        "p.yaml",
        "name: p\nmachines: [{name: box}]\nsteps: [{name: probe, uses: probe}]\n",
    );
    let loaded = crate::load_file(&plan).unwrap();
    let results = dir.path().join("results");
    let run_dir_slot = Arc::new(Mutex::new(None));
    let e = engine(dir.path()).step_type(
        "probe",
        Arc::new(ProbeOwnRun {
            run_dir: run_dir_slot.clone(),
            other: engine(dir.path()),
        }),
    );
    let run = e.prepare(&loaded, RunOptions::new(&results)).await.unwrap();
    let run_dir = run.run_dir.clone();
    *run_dir_slot.lock().unwrap() = Some(run_dir.clone());

    // Prepared, not yet executing: the run already holds its directory.
    let other = engine(dir.path());
    let opts = RunOptions::new(&results);
    let refused = [
        ("clean up", other.cleanup(&run_dir).await.unwrap_err()),
        (
            "resume",
            other
                .prepare_resume(&run_dir, opts.clone())
                .await
                .unwrap_err(),
        ),
        (
            "publish",
            other.publish_again(&run_dir, &opts).await.unwrap_err(),
        ),
    ];
    for (what, e) in refused {
        let EngineError::RunInUse {
            wanted,
            holder: Some(holder),
            run_dir: d,
        } = &e
        else {
            panic!("{what}: {e:?}")
        };
        assert_eq!((*wanted, d), (what, &run_dir));
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.command, "run");
        assert_eq!(e.exit_code(), exit::BAD_PLAN_OR_USAGE);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot {what} {}: it is in use by ",
                run_dir.display()
            )) && text.contains(&format!("run (pid {} on ", std::process::id()))
                && text.contains("wait for it to end"),
            "{text}"
        );
    }
    let state = read_state(&run_dir.join("state.json")).unwrap();
    assert_eq!(
        state.status,
        RunStatus::Running,
        "the refusals changed nothing"
    );

    // Executing: the probe step, refused in turn, passes.
    let summary = run.execute().await.unwrap();
    assert_eq!(summary.exit_code, 0, "{:?}", summary.report.steps);

    // Ended: the directory is free.
    other.cleanup(&run_dir).await.unwrap();
    let published = other.publish_again(&run_dir, &opts).await.unwrap_err();
    assert!(
        matches!(&published, EngineError::Republish(m) if m.contains("no `publish:` targets")),
        "past the lock, publishing stops at the plan: {published:?}"
    );
    let resumed = e.prepare_resume(&run_dir, opts.clone()).await.unwrap();
    drop(resumed);
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_resume_and_publish_refuse_what_is_not_a_run_directory_and_make_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_run = dir.path().join("somewhere");
    std::fs::create_dir(&not_a_run).unwrap();
    let e = engine(dir.path());
    let opts = RunOptions::new(dir.path());
    for err in [
        e.cleanup(&not_a_run).await.unwrap_err(),
        e.prepare_resume(&not_a_run, opts.clone())
            .await
            .unwrap_err(),
        e.publish_again(&not_a_run, &opts).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, EngineError::NotARunDir { path } if path == &not_a_run),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), exit::BAD_PLAN_OR_USAGE);
    }
    assert!(
        listing(&not_a_run).is_empty(),
        "no lock file was left there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_runs_again_what_passed_on_a_machine_that_is_gone_and_keeps_every_attempts_files() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let counts = dir.path().join("counts");
    std::fs::create_dir(&counts).unwrap();
    // `gone` is destroyed when the first run ends; `kept` is kept, since a step failed on it (its
    // role's policy), so the resumed run reuses it.
    let plan = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: p
machines: [{{name: gone}}, {{name: kept, role: keeper}}]
cleanup: {{default: always, roles: {{keeper: on-success}}}}
steps:
  - name: first
    command: 'echo ran >> {counts}/$QA_RUN_MACHINE; echo "first on $QA_RUN_MACHINE"'
  - name: second
    command: 'echo "second on $QA_RUN_MACHINE"; test -f {flag}'
    depends-on: [first]
"#,
            counts = counts.display(),
            flag = flag.display()
        ),
    );
    let loaded = crate::load_file(&plan).unwrap();
    let results = dir.path().join("results");
    let e = engine(dir.path());
    let first = e
        .prepare(&loaded, RunOptions::new(&results))
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(first.exit_code, exit::TEST_FAILED);
    let run_dir = first.run_dir;
    let state = read_state(&run_dir.join("state.json")).unwrap();
    assert!(!state.machine_survives("gone"));
    assert!(state.machine_survives("kept"));
    let first_second_log = std::fs::read(run_dir.join("logs/gone/second.log")).unwrap();

    std::fs::write(&flag, "").unwrap();
    let resumed = e
        .prepare_resume(&run_dir, RunOptions::new(&results))
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(resumed.exit_code, 0, "{:?}", resumed.report.steps);

    let runs = |m: &str| {
        std::fs::read_to_string(counts.join(m))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(runs("gone"), 2, "on the new machine, `first` ran again");
    assert_eq!(runs("kept"), 1, "on the reused machine, it did not");

    // Every attempt's files are kept, the first run's unchanged.
    let read = |rel: &str| {
        std::fs::read_to_string(run_dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    assert!(read("logs/gone/first.log").contains("first on gone"));
    assert!(read("logs/gone/first~2.log").contains("first on gone"));
    assert!(read("casts/gone/first.cast").contains("first on gone"));
    assert!(read("casts/gone/first~2.cast").contains("first on gone"));
    assert_eq!(
        std::fs::read(run_dir.join("logs/gone/second.log")).unwrap(),
        first_second_log
    );
    let second_again = read("logs/gone/second~2.log");
    assert!(
        second_again.contains("attempt 2") && second_again.contains("second on gone"),
        "{second_again}"
    );
    assert!(read("logs/kept/second~2.log").contains("second on kept"));
    assert!(!run_dir.join("logs/kept/first~2.log").exists());

    // The report points at each step's latest attempt, a step kept from the first run too.
    let step = |name: &str, machine: &str| {
        resumed
            .report
            .steps
            .iter()
            .find(|s| s.step == name && s.machine == machine)
            .unwrap()
            .clone()
    };
    let files = |name: &str, machine: &str| {
        let s = step(name, machine);
        (s.log.unwrap(), s.cast.unwrap())
    };
    assert_eq!(
        files("first", "gone"),
        (
            "logs/gone/first~2.log".to_string(),
            "casts/gone/first~2.cast".to_string()
        )
    );
    assert_eq!(
        files("first", "kept"),
        (
            "logs/kept/first.log".to_string(),
            "casts/kept/first.cast".to_string()
        )
    );
    assert_eq!(step("first", "kept").attempts, 0, "kept from the first run");
    assert_eq!(files("second", "kept").0, "logs/kept/second~2.log");

    // The reused machine was the resumed run's: its teardown decided again, and as every step
    // passed this time, `on-success` destroyed it.
    let state = read_state(&run_dir.join("state.json")).unwrap();
    assert!(
        state
            .resources
            .iter()
            .all(|r| r.state == ResourceState::Destroyed),
        "{:?}",
        state.resources
    );
}
