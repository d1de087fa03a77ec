//! Capacity: reserving it before machines are made (one request per backend and region), keeping
//! the reservations alive while the run lives, and releasing what the run's machines shared.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::super::builder::ReservationKeepalive;
use super::super::context::{ActiveRun, budget, by_backend};
use crate::backend::{BackendName, SweepScope};
use crate::capacity::{CapacityError, CapacityRequest, CapacityReservation, RESERVATION_KIND};
use crate::dag::TaskResult;
use crate::journal::ResourceLedger;
use crate::stages::{self, MachineInstance};
use crate::types::{ResourceState, TestId, Verdict};

/// One reservation request in the making: instance counts by type, and zones in preference
/// order.
#[derive(Default)]
struct Wanted {
    needs: BTreeMap<String, u32>,
    zones: Vec<String>,
}

impl ActiveRun {
    /// The backends `inst` may land on, its own first.
    fn alternatives(&self, inst: &MachineInstance) -> Vec<BackendName> {
        let spec = &self.loaded.plan.machines[inst.spec_index];
        std::iter::once(inst.backend)
            .chain(spec.fallback.iter().copied())
            .collect()
    }

    /// The machine as it stands now: on the backend it has fallen back to, if it has.
    pub(crate) fn current(&self, inst: &MachineInstance) -> MachineInstance {
        let i = self
            .state()
            .alternative
            .get(&inst.name)
            .copied()
            .unwrap_or(0);
        let mut now = inst.clone();
        if let Some(b) = self.alternatives(inst).get(i) {
            now.backend = *b;
        }
        now
    }

    /// Moves `inst` to its next backend because of `why` (what its current one said); `false`
    /// when it has none left.
    pub(crate) fn fall_back(&self, inst: &MachineInstance, why: String) -> bool {
        let alternatives = self.alternatives(inst);
        let mut g = self.state();
        let i = g.alternative.get(&inst.name).copied().unwrap_or(0);
        if i + 1 >= alternatives.len() {
            return false;
        }
        tracing::info!(
            machine = %inst.name,
            from = %alternatives[i],
            to = %alternatives[i + 1],
            "no capacity ({why}); trying the next backend"
        );
        g.alternative.insert(inst.name.clone(), i + 1);
        // What it reserved there is not where it goes now.
        g.placements.remove(&inst.name);
        g.tried
            .entry(inst.name.clone())
            .or_default()
            .push(format!("{}: {why}", alternatives[i]));
        true
    }

    /// The backend and region of the reservation a machine is launched into, if it asked for
    /// one: its own region, or the reservation backend's default.
    pub(crate) fn reservation_key(
        &self,
        inst: &MachineInstance,
    ) -> Option<(BackendName, Option<String>)> {
        let inst = &self.current(inst);
        let need = stages::reservation_need(&self.loaded.plan, inst, &self.engine.backends)?;
        let region = need.region.or_else(|| {
            self.engine
                .backends
                .reservation(inst.backend)
                .and_then(|r| r.default_region())
        });
        Some((inst.backend, region))
    }

    /// What the machines ask to have reserved, by backend and region, leaving out the requests
    /// in `placed`; with the machines of each request.
    fn wanted(
        &self,
        placed: &BTreeSet<(BackendName, Option<String>)>,
    ) -> BTreeMap<(BackendName, Option<String>), (Wanted, Vec<MachineInstance>)> {
        let mut wanted: BTreeMap<_, (Wanted, Vec<MachineInstance>)> = BTreeMap::new();
        for inst in &self.machines {
            let now = self.current(inst);
            let Some(need) =
                stages::reservation_need(&self.loaded.plan, &now, &self.engine.backends)
            else {
                continue;
            };
            let key = self.reservation_key(inst).expect("the machine has a need");
            if placed.contains(&key) {
                continue;
            }
            let (w, machines) = wanted.entry(key).or_default();
            *w.needs.entry(need.instance_type).or_default() += 1;
            for z in need.zones {
                if !w.zones.contains(&z) {
                    w.zones.push(z);
                }
            }
            machines.push(inst.clone());
        }
        wanted
    }

    pub(crate) async fn reserve(&self) -> TaskResult {
        let end = time::OffsetDateTime::now_utc()
            + budget(&self.loaded.plan)
            + self.engine.keepalive.margin;
        let mut placed = BTreeSet::new();
        let mut kept_alive: BTreeSet<BackendName> = BTreeSet::new();
        let stop = CancellationToken::new();
        let mut several = false;
        loop {
            let wanted = self.wanted(&placed);
            if wanted.is_empty() {
                return TaskResult::pass();
            }
            several |= wanted.len() > 1 || !placed.is_empty();
            // The keepalives start before the first request of each backend, so that whatever
            // is reserved is extended even when a later request fails.
            if kept_alive.is_empty()
                && let Some(old) = self.state().keepalive.replace(stop.clone())
            {
                old.cancel();
            }
            for (backend, _) in wanted.keys() {
                if !kept_alive.insert(*backend) {
                    continue;
                }
                let r = self
                    .engine
                    .backends
                    .reservation(*backend)
                    .cloned()
                    .expect("needs one");
                tokio::spawn(keep_reservations_alive(
                    r,
                    self.ctx.test_id.clone(),
                    end.unix_timestamp(),
                    self.engine.keepalive,
                    stop.clone(),
                ));
            }
            let mut moved = false;
            for ((backend, region), (w, machines)) in wanted {
                let r = self
                    .engine
                    .backends
                    .reservation(backend)
                    .cloned()
                    .expect("needs one");
                let request = CapacityRequest {
                    test_id: self.ctx.test_id.clone(),
                    region: region.clone(),
                    needs: w.needs,
                    zones: w.zones,
                    end_unix: Some(end.unix_timestamp()),
                };
                match r.reserve(&request, &*self.journal).await {
                    Ok(p) => {
                        let mut g = self.state();
                        for m in &machines {
                            g.placements.insert(m.name.clone(), p.clone());
                        }
                        drop(g);
                        placed.insert((backend, region));
                    }
                    // Out of capacity in every zone: the machines that have another backend
                    // go there (the fallback released what this request got on the way).
                    Err(e @ CapacityError::NoCapacity { .. })
                        if machines
                            .iter()
                            .all(|m| self.alternatives(m).len() > self.position(m) + 1) =>
                    {
                        let why = match &region {
                            Some(region) => format!("{region}: {e}"),
                            None => e.to_string(),
                        };
                        for m in &machines {
                            self.fall_back(m, why.clone());
                        }
                        moved = true;
                    }
                    Err(e) => {
                        let msg = match (&region, several) {
                            (Some(region), true) => format!("{region}: {e}"),
                            _ => e.to_string(),
                        };
                        return TaskResult::new(Verdict::Error, msg);
                    }
                }
            }
            if !moved {
                return TaskResult::pass();
            }
        }
    }

    /// Reserves for one machine that came to a backend after the reserve task, as `key` says
    /// (its backend and region).
    pub(crate) async fn reserve_one(
        &self,
        inst: &MachineInstance,
        key: &(BackendName, Option<String>),
    ) -> Result<crate::capacity::Placement, CapacityError> {
        let need = stages::reservation_need(&self.loaded.plan, inst, &self.engine.backends)
            .expect("the machine has a need");
        let r = self
            .engine
            .backends
            .reservation(key.0)
            .cloned()
            .expect("needs one");
        let end = time::OffsetDateTime::now_utc()
            + budget(&self.loaded.plan)
            + self.engine.keepalive.margin;
        let request = CapacityRequest {
            test_id: self.ctx.test_id.clone(),
            region: key.1.clone(),
            needs: [(need.instance_type, 1)].into_iter().collect(),
            zones: need.zones,
            end_unix: Some(end.unix_timestamp()),
        };
        r.reserve(&request, &*self.journal).await
    }

    /// Which of its backends `inst` is on now (0: its own).
    fn position(&self, inst: &MachineInstance) -> usize {
        self.state()
            .alternative
            .get(&inst.name)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) async fn release(&self) -> TaskResult {
        if let Some(stop) = self.state().keepalive.take() {
            stop.cancel();
        }
        let mut problems = Vec::new();
        // What the machines of a backend shared (a cloud's key pair, security group, placement
        // group) goes once their teardowns are over, unless one of them was kept, which needs it.
        let snap = self.journal.snapshot();
        let shared = by_backend(snap.live_resources().filter(|r| r.machine.is_none()));
        for (backend, resources) in shared {
            let kept_here = {
                let g = self.state();
                g.machines
                    .values()
                    .any(|m| m.backend == backend && g.kept.contains(&m.name))
            };
            if kept_here {
                for r in &resources {
                    if let Err(e) = self.journal.kept(&r.key).await {
                        problems.push(e.to_string());
                    }
                }
                continue;
            }
            let Some(p) = self.engine.backends.provisioner(backend).cloned() else {
                continue;
            };
            if let Err(e) = p.destroy(&resources, &*self.journal).await {
                problems.push(e.to_string());
            }
        }
        for b in self.engine.backends.iter() {
            let Some(r) = b.reservation() else {
                continue;
            };
            match r
                .cancel(&self.ctx.test_id, SweepScope::Run(&snap.resources))
                .await
            {
                Ok(_) => end_reservation_records(&*self.journal, r.backend()).await,
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            TaskResult::pass()
        } else {
            let msg = problems.join("; ");
            self.state().cleanup_failures.push(msg.clone());
            TaskResult::new(Verdict::Error, msg)
        }
    }
}

/// Moves the end of the run's reservations forward while the run lives (until `stop`).
async fn keep_reservations_alive(
    r: Arc<dyn CapacityReservation>,
    test_id: TestId,
    mut end_unix: i64,
    k: ReservationKeepalive,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(k.interval) => {}
        }
        let want = time::OffsetDateTime::now_utc().unix_timestamp()
            + (k.margin + k.interval).as_secs() as i64;
        if want <= end_unix {
            continue;
        }
        match r.extend(&test_id, want).await {
            Ok(()) => {
                tracing::debug!(test_id = %test_id.0, end_unix = want, "reservations extended");
                end_unix = want;
            }
            Err(e) => tracing::warn!("extending the run's capacity reservations: {e}"),
        }
    }
}

/// After a successful cancel by test id, the journal's reservation records of that backend are
/// over too.
pub(crate) async fn end_reservation_records(ledger: &dyn ResourceLedger, backend: BackendName) {
    for r in ledger.resources() {
        if r.backend == backend && r.kind == RESERVATION_KIND && r.state != ResourceState::Destroyed
        {
            let _ = ledger.destroyed(&r.key).await;
        }
    }
}
