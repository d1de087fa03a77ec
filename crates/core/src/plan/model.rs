//! The typed plan: what a plan file says once it has been parsed and validated.
//!
//! Every struct here is `deny_unknown_fields` and kebab-case, so a typo in a plan is an error with a
//! location rather than a silently ignored key. The loader ([`super::load_file`]) first walks the
//! YAML against the schema in `schema.rs`, which mirrors these types key by key (a key added here
//! must be added there, and to `docs/plan.md`; tests fail otherwise), then deserializes these
//! types and checks what serde cannot (names, references, cycles, files).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::duration::PlanDuration;
use super::size::ByteSize;

/// A whole plan file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct Plan {
    /// Short name of the plan, used in result pages and resource tags.
    pub name: String,
    /// Free text shown on result pages.
    #[serde(default)]
    pub description: Option<String>,
    /// Backend for machines that do not name one. Defaults to `local`.
    #[serde(default)]
    pub backend: Option<BackendName>,
    /// How many steps may run at once across the whole run (default 16); a machine's own stages
    /// are not counted.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Wall-time budget of the whole run; capacity reservations end at budget + teardown margin.
    #[serde(default)]
    pub budget: Option<PlanDuration>,
    /// Defaults applied to every step that does not set its own.
    #[serde(default)]
    pub defaults: StepDefaults,
    /// Names of environment variables whose values are secret: passed to steps, redacted
    /// everywhere they would be printed or published.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Hosts that already exist, for machines with `backend: static`.
    #[serde(default)]
    pub inventory: Vec<InventoryHost>,
    /// The machines the plan needs.
    pub machines: Vec<MachineSpec>,
    /// Files to upload before any step runs.
    #[serde(default)]
    pub files: Vec<FileUpload>,
    /// The steps, run per machine in dependency order.
    pub steps: Vec<StepSpec>,
    /// Artifacts to bring back after the steps.
    #[serde(default)]
    pub artifacts: Vec<ArtifactSpec>,
    /// Where results go once the run is over.
    #[serde(default)]
    pub publish: Vec<PublishTarget>,
    /// What happens to machines when the run ends.
    #[serde(default)]
    pub cleanup: CleanupSpec,
}

pub use crate::backend::BackendName;

/// Defaults for steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct StepDefaults {
    /// Timeout of a step that sets none (default 30m).
    #[serde(default)]
    pub timeout: Option<PlanDuration>,
    /// Retries of an ERROR verdict (default 0).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Environment given to every step (a step's own `env` wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of every step, relative to the machine's work directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// The most each step's log and recording keep of its output (default 64 MiB); past it,
    /// the start and the end are kept with a marker between them.
    #[serde(default)]
    pub log_limit: Option<ByteSize>,
}

/// One machine (or `count` identical machines) the plan needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Not `deny_unknown_fields`: `options` takes every other key, and the schema walk has
// already refused any key that is neither a field nor a registered backend's name.
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct MachineSpec {
    /// Name; with `count > 1` the machines are `name-1` … `name-N`.
    pub name: String,
    /// Role used by cleanup policies and step selection (defaults to `name`).
    #[serde(default)]
    pub role: Option<String>,
    /// How many machines of this shape (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Backend; defaults to the plan's `backend`, then `local`.
    #[serde(default)]
    pub backend: Option<BackendName>,
    /// Options of the local backend.
    #[serde(default)]
    pub local: Option<LocalMachine>,
    /// Options of the static backend.
    #[serde(default, rename = "static")]
    pub static_hosts: Option<StaticMachine>,
    /// Backends to try in order when the machine's own has no capacity in any zone (each with
    /// its options block in the machine): a cloud that is out of capacity everywhere gives way
    /// to the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<BackendName>,
    /// Options of a registered backend, by its name: the block `my-cloud:` of a machine on the
    /// backend registered as `my-cloud`. The loader checks each block against its backend's
    /// schema and checks.
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_json::Value>,
}

fn one() -> u32 {
    1
}

impl Default for MachineSpec {
    /// One machine on the plan's default backend; set at least `name`.
    fn default() -> Self {
        MachineSpec {
            name: String::new(),
            role: None,
            count: 1,
            backend: None,
            local: None,
            static_hosts: None,
            fallback: Vec::new(),
            options: BTreeMap::new(),
        }
    }
}

impl MachineSpec {
    /// The role: `role` if set, else the name.
    pub fn role(&self) -> &str {
        self.role.as_deref().unwrap_or(&self.name)
    }

    /// The options block of `backend` (the block named after it), if the machine has one.
    pub fn options_of(&self, backend: BackendName) -> Option<&serde_json::Value> {
        self.options.get(backend.as_str())
    }

    /// The machine's backend: `backend:` if set, else the backend whose options block it has
    /// (`static:` or a registered backend's), else `default`.
    pub fn backend_or(&self, default: BackendName) -> BackendName {
        if let Some(b) = self.backend {
            return b;
        }
        if let Some(name) = self
            .options
            .keys()
            .find(|k| !self.fallback.iter().any(|f| f.as_str() == k.as_str()))
        {
            BackendName::intern(name)
        } else if self.static_hosts.is_some() {
            BackendName::STATIC
        } else {
            default
        }
    }

    /// The backends the machine may land on, in order: its own (as [`MachineSpec::backend_or`]
    /// says), then its `fallback`.
    pub fn alternatives(&self, default: BackendName) -> Vec<BackendName> {
        std::iter::once(self.backend_or(default))
            .chain(self.fallback.iter().copied())
            .collect()
    }

    /// Names of the machines this spec expands to.
    pub fn instance_names(&self) -> Vec<String> {
        if self.count <= 1 {
            vec![self.name.clone()]
        } else {
            (1..=self.count)
                .map(|i| format!("{}-{i}", self.name))
                .collect()
        }
    }
}

/// Options of the local backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalMachine {
    /// Where sandboxes are made (default: `machines/` inside the run directory).
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// Options of the static backend: which inventory hosts may serve this machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct StaticMachine {
    /// Inventory host names (or OpenSSH config host aliases) to pick from.
    pub hosts: Vec<String>,
}

/// A host that already exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct InventoryHost {
    /// Name used by `static.hosts`.
    pub name: String,
    /// Address or DNS name; defaults to the OpenSSH config's HostName for `name`.
    #[serde(default)]
    pub host: Option<String>,
    /// SSH port (default 22 or the OpenSSH config's).
    #[serde(default)]
    pub port: Option<u16>,
    /// Login user.
    #[serde(default)]
    pub user: Option<String>,
    /// Private key file (passphrase from the environment variable named by `passphrase-env`).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// Environment variable that holds the key's passphrase.
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// Jump hosts, outermost first (inventory names or `user@host:port`).
    #[serde(default)]
    pub proxy_jump: Vec<String>,
    /// OpenSSH config file whose entry for `name` fills what is not set here.
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
    /// Commands that must exist on the host before it is used.
    #[serde(default)]
    pub require_commands: Vec<String>,
    /// Free disk space (MiB) the work directory must have before the host is used.
    #[serde(default)]
    pub min_free_mib: Option<u64>,
    /// A command run on the host when verification fails, before verifying once more.
    #[serde(default)]
    pub repair: Option<String>,
}

/// A file or directory uploaded before the steps run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct FileUpload {
    /// Local path, relative to the plan file.
    pub src: PathBuf,
    /// Destination on the machine; relative paths are inside the machine's work directory.
    pub dest: String,
    /// Machines (names or roles) that get it (default: all).
    #[serde(default)]
    pub machines: Vec<String>,
    /// File mode as octal text, e.g. `"0644"` (default: the source's mode).
    #[serde(default)]
    pub mode: Option<String>,
}

/// One step of the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct StepSpec {
    /// Unique name; used in logs, results and `depends-on`.
    pub name: String,
    /// A script file (relative to the plan file) uploaded and run.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// An inline shell command.
    #[serde(default)]
    pub command: Option<String>,
    /// Reboot the machine and wait for it to come back (instead of a script or command).
    #[serde(default)]
    pub reboot: bool,
    /// A step type registered by the program that embeds qa-run (see `Engine::step_type`).
    #[serde(default)]
    pub uses: Option<String>,
    /// Parameters for a `uses` step type.
    #[serde(default)]
    pub with: BTreeMap<String, serde_json::Value>,
    /// Machines (names or roles) the step runs on (default: all).
    #[serde(default)]
    pub machines: Vec<String>,
    /// Environment of the step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the machine's work directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Timeout (default from `defaults.timeout`, then 30m).
    #[serde(default)]
    pub timeout: Option<PlanDuration>,
    /// Steps that must PASS first (on every machine they run on); otherwise this one is SKIPPED.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Steps that must have finished first, whatever their verdict.
    #[serde(default)]
    pub after: Vec<String>,
    /// Retries of an ERROR verdict (infrastructure); FAIL and TIMEOUT are never retried.
    #[serde(default)]
    pub retries: Option<u32>,
    /// The script reboots the machine itself; qa-run waits for the new boot and takes its status.
    #[serde(default)]
    pub expect_reboot: bool,
    /// Run with non-interactive sudo.
    #[serde(default)]
    pub sudo: bool,
    /// Run under a pseudo-terminal.
    #[serde(default)]
    pub pty: bool,
    /// Run under a supervisor on the machine so a dropped connection does not lose the step.
    #[serde(default)]
    pub detached: bool,
    /// The most this step's log and recording keep of its output (default from
    /// `defaults.log-limit`, then 64 MiB).
    #[serde(default)]
    pub log_limit: Option<ByteSize>,
}

/// What a step does, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepAction<'a> {
    /// Upload this script and run it.
    Script(&'a std::path::Path),
    /// Run this shell command.
    Command(&'a str),
    /// Reboot and wait for a new boot id.
    Reboot,
    /// A step type registered by the embedding program.
    Custom(&'a str),
}

impl StepSpec {
    /// What this step does. Validation guarantees exactly one action is set.
    pub fn action(&self) -> StepAction<'_> {
        if let Some(s) = &self.script {
            StepAction::Script(s)
        } else if let Some(c) = &self.command {
            StepAction::Command(c)
        } else if let Some(u) = &self.uses {
            StepAction::Custom(u)
        } else {
            StepAction::Reboot
        }
    }
}

/// Artifacts to collect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct ArtifactSpec {
    /// Glob patterns, relative to the machine's work directory unless absolute.
    pub paths: Vec<String>,
    /// Machines (names or roles) to collect from (default: all).
    #[serde(default)]
    pub machines: Vec<String>,
    /// Whether secrets are masked in these files as they are brought back (default: yes). With
    /// `false` they are kept byte for byte — and published as they are, secrets and all. A file
    /// that another entry with `redact: true` also matches is masked.
    #[serde(default = "yes")]
    pub redact: bool,
}

fn yes() -> bool {
    true
}

/// A place results are published to. Exactly one key per entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum PublishTarget {
    /// A static HTML site in a directory.
    Site {
        /// Directory of the site.
        dir: PathBuf,
    },
    /// A JUnit XML file.
    Junit {
        /// Where to write it.
        path: PathBuf,
    },
    /// The JSON report.
    Json {
        /// Where to write it.
        path: PathBuf,
    },
    /// A Markdown summary.
    Markdown {
        /// Where to write it.
        path: PathBuf,
    },
    /// The site, committed and pushed to a branch of a git remote.
    Git {
        /// The remote URL or path.
        remote: String,
        /// The branch (default `gh-pages`).
        #[serde(default)]
        branch: Option<String>,
    },
}

/// When machines are destroyed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CleanupPolicy {
    /// Always destroy (default).
    #[default]
    Always,
    /// Destroy only if every step on the machine passed; keep a failed one for debugging.
    OnSuccess,
    /// Never destroy.
    Never,
}

impl CleanupPolicy {
    /// The name used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Always => "always",
            CleanupPolicy::OnSuccess => "on-success",
            CleanupPolicy::Never => "never",
        }
    }
}

/// Cleanup policy: a default and per-role overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct CleanupSpec {
    /// The policy of roles that are not listed.
    #[serde(default)]
    pub default: CleanupPolicy,
    /// Per-role policies.
    #[serde(default)]
    pub roles: BTreeMap<String, CleanupPolicy>,
}

impl CleanupSpec {
    /// The policy of a role.
    pub fn policy_for(&self, role: &str) -> CleanupPolicy {
        self.roles.get(role).copied().unwrap_or(self.default)
    }
}
