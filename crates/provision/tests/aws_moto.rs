//! The EC2 provisioner against moto with the EC2 layer of qa-testkit's emulator in front of it
//! (`qa_testkit::aws`). Needs `python3 -m pip install "moto[server]"`; run with
//! `cargo test -p qa-provision --features aws --test aws_moto`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use qa_cloud::aws::{AwsMachine, VolumeSpec};
use qa_core::conformance::CheckingLedger;
use qa_core::journal::ResourceLedger;
use qa_core::plan::MachineSpec;
use qa_core::types::{Access, HostKeyPolicy, Leftovers, ResourceState, RunId};
use qa_core::{MachineRequest, Placement, Provisioner, RunContext, SweepScope, TestId};
use qa_provision::aws::{AwsProvisioner, AwsProvisionerOptions, TEST_ID_TAG};
use qa_testkit::aws::Ec2Emulator;
use qa_testkit::aws::proxy::State;

const REGION: &str = "us-east-1";
const IMAGE: &str = "ami-12c6146b";

struct Setup {
    emu: Ec2Emulator,
    dir: tempfile::TempDir,
    ssh: SocketAddr,
}

async fn setup() -> Setup {
    Setup {
        emu: Ec2Emulator::start().await,
        dir: tempfile::tempdir().unwrap(),
        ssh: qa_testkit::net::ssh_banner_server().await,
    }
}

impl Setup {
    async fn provisioner(&self) -> AwsProvisioner {
        let options = AwsProvisionerOptions {
            ssh_cidr: Some("127.0.0.1/32".into()),
            address_overrides: [("*".to_string(), self.ssh)].into_iter().collect(),
            poll_interval: Duration::from_millis(100),
            state_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        AwsProvisioner::from_sdk_config(&self.emu.sdk_config(REGION).await, options).unwrap()
    }

    fn run(&self, test_id: &str) -> RunContext {
        let run_id = RunId(format!("{test_id}-20261123T000000Z-0001"));
        let tags: BTreeMap<String, String> = [
            (TEST_ID_TAG, test_id),
            ("qa-run:run-id", run_id.0.as_str()),
            ("qa-run:plan", "aws-tests"),
            ("qa-run:user", "tester"),
            ("created-by", "qa-run"),
            ("qa-run:keep-until", "2026-11-24T00:00:00Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut run = RunContext::new(run_id, TestId(test_id.into()), "aws-tests", self.dir.path());
        run.tags = tags;
        run
    }

    async fn client(&self) -> Client {
        self.emu.client(REGION).await
    }
}

fn aws_spec(instance_type: &str) -> AwsMachine {
    AwsMachine {
        region: None,
        instance_type: instance_type.into(),
        image: IMAGE.into(),
        zones: Vec::new(),
        spot: false,
        spot_fallback: false,
        reserve: false,
        volumes: Vec::new(),
        ssh_user: Some("fedora".into()),
        ssh_cidr: None,
        subnet: None,
        placement_group: None,
    }
}

fn request(name: &str, aws: AwsMachine, placement: Option<Placement>) -> MachineRequest {
    let mut request = MachineRequest::new(
        name,
        "sut",
        MachineSpec::new(name).options("aws", serde_json::to_value(aws).unwrap()),
    );
    request.placement = placement;
    request
}

/// Everything in moto (and the layer) that carries the test id and is still alive.
async fn alive(setup: &Setup, test_id: &str) -> Vec<String> {
    setup.emu.leftovers(REGION, test_id).await
}

/// Fails an intent recorded after the layer already saw the call that makes the resource.
fn probe(state: Arc<Mutex<State>>) -> qa_core::conformance::ledger::IntentProbe {
    Box::new(move |r| {
        let st = state.lock().unwrap();
        let seen = st.calls.iter().any(|c| match r.kind.as_str() {
            "instance" => {
                c.action == "RunInstances" && c.params.get("ClientToken") == r.client_token.as_ref()
            }
            "key-pair" => {
                c.action == "CreateKeyPair" && c.params.get("KeyName") == r.details.get("name")
            }
            "security-group" => {
                c.action == "CreateSecurityGroup"
                    && c.params.get("GroupName") == r.details.get("name")
            }
            "placement-group" => {
                c.action == "CreatePlacementGroup"
                    && c.params.get("GroupName") == r.details.get("name")
            }
            _ => false,
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
    let p = s.provisioner().await;
    let fresh = s.provisioner().await;
    let mut spec = aws_spec("t3.micro");
    spec.volumes = vec![VolumeSpec {
        r#type: Some("gp3".into()),
        size_gb: 20,
        count: 2,
    }];
    spec.placement_group = Some("cluster".into());
    let run = s.run("conformance");
    qa_core::conformance::provisioner::run_all(&p, &fresh, &request("vm", spec, None), &run).await;
    let left = alive(&s, "conformance").await;
    assert!(left.is_empty(), "left behind: {left:?}");
    // The suite really made things: four machines' worth of instances and groups.
    let st = s.emu.proxy.lock();
    assert!(st.calls_of("RunInstances").len() >= 4);
    assert!(st.calls_of("CreatePlacementGroup").len() >= 4);
    // Every instance went into its run's placement group (the layer refuses unknown groups).
    for c in st.calls_of("RunInstances") {
        let group = c
            .params
            .get("Placement.GroupName")
            .cloned()
            .unwrap_or_default();
        assert!(group.starts_with("qa-run-conformance-"), "{:?}", c.params);
    }
}

#[tokio::test]
async fn btrfsqa_shaped_machine_is_tagged_locked_down_and_journaled_intent_first() {
    let s = setup().await;
    let p = s.provisioner().await;
    let mut spec = aws_spec("r5.large");
    spec.volumes = vec![VolumeSpec {
        r#type: Some("gp3".into()),
        size_gb: 20,
        count: 6,
    }];
    let run = s.run("btrfsqa");
    let ledger = CheckingLedger::new().with_intent_probe(probe(s.emu.proxy.state.clone()));
    let m = p
        .create(&request("btrfs", spec, None), &run, &ledger)
        .await
        .unwrap();
    ledger.assert_clean("create");
    p.wait_ready(&m, Duration::from_secs(10)).await.unwrap();

    let Access::Ssh(t) = &m.access else {
        panic!("{:?}", m.access)
    };
    assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", s.ssh.port()));
    assert_eq!(t.user, "fedora");
    assert_eq!(
        t.host_keys,
        HostKeyPolicy::TrustFirstUse {
            known_hosts: s.dir.path().join("known_hosts")
        }
    );
    let key = t.identity_file.clone().unwrap();
    assert!(key.starts_with(s.dir.path()));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    for f in ["zone", "instance-type", "instance-id", "address"] {
        assert!(m.facts.contains_key(f), "fact {f} missing: {:?}", m.facts);
    }

    let c = s.client().await;
    let id = &m.facts["instance-id"];
    let inst = c
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    let i = inst.reservations()[0].instances()[0].clone();
    for (k, v) in &run.tags {
        assert!(
            i.tags()
                .iter()
                .any(|t| t.key() == Some(k) && t.value() == Some(v)),
            "instance lacks tag {k}={v}"
        );
    }
    let vols = c
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let extra: Vec<_> = vols
        .volumes()
        .iter()
        .filter(|v| v.size() == Some(20))
        .collect();
    assert_eq!(extra.len(), 6, "six 20 GB volumes: {:?}", vols.volumes());
    for v in &extra {
        assert!(
            v.tags()
                .iter()
                .any(|t| t.key() == Some(TEST_ID_TAG) && t.value() == Some("btrfsqa")),
            "{v:?}"
        );
    }

    let sg = i.security_groups()[0].group_id().unwrap().to_string();
    let groups = c
        .describe_security_groups()
        .group_ids(&sg)
        .send()
        .await
        .unwrap();
    let perms = groups.security_groups()[0].ip_permissions();
    assert_eq!(perms.len(), 1, "{perms:?}");
    assert_eq!(
        (perms[0].from_port(), perms[0].to_port()),
        (Some(22), Some(22))
    );
    let cidrs: Vec<_> = perms[0]
        .ip_ranges()
        .iter()
        .filter_map(|r| r.cidr_ip())
        .collect();
    assert_eq!(cidrs, ["127.0.0.1/32"]);

    // A second machine of the run shares the key pair and the security group.
    let m2 = p
        .create(
            &request("btrfs-2", aws_spec("t3.micro"), None),
            &run,
            &ledger,
        )
        .await
        .unwrap();
    ledger.assert_clean("second create");
    assert_eq!(s.emu.proxy.lock().calls_of("CreateKeyPair").len(), 1);
    assert_eq!(s.emu.proxy.lock().calls_of("CreateSecurityGroup").len(), 1);
    assert_eq!(
        m2.access, m.access,
        "same key, user, known_hosts and (overridden) address"
    );

    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    ledger.assert_clean("destroy");
    assert!(
        ledger
            .resources()
            .iter()
            .all(|r| r.state == ResourceState::Destroyed)
    );
    let left = alive(&s, "btrfsqa").await;
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !key.exists(),
        "the private key is removed with its key pair"
    );
}

#[tokio::test]
async fn spot_falls_back_to_on_demand_only_when_allowed() {
    let s = setup().await;
    s.emu
        .proxy
        .lock()
        .no_spot_capacity
        .insert("r5.large".into());
    let p = s.provisioner().await;
    let run = s.run("spot");

    let mut spec = aws_spec("r5.large");
    spec.spot = true;
    spec.spot_fallback = true;
    let ledger = CheckingLedger::new();
    let m = p
        .create(&request("spot-ok", spec.clone(), None), &run, &ledger)
        .await
        .unwrap();
    ledger.assert_clean("create with fallback");
    assert_eq!(m.facts["lifecycle"], "on-demand");
    let runs = s.emu.proxy.lock().calls_of("RunInstances");
    assert_eq!(
        runs.len(),
        2,
        "one spot try (not retried), one on-demand launch"
    );
    assert_eq!(
        runs[0]
            .params
            .get("InstanceMarketOptions.MarketType")
            .map(String::as_str),
        Some("spot")
    );
    assert!(
        !runs[1]
            .params
            .contains_key("InstanceMarketOptions.MarketType")
    );
    assert_ne!(runs[0].params["ClientToken"], runs[1].params["ClientToken"]);

    spec.spot_fallback = false;
    let e = p
        .create(&request("spot-no", spec, None), &run, &ledger)
        .await
        .unwrap_err();
    assert!(e.message.contains("InsufficientInstanceCapacity"), "{e}");
    let Leftovers::Remaining(keys) = &e.leftovers else {
        panic!("{:?}", e.leftovers)
    };
    assert!(
        keys.iter().all(|k| !k.0.contains("/instance/")),
        "a refused launch leaves no instance: {keys:?}"
    );
    assert_eq!(s.emu.proxy.lock().calls_of("RunInstances").len(), 3);

    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    assert!(alive(&s, "spot").await.is_empty());
}

#[tokio::test]
async fn instances_launch_into_their_zone_and_capacity_reservation() {
    let s = setup().await;
    let c = s.client().await;
    let cr = c
        .create_capacity_reservation()
        .instance_type("m5.large")
        .instance_platform(aws_sdk_ec2::types::CapacityReservationInstancePlatform::LinuxUnix)
        .availability_zone("us-east-1b")
        .instance_count(1)
        .instance_match_criteria(aws_sdk_ec2::types::InstanceMatchCriteria::Targeted)
        .send()
        .await
        .unwrap();
    let cr_id = cr
        .capacity_reservation()
        .unwrap()
        .capacity_reservation_id()
        .unwrap()
        .to_string();
    let placement = Placement::new(
        "us-east-1b",
        [("m5.large".to_string(), cr_id.clone())]
            .into_iter()
            .collect(),
    );
    let p = s.provisioner().await;
    let run = s.run("reserved");
    let ledger = CheckingLedger::new();
    let m = p
        .create(
            &request("db", aws_spec("m5.large"), Some(placement)),
            &run,
            &ledger,
        )
        .await
        .unwrap();
    assert_eq!(m.facts["zone"], "us-east-1b");
    assert_eq!(m.facts["capacity-reservation"], cr_id);
    let runs = s.emu.proxy.lock().calls_of("RunInstances");
    assert_eq!(
        runs[0].params.get(
            "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"
        ),
        Some(&cr_id)
    );
    assert_eq!(
        runs[0]
            .params
            .get("Placement.AvailabilityZone")
            .map(String::as_str),
        Some("us-east-1b")
    );
    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    assert!(alive(&s, "reserved").await.is_empty());
}

#[tokio::test]
async fn a_crash_after_run_instances_is_cleaned_up_from_the_intent_alone() {
    let s = setup().await;
    let p = s.provisioner().await;
    let run = s.run("crash");
    let ledger = CheckingLedger::new();
    p.create(&request("vm", aws_spec("t3.micro"), None), &run, &ledger)
        .await
        .unwrap();
    // What a journal written just before each create call would hold.
    let intents = ledger.intents();
    assert_eq!(
        intents.len(),
        3,
        "key pair, security group, instance: {intents:?}"
    );
    let journal = CheckingLedger::from_resources(intents.clone());
    s.provisioner()
        .await
        .destroy(&intents, &journal)
        .await
        .unwrap();
    journal.assert_clean("destroy from intents");
    let left = alive(&s, "crash").await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn sweep_removes_only_what_carries_the_test_id() {
    let s = setup().await;
    let p = s.provisioner().await;
    let mine = s.run("sweep-mine");
    let theirs = s.run("sweep-theirs");
    let mut spec = aws_spec("t3.micro");
    spec.volumes = vec![VolumeSpec {
        r#type: None,
        size_gb: 8,
        count: 1,
    }];
    spec.placement_group = Some("spread".into());
    p.create(
        &request("a", spec.clone(), None),
        &mine,
        &CheckingLedger::new(),
    )
    .await
    .unwrap();
    p.create(&request("b", spec, None), &theirs, &CheckingLedger::new())
        .await
        .unwrap();
    let removed = p
        .sweep(&TestId("sweep-mine".into()), SweepScope::Configured)
        .await
        .unwrap();
    for kind in ["instance", "security-group", "key-pair", "placement-group"] {
        assert!(
            removed.iter().any(|l| l.starts_with(kind)),
            "{kind} not swept: {removed:?}"
        );
    }
    assert!(alive(&s, "sweep-mine").await.is_empty());
    let theirs_left = alive(&s, "sweep-theirs").await;
    for kind in ["instance", "security-group", "key-pair", "placement-group"] {
        assert!(
            theirs_left.iter().any(|l| l.starts_with(kind)),
            "another test's {kind} was swept: {theirs_left:?}"
        );
    }
    assert!(
        p.sweep(&TestId("sweep-mine".into()), SweepScope::Configured)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The machine's SSH access works as given, through a real OpenSSH server standing in for the
/// instance: the key pair's private key (as EC2 returned it), the user, the port, and a
/// trust-on-first-use known_hosts in the run directory.
#[tokio::test]
async fn the_machine_is_reachable_over_ssh_with_its_own_key() {
    let Some(sshd) = qa_testkit::TestSshd::start_or_skip() else {
        return;
    };
    let emu = Ec2Emulator::start().await;
    let s = Setup {
        emu,
        dir: tempfile::tempdir().unwrap(),
        ssh: sshd.addr(),
    };
    let p = s.provisioner().await;
    let mut spec = aws_spec("t3.micro");
    spec.ssh_user = Some(sshd.user());
    let run = s.run("ssh");
    let ledger = CheckingLedger::new();
    let m = p
        .create(&request("vm", spec, None), &run, &ledger)
        .await
        .unwrap();
    p.wait_ready(&m, Duration::from_secs(20)).await.unwrap();
    let Access::Ssh(t) = &m.access else { panic!() };
    let key = t.identity_file.clone().unwrap();
    let HostKeyPolicy::TrustFirstUse { known_hosts } = &t.host_keys else {
        panic!()
    };

    let public = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        public.status.success(),
        "the saved key is not a usable private key: {}",
        String::from_utf8_lossy(&public.stderr)
    );
    let pub_line = String::from_utf8(public.stdout).unwrap();
    assert!(pub_line.starts_with("ssh-ed25519 "), "{pub_line}");
    let auth = sshd.dir().join("authorized_keys");
    let mut keys = std::fs::read_to_string(&auth).unwrap();
    keys.push_str(&pub_line);
    std::fs::write(&auth, keys).unwrap();

    let out = std::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(&key)
        .arg("-p")
        .arg(t.port.to_string())
        .arg(format!("{}@{}", t.user, t.host))
        .arg("echo reached")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("reached"),
        "ssh with the machine's access failed: {}\nsshd log: {}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert!(
        known_hosts.exists(),
        "the host key was recorded on first use"
    );
    p.destroy(&ledger.resources(), &ledger).await.unwrap();
    assert!(alive(&s, "ssh").await.is_empty());
}

#[tokio::test]
async fn janitor_lists_and_removes_only_what_outlived_its_keep_until() {
    let s = setup().await;
    let p = s.provisioner().await;
    let mut old = s.run("janitor-old");
    old.tags
        .insert("qa-run:keep-until".into(), "2026-01-01T00:00:00Z".into());
    let mut young = s.run("janitor-young");
    young
        .tags
        .insert("qa-run:keep-until".into(), "2099-01-01T00:00:00Z".into());
    p.create(
        &request("a", aws_spec("t3.micro"), None),
        &old,
        &CheckingLedger::new(),
    )
    .await
    .unwrap();
    p.create(
        &request("b", aws_spec("t3.micro"), None),
        &young,
        &CheckingLedger::new(),
    )
    .await
    .unwrap();

    let now = qa_provision::aws::cost::now_unix();
    let expired = p.expired(now).await.unwrap();
    let kinds: Vec<&str> = expired.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["instance", "security-group", "key-pair"] {
        assert!(kinds.contains(&kind), "{kind} not listed: {expired:?}");
    }
    assert!(
        expired
            .iter()
            .all(|e| e.test_id.as_deref() == Some("janitor-old")),
        "{expired:?}"
    );

    let removed = p.remove_expired(now).await.unwrap();
    assert!(!removed.is_empty());
    assert!(alive(&s, "janitor-old").await.is_empty());
    assert!(
        !alive(&s, "janitor-young").await.is_empty(),
        "a resource within its keep-until was removed"
    );
    assert!(p.expired(now).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_machine_is_priced_from_its_journal_records_with_the_table_it_is_given() {
    use qa_provision::aws::cost::PriceTable;
    let s = setup().await;
    let p = s.provisioner().await;
    let mut spec = aws_spec("t3.micro");
    spec.volumes = vec![VolumeSpec {
        r#type: Some("gp3".into()),
        size_gb: 20,
        count: 2,
    }];
    let run = s.run("cost");
    let ledger = CheckingLedger::new();
    p.create(&request("vm", spec, None), &run, &ledger)
        .await
        .unwrap();
    let resources = ledger.resources();
    let launched: i64 = resources
        .iter()
        .find(|r| r.kind == "instance")
        .expect("an instance record")
        .details["launched-at"]
        .parse()
        .unwrap();
    let hour_later = launched + 3600;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;

    // Built-in us-east-1 prices: one t3.micro hour and two 20 GB gp3 volumes for an hour.
    let cost = p
        .estimate_cost(&resources, hour_later)
        .expect("EC2 has prices");
    let expected = 0.0104 + 2.0 * 20.0 * 0.08 / 730.0;
    assert_eq!(cost.currency, "USD");
    assert!(close(cost.total, expected), "{} != {expected}", cost.total);
    assert_eq!(
        cost.items
            .iter()
            .map(|(d, _)| d.as_str())
            .collect::<Vec<_>>(),
        [
            "1 × t3.micro on-demand: 1.00 instance-hours at 0.0104 USD/hour",
            "2 × gp3 volumes: 40.0 GB-hours at 0.08 USD/GB-month",
        ]
    );
    assert!(close(cost.items[0].1, 0.0104));

    // A table laid over the built-in one changes the total accordingly.
    let file = s.dir.path().join("prices.json");
    std::fs::write(
        &file,
        r#"{"on-demand-hourly": {"t3.micro": 0.5}, "volume-gb-month": {"gp3": 0.73}}"#,
    )
    .unwrap();
    let priced = s
        .provisioner()
        .await
        .with_prices(PriceTable::load_overrides(&file).unwrap());
    let cost = priced.estimate_cost(&resources, hour_later).unwrap();
    assert!(
        close(cost.total, 0.5 + 40.0 * 0.73 / 730.0),
        "{}",
        cost.total
    );

    // Destroyed machines still count (the report after teardown has the whole run), up to
    // when they were destroyed.
    p.destroy(&resources, &ledger).await.unwrap();
    let records = ledger.resources();
    let destroyed_at: i64 = records
        .iter()
        .find(|r| r.kind == "instance")
        .unwrap()
        .details[qa_core::journal::DESTROYED_AT]
        .parse()
        .unwrap();
    assert!(destroyed_at >= launched && destroyed_at < hour_later);
    let after = p.estimate_cost(&records, hour_later).unwrap();
    let at_teardown = p.estimate_cost(&records, destroyed_at).unwrap();
    assert!(close(after.total, at_teardown.total), "{}", after.total);
    assert!(
        after.total > 0.0 && after.total < expected / 10.0,
        "{} (an hour is {expected})",
        after.total
    );
    assert!(alive(&s, "cost").await.is_empty());
}

/// Listings read every page: with five reservations a page, a sweep of seven finds all seven.
#[tokio::test]
async fn sweep_reads_every_page_of_instances() {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let s = setup().await;
    let c = s.client().await;
    // EC2 pages DescribeInstances by reservation: seven launches, seven reservations.
    for _ in 0..7 {
        c.run_instances()
            .image_id(IMAGE)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(Tag::builder().key(TEST_ID_TAG).value("paged").build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    assert_eq!(alive(&s, "paged").await.len(), 7);
    let options = AwsProvisionerOptions {
        ssh_cidr: Some("127.0.0.1/32".into()),
        poll_interval: Duration::from_millis(100),
        state_timeout: Duration::from_secs(30),
        page_size: 5,
        ..Default::default()
    };
    let p = AwsProvisioner::from_sdk_config(&s.emu.sdk_config(REGION).await, options).unwrap();
    let removed = p
        .sweep(&TestId("paged".into()), SweepScope::Configured)
        .await
        .unwrap();
    assert_eq!(
        removed.iter().filter(|l| l.starts_with("instance")).count(),
        7,
        "{removed:?}"
    );
    assert!(alive(&s, "paged").await.is_empty());
}
