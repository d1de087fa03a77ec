//! A test harness that embeds qa-run, as qa-core's guide describes: a plan built in code with two
//! local machines, a step type of its own (`checksum`), a publisher of its own (a tally file), a
//! printer of the run's events, and JUnit XML written afterwards.
//!
//! `cargo run -p qa-examples --example embed` — results go to a temporary directory.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qa_core::events::TaskKind;
use qa_core::plan::{LoadedPlan, MachineSpec, Plan, StepSpec};
use qa_core::prelude::*;
use qa_core::report::Report;

/// `uses: checksum` with `with: {path: FILE, expect: SUM}`: runs `cksum` on the machine and
/// passes when the sum is the expected one.
struct Checksum;

#[async_trait]
impl StepType for Checksum {
    async fn run(&self, ctx: StepContext) -> StepOutcome {
        let (Some(path), Some(expect)) = (
            ctx.step.with.get("path").and_then(|v| v.as_str()),
            ctx.step.with.get("expect").and_then(|v| v.as_str()),
        ) else {
            // A mistake in the plan: no point in trying again.
            return StepOutcome::fatal("`with` needs `path` and `expect`");
        };
        ctx.output.note(&format!(
            "checking the checksum of {path} on {}",
            ctx.machine.name
        ));
        let cmd = CommandSpec::new(format!("cksum < '{path}' | cut -d' ' -f1"))
            .envs(ctx.env.clone())
            .timeout(ctx.timeout);
        let out = Arc::new(Capture::default());
        match ctx
            .executor
            .run(&cmd, out.clone(), ctx.cancel.clone())
            .await
        {
            Ok(exit) if !exit.success() => StepOutcome::from_exit(&exit),
            Ok(_) => {
                let sum = out.text();
                ctx.output
                    .output(OutputStream::Stdout, format!("{sum}\n").as_bytes());
                if sum == expect {
                    StepOutcome::pass()
                } else {
                    StepOutcome::fail(format!("{path} has checksum {sum}, not {expect}"))
                }
            }
            Err(e) => e.into(),
        }
    }
}

/// Keeps a command's standard output.
#[derive(Default)]
struct Capture(Mutex<Vec<u8>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .trim()
            .to_string()
    }
}

impl OutputSink for Capture {
    fn output(&self, stream: OutputStream, data: &[u8]) {
        if stream == OutputStream::Stdout {
            self.0.lock().unwrap().extend_from_slice(data);
        }
    }
}

/// A publisher: writes `tally.txt` (how many steps did not pass) into the run directory.
#[derive(Debug)]
struct Tally;

#[async_trait]
impl ResultPublisher for Tally {
    fn name(&self) -> &str {
        "tally"
    }

    async fn publish(
        &self,
        report: &Report,
        run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        let failed = report
            .steps
            .iter()
            .filter(|s| s.verdict != Verdict::Pass)
            .count();
        let path = run_dir.join("tally.txt");
        std::fs::write(
            &path,
            format!("{failed} of {} steps did not pass\n", report.steps.len()),
        )
        .map_err(|e| PublishError::new("tally", format!("cannot write {}: {e}", path.display())))?;
        Ok(PublishReceipt::new("tally", path.display().to_string()))
    }
}

/// The plan: two machines each write a file; `checksum` verifies it on both.
fn plan(expected: &str) -> Plan {
    Plan::new("embedded")
        .machine(MachineSpec::new("worker").count(2))
        .step(StepSpec::command("write", "printf 'hello\\n' > data.txt"))
        .step(
            StepSpec::uses("verify", "checksum")
                .with("path", "data.txt")
                .with("expect", expected)
                .depends_on("write")
                .timeout(Duration::from_secs(60)),
        )
}

/// Runs the plan on the local backend with the `checksum` step type and the tally publisher,
/// printing each step's start, output and end as events arrive, then writes `junit.xml`.
/// Returns how the run ended and the lines it printed.
async fn run(expected: &str, results: &Path) -> (RunSummary, Vec<String>) {
    let loaded = LoadedPlan::from_plan(plan(expected), ".").expect("the plan is valid");
    let engine = Engine::new()
        .provisioner(Arc::new(qa_provision::local::LocalProvisioner::new()))
        .connector(Arc::new(qa_remote::RoutingConnector::new(
            Default::default(),
        )))
        .step_type("checksum", Arc::new(Checksum))
        .publisher(Arc::new(Tally));
    let mut prepared = engine
        .prepare(&loaded, RunOptions::new(results).user("embed-example"))
        .await
        .unwrap_or_else(|e| panic!("the run cannot start: {e}"));
    let mut events = prepared.events();
    let printer = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(r) = events.next().await {
            let line = match r.event {
                Event::TaskStarted { task, .. } if task.kind() == TaskKind::Step => {
                    format!("{:>6} ms start {task}", r.t_ms)
                }
                Event::StepOutput { task, line, .. } => format!("{:>6} ms {task} | {line}", r.t_ms),
                Event::TaskFinished { task, verdict, .. } if task.kind() == TaskKind::Step => {
                    format!("{:>6} ms {verdict} {task}", r.t_ms)
                }
                _ => continue,
            };
            println!("{line}");
            lines.push(line);
        }
        lines
    });
    let summary = prepared.execute().await.expect("the run completes");
    let lines = printer.await.expect("the printer ends with the run");
    std::fs::write(
        summary.run_dir.join("junit.xml"),
        qa_publish::junit::render(&summary.report),
    )
    .expect("junit.xml is written");
    (summary, lines)
}

#[tokio::main]
async fn main() {
    let results = std::env::temp_dir().join("qa-run-embed-example");
    // `cksum` of "hello\n".
    let (summary, _) = run("3015617425", &results).await;
    println!(
        "results: {} (exit code {})",
        summary.run_dir.display(),
        summary.exit_code
    );
    std::process::exit(summary.exit_code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_harness_gets_verdicts_events_its_publisher_and_junit() {
        let dir = tempfile::tempdir().unwrap();
        let (summary, lines) = run("3015617425", dir.path()).await;
        assert_eq!(summary.exit_code, 0, "{:?}", summary.report.steps);
        assert_eq!(summary.report.steps.len(), 4);
        assert!(
            summary
                .report
                .steps
                .iter()
                .all(|s| s.verdict == Verdict::Pass)
        );
        for m in ["worker-1", "worker-2"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.ends_with(&format!("step:verify@{m} | 3015617425"))),
                "{:#?}",
                lines
            );
            let started = lines
                .iter()
                .position(|l| l.ends_with(&format!("start step:verify@{m}")))
                .unwrap();
            let passed = lines
                .iter()
                .position(|l| l.ends_with(&format!("PASS step:verify@{m}")))
                .unwrap();
            assert!(started < passed);
        }
        let tally = std::fs::read_to_string(summary.run_dir.join("tally.txt")).unwrap();
        assert_eq!(tally, "0 of 4 steps did not pass\n");
        let junit = std::fs::read_to_string(summary.run_dir.join("junit.xml")).unwrap();
        assert_eq!(junit.matches("<testcase").count(), 4, "{junit}");
        assert!(!junit.contains("<failure"), "{junit}");

        let (bad, _) = run("1", dir.path()).await;
        assert_eq!(bad.exit_code, qa_core::exit::TEST_FAILED);
        let verify = bad
            .report
            .steps
            .iter()
            .find(|s| s.step == "verify")
            .unwrap();
        assert_eq!(verify.verdict, Verdict::Fail);
        assert_eq!(
            verify.message.as_deref(),
            Some("data.txt has checksum 3015617425, not 1")
        );
        let tally = std::fs::read_to_string(bad.run_dir.join("tally.txt")).unwrap();
        assert_eq!(tally, "2 of 4 steps did not pass\n");
        let junit = std::fs::read_to_string(bad.run_dir.join("junit.xml")).unwrap();
        assert_eq!(junit.matches("<failure").count(), 2, "{junit}");
    }
}
