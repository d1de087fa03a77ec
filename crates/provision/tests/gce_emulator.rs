//! The GCE provisioner with the official client against qa-testkit's Compute Engine emulator
//! (`qa_testkit::gce`): real REST paths and JSON, operations that finish after a poll, errors
//! inside finished operations, a request log. Run with
//! `cargo test -p qa-provision --features gce --test gce_emulator`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use qa_cloud::gce::{GceConfig, GceMachine};
use qa_core::backend::Janitor;
use qa_core::conformance::CheckingLedger;
use qa_core::journal::ResourceLedger;
use qa_core::plan::MachineSpec;
use qa_core::types::{Access, HostKeyPolicy, ResourceState, RunId};
use qa_core::{MachineRequest, Placement, Provisioner, RunContext, SweepScope, TestId};
use qa_provision::gce::{GceProvisioner, GceProvisionerOptions};
use qa_testkit::gce::{Call, FaultRule, GceConfig as EmulatorConfig, GceEmulator};

const PROJECT: &str = "qa-test-project";

struct Setup {
    gce: Arc<GceEmulator>,
    dir: tempfile::TempDir,
    ssh: SocketAddr,
}

async fn setup() -> Setup {
    Setup {
        gce: Arc::new(GceEmulator::start(EmulatorConfig::default()).await),
        dir: tempfile::tempdir().unwrap(),
        ssh: qa_testkit::net::ssh_banner_server().await,
    }
}

impl Setup {
    fn provisioner(&self) -> GceProvisioner {
        GceProvisioner::with_config(
            GceConfig::anonymous(PROJECT, &self.gce.endpoint()),
            GceProvisionerOptions {
                ssh_cidr: Some("127.0.0.1/32".into()),
                address_overrides: [("*".to_string(), self.ssh)].into_iter().collect(),
                poll_interval: Duration::from_millis(20),
                state_timeout: Duration::from_secs(20),
                ..Default::default()
            },
        )
    }

    fn run(&self, test_id: &str) -> RunContext {
        let run_id = RunId(format!("{test_id}-20261202T000000Z-0001"));
        let tags: BTreeMap<String, String> = [
            ("qa-run:test-id", test_id),
            ("qa-run:run-id", run_id.0.as_str()),
            ("qa-run:plan", "gce-tests"),
            ("qa-run:user", "Tester@example.com"),
            ("created-by", "qa-run"),
            ("qa-run:keep-until", "2026-12-03T00:00:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut run = RunContext::new(run_id, TestId(test_id.into()), "gce-tests", self.dir.path());
        run.tags = tags;
        run
    }

    /// Everything in the emulator that belongs to `test_id`: instances and disks by label,
    /// firewall rules by description.
    fn alive(&self, test_id: &str) -> Vec<String> {
        let mut out = self.gce.with_label("qa-run_test-id", test_id);
        for f in self.gce.firewalls() {
            if f["description"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("qa-run:test-id={test_id}")))
            {
                out.push(format!("firewall {}", f["name"]));
            }
        }
        out
    }
}

fn spec(json: serde_json::Value) -> GceMachine {
    let mut base = serde_json::json!({
        "machine-type": "n2-standard-2",
        "zones": ["us-central1-a", "us-central1-b"],
        "image-family": "debian-cloud/debian-12",
    });
    base.as_object_mut()
        .unwrap()
        .extend(json.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

fn request(name: &str, gce: &GceMachine, placement: Option<Placement>) -> MachineRequest {
    let mut request = MachineRequest::new(
        name,
        "sut",
        MachineSpec::new(name).options("gce", serde_json::to_value(gce).unwrap()),
    );
    request.placement = placement;
    request
}

/// Fails an intent recorded after the emulator already saw the insert that makes the resource.
fn probe(gce: Arc<GceEmulator>) -> qa_core::conformance::ledger::IntentProbe {
    Box::new(move |r| {
        let seen = gce.requests().iter().any(|c| {
            matches!(
                c.call,
                Some(Call::InstancesInsert) | Some(Call::FirewallsInsert)
            ) && c.query_param("requestId") == r.client_token.as_deref()
        });
        if seen {
            Err(format!("{} was already requested", r.key))
        } else {
            Ok(())
        }
    })
}

#[tokio::test]
async fn conformance_and_nothing_left_in_the_emulator() {
    let s = setup().await;
    let p = s.provisioner();
    let fresh = s.provisioner();
    let g = spec(serde_json::json!({"disks": [{"size-gb": 20, "count": 2}]}));
    let run = s.run("conformance");
    qa_core::conformance::provisioner::run_all(&p, &fresh, &request("vm", &g, None), &run).await;
    assert!(
        s.alive("conformance").is_empty(),
        "left: {:?}",
        s.alive("conformance")
    );
    assert!(
        s.gce.disks().is_empty(),
        "disks left: {:?}",
        s.gce.disks().len()
    );
    // The suite really made things: four machines, each with its requestId.
    let inserts = s.gce.requests_of(Call::InstancesInsert);
    assert!(inserts.len() >= 4, "{}", inserts.len());
    assert!(inserts.iter().all(|r| r.query_param("requestId").is_some()));
}

#[tokio::test]
async fn btrfsqa_shaped_machine_is_labelled_locked_down_and_journaled_intent_first() {
    let s = setup().await;
    let gce = s.gce.clone();
    let p = s.provisioner();
    let g = spec(serde_json::json!({
        "disks": [{"type": "pd-balanced", "size-gb": 20, "count": 6}],
        "ssh-user": "tester",
    }));
    let run = s.run("btrfsqa");
    let ledger = CheckingLedger::new().with_intent_probe(probe(gce));
    let m = p
        .create(&request("btrfs", &g, None), &run, &ledger)
        .await
        .unwrap();
    ledger.assert_clean("create");
    p.wait_ready(&m, Duration::from_secs(10)).await.unwrap();

    let Access::Ssh(t) = &m.access else {
        panic!("{:?}", m.access)
    };
    assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", s.ssh.port()));
    assert_eq!(t.user, "tester");
    assert_eq!(
        t.host_keys,
        HostKeyPolicy::TrustFirstUse {
            known_hosts: s.dir.path().join("known_hosts")
        }
    );
    let key = t.identity_file.clone().unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    assert_eq!(m.facts["zone"], "us-central1-a");
    assert_eq!(m.facts["lifecycle"], "on-demand");

    let vms = s.gce.instances();
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    // Labels at creation, as labels take them.
    assert_eq!(vm.labels["qa-run_test-id"], "btrfsqa");
    assert_eq!(vm.labels["created-by"], "qa-run");
    assert_eq!(vm.labels["qa-run_keep-until"], "2026-12-03t00-00-00z");
    assert!(vm.labels["qa-run_user"].starts_with("tester_example_com-"));
    // Seven disks: the boot disk and six of 20 GB, labelled too.
    let disks = s.gce.disks();
    assert_eq!(disks.len(), 7, "{disks:?}");
    // The run's key for the login user, the run's network tag, and no reservation by accident.
    let items = vm.json["metadata"]["items"].as_array().unwrap();
    let keys = items.iter().find(|i| i["key"] == "ssh-keys").unwrap();
    assert_eq!(
        keys["value"].as_str().unwrap(),
        format!("tester:{}", public.trim())
    );
    assert_eq!(
        vm.json["reservationAffinity"]["consumeReservationType"],
        "NO_RESERVATION"
    );
    let tag = vm.json["tags"]["items"][0].as_str().unwrap().to_string();
    // The firewall rule admits SSH from the configured CIDR only, to the run's instances only.
    let rules = s.gce.firewalls();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["sourceRanges"],
        serde_json::json!(["127.0.0.1/32"])
    );
    assert_eq!(rules[0]["targetTags"], serde_json::json!([tag]));
    assert_eq!(rules[0]["allowed"][0]["ports"], serde_json::json!(["22"]));

    // Cost: instance-hours and the seven disks' GB-hours, priced from the built-in table.
    let cost = p
        .estimate_cost(&ledger.resources(), qa_cloud::cost::now_unix() + 3600)
        .unwrap();
    assert!(
        cost.items
            .iter()
            .any(|(what, usd)| what.contains("n2-standard-2") && *usd > 0.0),
        "{cost:?}"
    );
    assert!(
        cost.items
            .iter()
            .any(|(what, _)| what.contains("pd-balanced")),
        "{cost:?}"
    );

    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    assert!(s.alive("btrfsqa").is_empty(), "{:?}", s.alive("btrfsqa"));
    assert!(
        ledger
            .resources()
            .iter()
            .all(|r| r.state == ResourceState::Destroyed)
    );
    // Idempotent: destroying again what is gone is fine.
    p.destroy(&ledger.resources(), &ledger).await.unwrap();
}

#[tokio::test]
async fn a_stocked_out_zone_moves_to_the_next_and_spot_falls_back_to_standard() {
    let s = setup().await;
    let p = s.provisioner();
    s.gce.set_capacity("us-central1-a", "n2-standard-2", 0);
    let run = s.run("stockout");
    let ledger = CheckingLedger::new();
    let m = p
        .create(
            &request("a", &spec(serde_json::json!({})), None),
            &run,
            &ledger,
        )
        .await
        .unwrap();
    assert_eq!(m.facts["zone"], "us-central1-b");
    // The failed attempt left nothing and its record is closed.
    let records = ledger.resources();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.state == ResourceState::Destroyed)
            .count(),
        1
    );

    // Spot capacity nowhere: a Spot VM with fallback becomes Standard in the first zone with room.
    s.gce.set_spot_capacity("us-central1-a", "n2-standard-2", 0);
    s.gce.set_spot_capacity("us-central1-b", "n2-standard-2", 0);
    s.gce.set_capacity("us-central1-b", "n2-standard-2", 5);
    let spot = spec(serde_json::json!({"spot": true, "spot-fallback": true}));
    let m = p
        .create(&request("b", &spot, None), &run, &ledger)
        .await
        .unwrap();
    assert_eq!(m.facts["lifecycle"], "on-demand");
    assert_eq!(m.facts["zone"], "us-central1-b");
    // Without fallback, a Spot stockout everywhere is an error that names the zones tried.
    let e = p
        .create(
            &request("c", &spec(serde_json::json!({"spot": true})), None),
            &run,
            &ledger,
        )
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("no capacity in any zone tried (us-central1-a, us-central1-b)"),
        "{e}"
    );
    assert!(e.message.contains("ZONE_RESOURCE_POOL_EXHAUSTED"), "{e}");
    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    assert!(s.alive("stockout").is_empty());
}

#[tokio::test]
async fn quota_and_permission_errors_stop_at_once_with_what_to_do() {
    let s = setup().await;
    let p = s.provisioner();
    let run = s.run("quota");
    let ledger = CheckingLedger::new();
    s.gce.inject(
        FaultRule::in_operation(Call::InstancesInsert, "QUOTA_EXCEEDED").zone("us-central1-a"),
    );
    let e = p
        .create(
            &request("q", &spec(serde_json::json!({})), None),
            &run,
            &ledger,
        )
        .await
        .unwrap_err();
    assert!(
        e.message.contains("QUOTA_EXCEEDED") && e.message.contains("quota"),
        "{e}"
    );
    // Zone b was never asked.
    let zones: Vec<_> = s
        .gce
        .requests_of(Call::InstancesInsert)
        .into_iter()
        .filter_map(|r| r.zone)
        .collect();
    assert_eq!(zones, ["us-central1-a"]);

    s.gce
        .inject(FaultRule::sync(Call::InstancesInsert, 403, "forbidden"));
    let e = p
        .create(
            &request("f", &spec(serde_json::json!({})), None),
            &run,
            &ledger,
        )
        .await
        .unwrap_err();
    assert!(
        e.message.contains("forbidden") && e.message.contains("credentials"),
        "{e}"
    );
    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    assert!(s.alive("quota").is_empty());
}

#[tokio::test]
async fn machines_consume_the_reservation_they_were_given() {
    let s = setup().await;
    let p = s.provisioner();
    let run = s.run("reserved");
    let ledger = CheckingLedger::new();
    // A reservation made beforehand, as the capacity stage would.
    let clients = GceConfig::anonymous(PROJECT, &s.gce.endpoint());
    let c = clients.clients().await.unwrap();
    use google_cloud_compute_v1::model::{
        AllocationSpecificSKUAllocationReservedInstanceProperties as Props,
        AllocationSpecificSKUReservation, Reservation,
    };
    c.reservations
        .insert()
        .set_project(PROJECT)
        .set_zone("us-central1-b")
        .set_body(
            Reservation::new()
                .set_name("held")
                .set_specific_reservation_required(true)
                .set_specific_reservation(
                    AllocationSpecificSKUReservation::new()
                        .set_count(1)
                        .set_instance_properties(Props::new().set_machine_type("n2-standard-2")),
                ),
        )
        .send()
        .await
        .unwrap();
    s.gce.settle();
    let placement = Placement::new(
        "us-central1-b",
        [("n2-standard-2".to_string(), "held".to_string())]
            .into_iter()
            .collect(),
    );
    let m = p
        .create(
            &request("r", &spec(serde_json::json!({})), Some(placement)),
            &run,
            &ledger,
        )
        .await
        .unwrap();
    assert_eq!(m.facts["zone"], "us-central1-b");
    assert_eq!(m.facts["reservation"], "held");
    let r = s
        .gce
        .reservations()
        .into_iter()
        .find(|r| r.name == "held")
        .unwrap();
    assert_eq!(r.in_use, 1);
    p.destroy(&ledger.resources(), &ledger).await.unwrap();
}

#[tokio::test]
async fn the_janitor_removes_only_what_outlived_its_keep_until() {
    let s = setup().await;
    let p = s.provisioner();
    let old = s.run("old-run");
    let mut young = s.run("young-run");
    young
        .tags
        .insert("qa-run:keep-until".into(), "2099-01-01T00:00:00Z".into());
    let ledger = CheckingLedger::new();
    p.create(
        &request("o", &spec(serde_json::json!({})), None),
        &old,
        &ledger,
    )
    .await
    .unwrap();
    // A second run in its own directory gets its own firewall rule.
    let young_dir = tempfile::tempdir().unwrap();
    young.run_dir = young_dir.path().to_path_buf();
    let young_ledger = CheckingLedger::new();
    p.create(
        &request("y", &spec(serde_json::json!({})), None),
        &young,
        &young_ledger,
    )
    .await
    .unwrap();
    let now = time::macros::datetime!(2026-12-04 00:00 UTC).unix_timestamp();
    let expired = Janitor::expired(&p, "", now).await.unwrap();
    let ids: Vec<_> = expired
        .iter()
        .map(|e| e.test_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["old-run", "old-run"], "{expired:?}");
    assert_eq!(expired[0].kind, "instance");
    assert_eq!(expired[1].kind, "firewall");
    let removed = p.remove_expired("", now).await.unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(s.alive("old-run").is_empty());
    assert_eq!(s.alive("young-run").len(), 3, "{:?}", s.alive("young-run"));
    // The sweep by test id finds the rest without a journal.
    let swept = p
        .sweep(&TestId("young-run".into()), SweepScope::Configured)
        .await
        .unwrap();
    assert_eq!(swept.len(), 2, "{swept:?}");
    assert!(s.alive("young-run").is_empty());
}
