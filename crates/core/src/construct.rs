//! Constructors and setters of the public types other crates build: backends build machines,
//! resources and placements; step types build commands; publishers build receipts; tests and
//! publishers build reports. The types are `#[non_exhaustive]`, so a field added later breaks
//! nobody: start from a constructor, then set what it does not.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::BackendName;
use crate::capacity::{CapacityRequest, Placement};
use crate::plan::MachineSpec;
use crate::provision::{MachineRequest, RunContext};
use crate::publish::PublishReceipt;
use crate::remote::CommandSpec;
use crate::report::{CostEstimate, MachineReport, Report, StepReport, TaskReport};
use crate::types::{
    Access, HostKeyPolicy, Machine, Resource, ResourceKey, ResourceState, RunId, SshTarget, TestId,
    Verdict,
};

impl Machine {
    /// A machine named `name` (its role too, until [`Machine::in_role`]), made by `backend`,
    /// reached through `access`, whose steps run in `workdir`.
    pub fn new(
        name: impl Into<String>,
        backend: BackendName,
        access: Access,
        workdir: impl Into<String>,
    ) -> Self {
        let name = name.into();
        Machine {
            role: name.clone(),
            name,
            backend,
            access,
            workdir: workdir.into(),
            resources: Vec::new(),
            facts: BTreeMap::new(),
        }
    }

    /// Its role.
    pub fn in_role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// A journaled resource it is made of.
    pub fn resource(mut self, key: ResourceKey) -> Self {
        self.resources.push(key);
        self
    }

    /// A fact shown in the report (instance type, zone, address, …).
    pub fn fact(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.facts.insert(key.into(), value.into());
        self
    }
}

impl SshTarget {
    /// `user@host:port`, with the default host-key policy and no key file or jumps.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        SshTarget {
            host: host.into(),
            port,
            user: user.into(),
            identity_file: None,
            passphrase_env: None,
            jumps: Vec::new(),
            host_keys: HostKeyPolicy::default(),
        }
    }

    /// The private key to log in with.
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// The environment variable that holds the key's passphrase.
    pub fn passphrase_env(mut self, var: impl Into<String>) -> Self {
        self.passphrase_env = Some(var.into());
        self
    }

    /// A jump host, after those given before.
    pub fn jump(mut self, via: SshTarget) -> Self {
        self.jumps.push(via);
        self
    }

    /// How the host's key is checked.
    pub fn host_keys(mut self, policy: HostKeyPolicy) -> Self {
        self.host_keys = policy;
        self
    }
}

impl Resource {
    /// A resource of `kind` that `backend` is about to create (state [`ResourceState::Intent`]).
    pub fn new(key: ResourceKey, backend: BackendName, kind: impl Into<String>) -> Self {
        Resource {
            key,
            backend,
            kind: kind.into(),
            machine: None,
            id: None,
            client_token: None,
            details: BTreeMap::new(),
            state: ResourceState::Intent,
        }
    }

    /// The machine it belongs to.
    pub fn machine(mut self, name: impl Into<String>) -> Self {
        self.machine = Some(name.into());
        self
    }

    /// The backend's id for it.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The idempotency token it is created with.
    pub fn client_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = Some(token.into());
        self
    }

    /// A detail the backend needs to remove it later (region, …).
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// Its state.
    pub fn state(mut self, state: ResourceState) -> Self {
        self.state = state;
        self
    }
}

impl RunContext {
    /// The context of run `run_id` (test id `test_id`) of plan `plan_name`, whose directory is
    /// `run_dir`; no tags until [`RunContext::tag`].
    pub fn new(
        run_id: RunId,
        test_id: TestId,
        plan_name: impl Into<String>,
        run_dir: impl Into<PathBuf>,
    ) -> Self {
        RunContext {
            run_id,
            test_id,
            plan_name: plan_name.into(),
            run_dir: run_dir.into(),
            tags: BTreeMap::new(),
        }
    }

    /// A tag every resource of the run carries.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

impl MachineRequest {
    /// Make machine `name` (role `role`) as `spec` says, without a reserved placement.
    pub fn new(name: impl Into<String>, role: impl Into<String>, spec: MachineSpec) -> Self {
        MachineRequest {
            name: name.into(),
            role: role.into(),
            spec,
            placement: None,
        }
    }

    /// Where capacity was reserved for it.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }
}

impl CapacityRequest {
    /// Reserve `needs` (machine type → count) for `test_id`, in the backend's default region
    /// and any of its zones, without an end.
    pub fn new(test_id: TestId, needs: BTreeMap<String, u32>) -> Self {
        CapacityRequest {
            test_id,
            region: None,
            needs,
            zones: Vec::new(),
            end_unix: None,
        }
    }

    /// In this region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// In these zones, tried in order.
    pub fn zones(mut self, zones: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.zones = zones.into_iter().map(Into::into).collect();
        self
    }

    /// Ending by itself at this time (seconds since the Unix epoch).
    pub fn end_unix(mut self, end: i64) -> Self {
        self.end_unix = Some(end);
        self
    }
}

impl Placement {
    /// Capacity in `zone`, held by `reservations` (machine type → reservation id).
    pub fn new(zone: impl Into<String>, reservations: BTreeMap<String, String>) -> Self {
        Placement {
            zone: zone.into(),
            reservations,
        }
    }
}

impl PublishReceipt {
    /// `publisher` put the results at `location` (a path or URL).
    pub fn new(publisher: impl Into<String>, location: impl Into<String>) -> Self {
        PublishReceipt {
            publisher: publisher.into(),
            location: location.into(),
        }
    }
}

impl CommandSpec {
    /// Runs `command` with `sh -c`, in the machine's work directory, without a time limit.
    pub fn new(command: impl Into<String>) -> Self {
        CommandSpec {
            command: command.into(),
            ..Default::default()
        }
    }

    /// A variable of its environment.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Variables of its environment.
    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// Runs in this directory (relative to the machine's work directory).
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Its time limit: past it, its process tree is ended and it is timed out.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Runs as root, through sudo.
    pub fn sudo(mut self, yes: bool) -> Self {
        self.sudo = yes;
        self
    }

    /// Runs on a pseudo-terminal.
    pub fn pty(mut self, yes: bool) -> Self {
        self.pty = yes;
        self
    }

    /// Survives a dropped connection (the machine runs it on its own and keeps its output).
    pub fn detached(mut self, yes: bool) -> Self {
        self.detached = yes;
        self
    }

    /// May reboot the machine; the reboot is not an error.
    pub fn expect_reboot(mut self, yes: bool) -> Self {
        self.expect_reboot = yes;
        self
    }

    /// Runs without the step supervisor (see [`CommandSpec::bare`]).
    pub fn bare(mut self, yes: bool) -> Self {
        self.bare = yes;
        self
    }
}

impl Report {
    /// An empty report of run `run_id` of plan `plan_name`, with outcome [`Verdict::Pass`]: set
    /// the rest as needed (publishers' tests build reports this way).
    pub fn new(run_id: impl Into<String>, plan_name: impl Into<String>) -> Self {
        let run_id = run_id.into();
        Report {
            schema_version: crate::report::REPORT_SCHEMA_VERSION,
            test_id: run_id.clone(),
            run_id,
            plan_name: plan_name.into(),
            plan_path: String::new(),
            description: None,
            started: String::new(),
            finished: String::new(),
            duration_ms: 0,
            outcome: Verdict::Pass,
            counts: BTreeMap::new(),
            machines: Vec::new(),
            steps: Vec::new(),
            infrastructure: Vec::new(),
            cost: None,
        }
    }
}

impl MachineReport {
    /// Machine `name` of `backend`, in role `name`.
    pub fn new(name: impl Into<String>, backend: impl Into<String>) -> Self {
        let name = name.into();
        MachineReport {
            role: name.clone(),
            name,
            backend: backend.into(),
            facts: BTreeMap::new(),
            artifacts: Vec::new(),
            kept: false,
        }
    }
}

impl StepReport {
    /// Step `step` on `machine`, with `verdict` after one attempt.
    pub fn new(step: impl Into<String>, machine: impl Into<String>, verdict: Verdict) -> Self {
        StepReport {
            step: step.into(),
            machine: machine.into(),
            verdict,
            attempts: 1,
            started: None,
            duration_ms: 0,
            exit_code: None,
            message: None,
            log: None,
            cast: None,
            log_tail: None,
        }
    }
}

impl TaskReport {
    /// Task `task` (its id) ended with `verdict`.
    pub fn new(task: impl Into<String>, verdict: Verdict, message: Option<String>) -> Self {
        TaskReport {
            task: task.into(),
            verdict,
            message,
        }
    }
}

impl CostEstimate {
    /// A total of `items` (what → amount) in `currency`.
    pub fn new(currency: impl Into<String>, items: Vec<(String, f64)>) -> Self {
        CostEstimate {
            currency: currency.into(),
            total: items.iter().map(|(_, a)| a).sum(),
            items,
        }
    }
}
