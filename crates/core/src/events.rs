//! Events a run emits while it goes: shown as progress to people, written as JSON lines for
//! programs (`qa-run run --json`).

use serde::{Deserialize, Serialize};

use crate::types::Verdict;

/// Version of the event format.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
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
        /// Task id.
        task: String,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A task ended.
    TaskFinished {
        /// Task id.
        task: String,
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
        /// Task id, if any.
        #[serde(default)]
        task: Option<String>,
        /// The note.
        message: String,
    },
    /// The run ended.
    RunFinished {
        /// Run id.
        run_id: String,
        /// Overall outcome.
        outcome: Verdict,
        /// Process exit code qa-run will use.
        exit_code: i32,
    },
}

/// An event with its schema version and time, as written to JSON lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// [`EVENT_SCHEMA_VERSION`].
    pub v: u32,
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Receives events. Must not block.
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
