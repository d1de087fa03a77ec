//! The `local` provisioner: a sandbox directory per machine on this host.
//!
//! A machine `box` of a run becomes the directory `<root>/box`, where `root` is the spec's
//! `local.root` or `<run_dir>/machines`. The directory is journaled as a `sandbox` resource (its
//! path in the details) before it is made, and carries a marker file naming the run and test id,
//! so that [`LocalProvisioner::sweep`] can find it again when the journal is lost and so that
//! destroy never removes a directory qa-run did not make.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use qa_core::BackendName;
use qa_core::SweepScope;
use qa_core::journal::ResourceLedger;
use qa_core::provision::{MachineRequest, ProvisionError, Provisioner, RunContext};
use qa_core::remote::{STEP_TAG_VAR, sandbox_tag_prefix};
use qa_core::types::{Access, Leftovers, Machine, Resource, ResourceKey, ResourceState, TestId};
use serde::{Deserialize, Serialize};

/// Name of the marker file at the top of every sandbox.
pub const SANDBOX_MARKER: &str = ".qa-run-sandbox.json";

/// Resource kind of a sandbox in the journal.
pub const SANDBOX_KIND: &str = "sandbox";

/// Key under which the sandbox path is kept in the resource details.
pub const PATH_DETAIL: &str = "path";

/// How deep below a sweep root sandboxes are looked for: `<results>/<run-id>/machines/<name>`.
const SWEEP_DEPTH: usize = 3;

/// What the marker file says about its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SandboxMarker {
    /// The run that made it.
    pub run_id: String,
    /// The test id it belongs to.
    pub test_id: String,
    /// The machine it is.
    pub machine: String,
}

/// Gives each machine its own sandbox directory.
#[derive(Debug, Clone, Default)]
pub struct LocalProvisioner {
    sweep_roots: Vec<PathBuf>,
}

impl LocalProvisioner {
    /// A provisioner whose [`sweep`](Provisioner::sweep) searches no directory (sandboxes are still
    /// destroyed from the journal).
    pub fn new() -> Self {
        Self::default()
    }

    /// A provisioner whose sweep searches `root` (typically the results directory, or a
    /// `local.root` from plans) for sandboxes, up to three levels deep.
    pub fn with_sweep_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.sweep_roots.push(root.into());
        self
    }

    fn error(
        &self,
        machine: Option<&str>,
        message: impl Into<String>,
        leftovers: Leftovers,
    ) -> ProvisionError {
        ProvisionError::new(BackendName::LOCAL, machine, message, leftovers)
    }
}

/// The key of a machine's sandbox in the journal.
pub fn sandbox_key(machine: &str) -> ResourceKey {
    ResourceKey(format!("local/sandbox/{machine}"))
}

fn read_marker(dir: &Path) -> Option<SandboxMarker> {
    let text = std::fs::read_to_string(dir.join(SANDBOX_MARKER)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes a sandbox if it is one of ours: it carries our marker, or it is empty (made, then the
/// run died before the marker was written). Gone already is fine.
fn remove_sandbox(path: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => {
            return Err(std::io::Error::other(format!(
                "{} is not a directory; left alone",
                path.display()
            )));
        }
        Ok(_) => {}
    }
    if read_marker(path).is_none() && std::fs::read_dir(path)?.next().is_some() {
        return Err(std::io::Error::other(format!(
            "{} has no {SANDBOX_MARKER} and is not empty, so qa-run did not make it; left alone",
            path.display()
        )));
    }
    // Steps of a run that was killed keep running in their own process groups; they belong to
    // the sandbox and go with it.
    kill_processes_inside(path);
    std::fs::remove_dir_all(path)?;
    Ok(true)
}

/// Sandboxes below `dir`, at most `depth` levels down; symlinks are not followed and a sandbox's
/// own contents are not searched.
fn find_sandboxes(dir: &Path, depth: usize, found: &mut Vec<(PathBuf, SandboxMarker)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = e.path();
        if let Some(marker) = read_marker(&path) {
            found.push((path, marker));
        } else if depth > 1 {
            find_sandboxes(&path, depth - 1, found);
        }
    }
}

#[async_trait]
impl Provisioner for LocalProvisioner {
    fn backend(&self) -> BackendName {
        BackendName::LOCAL
    }

    async fn create(
        &self,
        request: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError> {
        let name = request.name.as_str();
        if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
            return Err(self.error(
                Some(name),
                format!("`{name}` cannot be a directory name"),
                Leftovers::Clear,
            ));
        }
        let root = match request.spec.local.as_ref().and_then(|l| l.root.clone()) {
            Some(root) => root,
            None => run.run_dir.join("machines"),
        };
        let root = std::path::absolute(&root).unwrap_or(root);
        let path = root.join(name);
        let key = sandbox_key(name);
        let path_text = path.display().to_string();

        let mut details = BTreeMap::from([(PATH_DETAIL.to_string(), path_text.clone())]);
        details.insert("test-id".into(), run.test_id.0.clone());
        ledger
            .intent({
                let mut intent =
                    Resource::new(key.clone(), BackendName::LOCAL, SANDBOX_KIND).machine(name);
                intent.details = details;
                intent
            })
            .await
            .map_err(|e| {
                self.error(Some(name), "cannot journal the sandbox", Leftovers::Clear)
                    .with_source(e)
            })?;

        let marker = SandboxMarker {
            run_id: run.run_id.0.clone(),
            test_id: run.test_id.0.clone(),
            machine: name.into(),
        };
        let made = tokio::task::spawn_blocking({
            let (root, path) = (root.clone(), path.clone());
            move || -> Result<(), (std::io::Error, bool)> {
                std::fs::create_dir_all(&root).map_err(|e| (e, false))?;
                // create_dir, not create_dir_all: an existing directory is someone else's.
                std::fs::create_dir(&path).map_err(|e| (e, false))?;
                let bytes = serde_json::to_vec_pretty(&marker).expect("marker serialises");
                qa_core::journal::write_atomically(&path.join(SANDBOX_MARKER), &bytes)
                    .map_err(|e| (std::io::Error::other(e.to_string()), true))
            }
        })
        .await
        .map_err(|e| (std::io::Error::other(e.to_string()), true))
        .and_then(|r| r);
        match made {
            Ok(()) => {}
            Err((e, dir_made)) => {
                let leftovers = if dir_made {
                    Leftovers::Remaining(vec![key.clone()])
                } else {
                    // Nothing of ours exists: say so in the journal, so that teardown does not
                    // remove a directory that was there before.
                    let _ = ledger.destroyed(&key).await;
                    Leftovers::Clear
                };
                return Err(self
                    .error(
                        Some(name),
                        format!("cannot make sandbox {path_text}: {e}"),
                        leftovers,
                    )
                    .with_source(e));
            }
        }

        ledger
            .created(&key, &path_text, BTreeMap::new())
            .await
            .map_err(|e| {
                self.error(
                    Some(name),
                    format!("sandbox {path_text} made but not journaled"),
                    Leftovers::Remaining(vec![key.clone()]),
                )
                .with_source(e)
            })?;

        Ok(Machine::new(
            name,
            BackendName::LOCAL,
            Access::Local { root: path.clone() },
            path_text.clone(),
        )
        .in_role(request.role.clone())
        .resource(key)
        .fact("sandbox", path_text))
    }

    async fn wait_ready(
        &self,
        machine: &Machine,
        _deadline: Duration,
    ) -> Result<(), ProvisionError> {
        // A directory is ready the moment it exists; there is nothing to wait for.
        let Access::Local { root } = &machine.access else {
            return Err(self.error(Some(&machine.name), "not a local machine", Leftovers::Clear));
        };
        match read_marker(root) {
            Some(_) if root.is_dir() => Ok(()),
            _ => Err(self.error(
                Some(&machine.name),
                format!(
                    "sandbox {} is missing or has no {SANDBOX_MARKER}",
                    root.display()
                ),
                Leftovers::Unknown,
            )),
        }
    }

    async fn destroy(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError> {
        let mut failures = Vec::new();
        for r in resources
            .iter()
            .filter(|r| r.backend == BackendName::LOCAL && r.kind == SANDBOX_KIND)
        {
            // A kept sandbox reaching destroy is one the user now wants gone (`qa-run cleanup`).
            if r.state == ResourceState::Destroyed {
                continue;
            }
            let Some(path) = r.details.get(PATH_DETAIL).cloned().or_else(|| r.id.clone()) else {
                failures.push((
                    r.key.clone(),
                    format!("{} has no path in the journal", r.key),
                ));
                continue;
            };
            let p = PathBuf::from(&path);
            match tokio::task::spawn_blocking(move || remove_sandbox(&p)).await {
                Ok(Ok(_)) => {
                    if let Err(e) = ledger.destroyed(&r.key).await {
                        failures.push((
                            r.key.clone(),
                            format!("{path} removed but not journaled: {e}"),
                        ));
                    }
                }
                Ok(Err(e)) => failures.push((r.key.clone(), format!("{path}: {e}"))),
                Err(e) => failures.push((r.key.clone(), format!("{path}: {e}"))),
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let message = failures
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Err(self.error(
            None,
            format!("cannot destroy: {message}"),
            Leftovers::Remaining(failures.into_iter().map(|(k, _)| k).collect()),
        ))
    }

    async fn sweep(
        &self,
        test_id: &TestId,
        _scope: SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError> {
        let roots = self.sweep_roots.clone();
        let test_id = test_id.0.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            let mut failed = Vec::new();
            for root in &roots {
                let mut found = Vec::new();
                if read_marker(root).is_some() {
                    found.push((root.clone(), read_marker(root).expect("just read")));
                } else {
                    find_sandboxes(root, SWEEP_DEPTH, &mut found);
                }
                for (path, marker) in found.into_iter().filter(|(_, m)| m.test_id == test_id) {
                    match remove_sandbox(&path) {
                        Ok(true) => removed.push(format!(
                            "sandbox {} (machine {}, run {})",
                            path.display(),
                            marker.machine,
                            marker.run_id
                        )),
                        Ok(false) => {}
                        Err(e) => failed.push(format!("{}: {e}", path.display())),
                    }
                }
            }
            (removed, failed)
        })
        .await
        .map_err(|e| self.error(None, format!("sweep task failed: {e}"), Leftovers::Unknown))?;
        let (removed, failed) = result;
        if failed.is_empty() {
            Ok(removed)
        } else {
            Err(self.error(
                None,
                format!(
                    "sweep removed {} sandbox(es) but not: {}",
                    removed.len(),
                    failed.join("; ")
                ),
                Leftovers::Orphaned(failed.join("; ")),
            ))
        }
    }
}

/// Kills every process that belongs to the sandbox `dir`: its working directory is inside, or
/// it carries the tag of a step run there (a step's processes keep it wherever they go; see
/// [`sandbox_tag_prefix`]). Waits (briefly) until none is left. Returns how many were killed.
pub fn kill_processes_inside(dir: &Path) -> usize {
    let Ok(dir) = dir.canonicalize() else {
        return 0;
    };
    let tagged = format!("{STEP_TAG_VAR}={}", sandbox_tag_prefix(&dir));
    let me = std::process::id();
    let mut killed = 0;
    for _ in 0..50 {
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid as u32 != me)
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(&dir))
                    || std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                        env.split(|b| *b == 0)
                            .any(|v| v.starts_with(tagged.as_bytes()))
                    })
            })
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from /proc; at worst the process is already gone.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}
