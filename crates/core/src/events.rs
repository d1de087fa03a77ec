//! Events a run emits while it goes: shown as progress to people, written as JSON lines for
//! programs (`qa-run run --json`), and offered to an embedding program as an async stream
//! ([`EventStream`], from [`PreparedRun::events`](crate::engine::PreparedRun::events)).
//!
//! Every task is named by a [`TaskId`]: its kind, and the machine and step it is about. In JSON
//! it is the task's id string (`step:build@db-1`), the same as in the journal.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::mpsc;

use crate::remote::OutputStream;
use crate::stages::Stage;
use crate::types::Verdict;

/// Version of the event format.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// What a task does: the kinds of the stage graph ([`crate::stages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TaskKind {
    /// Reserve capacity (`reserve`).
    Reserve,
    /// Make a machine (`provision:M`).
    Provision,
    /// Wait until a machine accepts commands (`ready:M`).
    Ready,
    /// Upload files and scripts (`upload:M`).
    Upload,
    /// Run a step on a machine (`step:S@M`).
    Step,
    /// Bring artifacts back (`collect:M`).
    Collect,
    /// Destroy or keep a machine (`teardown:M`).
    Teardown,
    /// Remove what machines shared, cancel reservations (`release`).
    Release,
    /// Write the report and publish it (`publish`).
    Publish,
}

impl TaskKind {
    /// The prefix of the task id.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Reserve => "reserve",
            TaskKind::Provision => "provision",
            TaskKind::Ready => "ready",
            TaskKind::Upload => "upload",
            TaskKind::Step => "step",
            TaskKind::Collect => "collect",
            TaskKind::Teardown => "teardown",
            TaskKind::Release => "release",
            TaskKind::Publish => "publish",
        }
    }

    fn per_machine(self) -> bool {
        !matches!(
            self,
            TaskKind::Reserve | TaskKind::Release | TaskKind::Publish
        )
    }
}

/// A task of a run, typed: its kind, its machine (for per-machine tasks) and its step (for
/// steps). Displayed, and serialized, as the task id of the journal and the graph:
/// `reserve`, `provision:M`, `ready:M`, `upload:M`, `step:S@M`, `collect:M`, `teardown:M`,
/// `release`, `publish`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    kind: TaskKind,
    machine: Option<String>,
    step: Option<String>,
}

impl TaskId {
    /// The id of a run-wide task (`reserve`, `release`, `publish`).
    ///
    /// # Panics
    /// When `kind` is a per-machine kind.
    pub fn run_wide(kind: TaskKind) -> Self {
        assert!(!kind.per_machine(), "{} names a machine", kind.as_str());
        TaskId {
            kind,
            machine: None,
            step: None,
        }
    }

    /// The id of a per-machine task other than a step.
    ///
    /// # Panics
    /// When `kind` is a run-wide kind or [`TaskKind::Step`].
    pub fn of_machine(kind: TaskKind, machine: impl Into<String>) -> Self {
        assert!(
            kind.per_machine() && kind != TaskKind::Step,
            "{} is not a machine's task",
            kind.as_str()
        );
        TaskId {
            kind,
            machine: Some(machine.into()),
            step: None,
        }
    }

    /// The id of a step on a machine.
    pub fn step(step: impl Into<String>, machine: impl Into<String>) -> Self {
        TaskId {
            kind: TaskKind::Step,
            machine: Some(machine.into()),
            step: Some(step.into()),
        }
    }

    /// What the task does.
    pub fn kind(&self) -> TaskKind {
        self.kind
    }

    /// The machine instance it is about, for per-machine tasks.
    pub fn machine(&self) -> Option<&str> {
        self.machine.as_deref()
    }

    /// The step's name, for steps.
    pub fn step_name(&self) -> Option<&str> {
        self.step.as_deref()
    }
}

impl From<&Stage> for TaskId {
    fn from(stage: &Stage) -> Self {
        match stage {
            Stage::Reserve => TaskId::run_wide(TaskKind::Reserve),
            Stage::Release => TaskId::run_wide(TaskKind::Release),
            Stage::Publish => TaskId::run_wide(TaskKind::Publish),
            Stage::Provision { machine } => TaskId::of_machine(TaskKind::Provision, machine),
            Stage::WaitReady { machine } => TaskId::of_machine(TaskKind::Ready, machine),
            Stage::Upload { machine } => TaskId::of_machine(TaskKind::Upload, machine),
            Stage::Collect { machine } => TaskId::of_machine(TaskKind::Collect, machine),
            Stage::Teardown { machine } => TaskId::of_machine(TaskKind::Teardown, machine),
            Stage::Step { step, machine, .. } => TaskId::step(step, machine),
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        match (&self.step, &self.machine) {
            (Some(s), Some(m)) => write!(f, ":{s}@{m}"),
            (None, Some(m)) => write!(f, ":{m}"),
            _ => Ok(()),
        }
    }
}

/// A string that is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a task id (expected e.g. `provision:M`, `step:S@M` or `publish`)")]
pub struct TaskIdError(String);

impl FromStr for TaskId {
    type Err = TaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TaskIdError(s.to_string());
        let (prefix, rest) = match s.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        let kind = [
            TaskKind::Reserve,
            TaskKind::Provision,
            TaskKind::Ready,
            TaskKind::Upload,
            TaskKind::Step,
            TaskKind::Collect,
            TaskKind::Teardown,
            TaskKind::Release,
            TaskKind::Publish,
        ]
        .into_iter()
        .find(|k| k.as_str() == prefix)
        .ok_or_else(bad)?;
        match (kind, rest) {
            (TaskKind::Step, Some(r)) => {
                // Machine names hold no `@`; step names may.
                let (step, machine) = r.rsplit_once('@').ok_or_else(bad)?;
                if step.is_empty() || machine.is_empty() {
                    return Err(bad());
                }
                Ok(TaskId::step(step, machine))
            }
            (k, Some(m)) if k.per_machine() && !m.is_empty() => Ok(TaskId::of_machine(k, m)),
            (k, None) if !k.per_machine() => Ok(TaskId::run_wide(k)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
#[non_exhaustive]
pub enum Event {
    /// The run began.
    RunStarted {
        /// Run id.
        run_id: String,
        /// Results directory.
        run_dir: String,
        /// Number of tasks in the graph.
        tasks: usize,
    },
    /// A task began (or began another attempt).
    TaskStarted {
        /// The task.
        task: TaskId,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A line of a step's output, as written to its log (secrets masked). A line is whole, or
    /// the part of a very long line or the end of the output that arrived without a line end.
    StepOutput {
        /// The step (`step:S@M`).
        task: TaskId,
        /// Which stream it came from.
        stream: OutputStream,
        /// Where its entry starts in the step's log file (`logs/<machine>/<step>.log`), in bytes:
        /// increasing within an attempt, so a consumer can tell lines apart and find them.
        offset: u64,
        /// The line, without its line end.
        line: String,
    },
    /// A task ended.
    TaskFinished {
        /// The task.
        task: TaskId,
        /// Verdict.
        verdict: Verdict,
        /// Wall time in milliseconds.
        duration_ms: u64,
        /// Why, for anything but PASS.
        #[serde(default)]
        message: Option<String>,
    },
    /// A line of note from the runner (retry, reboot, cleanup, …).
    Note {
        /// The task, if any.
        #[serde(default)]
        task: Option<TaskId>,
        /// The note.
        message: String,
    },
    /// The run ended: the last event of a run.
    RunFinished {
        /// Run id.
        run_id: String,
        /// Overall outcome.
        outcome: Verdict,
        /// Process exit code qa-run will use.
        exit_code: i32,
    },
}

/// An event with its schema version and times, as written to JSON lines and given by
/// [`EventStream`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventRecord {
    /// [`EVENT_SCHEMA_VERSION`].
    pub v: u32,
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// When it happened, as milliseconds since the Unix epoch.
    #[serde(default)]
    pub at_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

impl EventRecord {
    /// Stamps `event`: `since_start` after the run started, now on the wall clock.
    pub fn new(event: Event, since_start: Duration) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        EventRecord {
            v: EVENT_SCHEMA_VERSION,
            t_ms: since_start.as_millis() as u64,
            at_ms,
            event,
        }
    }

    /// When it happened.
    pub fn at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }
}

/// Receives events as they happen, on the engine's tasks: it must not block.
pub trait EventSink: Send + Sync {
    /// One event.
    fn event(&self, event: &Event);
}

/// Discards events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _: &Event) {}
}

/// A run's events, in the order they happened, ending after [`Event::RunFinished`] (or when the
/// run is dropped without finishing).
///
/// Read it with [`EventStream::next`], or as a [`Stream`](crate::Stream). Events wait in memory
/// until read, so read it while the run goes (in another task, or joined with
/// [`PreparedRun::execute`](crate::engine::PreparedRun::execute)).
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<EventRecord>,
}

impl EventStream {
    pub(crate) fn channel() -> (mpsc::UnboundedSender<EventRecord>, EventStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, EventStream { rx })
    }

    /// The next event; `None` once the run has ended.
    pub async fn next(&mut self) -> Option<EventRecord> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for EventStream {
    type Item = EventRecord;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EventRecord>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_print_and_parse_as_the_journal_names_them() {
        for (id, text) in [
            (TaskId::run_wide(TaskKind::Reserve), "reserve"),
            (TaskId::of_machine(TaskKind::Ready, "db-1"), "ready:db-1"),
            (TaskId::step("a@b", "db-1"), "step:a@b@db-1"),
            (TaskId::run_wide(TaskKind::Publish), "publish"),
        ] {
            assert_eq!(id.to_string(), text);
            assert_eq!(text.parse::<TaskId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), id);
        }
        for bad in [
            "",
            "step",
            "step:x",
            "step:@m",
            "provision",
            "publish:x",
            "build:x",
        ] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_stage_has_the_graphs_id() {
        let stages = [
            Stage::Reserve,
            Stage::Provision {
                machine: "m".into(),
            },
            Stage::WaitReady {
                machine: "m".into(),
            },
            Stage::Upload {
                machine: "m".into(),
            },
            Stage::Step {
                index: 3,
                step: "s".into(),
                machine: "m".into(),
            },
            Stage::Collect {
                machine: "m".into(),
            },
            Stage::Teardown {
                machine: "m".into(),
            },
            Stage::Release,
            Stage::Publish,
        ];
        for s in &stages {
            assert_eq!(TaskId::from(s).to_string(), crate::stages::task_id(s));
        }
    }

    #[test]
    fn records_carry_the_event_flat_with_times() {
        let r = EventRecord::new(
            Event::StepOutput {
                task: TaskId::step("build", "box"),
                stream: OutputStream::Stderr,
                offset: 42,
                line: "warning".into(),
            },
            Duration::from_millis(1500),
        );
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["event"], "step-output");
        assert_eq!(v["task"], "step:build@box");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["t_ms"], 1500);
        assert!(r.at() > SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let back: EventRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
