//! A cloud of one's own, registered with the engine without changing any qa-run crate.
//!
//! `toy-cloud` lives in this process: its "instances" are directories reached as local
//! processes, and it reserves capacity zone after zone through qa-capacity's shared fallback
//! (zone `toy-a` has no room for `big` machines, so a run that needs two lands in `toy-b`). A
//! plan names it like any built-in backend:
//!
//! ```yaml
//! machines:
//!   - name: worker
//!     count: 2
//!     backend: toy-cloud
//!     toy-cloud: {size: big, reserve: true}
//! ```
//!
//! The harness registers three things under the name: a [`BackendDescriptor`] (the options
//! block's shape and checks, and what a machine asks to have reserved), a [`Provisioner`] and a
//! [`CapacityReservation`]. The engine then reserves, provisions, runs, tears down and cancels
//! with them, and journals everything as it does for its own clouds.
//!
//! `cargo run -p qa-examples --example custom_cloud`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qa_capacity::fallback::{ZoneAttempt, ZoneReserver, reserve_with_fallback};
use qa_core::backend::{OptionProblem, ReservationNeed};
use qa_core::engine::{Engine, RunOptions, RunSummary};
use qa_core::journal::ResourceLedger;
use qa_core::plan::schema::{self, Shape};
use qa_core::{
    Access, Backend, BackendDescriptor, BackendName, BackendRegistry, CapacityError,
    CapacityRequest, CapacityReservation, Leftovers, Machine, MachineRequest, Placement,
    ProvisionError, Provisioner, Resource, ResourceKey, RunContext, SweepScope, TestId,
};

/// The backend's name, as plans write it.
const TOY: BackendName = BackendName::new("toy-cloud");
const SIZES: &[&str] = &["small", "big"];
const ZONES: &[&str] = &["toy-a", "toy-b"];

/// The options block of a `toy-cloud` machine.
const TOY_OPTIONS: Shape = Shape::Struct(&[
    schema::req("size", &schema::STR),
    schema::dflt("zones", &schema::STR_LIST),
    schema::dflt("reserve", &schema::BOOL),
]);

/// What the plan loader and the engine know of `toy-cloud`.
#[derive(Debug)]
struct ToyCloudBackend;

impl BackendDescriptor for ToyCloudBackend {
    fn name(&self) -> BackendName {
        TOY
    }

    fn options_shape(&self) -> Option<&'static Shape> {
        Some(&TOY_OPTIONS)
    }

    fn requires_options(&self) -> bool {
        true
    }

    fn check_options(&self, options: &serde_json::Value) -> Vec<OptionProblem> {
        let size = options["size"].as_str().unwrap_or_default();
        if SIZES.contains(&size) {
            return vec![];
        }
        vec![OptionProblem::new(
            "size",
            format!("`{size}` is not a toy-cloud size"),
            Some("one of `small`, `big`".into()),
        )]
    }

    fn reservation_need(&self, options: Option<&serde_json::Value>) -> Option<ReservationNeed> {
        let o = options?;
        if !o["reserve"].as_bool().unwrap_or(false) {
            return None;
        }
        let zones = o["zones"]
            .as_array()
            .map(|z| {
                z.iter()
                    .filter_map(|z| z.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Some(ReservationNeed::new(None, o["size"].as_str()?, zones))
    }

    fn is_cloud(&self) -> bool {
        true
    }
}

/// The cloud's state: instances and reservations, each tagged with a test id.
#[derive(Debug, Default)]
struct ToyCloud {
    next: u64,
    /// id → (test id, directory)
    instances: BTreeMap<String, (String, PathBuf)>,
    /// id → (test id, zone, size, count)
    reservations: BTreeMap<String, (String, String, String, u32)>,
}

type Shared = Arc<Mutex<ToyCloud>>;

fn new_id(cloud: &mut ToyCloud, prefix: &str) -> String {
    cloud.next += 1;
    format!("{prefix}-{}", cloud.next)
}

fn perr(machine: Option<&str>, message: impl Into<String>) -> ProvisionError {
    ProvisionError::new(TOY, machine, message, Leftovers::Unknown)
}

/// Makes toy-cloud instances: a directory per machine under `root`.
#[derive(Debug, Clone)]
struct ToyProvisioner {
    cloud: Shared,
    root: PathBuf,
}

#[async_trait]
impl Provisioner for ToyProvisioner {
    fn backend(&self) -> BackendName {
        TOY
    }

    async fn create(
        &self,
        req: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError> {
        let key = ResourceKey(format!("{}/instance", req.name));
        let token = format!("{}-{}", run.test_id.0, req.name);
        ledger
            .intent(
                Resource::new(key.clone(), TOY, "instance")
                    .machine(req.name.clone())
                    .client_token(token),
            )
            .await
            .map_err(|e| perr(Some(&req.name), e.to_string()))?;
        let dir = self.root.join(&run.test_id.0).join(&req.name);
        std::fs::create_dir_all(&dir).map_err(|e| perr(Some(&req.name), e.to_string()))?;
        let id = {
            let mut c = self.cloud.lock().unwrap();
            let id = new_id(&mut c, "i");
            c.instances
                .insert(id.clone(), (run.test_id.0.clone(), dir.clone()));
            id
        };
        ledger
            .created(
                &key,
                &id,
                BTreeMap::from([("path".to_string(), dir.display().to_string())]),
            )
            .await
            .map_err(|e| perr(Some(&req.name), e.to_string()))?;
        let mut facts = BTreeMap::from([("instance".to_string(), id)]);
        if let Some(p) = &req.placement {
            facts.insert("zone".into(), p.zone.clone());
            facts.extend(
                p.reservations
                    .iter()
                    .map(|(size, r)| (format!("reservation:{size}"), r.clone())),
            );
        }
        let mut machine = Machine::new(
            req.name.clone(),
            TOY,
            Access::Local { root: dir.clone() },
            dir.display().to_string(),
        )
        .in_role(req.role.clone())
        .resource(key);
        machine.facts = facts;
        Ok(machine)
    }

    async fn wait_ready(&self, _: &Machine, _: Duration) -> Result<(), ProvisionError> {
        Ok(())
    }

    async fn destroy(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError> {
        for r in resources {
            if let Some(id) = &r.id {
                let gone = self.cloud.lock().unwrap().instances.remove(id);
                if let Some((_, dir)) = gone {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            ledger
                .destroyed(&r.key)
                .await
                .map_err(|e| perr(r.machine.as_deref(), e.to_string()))?;
        }
        Ok(())
    }

    async fn sweep(
        &self,
        test_id: &TestId,
        _scope: SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError> {
        let mut c = self.cloud.lock().unwrap();
        let ids: Vec<String> = c
            .instances
            .iter()
            .filter(|(_, (t, _))| t == &test_id.0)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some((_, dir)) = c.instances.remove(id) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        Ok(ids.into_iter().map(|id| format!("instance {id}")).collect())
    }
}

/// Reserves toy-cloud capacity: `toy-a` holds no `big` machines, `toy-b` holds anything.
#[derive(Debug, Clone)]
struct ToyReservation {
    cloud: Shared,
}

#[async_trait]
impl ZoneReserver for ToyReservation {
    async fn zones_offering(&self, _: &CapacityRequest) -> Result<Vec<String>, CapacityError> {
        Ok(ZONES.iter().map(|z| z.to_string()).collect())
    }

    async fn reserve_in_zone(
        &self,
        zone: &str,
        size: &str,
        count: u32,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> ZoneAttempt {
        if zone == "toy-a" && size == "big" {
            return ZoneAttempt::NoCapacity("no big machines left".into());
        }
        let key = ResourceKey(format!("reservation/{zone}/{size}"));
        let intent = Resource::new(key.clone(), TOY, qa_core::capacity::RESERVATION_KIND)
            .detail("zone", zone);
        let fatal = |e: String| {
            ZoneAttempt::Fatal(CapacityError::Other {
                backend: TOY,
                message: e,
                leftovers: Leftovers::Unknown,
            })
        };
        if let Err(e) = ledger.intent(intent).await {
            return fatal(e.to_string());
        }
        let id = {
            let mut c = self.cloud.lock().unwrap();
            let id = new_id(&mut c, "cr");
            c.reservations.insert(
                id.clone(),
                (request.test_id.0.clone(), zone.into(), size.into(), count),
            );
            id
        };
        match ledger.created(&key, &id, BTreeMap::new()).await {
            Ok(()) => ZoneAttempt::Reserved(id),
            Err(e) => fatal(e.to_string()),
        }
    }

    async fn cancel_reservation(
        &self,
        id: &str,
        _: &dyn ResourceLedger,
    ) -> Result<(), CapacityError> {
        self.cloud.lock().unwrap().reservations.remove(id);
        Ok(())
    }
}

#[async_trait]
impl CapacityReservation for ToyReservation {
    fn backend(&self) -> BackendName {
        TOY
    }

    fn is_enabled(&self) -> bool {
        true
    }

    async fn reserve(
        &self,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> Result<Placement, CapacityError> {
        reserve_with_fallback(self, request, ledger).await
    }

    fn get_id(&self, zone: &str, size: &str) -> Option<String> {
        let c = self.cloud.lock().unwrap();
        c.reservations
            .iter()
            .find(|(_, (_, z, s, _))| z == zone && s == size)
            .map(|(id, _)| id.clone())
    }

    async fn cancel(&self, test_id: &TestId, _scope: SweepScope<'_>) -> Result<u32, CapacityError> {
        let mut c = self.cloud.lock().unwrap();
        let before = c.reservations.len();
        c.reservations.retain(|_, (t, ..)| t != &test_id.0);
        Ok((before - c.reservations.len()) as u32)
    }
}

const PLAN: &str = "name: toy
machines:
  - name: worker
    count: 2
    backend: toy-cloud
    toy-cloud: {size: big, reserve: true}
steps:
  - name: where
    command: pwd && echo \"$QA_RUN_MACHINE on toy-cloud\"
";

/// The built-in backends plus toy-cloud, with its clients.
fn backends(cloud: &Shared, root: &Path) -> BackendRegistry {
    let mut r = BackendRegistry::new();
    r.register(
        Backend::new(Arc::new(ToyCloudBackend))
            .with_provisioner(Arc::new(ToyProvisioner {
                cloud: cloud.clone(),
                root: root.to_path_buf(),
            }))
            .with_reservation(Arc::new(ToyReservation {
                cloud: cloud.clone(),
            })),
    )
    .expect("toy-cloud is registered once");
    r
}

/// Loads `plan` with toy-cloud registered and runs it under `dir`.
async fn run(plan: &str, cloud: &Shared, dir: &Path) -> Result<RunSummary, String> {
    let backends = backends(cloud, &dir.join("instances"));
    let path = dir.join("toy.yaml");
    std::fs::write(&path, plan).unwrap();
    let loaded = qa_core::plan::load_file_with(&path, &backends).map_err(|e| e.to_string())?;
    let engine = Engine::new()
        .backends(backends)
        .connector(Arc::new(qa_remote::local::LocalConnector::new()));
    let run = engine
        .prepare(&loaded, RunOptions::new(dir.join("results")))
        .await
        .map_err(|e| e.to_string())?;
    run.execute().await.map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join("qa-run-custom-cloud");
    let cloud = Shared::default();
    let summary = run(PLAN, &cloud, &dir).await.expect("the run completes");
    for m in &summary.report.machines {
        println!("{} on {}: {:?}", m.name, m.backend, m.facts);
    }
    println!(
        "{} (exit code {}); results in {}",
        summary.report.outcome,
        summary.exit_code,
        summary.run_dir.display()
    );
    std::process::exit(summary.exit_code);
}

#[cfg(test)]
mod tests {
    use qa_core::Verdict;

    use super::*;

    #[tokio::test]
    async fn a_registered_cloud_reserves_provisions_runs_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = Shared::default();
        let summary = run(PLAN, &cloud, dir.path()).await.unwrap();
        assert_eq!(summary.exit_code, 0, "{:?}", summary.report);
        assert_eq!(summary.report.steps.len(), 2);
        assert!(
            summary
                .report
                .steps
                .iter()
                .all(|s| s.verdict == Verdict::Pass),
            "{:?}",
            summary.report.steps
        );
        for m in &summary.report.machines {
            assert_eq!(m.backend, "toy-cloud");
            // `toy-a` has no room for big machines: the fallback moved on to `toy-b`.
            assert_eq!(
                m.facts.get("zone").map(String::as_str),
                Some("toy-b"),
                "{m:?}"
            );
            assert!(m.facts.contains_key("reservation:big"), "{m:?}");
        }
        let c = cloud.lock().unwrap();
        assert!(c.instances.is_empty(), "teardown left {:?}", c.instances);
        assert!(
            c.reservations.is_empty(),
            "release left {:?}",
            c.reservations
        );
        let state = std::fs::read_to_string(summary.run_dir.join("state.json")).unwrap();
        assert!(state.contains("\"backend\": \"toy-cloud\""), "{state}");
        let tasks: Vec<&str> = ["reserve", "release", "publish"].to_vec();
        for t in tasks {
            assert!(state.contains(&format!("\"{t}\"")), "no {t} task: {state}");
        }
    }

    #[tokio::test]
    async fn its_options_are_checked_when_the_plan_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = Shared::default();
        let bad = PLAN.replace("size: big", "size: huge, colour: red");
        let e = run(&bad, &cloud, dir.path()).await.unwrap_err();
        assert!(
            e.contains("machines[0].toy-cloud.colour: unknown key `colour`"),
            "{e}"
        );
        let bad = PLAN.replace("size: big", "size: huge");
        let e = run(&bad, &cloud, dir.path()).await.unwrap_err();
        assert!(
            e.contains("machines[0].toy-cloud.size: `huge` is not a toy-cloud size"),
            "{e}"
        );
        assert!(cloud.lock().unwrap().instances.is_empty());
    }
}
