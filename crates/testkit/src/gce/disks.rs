//! `disks`: the persistent disks instance inserts make, and get, delete, list and aggregatedList
//! of them.
//!
//! A disk made from `initializeParams` lives as long as its instance when `autoDelete` is set,
//! and outlives it otherwise (unattached, still labelled), as in GCE. A disk still attached to an
//! instance cannot be deleted (400 `resourceInUseByAnotherResource`).

use serde_json::{Value, json};

use super::router::{Ctx, zonal_aggregated_list, zonal_list};
use super::state::{Disk, Effect, Scope, State, Target};
use super::wire::{self, fingerprint, get_str, labels_of, to_link};
use crate::http::Response;

/// The `disks` of an instance insert: the attached-disk JSON the instance shows, and the disks to
/// make; `Err` is the 400/409 answer. Nothing is changed yet.
pub(crate) fn plan(
    st: &mut State,
    zone: &str,
    name: &str,
    link: &str,
    disks: &[Value],
) -> Result<(Vec<Value>, Vec<Disk>), Response> {
    let project = st.project().to_string();
    let mut attached = Vec::new();
    let mut new_disks: Vec<Disk> = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let boot = d.get("boot") == Some(&json!(true));
        let auto_delete = d.get("autoDelete") == Some(&json!(true));
        let init = d.get("initializeParams").cloned().unwrap_or(json!({}));
        let disk_name = get_str(&init, "diskName")
            .map(str::to_string)
            .or_else(|| get_str(d, "source").map(|s| wire::last_segment(s).to_string()))
            .unwrap_or_else(|| {
                if boot {
                    name.to_string()
                } else {
                    format!("{name}-disk-{i}")
                }
            });
        let size = init.get("diskSizeGb").map(wire::int64);
        if let Some(None) = size {
            return Err(wire::invalid_field(
                &format!("resource.disks[{i}].initializeParams.diskSizeGb"),
                &init["diskSizeGb"].to_string(),
                "Must be an int64.",
            ));
        }
        let size = size.flatten().unwrap_or(10);
        let disk_link = wire::link(&project, &format!("zones/{zone}/disks/{disk_name}"));
        match get_str(d, "source") {
            Some(source) => {
                if !st
                    .disks
                    .iter()
                    .any(|x| x.zone == zone && x.name == disk_name && x.attached_to.is_none())
                {
                    return Err(wire::invalid_field(
                        &format!("resource.disks[{i}].source"),
                        source,
                        "The disk does not exist or is in use.",
                    ));
                }
            }
            None => {
                if boot && get_str(&init, "sourceImage").is_none() {
                    return Err(wire::invalid_field(
                        &format!("resource.disks[{i}].initializeParams.sourceImage"),
                        "",
                        "Source image must be specified.",
                    ));
                }
                let taken = st.disks.iter().chain(new_disks.iter());
                if taken.clone().any(|x| x.zone == zone && x.name == disk_name) {
                    return Err(wire::already_exists(
                        &project,
                        &format!("zones/{zone}/disks/{disk_name}"),
                    ));
                }
                let disk_type = get_str(&init, "diskType")
                    .map(|t| to_link(&project, t))
                    .unwrap_or_else(|| {
                        wire::link(&project, &format!("zones/{zone}/diskTypes/pd-standard"))
                    });
                let disk_labels = labels_of(
                    init.get("labels").unwrap_or(&Value::Null),
                    &format!("resource.disks[{i}].initializeParams.labels"),
                )?;
                let mut dj = json!({
                    "kind": "compute#disk",
                    "id": st.id().to_string(),
                    "creationTimestamp": wire::now_rfc3339(),
                    "name": disk_name,
                    "sizeGb": size.to_string(),
                    "zone": wire::link(&project, &format!("zones/{zone}")),
                    "status": "READY",
                    "selfLink": disk_link,
                    "type": disk_type,
                    "users": [link],
                    "physicalBlockSizeBytes": "4096",
                    "labelFingerprint": fingerprint(&json!(disk_labels)),
                });
                if let Some(img) = get_str(&init, "sourceImage") {
                    dj["sourceImage"] = json!(to_link(&project, img));
                }
                if !disk_labels.is_empty() {
                    dj["labels"] = json!(disk_labels);
                }
                new_disks.push(Disk {
                    zone: zone.to_string(),
                    name: disk_name.clone(),
                    attached_to: Some(name.to_string()),
                    auto_delete,
                    json: dj,
                });
            }
        }
        let device = get_str(d, "deviceName")
            .map(str::to_string)
            .unwrap_or_else(|| format!("persistent-disk-{i}"));
        attached.push(json!({
            "kind": "compute#attachedDisk",
            "type": get_str(d, "type").unwrap_or("PERSISTENT"),
            "mode": get_str(d, "mode").unwrap_or("READ_WRITE"),
            "source": disk_link,
            "deviceName": device,
            "index": i,
            "boot": boot,
            "autoDelete": auto_delete,
            "interface": get_str(d, "interface").unwrap_or("SCSI"),
            "diskSizeGb": size.to_string(),
            "architecture": "X86_64",
        }));
    }
    Ok((attached, new_disks))
}

/// Makes the planned disks and attaches the existing ones the insert names.
pub(crate) fn attach(
    st: &mut State,
    zone: &str,
    name: &str,
    link: &str,
    disks: &[Value],
    new_disks: Vec<Disk>,
) {
    for d in disks.iter().filter_map(|d| get_str(d, "source")) {
        let dn = wire::last_segment(d);
        if let Some(x) = st.disks.iter_mut().find(|x| x.zone == zone && x.name == dn) {
            x.attached_to = Some(name.to_string());
            x.json["users"] = json!([link]);
        }
    }
    st.disks.extend(new_disks);
}

/// `GET …/zones/{zone}/disks/{disk}`.
pub(crate) fn get(st: &mut State, ctx: &Ctx<'_>) -> Response {
    match st
        .disks
        .iter()
        .find(|d| d.zone == ctx.zone() && d.name == ctx.name())
    {
        Some(d) => Response::json(200, &d.json),
        None => wire::not_found(
            st.project(),
            &format!("zones/{}/disks/{}", ctx.zone(), ctx.name()),
        ),
    }
}

/// `DELETE …/zones/{zone}/disks/{disk}`.
pub(crate) fn delete(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let (zone, name) = (ctx.zone().to_string(), ctx.name().to_string());
    let Some(d) = st.disks.iter().find(|d| d.zone == zone && d.name == name) else {
        return wire::not_found(&project, &format!("zones/{zone}/disks/{name}"));
    };
    if let Some(user) = &d.attached_to {
        return wire::error(
            400,
            "resourceInUseByAnotherResource",
            &format!(
                "The disk resource 'projects/{project}/zones/{zone}/disks/{name}' is already being used by 'projects/{project}/zones/{zone}/instances/{user}'"
            ),
        );
    }
    let id: u64 = d.json["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let link = d.json["selfLink"].as_str().unwrap_or("").to_string();
    let error = ctx.fault_error(&project, "");
    let op = st.start_operation(
        Target {
            scope: Scope::Zone(zone.clone()),
            op_type: "delete",
            link,
            id,
        },
        Effect::DiskDeleted { zone, name },
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

/// The JSON of every disk in `zone`.
fn in_zone(st: &State, zone: &str) -> Vec<Value> {
    st.disks
        .iter()
        .filter(|d| d.zone == zone)
        .map(|d| d.json.clone())
        .collect()
}

/// `GET …/zones/{zone}/disks`.
pub(crate) fn list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    zonal_list(st, ctx, "disks", "disk", in_zone)
}

/// `GET …/aggregated/disks`.
pub(crate) fn aggregated_list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    zonal_aggregated_list(st, ctx, "disks", "disk", in_zone)
}
