//! qa-run on EC2, end to end: the real `qa-run` binary (built with `--features aws`) against
//! qa-testkit's EC2 emulator (moto with an EC2 layer in front of it, `qa_testkit::aws`), and every
//! instance's SSH address mapped onto a local OpenSSH sshd of qa-testkit
//! (`QA_RUN_AWS_SSH_ADDRESS`), so that provisioning, SSH, the reboot, collection and publishing
//! all happen for real.
//!
//! Nothing leaves 127.0.0.1: the SDK's endpoint is the emulator (`AWS_ENDPOINT_URL`), credentials
//! are dummies, instance metadata is off, and the plans admit SSH from `127.0.0.1/32` so the
//! caller's address is never looked up.
//!
//! Run with `cargo test -p qa-cli --features aws --test aws_e2e`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qa_testkit::TestSshd;
use qa_testkit::aws::{Ec2Emulator, TEST_ID_TAG};
use qa_testkit::cli::{json, text};
use qa_testkit::git::git;
use serde_json::Value;

const REGION: &str = "us-east-1";
const IMAGE: &str = "ami-12c6146b";

/// The emulator, the sshd standing in for every instance, and a scratch directory.
struct Rig {
    emu: Ec2Emulator,
    sshd: TestSshd,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Rig {
    async fn start() -> Option<Rig> {
        let sshd = TestSshd::start_or_skip()?;
        let emu = Ec2Emulator::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("results")).unwrap();
        let rig = Rig {
            emu,
            sshd,
            dir,
            stop: Arc::new(AtomicBool::new(false)),
        };
        rig.authorize_run_keys();
        Some(rig)
    }

    fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    /// What cloud-init does on a real instance: the run's key pair (saved by qa-run as
    /// `<run-dir>/<name>.<region>.pem`) becomes an authorized key of the login user. A thread watches the
    /// results directory and adds each new key's public half to the sshd's authorized_keys.
    fn authorize_run_keys(&self) {
        let results = self.results();
        let auth = self.sshd.dir().join("authorized_keys");
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                for run in std::fs::read_dir(&results).into_iter().flatten().flatten() {
                    for f in std::fs::read_dir(run.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        let p = f.path();
                        if p.extension().is_some_and(|e| e == "pem") && seen.insert(p.clone()) {
                            let out = Command::new("ssh-keygen")
                                .arg("-y")
                                .arg("-f")
                                .arg(&p)
                                .output();
                            match out {
                                Ok(o) if o.status.success() => {
                                    let mut keys =
                                        std::fs::read_to_string(&auth).unwrap_or_default();
                                    keys.push_str(&String::from_utf8_lossy(&o.stdout));
                                    std::fs::write(&auth, keys).unwrap();
                                }
                                // Half written: try again next time round.
                                _ => {
                                    seen.remove(&p);
                                }
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }

    /// The binary with the environment of an AWS user whose endpoint is the emulator.
    fn bin(&self) -> Command {
        let mut c = qa_testkit::cli::bin(env!("CARGO_BIN_EXE_qa-run"));
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        c.env_remove("AWS_PROFILE")
            .env("HOME", &home)
            .env("AWS_ENDPOINT_URL", self.emu.url())
            .env("AWS_ACCESS_KEY_ID", "AKIDQARUNTEST")
            .env("AWS_SECRET_ACCESS_KEY", "qa-run-test-secret")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // The binary has GCE too: were it ever to ask Google's metadata server for
            // credentials, the question stays on this host.
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("GOOGLE_CLOUD_PROJECT")
            .env("AWS_CONFIG_FILE", home.join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"))
            .env("QA_RUN_AWS_SSH_ADDRESS", self.sshd.addr().to_string())
            .env("QA_RUN_SSH_BOOT_ID_PATH", self.sshd.boot_id_path())
            .env("QA_RUN_LEASE_DIR", self.dir.path().join("leases"))
            .arg("--results")
            .arg(self.results());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.bin().args(args).output().expect("qa-run runs")
    }

    /// The user the sshd logs in, and so the plan's `ssh-user`.
    fn user(&self) -> String {
        self.sshd.user()
    }
}

/// Where the provisioner puts the machines' work directories on the sshd's host.
fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// examples/plans/btrfsqa-aws.yaml, with what only a real cloud has replaced: the AMI is one
/// moto knows, the login user is the sshd's, SSH is admitted from loopback, the scripts stand in
/// for the kernel build and test suites (the first still asks for a reboot and the rest check
/// they run after it), and the git remote is a local bare repository.
fn btrfsqa_plan(rig: &Rig, remote: &Path) -> PathBuf {
    let dir = rig.dir.path().join("plan");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plans/btrfsqa-aws.yaml"),
    )
    .unwrap();
    let plan = example
        .replace("ami-0123456789abcdef0", IMAGE)
        .replace(
            "ssh-user: fedora",
            &format!("ssh-user: {}\n      ssh-cidr: 127.0.0.1/32", rig.user()),
        )
        .replace("    sudo: true\n", "")
        .replace(
            "git@github.com:example/btrfsqa-results.git",
            &remote.display().to_string(),
        )
        .replace(
            "KERNEL_BRANCH: for-next\n",
            &format!(
                "KERNEL_BRANCH: for-next\n    REBOOT: \"{}\"\n",
                rig.sshd.reboot_command().replace('"', "\\\"")
            ),
        );
    for (from, to) in [
        ("image: ami-0123456789abcdef0", "the AMI"),
        ("ssh-user: fedora", "the login user"),
        ("sudo: true", "sudo"),
        ("KERNEL_BRANCH: for-next", "the environment"),
    ] {
        assert!(
            example.contains(from),
            "the example no longer has {to} ({from})"
        );
    }
    write(&dir.join("btrfsqa-aws.yaml"), &plan);
    qa_testkit::btrfsqa::write_stand_ins(&dir);
    dir.join("btrfsqa-aws.yaml")
}

/// The BTRFSQA flow through the binary: a spot instance with six 20 GB volumes, the configuration
/// uploaded, four scripts (the first reboots the machine), results collected and published to
/// git, and nothing left in the emulator afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn btrfsqa_on_ec2_runs_reboots_collects_publishes_and_leaves_nothing() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let remote = rig.dir.path().join("btrfsqa-results.git");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare"]);
    let plan = btrfsqa_plan(&rig, &remote);
    let boot_before = rig.sshd.boot_id();

    let out = {
        let mut c = rig.bin();
        c.args(["run", "--run-id", "btrfsqa-e2e", "--test-id", "btrfsqa-e2e"])
            .arg(&plan);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    let run_dir = rig.results().join("btrfsqa-e2e");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsshd log:\n{}",
        text(&out),
        rig.sshd.log()
    );

    // The machine: one spot r5.large with six gp3 20 GB volumes, tagged at creation.
    let launches = rig.emu.proxy.lock().calls_of("RunInstances");
    assert_eq!(launches.len(), 1, "{launches:?}");
    let p = &launches[0].params;
    assert_eq!(p.get("InstanceType").map(String::as_str), Some("r5.large"));
    assert_eq!(
        p.get("InstanceMarketOptions.MarketType")
            .map(String::as_str),
        Some("spot")
    );
    let extra: Vec<_> = (1..=8)
        .filter(|i| p.contains_key(&format!("BlockDeviceMapping.{i}.Ebs.VolumeSize")))
        .map(|i| {
            (
                p[&format!("BlockDeviceMapping.{i}.Ebs.VolumeSize")].clone(),
                p[&format!("BlockDeviceMapping.{i}.Ebs.VolumeType")].clone(),
            )
        })
        .collect();
    assert_eq!(
        extra,
        vec![("20".to_string(), "gp3".to_string()); 6],
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|(k, v)| k.starts_with("TagSpecification.") && v == "btrfsqa-e2e"),
        "instance tagged with the test id at creation: {p:?}"
    );

    // The steps: all four passed, in order, the first across a reboot.
    let report = json(&run_dir.join("report.json"));
    assert_eq!(report["outcome"], "PASS", "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "001-kernel",
            "002-btrfs-progs",
            "003-xfstests",
            "004-raid5-scrub"
        ]
    );
    assert!(steps.iter().all(|s| s["verdict"] == "PASS"), "{steps:#?}");
    assert_eq!(
        rig.sshd.reboots(),
        1,
        "the first script rebooted the machine"
    );
    assert_ne!(rig.sshd.boot_id(), boot_before);
    let kernel_log =
        std::fs::read_to_string(run_dir.join(steps[0]["log"].as_str().unwrap())).unwrap();
    assert!(
        kernel_log.contains("back with boot id") || kernel_log.contains("reattached"),
        "the step followed the machine through its reboot:\n{kernel_log}"
    );
    assert!(kernel_log.contains("CONFIG_BTRFS_FS=y"), "{kernel_log}");

    // Collected: what each script wrote, from the machine's work directory.
    let artifacts = run_dir.join("artifacts/btrfs/results");
    for (file, content) in [
        ("001-kernel.txt", "installed"),
        ("002-btrfs-progs.txt", "progs built"),
        (
            "003-xfstests.txt",
            "xfstests on /dev/nvme1n1 with /dev/nvme2n1 /dev/nvme3n1",
        ),
        ("004-raid5-scrub.txt", "scrub ok"),
    ] {
        let got =
            std::fs::read_to_string(artifacts.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(got.trim(), content);
    }

    let full = run_dir.join("artifacts/btrfs/xfstests/results/generic/001.full");
    assert_eq!(
        std::fs::read_to_string(&full).unwrap().trim(),
        "generic/001 full log"
    );

    // Published: the site, with this run, on the branch of the git remote.
    let tree = git(&remote, &["ls-tree", "-r", "--name-only", "gh-pages"]);
    assert!(tree.lines().any(|l| l == "index.html"), "{tree}");
    assert!(
        tree.lines()
            .any(|l| l.contains("btrfsqa-e2e") && l.ends_with("index.html")),
        "{tree}"
    );

    // The cost: the spot instance-hours and the six volumes' GB-hours, in the report and on the
    // published run page.
    let cost = &report["cost"];
    assert!(cost["total"].as_f64().unwrap() > 0.0, "{cost:#}");
    let items = cost["items"].to_string();
    assert!(
        items.contains("r5.large spot") && items.contains("6 × gp3"),
        "{items}"
    );
    let page = git(&remote, &["show", "gh-pages:runs/btrfsqa-e2e/index.html"]);
    assert!(
        page.contains("Cost (estimate)") && page.contains("USD"),
        "{page}"
    );

    // Torn down: nothing with the test id is left, and the journal says so.
    let left = rig.emu.leftovers(REGION, "btrfsqa-e2e").await;
    assert!(left.is_empty(), "left in the emulator: {left:?}");
    let state = json(&run_dir.join("state.json"));
    let live: Vec<&Value> = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] != "destroyed")
        .collect();
    assert!(live.is_empty(), "journal still lists {live:#?}");
    let _ =
        std::fs::remove_dir_all(qa_testkit::cli::home_of(&rig.user()).join("qa-run/btrfsqa-e2e"));
}

/// Where a crashed run is killed.
#[derive(Debug, Clone)]
enum KillAt {
    /// When the run reports that this task started.
    TaskStart(String),
    /// When the emulator has carried out this call, before its answer reaches qa-run.
    InsideCall(&'static str),
}

/// A plan that makes every kind of resource: a spot machine with volumes, and an on-demand machine
/// with a capacity reservation, a placement group and a volume.
fn crash_plan(rig: &Rig) -> PathBuf {
    let path = rig.dir.path().join("crash/crash.yaml");
    let user = rig.user();
    write(
        &path,
        &format!(
            "name: crash
backend: aws
budget: 1h
machines:
  - name: spot
    aws:
      region: {REGION}
      instance-type: r5.large
      image: {IMAGE}
      spot: true
      spot-fallback: true
      ssh-user: {user}
      ssh-cidr: 127.0.0.1/32
      volumes:
        - {{type: gp3, size-gb: 20, count: 2}}
  - name: reserved
    aws:
      region: {REGION}
      instance-type: m5.large
      image: {IMAGE}
      reserve: true
      placement-group: cluster
      ssh-user: {user}
      ssh-cidr: 127.0.0.1/32
      volumes:
        - {{type: gp3, size-gb: 10}}
steps:
  - name: work
    command: echo working on $QA_RUN_MACHINE
"
        ),
    );
    path
}

/// Runs the crash plan with `--json`, kills qa-run with SIGKILL at `at`, and returns the run
/// directory and whether the kill happened (false: the run ended first).
async fn run_and_kill(rig: &Rig, plan: &Path, id: &str, at: &KillAt) -> (PathBuf, bool) {
    if let KillAt::InsideCall(action) = at {
        let mut st = rig.emu.proxy.lock();
        st.hold_after.clear();
        st.held.clear();
        st.hold_after.insert(action.to_string());
    }
    let mut cmd = rig.bin();
    cmd.args(["--json", "run", "--run-id", id, "--test-id", id])
        .arg(plan);
    let killed = tokio::task::block_in_place(|| {
        qa_testkit::cli::run_and_kill(&mut cmd, Duration::from_secs(120), |started| match at {
            KillAt::TaskStart(task) => started.iter().any(|t| t == task),
            KillAt::InsideCall(action) => rig.emu.proxy.lock().held.iter().any(|a| a == action),
        })
    });
    rig.emu.proxy.lock().hold_after.clear();
    (rig.results().join(id), killed)
}

/// Runs `plan` to the end as test id `id`, checks that it passed and left nothing in `regions`,
/// and returns the task ids of its graph in the order they started.
async fn clean_run_tasks(rig: &Rig, plan: &Path, id: &str, regions: &[&str]) -> Vec<String> {
    let out = {
        let mut c = rig.bin();
        c.args(["--json", "run", "--run-id", id, "--test-id", id])
            .arg(plan);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tasks: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "task-started")
        .map(|v| v["task"].as_str().unwrap().to_string())
        .collect();
    for region in regions {
        let left = rig.emu.leftovers(region, id).await;
        assert!(left.is_empty(), "a clean run left in {region}: {left:?}");
    }
    tasks
}

/// Kills a run of `plan` with SIGKILL at each point (test ids `<prefix>-NN`), runs
/// `qa-run cleanup RUN_DIR` after each, and checks that nothing with the run's test id is left
/// in any of `regions`. Returns, per point, how many resources each region held before cleanup.
async fn kill_at_each_then_clean_up(
    rig: &Rig,
    plan: &Path,
    prefix: &str,
    points: &[KillAt],
    regions: &[&str],
) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for (i, at) in points.iter().enumerate() {
        let id = format!("{prefix}-{i:02}");
        let (run_dir, killed) = run_and_kill(rig, plan, &id, at).await;
        assert!(killed, "{at:?}: the run ended before it could be killed");
        let mut before = Vec::new();
        for region in regions {
            before.push(rig.emu.leftovers(region, &id).await);
        }
        let out = rig.run(&["cleanup", run_dir.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cleanup after a kill at {at:?}: {}",
            text(&out)
        );
        for (region, before) in regions.iter().zip(&before) {
            let left = rig.emu.leftovers(region, &id).await;
            assert!(
                left.is_empty(),
                "after a kill at {at:?} and cleanup, left in {region}: {left:?}\n(before cleanup: {before:?})\n{}",
                text(&out)
            );
        }
        found.push(before.iter().map(Vec::len).collect());
    }
    for entry in std::fs::read_dir(qa_testkit::cli::home_of(&rig.user()).join("qa-run"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    found
}

/// SIGKILL at every stage boundary of the graph and inside every create call; each time
/// `qa-run cleanup RUN_DIR` leaves no instance, volume, reservation, key pair, security group,
/// placement group or spot request with the run's test id.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_anywhere_then_cleanup_leaves_nothing_tagged() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let plan = crash_plan(&rig);
    let tasks = clean_run_tasks(&rig, &plan, "crash-clean", &[REGION]).await;
    for stage in [
        "reserve",
        "provision:spot",
        "ready:reserved",
        "upload:spot",
        "step:",
        "collect:",
        "publish",
        "teardown:",
        "release",
    ] {
        assert!(
            tasks.iter().any(|t| t.starts_with(stage)),
            "no {stage} task in {tasks:?}"
        );
    }
    let mut points: Vec<KillAt> = tasks.into_iter().map(KillAt::TaskStart).collect();
    points.extend(
        [
            "CreateCapacityReservation",
            "CreateKeyPair",
            "CreateSecurityGroup",
            "CreatePlacementGroup",
            "RunInstances",
            "TerminateInstances",
        ]
        .map(KillAt::InsideCall),
    );
    let found = kill_at_each_then_clean_up(&rig, &plan, "crash", &points, &[REGION]).await;
    // The kills did land where resources existed: most points had something to clean.
    let with_resources = found.iter().filter(|n| n[0] > 0).count();
    assert!(
        with_resources * 2 > points.len(),
        "too few kills left anything behind: {:?}",
        points.iter().zip(&found).collect::<Vec<_>>()
    );
}

const WEST: &str = "eu-west-1";

/// A plan with a reserved machine in each of two regions.
fn two_region_plan(rig: &Rig) -> PathBuf {
    let path = rig.dir.path().join("regions/regions.yaml");
    let user = rig.user();
    write(
        &path,
        &format!(
            "name: two-regions
backend: aws
budget: 1h
machines:
  - name: east
    aws:
      region: {REGION}
      instance-type: m5.large
      image: {IMAGE}
      reserve: true
      ssh-user: {user}
      ssh-cidr: 127.0.0.1/32
  - name: west
    aws:
      region: {WEST}
      instance-type: r5.large
      image: {IMAGE}
      reserve: true
      ssh-user: {user}
      ssh-cidr: 127.0.0.1/32
      volumes:
        - {{type: gp3, size-gb: 10}}
steps:
  - name: work
    command: echo working on $QA_RUN_MACHINE
"
        ),
    );
    path
}

/// A plan whose machines are in two regions reserves in each region and launches each machine
/// into the reservation of its own region; killed anywhere, `qa-run cleanup RUN_DIR` leaves
/// nothing in either region.
#[tokio::test(flavor = "multi_thread")]
async fn machines_in_two_regions_reserve_launch_and_clean_up_in_each() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let plan = two_region_plan(&rig);
    let tasks = clean_run_tasks(&rig, &plan, "regions", &[REGION, WEST]).await;

    // One reservation per region, of that region's machine type, in one of its zones.
    let reservations = rig.emu.proxy.lock().reservations.clone();
    let of = |region: &str| -> Vec<_> {
        reservations
            .iter()
            .filter(|r| r.region == region && r.tags.iter().any(|(_, v)| v == "regions"))
            .cloned()
            .collect()
    };
    let (east, west) = (of(REGION), of(WEST));
    assert_eq!(east.len(), 1, "{reservations:#?}");
    assert_eq!(west.len(), 1, "{reservations:#?}");
    assert_eq!(east[0].instance_type, "m5.large");
    assert_eq!(west[0].instance_type, "r5.large");
    assert!(west[0].zone.starts_with(WEST), "{:?}", west[0]);
    // Each machine was launched in its region into that region's reservation.
    let launches = rig.emu.proxy.lock().calls_of("RunInstances");
    assert_eq!(launches.len(), 2, "{launches:?}");
    for (region, r) in [(REGION, &east[0]), (WEST, &west[0])] {
        let call = launches
            .iter()
            .find(|c| c.region == region)
            .unwrap_or_else(|| panic!("no RunInstances in {region}: {launches:?}"));
        assert_eq!(
            call.params.get(
                "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"
            ),
            Some(&r.id),
            "{region}: {call:?}"
        );
        assert_eq!(call.params.get("Placement.AvailabilityZone"), Some(&r.zone));
    }
    // Killed at every task and inside the creates, then cleaned up from the run directory.
    let mut points: Vec<KillAt> = tasks.into_iter().map(KillAt::TaskStart).collect();
    points.extend(["CreateCapacityReservation", "RunInstances"].map(KillAt::InsideCall));
    let found = kill_at_each_then_clean_up(&rig, &plan, "regions", &points, &[REGION, WEST]).await;
    let in_west = found.iter().filter(|n| n[1] > 0).count();
    assert!(
        in_west * 2 > points.len(),
        "too few kills left anything in {WEST}: {:?}",
        points.iter().zip(&found).collect::<Vec<_>>()
    );
}

/// Makes a security group and a volume in `region` that look like qa-run's with a keep-until in
/// the past, as a run whose machine was kept and forgotten would leave them.
async fn forgotten(rig: &Rig, region: &str, test_id: &str) {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let tags = |t: ResourceType| {
        TagSpecification::builder()
            .resource_type(t)
            .tags(Tag::builder().key("created-by").value("qa-run").build())
            .tags(Tag::builder().key(TEST_ID_TAG).value(test_id).build())
            .tags(
                Tag::builder()
                    .key("qa-run:keep-until")
                    .value("2026-01-01T00:00:00Z")
                    .build(),
            )
            .build()
    };
    let c = rig.emu.client(region).await;
    c.create_security_group()
        .group_name(format!("qa-run-{test_id}"))
        .description("forgotten")
        .tag_specifications(tags(ResourceType::SecurityGroup))
        .send()
        .await
        .unwrap();
    c.create_volume()
        .availability_zone(format!("{region}a"))
        .size(8)
        .tag_specifications(tags(ResourceType::Volume))
        .send()
        .await
        .unwrap();
}

/// `qa-run janitor` lists what outlived its keep-until (in every region with --all-regions) and
/// removes it only with --yes.
#[tokio::test(flavor = "multi_thread")]
async fn janitor_lists_every_region_and_removes_only_with_yes() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    forgotten(&rig, REGION, "old-east").await;
    forgotten(&rig, "eu-west-1", "old-west").await;

    let here = rig.run(&["janitor", "--older-than", "1h"]);
    assert_eq!(here.status.code(), Some(0), "{}", text(&here));
    let listed = String::from_utf8_lossy(&here.stdout).to_string();
    assert!(
        listed.contains("old-east") && !listed.contains("old-west"),
        "{listed}"
    );

    let everywhere = rig.run(&["janitor", "--older-than", "1h", "--all-regions"]);
    assert_eq!(everywhere.status.code(), Some(0), "{}", text(&everywhere));
    let listed = String::from_utf8_lossy(&everywhere.stdout).to_string();
    assert!(
        listed.contains("old-east") && listed.contains("old-west"),
        "{listed}"
    );
    assert!(
        String::from_utf8_lossy(&everywhere.stderr).contains("nothing removed"),
        "{}",
        text(&everywhere)
    );
    assert_eq!(rig.emu.leftovers("eu-west-1", "old-west").await.len(), 2);

    let removed = rig.run(&["janitor", "--older-than", "1h", "--all-regions", "--yes"]);
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed));
    assert_eq!(
        rig.emu.leftovers(REGION, "old-east").await,
        Vec::<String>::new()
    );
    assert_eq!(
        rig.emu.leftovers("eu-west-1", "old-west").await,
        Vec::<String>::new()
    );
}

/// `qa-run cleanup --test-id ID --all-regions`, for a run whose directory is lost: everything
/// tagged with the test id goes, in every region.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_by_test_id_sweeps_every_region() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    forgotten(&rig, REGION, "lost-run").await;
    forgotten(&rig, "eu-west-1", "lost-run").await;
    forgotten(&rig, "eu-west-1", "other-run").await;

    let here = rig.run(&["cleanup", "--test-id", "lost-run", "--aws"]);
    assert_eq!(here.status.code(), Some(0), "{}", text(&here));
    assert_eq!(
        rig.emu.leftovers(REGION, "lost-run").await,
        Vec::<String>::new()
    );
    assert_eq!(
        rig.emu.leftovers("eu-west-1", "lost-run").await.len(),
        2,
        "without --all-regions only the configured region is swept"
    );

    let everywhere = rig.run(&["cleanup", "--test-id", "lost-run", "--all-regions"]);
    assert_eq!(everywhere.status.code(), Some(0), "{}", text(&everywhere));
    assert_eq!(
        rig.emu.leftovers("eu-west-1", "lost-run").await,
        Vec::<String>::new()
    );
    assert_eq!(
        rig.emu.leftovers("eu-west-1", "other-run").await.len(),
        2,
        "another test id is left alone"
    );
}
