//! What an embedding program gets from a run: its events as an async stream (every task's start
//! and end, each line of step output where the log has it, in order, ending with the run), and
//! setup problems it can walk, each with its kind and place; everything a run needs is given in
//! code.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use qa_core::conformance::fakes::FakeProvisioner;
use qa_core::engine::{
    Engine, EngineError, RunOptions, SetupProblemKind, StepContext, StepOutcome, StepType,
};
use qa_core::events::{Event, EventRecord, TaskKind};
use qa_core::remote::OutputStream;

use crate::LocalDirs;

/// Writes three lines through the step's output handle and passes.
struct Talks;

#[async_trait]
impl StepType for Talks {
    async fn run(&self, ctx: StepContext) -> StepOutcome {
        ctx.output
            .output(OutputStream::Stdout, b"custom one\ncustom two\n");
        ctx.output.output(OutputStream::Stderr, b"custom three\n");
        StepOutcome::pass()
    }
}

fn engine(dir: &Path) -> Engine {
    Engine::new()
        .provisioner(Arc::new(
            FakeProvisioner::new().with_workdir_root(dir.join("machines")),
        ))
        .connector(Arc::new(LocalDirs))
        .step_type("talks", Arc::new(Talks))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_has_every_task_and_each_output_line_in_order_and_ends_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.yaml");
    std::fs::write(
        &path,
        r#"name: events
machines: [{name: a}, {name: b}]
steps:
  - name: count
    command: 'i=1; while [ $i -le 200 ]; do echo "line $i"; i=$((i+1)); done; echo oops >&2'
  - {name: custom, uses: talks, depends-on: [count]}
"#,
    )
    .unwrap();
    let mut run = engine(dir.path())
        .prepare(
            &crate::load_file(&path).unwrap(),
            RunOptions::new(dir.path().join("results")),
        )
        .await
        .unwrap();
    let mut stream = run.events();
    let tasks: Vec<String> = run.graph().nodes().map(|n| n.id.clone()).collect();
    let reader = tokio::spawn(async move {
        let mut all: Vec<EventRecord> = Vec::new();
        while let Some(r) = stream.next().await {
            all.push(r);
        }
        all
    });
    let summary = run.execute().await.unwrap();
    assert_eq!(summary.exit_code, 0, "{:?}", summary.report);
    // The stream ended by itself: the reader returns.
    let events = reader.await.unwrap();

    assert!(matches!(events[0].event, Event::RunStarted { .. }));
    assert!(matches!(
        events.last().unwrap().event,
        Event::RunFinished { exit_code: 0, .. }
    ));
    assert!(events.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    assert!(events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    // Every task starts once, then ends once.
    let mut started: HashMap<String, usize> = HashMap::new();
    let mut finished: HashMap<String, usize> = HashMap::new();
    for (i, r) in events.iter().enumerate() {
        match &r.event {
            Event::TaskStarted { task, attempt } => {
                assert_eq!(*attempt, 1);
                assert!(started.insert(task.to_string(), i).is_none(), "{task}");
            }
            Event::TaskFinished { task, .. } => {
                assert!(finished.insert(task.to_string(), i).is_none(), "{task}");
            }
            _ => {}
        }
    }
    for t in &tasks {
        let (s, f) = (started[t], finished[t]);
        assert!(s < f, "{t} ended before it started");
    }
    assert_eq!(started.len(), tasks.len());

    // Output: per step and machine, in order, each where the log has it.
    let mut lines: BTreeMap<String, Vec<(OutputStream, u64, String)>> = BTreeMap::new();
    for r in &events {
        if let Event::StepOutput {
            task,
            stream,
            offset,
            line,
        } = &r.event
        {
            assert_eq!(task.kind(), TaskKind::Step);
            let i = events.iter().position(|e| std::ptr::eq(e, r)).unwrap();
            assert!(started[&task.to_string()] < i && i < finished[&task.to_string()]);
            lines
                .entry(task.to_string())
                .or_default()
                .push((*stream, *offset, line.clone()));
        }
    }
    for m in ["a", "b"] {
        let count = &lines[&format!("step:count@{m}")];
        let stdout: Vec<&str> = count
            .iter()
            .filter(|l| l.0 == OutputStream::Stdout)
            .map(|l| l.2.as_str())
            .collect();
        let expected: Vec<String> = (1..=200).map(|i| format!("line {i}")).collect();
        assert_eq!(stdout, expected);
        assert!(
            count
                .iter()
                .any(|l| l.0 == OutputStream::Stderr && l.2 == "oops")
        );
        let log = std::fs::read(summary.run_dir.join(format!("logs/{m}/count.log"))).unwrap();
        for (_, offset, line) in count {
            let entry = std::str::from_utf8(&log[*offset as usize..]).unwrap();
            let entry = entry.lines().next().unwrap();
            assert!(entry.ends_with(&format!(" {line}")), "{entry:?} ≠ {line:?}");
        }
        assert!(count.windows(2).all(|w| w[0].1 < w[1].1));
        let custom: Vec<&str> = lines[&format!("step:custom@{m}")]
            .iter()
            .map(|l| l.2.as_str())
            .collect();
        assert_eq!(custom, ["custom one", "custom two", "custom three"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_problems_are_a_list_with_kinds_and_places() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("needs.yaml");
    std::fs::write(
        &path,
        "name: needs
secrets: [HAVE, MISSING]
machines:
  - name: here
  - name: far
    backend: fake-cloud
    count: 3
steps:
  - {name: one, command: 'true'}
  - {name: two, uses: nowhere}
",
    )
    .unwrap();
    let err = engine(dir.path())
        .prepare(
            &crate::load_file(&path).unwrap(),
            RunOptions::new(dir.path().join("results")).secret("HAVE", "a-long-value"),
        )
        .await
        .unwrap_err();
    let EngineError::Setup(setup) = err else {
        panic!("{err:?}")
    };
    assert_eq!(setup.plan, path);
    let found: Vec<_> = setup
        .problems
        .iter()
        .map(|p| (&p.kind, p.key_path.as_deref(), p.line.zip(p.column)))
        .collect();
    assert_eq!(
        found,
        [
            (
                &SetupProblemKind::NoProvisioner {
                    backend: qa_core::conformance::fakes::FAKE_CLOUD
                },
                Some("machines[1].backend"),
                Some((6, 5))
            ),
            (
                &SetupProblemKind::UnknownStepType {
                    name: "nowhere".into()
                },
                Some("steps[1].uses"),
                Some((10, 17))
            ),
            (
                &SetupProblemKind::SecretMissing {
                    name: "MISSING".into()
                },
                Some("secrets[1]"),
                Some((2, 17))
            ),
        ]
    );
    let text = setup.to_string();
    assert!(
        text.contains(&format!(
            "{}:10:17: step `two` uses step type `nowhere`",
            path.display()
        )),
        "{text}"
    );
    // Nothing was created: the run directory was never made.
    assert!(!dir.path().join("results").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_environment_and_user_are_given_in_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("given.yaml");
    std::fs::write(
        &path,
        r#"name: given
secrets: [QA_TEST_GIVEN_TOKEN]
machines: [{name: box}]
cleanup: {default: never}
defaults: {env: {FROM_PLAN: plan}}
steps:
  - name: show
    command: 'echo "$QA_TEST_GIVEN_TOKEN|$FROM_CODE|$FROM_PLAN"; test "$QA_TEST_GIVEN_TOKEN" = sesame-open-4711'
"#,
    )
    .unwrap();
    let provisioner = FakeProvisioner::new().with_workdir_root(dir.path().join("machines"));
    let engine = Engine::new()
        .provisioner(Arc::new(provisioner.clone()))
        .connector(Arc::new(LocalDirs));
    let loaded = crate::load_file(&path).unwrap();
    // Not in the process environment: only `from_env` would read it, and it is not called.
    assert!(std::env::var_os("QA_TEST_GIVEN_TOKEN").is_none());
    let summary = engine
        .prepare(
            &loaded,
            RunOptions::new(dir.path().join("results"))
                .secret("QA_TEST_GIVEN_TOKEN", "sesame-open-4711")
                .env("FROM_CODE", "code")
                .env("FROM_PLAN", "overridden by the plan")
                .user("harness-bot"),
        )
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0, "{:?}", summary.report);
    let log = std::fs::read_to_string(summary.run_dir.join("logs/box/show.log")).unwrap();
    assert!(log.contains("[REDACTED]|code|plan"), "{log}");
    assert!(!log.contains("sesame-open-4711"));
    let tags = &provisioner.instances()[0].tags;
    assert_eq!(tags[qa_core::tags::USER], "harness-bot");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_too_short_to_mask_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.yaml");
    std::fs::write(
        &path,
        "name: short\nsecrets: [PIN]\nmachines: [{name: box}]\nsteps: [{name: s, command: 'true'}]\n",
    )
    .unwrap();
    let err = engine(dir.path())
        .prepare(
            &crate::load_file(&path).unwrap(),
            RunOptions::new(dir.path().join("results")).secret("PIN", "1234"),
        )
        .await
        .unwrap_err();
    let EngineError::Setup(setup) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        setup.problems[0].kind,
        SetupProblemKind::SecretUnsafe { name: "PIN".into() }
    );
    assert_eq!(
        setup.problems[0].line.zip(setup.problems[0].column),
        Some((2, 11))
    );
    assert!(
        setup.to_string().contains("is 4 characters long"),
        "{setup}"
    );
    assert!(!dir.path().join("results").exists());
}
