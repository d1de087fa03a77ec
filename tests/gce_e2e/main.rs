//! qa-run on Compute Engine, end to end: the real `qa-run` binary (built with `--features gce`)
//! against qa-testkit's Compute Engine emulator (`qa_testkit::gce`, `QA_RUN_GCE_ENDPOINT`), with
//! every instance's SSH address mapped onto a local OpenSSH sshd of qa-testkit
//! (`QA_RUN_GCE_SSH_ADDRESS`), so that provisioning, SSH, the reboot, collection and publishing
//! all happen for real.
//!
//! Credentials go the way users' do: `GOOGLE_APPLICATION_CREDENTIALS` names a service account's
//! JSON (with a key made for the test), from which the client signs its own tokens; nothing
//! leaves 127.0.0.1, and the plans admit SSH from `127.0.0.1/32` so the caller's address is never
//! looked up.
//!
//! Run with `cargo test -p qa-cli --features gce --test gce_e2e`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qa_testkit::TestSshd;
use qa_testkit::cli::{json, text};
use qa_testkit::gce::{Call, GceConfig, GceEmulator, ZoneConfig};
use qa_testkit::git::git;
use serde_json::Value;

const PROJECT: &str = "qa-e2e-project";

/// The emulator, the sshd standing in for every instance, and a scratch directory.
struct Rig {
    gce: GceEmulator,
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
        let types = ["n2-highmem-2", "n2-standard-2", "e2-standard-2"];
        let gce = GceEmulator::start(
            GceConfig::new(PROJECT)
                .zone(ZoneConfig::new("us-central1-a", &types))
                .zone(ZoneConfig::new("us-central1-b", &types))
                .zone(ZoneConfig::new("us-central1-c", &types)),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("results")).unwrap();
        let rig = Rig {
            gce,
            sshd,
            dir,
            stop: Arc::new(AtomicBool::new(false)),
        };
        rig.service_account();
        rig.authorize_run_keys();
        Some(rig)
    }

    fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    /// A service account's JSON key file, as the console hands it out, with an RSA key made
    /// here (PKCS#8, as Google's are).
    fn service_account(&self) -> PathBuf {
        let path = self.dir.path().join("sa.json");
        let key = self.dir.path().join("sa-key");
        let st = Command::new("ssh-keygen")
            .args([
                "-q", "-t", "rsa", "-b", "2048", "-m", "PKCS8", "-N", "", "-f",
            ])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
        let pem = std::fs::read_to_string(&key).unwrap();
        let sa = serde_json::json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": format!("qa-run@{PROJECT}.iam.gserviceaccount.com"),
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        std::fs::write(&path, sa.to_string()).unwrap();
        path
    }

    /// What the guest agent does on a real instance: the run's public key (written by qa-run as
    /// `<run-dir>/gce-ssh-key.pub`, and put in the instance's `ssh-keys` metadata) becomes an
    /// authorized key of the login user. A thread watches the results directory.
    fn authorize_run_keys(&self) {
        let results = self.results();
        let auth = self.sshd.dir().join("authorized_keys");
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                for run in std::fs::read_dir(&results).into_iter().flatten().flatten() {
                    let p = run.path().join("gce-ssh-key.pub");
                    if seen.contains(&p) {
                        continue;
                    }
                    if let Ok(line) = std::fs::read_to_string(&p)
                        && line.ends_with('\n')
                    {
                        let mut keys = std::fs::read_to_string(&auth).unwrap_or_default();
                        keys.push_str(&line);
                        std::fs::write(&auth, keys).unwrap();
                        seen.insert(p);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }

    /// The binary with the environment of a Google Cloud user whose endpoint is the emulator.
    fn bin(&self) -> Command {
        let mut c = qa_testkit::cli::bin(env!("CARGO_BIN_EXE_qa-run"));
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        c.env("HOME", &home)
            .env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                self.dir.path().join("sa.json"),
            )
            .env_remove("GOOGLE_CLOUD_PROJECT")
            .env_remove("CLOUDSDK_CORE_PROJECT")
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env("QA_RUN_GCE_ENDPOINT", self.gce.endpoint())
            .env("QA_RUN_GCE_SSH_ADDRESS", self.sshd.addr().to_string())
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

    /// Everything in the emulator that belongs to `test_id`: instances and disks by label,
    /// reservations and firewall rules by description.
    fn alive(&self, test_id: &str) -> Vec<String> {
        let mut out = self.gce.with_label("qa-run_test-id", test_id);
        let mine = format!("qa-run:test-id={test_id}");
        for f in self.gce.firewalls() {
            if f["description"].as_str().is_some_and(|d| d.contains(&mine)) {
                out.push(format!("firewall {}", f["name"]));
            }
        }
        for r in self.gce.reservations() {
            if r.json["description"]
                .as_str()
                .is_some_and(|d| d.ends_with(&mine))
            {
                out.push(format!("reservation {}/{}", r.zone, r.name));
            }
        }
        out
    }
}

/// examples/plans/btrfsqa-gce.yaml, with what only a real cloud has replaced: the login user is
/// the sshd's, SSH is admitted from loopback, the project is the emulator's, the scripts stand in
/// for the kernel build and test suites, and the git remote is a local bare repository.
fn btrfsqa_plan(rig: &Rig, remote: &Path) -> PathBuf {
    let dir = rig.dir.path().join("plan");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plans/btrfsqa-gce.yaml"),
    )
    .unwrap();
    let plan = example
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
        ("ssh-user: fedora", "the login user"),
        ("sudo: true", "sudo"),
        ("KERNEL_BRANCH: for-next", "the environment"),
    ] {
        assert!(
            example.contains(from),
            "the example no longer has {to} ({from})"
        );
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("btrfsqa-gce.yaml"), plan).unwrap();
    qa_testkit::btrfsqa::write_stand_ins(&dir);
    dir.join("btrfsqa-gce.yaml")
}

/// The BTRFSQA flow through the binary: a Spot VM with six 20 GB disks in the first zone with
/// room, the configuration uploaded, four scripts (the first reboots the machine), results
/// collected and published to git, and nothing left in the emulator afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn btrfsqa_on_gce_runs_reboots_collects_publishes_and_leaves_nothing() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    // The first zone has no capacity left, Spot or standard: the machine lands in the second.
    rig.gce
        .set_spot_capacity("us-central1-a", "n2-highmem-2", 0);
    rig.gce.set_capacity("us-central1-a", "n2-highmem-2", 0);
    let remote = rig.dir.path().join("btrfsqa-results.git");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare"]);
    let plan = btrfsqa_plan(&rig, &remote);
    let boot_before = rig.sshd.boot_id();

    let out = {
        let mut c = rig.bin();
        c.args(["run", "--run-id", "btrfsqa-gce", "--test-id", "btrfsqa-gce"])
            .arg(&plan);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    let run_dir = rig.results().join("btrfsqa-gce");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsshd log:\n{}",
        text(&out),
        rig.sshd.log()
    );

    // Credentials: the service account's own signed tokens reached the API.
    let requests = rig.gce.requests();
    assert!(
        requests.iter().all(|r| r
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))),
        "every call carries the service account's token"
    );

    // The machine: a Spot n2-highmem-2 with a 40 GB boot disk and six 20 GB disks, labelled at
    // creation, in zone b after zone a's stockout (Spot, then standard, in a).
    let inserts = rig.gce.requests_of(Call::InstancesInsert);
    assert_eq!(
        inserts
            .iter()
            .filter_map(|r| r.zone.clone())
            .collect::<Vec<_>>(),
        ["us-central1-a", "us-central1-a", "us-central1-b"]
    );
    let model =
        |i: usize| inserts[i].body.clone().unwrap()["scheduling"]["provisioningModel"].clone();
    assert_eq!((model(0), model(1)), ("SPOT".into(), "STANDARD".into()));
    let body = inserts[2].body.clone().unwrap();
    assert_eq!(body["scheduling"]["provisioningModel"], "SPOT");
    assert_eq!(body["labels"]["qa-run_test-id"], "btrfsqa-gce");
    let disks = body["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 7);
    assert_eq!(disks[0]["initializeParams"]["diskSizeGb"], "40");
    assert!(
        disks[1..]
            .iter()
            .all(|d| d["initializeParams"]["diskSizeGb"] == "20")
    );

    // The steps: all four passed, in order, the first across a reboot.
    let report = json(&run_dir.join("report.json"));
    assert_eq!(report["outcome"], "PASS", "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|s| s["verdict"] == "PASS"), "{steps:#?}");
    assert_eq!(
        rig.sshd.reboots(),
        1,
        "the first script rebooted the machine"
    );
    assert_ne!(rig.sshd.boot_id(), boot_before);

    // Collected and published.
    let artifacts = run_dir.join("artifacts/btrfs/results");
    for file in [
        "001-kernel.txt",
        "002-btrfs-progs.txt",
        "003-xfstests.txt",
        "004-raid5-scrub.txt",
    ] {
        assert!(artifacts.join(file).is_file(), "{file} not collected");
    }
    let tree = git(&remote, &["ls-tree", "-r", "--name-only", "gh-pages"]);
    assert!(
        tree.lines()
            .any(|l| l.contains("btrfsqa-gce") && l.ends_with("index.html")),
        "{tree}"
    );

    // The cost: the Spot VM's hours and its disks' GB-hours, in the report.
    let cost = &report["cost"];
    assert!(cost["total"].as_f64().unwrap() > 0.0, "{cost:#}");
    let items = cost["items"].to_string();
    assert!(
        items.contains("n2-highmem-2 spot") && items.contains("pd-balanced"),
        "{items}"
    );

    // Torn down: nothing with the test id is left, and the journal says so.
    assert!(
        rig.alive("btrfsqa-gce").is_empty(),
        "{:?}",
        rig.alive("btrfsqa-gce")
    );
    let state = json(&run_dir.join("state.json"));
    let live: Vec<&Value> = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] != "destroyed")
        .collect();
    assert!(live.is_empty(), "journal still lists {live:#?}");
    let _ =
        std::fs::remove_dir_all(qa_testkit::cli::home_of(&rig.user()).join("qa-run/btrfsqa-gce"));
}

/// A plan that makes every kind of resource: a Spot machine with disks, and a machine with a
/// capacity reservation.
fn crash_plan(rig: &Rig) -> PathBuf {
    let path = rig.dir.path().join("crash/crash.yaml");
    let user = rig.user();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "name: crash
backend: gce
budget: 1h
machines:
  - name: spot
    gce:
      project: {PROJECT}
      zones: [us-central1-a]
      machine-type: e2-standard-2
      image-family: debian-cloud/debian-12
      spot: true
      spot-fallback: true
      ssh-user: {user}
      ssh-cidr: 127.0.0.1/32
      disks:
        - {{size-gb: 20, count: 2}}
  - name: reserved
    gce:
      project: {PROJECT}
      region: us-central1
      machine-type: n2-highmem-2
      image-family: debian-cloud/debian-12
      reserve: true
      ssh-user: {user}
      ssh-cidr: 127.0.0.1/32
steps:
  - name: work
    command: echo working on $QA_RUN_MACHINE
"
        ),
    )
    .unwrap();
    path
}

/// Where a crashed run is killed.
#[derive(Debug, Clone)]
enum KillAt {
    /// When the run reports that this task started.
    TaskStart(String),
    /// When the emulator has done this call's work and holds its answer back.
    InsideCall(Call),
}

/// Runs `plan` with `--json`, kills qa-run with SIGKILL at `at`, and returns the run directory
/// and whether the kill happened (false: the run ended first).
async fn run_and_kill(rig: &Rig, plan: &Path, id: &str, at: &KillAt) -> (PathBuf, bool) {
    rig.gce.clear_requests();
    if let KillAt::InsideCall(call) = at {
        rig.gce.hold_answers_of(*call);
    }
    let mut cmd = rig.bin();
    cmd.args(["--json", "run", "--run-id", id, "--test-id", id])
        .arg(plan);
    let killed = tokio::task::block_in_place(|| {
        qa_testkit::cli::run_and_kill(&mut cmd, Duration::from_secs(120), |started| match at {
            KillAt::TaskStart(task) => started.iter().any(|t| t == task),
            KillAt::InsideCall(call) => rig.gce.held().contains(call),
        })
    });
    rig.gce.release_held();
    (rig.results().join(id), killed)
}

/// SIGKILL at every task start of the graph and inside every create call (the emulator has done
/// the work and holds the answer back); each time
/// `qa-run cleanup RUN_DIR` leaves no instance, disk, reservation or firewall rule of the run.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_anywhere_then_cleanup_leaves_nothing() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let plan = crash_plan(&rig);
    let out = {
        let mut c = rig.bin();
        c.args([
            "--json",
            "run",
            "--run-id",
            "crash-clean",
            "--test-id",
            "crash-clean",
        ])
        .arg(&plan);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        rig.alive("crash-clean").is_empty(),
        "{:?}",
        rig.alive("crash-clean")
    );
    // The reserved machine consumed the reservation made for it, by name.
    let reserved: Vec<String> = rig
        .gce
        .requests_of(Call::ReservationsInsert)
        .iter()
        .filter_map(|r| r.body.as_ref()?["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(reserved.len(), 1, "{reserved:?}");
    let consuming = rig
        .gce
        .requests_of(Call::InstancesInsert)
        .into_iter()
        .filter_map(|r| r.body)
        .find(|b| b["name"].as_str().is_some_and(|n| n.ends_with("-reserved")))
        .expect("the reserved machine's insert");
    assert_eq!(
        consuming["reservationAffinity"]["consumeReservationType"],
        "SPECIFIC_RESERVATION"
    );
    assert_eq!(
        consuming["reservationAffinity"]["values"][0],
        reserved[0].as_str()
    );
    let tasks: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "task-started")
        .map(|v| v["task"].as_str().unwrap().to_string())
        .collect();
    for stage in [
        "reserve",
        "provision:spot",
        "ready:reserved",
        "step:",
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
            Call::ReservationsInsert,
            Call::FirewallsInsert,
            Call::InstancesInsert,
            Call::InstancesDelete,
        ]
        .map(KillAt::InsideCall),
    );
    let mut with_resources = 0;
    for (i, at) in points.iter().enumerate() {
        let id = format!("crash-{i:02}");
        let (run_dir, killed) = run_and_kill(&rig, &plan, &id, at).await;
        assert!(killed, "{at:?}: the run ended before it could be killed");
        rig.gce.settle();
        let before = rig.alive(&id);
        if !before.is_empty() {
            with_resources += 1;
        }
        let out = rig.run(&["cleanup", run_dir.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cleanup after a kill at {at:?}: {}",
            text(&out)
        );
        rig.gce.settle();
        let left = rig.alive(&id);
        assert!(
            left.is_empty(),
            "after a kill at {at:?} and cleanup, left: {left:?}\n(before cleanup: {before:?})\n{}",
            text(&out)
        );
    }
    assert!(
        with_resources * 2 > points.len(),
        "too few kills left anything behind ({with_resources} of {})",
        points.len()
    );
    for entry in std::fs::read_dir(qa_testkit::cli::home_of(&rig.user()).join("qa-run"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("crash") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `qa-run cleanup --test-id ID --gce`, for a run whose directory is lost: everything the run
/// made is found by label and description alone.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_by_test_id_finds_what_a_lost_run_left() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let plan = crash_plan(&rig);
    let (run_dir, killed) = run_and_kill(
        &rig,
        &plan,
        "lost",
        &KillAt::TaskStart("step:work@spot".into()),
    )
    .await;
    assert!(killed);
    rig.gce.settle();
    assert!(!rig.alive("lost").is_empty());
    std::fs::remove_dir_all(&run_dir).unwrap();
    let out = {
        let mut c = rig.bin();
        c.args(["cleanup", "--test-id", "lost", "--gce"])
            .env("GOOGLE_CLOUD_PROJECT", PROJECT);
        c.output().unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    rig.gce.settle();
    assert!(
        rig.alive("lost").is_empty(),
        "{:?}\n{}",
        rig.alive("lost"),
        text(&out)
    );
    let _ = std::fs::remove_dir_all(qa_testkit::cli::home_of(&rig.user()).join("qa-run/lost"));
}

/// examples/plans/fallback-aws-gce.yaml with what only real clouds have replaced: the AMI is one
/// moto knows, the login user is the sshd's and SSH is admitted from loopback on both clouds.
fn fallback_plan(rig: &Rig) -> PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plans/fallback-aws-gce.yaml"),
    )
    .unwrap();
    assert!(example.contains("ssh-user: admin") && example.contains("ami-0123456789abcdef0"));
    let plan = example
        .replace("ami-0123456789abcdef0", "ami-12c6146b")
        .replace(
            "ssh-user: admin",
            &format!("ssh-user: {}\n      ssh-cidr: 127.0.0.1/32", rig.user()),
        );
    let path = rig.dir.path().join("fallback/fallback-aws-gce.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, plan).unwrap();
    path
}

/// EC2 (moto) has no m5.large capacity in any zone of us-east-1: the machine's reservation fails
/// everywhere, so it is made on Compute Engine instead; EC2 holds nothing of the run, and the
/// report says where the machine landed and what was tried.
#[tokio::test(flavor = "multi_thread")]
async fn a_machine_lands_on_gce_when_ec2_is_out_of_capacity_everywhere() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let ec2 = qa_testkit::aws::Ec2Emulator::start().await;
    {
        let mut st = ec2.proxy.lock();
        for z in ["a", "b", "c", "d", "e", "f"] {
            st.no_capacity
                .insert((format!("us-east-1{z}"), "m5.large".to_string()));
        }
    }
    let plan = fallback_plan(&rig);
    let home = rig.dir.path().join("home");
    let out = {
        let mut c = rig.bin();
        c.env("AWS_ENDPOINT_URL", ec2.url())
            .env("AWS_ACCESS_KEY_ID", "AKIDQARUNTEST")
            .env("AWS_SECRET_ACCESS_KEY", "qa-run-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", home.join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"))
            .args(["run", "--run-id", "fallback", "--test-id", "fallback"])
            .arg(&plan);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run_dir = rig.results().join("fallback");
    let report = json(&run_dir.join("report.json"));
    let m = &report["machines"][0];
    assert_eq!(m["backend"], "gce", "{report:#}");
    let tried = m["facts"]["tried-before"].as_str().unwrap();
    assert!(
        tried.starts_with("aws: us-east-1: no capacity in any of us-east-1a"),
        "{tried}"
    );
    assert_eq!(m["facts"]["zone"], "us-central1-a");
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["verdict"] == "PASS")
    );
    // EC2 was asked for a reservation in every zone and holds nothing; GCE made the machine and
    // holds nothing after teardown either.
    // (every zone of the region that offers the type, each refused)
    let asked = ec2.proxy.lock().calls_of("CreateCapacityReservation").len();
    assert!(
        asked >= 2 && tried.matches("us-east-1").count() > asked,
        "{asked}: {tried}"
    );
    assert!(ec2.leftovers("us-east-1", "fallback").await.is_empty());
    assert_eq!(rig.gce.requests_of(Call::InstancesInsert).len(), 1);
    assert!(
        rig.alive("fallback").is_empty(),
        "{:?}",
        rig.alive("fallback")
    );
    let _ = std::fs::remove_dir_all(qa_testkit::cli::home_of(&rig.user()).join("qa-run/fallback"));
}
