//! The rendered plan: what `qa-run plan` writes under `<run_dir>/plan/` — the graph, each
//! machine's settings and each step exactly as qa-run will run it (same environment, timeout and
//! working directory as the run itself, secrets left out).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::context::{StepIdentity, step_env, step_timeout};
use super::error::{EngineError, io_err};
use super::layout::{file_name_of, shell_quote};
use crate::dag::TaskGraph;
use crate::plan::{LoadedPlan, StepAction};
use crate::stages::{self, Stage};

/// Writes the rendered plan of `loaded` into `dir`; `run_id` and `test_id` fill the `QA_RUN_*`
/// variables the steps will see.
pub(crate) fn write_plan_artefacts(
    loaded: &LoadedPlan,
    graph: &TaskGraph<Stage>,
    dir: &Path,
    (run_id, test_id): (&str, &str),
    run_env: &BTreeMap<String, String>,
) -> Result<(), EngineError> {
    let w = |p: PathBuf, s: String| -> Result<(), EngineError> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        std::fs::write(&p, s).map_err(io_err(format!("writing {}", p.display())))
    };
    w(dir.join("graph.txt"), stages::render_text(graph))?;
    w(dir.join("graph.dot"), graph.to_dot())?;
    w(
        dir.join("graph.json"),
        serde_json::to_string_pretty(&stages::render_json(graph)).expect("json"),
    )?;
    let plan = &loaded.plan;
    for m in stages::machine_instances(plan) {
        let spec = &plan.machines[m.spec_index];
        let settings = serde_json::json!({ "instance": m, "spec": spec });
        w(
            dir.join("machines")
                .join(format!("{}.json", file_name_of(&m.name))),
            serde_json::to_string_pretty(&settings).expect("json"),
        )?;
        for s in plan
            .steps
            .iter()
            .filter(|s| stages::selects(&s.machines, &m, spec))
        {
            let env = step_env(
                plan,
                s,
                (run_env, None),
                &StepIdentity {
                    run_id,
                    test_id,
                    machine: &m.name,
                    role: &m.role,
                    step: &s.name,
                    attempt: 1,
                    workdir: "$HOME",
                },
            );
            let mut text = format!(
                "#!/bin/sh\n# Step `{}` on machine `{}`, as qa-run will run it.\n",
                s.name, m.name
            );
            let _ = writeln!(
                text,
                "# timeout: {}",
                crate::plan::PlanDuration(step_timeout(plan, s))
            );
            if !s.depends_on.is_empty() {
                let _ = writeln!(text, "# depends on: {}", s.depends_on.join(", "));
            }
            for (k, v) in &env {
                if k == "QA_RUN_WORKDIR" {
                    // The machine's work directory is known once it exists.
                    let _ = writeln!(text, "export {k}=\"$PWD\"");
                } else {
                    let _ = writeln!(text, "export {k}={}", shell_quote(v));
                }
            }
            for k in &plan.secrets {
                let _ = writeln!(text, "# secret {k} is passed from qa-run's environment");
            }
            if let Some(wd) = s.workdir.as_ref().or(plan.defaults.workdir.as_ref()) {
                let _ = writeln!(text, "cd {}", shell_quote(wd));
            }
            match s.action() {
                StepAction::Script(p) => {
                    let _ = writeln!(text, "# script {}:", p.display());
                    match std::fs::read_to_string(loaded.resolve(p)) {
                        Ok(body) => text.push_str(&body),
                        Err(e) => {
                            let _ = writeln!(text, "# (cannot read: {e})");
                        }
                    }
                }
                StepAction::Command(c) => {
                    text.push_str(c);
                    text.push('\n');
                }
                StepAction::Reboot => text.push_str("# reboot, then wait for a new boot id\n"),
                StepAction::Custom(u) => {
                    let _ = writeln!(
                        text,
                        "# step type `{u}` with {}",
                        serde_json::to_string(&s.with).unwrap_or_default()
                    );
                }
            }
            w(
                dir.join("steps")
                    .join(file_name_of(&m.name))
                    .join(format!("{}.sh", file_name_of(&s.name))),
                text,
            )?;
        }
    }
    Ok(())
}
