//! Progress while a run goes: a bar and one line per running task on a terminal, plain lines
//! otherwise, or JSON lines on stdout with `--json`. Names and messages are shown through
//! [`crate::terminal`], so that nothing from a plan or from a step's output can act on the
//! terminal.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use qa_core::Verdict;
use qa_core::events::{Event, EventRecord, EventSink, TaskId, TaskKind};

use crate::terminal::{safe, safe_lines};

enum Mode {
    Json,
    Plain,
    Terminal {
        multi: MultiProgress,
        overall: ProgressBar,
        running: HashMap<TaskId, ProgressBar>,
    },
}

/// Renders events for people or programs.
pub struct Progress {
    start: Instant,
    mode: Mutex<Mode>,
}

/// The sink for this process: JSON lines if asked, a live display on a terminal, plain lines
/// otherwise.
pub fn sink(json: bool) -> Arc<Progress> {
    let mode = if json {
        Mode::Json
    } else if std::io::stderr().is_terminal() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} tasks {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Mode::Terminal {
            multi,
            overall,
            running: HashMap::new(),
        }
    } else {
        Mode::Plain
    };
    Arc::new(Progress {
        start: Instant::now(),
        mode: Mutex::new(mode),
    })
}

impl Progress {
    /// Sets the number of tasks.
    pub fn set_total(&self, n: usize) {
        if let Mode::Terminal { overall, .. } = &*self.mode.lock().expect("progress") {
            overall.set_length(n as u64);
            // Drawn only from here on, so nothing shows an empty bar before the run starts.
            overall.enable_steady_tick(Duration::from_millis(200));
        }
    }

    /// A message for people (it may quote names from the plan: it is shown escaped).
    pub fn message(&self, m: &str) {
        let json = matches!(&*self.mode.lock().expect("progress"), Mode::Json);
        if json {
            return self.event(&Event::Note {
                task: None,
                message: m.into(),
            });
        }
        let m = safe_lines(m);
        match &*self.mode.lock().expect("progress") {
            Mode::Terminal { multi, .. } => {
                let _ = multi.println(m);
            }
            _ => eprintln!("{m}"),
        }
    }

    /// Clears the live display.
    pub fn finish(&self) {
        if let Mode::Terminal {
            overall, running, ..
        } = &mut *self.mode.lock().expect("progress")
        {
            for (_, b) in running.drain() {
                b.finish_and_clear();
            }
            overall.finish_and_clear();
        }
    }
}

/// `: <message>` after a task's verdict, on the same line.
fn why(message: Option<&str>) -> String {
    message
        .map(|m| format!(": {}", safe(m)))
        .unwrap_or_default()
}

fn is_interesting(task: &TaskId) -> bool {
    !matches!(task.kind(), TaskKind::Upload | TaskKind::Collect)
}

impl EventSink for Progress {
    fn event(&self, event: &Event) {
        if matches!(event, Event::StepOutput { .. }) {
            // Step output goes to the step's log, not to the terminal or the JSON lines.
            return;
        }
        let t = self.start.elapsed();
        let mut mode = self.mode.lock().expect("progress");
        match &mut *mode {
            Mode::Json => {
                let rec = EventRecord::new(event.clone(), t);
                let mut out = std::io::stdout().lock();
                if let Ok(s) = serde_json::to_string(&rec) {
                    let _ = writeln!(out, "{s}");
                    let _ = out.flush();
                }
            }
            Mode::Plain => match event {
                Event::TaskStarted { task, attempt } if is_interesting(task) => {
                    let again = if *attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "[{:>8.1}s] start   {}{again}",
                        t.as_secs_f64(),
                        safe(&task.to_string())
                    );
                }
                Event::TaskFinished {
                    task,
                    verdict,
                    duration_ms,
                    message,
                } if is_interesting(task) || *verdict != Verdict::Pass => {
                    eprintln!(
                        "[{:>8.1}s] {:<7} {} ({:.1}s){}",
                        t.as_secs_f64(),
                        verdict.as_str(),
                        safe(&task.to_string()),
                        *duration_ms as f64 / 1000.0,
                        why(message.as_deref())
                    );
                }
                Event::Note { message, .. } => {
                    eprintln!("[{:>8.1}s] note    {}", t.as_secs_f64(), safe(message))
                }
                _ => {}
            },
            Mode::Terminal {
                multi,
                overall,
                running,
            } => match event {
                Event::TaskStarted { task, .. } => {
                    if task.kind() == TaskKind::Step {
                        let b = multi.insert_before(overall, ProgressBar::new_spinner());
                        b.set_style(
                            ProgressStyle::with_template("  {spinner} {elapsed:>4} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        b.set_message(
                            safe(task.to_string().trim_start_matches("step:")).into_owned(),
                        );
                        b.enable_steady_tick(Duration::from_millis(120));
                        if let Some(old) = running.insert(task.clone(), b) {
                            old.finish_and_clear();
                        }
                    }
                    overall.set_message(safe(&task.to_string()).into_owned());
                }
                Event::TaskFinished {
                    task,
                    verdict,
                    duration_ms,
                    message,
                } => {
                    if let Some(b) = running.remove(task) {
                        b.finish_and_clear();
                    }
                    overall.inc(1);
                    if task.kind() == TaskKind::Step || *verdict != Verdict::Pass {
                        let _ = multi.println(format!(
                            "{:<11} {} ({:.1}s){}",
                            verdict.as_str(),
                            safe(&task.to_string()),
                            *duration_ms as f64 / 1000.0,
                            why(message.as_deref())
                        ));
                    }
                }
                Event::Note { message, .. } => {
                    let _ = multi.println(safe(message));
                }
                _ => {}
            },
        }
    }
}
