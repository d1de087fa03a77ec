//! `report.json`: the versioned, machine-readable result of a run. Every publisher reads this.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::Verdict;

/// Version of the report format. Bumped on any incompatible change.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// A finished (or interrupted) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    /// [`REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run id (also its directory name).
    pub run_id: String,
    /// Tag value on the run's cloud resources.
    pub test_id: String,
    /// The plan's name.
    pub plan_name: String,
    /// The plan file.
    pub plan_path: String,
    /// Plan description.
    #[serde(default)]
    pub description: Option<String>,
    /// Start, RFC 3339.
    pub started: String,
    /// End, RFC 3339.
    pub finished: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Overall outcome: PASS only when every step passed.
    pub outcome: Verdict,
    /// Count of step results per verdict.
    pub counts: BTreeMap<Verdict, u32>,
    /// The machines.
    pub machines: Vec<MachineReport>,
    /// One entry per step and machine, in plan order.
    pub steps: Vec<StepReport>,
    /// Infrastructure tasks that did not pass (provisioning, upload, collect, teardown).
    #[serde(default)]
    pub infrastructure: Vec<TaskReport>,
    /// Cost estimate, where the backend has prices.
    #[serde(default)]
    pub cost: Option<CostEstimate>,
}

/// A machine of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MachineReport {
    /// Instance name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Backend.
    pub backend: String,
    /// Facts (zone, instance type, address, …).
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// Artifacts collected, relative to the run directory.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Whether it was kept by the cleanup policy.
    #[serde(default)]
    pub kept: bool,
}

/// One step on one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StepReport {
    /// Step name.
    pub step: String,
    /// Machine name.
    pub machine: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    /// Start, RFC 3339 (absent when it never started).
    #[serde(default)]
    pub started: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Exit status, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why (for anything but PASS).
    #[serde(default)]
    pub message: Option<String>,
    /// Log, relative to the run directory.
    #[serde(default)]
    pub log: Option<String>,
    /// Recording, relative to the run directory.
    #[serde(default)]
    pub cast: Option<String>,
    /// Last lines of the log, for failures.
    #[serde(default)]
    pub log_tail: Option<String>,
}

/// A non-step task that did not pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TaskReport {
    /// Task id, e.g. `provision:box`.
    pub task: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Why.
    #[serde(default)]
    pub message: Option<String>,
}

/// What the run cost, estimated from a price table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CostEstimate {
    /// Currency code.
    pub currency: String,
    /// Total.
    pub total: f64,
    /// Items: description and amount.
    pub items: Vec<(String, f64)>,
}

impl Report {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.outcome == Verdict::Pass
    }
}
