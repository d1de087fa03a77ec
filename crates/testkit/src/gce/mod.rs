//! A Compute Engine v1 emulator for tests (feature `gce`): an in-memory project with zones the
//! test configures, served over HTTP/1.1 on 127.0.0.1 with the real REST paths and JSON shapes,
//! so that the official `google-cloud-compute-v1` clients can be pointed at it with
//! `.with_endpoint(emulator.endpoint())` and anonymous credentials.
//!
//! What it serves, under `/compute/v1/projects/{project}/`:
//! - `instances`: insert, get, delete, list, aggregatedList (with `filter`), setLabels;
//! - `reservations` (zonal, specific-SKU): insert, get, delete, list, aggregatedList;
//! - `disks` (made by instance inserts): get, delete, list, aggregatedList;
//! - `firewalls` (global): insert, get, delete, list;
//! - `zones`, `regions`, `machineTypes` (list, get; aggregatedList for machine types);
//! - `zoneOperations` / `globalOperations` / `regionOperations`: get and wait — the paths every
//!   client's `get_operation` uses.
//!
//! How it behaves:
//! - Every mutating call answers 200 with an Operation that is `DONE` after
//!   [`operation_polls`](GceConfig#structfield.operation_polls) reads; errors the real API
//!   reports late (stockouts, quota) appear inside the `DONE` operation as
//!   `error.errors[].code` with `httpErrorStatusCode`.
//!   Request mistakes answer at once with Google's error body
//!   (`{"error":{"code":…,"message":…,"errors":[{"reason":…}],"status":…}}`).
//! - The same `requestId` on the same method answers with the original operation and does
//!   nothing a second time.
//! - Capacity is counted per zone and machine type ([`GceEmulator::set_capacity`], unlimited
//!   until set), separately for Spot; reservations take their `count` from it and instances that
//!   consume a reservation raise its `inUseCount` instead.
//! - [`FaultRule`]s make chosen calls fail, synchronously or inside the operation, a set number of
//!   times.
//! - Every request is logged ([`GceEmulator::requests`]).
//! - The answers of chosen methods can be held once their work is done
//!   ([`GceEmulator::hold_answers_of`]), to crash a client inside a call.
//!
//! int64 fields are JSON strings (`"id": "1000000000000007919"`, `"count": "2"`), links are
//! `https://www.googleapis.com/compute/v1/…` as in the real API, timestamps RFC 3339, and unknown
//! query parameters (`$alt`, `$apiVersion`, `returnPartialSuccess`, …) are ignored.
//!
//! ```no_run
//! # async fn demo() {
//! use qa_testkit::gce::{Call, FaultRule, GceConfig, GceEmulator};
//! let gce = GceEmulator::start(GceConfig::default()).await;
//! gce.set_capacity("us-central1-a", "n2-standard-2", 1);
//! gce.inject(FaultRule::in_operation(Call::InstancesInsert, "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS").zone("us-central1-b"));
//! let endpoint = gce.endpoint(); // http://127.0.0.1:PORT, for `.with_endpoint(..)`
//! # let _ = endpoint;
//! # }
//! ```

mod catalog;
mod config;
mod disks;
mod filter;
mod firewalls;
mod instances;
mod operations;
mod reservations;
mod router;
mod state;
mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

pub use config::{Call, Delivery, FaultRule, GceConfig, RequestRecord, ZoneConfig};
pub use instances::RESERVATION_FULL_CODE;

use crate::http::{Handler, Server};
use state::{Pool, State};

/// An instance as the emulator holds it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InstanceView {
    /// Its zone.
    pub zone: String,
    /// Its name.
    pub name: String,
    /// `PROVISIONING`, `STAGING`, `RUNNING` or `STOPPING`.
    pub status: String,
    /// The machine type's name (`n2-standard-2`).
    pub machine_type: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it draws on Spot capacity.
    pub spot: bool,
    /// The reservation it consumes, if any.
    pub reservation: Option<String>,
    /// The resource as `instances.get` shows it.
    pub json: Value,
}

/// A reservation as the emulator holds it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReservationView {
    /// Its zone.
    pub zone: String,
    /// Its name.
    pub name: String,
    /// The machine type it holds.
    pub machine_type: String,
    /// `specificReservation.count`.
    pub count: u32,
    /// `specificReservation.inUseCount`.
    pub in_use: u32,
    /// `CREATING`, `READY` or `DELETING`.
    pub status: String,
    /// `specificReservationRequired`.
    pub specific_required: bool,
    /// The resource as `reservations.get` shows it.
    pub json: Value,
}

/// A persistent disk as the emulator holds it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiskView {
    /// Its zone.
    pub zone: String,
    /// Its name.
    pub name: String,
    /// The instance it is attached to, if any.
    pub attached_to: Option<String>,
    /// Whether it goes with its instance.
    pub auto_delete: bool,
    /// The resource as `disks.get` shows it.
    pub json: Value,
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The running emulator; it stops listening when dropped.
pub struct GceEmulator {
    server: Server,
    state: Arc<Mutex<State>>,
    project: String,
}

impl std::fmt::Debug for GceEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GceEmulator")
            .field("endpoint", &self.endpoint())
            .field("project", &self.project)
            .finish()
    }
}

impl GceEmulator {
    /// Starts serving `config` on a free port of 127.0.0.1. Panics if no port can be bound.
    pub async fn start(config: GceConfig) -> GceEmulator {
        let project = config.project.clone();
        let state = Arc::new(Mutex::new(State::new(config)));
        let st = state.clone();
        let handler: Arc<Handler> = Arc::new(move |req| router::handle(&st, req));
        let server = Server::start(handler)
            .await
            .expect("the GCE emulator binds a loopback port");
        GceEmulator {
            server,
            state,
            project,
        }
    }

    /// `http://127.0.0.1:PORT`, for the clients' `.with_endpoint(..)`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The project it serves.
    pub fn project(&self) -> &str {
        &self.project
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the free on-demand capacity of `machine_type` in `zone` to `n` instances (what is
    /// already running is not counted against it).
    pub fn set_capacity(&self, zone: &str, machine_type: &str, n: u32) {
        self.lock()
            .capacity
            .insert((zone.to_string(), machine_type.to_string()), n);
    }

    /// Sets the free Spot capacity of `machine_type` in `zone` to `n` instances.
    pub fn set_spot_capacity(&self, zone: &str, machine_type: &str, n: u32) {
        self.lock()
            .spot_capacity
            .insert((zone.to_string(), machine_type.to_string()), n);
    }

    /// Makes on-demand and Spot capacity of `machine_type` in `zone` unlimited again.
    pub fn unlimited_capacity(&self, zone: &str, machine_type: &str) {
        let mut st = self.lock();
        let key = (zone.to_string(), machine_type.to_string());
        st.capacity.remove(&key);
        st.spot_capacity.remove(&key);
    }

    /// Free on-demand capacity of `machine_type` in `zone`; `None` when unlimited.
    pub fn free_capacity(&self, zone: &str, machine_type: &str) -> Option<u32> {
        self.lock()
            .capacity
            .get(&(zone.to_string(), machine_type.to_string()))
            .copied()
    }

    /// Adds a fault rule (after the ones already there).
    pub fn inject(&self, rule: FaultRule) {
        self.lock().faults.push(rule);
    }

    /// The fault rules, with the calls each has left.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.clone()
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// The requests routed to `call`, in order.
    pub fn requests_of(&self, call: Call) -> Vec<RequestRecord> {
        self.lock()
            .log
            .iter()
            .filter(|r| r.call == Some(call))
            .cloned()
            .collect()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Every instance, in the order they were made.
    pub fn instances(&self) -> Vec<InstanceView> {
        self.lock()
            .instances
            .iter()
            .map(|i| InstanceView {
                zone: i.zone.clone(),
                name: i.name.clone(),
                status: i.json["status"].as_str().unwrap_or("").to_string(),
                machine_type: i.machine_type.clone(),
                labels: labels(&i.json),
                spot: i.pool == Pool::Spot,
                reservation: match &i.pool {
                    Pool::Reservation(r) => Some(r.clone()),
                    _ => None,
                },
                json: i.json.clone(),
            })
            .collect()
    }

    /// Every reservation, in the order they were made.
    pub fn reservations(&self) -> Vec<ReservationView> {
        self.lock()
            .reservations
            .iter()
            .map(|r| ReservationView {
                zone: r.zone.clone(),
                name: r.name.clone(),
                machine_type: r.machine_type.clone(),
                count: r.count,
                in_use: r.in_use,
                status: r.status.to_string(),
                specific_required: r.specific_required,
                json: State::reservation_json(r),
            })
            .collect()
    }

    /// Every persistent disk.
    pub fn disks(&self) -> Vec<DiskView> {
        self.lock()
            .disks
            .iter()
            .map(|d| DiskView {
                zone: d.zone.clone(),
                name: d.name.clone(),
                attached_to: d.attached_to.clone(),
                auto_delete: d.auto_delete,
                json: d.json.clone(),
            })
            .collect()
    }

    /// Every firewall rule, as `firewalls.get` shows it.
    pub fn firewalls(&self) -> Vec<Value> {
        self.lock()
            .firewalls
            .iter()
            .map(|f| f.json.clone())
            .collect()
    }

    /// Everything that carries label `key` = `value` (instances and disks; reservations and
    /// firewalls have no labels), one line per resource: `instance us-central1-a/qa-1 RUNNING`,
    /// `disk us-central1-a/qa-1`. Empty means nothing with that label is left.
    pub fn with_label(&self, key: &str, value: &str) -> Vec<String> {
        let st = self.lock();
        let has = |v: &Value| labels(v).get(key).map(String::as_str) == Some(value);
        let mut out: Vec<String> = st
            .instances
            .iter()
            .filter(|i| has(&i.json))
            .map(|i| {
                format!(
                    "instance {}/{} {}",
                    i.zone,
                    i.name,
                    i.json["status"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.extend(
            st.disks
                .iter()
                .filter(|d| has(&d.json))
                .map(|d| format!("disk {}/{}", d.zone, d.name)),
        );
        out
    }

    /// Everything whose name starts with `prefix` (instances, disks, reservations, firewalls),
    /// one line per resource — how to find reservations and firewalls, which carry no labels.
    pub fn named(&self, prefix: &str) -> Vec<String> {
        let st = self.lock();
        let mut out = Vec::new();
        for i in st.instances.iter().filter(|i| i.name.starts_with(prefix)) {
            out.push(format!("instance {}/{}", i.zone, i.name));
        }
        for d in st.disks.iter().filter(|d| d.name.starts_with(prefix)) {
            out.push(format!("disk {}/{}", d.zone, d.name));
        }
        for r in st
            .reservations
            .iter()
            .filter(|r| r.name.starts_with(prefix))
        {
            out.push(format!("reservation {}/{}", r.zone, r.name));
        }
        for f in st.firewalls.iter().filter(|f| f.name.starts_with(prefix)) {
            out.push(format!("firewall {}", f.name));
        }
        out
    }

    /// From now on, the answers of `call` wait once its work is done, until
    /// [`release_held`](GceEmulator::release_held): a test can then kill the client inside the
    /// call, as a crash between the cloud's work and its answer would.
    pub fn hold_answers_of(&self, call: Call) {
        self.lock().hold_after.insert(call);
    }

    /// The calls whose answers are being held, in order.
    pub fn held(&self) -> Vec<Call> {
        self.lock().held.clone()
    }

    /// Lets every held answer go, and holds no more.
    pub fn release_held(&self) {
        let mut st = self.lock();
        st.hold_gate
            .store(false, std::sync::atomic::Ordering::SeqCst);
        st.hold_gate = Arc::new(std::sync::atomic::AtomicBool::new(true));
        st.hold_after.clear();
        st.held.clear();
    }

    /// Operations not yet `DONE`.
    pub fn pending_operations(&self) -> usize {
        self.lock().operations.iter().filter(|o| !o.done).count()
    }

    /// Finishes every running operation now, as if each had been polled to the end.
    pub fn settle(&self) {
        self.lock().settle();
    }
}
