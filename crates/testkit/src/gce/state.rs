//! Everything the emulator holds: resources, operations, capacity, injected faults and the
//! request log, behind one mutex. Resources are kept as the JSON the API returns for them, plus
//! the few typed fields the emulator's rules need.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::config::{Call, FaultRule, GceConfig, RequestRecord};
use super::wire::{self, OpError};

/// Which pool an instance's capacity came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pool {
    /// The zone's on-demand capacity for its machine type.
    OnDemand,
    /// The zone's Spot capacity for its machine type.
    Spot,
    /// A reservation of that name in its zone (counted in its `inUseCount`).
    Reservation(String),
}

/// An instance.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub zone: String,
    pub name: String,
    pub machine_type: String,
    pub pool: Pool,
    /// `get`s still answered `STAGING` once its insert is done.
    pub boot_reads_left: u32,
    /// The resource as `instances.get` returns it (`status` kept current).
    pub json: Value,
}

/// A persistent disk (made by an instance insert; kept after the instance when not auto-delete).
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub zone: String,
    pub name: String,
    /// The instance it is attached to, if any.
    pub attached_to: Option<String>,
    pub auto_delete: bool,
    pub json: Value,
}

/// A zonal reservation.
#[derive(Debug, Clone)]
pub(crate) struct Reservation {
    pub zone: String,
    pub name: String,
    pub machine_type: String,
    pub count: u32,
    pub in_use: u32,
    pub specific_required: bool,
    /// The resource as `reservations.get` returns it, without the live fields (`status`,
    /// `inUseCount`), which are written when it is shown.
    pub json: Value,
    /// `CREATING`, `READY` or `DELETING`.
    pub status: &'static str,
}

/// A firewall rule.
#[derive(Debug, Clone)]
pub(crate) struct Firewall {
    pub name: String,
    pub json: Value,
}

/// Where an operation lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Zone(String),
    Global,
}

/// What an operation acts on.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Where the operation lives.
    pub scope: Scope,
    /// `operationType`: `insert`, `delete`, `setLabels`.
    pub op_type: &'static str,
    /// `targetLink`.
    pub link: String,
    /// `targetId`.
    pub id: u64,
}

/// What happens when an operation finishes without error.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    None,
    InstanceCreated { zone: String, name: String },
    InstanceDeleted { zone: String, name: String },
    ReservationCreated { zone: String, name: String },
    ReservationDeleted { zone: String, name: String },
    DiskDeleted { zone: String, name: String },
    FirewallDeleted { name: String },
}

/// A long-running operation.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub name: String,
    pub id: u64,
    pub scope: Scope,
    pub op_type: &'static str,
    pub target_link: String,
    pub target_id: u64,
    pub polls_left: u32,
    pub done: bool,
    pub error: Option<OpError>,
    pub effect: Effect,
    pub insert_time: String,
    pub end_time: Option<String>,
}

/// The emulator's state.
#[derive(Debug)]
pub(crate) struct State {
    pub cfg: GceConfig,
    next_id: u64,
    pub instances: Vec<Instance>,
    pub disks: Vec<Disk>,
    pub reservations: Vec<Reservation>,
    pub firewalls: Vec<Firewall>,
    pub operations: Vec<Operation>,
    /// (method, requestId) → operation name.
    pub request_ids: HashMap<(Call, String), String>,
    /// (zone, machine type) → free on-demand capacity; absent means unlimited.
    pub capacity: HashMap<(String, String), u32>,
    /// (zone, machine type) → free Spot capacity; absent means unlimited.
    pub spot_capacity: HashMap<(String, String), u32>,
    pub faults: Vec<FaultRule>,
    pub log: Vec<RequestRecord>,
    /// Methods whose answers wait, once their work is done, while `hold_gate` is true.
    pub hold_after: std::collections::HashSet<Call>,
    /// The held calls, in order.
    pub held: Vec<Call>,
    pub hold_gate: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl State {
    pub fn new(cfg: GceConfig) -> State {
        State {
            cfg,
            next_id: 1_000_000_000_000_000_000,
            instances: Vec::new(),
            disks: Vec::new(),
            reservations: Vec::new(),
            firewalls: Vec::new(),
            operations: Vec::new(),
            request_ids: HashMap::new(),
            capacity: HashMap::new(),
            spot_capacity: HashMap::new(),
            faults: Vec::new(),
            log: Vec::new(),
            hold_after: Default::default(),
            held: Vec::new(),
            hold_gate: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// A fresh numeric id (uint64, written as a string).
    pub fn id(&mut self) -> u64 {
        self.next_id += 7_919;
        self.next_id
    }

    pub fn project(&self) -> &str {
        &self.cfg.project
    }

    /// The region of a configured zone.
    pub fn region_of(&self, zone: &str) -> Option<String> {
        self.cfg
            .zones
            .iter()
            .find(|z| z.name == zone)
            .map(|z| z.region.clone())
    }

    /// Whether `zone` offers `machine_type`.
    pub fn offers(&self, zone: &str, machine_type: &str) -> bool {
        self.cfg
            .zones
            .iter()
            .any(|z| z.name == zone && z.machine_types.iter().any(|t| t == machine_type))
    }

    /// Takes `n` from a capacity pool; false (and nothing taken) when it has fewer.
    pub fn take(&mut self, spot: bool, zone: &str, machine_type: &str, n: u32) -> bool {
        let pool = if spot {
            &mut self.spot_capacity
        } else {
            &mut self.capacity
        };
        match pool.get_mut(&(zone.to_string(), machine_type.to_string())) {
            None => true,
            Some(free) if *free >= n => {
                *free -= n;
                true
            }
            Some(_) => false,
        }
    }

    /// Gives `n` back to a capacity pool (a no-op for an unlimited one).
    pub fn give_back(&mut self, spot: bool, zone: &str, machine_type: &str, n: u32) {
        let pool = if spot {
            &mut self.spot_capacity
        } else {
            &mut self.capacity
        };
        if let Some(free) = pool.get_mut(&(zone.to_string(), machine_type.to_string())) {
            *free += n;
        }
    }

    pub fn instance_mut(&mut self, zone: &str, name: &str) -> Option<&mut Instance> {
        self.instances
            .iter_mut()
            .find(|i| i.zone == zone && i.name == name)
    }

    pub fn reservation_mut(&mut self, zone: &str, name: &str) -> Option<&mut Reservation> {
        self.reservations
            .iter_mut()
            .find(|r| r.zone == zone && r.name == name)
    }

    /// The first fault rule for `call` in `zone` with calls left, used up by one.
    pub fn fire_fault(&mut self, call: Call, zone: Option<&str>) -> Option<FaultRule> {
        let rule = self.faults.iter_mut().find(|r| {
            r.call == call && r.times > 0 && r.zone.as_deref().is_none_or(|z| Some(z) == zone)
        })?;
        rule.times -= 1;
        Some(rule.clone())
    }

    /// Records a new operation and answers with it. With `operation_polls` 0 it is done at once
    /// (and its effect applied); an `error` means it will end with that error and no effect.
    pub fn start_operation(
        &mut self,
        target: Target,
        effect: Effect,
        error: Option<OpError>,
        request_id: Option<(Call, String)>,
    ) -> Value {
        let Target {
            scope,
            op_type,
            link: target_link,
            id: target_id,
        } = target;
        let id = self.id();
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let name = format!("operation-{millis}-{:013x}-{:08x}", id, id % 0xffff_ffff);
        let op = Operation {
            name: name.clone(),
            id,
            scope,
            op_type,
            target_link,
            target_id,
            polls_left: self.cfg.operation_polls,
            done: false,
            error,
            effect,
            insert_time: wire::now_rfc3339(),
            end_time: None,
        };
        self.operations.push(op);
        if let Some(key) = request_id {
            self.request_ids.insert(key, name.clone());
        }
        if self.cfg.operation_polls == 0 {
            self.finish(&name);
        }
        let first = self.cfg.operation_polls >= 2;
        self.operation_json(&name, first)
    }

    /// One poll of an operation: a step closer to `DONE`, finishing it on the last.
    pub fn poll(&mut self, name: &str) {
        let Some(op) = self.operations.iter_mut().find(|o| o.name == name) else {
            return;
        };
        if op.done {
            return;
        }
        op.polls_left = op.polls_left.saturating_sub(1);
        if op.polls_left == 0 {
            self.finish(name);
        }
    }

    /// Finishes an operation now and applies its effect (unless it carries an error).
    pub fn finish(&mut self, name: &str) {
        let Some(op) = self.operations.iter_mut().find(|o| o.name == name) else {
            return;
        };
        if op.done {
            return;
        }
        op.done = true;
        op.polls_left = 0;
        op.end_time = Some(wire::now_rfc3339());
        if op.error.is_some() {
            return;
        }
        let effect = op.effect.clone();
        self.apply(effect);
    }

    /// Finishes every operation still running.
    pub fn settle(&mut self) {
        let names: Vec<String> = self
            .operations
            .iter()
            .filter(|o| !o.done)
            .map(|o| o.name.clone())
            .collect();
        for n in names {
            self.finish(&n);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::InstanceCreated { zone, name } => {
                let boot = self.cfg.boot_polls;
                let now = wire::now_rfc3339();
                if let Some(i) = self.instance_mut(&zone, &name) {
                    i.boot_reads_left = boot;
                    let status = if boot == 0 { "RUNNING" } else { "STAGING" };
                    i.json["status"] = json!(status);
                    if boot == 0 {
                        i.json["lastStartTimestamp"] = json!(now);
                    }
                }
            }
            Effect::InstanceDeleted { zone, name } => {
                let Some(pos) = self
                    .instances
                    .iter()
                    .position(|i| i.zone == zone && i.name == name)
                else {
                    return;
                };
                let inst = self.instances.remove(pos);
                match &inst.pool {
                    Pool::OnDemand => self.give_back(false, &zone, &inst.machine_type, 1),
                    Pool::Spot => self.give_back(true, &zone, &inst.machine_type, 1),
                    Pool::Reservation(r) => {
                        if let Some(r) = self.reservation_mut(&zone, r) {
                            r.in_use = r.in_use.saturating_sub(1);
                        }
                    }
                }
                self.disks.retain(|d| {
                    !(d.zone == zone
                        && d.attached_to.as_deref() == Some(name.as_str())
                        && d.auto_delete)
                });
                for d in self
                    .disks
                    .iter_mut()
                    .filter(|d| d.zone == zone && d.attached_to.as_deref() == Some(name.as_str()))
                {
                    d.attached_to = None;
                    if let Some(o) = d.json.as_object_mut() {
                        o.remove("users");
                    }
                }
            }
            Effect::ReservationCreated { zone, name } => {
                if let Some(r) = self.reservation_mut(&zone, &name) {
                    r.status = "READY";
                }
            }
            Effect::ReservationDeleted { zone, name } => {
                let Some(pos) = self
                    .reservations
                    .iter()
                    .position(|r| r.zone == zone && r.name == name)
                else {
                    return;
                };
                let r = self.reservations.remove(pos);
                // The unused part goes back to the zone; instances that used it keep running and
                // now hold their capacity as on-demand instances.
                self.give_back(
                    false,
                    &zone,
                    &r.machine_type,
                    r.count - r.in_use.min(r.count),
                );
                for i in self.instances.iter_mut().filter(|i| i.zone == zone) {
                    if i.pool == Pool::Reservation(name.clone()) {
                        i.pool = Pool::OnDemand;
                    }
                }
            }
            Effect::DiskDeleted { zone, name } => {
                self.disks.retain(|d| !(d.zone == zone && d.name == name));
            }
            Effect::FirewallDeleted { name } => {
                self.firewalls.retain(|f| f.name != name);
            }
        }
    }

    /// The operation as the API shows it. `pending` shows a running operation as `PENDING`
    /// (the answer to the call that started it, when it needs more than one poll).
    pub fn operation_json(&self, name: &str, pending: bool) -> Value {
        let op = self
            .operations
            .iter()
            .find(|o| o.name == name)
            .expect("operation exists");
        let project = self.project();
        let scope_path = match &op.scope {
            Scope::Zone(z) => format!("zones/{z}"),
            Scope::Global => "global".to_string(),
        };
        let status = match (op.done, pending) {
            (true, _) => "DONE",
            (false, true) => "PENDING",
            (false, false) => "RUNNING",
        };
        let mut v = json!({
            "kind": "compute#operation",
            "id": op.id.to_string(),
            "name": op.name,
            "operationType": op.op_type,
            "targetLink": op.target_link,
            "targetId": op.target_id.to_string(),
            "status": status,
            "user": format!("qa-run@{project}.iam.gserviceaccount.com"),
            "progress": if op.done { 100 } else { 0 },
            "insertTime": op.insert_time,
            "startTime": op.insert_time,
            "selfLink": wire::link(project, &format!("{scope_path}/operations/{}", op.name)),
        });
        if let Scope::Zone(z) = &op.scope {
            v["zone"] = json!(wire::link(project, &format!("zones/{z}")));
        }
        if op.done {
            v["endTime"] = json!(op.end_time.clone().unwrap_or_default());
            if let Some(e) = &op.error {
                e.write_into(&mut v);
            }
        }
        v
    }

    /// The reservation as the API shows it, live fields included.
    pub fn reservation_json(r: &Reservation) -> Value {
        let mut v = r.json.clone();
        v["status"] = json!(r.status);
        v["specificReservation"]["inUseCount"] = json!(r.in_use.to_string());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::FaultRule;
    use super::*;

    fn target() -> Target {
        Target {
            scope: Scope::Global,
            op_type: "insert",
            link: "l".into(),
            id: 1,
        }
    }

    #[test]
    fn capacity_pools_are_separate_and_unlimited_until_set() {
        let mut st = State::new(GceConfig::default());
        assert!(st.take(false, "z", "t", 100));
        st.capacity.insert(("z".into(), "t".into()), 1);
        assert!(st.take(true, "z", "t", 5), "Spot is its own pool");
        assert!(st.take(false, "z", "t", 1));
        assert!(!st.take(false, "z", "t", 1));
        st.give_back(false, "z", "t", 1);
        assert_eq!(st.capacity[&("z".to_string(), "t".to_string())], 1);
    }

    #[test]
    fn operations_are_done_on_the_configured_poll() {
        let mut st = State::new(GceConfig::default().operation_polls(3));
        let op = st.start_operation(target(), Effect::None, None, None);
        assert_eq!(op["status"], "PENDING");
        let name = op["name"].as_str().unwrap().to_string();
        for want in ["RUNNING", "RUNNING", "DONE"] {
            st.poll(&name);
            assert_eq!(st.operation_json(&name, false)["status"], want);
        }
        let mut st = State::new(GceConfig::default().operation_polls(0));
        let op = st.start_operation(target(), Effect::None, None, None);
        assert_eq!(
            (op["status"].clone(), op["progress"].clone()),
            (json!("DONE"), json!(100))
        );
    }

    #[test]
    fn fault_rules_count_down_per_zone() {
        let mut st = State::new(GceConfig::default());
        st.faults.push(
            FaultRule::sync(Call::InstancesInsert, 503, "backendError")
                .zone("a")
                .times(2),
        );
        assert!(st.fire_fault(Call::InstancesInsert, Some("b")).is_none());
        assert!(st.fire_fault(Call::InstancesGet, Some("a")).is_none());
        assert!(st.fire_fault(Call::InstancesInsert, Some("a")).is_some());
        assert!(st.fire_fault(Call::InstancesInsert, Some("a")).is_some());
        assert!(st.fire_fault(Call::InstancesInsert, Some("a")).is_none());
    }
}
