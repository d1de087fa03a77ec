//! A provisioner of one's own: machines are directories under a root this provisioner owns,
//! reached as local processes. It is as small as a provisioner can be while keeping the contract
//! (journal before create, idempotent destroy from the journal alone, sweep by test id), and it
//! passes the same conformance suite as qa-run's own backends.
//!
//! `cargo run -p qa-examples --example custom_provisioner`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use qa_core::journal::ResourceLedger;
use qa_core::plan::{BackendName, MachineSpec};
use qa_core::provision::{MachineRequest, ProvisionError, Provisioner, RunContext};
use qa_core::{Access, Leftovers, Machine, Resource, ResourceKey, RunId, SweepScope, TestId};

/// The backend's name: what a plan's `backend:` says to get one of its machines.
const DIRS: BackendName = BackendName::new("dirs");

/// Makes each machine a directory `<root>/<test-id>/<machine>`.
#[derive(Debug, Clone)]
struct DirProvisioner {
    root: PathBuf,
}

fn err(machine: Option<&str>, e: std::io::Error, leftovers: Leftovers) -> ProvisionError {
    ProvisionError::new(DIRS, machine, e.to_string(), leftovers).with_source(e)
}

#[async_trait]
impl Provisioner for DirProvisioner {
    fn backend(&self) -> BackendName {
        DIRS
    }

    async fn create(
        &self,
        req: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError> {
        let path = self.root.join(&run.test_id.0).join(&req.name);
        let key = ResourceKey(format!("{}/dir", req.name));
        // The intent goes into the journal before the directory exists.
        ledger
            .intent(
                Resource::new(key.clone(), DIRS, "dir")
                    .machine(req.name.clone())
                    .detail("path", path.display().to_string()),
            )
            .await
            .map_err(|e| {
                ProvisionError::new(DIRS, Some(&req.name), e.to_string(), Leftovers::Clear)
            })?;
        std::fs::create_dir_all(&path)
            .map_err(|e| err(Some(&req.name), e, Leftovers::Remaining(vec![key.clone()])))?;
        ledger
            .created(&key, &path.display().to_string(), BTreeMap::new())
            .await
            .map_err(|e| {
                ProvisionError::new(
                    DIRS,
                    Some(&req.name),
                    e.to_string(),
                    Leftovers::Remaining(vec![key.clone()]),
                )
            })?;
        Ok(Machine::new(
            req.name.clone(),
            DIRS,
            Access::Local { root: path.clone() },
            path.display().to_string(),
        )
        .in_role(req.role.clone())
        .resource(key))
    }

    async fn wait_ready(&self, m: &Machine, _: Duration) -> Result<(), ProvisionError> {
        match &m.access {
            Access::Local { root } if root.is_dir() => Ok(()),
            _ => Err(ProvisionError::new(
                DIRS,
                Some(&m.name),
                "directory is missing",
                Leftovers::Unknown,
            )),
        }
    }

    async fn destroy(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError> {
        for r in resources {
            // Only the journal record is needed: the path is in its details.
            if let Some(path) = r.details.get("path") {
                match std::fs::remove_dir_all(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(err(
                            r.machine.as_deref(),
                            e,
                            Leftovers::Remaining(vec![r.key.clone()]),
                        ));
                    }
                }
            }
            ledger.destroyed(&r.key).await.map_err(|e| {
                ProvisionError::new(DIRS, r.machine.as_deref(), e.to_string(), Leftovers::Clear)
            })?;
        }
        Ok(())
    }

    async fn sweep(
        &self,
        test_id: &TestId,
        _scope: SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError> {
        let dir = self.root.join(&test_id.0);
        let mut removed = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            removed.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(removed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(removed),
            Err(e) => Err(err(None, e, Leftovers::Unknown)),
        }
    }
}

fn request() -> MachineRequest {
    MachineRequest::new("box", "box", MachineSpec::new("box"))
}

fn run_context(dir: &std::path::Path) -> RunContext {
    RunContext::new(
        RunId("example".into()),
        TestId("example-test".into()),
        "example",
        dir,
    )
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join("qa-run-custom-provisioner");
    let p = DirProvisioner {
        root: dir.join("machines"),
    };
    let fresh = p.clone();
    qa_core::conformance::provisioner::run_all(&p, &fresh, &request(), &run_context(&dir)).await;
    println!("DirProvisioner passes the provisioner conformance suite");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_provisioner_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let p = DirProvisioner {
            root: dir.path().join("machines"),
        };
        let fresh = DirProvisioner {
            root: dir.path().join("machines"),
        };
        qa_core::conformance::provisioner::run_all(
            &p,
            &fresh,
            &request(),
            &run_context(dir.path()),
        )
        .await;
    }

    #[tokio::test]
    #[should_panic]
    async fn a_provisioner_that_forgets_the_journal_fails_the_suite() {
        /// Creates the directory but never journals it.
        #[derive(Debug)]
        struct Forgetful(DirProvisioner);
        #[async_trait]
        impl Provisioner for Forgetful {
            fn backend(&self) -> BackendName {
                DIRS
            }
            async fn create(
                &self,
                req: &MachineRequest,
                run: &RunContext,
                _: &dyn ResourceLedger,
            ) -> Result<Machine, ProvisionError> {
                let ledger = qa_core::journal::MemoryLedger::default();
                self.0.create(req, run, &ledger).await
            }
            async fn wait_ready(&self, m: &Machine, d: Duration) -> Result<(), ProvisionError> {
                self.0.wait_ready(m, d).await
            }
            async fn destroy(
                &self,
                r: &[Resource],
                l: &dyn ResourceLedger,
            ) -> Result<(), ProvisionError> {
                self.0.destroy(r, l).await
            }
            async fn sweep(
                &self,
                t: &TestId,
                scope: SweepScope<'_>,
            ) -> Result<Vec<String>, ProvisionError> {
                self.0.sweep(t, scope).await
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = Forgetful(DirProvisioner {
            root: dir.path().join("m"),
        });
        let fresh = Forgetful(DirProvisioner {
            root: dir.path().join("m"),
        });
        qa_core::conformance::provisioner::run_all(
            &p,
            &fresh,
            &request(),
            &run_context(dir.path()),
        )
        .await;
    }
}
