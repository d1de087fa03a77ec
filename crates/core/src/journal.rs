//! The run journal: `state.json` in the run directory, rewritten atomically (temporary file, fsync,
//! rename, fsync of the directory) after every transition.
//!
//! It holds every task's state and every resource the run created, recorded as an intent *before*
//! the call that creates it and with its id after. From it alone `qa-run cleanup` removes what a
//! killed run left and `qa-run resume` continues a run without re-running what passed on a machine
//! that still exists.
//!
//! Writes are coalesced: many transitions that happen while a write is in flight go out together in
//! the next write, so a run of 10,000 tasks does not write the file 20,000 times. Callers that need
//! durability before going on (a resource intent before a cloud API call) await [`RunJournal::flush`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::types::{Machine, Resource, ResourceKey, ResourceState, Verdict};

/// Version of the journal format.
pub const JOURNAL_SCHEMA_VERSION: u32 = 1;

/// Name of the journal file in a run directory.
pub const JOURNAL_FILE: &str = "state.json";

/// Detail a ledger sets when a resource is first recorded destroyed: when (unix seconds), so that
/// what it cost can end there.
pub const DESTROYED_AT: &str = "destroyed-at";

/// Marks a record destroyed, stamping [`DESTROYED_AT`] the first time only.
pub fn mark_destroyed(r: &mut Resource) {
    if r.state != ResourceState::Destroyed {
        r.state = ResourceState::Destroyed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        r.details.insert(DESTROYED_AT.to_string(), now.to_string());
    }
}

/// A journal problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a journal this version understands.
    #[error("journal {path} cannot be read: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A resource key was recorded twice or is unknown.
    #[error("journal: {0}")]
    Resource(String),
}

/// Where the run as a whole is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Planned but not started (`qa-run plan`).
    Planned,
    /// Running (or killed while running).
    Running,
    /// Finished, teardown done.
    Finished,
    /// Interrupted by the user; teardown done.
    Interrupted,
    /// Interrupted twice: exited at once, teardown may be incomplete.
    Aborted,
    /// Resources were cleaned up by `qa-run cleanup`.
    CleanedUp,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TaskState {
    /// Waiting for dependencies.
    Pending,
    /// Running.
    Running,
    /// Ended with a verdict.
    Done,
}

/// One task as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct TaskRecord {
    /// State.
    pub state: TaskState,
    /// Verdict once done.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Start of the last attempt, RFC 3339.
    #[serde(default)]
    pub started: Option<String>,
    /// Wall time of the last attempt in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Exit status of a step.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why, for anything but PASS.
    #[serde(default)]
    pub message: Option<String>,
}

impl TaskRecord {
    /// A pending task.
    pub fn pending() -> Self {
        TaskRecord {
            state: TaskState::Pending,
            verdict: None,
            attempts: 0,
            started: None,
            duration_ms: 0,
            exit_code: None,
            message: None,
        }
    }
}

/// Everything in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct JournalState {
    /// [`JOURNAL_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Run id.
    pub run_id: String,
    /// Test id (tag value).
    pub test_id: String,
    /// Plan name.
    pub plan_name: String,
    /// Plan file, absolute.
    pub plan_path: String,
    /// Run status.
    pub status: RunStatus,
    /// Process id of the qa-run that owns the run while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Start, RFC 3339.
    pub started: String,
    /// End, RFC 3339.
    #[serde(default)]
    pub finished: Option<String>,
    /// Tasks by id, in graph order of ids.
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Resources in creation order.
    pub resources: Vec<Resource>,
    /// Machines by name, once provisioned.
    pub machines: BTreeMap<String, Machine>,
}

impl JournalState {
    /// A new state for a run.
    pub fn new(run_id: &str, test_id: &str, plan_name: &str, plan_path: &str) -> Self {
        JournalState {
            schema_version: JOURNAL_SCHEMA_VERSION,
            run_id: run_id.into(),
            test_id: test_id.into(),
            plan_name: plan_name.into(),
            plan_path: plan_path.into(),
            status: RunStatus::Planned,
            pid: None,
            started: crate::now_rfc3339(),
            finished: None,
            tasks: BTreeMap::new(),
            resources: Vec::new(),
            machines: BTreeMap::new(),
        }
    }

    /// Whether machine `name` was made and every resource it is made of still exists: created,
    /// or kept by its cleanup policy. A resumed run reuses such a machine, and only on it keeps
    /// the verdicts of the steps that passed: on a machine made anew they run again.
    pub fn machine_survives(&self, name: &str) -> bool {
        self.machines.get(name).is_some_and(|m| {
            !m.resources.is_empty()
                && m.resources.iter().all(|k| {
                    self.resources.iter().any(|r| {
                        &r.key == k
                            && matches!(r.state, ResourceState::Created | ResourceState::Kept)
                    })
                })
        })
    }

    /// Resources that may still exist (intent or created, not destroyed or kept).
    pub fn live_resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources
            .iter()
            .filter(|r| matches!(r.state, ResourceState::Intent | ResourceState::Created))
    }
}

/// Records resources as they are created. Implemented by [`RunJournal`] and by the in-memory
/// ledger of the conformance suites.
///
/// Every method returns only once the record is durable.
#[async_trait]
pub trait ResourceLedger: Send + Sync {
    /// Records that `resource` is about to be created (state [`ResourceState::Intent`]).
    async fn intent(&self, resource: Resource) -> Result<(), JournalError>;
    /// Records the id (and more details) of a created resource.
    async fn created(
        &self,
        key: &ResourceKey,
        id: &str,
        details: BTreeMap<String, String>,
    ) -> Result<(), JournalError>;
    /// Records that a resource is gone.
    async fn destroyed(&self, key: &ResourceKey) -> Result<(), JournalError>;
    /// Records that a resource is deliberately kept.
    async fn kept(&self, key: &ResourceKey) -> Result<(), JournalError>;
    /// All resources recorded so far.
    fn resources(&self) -> Vec<Resource>;
}

/// The journal of one run, backed by `state.json`.
#[derive(Debug)]
pub struct RunJournal {
    path: PathBuf,
    state: Mutex<(JournalState, u64)>,
    // Serialises writers; holds the generation that is on disk.
    written: tokio::sync::Mutex<u64>,
}

impl RunJournal {
    /// Creates a journal in `run_dir` (which must exist) and writes it.
    pub async fn create(run_dir: &Path, state: JournalState) -> Result<Self, JournalError> {
        let j = RunJournal {
            path: run_dir.join(JOURNAL_FILE),
            state: Mutex::new((state, 1)),
            written: tokio::sync::Mutex::new(0),
        };
        j.flush().await?;
        Ok(j)
    }

    /// Opens an existing journal (for cleanup and resume).
    pub fn open(run_dir: &Path) -> Result<Self, JournalError> {
        let path = run_dir.join(JOURNAL_FILE);
        let state = read_state(&path)?;
        Ok(RunJournal {
            path,
            state: Mutex::new((state, 0)),
            written: tokio::sync::Mutex::new(0),
        })
    }

    /// Path of `state.json`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> JournalState {
        self.state.lock().expect("journal lock").0.clone()
    }

    /// Changes the state in memory; the change reaches disk with the next [`flush`](Self::flush).
    pub fn update<R>(&self, f: impl FnOnce(&mut JournalState) -> R) -> R {
        let mut g = self.state.lock().expect("journal lock");
        g.1 += 1;
        f(&mut g.0)
    }

    /// Writes the state if it changed since the last write, and returns once everything updated
    /// before this call is on disk. Concurrent callers share one write.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let target = self.state.lock().expect("journal lock").1;
        let mut written = self.written.lock().await;
        if *written >= target {
            return Ok(());
        }
        let (bytes, generation) = {
            let g = self.state.lock().expect("journal lock");
            let bytes = serde_json::to_vec_pretty(&g.0).map_err(|e| JournalError::Format {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
            (bytes, g.1)
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })??;
        *written = generation;
        Ok(())
    }

    /// Synchronous write, for the last moment before exiting on a second Ctrl-C.
    pub fn flush_blocking(&self) -> Result<(), JournalError> {
        let bytes = {
            let g = self.state.lock().expect("journal lock");
            serde_json::to_vec_pretty(&g.0).map_err(|e| JournalError::Format {
                path: self.path.clone(),
                message: e.to_string(),
            })?
        };
        write_atomically(&self.path, &bytes)
    }
}

#[async_trait]
impl ResourceLedger for RunJournal {
    async fn intent(&self, resource: Resource) -> Result<(), JournalError> {
        self.update(|s| {
            // A key may be used again once its resource is gone (a resumed run re-provisions).
            s.resources
                .retain(|r| !(r.key == resource.key && r.state == ResourceState::Destroyed));
            if s.resources.iter().any(|r| r.key == resource.key) {
                return Err(JournalError::Resource(format!(
                    "resource {} recorded twice",
                    resource.key
                )));
            }
            s.resources.push(Resource {
                state: ResourceState::Intent,
                ..resource
            });
            Ok(())
        })?;
        self.flush().await
    }

    async fn created(
        &self,
        key: &ResourceKey,
        id: &str,
        details: BTreeMap<String, String>,
    ) -> Result<(), JournalError> {
        self.update(|s| {
            set_resource(s, key, |r| {
                r.id = Some(id.to_string());
                r.details.extend(details);
                r.state = ResourceState::Created;
            })
        })?;
        self.flush().await
    }

    async fn destroyed(&self, key: &ResourceKey) -> Result<(), JournalError> {
        self.update(|s| set_resource(s, key, mark_destroyed))?;
        self.flush().await
    }

    async fn kept(&self, key: &ResourceKey) -> Result<(), JournalError> {
        self.update(|s| set_resource(s, key, |r| r.state = ResourceState::Kept))?;
        self.flush().await
    }

    fn resources(&self) -> Vec<Resource> {
        self.state.lock().expect("journal lock").0.resources.clone()
    }
}

fn set_resource(
    s: &mut JournalState,
    key: &ResourceKey,
    f: impl FnOnce(&mut Resource),
) -> Result<(), JournalError> {
    match s.resources.iter_mut().find(|r| &r.key == key) {
        Some(r) => {
            f(r);
            Ok(())
        }
        None => Err(JournalError::Resource(format!("unknown resource {key}"))),
    }
}

/// Reads a `state.json`.
pub fn read_state(path: &Path) -> Result<JournalState, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let state: JournalState = serde_json::from_slice(&bytes).map_err(|e| JournalError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if state.schema_version > JOURNAL_SCHEMA_VERSION {
        return Err(JournalError::Format {
            path: path.to_path_buf(),
            message: format!(
                "schema version {} is newer than this qa-run understands ({JOURNAL_SCHEMA_VERSION}); use a newer qa-run",
                state.schema_version
            ),
        });
    }
    Ok(state)
}

/// Writes `bytes` to `path` so that a reader sees the old or the new file, never a mix, even
/// after a power cut: temporary file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A [`ResourceLedger`] in memory, for tests and for embedding without a run directory.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    resources: Mutex<Vec<Resource>>,
}

#[async_trait]
impl ResourceLedger for MemoryLedger {
    async fn intent(&self, resource: Resource) -> Result<(), JournalError> {
        let mut g = self.resources.lock().expect("ledger lock");
        if g.iter().any(|r| r.key == resource.key) {
            return Err(JournalError::Resource(format!(
                "resource {} recorded twice",
                resource.key
            )));
        }
        g.push(Resource {
            state: ResourceState::Intent,
            ..resource
        });
        Ok(())
    }
    async fn created(
        &self,
        key: &ResourceKey,
        id: &str,
        details: BTreeMap<String, String>,
    ) -> Result<(), JournalError> {
        let mut g = self.resources.lock().expect("ledger lock");
        let r = g
            .iter_mut()
            .find(|r| &r.key == key)
            .ok_or_else(|| JournalError::Resource(format!("unknown resource {key}")))?;
        r.id = Some(id.into());
        r.details.extend(details);
        r.state = ResourceState::Created;
        Ok(())
    }
    async fn destroyed(&self, key: &ResourceKey) -> Result<(), JournalError> {
        let mut g = self.resources.lock().expect("ledger lock");
        let r = g
            .iter_mut()
            .find(|r| &r.key == key)
            .ok_or_else(|| JournalError::Resource(format!("unknown resource {key}")))?;
        mark_destroyed(r);
        Ok(())
    }
    async fn kept(&self, key: &ResourceKey) -> Result<(), JournalError> {
        let mut g = self.resources.lock().expect("ledger lock");
        let r = g
            .iter_mut()
            .find(|r| &r.key == key)
            .ok_or_else(|| JournalError::Resource(format!("unknown resource {key}")))?;
        r.state = ResourceState::Kept;
        Ok(())
    }
    fn resources(&self) -> Vec<Resource> {
        self.resources.lock().expect("ledger lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendName;

    fn res(key: &str) -> Resource {
        Resource {
            key: ResourceKey(key.into()),
            backend: BackendName::LOCAL,
            kind: "sandbox".into(),
            machine: None,
            id: None,
            client_token: None,
            details: BTreeMap::new(),
            state: ResourceState::Intent,
        }
    }

    #[tokio::test]
    async fn destroyed_is_stamped_once_with_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let j = RunJournal::create(dir.path(), JournalState::new("r", "t", "p", "/p.yaml"))
            .await
            .unwrap();
        j.intent(res("a")).await.unwrap();
        let key = ResourceKey("a".into());
        j.created(&key, "id-1", BTreeMap::new()).await.unwrap();
        assert!(!j.resources()[0].details.contains_key(DESTROYED_AT));
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        j.destroyed(&key).await.unwrap();
        let on_disk = read_state(&dir.path().join(JOURNAL_FILE)).unwrap();
        let at: u64 = on_disk.resources[0].details[DESTROYED_AT].parse().unwrap();
        assert!(at >= before && at <= before + 60, "{at} vs {before}");
        // Destroying again (teardown is idempotent) keeps the first time.
        j.update(|s| {
            s.resources[0]
                .details
                .insert(DESTROYED_AT.into(), "17".into());
        });
        j.destroyed(&key).await.unwrap();
        assert_eq!(j.resources()[0].details[DESTROYED_AT], "17");
    }

    #[tokio::test]
    async fn intent_is_on_disk_before_intent_returns() {
        let dir = tempfile::tempdir().unwrap();
        let j = RunJournal::create(dir.path(), JournalState::new("r", "t", "p", "/p.yaml"))
            .await
            .unwrap();
        j.intent(res("a")).await.unwrap();
        let on_disk = read_state(&dir.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(on_disk.resources.len(), 1);
        assert_eq!(on_disk.resources[0].state, ResourceState::Intent);
        j.created(&ResourceKey("a".into()), "id-1", BTreeMap::new())
            .await
            .unwrap();
        let on_disk = read_state(&dir.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(on_disk.resources[0].id.as_deref(), Some("id-1"));
        assert_eq!(on_disk.live_resources().count(), 1);
        j.destroyed(&ResourceKey("a".into())).await.unwrap();
        assert_eq!(
            read_state(&dir.path().join(JOURNAL_FILE))
                .unwrap()
                .live_resources()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn duplicate_intent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let j = RunJournal::create(dir.path(), JournalState::new("r", "t", "p", "/p.yaml"))
            .await
            .unwrap();
        j.intent(res("a")).await.unwrap();
        assert!(j.intent(res("a")).await.is_err());
    }

    #[tokio::test]
    async fn concurrent_flushes_coalesce_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(
            RunJournal::create(dir.path(), JournalState::new("r", "t", "p", "/p"))
                .await
                .unwrap(),
        );
        let mut handles = Vec::new();
        for i in 0..50 {
            let j = j.clone();
            handles.push(tokio::spawn(async move {
                j.update(|s| s.tasks.insert(format!("t{i}"), TaskRecord::pending()));
                j.flush().await.unwrap();
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(read_state(j.path()).unwrap().tasks.len(), 50);
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = JournalState::new("r", "t", "p", "/p");
        s.schema_version = 99;
        write_atomically(
            &dir.path().join(JOURNAL_FILE),
            &serde_json::to_vec(&s).unwrap(),
        )
        .unwrap();
        let e = read_state(&dir.path().join(JOURNAL_FILE))
            .unwrap_err()
            .to_string();
        assert!(e.contains("use a newer qa-run"), "{e}");
    }
}
