//! The stage graph: how a plan expands into a DAG of tasks.
//!
//! ```text
//! reserve ─▶ provision:M ─▶ ready:M ─▶ upload:M ─▶ step:S@M … ─▶ collect:M ─▶ teardown:M ─▶ release ─▶ publish
//! ```
//!
//! Each machine goes at its own pace: there is no barrier between stages, only the edges below.
//! - `step:S@M` requires `upload:M`, and each step S depends on: the same step on M if it runs
//!   there, otherwise that step on every machine it runs on.
//! - `collect:M` comes after every step on M (whatever their verdicts) and requires `ready:M`.
//! - `teardown:M` comes after `collect:M`, and always runs.
//! - `release` (removing what a cloud's machines shared, cancelling capacity reservations) comes
//!   after every teardown and always runs.
//! - `publish` (the report, written once and published) comes after every teardown and the
//!   release, and always runs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::{BackendName, BackendRegistry, ReservationNeed};
use crate::dag::{EdgeKind, GraphError, TaskGraph, TaskNode};
use crate::plan::{LoadedPlan, MachineSpec, Plan};

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case", tag = "stage")]
#[non_exhaustive]
pub enum Stage {
    /// Reserve capacity for every machine that asks for it.
    Reserve,
    /// Make a machine.
    Provision {
        /// Machine instance name.
        machine: String,
    },
    /// Wait until it accepts commands, and connect.
    WaitReady {
        /// Machine instance name.
        machine: String,
    },
    /// Upload files and scripts.
    Upload {
        /// Machine instance name.
        machine: String,
    },
    /// Run a step on a machine.
    Step {
        /// Index of the step in the plan.
        index: usize,
        /// Step name.
        step: String,
        /// Machine instance name.
        machine: String,
    },
    /// Bring artifacts back.
    Collect {
        /// Machine instance name.
        machine: String,
    },
    /// Write the report and publish it.
    Publish,
    /// Destroy (or keep) a machine per the cleanup policy.
    Teardown {
        /// Machine instance name.
        machine: String,
    },
    /// Cancel capacity reservations.
    Release,
}

/// One machine instance of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MachineInstance {
    /// Instance name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Backend.
    pub backend: BackendName,
    /// Index of its spec in `plan.machines`.
    pub spec_index: usize,
}

/// The machines a plan expands to, in plan order.
pub fn machine_instances(plan: &Plan) -> Vec<MachineInstance> {
    let default = plan.backend.unwrap_or(BackendName::LOCAL);
    plan.machines
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.instance_names()
                .into_iter()
                .map(move |name| MachineInstance {
                    name,
                    role: m.role().to_string(),
                    backend: m.backend_or(default),
                    spec_index: i,
                })
        })
        .collect()
}

/// What a machine asks to have reserved: `Some` only when its backend has a capacity
/// reservation in `backends` and the machine's options ask for one.
pub fn reservation_need(
    plan: &Plan,
    machine: &MachineInstance,
    backends: &BackendRegistry,
) -> Option<ReservationNeed> {
    backends.reservation(machine.backend)?;
    let spec = &plan.machines[machine.spec_index];
    backends
        .get(machine.backend)?
        .descriptor()
        .reservation_need(spec.options_of(machine.backend))
}

/// Whether a selector list (`machines:` of a step, file or artifact) picks this instance.
/// An empty list picks every machine.
pub fn selects(selectors: &[String], machine: &MachineInstance, spec: &MachineSpec) -> bool {
    selectors.is_empty()
        || selectors
            .iter()
            .any(|s| s == &machine.name || s == &machine.role || s == &spec.name)
}

/// Task id of a stage: its [`TaskId`](crate::events::TaskId) as text.
pub fn task_id(stage: &Stage) -> String {
    crate::events::TaskId::from(stage).to_string()
}

/// Expands a plan into its task graph, for the backends of `backends`: a `reserve` task when
/// some machine asks for a reservation its backend can make, and a `release` task when capacity
/// is reserved or some machine is a cloud's.
pub fn build_graph(
    loaded: &LoadedPlan,
    backends: &BackendRegistry,
) -> Result<TaskGraph<Stage>, GraphError> {
    let plan = &loaded.plan;
    let machines = machine_instances(plan);
    let reserve = machines
        .iter()
        .any(|m| reservation_need(plan, m, backends).is_some());
    let mut g: TaskGraph<Stage> = TaskGraph::new();
    let add = |g: &mut TaskGraph<Stage>,
               stage: Stage,
               always: bool,
               retries: u32|
     -> Result<String, GraphError> {
        let id = task_id(&stage);
        g.add(TaskNode {
            id: id.clone(),
            payload: stage,
            always,
            retries,
        })?;
        Ok(id)
    };
    let default_retries = plan.defaults.retries.unwrap_or(0);
    if reserve {
        add(&mut g, Stage::Reserve, false, 2)?;
    }
    // Which machines each step runs on.
    let mut runs_on: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &plan.steps {
        let list = machines
            .iter()
            .filter(|m| selects(&s.machines, m, &plan.machines[m.spec_index]))
            .map(|m| m.name.as_str())
            .collect();
        runs_on.insert(s.name.as_str(), list);
    }
    for m in &machines {
        let name = m.name.clone();
        let prov = add(
            &mut g,
            Stage::Provision {
                machine: name.clone(),
            },
            false,
            1,
        )?;
        if reserve {
            g.depend(&prov, "reserve", EdgeKind::Requires)?;
        }
        let ready = add(
            &mut g,
            Stage::WaitReady {
                machine: name.clone(),
            },
            false,
            1,
        )?;
        g.depend(&ready, &prov, EdgeKind::Requires)?;
        let upload = add(
            &mut g,
            Stage::Upload {
                machine: name.clone(),
            },
            false,
            2,
        )?;
        g.depend(&upload, &ready, EdgeKind::Requires)?;
        for (index, s) in plan.steps.iter().enumerate() {
            if !runs_on[s.name.as_str()].contains(&name.as_str()) {
                continue;
            }
            let retries = s.retries.unwrap_or(default_retries);
            let id = add(
                &mut g,
                Stage::Step {
                    index,
                    step: s.name.clone(),
                    machine: name.clone(),
                },
                false,
                retries,
            )?;
            g.depend(&id, &upload, EdgeKind::Requires)?;
        }
        let collect = add(
            &mut g,
            Stage::Collect {
                machine: name.clone(),
            },
            false,
            1,
        )?;
        g.depend(&collect, &ready, EdgeKind::Requires)?;
        let teardown = add(
            &mut g,
            Stage::Teardown {
                machine: name.clone(),
            },
            true,
            2,
        )?;
        g.depend(&teardown, &collect, EdgeKind::After)?;
        g.depend(&teardown, &prov, EdgeKind::After)?;
    }
    // Step-to-step edges, and every step before its machine's collect.
    for s in &plan.steps {
        for m in &runs_on[s.name.as_str()] {
            let me = format!("step:{}@{m}", s.name);
            for (deps, kind) in [
                (&s.depends_on, EdgeKind::Requires),
                (&s.after, EdgeKind::After),
            ] {
                for d in deps {
                    let targets = &runs_on[d.as_str()];
                    if targets.contains(m) {
                        g.depend(&me, &format!("step:{d}@{m}"), kind)?;
                    } else {
                        for t in targets {
                            g.depend(&me, &format!("step:{d}@{t}"), kind)?;
                        }
                    }
                }
            }
            g.depend(&format!("collect:{m}"), &me, EdgeKind::After)?;
        }
    }
    // Clouds' machines share run-level resources (key pair, security group) that go once every
    // teardown is over.
    let release = if reserve || machines.iter().any(|m| backends.is_cloud(m.backend)) {
        let release = add(&mut g, Stage::Release, true, 2)?;
        if reserve {
            g.depend(&release, "reserve", EdgeKind::After)?;
        }
        for m in &machines {
            g.depend(&release, &format!("teardown:{}", m.name), EdgeKind::After)?;
        }
        Some(release)
    } else {
        None
    };
    // The report is written and published once, when everything else is over: it then has the
    // teardowns' verdicts and the whole cost, and what is published is what is on disk.
    let publish = add(&mut g, Stage::Publish, true, 0)?;
    for m in &machines {
        g.depend(&publish, &format!("teardown:{}", m.name), EdgeKind::After)?;
    }
    if let Some(release) = release {
        g.depend(&publish, &release, EdgeKind::After)?;
    }
    g.topological_ids()?;
    Ok(g)
}

/// The graph as text, one task a line with its dependencies, in an order where dependencies
/// come first.
pub fn render_text(g: &TaskGraph<Stage>) -> String {
    let mut out = String::new();
    for id in g.topological_ids().unwrap_or_default() {
        let node = g.node(&id).expect("listed node");
        let mut deps: Vec<String> = g
            .dependencies(&id)
            .into_iter()
            .map(|(d, k)| match k {
                EdgeKind::Requires => d,
                EdgeKind::After => format!("(after) {d}"),
            })
            .collect();
        deps.sort();
        let flag = if node.always { "  [always]" } else { "" };
        if deps.is_empty() {
            out.push_str(&format!("{id}{flag}\n"));
        } else {
            out.push_str(&format!("{id}{flag}\n    <- {}\n", deps.join(", ")));
        }
    }
    out
}

/// The graph as JSON: tasks with stage, flags and dependencies.
pub fn render_json(g: &TaskGraph<Stage>) -> serde_json::Value {
    let tasks: Vec<serde_json::Value> = g
        .topological_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|id| {
            let node = g.node(&id).expect("listed node");
            let deps: Vec<serde_json::Value> = g
                .dependencies(&id)
                .into_iter()
                .map(|(d, k)| serde_json::json!({"task": d, "kind": if k == EdgeKind::Requires { "requires" } else { "after" }}))
                .collect();
            serde_json::json!({"id": id, "stage": node.payload, "always": node.always, "retries": node.retries, "depends-on": deps})
        })
        .collect();
    serde_json::json!({ "tasks": tasks })
}
