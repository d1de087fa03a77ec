//! Results: the report, built once after teardown from what the tasks recorded, written to
//! `report.json` (and by the report hook, `junit.xml`), and handed to every publisher as it is.

use std::collections::BTreeMap;

use super::super::context::{ActiveRun, by_backend};
use super::super::error::{EngineError, io_err};
use super::super::layout::{REPORT_FILE, step_cast, step_log};
use super::step::recorded_attempts;
use crate::dag::TaskResult;
use crate::events::{Event, TaskId, TaskKind};
use crate::journal::ResourceLedger;
use crate::report::{
    CostEstimate, MachineReport, REPORT_SCHEMA_VERSION, Report, StepReport, TaskReport,
};
use crate::stages::Stage;
use crate::types::Verdict;

impl ActiveRun {
    /// The publish task: runs after every teardown and the release, so the report it writes
    /// and publishes is the run's final one (whole cost, teardown verdicts).
    pub(crate) async fn publish(&self) -> TaskResult {
        let report = self.build_report();
        if let Err(e) = self.write_report(&report) {
            return TaskResult::new(Verdict::Error, e.to_string());
        }
        self.state().report = Some(report.clone());
        let mut publishers = self.engine.publishers.clone();
        if let Some(f) = &self.engine.publisher_factory {
            for t in &self.loaded.plan.publish {
                match f(t, &self.loaded.base_dir, &self.redactor) {
                    Ok(p) => publishers.push(p),
                    Err(e) => return TaskResult::new(Verdict::Error, e),
                }
            }
        }
        let mut problems = Vec::new();
        for p in publishers {
            match p.publish(&report, &self.ctx.run_dir).await {
                Ok(receipt) => self.emit(Event::Note {
                    task: Some(TaskId::run_wide(TaskKind::Publish)),
                    message: format!("published to {}: {}", receipt.publisher, receipt.location),
                }),
                Err(e) => problems.push(self.redactor.redact(&e.to_string())),
            }
        }
        if problems.is_empty() {
            TaskResult::pass()
        } else {
            TaskResult::new(Verdict::Error, problems.join("; "))
        }
    }

    pub(crate) fn write_report(&self, report: &Report) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec_pretty(report).expect("report serialises");
        crate::journal::write_atomically(&self.ctx.run_dir.join(REPORT_FILE), &bytes)?;
        if let Some(h) = &self.engine.report_hook {
            h(report, &self.ctx.run_dir, &self.redactor).map_err(io_err("writing result files"))?;
        }
        Ok(())
    }

    /// What the run's resources cost, summed over the provisioners that can price them. A
    /// resource still alive counts until now, a destroyed one until the journal's
    /// `destroyed-at`.
    fn estimate_cost(&self) -> Option<CostEstimate> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let grouped = by_backend(&self.journal.resources());
        CostEstimate::sum(grouped.iter().filter_map(|(backend, resources)| {
            self.engine
                .backends
                .provisioner(*backend)?
                .estimate_cost(resources, now)
        }))
    }

    /// The report from every task's recorded outcome.
    pub(crate) fn build_report(&self) -> Report {
        let cost = self.estimate_cost();
        let g = self.state();
        let plan = &self.loaded.plan;
        let mut steps = Vec::new();
        let mut counts: BTreeMap<Verdict, u32> = BTreeMap::new();
        for (index, s) in plan.steps.iter().enumerate() {
            for m in &self.machines {
                let stage = Stage::Step {
                    index,
                    step: s.name.clone(),
                    machine: m.name.clone(),
                };
                // Absent: the step does not run on this machine, or has not ended yet.
                let Some(o) = g.outcomes.get(&stage).cloned() else {
                    continue;
                };
                let mut d = g.steps.get(&stage).cloned().unwrap_or_default();
                if d.log.is_none() && o.verdict == Verdict::Pass {
                    // A step that passed in the run this one resumes did not run here: its
                    // files are its latest attempt's.
                    let n = recorded_attempts(&self.ctx.run_dir, &m.name, &s.name);
                    if n > 0 {
                        d.log = Some(step_log(&m.name, &s.name, n));
                        d.cast = Some(step_cast(&m.name, &s.name, n));
                    }
                }
                *counts.entry(o.verdict).or_default() += 1;
                let tail = if o.verdict == Verdict::Pass {
                    None
                } else {
                    d.tail.clone()
                };
                steps.push(StepReport {
                    step: s.name.clone(),
                    machine: m.name.clone(),
                    verdict: o.verdict,
                    attempts: o.attempts,
                    started: d.started.clone(),
                    duration_ms: o.duration.as_millis() as u64,
                    exit_code: d.exit_code,
                    message: o.message.as_ref().map(|m| self.redactor.redact(m)),
                    log: d.log.clone(),
                    cast: d.cast.clone(),
                    log_tail: tail,
                });
            }
        }
        let mut infrastructure: Vec<TaskReport> = g
            .outcomes
            .iter()
            .filter(|(stage, o)| {
                !matches!(stage, Stage::Step { .. } | Stage::Publish) && o.verdict != Verdict::Pass
            })
            .map(|(stage, o)| TaskReport {
                task: crate::stages::task_id(stage),
                verdict: o.verdict,
                message: o.message.as_ref().map(|m| self.redactor.redact(m)),
            })
            .collect();
        infrastructure.sort_by(|a, b| a.task.cmp(&b.task));
        let any = |v: Verdict| steps.iter().any(|s| s.verdict == v);
        let infra_error = infrastructure.iter().any(|t| t.verdict == Verdict::Error);
        let outcome = if any(Verdict::Interrupted) || self.cancel.soft.is_cancelled() {
            Verdict::Interrupted
        } else if any(Verdict::Error) || infra_error {
            Verdict::Error
        } else if any(Verdict::Timeout) {
            Verdict::Timeout
        } else if any(Verdict::Fail) || any(Verdict::Skipped) {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let machines = self
            .machines
            .iter()
            .map(|m| {
                let machine = g.machines.get(&m.name);
                MachineReport {
                    name: m.name.clone(),
                    role: m.role.clone(),
                    // Where it landed, which a fallback may have changed from the plan's.
                    backend: machine.map_or(m.backend, |x| x.backend).to_string(),
                    facts: machine.map(|x| x.facts.clone()).unwrap_or_default(),
                    artifacts: g.artifacts.get(&m.name).cloned().unwrap_or_default(),
                    kept: g.kept.contains(&m.name),
                }
            })
            .collect();
        Report {
            schema_version: REPORT_SCHEMA_VERSION,
            run_id: self.ctx.run_id.0.clone(),
            test_id: self.ctx.test_id.0.clone(),
            plan_name: plan.name.clone(),
            plan_path: self.loaded.path.display().to_string(),
            description: plan.description.clone(),
            started: self.started_at.clone(),
            finished: crate::now_rfc3339(),
            duration_ms: self.start.elapsed().as_millis() as u64,
            outcome,
            counts,
            machines,
            steps,
            infrastructure,
            cost,
        }
    }
}
