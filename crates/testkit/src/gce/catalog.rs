//! What the project offers, as configured by the test: `zones`, `regions` and `machineTypes`
//! (list, get, aggregatedList). Machine type sizes are derived from the name the way GCE names
//! them (`n2-standard-4`: 4 vCPUs, 4 GB per vCPU; `highmem` 8 GB, `highcpu` 1 GB).

use serde_json::{Value, json};

use super::router::{Ctx, filter_of};
use super::state::State;
use super::wire;
use crate::http::Response;

/// A stable id for a catalog entry (the same name always gets the same id).
fn stable_id(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % 9_000_000_000_000_000_000 + 1_000_000_000_000_000).to_string()
}

const CREATED: &str = "1969-12-31T16:00:00.000-08:00";

fn zone_json(st: &State, zone: &str, region: &str) -> Value {
    let p = st.project();
    json!({
        "kind": "compute#zone",
        "id": stable_id(zone),
        "creationTimestamp": CREATED,
        "name": zone,
        "description": zone,
        "status": "UP",
        "region": wire::link(p, &format!("regions/{region}")),
        "selfLink": wire::link(p, &format!("zones/{zone}")),
        "availableCpuPlatforms": ["Intel Cascade Lake", "Intel Ice Lake", "AMD Milan"],
        "supportsPzs": false,
    })
}

fn regions(st: &State) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for z in &st.cfg.zones {
        if !out.contains(&z.region) {
            out.push(z.region.clone());
        }
    }
    out
}

fn region_json(st: &State, region: &str) -> Value {
    let p = st.project();
    let zones: Vec<String> = st
        .cfg
        .zones
        .iter()
        .filter(|z| z.region == region)
        .map(|z| wire::link(p, &format!("zones/{}", z.name)))
        .collect();
    json!({
        "kind": "compute#region",
        "id": stable_id(region),
        "creationTimestamp": CREATED,
        "name": region,
        "description": region,
        "status": "UP",
        "zones": zones,
        "selfLink": wire::link(p, &format!("regions/{region}")),
        "supportsPzs": false,
    })
}

fn machine_type_json(st: &State, zone: &str, name: &str) -> Value {
    let cpus: i64 = name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let per_cpu = if name.contains("highmem") {
        8192
    } else if name.contains("highcpu") {
        1024
    } else {
        4096
    };
    let memory = cpus * per_cpu;
    let p = st.project();
    json!({
        "kind": "compute#machineType",
        "id": stable_id(&format!("{zone}/{name}")),
        "creationTimestamp": CREATED,
        "name": name,
        "description": format!("{cpus} vCPUs, {} GB RAM", memory / 1024),
        "guestCpus": cpus,
        "memoryMb": memory,
        "imageSpaceGb": 0,
        "maximumPersistentDisks": 128,
        "maximumPersistentDisksSizeGb": "263168",
        "zone": zone,
        "selfLink": wire::link(p, &format!("zones/{zone}/machineTypes/{name}")),
        "isSharedCpu": false,
        "architecture": "X86_64",
    })
}

fn listed(ctx: &Ctx<'_>, kind: &str, project: &str, path: &str, items: Vec<Value>) -> Response {
    let items = match filter_of(ctx) {
        Ok(Some(f)) => items.into_iter().filter(|v| f.matches(v)).collect(),
        Ok(None) => items,
        Err(r) => return r,
    };
    Response::json(
        200,
        &wire::list(
            kind,
            &format!("projects/{project}/{path}"),
            wire::link(project, path),
            items,
            ctx.max_results(),
            ctx.req.query_param("pageToken"),
        ),
    )
}

/// `GET …/zones`.
pub(crate) fn zones_list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let items = st
        .cfg
        .zones
        .iter()
        .map(|z| zone_json(st, &z.name, &z.region))
        .collect();
    listed(ctx, "compute#zoneList", st.project(), "zones", items)
}

/// `GET …/zones/{zone}`.
pub(crate) fn zones_get(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let region = st.region_of(ctx.zone()).unwrap_or_default();
    Response::json(200, &zone_json(st, ctx.zone(), &region))
}

/// `GET …/regions`.
pub(crate) fn regions_list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let items = regions(st).iter().map(|r| region_json(st, r)).collect();
    listed(ctx, "compute#regionList", st.project(), "regions", items)
}

/// `GET …/regions/{region}`.
pub(crate) fn regions_get(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let region = ctx.scope.clone().unwrap_or_default();
    Response::json(200, &region_json(st, &region))
}

fn types_in(st: &State, zone: &str) -> Vec<Value> {
    st.cfg
        .zones
        .iter()
        .filter(|z| z.name == zone)
        .flat_map(|z| z.machine_types.iter())
        .map(|t| machine_type_json(st, zone, t))
        .collect()
}

/// `GET …/zones/{zone}/machineTypes`: the types the test configured for the zone.
pub(crate) fn machine_types_list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let items = types_in(st, ctx.zone());
    let path = format!("zones/{}/machineTypes", ctx.zone());
    listed(ctx, "compute#machineTypeList", st.project(), &path, items)
}

/// `GET …/zones/{zone}/machineTypes/{machineType}`.
pub(crate) fn machine_types_get(st: &mut State, ctx: &Ctx<'_>) -> Response {
    if st.offers(ctx.zone(), ctx.name()) {
        Response::json(200, &machine_type_json(st, ctx.zone(), ctx.name()))
    } else {
        wire::not_found(
            st.project(),
            &format!("zones/{}/machineTypes/{}", ctx.zone(), ctx.name()),
        )
    }
}

/// `GET …/aggregated/machineTypes`.
pub(crate) fn machine_types_aggregated(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let filter = match filter_of(ctx) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let scopes = st
        .cfg
        .zones
        .iter()
        .map(|z| {
            let items = types_in(st, &z.name)
                .into_iter()
                .filter(|v| filter.as_ref().is_none_or(|f| f.matches(v)))
                .collect();
            (format!("zones/{}", z.name), items)
        })
        .collect();
    let p = st.project();
    Response::json(
        200,
        &wire::aggregated(
            "compute#machineTypeAggregatedList",
            &format!("projects/{p}/aggregated/machineTypes"),
            wire::link(p, "aggregated/machineTypes"),
            "machineTypes",
            scopes,
        ),
    )
}
