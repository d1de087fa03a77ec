//! `reservations` (zonal, specific-SKU): insert, get, delete, list, aggregatedList, update.
//!
//! An accepted insert takes `specificReservation.count` units of the zone's on-demand capacity
//! for the machine type at once and shows the reservation `CREATING` until its operation is done,
//! then `READY`. Without enough capacity nothing is made and the operation ends `DONE` with
//! `ZONE_RESOURCE_POOL_EXHAUSTED` (503). Instances that consume it raise `inUseCount`; deleting
//! it gives its unused part back to the zone. Reservations have no labels in v1; `description`
//! and `deleteAtTime`/`deleteAfterDuration` are kept and shown as sent (the emulator does not
//! delete them at that time).

use serde_json::{Value, json};

use super::router::{Ctx, zonal_aggregated_list, zonal_list};
use super::state::{Effect, Reservation, Scope, State, Target};
use super::wire::{self, OpError, get_str};
use crate::http::Response;

/// `POST …/zones/{zone}/reservations`.
pub(crate) fn insert(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let zone = ctx.zone().to_string();
    let body = &ctx.body;
    if !body.is_object() {
        return wire::invalid_field("resource", "", "The reservation resource is required.");
    }
    let name = get_str(body, "name").unwrap_or("").to_string();
    if !wire::valid_name(&name) {
        return wire::invalid_field(
            "resource.name",
            &name,
            "Must be a match of regex '[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?'",
        );
    }
    let Some(spec) = body.get("specificReservation").filter(|s| s.is_object()) else {
        return wire::invalid_field(
            "resource.specificReservation",
            "",
            "A specific reservation is required.",
        );
    };
    let count = match spec.get("count").map(wire::int64) {
        Some(Some(n)) if (1..=i64::from(u32::MAX)).contains(&n) => n as u32,
        _ => {
            return wire::invalid_field(
                "resource.specificReservation.count",
                &spec.get("count").map(Value::to_string).unwrap_or_default(),
                "Must be a positive int64.",
            );
        }
    };
    let props = spec.get("instanceProperties").cloned().unwrap_or(json!({}));
    let mt_field = get_str(&props, "machineType").unwrap_or("");
    let machine_type = wire::last_segment(mt_field).to_string();
    if machine_type.is_empty() || !st.offers(&zone, &machine_type) {
        return wire::invalid_field(
            "resource.specificReservation.instanceProperties.machineType",
            mt_field,
            &format!("Machine type with name '{machine_type}' does not exist in zone '{zone}'."),
        );
    }
    if let Some(d) = body.get("deleteAfterDuration")
        && d.get("seconds")
            .map(wire::int64)
            .is_some_and(|s| s.is_none())
    {
        return wire::invalid_field(
            "resource.deleteAfterDuration.seconds",
            &d["seconds"].to_string(),
            "Must be an int64.",
        );
    }
    if st.reservation_mut(&zone, &name).is_some() {
        return wire::already_exists(&project, &format!("zones/{zone}/reservations/{name}"));
    }
    let id = st.id();
    let link = wire::link(&project, &format!("zones/{zone}/reservations/{name}"));
    let error = ctx.fault_error(&project, &machine_type).or_else(|| {
        (!st.take(false, &zone, &machine_type, count)).then(|| {
            OpError::new(
                &project,
                &zone,
                &machine_type,
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                "",
                503,
            )
        })
    });
    if error.is_none() {
        let mut v = body.clone();
        let specific_required = body.get("specificReservationRequired") == Some(&json!(true));
        let mut spec = spec.clone();
        spec["count"] = json!(count.to_string());
        spec["assuredCount"] = json!(count.to_string());
        spec["instanceProperties"] = props.clone();
        let obj = v.as_object_mut().expect("checked above");
        for (k, val) in [
            ("kind", json!("compute#reservation")),
            ("id", json!(id.to_string())),
            ("creationTimestamp", json!(wire::now_rfc3339())),
            ("selfLink", json!(link)),
            (
                "zone",
                json!(wire::link(&project, &format!("zones/{zone}"))),
            ),
            ("specificReservation", spec),
            ("specificReservationRequired", json!(specific_required)),
            ("resourceStatus", json!({"specificSkuAllocation": {}})),
        ] {
            obj.insert(k.to_string(), val);
        }
        obj.entry("shareSettings")
            .or_insert(json!({"shareType": "LOCAL"}));
        obj.entry("reservationSharingPolicy")
            .or_insert(json!({"serviceShareType": "DISALLOW_ALL"}));
        st.reservations.push(Reservation {
            zone: zone.clone(),
            name: name.clone(),
            machine_type,
            count,
            in_use: 0,
            specific_required,
            json: v,
            status: "CREATING",
        });
    }
    let effect = Effect::ReservationCreated {
        zone: zone.clone(),
        name,
    };
    let op = st.start_operation(
        Target {
            scope: Scope::Zone(zone),
            op_type: "insert",
            link,
            id,
        },
        effect,
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

/// `GET …/zones/{zone}/reservations/{reservation}`.
pub(crate) fn get(st: &mut State, ctx: &Ctx<'_>) -> Response {
    match st
        .reservations
        .iter()
        .find(|r| r.zone == ctx.zone() && r.name == ctx.name())
    {
        Some(r) => Response::json(200, &State::reservation_json(r)),
        None => wire::not_found(
            st.project(),
            &format!("zones/{}/reservations/{}", ctx.zone(), ctx.name()),
        ),
    }
}

/// `DELETE …/zones/{zone}/reservations/{reservation}`: `DELETING` until its operation is done.
pub(crate) fn delete(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let (zone, name) = (ctx.zone().to_string(), ctx.name().to_string());
    let error = ctx.fault_error(&project, "");
    let Some(r) = st.reservation_mut(&zone, &name) else {
        return wire::not_found(&project, &format!("zones/{zone}/reservations/{name}"));
    };
    let id: u64 = r.json["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let link = r.json["selfLink"].as_str().unwrap_or("").to_string();
    if error.is_none() {
        r.status = "DELETING";
    }
    let op = st.start_operation(
        Target {
            scope: Scope::Zone(zone.clone()),
            op_type: "delete",
            link,
            id,
        },
        Effect::ReservationDeleted { zone, name },
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

/// The fields `update` may change: when the reservation ends, and its description.
const UPDATABLE: &[&str] = &["deleteAtTime", "deleteAfterDuration", "description"];

/// `PATCH …/zones/{zone}/reservations/{reservation}?updateMask=…` (or `paths=…`): the fields the
/// mask names are copied from the body (only [`UPDATABLE`] ones; a resize is its own method).
pub(crate) fn update(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let (zone, name) = (ctx.zone().to_string(), ctx.name().to_string());
    let mask: Vec<String> = ctx
        .req
        .query
        .iter()
        .filter(|(k, _)| k == "updateMask" || k == "paths")
        .flat_map(|(_, v)| v.split(',').map(|f| f.trim().to_string()))
        .filter(|f| !f.is_empty())
        .collect();
    if mask.is_empty() {
        return wire::invalid_field("updateMask", "", "At least one field must be updated.");
    }
    if let Some(bad) = mask.iter().find(|f| !UPDATABLE.contains(&f.as_str())) {
        return wire::invalid_field(
            "updateMask",
            bad,
            &format!("Only {} can be updated.", UPDATABLE.join(", ")),
        );
    }
    let error = ctx.fault_error(&project, "");
    let Some(r) = st.reservation_mut(&zone, &name) else {
        return wire::not_found(&project, &format!("zones/{zone}/reservations/{name}"));
    };
    let id: u64 = r.json["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let link = r.json["selfLink"].as_str().unwrap_or("").to_string();
    if error.is_none()
        && let Some(obj) = r.json.as_object_mut()
    {
        for f in &mask {
            match ctx.body.get(f) {
                Some(v) => obj.insert(f.clone(), v.clone()),
                None => obj.remove(f),
            };
        }
    }
    let op = st.start_operation(
        Target {
            scope: Scope::Zone(zone),
            op_type: "update",
            link,
            id,
        },
        Effect::None,
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

/// The JSON of every reservation in `zone`.
fn in_zone(st: &State, zone: &str) -> Vec<Value> {
    st.reservations
        .iter()
        .filter(|r| r.zone == zone)
        .map(State::reservation_json)
        .collect()
}

/// `GET …/zones/{zone}/reservations`.
pub(crate) fn list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    zonal_list(st, ctx, "reservations", "reservation", in_zone)
}

/// `GET …/aggregated/reservations`.
pub(crate) fn aggregated_list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    zonal_aggregated_list(st, ctx, "reservations", "reservation", in_zone)
}
