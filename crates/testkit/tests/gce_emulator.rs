//! The GCE emulator over real HTTP: a small keep-alive HTTP/1.1 client sends what the
//! `google-cloud-compute-v1` clients send, and the answers are checked against the v1 shapes.

use qa_testkit::gce::{Call, FaultRule, GceConfig, GceEmulator, RESERVATION_FULL_CODE, ZoneConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ZA: &str = "us-central1-a";
const ZB: &str = "us-central1-b";
const ZE: &str = "europe-west4-a";
const MT: &str = "n2-standard-2";

/// One keep-alive connection to the emulator.
struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
    base: String,
}

impl Client {
    async fn connect(gce: &GceEmulator) -> Client {
        let addr = gce.endpoint().trim_start_matches("http://").to_string();
        Client {
            sock: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
            base: format!("/compute/v1/projects/{}/", gce.project()),
        }
    }

    /// Sends one request (`path` relative to the project unless it starts with `/`) and returns
    /// the status and the JSON body.
    async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let target = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-goog-api-client: test\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        self.sock.write_all(req.as_bytes()).await.expect("write");
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(
                self.sock.read_buf(&mut self.buf).await.expect("read") > 0,
                "closed"
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .expect("content-length");
        while self.buf.len() < head_end + 4 + len {
            assert!(
                self.sock.read_buf(&mut self.buf).await.expect("read") > 0,
                "closed"
            );
        }
        let body = self.buf[head_end + 4..head_end + 4 + len].to_vec();
        self.buf.drain(..head_end + 4 + len);
        (status, serde_json::from_slice(&body).expect("JSON body"))
    }

    async fn get(&mut self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// Polls a zonal operation until `DONE`; returns it and how many polls it took.
    async fn wait_done(&mut self, zone: &str, op: &Value) -> (Value, usize) {
        let name = op["name"].as_str().expect("operation name").to_string();
        for n in 1..=20 {
            let (s, v) = self.get(&format!("zones/{zone}/operations/{name}")).await;
            assert_eq!(s, 200, "{v}");
            if v["status"] == "DONE" {
                return (v, n);
            }
        }
        panic!("operation {name} never finished");
    }

    /// Inserts an instance and returns the operation.
    async fn insert_instance(
        &mut self,
        zone: &str,
        body: &Value,
        rid: Option<&str>,
    ) -> (u16, Value) {
        let q = rid
            .map(|r| format!("?requestId={r}&$alt=json"))
            .unwrap_or_default();
        self.call("POST", &format!("zones/{zone}/instances{q}"), Some(body))
            .await
    }
}

fn instance(name: &str, zone: &str, test_id: &str) -> Value {
    json!({
        "name": name,
        "machineType": format!("zones/{zone}/machineTypes/{MT}"),
        "labels": {"qa-run": "1", "test_id": test_id},
        "disks": [{"boot": true, "autoDelete": true, "initializeParams": {
            "sourceImage": "projects/debian-cloud/global/images/family/debian-12",
            "diskSizeGb": "20",
            "diskType": format!("zones/{zone}/diskTypes/pd-balanced")}}],
        "networkInterfaces": [{"network": "global/networks/default",
            "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]}],
        "metadata": {"items": [{"key": "ssh-keys", "value": "qa:ssh-ed25519 AAAA qa"}]},
        "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": false}
    })
}

fn config() -> GceConfig {
    GceConfig::new("qa-proj")
        .zone(ZoneConfig::new(ZA, &[MT, "e2-standard-2"]))
        .zone(ZoneConfig::new(ZB, &[MT]))
        .zone(ZoneConfig::new(ZE, &["e2-standard-2"]))
}

fn is_rfc3339(s: &Value) -> bool {
    let s = s.as_str().unwrap_or("");
    s.len() >= 20 && &s[4..5] == "-" && &s[10..11] == "T" && (s.ends_with('Z') || s.contains('+'))
}

#[tokio::test]
async fn insert_polls_to_done_and_the_instance_boots() {
    let gce = GceEmulator::start(config().operation_polls(2).boot_polls(1)).await;
    let mut c = Client::connect(&gce).await;
    let (s, op) = c
        .insert_instance(ZA, &instance("qa-r1-0", ZA, "r1"), None)
        .await;
    assert_eq!(s, 200, "{op}");
    assert_eq!(op["kind"], "compute#operation");
    assert_eq!(op["status"], "PENDING");
    assert_eq!(op["operationType"], "insert");
    assert_eq!(op["progress"], 0);
    assert!(op["id"].is_string() && op["targetId"].is_string());
    assert!(is_rfc3339(&op["insertTime"]), "{op}");
    assert_eq!(
        op["targetLink"],
        "https://www.googleapis.com/compute/v1/projects/qa-proj/zones/us-central1-a/instances/qa-r1-0"
    );
    assert_eq!(
        op["zone"],
        "https://www.googleapis.com/compute/v1/projects/qa-proj/zones/us-central1-a"
    );
    assert!(
        op["selfLink"]
            .as_str()
            .unwrap()
            .ends_with(op["name"].as_str().unwrap())
    );

    let (_, inst) = c.get(&format!("zones/{ZA}/instances/qa-r1-0")).await;
    assert_eq!(inst["status"], "PROVISIONING");
    let (done, polls) = c.wait_done(ZA, &op).await;
    assert_eq!(polls, 2, "DONE on the configured poll");
    assert_eq!(done["progress"], 100);
    assert!(done.get("error").is_none() && is_rfc3339(&done["endTime"]));

    let (_, inst) = c.get(&format!("zones/{ZA}/instances/qa-r1-0")).await;
    assert_eq!(inst["status"], "STAGING");
    let (s, inst) = c.get(&format!("zones/{ZA}/instances/qa-r1-0")).await;
    assert_eq!(s, 200);
    assert_eq!(inst["status"], "RUNNING");
    assert_eq!(inst["kind"], "compute#instance");
    assert!(inst["id"].is_string());
    assert_eq!(inst["labels"], json!({"qa-run": "1", "test_id": "r1"}));
    assert_eq!(inst["disks"][0]["diskSizeGb"], "20");
    assert_eq!(inst["disks"][0]["boot"], true);
    assert_eq!(
        inst["networkInterfaces"][0]["accessConfigs"][0]["natIP"],
        "127.0.0.1"
    );
    assert!(
        inst["machineType"]
            .as_str()
            .unwrap()
            .ends_with("/zones/us-central1-a/machineTypes/n2-standard-2")
    );
    assert_eq!(inst["metadata"]["items"][0]["key"], "ssh-keys");
    assert_eq!(inst["scheduling"]["provisioningModel"], "STANDARD");
    assert!(is_rfc3339(&inst["creationTimestamp"]));

    // wait is a poll too.
    let (_, del) = c
        .call("DELETE", &format!("zones/{ZA}/instances/qa-r1-0"), None)
        .await;
    assert_eq!(del["operationType"], "delete");
    let name = del["name"].as_str().unwrap();
    let (_, w1) = c
        .call("POST", &format!("zones/{ZA}/operations/{name}/wait"), None)
        .await;
    assert_eq!(w1["status"], "RUNNING");
    let (_, stopping) = c.get(&format!("zones/{ZA}/instances/qa-r1-0")).await;
    assert_eq!(stopping["status"], "STOPPING");
    let (_, w2) = c
        .call("POST", &format!("zones/{ZA}/operations/{name}/wait"), None)
        .await;
    assert_eq!(w2["status"], "DONE");
    let (s, _) = c.get(&format!("zones/{ZA}/instances/qa-r1-0")).await;
    assert_eq!(s, 404);
    assert!(
        gce.disks().is_empty(),
        "the auto-delete boot disk went with it"
    );
}

#[tokio::test]
async fn a_replayed_request_id_returns_the_first_operation() {
    let gce = GceEmulator::start(config()).await;
    let mut c = Client::connect(&gce).await;
    let rid = "123e4567-e89b-12d3-a456-426614174000";
    let body = instance("qa-r2-0", ZA, "r2");
    let (s1, op1) = c.insert_instance(ZA, &body, Some(rid)).await;
    let (s2, op2) = c.insert_instance(ZA, &body, Some(rid)).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(op1["name"], op2["name"]);
    assert_eq!(gce.instances().len(), 1);
    // After it is done the replay shows it done, and still makes nothing.
    c.wait_done(ZA, &op1).await;
    let (_, op3) = c.insert_instance(ZA, &body, Some(rid)).await;
    assert_eq!(
        (op3["name"].clone(), op3["status"].clone()),
        (op1["name"].clone(), json!("DONE"))
    );
    assert_eq!(gce.instances().len(), 1);
    // Without the request id the same name is a conflict; a bad id is invalid.
    let (s, e) = c.insert_instance(ZA, &body, None).await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["errors"][0]["reason"], "alreadyExists");
    let (s, e) = c.insert_instance(ZA, &body, Some("not-a-uuid")).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["errors"][0]["reason"], "invalid");
}

#[tokio::test]
async fn capacity_exhaustion_is_reported_inside_the_done_operation() {
    let gce = GceEmulator::start(config()).await;
    gce.set_capacity(ZA, MT, 1);
    let mut c = Client::connect(&gce).await;
    let (_, op) = c
        .insert_instance(ZA, &instance("qa-r3-0", ZA, "r3"), None)
        .await;
    assert!(c.wait_done(ZA, &op).await.0.get("error").is_none());
    assert_eq!(gce.free_capacity(ZA, MT), Some(0));

    let (s, op) = c
        .insert_instance(ZA, &instance("qa-r3-1", ZA, "r3"), None)
        .await;
    assert_eq!(s, 200, "accepted: the stockout shows up later");
    let (done, _) = c.wait_done(ZA, &op).await;
    let err = &done["error"]["errors"][0];
    assert_eq!(err["code"], "ZONE_RESOURCE_POOL_EXHAUSTED", "{done}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("does not have enough resources")
    );
    assert_eq!(done["httpErrorStatusCode"], 503);
    assert_eq!(done["httpErrorMessage"], "SERVICE UNAVAILABLE");
    let (s, _) = c.get(&format!("zones/{ZA}/instances/qa-r3-1")).await;
    assert_eq!(s, 404, "nothing was made");
    assert_eq!(gce.instances().len(), 1);

    // Another zone has its own capacity; deleting gives capacity back.
    let (_, op) = c
        .insert_instance(ZB, &instance("qa-r3-1", ZB, "r3"), None)
        .await;
    assert!(c.wait_done(ZB, &op).await.0.get("error").is_none());
    let (_, op) = c
        .call("DELETE", &format!("zones/{ZA}/instances/qa-r3-0"), None)
        .await;
    c.wait_done(ZA, &op).await;
    assert_eq!(gce.free_capacity(ZA, MT), Some(1));

    // The details variant carries the errorDetails the real API adds.
    gce.inject(FaultRule::in_operation(
        Call::InstancesInsert,
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    ));
    let (_, op) = c
        .insert_instance(ZA, &instance("qa-r3-2", ZA, "r3"), None)
        .await;
    let (done, _) = c.wait_done(ZA, &op).await;
    let err = &done["error"]["errors"][0];
    assert_eq!(err["code"], "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS");
    assert_eq!(
        err["errorDetails"][2]["errorInfo"]["reason"],
        "resource_availability"
    );
    assert_eq!(
        err["errorDetails"][2]["errorInfo"]["metadatas"]["vmType"],
        MT
    );
    assert_eq!(
        gce.free_capacity(ZA, MT),
        Some(1),
        "a failed insert takes nothing"
    );
}

#[tokio::test]
async fn reservations_count_what_consumes_them() {
    let gce = GceEmulator::start(config()).await;
    gce.set_capacity(ZA, MT, 3);
    let mut c = Client::connect(&gce).await;
    let res = json!({
        "name": "qa-r4-us-central1-a-0",
        "description": "qa-run test_id=r4",
        "specificReservationRequired": true,
        "specificReservation": {"count": "2", "instanceProperties": {"machineType": MT}}
    });
    let (s, op) = c
        .call(
            "POST",
            &format!("zones/{ZA}/reservations?requestId=6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"),
            Some(&res),
        )
        .await;
    assert_eq!(s, 200, "{op}");
    let (_, creating) = c
        .get(&format!("zones/{ZA}/reservations/qa-r4-us-central1-a-0"))
        .await;
    assert_eq!(creating["status"], "CREATING");
    c.wait_done(ZA, &op).await;
    assert_eq!(
        gce.free_capacity(ZA, MT),
        Some(1),
        "the reservation took its count"
    );
    let (_, r) = c
        .get(&format!("zones/{ZA}/reservations/qa-r4-us-central1-a-0"))
        .await;
    assert_eq!(r["kind"], "compute#reservation");
    assert_eq!(r["status"], "READY");
    assert_eq!(r["specificReservation"]["count"], "2");
    assert_eq!(r["specificReservation"]["inUseCount"], "0");
    assert_eq!(r["specificReservationRequired"], true);

    let consume = |name: &str| {
        let mut b = instance(name, ZA, "r4");
        b["reservationAffinity"] = json!({
            "consumeReservationType": "SPECIFIC_RESERVATION",
            "key": "compute.googleapis.com/reservation-name",
            "values": ["qa-r4-us-central1-a-0"]
        });
        b
    };
    for (i, name) in ["qa-r4-0", "qa-r4-1"].into_iter().enumerate() {
        let (_, op) = c.insert_instance(ZA, &consume(name), None).await;
        assert!(c.wait_done(ZA, &op).await.0.get("error").is_none());
        let (_, r) = c
            .get(&format!("zones/{ZA}/reservations/qa-r4-us-central1-a-0"))
            .await;
        assert_eq!(r["specificReservation"]["inUseCount"], (i + 1).to_string());
    }
    assert_eq!(
        gce.free_capacity(ZA, MT),
        Some(1),
        "consumers use the reservation"
    );
    let (_, op) = c.insert_instance(ZA, &consume("qa-r4-2"), None).await;
    let (done, _) = c.wait_done(ZA, &op).await;
    assert_eq!(done["error"]["errors"][0]["code"], RESERVATION_FULL_CODE);
    assert_eq!(gce.instances().len(), 2);

    // Targeting a reservation that does not exist is a request error.
    let mut bad = consume("qa-r4-3");
    bad["reservationAffinity"]["values"] = json!(["nope"]);
    let (s, e) = c.insert_instance(ZA, &bad, None).await;
    assert_eq!(
        (s, e["error"]["errors"][0]["reason"].clone()),
        (400, json!("invalid"))
    );

    // The aggregated list has every zone; empty ones carry the NO_RESULTS_ON_PAGE warning.
    let (_, agg) = c
        .get("aggregated/reservations?returnPartialSuccess=true")
        .await;
    assert_eq!(agg["kind"], "compute#reservationAggregatedList");
    assert_eq!(
        agg["items"]["zones/us-central1-a"]["reservations"][0]["specificReservation"]["inUseCount"],
        "2"
    );
    assert_eq!(
        agg["items"]["zones/us-central1-b"]["warning"]["code"],
        "NO_RESULTS_ON_PAGE"
    );
    let (_, list) = c.get(&format!("zones/{ZA}/reservations")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Deleting a consumed reservation returns its unused part only.
    let (_, op) = c
        .call(
            "DELETE",
            &format!("zones/{ZA}/reservations/qa-r4-us-central1-a-0"),
            None,
        )
        .await;
    c.wait_done(ZA, &op).await;
    assert!(gce.reservations().is_empty());
    assert_eq!(gce.free_capacity(ZA, MT), Some(1));
    assert_eq!(
        gce.named("qa-r4").len(),
        4,
        "two instances and their boot disks"
    );
}

#[tokio::test]
async fn aggregated_list_filters_by_label_across_zones() {
    let gce = GceEmulator::start(config().operation_polls(0)).await;
    let mut c = Client::connect(&gce).await;
    for (name, zone, id) in [
        ("qa-a-0", ZA, "a"),
        ("qa-a-1", ZB, "a"),
        ("qa-b-0", ZA, "b"),
    ] {
        let (s, op) = c
            .insert_instance(zone, &instance(name, zone, id), None)
            .await;
        assert_eq!((s, op["status"].clone()), (200, json!("DONE")), "{op}");
    }
    for filter in [
        "labels.test_id%20%3D%20%22a%22",
        "labels.test_id=a",
        "labels.test_id+eq+a",
    ] {
        let (s, agg) = c
            .get(&format!(
                "aggregated/instances?filter={filter}&returnPartialSuccess=true"
            ))
            .await;
        assert_eq!(s, 200, "{agg}");
        assert_eq!(agg["kind"], "compute#instanceAggregatedList");
        let names = |z: &str| -> Vec<String> {
            agg["items"][format!("zones/{z}")]["instances"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| i["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(names(ZA), vec!["qa-a-0"], "{filter}");
        assert_eq!(names(ZB), vec!["qa-a-1"], "{filter}");
        assert_eq!(
            agg["items"]["zones/europe-west4-a"]["warning"]["code"],
            "NO_RESULTS_ON_PAGE"
        );
    }
    let (_, list) = c
        .get(&format!(
            "zones/{ZA}/instances?filter=labels.qa-run%3D1&maxResults=1"
        ))
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["nextPageToken"], "1");
    let (s, e) = c
        .get("aggregated/instances?filter=labels.a%3D1%20OR%20labels.b%3D2")
        .await;
    assert_eq!(
        (s, e["error"]["errors"][0]["reason"].clone()),
        (400, json!("invalid"))
    );
    assert_eq!(
        gce.with_label("test_id", "a").len(),
        2,
        "the boot disks carry no labels"
    );
}

#[tokio::test]
async fn deleting_a_missing_instance_is_googles_404_body() {
    let gce = GceEmulator::start(config()).await;
    let mut c = Client::connect(&gce).await;
    let (s, e) = c
        .call("DELETE", &format!("zones/{ZA}/instances/nope"), None)
        .await;
    assert_eq!(s, 404);
    let msg = "The resource 'projects/qa-proj/zones/us-central1-a/instances/nope' was not found";
    assert_eq!(
        e,
        json!({"error": {
            "code": 404,
            "message": msg,
            "errors": [{"message": msg, "domain": "global", "reason": "notFound"}],
            "status": "NOT_FOUND"
        }})
    );
    let (s, e) = c.get("/compute/v1/projects/other/zones").await;
    assert_eq!((s, e["error"]["status"].clone()), (404, json!("NOT_FOUND")));
    let (s, e) = c.get("zones/mars-1a/instances").await;
    assert_eq!(
        (s, e["error"]["errors"][0]["reason"].clone()),
        (400, json!("invalid"))
    );
}

#[tokio::test]
async fn fault_rules_fire_their_times_then_stop() {
    let gce = GceEmulator::start(config()).await;
    gce.inject(
        FaultRule::sync(Call::ReservationsInsert, 403, "quotaExceeded")
            .zone(ZA)
            .times(2),
    );
    gce.inject(FaultRule::in_operation(Call::InstancesInsert, "QUOTA_EXCEEDED").zone(ZB));
    let mut c = Client::connect(&gce).await;
    let res = |n: &str| {
        json!({"name": n, "specificReservationRequired": true,
        "specificReservation": {"count": "1", "instanceProperties": {"machineType": MT}}})
    };
    let (s, _) = c
        .call(
            "POST",
            &format!("zones/{ZB}/reservations"),
            Some(&res("qa-f-b")),
        )
        .await;
    assert_eq!(s, 200, "the rule is for another zone");
    for _ in 0..2 {
        let (s, e) = c
            .call(
                "POST",
                &format!("zones/{ZA}/reservations"),
                Some(&res("qa-f-a")),
            )
            .await;
        assert_eq!(s, 403);
        assert_eq!(e["error"]["errors"][0]["reason"], "quotaExceeded");
        assert_eq!(e["error"]["errors"][0]["domain"], "usageLimits");
    }
    let (s, _) = c
        .call(
            "POST",
            &format!("zones/{ZA}/reservations"),
            Some(&res("qa-f-a")),
        )
        .await;
    assert_eq!(s, 200, "the rule is used up");
    assert_eq!(gce.faults()[0].times, 0);

    let (s, op) = c
        .insert_instance(ZB, &instance("qa-f-0", ZB, "f"), None)
        .await;
    assert_eq!(s, 200);
    let (done, _) = c.wait_done(ZB, &op).await;
    assert_eq!(done["error"]["errors"][0]["code"], "QUOTA_EXCEEDED");
    assert_eq!(
        done["error"]["errors"][0]["errorDetails"][0]["quotaInfo"]["dimensions"]["region"],
        "us-central1"
    );
    assert_eq!(done["httpErrorStatusCode"], 403);
    let (_, op) = c
        .insert_instance(ZB, &instance("qa-f-0", ZB, "f"), None)
        .await;
    assert!(
        c.wait_done(ZB, &op).await.0.get("error").is_none(),
        "fired once"
    );
    // An in-operation fault on a read is a synchronous error.
    gce.inject(FaultRule::in_operation(
        Call::InstancesGet,
        "RESOURCE_NOT_FOUND",
    ));
    let (s, _) = c.get(&format!("zones/{ZB}/instances/qa-f-0")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_request_log_records_every_call() {
    let gce = GceEmulator::start(config()).await;
    let mut c = Client::connect(&gce).await;
    let rid = "0b7c3e6a-1f2d-4e5b-9a8c-7d6e5f4a3b2c";
    c.insert_instance(ZA, &instance("qa-l-0", ZA, "l"), Some(rid))
        .await;
    c.get(&format!("zones/{ZA}/instances/qa-l-0")).await;
    c.get("nowhere").await;
    let log = gce.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].method, "POST");
    assert_eq!(
        log[0].path,
        "/compute/v1/projects/qa-proj/zones/us-central1-a/instances"
    );
    assert_eq!(log[0].query_param("requestId"), Some(rid));
    assert_eq!(log[0].query_param("$alt"), Some("json"));
    assert_eq!(log[0].body.as_ref().unwrap()["labels"]["test_id"], "l");
    assert_eq!(log[0].call, Some(Call::InstancesInsert));
    assert_eq!(log[0].header("X-Goog-Api-Client"), Some("test"));
    assert_eq!(log[0].header("authorization"), None);
    assert_eq!(log[0].zone.as_deref(), Some(ZA));
    assert_eq!(
        (log[1].call, log[1].status),
        (Some(Call::InstancesGet), 200)
    );
    assert_eq!((log[2].call, log[2].status), (None, 404));
    assert_eq!(gce.requests_of(Call::InstancesGet).len(), 1);
}

#[tokio::test]
async fn zones_machine_types_firewalls_and_leftover_disks() {
    let gce = GceEmulator::start(config()).await;
    let mut c = Client::connect(&gce).await;
    let (_, zones) = c.get("zones").await;
    assert_eq!(zones["items"].as_array().unwrap().len(), 3);
    assert_eq!(zones["items"][0]["status"], "UP");
    let (_, mts) = c.get(&format!("zones/{ZE}/machineTypes")).await;
    assert_eq!(mts["items"][0]["name"], "e2-standard-2");
    assert_eq!(mts["items"][0]["guestCpus"], 2);
    let (_, agg) = c
        .get("aggregated/machineTypes?filter=name%3Dn2-standard-2")
        .await;
    assert!(agg["items"]["zones/us-central1-b"]["machineTypes"].is_array());
    assert_eq!(
        agg["items"]["zones/europe-west4-a"]["warning"]["code"],
        "NO_RESULTS_ON_PAGE"
    );
    let (_, regions) = c.get("regions").await;
    assert_eq!(regions["items"].as_array().unwrap().len(), 2);
    let (s, e) = c
        .insert_instance(ZE, &instance("qa-z-0", ZE, "z"), None)
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist in zone")
    );

    let fw = json!({"name": "qa-z-ssh", "network": "global/networks/default",
        "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "targetTags": ["qa-z"]});
    let (_, op) = c.call("POST", "global/firewalls", Some(&fw)).await;
    assert!(op.get("zone").is_none());
    let (_, got) = c.get("global/firewalls/qa-z-ssh").await;
    assert_eq!(
        (got["priority"].clone(), got["sourceRanges"].clone()),
        (json!(1000), json!(["0.0.0.0/0"]))
    );
    let (_, op) = c.call("DELETE", "global/firewalls/qa-z-ssh", None).await;
    let (_, done) = c
        .get(&format!(
            "global/operations/{}",
            op["name"].as_str().unwrap()
        ))
        .await;
    assert_eq!(done["status"], "DONE");
    assert!(gce.firewalls().is_empty());

    // A data disk without autoDelete outlives its instance, labelled, until deleted.
    let mut body = instance("qa-z-1", ZA, "z");
    body["disks"]
        .as_array_mut()
        .unwrap()
        .push(json!({"boot": false, "autoDelete": false,
        "initializeParams": {"diskSizeGb": "50", "labels": {"test_id": "z"}}}));
    let (_, op) = c.insert_instance(ZA, &body, None).await;
    c.wait_done(ZA, &op).await;
    let (_, op) = c
        .call("DELETE", &format!("zones/{ZA}/instances/qa-z-1"), None)
        .await;
    c.wait_done(ZA, &op).await;
    assert_eq!(
        gce.with_label("test_id", "z"),
        vec!["disk us-central1-a/qa-z-1-disk-1"]
    );
    let (_, d) = c.get(&format!("zones/{ZA}/disks/qa-z-1-disk-1")).await;
    assert_eq!(d["sizeGb"], "50");
    let (_, op) = c
        .call("DELETE", &format!("zones/{ZA}/disks/qa-z-1-disk-1"), None)
        .await;
    c.wait_done(ZA, &op).await;
    assert!(gce.with_label("test_id", "z").is_empty());
}
