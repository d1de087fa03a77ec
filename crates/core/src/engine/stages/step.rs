//! A step on a machine: its log and recording, its environment and timeout, the command,
//! script, reboot or custom step type it runs, and the verdict its exit gives.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::super::builder::{StepContext, StepOutcome};
use super::super::context::{ActiveRun, step_timeout};
use super::super::layout::{script_remote_path, shell_quote, step_cast, step_log};
use crate::dag::TaskResult;
use crate::events::{Event, TaskId};
use crate::plan::StepAction;
use crate::recorder::{LineObserver, StepRecorder};
use crate::remote::{CommandSpec, ExitInfo, OutputSink};
use crate::stages::Stage;
use crate::types::Verdict;

/// How long a custom step type is given to return once it was asked to stop (its timeout
/// passed, or the run was interrupted), before the engine stops waiting for it.
const CUSTOM_STEP_GRACE: Duration = Duration::from_secs(5);

/// The verdict of a step from how its process ended; a timeout names the step's limit. What the
/// command left running is added to the message (a PASS gets one only for that).
pub(crate) fn verdict_of(info: &ExitInfo, limit: Duration) -> TaskResult {
    let mut result = verdict_of_exit(info, limit);
    if !info.leftovers.is_empty() {
        let left = info.leftovers.join("; ");
        result.message = Some(match result.message.take() {
            Some(m) => format!("{m}; {left}"),
            None => left,
        });
    }
    result
}

fn verdict_of_exit(info: &ExitInfo, limit: Duration) -> TaskResult {
    if info.cancelled {
        TaskResult::new(
            Verdict::Interrupted,
            "interrupted; its process tree was killed",
        )
    } else if info.timed_out {
        TaskResult::new(
            Verdict::Timeout,
            format!(
                "timed out: its limit is {}; its process tree was killed",
                crate::plan::PlanDuration(limit)
            ),
        )
    } else if info.code == Some(0) {
        TaskResult::pass()
    } else if let Some(c) = info.code {
        TaskResult::new(Verdict::Fail, format!("exit status {c}"))
    } else if let Some(s) = info.signal {
        TaskResult::new(Verdict::Fail, format!("killed by signal {s}"))
    } else {
        TaskResult::new(Verdict::Error, "ended without an exit status")
    }
}

/// How many attempts of a step on a machine have left their files in the run directory (in this
/// run or in the runs it resumes): attempt `n`'s log or recording exists for every `n` up to it.
pub(crate) fn recorded_attempts(run_dir: &std::path::Path, machine: &str, step: &str) -> u32 {
    let mut n = 0;
    while run_dir.join(step_log(machine, step, n + 1)).exists()
        || run_dir.join(step_cast(machine, step, n + 1)).exists()
    {
        n += 1;
    }
    n
}

impl ActiveRun {
    /// Tells the run's listeners of each line of a step's output.
    fn line_events(&self, stage: &Stage) -> LineObserver {
        let events = self.events.clone();
        let task = TaskId::from(stage);
        Box::new(move |stream, offset, line| {
            events.emit(Event::StepOutput {
                task: task.clone(),
                stream,
                offset,
                line: line.to_string(),
            });
        })
    }

    pub(crate) async fn step(
        &self,
        stage: &Stage,
        index: usize,
        machine: &str,
        attempt: u32,
        cancel: CancellationToken,
    ) -> TaskResult {
        let step = self.loaded.plan.steps[index].clone();
        let (Some(m), Some(x)) = (self.machine(machine), self.executor(machine)) else {
            return TaskResult::new(Verdict::Error, "machine not ready");
        };
        // Every attempt gets files of its own: a retry, or a resumed run, never overwrites the
        // evidence of an earlier attempt.
        let n = recorded_attempts(&self.ctx.run_dir, machine, &step.name) + 1;
        let log_rel = step_log(machine, &step.name, n);
        let cast_rel = step_cast(machine, &step.name, n);
        let recorder = match StepRecorder::create(
            &self.ctx.run_dir.join(&log_rel),
            &self.ctx.run_dir.join(&cast_rel),
            &format!("{} on {machine}", step.name),
            self.redactor.clone(),
        ) {
            Ok(r) => Arc::new(
                r.observe_lines(self.line_events(stage)).with_log_limit(
                    step.log_limit
                        .or(self.loaded.plan.defaults.log_limit)
                        .map_or(crate::recorder::DEFAULT_LOG_LIMIT, |l| l.get()),
                ),
            ),
            Err(e) => {
                return TaskResult::new(
                    Verdict::Error,
                    format!("cannot write the step's log: {e}"),
                );
            }
        };
        {
            let mut g = self.state();
            let d = g.steps.entry(stage.clone()).or_default();
            d.started = Some(crate::now_rfc3339());
            d.log = Some(log_rel);
            d.cast = Some(cast_rel);
            d.exit_code = None;
        }
        if n > 1 {
            recorder.note(&format!(
                "attempt {n}; the earlier attempts' logs are beside this one ({})",
                step_log(machine, &step.name, 1)
            ));
        }
        let timeout = step_timeout(&self.loaded.plan, &step);
        let env = self.step_env(&step, &m, attempt);
        let workdir = step
            .workdir
            .clone()
            .or_else(|| self.loaded.plan.defaults.workdir.clone());
        let sink: Arc<dyn OutputSink> = recorder.clone();
        if let StepAction::Custom(name) = step.action() {
            let t = self
                .engine
                .step_types
                .get(name)
                .cloned()
                .expect("checked before the run");
            // The engine enforces the step's timeout and the run's cancellation, whatever the
            // step type does with its token: it is asked to stop, given a grace, then left.
            let stop = cancel.child_token();
            let mut work = t.run(StepContext {
                step: step.clone(),
                machine: m.clone(),
                executor: x.clone(),
                output: sink,
                env,
                timeout,
                cancel: stop.clone(),
            });
            let ended = tokio::select! {
                outcome = &mut work => Some(outcome),
                _ = tokio::time::sleep(timeout) => None,
                _ = cancel.cancelled() => None,
            };
            let result = match ended {
                Some(StepOutcome::Pass) => TaskResult::pass(),
                Some(StepOutcome::Fail { reason }) => TaskResult::new(Verdict::Fail, reason),
                Some(StepOutcome::Error {
                    message,
                    retryable: true,
                }) => TaskResult::new(Verdict::Error, message),
                Some(StepOutcome::Error { message, .. }) => TaskResult::final_error(message),
                None => {
                    let cancelled = cancel.is_cancelled();
                    if !cancelled {
                        recorder.note(&format!(
                            "timed out: its limit is {}",
                            crate::plan::PlanDuration(timeout)
                        ));
                    }
                    stop.cancel();
                    let _ = tokio::time::timeout(CUSTOM_STEP_GRACE, &mut work).await;
                    verdict_of(&ExitInfo::stopped(!cancelled, timeout), timeout)
                }
            };
            let tail = recorder.finish();
            self.state().steps.entry(stage.clone()).or_default().tail = Some(tail);
            return result;
        }
        let result = match step.action() {
            StepAction::Reboot => {
                recorder.note("rebooting");
                match x.reboot(timeout).await {
                    Ok(boot) => {
                        recorder.note(&format!("back with boot id {}", boot.0));
                        let mut info = ExitInfo::exited(0, Duration::ZERO);
                        info.rebooted = true;
                        Ok(info)
                    }
                    Err(e) => Err(e),
                }
            }
            action => {
                let command = match action {
                    StepAction::Script(_) => format!(
                        "exec \"$QA_RUN_WORKDIR\"/{}",
                        shell_quote(&script_remote_path(&step.name))
                    ),
                    StepAction::Command(c) => c.to_string(),
                    StepAction::Reboot | StepAction::Custom(_) => unreachable!("handled above"),
                };
                let spec = CommandSpec {
                    command,
                    env,
                    workdir,
                    timeout: Some(timeout),
                    sudo: step.sudo,
                    pty: step.pty,
                    detached: step.detached || step.expect_reboot,
                    expect_reboot: step.expect_reboot,
                    bare: false,
                };
                x.run(&spec, sink, cancel).await
            }
        };
        let tail = recorder.finish();
        let mut g = self.state();
        let d = g.steps.entry(stage.clone()).or_default();
        d.tail = Some(tail);
        match result {
            Ok(info) => {
                d.exit_code = info.code;
                verdict_of(&info, timeout)
            }
            Err(e) => TaskResult::new(Verdict::Error, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_command_left_running_is_in_its_result_whatever_the_verdict() {
        let limit = Duration::from_secs(2);
        let left = "ended 1 process the command left running: 7 (sleep 600)".to_string();

        let mut passed = ExitInfo::exited(0, Duration::ZERO);
        assert_eq!(verdict_of(&passed, limit).message, None);
        passed.leftovers = vec![left.clone()];
        let r = verdict_of(&passed, limit);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.message.as_deref(), Some(left.as_str()));

        let mut failed = ExitInfo::exited(3, Duration::ZERO);
        failed.leftovers = vec![left.clone(), "could not end 1 process …".into()];
        let r = verdict_of(&failed, limit);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(
            r.message.as_deref(),
            Some(format!("exit status 3; {left}; could not end 1 process …").as_str())
        );

        let mut timed_out = ExitInfo::stopped(true, limit);
        timed_out.leftovers = vec![left.clone()];
        let r = verdict_of(&timed_out, limit);
        assert_eq!(r.verdict, Verdict::Timeout);
        assert!(
            r.message
                .as_deref()
                .unwrap()
                .starts_with("timed out: its limit is 2s")
                && r.message.as_deref().unwrap().ends_with(&left),
            "{r:?}"
        );
    }
}
