//! Run-level resources: what a cloud's machines share (a key pair, a security group) is recorded
//! with `machine: None`, and the `release` task removes it once every machine's teardown is over,
//! through the provisioner of its backend; when the cleanup policy keeps a machine of that
//! backend, the shared resources are kept too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qa_core::BackendName;
use qa_core::conformance::fakes::FAKE_CLOUD;
use qa_core::conformance::fakes::FakeProvisioner;
use qa_core::engine::{Engine, RunOptions};
use qa_core::journal::{JOURNAL_FILE, JournalError, JournalState, ResourceLedger};
use qa_core::stages::{Stage, build_graph, task_id};
use qa_core::types::{Leftovers, Machine, Resource, ResourceKey, ResourceState, TestId};
use qa_core::{MachineRequest, ProvisionError, Provisioner, RunContext};

use crate::LocalDirs;

const SHARED_KEY: &str = "test/key-pair";
const SHARED_KIND: &str = "key-pair";

/// The keys of every `destroy` call, in call order.
type Destroys = Arc<Mutex<Vec<Vec<String>>>>;

/// A cloud provisioner whose machines share one run-level resource (made by the first create of
/// the run) besides their own instance each (made by the inner fake).
#[derive(Debug)]
struct SharingProvisioner {
    inner: FakeProvisioner,
    shared_made: AtomicBool,
    destroys: Destroys,
}

#[async_trait]
impl Provisioner for SharingProvisioner {
    fn backend(&self) -> BackendName {
        self.inner.backend()
    }

    async fn create(
        &self,
        r: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError> {
        if !self.shared_made.swap(true, Ordering::SeqCst) {
            let key = ResourceKey(SHARED_KEY.into());
            let fail = |e: JournalError| {
                ProvisionError::new(
                    self.backend(),
                    None,
                    "cannot journal the key pair",
                    Leftovers::Unknown,
                )
                .with_source(e)
            };
            ledger
                .intent(
                    Resource::new(key.clone(), self.backend(), SHARED_KIND)
                        .detail("test-id", run.test_id.0.clone()),
                )
                .await
                .map_err(fail)?;
            ledger
                .created(&key, "key-1", BTreeMap::new())
                .await
                .map_err(fail)?;
        }
        self.inner.create(r, run, ledger).await
    }

    async fn wait_ready(&self, m: &Machine, d: Duration) -> Result<(), ProvisionError> {
        self.inner.wait_ready(m, d).await
    }

    async fn destroy(
        &self,
        resources: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError> {
        self.destroys
            .lock()
            .unwrap()
            .push(resources.iter().map(|r| r.key.0.clone()).collect());
        for r in resources.iter().filter(|r| r.kind == SHARED_KIND) {
            ledger.destroyed(&r.key).await.map_err(|e| {
                ProvisionError::new(
                    self.backend(),
                    None,
                    "destroyed but not journaled",
                    Leftovers::Clear,
                )
                .with_source(e)
            })?;
        }
        self.inner.destroy(resources, ledger).await
    }

    async fn sweep(
        &self,
        t: &TestId,
        scope: qa_core::SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError> {
        self.inner.sweep(t, scope).await
    }
}

/// A plan with a local machine `box` and two aws machines `cloud-1`, `cloud-2`, one step each,
/// and `cleanup` as given (YAML lines after `cleanup:`, or nothing).
fn plan(dir: &Path, cleanup: &str) -> PathBuf {
    let path = dir.join("shared.yaml");
    let mut text = "name: shared
machines:
  - name: box
  - name: cloud
    count: 2
    fake-cloud:
      instance-type: t3.micro
steps:
  - name: hello
    command: echo hello
"
    .to_string();
    if !cleanup.is_empty() {
        text.push_str("cleanup:\n");
        text.push_str(cleanup);
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the plan with a plain fake for `local` and a [`SharingProvisioner`] for `aws`; gives the
/// state.json the run left and the destroy calls the aws provisioner got.
async fn run(cleanup: &str) -> (JournalState, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let machines = dir.path().join("machines");
    let destroys = Destroys::default();
    let cloud = SharingProvisioner {
        inner: FakeProvisioner::new()
            .with_backend(FAKE_CLOUD)
            .with_workdir_root(&machines),
        shared_made: AtomicBool::new(false),
        destroys: destroys.clone(),
    };
    let engine = Engine::new()
        .backends(crate::backends())
        .provisioner(Arc::new(
            FakeProvisioner::new()
                .with_backend(BackendName::LOCAL)
                .with_workdir_root(&machines),
        ))
        .provisioner(Arc::new(cloud))
        .connector(Arc::new(LocalDirs));
    let loaded = crate::load_file(&plan(dir.path(), cleanup)).unwrap();
    let summary = engine
        .prepare(&loaded, RunOptions::new(dir.path().join("results")))
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0, "{:?}", summary.report);
    assert!(
        summary.cleanup_failures.is_empty(),
        "{:?}",
        summary.cleanup_failures
    );
    let state = qa_core::journal::read_state(&summary.run_dir.join(JOURNAL_FILE)).unwrap();
    let destroys = destroys.lock().unwrap().clone();
    (state, destroys)
}

fn shared_resource(state: &JournalState) -> &Resource {
    let shared: Vec<&Resource> = state
        .resources
        .iter()
        .filter(|r| r.machine.is_none())
        .collect();
    assert_eq!(shared.len(), 1, "one shared resource: {shared:?}");
    assert_eq!(shared[0].key.0, SHARED_KEY);
    shared[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn release_destroys_what_the_machines_shared_once_after_their_teardowns() {
    let (state, destroys) = run("").await;

    let calls_with = |key: &str| -> Vec<usize> {
        destroys
            .iter()
            .enumerate()
            .filter(|(_, keys)| keys.iter().any(|k| k == key))
            .map(|(i, _)| i)
            .collect()
    };
    let shared = calls_with(SHARED_KEY);
    assert_eq!(
        shared.len(),
        1,
        "the shared resource is destroyed exactly once: {destroys:?}"
    );
    assert_eq!(
        destroys[shared[0]],
        vec![SHARED_KEY.to_string()],
        "release destroys only what is shared: {destroys:?}"
    );
    for machine in ["cloud-1", "cloud-2"] {
        let own = calls_with(&format!("fake/instance/{machine}"));
        assert_eq!(own.len(), 1, "{machine} destroyed once: {destroys:?}");
        assert!(
            own[0] < shared[0],
            "{machine} goes before what it shared: {destroys:?}"
        );
    }

    assert_eq!(shared_resource(&state).state, ResourceState::Destroyed);
    let live: Vec<&Resource> = state.live_resources().collect();
    assert!(live.is_empty(), "state.json lists nothing live: {live:?}");
    assert_eq!(
        state.resources.len(),
        4,
        "box, cloud-1, cloud-2 and the key pair: {:?}",
        state.resources
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn release_keeps_what_the_machines_shared_when_the_policy_keeps_them() {
    let (state, destroys) = run("  default: never\n").await;

    assert_eq!(shared_resource(&state).state, ResourceState::Kept);
    assert!(
        destroys.iter().flatten().all(|k| k != SHARED_KEY),
        "never asked to destroy the shared resource: {destroys:?}"
    );
    assert!(
        state
            .resources
            .iter()
            .all(|r| r.state == ResourceState::Kept),
        "{:?}",
        state.resources
    );
    assert_eq!(state.live_resources().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_machine_of_another_backend_does_not_keep_what_the_cloud_shared() {
    let (state, destroys) = run("  default: always\n  roles:\n    box: never\n").await;

    assert_eq!(shared_resource(&state).state, ResourceState::Destroyed);
    assert_eq!(
        destroys
            .iter()
            .flatten()
            .filter(|k| *k == SHARED_KEY)
            .count(),
        1,
        "{destroys:?}"
    );
    let states: BTreeMap<String, ResourceState> = state
        .resources
        .iter()
        .map(|r| (r.key.0.clone(), r.state))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("fake/instance/box".to_string(), ResourceState::Kept),
            (
                "fake/instance/cloud-1".to_string(),
                ResourceState::Destroyed
            ),
            (
                "fake/instance/cloud-2".to_string(),
                ResourceState::Destroyed
            ),
            (SHARED_KEY.to_string(), ResourceState::Destroyed),
        ])
    );
}

#[test]
fn the_graph_has_a_release_task_only_when_a_machine_is_in_a_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let release = task_id(&Stage::Release);

    let local = dir.path().join("local.yaml");
    std::fs::write(
        &local,
        "name: local
machines:
  - name: box
    count: 2
steps:
  - name: hello
    command: echo hello
",
    )
    .unwrap();
    let g = build_graph(&crate::load_file(&local).unwrap(), &crate::backends()).unwrap();
    assert!(
        g.node(&release).is_none(),
        "{}",
        qa_core::stages::render_text(&g)
    );

    let g = build_graph(
        &crate::load_file(&plan(dir.path(), "")).unwrap(),
        &crate::backends(),
    )
    .unwrap();
    let node = g
        .node(&release)
        .unwrap_or_else(|| panic!("{}", qa_core::stages::render_text(&g)));
    assert_eq!(node.payload, Stage::Release);
    assert!(node.always, "release runs however the run went");
    let mut deps: Vec<String> = g
        .dependencies(&release)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    deps.sort();
    assert_eq!(
        deps,
        ["teardown:box", "teardown:cloud-1", "teardown:cloud-2"],
        "after every teardown"
    );
}
