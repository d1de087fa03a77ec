//! The tasks of one machine's life: make it, wait until it answers, upload to it, bring its
//! artifacts back, and destroy or keep it.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::context::{ActiveRun, READY_DEADLINE, by_backend};
use super::super::layout::{artifacts_dir, file_name_of, script_remote_path};
use crate::dag::TaskResult;
use crate::events::{Event, TaskId, TaskKind};
use crate::journal::ResourceLedger;
use crate::plan::{CleanupPolicy, StepAction};
use crate::provision::MachineRequest;
use crate::redact::Redactor;
use crate::remote::{RemoteError, RemoteExecutor};
use crate::stages::{self, Stage};
use crate::types::{ResourceState, Verdict};

impl ActiveRun {
    pub(crate) async fn provision(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        // A resumed run reuses a machine whose resources all still exist (the same test as
        // `prepare_resume` made to keep the verdicts of the steps that passed on it).
        let snap = self.journal.snapshot();
        if let Some(m) = snap
            .machines
            .get(machine)
            .filter(|_| snap.machine_survives(machine))
        {
            // A machine an earlier run kept (its cleanup policy) is this run's again: its
            // teardown decides anew what becomes of it.
            self.journal.update(|s| {
                for r in s.resources.iter_mut() {
                    if m.resources.contains(&r.key) && r.state == ResourceState::Kept {
                        r.state = ResourceState::Created;
                    }
                }
            });
            if let Err(e) = self.journal.flush().await {
                return TaskResult::new(Verdict::Error, e.to_string());
            }
            self.state().machines.insert(machine.to_string(), m.clone());
            return TaskResult::new(Verdict::Pass, "reused the machine of the earlier run");
        }
        // A machine whose backend has no capacity in any zone moves on to its next one, if it
        // has one (`fallback`), until one makes it.
        loop {
            let now = self.current(inst);
            let Some(p) = self.engine.backends.provisioner(now.backend).cloned() else {
                return TaskResult::new(
                    Verdict::Error,
                    format!("no provisioner for backend {}", now.backend),
                );
            };
            let mut spec = self.loaded.plan.machines[inst.spec_index].clone();
            spec.backend = Some(now.backend);
            // Paths in a plan are relative to the plan file, wherever qa-run was started.
            if let Some(root) = spec.local.as_mut().and_then(|l| l.root.as_mut()) {
                *root = self.loaded.resolve(root);
            }
            // Only a machine that asked for a reservation is launched into one: the one reserved
            // for it. One that came to its backend after the reserve task (or to a backend and
            // region others had reserved in already) reserves for itself.
            let key = self.reservation_key(inst);
            let mut placement = key
                .as_ref()
                .and_then(|_| self.state().placements.get(machine).cloned());
            if let (Some(key), None) = (&key, &placement) {
                match self.reserve_one(&now, key).await {
                    Ok(p) => {
                        self.state()
                            .placements
                            .insert(machine.to_string(), p.clone());
                        placement = Some(p);
                    }
                    Err(e @ crate::capacity::CapacityError::NoCapacity { .. })
                        if self.fall_back(inst, e.to_string()) =>
                    {
                        continue;
                    }
                    Err(e) => return TaskResult::new(Verdict::Error, e.to_string()),
                }
            }
            let request = MachineRequest {
                name: inst.name.clone(),
                role: inst.role.clone(),
                spec,
                placement,
            };
            match p.create(&request, &self.ctx, &*self.journal).await {
                Ok(mut m) => {
                    if let Some(tried) = self.state().tried.get(machine) {
                        m.facts.insert("tried-before".into(), tried.join("; "));
                    }
                    self.journal
                        .update(|s| s.machines.insert(m.name.clone(), m.clone()));
                    if let Err(e) = self.journal.flush().await {
                        return TaskResult::new(Verdict::Error, e.to_string());
                    }
                    self.state().machines.insert(m.name.clone(), m);
                    return TaskResult::pass();
                }
                Err(e) if e.out_of_capacity && self.fall_back(inst, e.message.clone()) => {}
                Err(e) => return TaskResult::new(Verdict::Error, format!("{e} ({})", e.leftovers)),
            }
        }
    }

    pub(crate) async fn wait_ready(&self, machine: &str) -> TaskResult {
        let Some(m) = self.machine(machine) else {
            return TaskResult::new(Verdict::Error, "machine was not provisioned");
        };
        let p = self
            .engine
            .backends
            .provisioner(m.backend)
            .cloned()
            .expect("checked before the run");
        let until = std::time::Instant::now() + READY_DEADLINE;
        if let Err(e) = p.wait_ready(&m, READY_DEADLINE).await {
            return TaskResult::new(Verdict::Error, e.to_string());
        }
        let connector = self
            .engine
            .connector
            .clone()
            .expect("checked before the run");
        // A machine the cloud has just made can answer on port 22 before its first-boot setup
        // has installed the run's key: refused logins and dropped connections are tried again
        // until the ready deadline. A host-key problem never is.
        let fresh = self.engine.backends.is_cloud(m.backend);
        let mut pause = Duration::from_millis(500);
        loop {
            match connector.connect(&m).await {
                Ok(x) => {
                    self.state().executors.insert(machine.to_string(), x);
                    return TaskResult::pass();
                }
                Err(e @ (RemoteError::Connect { .. } | RemoteError::Disconnected { .. }))
                    if fresh && std::time::Instant::now() + pause < until =>
                {
                    tracing::info!(machine, "not accepting the run's login yet ({e}); retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return TaskResult::new(Verdict::Error, e.to_string()),
            }
        }
    }

    pub(crate) async fn upload(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        let spec = &self.loaded.plan.machines[inst.spec_index];
        let Some(x) = self.executor(machine) else {
            return TaskResult::new(Verdict::Error, "not connected");
        };
        for f in &self.loaded.plan.files {
            if !stages::selects(&f.machines, inst, spec) {
                continue;
            }
            let src = self.loaded.resolve(&f.src);
            let mode = match f
                .mode
                .as_deref()
                .map(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8))
            {
                Some(Ok(m)) => Some(m),
                Some(Err(_)) => {
                    return TaskResult::new(
                        Verdict::Error,
                        format!("mode of {} is not octal", f.src.display()),
                    );
                }
                None => None,
            };
            let r = if src.is_dir() {
                x.put_tree(&src, &f.dest).await.map(|_| ())
            } else {
                x.put_file(&src, &f.dest, mode).await
            };
            if let Err(e) = r {
                return TaskResult::new(Verdict::Error, e.to_string());
            }
        }
        for s in &self.loaded.plan.steps {
            if let (StepAction::Script(path), true) =
                (s.action(), stages::selects(&s.machines, inst, spec))
                && let Err(e) = x
                    .put_file(
                        &self.loaded.resolve(path),
                        &script_remote_path(&s.name),
                        Some(0o755),
                    )
                    .await
            {
                return TaskResult::new(Verdict::Error, e.to_string());
            }
        }
        TaskResult::pass()
    }

    /// Brings the machine's artifacts back. Files are masked as they are written into the run
    /// directory (see [`collect_masked`]), unless every `artifacts:` entry that matches them says
    /// `redact: false`; so a later `qa-run report` or `publish`, which may not know the plan's
    /// secrets, only ever copies masked files.
    pub(crate) async fn collect(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        let spec = &self.loaded.plan.machines[inst.spec_index];
        let (mut masked, mut kept) = (Vec::new(), Vec::new());
        for a in self
            .loaded
            .plan
            .artifacts
            .iter()
            .filter(|a| stages::selects(&a.machines, inst, spec))
        {
            if a.redact { &mut masked } else { &mut kept }.extend(a.paths.iter().cloned());
        }
        if masked.is_empty() && kept.is_empty() {
            return TaskResult::pass();
        }
        let Some(x) = self.executor(machine) else {
            return TaskResult::new(Verdict::Error, "not connected");
        };
        let dest = artifacts_dir(&self.ctx.run_dir, machine);
        let mut written = std::collections::BTreeSet::new();
        // Kept files first: a file that a masked entry matches too is then overwritten masked.
        if !kept.is_empty() {
            match x.collect(&kept, &dest).await {
                Ok(paths) => written.extend(paths),
                Err(e) => return TaskResult::new(Verdict::Error, e.to_string()),
            }
        }
        if !masked.is_empty() {
            let staging = std::env::temp_dir().join(format!(
                "qa-run-collect-{}-{}-{}",
                file_name_of(&self.ctx.run_id.0),
                file_name_of(machine),
                std::process::id()
            ));
            match collect_masked(&*x, &masked, &staging, &dest, &self.redactor).await {
                Ok(paths) => written.extend(paths),
                Err(e) => return TaskResult::new(Verdict::Error, e),
            }
        }
        let rel: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(&self.ctx.run_dir)
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect();
        self.state().artifacts.insert(machine.to_string(), rel);
        TaskResult::pass()
    }

    pub(crate) async fn teardown(&self, machine: &str) -> TaskResult {
        let inst = self.instance(machine);
        if let Some(x) = self.state().executors.remove(machine) {
            // Close outside the lock.
            tokio::spawn(async move { x.close().await });
        }
        let resources: Vec<_> = self
            .journal
            .snapshot()
            .live_resources()
            .filter(|r| r.machine.as_deref() == Some(machine))
            .cloned()
            .collect();
        if resources.is_empty() {
            return TaskResult::pass();
        }
        let policy = self.loaded.plan.cleanup.policy_for(&inst.role);
        let all_passed = self.state().outcomes.iter().all(|(stage, o)| {
            !matches!(stage, Stage::Step { machine: m, .. } if m == machine)
                || o.verdict == Verdict::Pass
        });
        let keep = match policy {
            CleanupPolicy::Always => false,
            CleanupPolicy::Never => true,
            CleanupPolicy::OnSuccess => !all_passed,
        };
        if keep {
            for r in &resources {
                if let Err(e) = self.journal.kept(&r.key).await {
                    return TaskResult::new(Verdict::Error, e.to_string());
                }
            }
            let access = self
                .machine(machine)
                .map(|m| m.access.to_string())
                .unwrap_or_default();
            self.state().kept.push(machine.to_string());
            self.emit(Event::Note {
                task: Some(TaskId::of_machine(TaskKind::Teardown, machine)),
                message: format!(
                    "kept {machine} for debugging (cleanup policy {}): {access}; remove it with `qa-run cleanup {}`",
                    policy.as_str(),
                    self.ctx.run_dir.display()
                ),
            });
            return TaskResult::pass();
        }
        // Each resource goes through its own backend's provisioner: a machine that fell back
        // to another cloud is there, not where the plan put it first.
        let mut problems = Vec::new();
        for (backend, records) in by_backend(&resources) {
            let Some(p) = self.engine.backends.provisioner(backend).cloned() else {
                problems.push(format!("no provisioner for backend {backend}"));
                continue;
            };
            if let Err(e) = p.destroy(&records, &*self.journal).await {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            TaskResult::pass()
        } else {
            let msg = problems.join("; ");
            self.state().cleanup_failures.push(msg.clone());
            TaskResult::new(Verdict::Error, msg)
        }
    }
}

/// Collects the files `patterns` match into `staging` (a private directory outside the run
/// directory, made here and removed before returning), then copies each into `dest` with its
/// secrets masked ([`Redactor::redact_file`]: text and binary files alike). The run directory
/// never holds an unmasked copy, even if qa-run is killed halfway. Returns the paths written in
/// `dest`.
async fn collect_masked(
    x: &dyn RemoteExecutor,
    patterns: &[String],
    staging: &Path,
    dest: &Path,
    redactor: &Redactor,
) -> Result<Vec<PathBuf>, String> {
    // Private to this user; fails rather than reuse a directory someone else made.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(|e| {
            format!(
                "making {} to collect artifacts into: {e}",
                staging.display()
            )
        })?;
    let result = async {
        let staged = x
            .collect(patterns, staging)
            .await
            .map_err(|e| e.to_string())?;
        let (staging, dest, redactor) =
            (staging.to_path_buf(), dest.to_path_buf(), redactor.clone());
        tokio::task::spawn_blocking(move || {
            let mut written = Vec::new();
            for file in staged {
                let rel = file.strip_prefix(&staging).map_err(|_| {
                    format!(
                        "the executor wrote {} outside {}",
                        file.display(),
                        staging.display()
                    )
                })?;
                let target = dest.join(rel);
                let masking = |e: std::io::Error| {
                    format!("masking secrets in artifact {}: {e}", target.display())
                };
                if let Some(d) = target.parent() {
                    std::fs::create_dir_all(d).map_err(masking)?;
                }
                redactor.redact_file(&file, &target).map_err(masking)?;
                let mode = std::fs::metadata(&file).map_err(masking)?.permissions();
                std::fs::set_permissions(&target, mode).map_err(masking)?;
                written.push(target);
            }
            Ok(written)
        })
        .await
        .map_err(|e| format!("masking artifacts: {e}"))?
    }
    .await;
    if let Err(e) = std::fs::remove_dir_all(staging) {
        tracing::warn!(dir = %staging.display(), "cannot remove the artifact staging directory: {e}");
    }
    result
}
