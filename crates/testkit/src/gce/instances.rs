//! `instances`: insert, get, delete, list, aggregatedList, setLabels.
//!
//! An accepted insert makes the instance at once (`PROVISIONING`, visible to `get` and `list`)
//! with its disks, and takes one unit of capacity: from the reservation it targets
//! (`SPECIFIC_RESERVATION`), from a matching reservation that does not require targeting
//! (`ANY_RESERVATION`, the default), or else from the zone's on-demand or Spot pool. When there is
//! no room the insert is still accepted, nothing is made, and the operation ends `DONE` with
//! `ZONE_RESOURCE_POOL_EXHAUSTED` — where the real API reports stockouts. Request mistakes
//! (bad name, machine type the zone does not offer, no disks, bad labels, unknown or untargetable
//! reservation) are synchronous 400s.

use serde_json::{Value, json};

use super::disks;
use super::router::{Ctx, zonal_aggregated_list, zonal_list};
use super::state::{Effect, Instance, Pool, Scope, State, Target};
use super::wire::{self, OpError, fingerprint, get_str, labels_of, to_link};
use crate::http::Response;

/// The operation error code of an instance insert that targets a full reservation.
///
/// UNVERIFIED: the public reference does not name the code the real API uses here; a stockout
/// code is used so that callers treat it as "no capacity here".
pub const RESERVATION_FULL_CODE: &str = "ZONE_RESOURCE_POOL_EXHAUSTED";

const RESERVATION_KEY: &str = "compute.googleapis.com/reservation-name";

/// `zones/Z/machineTypes/T` (or a full link) → `(Z, T)`.
fn parse_machine_type(s: &str) -> Option<(String, String)> {
    let rest = s.strip_prefix(wire::LINK_BASE).unwrap_or(s);
    let rest = match rest.strip_prefix("projects/") {
        Some(r) => r.split_once('/')?.1,
        None => rest,
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["zones", z, "machineTypes", t] if !z.is_empty() && !t.is_empty() => {
            Some((z.to_string(), t.to_string()))
        }
        _ => None,
    }
}

/// `POST …/zones/{zone}/instances`.
pub(crate) fn insert(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let zone = ctx.zone().to_string();
    let region = st.region_of(&zone).unwrap_or_default();
    let body = &ctx.body;
    if !body.is_object() {
        return wire::invalid_field("resource", "", "The instance resource is required.");
    }
    let name = get_str(body, "name").unwrap_or("").to_string();
    if !wire::valid_name(&name) {
        return wire::invalid_field(
            "resource.name",
            &name,
            "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19})'",
        );
    }
    let mt_field = get_str(body, "machineType").unwrap_or("");
    let Some((mt_zone, machine_type)) = parse_machine_type(mt_field) else {
        return wire::invalid_field(
            "resource.machineType",
            mt_field,
            "Must be a URL to a machine type resource (zones/ZONE/machineTypes/TYPE).",
        );
    };
    if mt_zone != zone {
        return wire::invalid_field(
            "resource.machineType",
            mt_field,
            &format!("Machine type zone '{mt_zone}' does not match the instance zone '{zone}'."),
        );
    }
    if !st.offers(&zone, &machine_type) {
        return wire::invalid_field(
            "resource.machineType",
            mt_field,
            &format!("Machine type with name '{machine_type}' does not exist in zone '{zone}'."),
        );
    }
    let labels = match labels_of(
        body.get("labels").unwrap_or(&Value::Null),
        "resource.labels",
    ) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let disks = body
        .get("disks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if disks.is_empty() {
        return wire::invalid_field("resource.disks", "", "No disks are specified.");
    }
    let boots = disks
        .iter()
        .filter(|d| d.get("boot") == Some(&json!(true)))
        .count();
    if boots != 1 {
        return wire::invalid_field(
            "resource.disks",
            "",
            "Exactly one boot disk must be specified.",
        );
    }
    let nics = body
        .get("networkInterfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if nics.is_empty() {
        return wire::invalid_field(
            "resource.networkInterfaces",
            "",
            "At least one network interface is required.",
        );
    }
    let sched = body.get("scheduling").cloned().unwrap_or(json!({}));
    let spot = get_str(&sched, "provisioningModel") == Some("SPOT")
        || sched.get("preemptible") == Some(&json!(true));
    if spot
        && (sched.get("automaticRestart") == Some(&json!(true))
            || get_str(&sched, "onHostMaintenance") == Some("MIGRATE"))
    {
        return wire::invalid_field(
            "resource.scheduling",
            &sched.to_string(),
            "Spot and preemptible instances cannot be set to restart automatically or migrate on host maintenance.",
        );
    }
    if st.instance_mut(&zone, &name).is_some() {
        return wire::already_exists(&project, &format!("zones/{zone}/instances/{name}"));
    }
    // Which pool the instance will draw from; a bad reservation target is a request error.
    let affinity = body
        .get("reservationAffinity")
        .cloned()
        .unwrap_or(json!({}));
    let kind = get_str(&affinity, "consumeReservationType").unwrap_or("ANY_RESERVATION");
    let mut target: Option<String> = None;
    match kind {
        "SPECIFIC_RESERVATION" => {
            let key = get_str(&affinity, "key").unwrap_or("");
            let value = affinity
                .get("values")
                .and_then(Value::as_array)
                .and_then(|v| v.first())
                .and_then(Value::as_str)
                .unwrap_or("");
            let rname = wire::last_segment(value).to_string();
            let why = if key != RESERVATION_KEY {
                Some(format!("The key must be '{RESERVATION_KEY}'."))
            } else {
                match st.reservation_mut(&zone, &rname) {
                    None => Some(format!(
                        "Could not find the given reservation with the following name: {value}"
                    )),
                    Some(r) if !r.specific_required => Some(format!(
                        "Specified reservations [projects/{project}/reservations/{rname}] can not be targeted as specificReservationRequired is not set"
                    )),
                    Some(r) if r.machine_type != machine_type => Some(format!(
                        "The reservation '{rname}' holds {}, not {machine_type}.",
                        r.machine_type
                    )),
                    Some(_) => None,
                }
            };
            if let Some(why) = why {
                return wire::invalid_field(
                    "resource.reservationAffinity",
                    &affinity.to_string(),
                    &why,
                );
            }
            target = Some(rname);
        }
        "ANY_RESERVATION" | "NO_RESERVATION" => {}
        other => {
            return wire::invalid_field(
                "resource.reservationAffinity.consumeReservationType",
                other,
                "Must be one of ANY_RESERVATION, NO_RESERVATION, SPECIFIC_RESERVATION.",
            );
        }
    }
    let id = st.id();
    let link = wire::link(&project, &format!("zones/{zone}/instances/{name}"));
    let key = ctx.request_key();
    let failed = |st: &mut State, e: OpError| {
        let op = st.start_operation(
            Target {
                scope: Scope::Zone(zone.clone()),
                op_type: "insert",
                link: link.clone(),
                id,
            },
            Effect::None,
            Some(e),
            key.clone(),
        );
        Response::json(200, &op)
    };
    let (attached, new_disks) = match disks::plan(st, &zone, &name, &link, &disks) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(e) = ctx.fault_error(&project, &machine_type) {
        return failed(st, e);
    }
    let stockout = |code: &str, message: &str| {
        OpError::new(&project, &zone, &machine_type, code, message, 503)
    };
    let pool = if let Some(rname) = target {
        let r = st.reservation_mut(&zone, &rname).expect("checked above");
        if r.status != "READY" || r.in_use >= r.count {
            let msg = format!(
                "Specified reservation 'projects/{project}/zones/{zone}/reservations/{rname}' does not have available resources for the request."
            );
            return failed(st, stockout(RESERVATION_FULL_CODE, &msg));
        }
        r.in_use += 1;
        Pool::Reservation(rname)
    } else if let Some(r) = st.reservations.iter_mut().find(|r| {
        kind == "ANY_RESERVATION"
            && !spot
            && r.zone == zone
            && r.machine_type == machine_type
            && !r.specific_required
            && r.status == "READY"
            && r.in_use < r.count
    }) {
        r.in_use += 1;
        Pool::Reservation(r.name.clone())
    } else if st.take(spot, &zone, &machine_type, 1) {
        if spot { Pool::Spot } else { Pool::OnDemand }
    } else {
        return failed(st, stockout("ZONE_RESOURCE_POOL_EXHAUSTED", ""));
    };

    disks::attach(st, &zone, &name, &link, &disks, new_disks);

    let host = 2 + st.instances.len();
    let interfaces: Vec<Value> = nics
        .iter()
        .enumerate()
        .map(|(j, n)| {
            let access: Vec<Value> = n
                .get("accessConfigs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|ac| {
                            json!({
                                "kind": "compute#accessConfig",
                                "type": get_str(ac, "type").unwrap_or("ONE_TO_ONE_NAT"),
                                "name": get_str(ac, "name").unwrap_or("External NAT"),
                                "natIP": st.cfg.nat_ip,
                                "networkTier": get_str(ac, "networkTier").unwrap_or("PREMIUM"),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut nic = json!({
                "kind": "compute#networkInterface",
                "name": format!("nic{j}"),
                "network": to_link(&project, get_str(n, "network").unwrap_or("global/networks/default")),
                "subnetwork": to_link(&project, get_str(n, "subnetwork")
                    .unwrap_or(&format!("regions/{region}/subnetworks/default"))),
                "networkIP": format!("10.128.{j}.{host}"),
                "stackType": "IPV4_ONLY",
                "fingerprint": fingerprint(&json!([name, j])),
            });
            if !access.is_empty() {
                nic["accessConfigs"] = Value::Array(access);
            }
            nic
        })
        .collect();

    let mut scheduling = if spot {
        json!({"onHostMaintenance": "TERMINATE", "automaticRestart": false, "preemptible": false, "provisioningModel": "SPOT"})
    } else {
        json!({"onHostMaintenance": "MIGRATE", "automaticRestart": true, "preemptible": false, "provisioningModel": "STANDARD"})
    };
    if let (Some(s), Some(given)) = (scheduling.as_object_mut(), sched.as_object()) {
        s.extend(given.clone());
    }
    let mut metadata = json!({"kind": "compute#metadata"});
    if let Some(items) = body.get("metadata").and_then(|m| m.get("items")) {
        metadata["items"] = items.clone();
    }
    metadata["fingerprint"] = json!(fingerprint(&metadata));

    let mut v = body.clone();
    let obj = v.as_object_mut().expect("checked above");
    obj.remove("initializeParams");
    let now = wire::now_rfc3339();
    for (k, val) in [
        ("kind", json!("compute#instance")),
        ("id", json!(id.to_string())),
        ("creationTimestamp", json!(now)),
        ("name", json!(name)),
        (
            "zone",
            json!(wire::link(&project, &format!("zones/{zone}"))),
        ),
        ("selfLink", json!(link)),
        ("status", json!("PROVISIONING")),
        (
            "machineType",
            json!(wire::link(
                &project,
                &format!("zones/{zone}/machineTypes/{machine_type}")
            )),
        ),
        ("cpuPlatform", json!("Intel Cascade Lake")),
        ("disks", Value::Array(attached)),
        ("networkInterfaces", Value::Array(interfaces)),
        ("metadata", metadata),
        ("scheduling", scheduling),
        ("labels", json!(labels)),
        ("labelFingerprint", json!(fingerprint(&json!(labels)))),
        ("fingerprint", json!(fingerprint(&json!(id)))),
        (
            "reservationAffinity",
            if affinity.as_object().is_some_and(|a| !a.is_empty()) {
                affinity.clone()
            } else {
                json!({"consumeReservationType": "ANY_RESERVATION"})
            },
        ),
        ("startRestricted", json!(false)),
        (
            "deletionProtection",
            body.get("deletionProtection")
                .cloned()
                .unwrap_or(json!(false)),
        ),
        (
            "canIpForward",
            body.get("canIpForward").cloned().unwrap_or(json!(false)),
        ),
    ] {
        obj.insert(k.to_string(), val);
    }
    if labels.is_empty() {
        obj.remove("labels");
    }
    st.instances.push(Instance {
        zone: zone.clone(),
        name: name.clone(),
        machine_type,
        pool,
        boot_reads_left: 0,
        json: v,
    });
    let op = st.start_operation(
        Target {
            scope: Scope::Zone(zone.clone()),
            op_type: "insert",
            link: link.clone(),
            id,
        },
        Effect::InstanceCreated { zone, name },
        None,
        key,
    );
    Response::json(200, &op)
}

/// `GET …/zones/{zone}/instances/{instance}`; a `STAGING` instance boots a step per read.
pub(crate) fn get(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let Some(i) = st.instance_mut(ctx.zone(), ctx.name()) else {
        return wire::not_found(
            &project,
            &format!("zones/{}/instances/{}", ctx.zone(), ctx.name()),
        );
    };
    if i.json["status"] == "STAGING" {
        if i.boot_reads_left > 0 {
            i.boot_reads_left -= 1;
        } else {
            i.json["status"] = json!("RUNNING");
            i.json["lastStartTimestamp"] = json!(wire::now_rfc3339());
        }
    }
    Response::json(200, &i.json)
}

/// `DELETE …/zones/{zone}/instances/{instance}`: `STOPPING` until its operation is done, then
/// gone, with its auto-delete disks; its capacity goes back where it came from.
pub(crate) fn delete(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let (zone, name) = (ctx.zone().to_string(), ctx.name().to_string());
    let Some(i) = st.instance_mut(&zone, &name) else {
        return wire::not_found(&project, &format!("zones/{zone}/instances/{name}"));
    };
    let id: u64 = i.json["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let link = i.json["selfLink"].as_str().unwrap_or("").to_string();
    let mt = i.machine_type.clone();
    let error = ctx.fault_error(&project, &mt);
    if error.is_none() {
        let i = st.instance_mut(&zone, &name).expect("found above");
        i.json["status"] = json!("STOPPING");
    }
    let op = st.start_operation(
        Target {
            scope: Scope::Zone(zone.clone()),
            op_type: "delete",
            link,
            id,
        },
        Effect::InstanceDeleted { zone, name },
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

/// The JSON of every instance in `zone`.
fn in_zone(st: &State, zone: &str) -> Vec<Value> {
    st.instances
        .iter()
        .filter(|i| i.zone == zone)
        .map(|i| i.json.clone())
        .collect()
}

/// `GET …/zones/{zone}/instances`.
pub(crate) fn list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    zonal_list(st, ctx, "instances", "instance", in_zone)
}

/// `GET …/aggregated/instances`: every zone, filtered.
pub(crate) fn aggregated_list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    zonal_aggregated_list(st, ctx, "instances", "instance", in_zone)
}

/// `POST …/instances/{instance}/setLabels` with `{labels, labelFingerprint}`; a stale
/// fingerprint is 412 `conditionNotMet`.
pub(crate) fn set_labels(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let (zone, name) = (ctx.zone().to_string(), ctx.name().to_string());
    let labels = match labels_of(ctx.body.get("labels").unwrap_or(&Value::Null), "labels") {
        Ok(l) => l,
        Err(r) => return r,
    };
    let error = ctx.fault_error(&project, "");
    let Some(i) = st.instance_mut(&zone, &name) else {
        return wire::not_found(&project, &format!("zones/{zone}/instances/{name}"));
    };
    if let Some(fp) = get_str(&ctx.body, "labelFingerprint")
        && i.json.get("labelFingerprint").and_then(Value::as_str) != Some(fp)
    {
        return wire::error(
            412,
            "conditionNotMet",
            "Labels fingerprint either invalid or resource labels have changed",
        );
    }
    let id: u64 = i.json["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let link = i.json["selfLink"].as_str().unwrap_or("").to_string();
    if error.is_none() {
        i.json["labelFingerprint"] = json!(fingerprint(&json!(labels)));
        if labels.is_empty() {
            if let Some(o) = i.json.as_object_mut() {
                o.remove("labels");
            }
        } else {
            i.json["labels"] = json!(labels);
        }
    }
    let op = st.start_operation(
        Target {
            scope: Scope::Zone(zone),
            op_type: "setLabels",
            link,
            id,
        },
        Effect::None,
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_type_urls() {
        let want = Some(("z-a".to_string(), "n2-standard-2".to_string()));
        assert_eq!(
            parse_machine_type("zones/z-a/machineTypes/n2-standard-2"),
            want
        );
        assert_eq!(
            parse_machine_type("projects/p/zones/z-a/machineTypes/n2-standard-2"),
            want
        );
        assert_eq!(
            parse_machine_type(
                "https://www.googleapis.com/compute/v1/projects/p/zones/z-a/machineTypes/n2-standard-2"
            ),
            want
        );
        assert_eq!(parse_machine_type("n2-standard-2"), None);
    }

    #[test]
    fn fingerprints_look_like_the_apis() {
        let f = fingerprint(&json!({"a": "b"}));
        assert_eq!(f.len(), 12);
        assert!(f.ends_with('='));
        assert_ne!(f, fingerprint(&json!({"a": "c"})));
        // URL-safe, as the API's `byte` fields are: the client refuses `+` and `/`.
        for i in 0..200 {
            let f = fingerprint(&json!(i));
            assert!(!f.contains(['+', '/']), "{f}");
        }
    }
}
