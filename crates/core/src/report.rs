//! `report.json`: the versioned, machine-readable result of a run. Every publisher reads this.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::Verdict;

/// Version of the report format. Bumped on any incompatible change.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// A finished (or interrupted) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
pub struct CostEstimate {
    /// Currency code.
    pub currency: String,
    /// Total.
    pub total: f64,
    /// Items: description and amount.
    pub items: Vec<(String, f64)>,
}

impl CostEstimate {
    /// The sum of several estimates (one per backend, say): totals and items of the first
    /// estimate's currency are added up; an estimate in another currency cannot be added, so it
    /// becomes one item of amount 0 that says what it was. `None` when there is no estimate.
    pub fn sum(estimates: impl IntoIterator<Item = CostEstimate>) -> Option<CostEstimate> {
        let mut estimates = estimates.into_iter();
        let mut out = estimates.next()?;
        for e in estimates {
            if e.currency == out.currency {
                out.total += e.total;
                out.items.extend(e.items);
            } else {
                out.items.push((
                    format!(
                        "{:.2} {} estimated besides, not in the total (another currency)",
                        e.total, e.currency
                    ),
                    0.0,
                ));
            }
        }
        Some(out)
    }
}

impl Report {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.outcome == Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(total: f64, item: &str) -> CostEstimate {
        CostEstimate {
            currency: "USD".into(),
            total,
            items: vec![(item.into(), total)],
        }
    }

    #[test]
    fn estimates_of_one_currency_add_up_and_others_are_listed_not_added() {
        assert_eq!(CostEstimate::sum([]), None);
        let eur = CostEstimate {
            currency: "EUR".into(),
            total: 2.0,
            items: vec![("vm".into(), 2.0)],
        };
        let sum = CostEstimate::sum([usd(1.5, "a"), eur, usd(0.25, "b")]).unwrap();
        assert_eq!(sum.currency, "USD");
        assert_eq!(sum.total, 1.75);
        assert_eq!(sum.items.len(), 3);
        assert_eq!(sum.items[0], ("a".to_string(), 1.5));
        assert!(sum.items[1].0.contains("2.00 EUR"), "{:?}", sum.items);
        assert_eq!(sum.items[1].1, 0.0);
        assert_eq!(sum.items[2], ("b".to_string(), 0.25));
    }
}
