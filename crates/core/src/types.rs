//! Domain types shared by every crate: machines, resources, verdicts and identifiers.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::BackendName;

/// Identifies one run: `<plan>-<utc time>-<random>`; also the name of its results directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

/// The longest run id accepted, in bytes.
pub const RUN_ID_MAX_LEN: usize = 128;

/// Why a text cannot be a run id: a run id names its directory under the results directory, so
/// it must be one safe path component ([`RunId::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "run id {id:?} cannot name a run directory: {why}; use letters, digits, `.`, `_` and `-` \
     (at most {RUN_ID_MAX_LEN}, not starting with `.` or `-`)"
)]
pub struct RunIdError {
    /// The text given.
    pub id: String,
    /// What is wrong with it.
    pub why: String,
}

impl RunId {
    /// `id` as a run id, if it is one safe path component: ASCII letters, digits, `.`, `_` and
    /// `-`, not starting with `.` (so never `.`, `..` or hidden) or `-` (so never taken for an
    /// option), at most [`RUN_ID_MAX_LEN`] bytes. Anything else could write outside the results
    /// directory (`../..`, `/abs`, `a/b`) or into its root (the empty id).
    ///
    /// ```
    /// use qa_core::RunId;
    /// assert!(RunId::parse("nightly-2024.06.01_a").is_ok());
    /// for bad in ["", "..", "../..", "/abs", "a/b", ".hidden", "-x", "a b"] {
    ///     assert!(RunId::parse(bad).is_err(), "{bad}");
    /// }
    /// ```
    pub fn parse(id: &str) -> Result<RunId, RunIdError> {
        let refuse = |why: String| {
            Err(RunIdError {
                id: id.to_string(),
                why,
            })
        };
        if id.is_empty() {
            return refuse("it is empty".into());
        }
        if id.len() > RUN_ID_MAX_LEN {
            return refuse(format!("it is {} bytes long", id.len()));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return refuse(format!("it contains {c:?}"));
        }
        if id.starts_with('.') || id.starts_with('-') {
            return refuse(format!("it starts with `{}`", &id[..1]));
        }
        Ok(RunId(id.to_string()))
    }

    /// A fresh id for a run of `plan_name`.
    pub fn generate(plan_name: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| "now".into());
        let slug: String = plan_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        // A run id may not start with `-` ([`RunId::parse`]).
        let slug = match slug.trim_start_matches('-') {
            "" => "run",
            s => s,
        };
        let suffix: u32 = rand::random::<u32>() & 0xffff;
        RunId(format!("{slug}-{stamp}-{suffix:04x}"))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id every cloud resource of a run is tagged with, so that it can be found and removed
/// even when the journal is lost. Defaults to the run id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TestId(pub String);

impl fmt::Display for TestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A machine as the provisioner hands it over: enough to reach it and to destroy it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct Machine {
    /// Instance name from the plan (`name` or `name-N`).
    pub name: String,
    /// Role from the plan.
    pub role: String,
    /// Backend that made it.
    pub backend: BackendName,
    /// How to reach it.
    pub access: Access,
    /// Directory on the machine where uploads and steps live.
    pub workdir: String,
    /// Journal keys of the resources that make up this machine.
    #[serde(default)]
    pub resources: Vec<ResourceKey>,
    /// Backend facts worth showing (zone, instance type, address, …).
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

/// How a machine is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[non_exhaustive]
pub enum Access {
    /// Local processes in a sandbox directory.
    Local {
        /// The sandbox root.
        root: PathBuf,
    },
    /// SSH, possibly through jump hosts.
    Ssh(SshTarget),
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Local { root } => write!(f, "sandbox {}", root.display()),
            Access::Ssh(t) => {
                write!(f, "ssh {}@{} -p {}", t.user, t.host, t.port)?;
                if let Some(key) = &t.identity_file {
                    write!(f, " -i {}", key.display())?;
                }
                if !t.jumps.is_empty() {
                    let jumps: Vec<String> = t
                        .jumps
                        .iter()
                        .map(|j| format!("{}@{}:{}", j.user, j.host, j.port))
                        .collect();
                    write!(f, " -J {}", jumps.join(","))?;
                }
                Ok(())
            }
        }
    }
}

/// Where and how to SSH to a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct SshTarget {
    /// Address or name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// Environment variable holding the key's passphrase (never the passphrase itself).
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// Jump hosts, outermost first.
    #[serde(default)]
    pub jumps: Vec<SshTarget>,
    /// Host-key policy.
    #[serde(default)]
    pub host_keys: HostKeyPolicy,
}

/// How host keys are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
#[non_exhaustive]
pub enum HostKeyPolicy {
    /// Check against known_hosts files (the user's by default); unknown or changed keys fail.
    #[default]
    Strict,
    /// A machine this run created: trust the first key into the run-local known_hosts file,
    /// then require it to match.
    TrustFirstUse {
        /// The run-local known_hosts file.
        known_hosts: PathBuf,
    },
    /// No checking at all. Logged loudly on every connection.
    Insecure,
}

/// Key of a resource in the run journal: unique within a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceKey(pub String);

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lifecycle of a journaled resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ResourceState {
    /// The create call is about to be (or was) made; the id is not known yet.
    Intent,
    /// Created; `id` is set.
    Created,
    /// Destroyed (or found to be gone).
    Destroyed,
    /// Deliberately kept by the cleanup policy.
    Kept,
}

/// A resource a run created (or is about to), as recorded in its journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct Resource {
    /// Key in the journal.
    pub key: ResourceKey,
    /// Backend that owns it.
    pub backend: BackendName,
    /// Kind within the backend: `sandbox`, `instance`, `volume`, `reservation`, …
    pub kind: String,
    /// Machine it belongs to, if any.
    #[serde(default)]
    pub machine: Option<String>,
    /// Backend id once created.
    #[serde(default)]
    pub id: Option<String>,
    /// Idempotency token sent with the create call.
    #[serde(default)]
    pub client_token: Option<String>,
    /// Where it lives (region, zone, directory, …) and anything else destroy needs.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Where it is in its life.
    pub state: ResourceState,
}

/// What an error left behind, said in its message: teardown removes what the journal holds and
/// sweeps by tag for the rest, so the user learns from it whether anything may be orphaned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Leftovers {
    /// Nothing was created, or everything created was removed.
    Clear,
    /// These journaled resources still exist; teardown will remove them.
    Remaining(Vec<ResourceKey>),
    /// Something may exist that is not in the journal; only a tag sweep can find it.
    Orphaned(String),
    /// Not known; teardown must sweep by tag.
    Unknown,
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftovers::Clear => f.write_str("nothing was left behind"),
            Leftovers::Remaining(keys) => write!(
                f,
                "{} journaled resource(s) remain and go at teardown",
                keys.len()
            ),
            Leftovers::Orphaned(what) => write!(
                f,
                "something may remain that only a sweep by tag finds: {what}"
            ),
            Leftovers::Unknown => f.write_str("what remains is not known; teardown sweeps by tag"),
        }
    }
}

/// The outcome of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Verdict {
    /// It did what it should.
    Pass,
    /// The test said no (non-zero exit status).
    Fail,
    /// Infrastructure failed (SSH dropped, API refused, …). The only verdict that is retried.
    Error,
    /// It ran out of time; its process tree was killed.
    Timeout,
    /// A dependency did not pass.
    Skipped,
    /// The run was cancelled while it ran or before it could start.
    Interrupted,
}

impl Verdict {
    /// Upper-case name, as shown everywhere.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
            Verdict::Timeout => "TIMEOUT",
            Verdict::Skipped => "SKIPPED",
            Verdict::Interrupted => "INTERRUPTED",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A boot of a machine; changes on every reboot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BootId(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_run_ids_are_valid_whatever_the_plan_is_called() {
        for name in [
            "smoke",
            "_private",
            "--x",
            "",
            "ünïcode plan",
            &"long".repeat(30),
        ] {
            let id = RunId::generate(name);
            assert_eq!(RunId::parse(&id.0), Ok(id.clone()), "plan {name:?}");
        }
    }

    #[test]
    fn a_run_id_is_one_safe_path_component() {
        for ok in [
            "r1",
            "nightly-2024.06.01_a",
            "A.b-c_d",
            &"x".repeat(RUN_ID_MAX_LEN),
        ] {
            assert!(RunId::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "it is empty"),
            ("..", "it starts with `.`"),
            (".", "it starts with `.`"),
            ("../..", "it contains '/'"),
            ("/abs", "it contains '/'"),
            ("a/b", "it contains '/'"),
            ("a\\b", "it contains '\\\\'"),
            ("-rf", "it starts with `-`"),
            ("a b", "it contains ' '"),
            ("a\0b", "it contains '\\0'"),
        ] {
            let e = RunId::parse(bad).unwrap_err();
            assert_eq!(e.why, why, "{bad:?}");
            assert!(e.to_string().contains("use letters, digits"), "{e}");
        }
        let long = "x".repeat(RUN_ID_MAX_LEN + 1);
        assert_eq!(
            RunId::parse(&long).unwrap_err().why,
            format!("it is {} bytes long", RUN_ID_MAX_LEN + 1)
        );
    }
}
