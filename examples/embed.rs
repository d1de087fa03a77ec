//! A test harness that embeds qa-run: it builds a plan in code, adds a step type of its own
//! (`checksum`: verifies a file's checksum on the machine) and runs the plan on the local backend.
//!
//! `cargo run -p qa-examples --example embed` — results go to a temporary directory, whose
//! report it prints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use qa_core::CommandSpec;
use qa_core::engine::{Engine, RunOptions, RunSummary, StepContext, StepOutcome, StepType};
use qa_core::plan::{LoadedPlan, MachineSpec, Plan, StepSpec};

/// A step type: `uses: checksum` with `with: {path: FILE, cksum: EXPECTED}`. It runs `cksum` on
/// the machine and passes when the first field matches.
struct Checksum;

#[async_trait]
impl StepType for Checksum {
    async fn run(&self, ctx: StepContext) -> StepOutcome {
        let path = ctx
            .step
            .with
            .get("path")
            .and_then(|v| v.as_str())
            .unwrap_or("data.txt")
            .to_string();
        let expected = ctx
            .step
            .with
            .get("cksum")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let cmd = CommandSpec {
            command: format!(
                "cksum < '{path}' | cut -d' ' -f1 > .cksum && cat .cksum && test \"$(cat .cksum)\" = '{expected}'"
            ),
            env: ctx.env.clone(),
            timeout: Some(ctx.timeout),
            ..Default::default()
        };
        if expected.is_empty() {
            // A mistake in the plan: no point in trying again.
            return StepOutcome::fatal("`with.cksum` is missing: give the expected checksum");
        }
        let start = Instant::now();
        ctx.output
            .note(&format!("checking cksum of {path} on {}", ctx.machine.name));
        match ctx
            .executor
            .run(&cmd, ctx.output.clone(), ctx.cancel.clone())
            .await
        {
            Ok(info) if info.success() => StepOutcome::pass(),
            Ok(_) => StepOutcome::fail(format!(
                "{path} does not have checksum {expected} (checked in {:.1}s)",
                start.elapsed().as_secs_f64()
            )),
            Err(e) => e.into(),
        }
    }
}

/// The plan: one machine, a step that writes a file, and a `checksum` step that verifies it.
fn plan(expected: &str) -> Plan {
    let with: BTreeMap<String, serde_json::Value> = [
        ("path".to_string(), "data.txt".into()),
        ("cksum".to_string(), expected.into()),
    ]
    .into_iter()
    .collect();
    Plan {
        name: "embedded".into(),
        machines: vec![MachineSpec {
            name: "worker".into(),
            ..Default::default()
        }],
        steps: vec![
            StepSpec {
                name: "write".into(),
                command: Some("printf 'hello\\n' > data.txt".into()),
                ..Default::default()
            },
            StepSpec {
                name: "verify".into(),
                uses: Some("checksum".into()),
                with,
                depends_on: vec!["write".into()],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// Runs the plan with the local backend and the `checksum` step type.
async fn run(expected: &str, results: &std::path::Path) -> RunSummary {
    let loaded = LoadedPlan::from_plan(plan(expected), ".").expect("the plan is valid");
    let engine = Engine::new()
        .provisioner(Arc::new(qa_provision::local::LocalProvisioner::new()))
        .connector(Arc::new(qa_remote::local::LocalConnector::new()))
        .step_type("checksum", Arc::new(Checksum));
    let prepared = engine
        .prepare(&loaded, RunOptions::new(results))
        .await
        .expect("the run can start");
    prepared.execute().await.expect("the run completes")
}

#[tokio::main]
async fn main() {
    let results = std::env::temp_dir().join("qa-run-embed-example");
    // `cksum` of "hello\n".
    let summary = run("3015617425", &results).await;
    for s in &summary.report.steps {
        println!(
            "{:<8} {}@{} {}",
            s.verdict,
            s.step,
            s.machine,
            s.message.as_deref().unwrap_or("")
        );
    }
    println!(
        "results: {} (exit code {})",
        summary.run_dir.display(),
        summary.exit_code
    );
    std::process::exit(summary.exit_code);
}

#[cfg(test)]
mod tests {
    use qa_core::Verdict;

    use super::*;

    #[tokio::test]
    async fn the_custom_step_type_decides_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let ok = run("3015617425", dir.path()).await;
        assert_eq!(ok.exit_code, 0, "{:?}", ok.report.steps);
        assert_eq!(ok.report.steps[1].verdict, Verdict::Pass);
        let log =
            std::fs::read_to_string(ok.run_dir.join(ok.report.steps[1].log.as_ref().unwrap()))
                .unwrap();
        assert!(
            log.contains("checking cksum of data.txt on worker") && log.contains("3015617425"),
            "{log}"
        );

        let bad = run("1", dir.path()).await;
        assert_eq!(bad.exit_code, qa_core::exit::TEST_FAILED);
        assert_eq!(bad.report.steps[1].verdict, Verdict::Fail);
    }
}
