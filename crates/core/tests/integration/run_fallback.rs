//! Fallback from one cloud to the next: a machine whose backend has no capacity in any zone
//! lands on the next backend of its `fallback` list, and only then; the report, the journal and
//! the machine's facts say what was tried.

use std::path::Path;
use std::sync::Arc;

use qa_core::backend::{BackendDescriptor, OptionProblem};
use qa_core::conformance::fakes::{FAKE_CLOUD, FakeProvisioner, FakeReservation};
use qa_core::engine::{Engine, RunOptions};
use qa_core::plan::schema::{self, Shape};
use qa_core::{Backend, BackendName, BackendRegistry};

use crate::LocalDirs;

/// A second cloud, with no reservations.
const OTHER_CLOUD: BackendName = BackendName::new("other-cloud");

#[derive(Debug)]
struct OtherCloud;

const OTHER_OPTIONS: Shape = Shape::Struct(&[schema::req("size", &schema::STR)]);

impl BackendDescriptor for OtherCloud {
    fn name(&self) -> BackendName {
        OTHER_CLOUD
    }
    fn options_shape(&self) -> Option<&'static Shape> {
        Some(&OTHER_OPTIONS)
    }
    fn requires_options(&self) -> bool {
        true
    }
    fn check_options(&self, _: &serde_json::Value) -> Vec<OptionProblem> {
        Vec::new()
    }
    fn is_cloud(&self) -> bool {
        true
    }
}

fn registry() -> BackendRegistry {
    let mut r = crate::backends();
    r.register(Backend::new(Arc::new(OtherCloud))).unwrap();
    r
}

fn plan(dir: &Path, zones: &str) -> std::path::PathBuf {
    let path = dir.join("fallback.yaml");
    std::fs::write(
        &path,
        format!(
            "name: fallback
machines:
  - name: box
    backend: fake-cloud
    fallback: [other-cloud]
    fake-cloud:
      instance-type: t3.micro
      zones: [{zones}]
      reserve: true
    other-cloud:
      size: big
steps:
  - name: s
    command: echo hello
"
        ),
    )
    .unwrap();
    path
}

struct Clouds {
    fake: FakeProvisioner,
    other: FakeProvisioner,
    reservations: FakeReservation,
    engine: Engine,
}

fn clouds(dir: &Path, reservations: FakeReservation) -> Clouds {
    let fake = FakeProvisioner::new()
        .with_backend(FAKE_CLOUD)
        .with_workdir_root(dir.join("machines"));
    let other = FakeProvisioner::new()
        .with_backend(OTHER_CLOUD)
        .with_workdir_root(dir.join("machines"));
    let engine = Engine::new()
        .backends(registry())
        .provisioner(Arc::new(fake.clone()))
        .provisioner(Arc::new(other.clone()))
        .reservation(Arc::new(reservations.clone()))
        .unwrap()
        .connector(Arc::new(LocalDirs));
    Clouds {
        fake,
        other,
        reservations,
        engine,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloud_out_of_capacity_everywhere_gives_way_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let c = clouds(
        dir.path(),
        FakeReservation::new()
            .without_capacity_in("zone-a")
            .without_capacity_in("zone-b"),
    );
    let loaded =
        qa_core::plan::load_file_with(&plan(dir.path(), "zone-a, zone-b"), &registry()).unwrap();
    let options = RunOptions::new(dir.path().join("results")).test_id("fallback-test");
    let summary = c
        .engine
        .prepare(&loaded, options)
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0, "{:#?}", summary.report);
    let m = &summary.report.machines[0];
    assert_eq!(m.backend, "other-cloud");
    let tried = &m.facts["tried-before"];
    assert!(
        tried.starts_with("fake-cloud: ") && tried.contains("zone-a, zone-b"),
        "{tried}"
    );
    // The first cloud made nothing and holds nothing; the second made the machine, and its
    // teardown destroyed it there.
    assert!(c.fake.instances().is_empty());
    assert!(c.reservations.reservations().is_empty());
    assert!(c.other.instances().is_empty(), "{:?}", c.other.instances());
    // The journal keeps where the machine landed and what was tried.
    let state = qa_core::journal::read_state(
        &dir.path()
            .join("results")
            .join(&summary.report.run_id)
            .join(qa_core::journal::JOURNAL_FILE),
    )
    .unwrap();
    assert_eq!(state.machines["box"].backend, OTHER_CLOUD);
    let made: Vec<_> = state
        .resources
        .iter()
        .filter(|r| r.backend == OTHER_CLOUD)
        .collect();
    assert_eq!(made.len(), 1, "{:?}", state.resources);
    assert_eq!(made[0].state, qa_core::types::ResourceState::Destroyed);
    assert_eq!(&state.machines["box"].facts["tried-before"], tried);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloud_with_capacity_somewhere_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let c = clouds(
        dir.path(),
        FakeReservation::new().without_capacity_in("zone-a"),
    );
    let loaded =
        qa_core::plan::load_file_with(&plan(dir.path(), "zone-a, zone-b"), &registry()).unwrap();
    let options = RunOptions::new(dir.path().join("results")).test_id("kept-test");
    let summary = c
        .engine
        .prepare(&loaded, options)
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0, "{:#?}", summary.report);
    let m = &summary.report.machines[0];
    assert_eq!(m.backend, "fake-cloud");
    assert!(!m.facts.contains_key("tried-before"));
    assert!(c.other.instances().is_empty());
}

#[test]
fn fallbacks_are_checked_when_the_plan_loads() {
    let cases: &[(&str, &str)] = &[
        (
            "    fallback: [other-cloud]\n    fake-cloud: {instance-type: t}\n",
            "machines[0]: machine `box` falls back to `other-cloud` but has no `other-cloud:` options",
        ),
        (
            "    fallback: [fake-cloud]\n    fake-cloud: {instance-type: t}\n",
            "machines[0].fallback[0]: backend `fake-cloud` is tried already",
        ),
        (
            "    fallback: [local]\n    fake-cloud: {instance-type: t}\n",
            "machines[0].fallback[0]: backend `local` is not a cloud",
        ),
        (
            "    fallback: [nowhere]\n    fake-cloud: {instance-type: t}\n",
            "nowhere",
        ),
    ];
    for (machine, want) in cases {
        let src = format!(
            "name: x\nmachines:\n  - name: box\n    backend: fake-cloud\n{machine}steps: [{{name: s, command: c}}]\n"
        );
        let e = qa_core::plan::load_str_with(&src, "p.yaml".as_ref(), &registry())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "`{want}` missing from:\n{e}");
        assert!(e.contains("p.yaml:"), "{e}");
    }
}

/// A provisioner of the fake cloud that refuses every create, for lack of capacity or not.
#[derive(Debug)]
struct Refusing {
    out_of_capacity: bool,
}

#[async_trait::async_trait]
impl qa_core::Provisioner for Refusing {
    fn backend(&self) -> BackendName {
        FAKE_CLOUD
    }
    async fn create(
        &self,
        request: &qa_core::MachineRequest,
        _: &qa_core::RunContext,
        _: &dyn qa_core::journal::ResourceLedger,
    ) -> Result<qa_core::Machine, qa_core::ProvisionError> {
        let e = qa_core::ProvisionError::new(
            FAKE_CLOUD,
            Some(&request.name),
            if self.out_of_capacity {
                "no capacity in any zone tried (zone-a, zone-b)"
            } else {
                "quota exceeded"
            },
            qa_core::Leftovers::Clear,
        );
        Err(if self.out_of_capacity {
            e.out_of_capacity()
        } else {
            e
        })
    }
    async fn wait_ready(
        &self,
        _: &qa_core::Machine,
        _: std::time::Duration,
    ) -> Result<(), qa_core::ProvisionError> {
        Ok(())
    }
    async fn destroy(
        &self,
        _: &[qa_core::types::Resource],
        _: &dyn qa_core::journal::ResourceLedger,
    ) -> Result<(), qa_core::ProvisionError> {
        Ok(())
    }
    async fn sweep(
        &self,
        _: &qa_core::TestId,
        _: qa_core::SweepScope<'_>,
    ) -> Result<Vec<String>, qa_core::ProvisionError> {
        Ok(Vec::new())
    }
}

/// Without a reservation, the provisioner's own "no capacity in any zone" moves the machine on;
/// any other error of it does not.
#[tokio::test(flavor = "multi_thread")]
async fn a_create_out_of_capacity_moves_on_and_other_errors_stop() {
    for out_of_capacity in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let other = FakeProvisioner::new()
            .with_backend(OTHER_CLOUD)
            .with_workdir_root(dir.path().join("machines"));
        let engine = Engine::new()
            .backends(registry())
            .provisioner(Arc::new(Refusing { out_of_capacity }))
            .provisioner(Arc::new(other.clone()))
            .connector(Arc::new(LocalDirs));
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "name: p\nmachines:\n  - name: box\n    backend: fake-cloud\n    fallback: [other-cloud]\n    fake-cloud: {instance-type: t}\n    other-cloud: {size: s}\nsteps: [{name: s, command: echo}]\n",
        )
        .unwrap();
        let loaded = qa_core::plan::load_file_with(&path, &registry()).unwrap();
        let options = RunOptions::new(dir.path().join("results")).test_id("create-test");
        let summary = engine
            .prepare(&loaded, options)
            .await
            .unwrap()
            .execute()
            .await
            .unwrap();
        let m = &summary.report.machines[0];
        if out_of_capacity {
            assert_eq!(summary.exit_code, 0, "{:#?}", summary.report);
            assert_eq!(m.backend, "other-cloud");
            assert_eq!(
                m.facts["tried-before"],
                "fake-cloud: no capacity in any zone tried (zone-a, zone-b)"
            );
        } else {
            assert_ne!(summary.exit_code, 0);
            assert_eq!(m.backend, "fake-cloud");
            assert!(other.instances().is_empty());
        }
    }
}
