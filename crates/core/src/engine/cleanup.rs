//! Cleaning up outside a run: everything a run directory's journal says may still exist (after a
//! crash too), everything carrying a test id when the journal is lost, what outlived its
//! keep-until (the janitor), and publishing a finished run again.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;

use super::builder::Engine;
use super::context::by_backend;
use super::error::EngineError;
use super::run_lock::{RunDirUse, RunLock, check_run_dir};
use super::stages::capacity::end_reservation_records;
use crate::backend::{BackendName, ExpiredResource, SweepScope};
use crate::capacity::RESERVATION_KIND;
use crate::journal::{JournalError, ResourceLedger, RunJournal, RunStatus};
use crate::types::{Resource, ResourceKey, ResourceState, TestId};

/// What `cleanup` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupReport {
    /// Lines describing what was removed.
    pub destroyed: Vec<String>,
    /// Lines describing what could not be removed.
    pub remaining: Vec<String>,
}

/// How far [`Engine::cleanup_with_progress`] is: how many of the resources the journal lists
/// as possibly existing are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupProgress {
    /// Resources removed so far.
    pub removed: usize,
    /// Resources the journal lists as possibly existing (reservations are not counted).
    pub total: usize,
}

/// Told of a cleanup's progress: once before anything is removed, then after each resource a
/// backend recorded as removed. Called from the backends' tasks: it must not block.
pub type CleanupObserver<'a> = &'a (dyn Fn(CleanupProgress) + Send + Sync);

/// The journal, as backends see it during a cleanup: what they record goes to the journal, and
/// each resource they record as destroyed is counted and reported.
struct CountingLedger<'a> {
    journal: &'a RunJournal,
    /// The resources not yet removed.
    left: Mutex<HashSet<ResourceKey>>,
    total: usize,
    observer: CleanupObserver<'a>,
}

#[async_trait]
impl ResourceLedger for CountingLedger<'_> {
    async fn intent(&self, resource: Resource) -> Result<(), JournalError> {
        self.journal.intent(resource).await
    }

    async fn created(
        &self,
        key: &ResourceKey,
        id: &str,
        details: BTreeMap<String, String>,
    ) -> Result<(), JournalError> {
        self.journal.created(key, id, details).await
    }

    async fn destroyed(&self, key: &ResourceKey) -> Result<(), JournalError> {
        self.journal.destroyed(key).await?;
        let removed = {
            let mut left = self.left.lock().expect("cleanup progress lock");
            left.remove(key).then(|| self.total - left.len())
        };
        if let Some(removed) = removed {
            (self.observer)(CleanupProgress {
                removed,
                total: self.total,
            });
        }
        Ok(())
    }

    async fn kept(&self, key: &ResourceKey) -> Result<(), JournalError> {
        self.journal.kept(key).await
    }

    fn resources(&self) -> Vec<Resource> {
        self.journal.resources()
    }
}

/// What a sweep by test id did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// A line per resource removed, with its backend.
    pub swept: Vec<String>,
    /// Reservations cancelled, per backend.
    pub cancelled: Vec<(BackendName, u32)>,
    /// What could not be swept or cancelled.
    pub remaining: Vec<String>,
}

/// What the janitor found, and removed when asked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JanitorReport {
    /// What outlived its keep-until, per backend, sorted by region.
    pub expired: Vec<(BackendName, ExpiredResource)>,
    /// A line per resource removed.
    pub removed: Vec<String>,
    /// Backends or regions that could not be listed.
    pub errors: Vec<String>,
    /// What could not be removed.
    pub left: Vec<String>,
}

impl Engine {
    /// Destroys everything a run's journal says may still exist, and cancels its reservations.
    /// Works on the journal of a run that was killed. Refused while another process works in
    /// `run_dir` ([`EngineError::RunInUse`]): the machines of a live run are its own to tear down.
    pub async fn cleanup(&self, run_dir: &Path) -> Result<CleanupReport, EngineError> {
        self.cleanup_with_progress(run_dir, &|_| {}).await
    }

    /// [`cleanup`](Self::cleanup), telling `progress` how many resources are gone as they go
    /// (a run of 10,000 machines takes a while to remove).
    pub async fn cleanup_with_progress(
        &self,
        run_dir: &Path,
        progress: CleanupObserver<'_>,
    ) -> Result<CleanupReport, EngineError> {
        check_run_dir(run_dir)?;
        let _lock = RunLock::acquire(run_dir, RunDirUse::Cleanup)?;
        let journal = RunJournal::open(run_dir)?;
        let snap = journal.snapshot();
        let test_id = TestId(snap.test_id.clone());
        let mut report = CleanupReport::default();
        // Kept machines too: asking for a cleanup is asking for them to go.
        // Reservations are the reservation backend's to cancel (below), not a provisioner's.
        let to_destroy = by_backend(
            snap.resources
                .iter()
                .filter(|r| r.state != ResourceState::Destroyed && r.kind != RESERVATION_KIND),
        );
        let left: HashSet<ResourceKey> = to_destroy
            .values()
            .flatten()
            .map(|r| r.key.clone())
            .collect();
        let ledger = CountingLedger {
            journal: &journal,
            total: left.len(),
            left: Mutex::new(left),
            observer: progress,
        };
        if ledger.total > 0 {
            progress(CleanupProgress {
                removed: 0,
                total: ledger.total,
            });
        }
        for (backend, resources) in to_destroy {
            let Some(p) = self.backends.provisioner(backend) else {
                report.remaining.push(format!(
                    "{} {} resource(s): the `{backend}` backend is not in this build",
                    resources.len(),
                    backend
                ));
                continue;
            };
            match p.destroy(&resources, &ledger).await {
                Ok(()) => report.destroyed.extend(resources.iter().map(|r| {
                    format!(
                        "{} {} {}",
                        backend,
                        r.kind,
                        r.id.as_deref().unwrap_or(&r.key.0)
                    )
                })),
                Err(e) => report.remaining.push(e.to_string()),
            }
        }
        // A cloud is also asked for what carries the run's test id: a crash inside a create can
        // leave something the journal knows only as an intent, or not at all.
        for (backend, records) in by_backend(&snap.resources) {
            if !self.backends.is_cloud(backend) {
                continue;
            }
            if let Some(p) = self.backends.provisioner(backend) {
                match p.sweep(&test_id, SweepScope::Run(&records)).await {
                    Ok(lines) => report
                        .destroyed
                        .extend(lines.into_iter().map(|l| format!("{backend} {l} (by tag)"))),
                    Err(e) => report.remaining.push(e.to_string()),
                }
            }
        }
        for b in self.backends.iter() {
            let Some(r) = b.reservation() else {
                continue;
            };
            match r.cancel(&test_id, SweepScope::Run(&snap.resources)).await {
                Ok(n) => {
                    if n > 0 {
                        report
                            .destroyed
                            .push(format!("{} reservation(s) on {}", n, r.backend()));
                    }
                    end_reservation_records(&journal, r.backend()).await;
                }
                Err(e) => report.remaining.push(e.to_string()),
            }
        }
        let still: Vec<String> = journal
            .snapshot()
            .live_resources()
            .map(|r| format!("{} {} {}", r.backend, r.kind, r.key))
            .collect();
        for s in still {
            if !report.remaining.iter().any(|x| x.contains(&s)) {
                report.remaining.push(format!("{s} still recorded as live"));
            }
        }
        journal.update(|s| {
            if report.remaining.is_empty() {
                s.status = RunStatus::CleanedUp;
            }
        });
        journal.flush().await?;
        Ok(report)
    }

    /// Removes everything carrying `test_id` on every backend of this engine that has a
    /// provisioner, and cancels its reservations, where `scope` says: for a run whose directory
    /// is lost.
    pub async fn sweep_test_id(&self, test_id: &TestId, scope: SweepScope<'_>) -> SweepReport {
        let mut report = SweepReport::default();
        for b in self.backends.iter() {
            if let Some(p) = b.provisioner() {
                match p.sweep(test_id, scope).await {
                    Ok(lines) => report.swept.extend(lines),
                    Err(e) => report.remaining.push(e.to_string()),
                }
            }
            if let Some(r) = b.reservation() {
                match r.cancel(test_id, scope).await {
                    Ok(n) => report.cancelled.push((b.name(), n)),
                    Err(e) => report.remaining.push(e.to_string()),
                }
            }
        }
        report
    }

    /// Lists what outlived its keep-until by at least `older_than` on every backend with a
    /// janitor, in its configured region or (`all_regions`) in every region, all regions at
    /// once; with `remove`, removes it too.
    pub async fn janitor(
        &self,
        older_than: std::time::Duration,
        all_regions: bool,
        remove: bool,
    ) -> JanitorReport {
        let cutoff = time::OffsetDateTime::now_utc().unix_timestamp() - older_than.as_secs() as i64;
        let mut report = JanitorReport::default();
        let mut tasks = tokio::task::JoinSet::new();
        for b in self.backends.iter() {
            let Some(j) = b.janitor().cloned() else {
                continue;
            };
            let regions = if all_regions {
                match j.regions().await {
                    Ok(r) => r,
                    Err(e) => {
                        report.errors.push(format!("{}: {e}", b.name()));
                        continue;
                    }
                }
            } else {
                vec![j.default_region()]
            };
            for region in regions {
                let (j, name) = (j.clone(), b.name());
                tasks.spawn(async move {
                    let listed = j.expired(&region, cutoff).await;
                    (name, region, j, listed)
                });
            }
        }
        let mut found = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((name, _, j, Ok(list))) if !list.is_empty() => found.push((name, j, list)),
                Ok((_, _, _, Ok(_))) => {}
                Ok((name, region, _, Err(e))) => {
                    report.errors.push(format!("{name} {region}: {e}"));
                }
                Err(e) => report.errors.push(format!("a listing task failed: {e}")),
            }
        }
        found.sort_by(|a, b| (a.0, &a.2[0].region).cmp(&(b.0, &b.2[0].region)));
        report.errors.sort();
        for (name, j, list) in found {
            let region = list[0].region.clone();
            report.expired.extend(list.into_iter().map(|r| (name, r)));
            if remove {
                match j.remove_expired(&region, cutoff).await {
                    Ok(lines) => report
                        .removed
                        .extend(lines.into_iter().map(|l| format!("{region}: {l}"))),
                    Err(e) => report.left.push(format!("{region}: {e}")),
                }
            }
        }
        report
    }
}
