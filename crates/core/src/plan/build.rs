//! Building plans in code: constructors and chainable setters named after the YAML keys, so a
//! program writes what a plan file would say.
//!
//! ```
//! use std::time::Duration;
//! use qa_core::plan::{LoadedPlan, MachineSpec, Plan, StepSpec};
//!
//! let plan = Plan::new("smoke")
//!     .machine(MachineSpec::new("db").count(2))
//!     .step(StepSpec::command("build", "make -j2").timeout(Duration::from_secs(600)))
//!     .step(StepSpec::uses("verify", "checksum").with("path", "out.bin").depends_on("build"));
//! let loaded = LoadedPlan::from_plan(plan, ".").expect("a valid plan");
//! assert_eq!(loaded.plan.steps[1].depends_on, ["build"]);
//! ```

use std::path::PathBuf;
use std::time::Duration;

use super::duration::PlanDuration;
use super::model::{InventoryHost, LocalMachine, MachineSpec, Plan, StaticMachine, StepSpec};
use crate::backend::BackendName;

impl Plan {
    /// An empty plan named `name`: add machines and steps.
    pub fn new(name: impl Into<String>) -> Self {
        Plan {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a machine (`machines:`).
    pub fn machine(mut self, m: MachineSpec) -> Self {
        self.machines.push(m);
        self
    }

    /// Adds a step (`steps:`), run after the steps added before it only if it says so.
    pub fn step(mut self, s: StepSpec) -> Self {
        self.steps.push(s);
        self
    }

    /// Declares a secret (`secrets:`): its value is given when the run is set up, handed to
    /// steps as a variable of that name, and masked everywhere.
    pub fn secret(mut self, name: impl Into<String>) -> Self {
        self.secrets.push(name.into());
        self
    }

    /// How many steps run at once (`concurrency:`); machines get ready all at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// The run's wall-time budget (`budget:`).
    pub fn budget(mut self, d: Duration) -> Self {
        self.budget = Some(PlanDuration(d));
        self
    }
}

impl MachineSpec {
    /// A machine named `name` on the plan's backend (the local one unless set).
    pub fn new(name: impl Into<String>) -> Self {
        MachineSpec {
            name: name.into(),
            count: 1,
            ..Default::default()
        }
    }

    /// How many identical machines (`count:`), named `name-1` … `name-N` when more than one.
    pub fn count(mut self, n: u32) -> Self {
        self.count = n;
        self
    }

    /// The role steps select machines by (`role:`).
    pub fn in_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// The backend that makes it (`backend:`).
    pub fn backend(mut self, backend: BackendName) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Backends to try in order when its own has no capacity anywhere (`fallback:`); each needs
    /// its options block too.
    pub fn fallback(mut self, backends: impl IntoIterator<Item = BackendName>) -> Self {
        self.fallback = backends.into_iter().collect();
        self
    }

    /// Its options for a backend (`<backend>: {…}`), e.g. `("fake-cloud", json!({"zones": …}))`.
    pub fn options(mut self, backend: impl Into<String>, options: serde_json::Value) -> Self {
        self.options.insert(backend.into(), options);
        self
    }

    /// Where the local backend makes its sandbox (`local: {root: …}`).
    pub fn local_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.local = Some(LocalMachine {
            root: Some(root.into()),
        });
        self
    }

    /// The inventory hosts the static backend may serve it from (`static: {hosts: […]}`).
    pub fn static_hosts(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.static_hosts = Some(StaticMachine {
            hosts: hosts.into_iter().map(Into::into).collect(),
        });
        self
    }
}

impl InventoryHost {
    /// A host named `name`, reached as the OpenSSH configuration says (or at `name`, port 22)
    /// until set otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        InventoryHost {
            name: name.into(),
            host: None,
            port: None,
            user: None,
            identity_file: None,
            passphrase_env: None,
            proxy_jump: Vec::new(),
            ssh_config: None,
            require_commands: Vec::new(),
            min_free_mib: None,
            repair: None,
        }
    }

    /// Its address (`host:`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Its SSH port (`port:`).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The login user (`user:`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The private key file (`identity-file:`).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// The OpenSSH configuration file that fills in what is not set (`ssh-config:`).
    pub fn ssh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssh_config = Some(path.into());
        self
    }
}

impl StepSpec {
    fn named(name: impl Into<String>) -> Self {
        StepSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    /// A step that runs a shell command (`command:`).
    pub fn command(name: impl Into<String>, command: impl Into<String>) -> Self {
        StepSpec {
            command: Some(command.into()),
            ..Self::named(name)
        }
    }

    /// A step that uploads and runs a script (`script:`), relative to the plan's directory.
    pub fn script(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        StepSpec {
            script: Some(path.into()),
            ..Self::named(name)
        }
    }

    /// A step of a registered step type (`uses:`).
    pub fn uses(name: impl Into<String>, step_type: impl Into<String>) -> Self {
        StepSpec {
            uses: Some(step_type.into()),
            ..Self::named(name)
        }
    }

    /// A parameter for its step type (`with: {key: value}`).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.with.insert(key.into(), value.into());
        self
    }

    /// Runs only after `step` passed (`depends-on:`).
    pub fn depends_on(mut self, step: impl Into<String>) -> Self {
        self.depends_on.push(step.into());
        self
    }

    /// Runs after `step`, whatever its verdict (`after:`).
    pub fn after(mut self, step: impl Into<String>) -> Self {
        self.after.push(step.into());
        self
    }

    /// Runs only on these machines, by name or role (`machines:`).
    pub fn on(mut self, machine: impl Into<String>) -> Self {
        self.machines.push(machine.into());
        self
    }

    /// Its time limit (`timeout:`).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(PlanDuration(d));
        self
    }

    /// Attempts after an infrastructure error (`retries:`).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }

    /// A variable for this step (`env:`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }
}
