//! The run's cost estimate: the engine asks every provisioner that made something for an
//! estimate and writes their sum into report.json (and into what publishers get).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qa_core::BackendName;
use qa_core::conformance::fakes::FAKE_CLOUD;
use qa_core::conformance::fakes::{FakeProvisioner, FakePublisher};
use qa_core::engine::{Engine, RunOptions};
use qa_core::journal::ResourceLedger;
use qa_core::report::{CostEstimate, Report};
use qa_core::types::{Machine, Resource, ResourceState, TestId};
use qa_core::{MachineRequest, ProvisionError, Provisioner, RunContext};

use crate::LocalDirs;

/// What a [`PricedProvisioner`] was asked to price.
type Asked = Arc<Mutex<Vec<(Vec<Resource>, i64)>>>;

/// A fake provisioner that prices whatever it made at a fixed estimate.
#[derive(Debug)]
struct PricedProvisioner {
    inner: FakeProvisioner,
    estimate: CostEstimate,
    asked: Asked,
}

#[async_trait]
impl Provisioner for PricedProvisioner {
    fn backend(&self) -> BackendName {
        self.inner.backend()
    }
    async fn create(
        &self,
        r: &MachineRequest,
        run: &RunContext,
        ledger: &dyn ResourceLedger,
    ) -> Result<Machine, ProvisionError> {
        self.inner.create(r, run, ledger).await
    }
    async fn wait_ready(&self, m: &Machine, d: Duration) -> Result<(), ProvisionError> {
        self.inner.wait_ready(m, d).await
    }
    async fn destroy(
        &self,
        r: &[Resource],
        ledger: &dyn ResourceLedger,
    ) -> Result<(), ProvisionError> {
        self.inner.destroy(r, ledger).await
    }
    async fn sweep(
        &self,
        t: &TestId,
        scope: qa_core::SweepScope<'_>,
    ) -> Result<Vec<String>, ProvisionError> {
        self.inner.sweep(t, scope).await
    }
    fn estimate_cost(&self, resources: &[Resource], end_unix: i64) -> Option<CostEstimate> {
        self.asked
            .lock()
            .unwrap()
            .push((resources.to_vec(), end_unix));
        Some(self.estimate.clone())
    }
}

fn usd(total: f64, item: &str) -> CostEstimate {
    CostEstimate::new("USD", vec![(item.into(), total)])
}

fn priced(
    backend: BackendName,
    machines: &Path,
    estimate: CostEstimate,
) -> (Arc<PricedProvisioner>, Asked) {
    let asked = Asked::default();
    let p = PricedProvisioner {
        inner: FakeProvisioner::new()
            .with_backend(backend)
            .with_workdir_root(machines),
        estimate,
        asked: asked.clone(),
    };
    (Arc::new(p), asked)
}

/// A plan with a local machine and an "aws" one (both fakes), one step each.
fn plan(dir: &Path) -> PathBuf {
    let path = dir.join("cost.yaml");
    std::fs::write(
        &path,
        "name: cost
backend: local
machines:
  - name: box
  - name: cloud
    backend: fake-cloud
    fake-cloud:
      instance-type: t3.micro
steps:
  - name: hello
    command: echo hello
",
    )
    .unwrap();
    path
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn report_json(run_dir: &Path) -> Report {
    serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn report_json_carries_the_sum_of_the_provisioners_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let machines = dir.path().join("machines");
    let (local, local_asked) = priced(BackendName::LOCAL, &machines, usd(1.25, "box: 1 hour"));
    let (cloud, cloud_asked) = priced(FAKE_CLOUD, &machines, usd(2.5, "cloud: 1 hour"));
    let publisher = FakePublisher::new();
    let engine = Engine::new()
        .backends(crate::backends())
        .provisioner(local)
        .provisioner(cloud)
        .connector(Arc::new(LocalDirs))
        .publisher(Arc::new(publisher.clone()));
    let loaded = crate::load_file(&plan(dir.path())).unwrap();
    let before = now_unix();
    let run = engine
        .prepare(&loaded, RunOptions::new(dir.path().join("results")))
        .await
        .unwrap();
    let summary = run.execute().await.unwrap();
    assert_eq!(summary.exit_code, 0, "{:?}", summary.report);

    // By backend name: `fake-cloud` before `local`.
    let expected = CostEstimate::new(
        "USD",
        vec![("cloud: 1 hour".into(), 2.5), ("box: 1 hour".into(), 1.25)],
    );
    let written = report_json(&summary.run_dir);
    assert_eq!(written.cost.as_ref(), Some(&expected));
    assert_eq!(summary.report.cost.as_ref(), Some(&expected));
    let published = publisher.published();
    assert_eq!(
        published.values().next().unwrap(),
        &written,
        "publishers get the report on disk, cost and all"
    );

    // Each provisioner was asked about its own resources only, once: the report is built once,
    // after teardown, so about destroyed ones, until about now; what was published is that
    // report.
    for (asked, backend) in [(local_asked, BackendName::LOCAL), (cloud_asked, FAKE_CLOUD)] {
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 1, "asked once, for the one report");
        let (resources, end) = asked.last().unwrap();
        assert!(!resources.is_empty());
        assert!(
            resources.iter().all(|r| r.backend == backend),
            "{resources:?}"
        );
        assert!(
            resources
                .iter()
                .all(|r| r.state == ResourceState::Destroyed),
            "{resources:?}"
        );
        assert!(
            (before..=now_unix()).contains(end),
            "{before} <= {end} <= now"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_provisioners_have_no_prices_has_no_cost() {
    let dir = tempfile::tempdir().unwrap();
    let machines = dir.path().join("machines");
    let fake = |b| {
        Arc::new(
            FakeProvisioner::new()
                .with_backend(b)
                .with_workdir_root(&machines),
        )
    };
    let engine = Engine::new()
        .backends(crate::backends())
        .provisioner(fake(BackendName::LOCAL))
        .provisioner(fake(FAKE_CLOUD))
        .connector(Arc::new(LocalDirs));
    let loaded = crate::load_file(&plan(dir.path())).unwrap();
    let summary = engine
        .prepare(&loaded, RunOptions::new(dir.path().join("results")))
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0, "{:?}", summary.report);
    assert_eq!(report_json(&summary.run_dir).cost, None);
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(summary.run_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(raw["cost"], serde_json::Value::Null);
}
