//! From an HTTP request to a handler: the path is matched against the v1 REST paths, the call is
//! logged, a replayed `requestId` gets its original operation back, injected faults fire, and
//! the handler for the method answers.

use std::sync::Mutex;

use serde_json::Value;

use super::config::{Call, Delivery, FaultRule, RequestRecord};
use super::state::State;
use super::wire::{self, OpError};
use super::{catalog, disks, firewalls, instances, operations, reservations};
use crate::http::{Request, Response};

/// The path prefix of every method.
const PREFIX: &str = "/compute/v1/projects/";

/// What a handler gets: the request, what its path named, its JSON body, and the in-operation
/// fault that fired for it, if any.
pub(crate) struct Ctx<'a> {
    /// The request.
    pub req: &'a Request,
    /// The method the path and HTTP method name.
    pub call: Call,
    /// `{zone}` of a zonal path, or `{region}` of a regional one.
    pub scope: Option<String>,
    /// The resource (or operation) name of the path, if it names one.
    pub name: Option<String>,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
    /// An in-operation fault to end the operation with instead of doing the work.
    pub fault: Option<FaultRule>,
    /// `requestId` of a mutating call.
    pub request_id: Option<String>,
}

impl Ctx<'_> {
    /// The zone of the path (handlers of zonal methods only).
    pub fn zone(&self) -> &str {
        self.scope.as_deref().unwrap_or("")
    }

    /// The resource name of the path (handlers of methods on one resource only).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The key a `requestId` is remembered under.
    pub fn request_key(&self) -> Option<(Call, String)> {
        self.request_id.clone().map(|r| (self.call, r))
    }

    /// `maxResults`, if given.
    pub fn max_results(&self) -> Option<usize> {
        self.req
            .query_param("maxResults")
            .and_then(|m| m.parse().ok())
    }

    /// The operation error for the in-operation fault, if one fired.
    pub fn fault_error(&self, project: &str, machine_type: &str) -> Option<OpError> {
        let rule = self.fault.as_ref()?;
        let Delivery::InOperation { http_status } = rule.delivery else {
            return None;
        };
        Some(OpError::new(
            project,
            self.zone(),
            machine_type,
            &rule.code,
            &rule.message,
            http_status,
        ))
    }
}

/// What the path named.
struct Route {
    call: Call,
    scope: Option<String>,
    name: Option<String>,
}

fn route(method: &str, segs: &[&str]) -> Option<Route> {
    use Call::*;
    let r = |call, scope: Option<&&str>, name: Option<&&str>| {
        Some(Route {
            call,
            scope: scope.map(|s| s.to_string()),
            name: name.map(|s| s.to_string()),
        })
    };
    match (method, segs) {
        ("GET", ["zones"]) => r(ZonesList, None, None),
        ("GET", ["zones", z]) => r(ZonesGet, Some(z), None),
        ("GET", ["zones", z, "instances"]) => r(InstancesList, Some(z), None),
        ("POST", ["zones", z, "instances"]) => r(InstancesInsert, Some(z), None),
        ("GET", ["zones", z, "instances", n]) => r(InstancesGet, Some(z), Some(n)),
        ("DELETE", ["zones", z, "instances", n]) => r(InstancesDelete, Some(z), Some(n)),
        ("POST", ["zones", z, "instances", n, "setLabels"]) => {
            r(InstancesSetLabels, Some(z), Some(n))
        }
        ("GET", ["zones", z, "reservations"]) => r(ReservationsList, Some(z), None),
        ("POST", ["zones", z, "reservations"]) => r(ReservationsInsert, Some(z), None),
        ("GET", ["zones", z, "reservations", n]) => r(ReservationsGet, Some(z), Some(n)),
        ("DELETE", ["zones", z, "reservations", n]) => r(ReservationsDelete, Some(z), Some(n)),
        ("PATCH", ["zones", z, "reservations", n]) => r(ReservationsUpdate, Some(z), Some(n)),
        ("GET", ["zones", z, "disks"]) => r(DisksList, Some(z), None),
        ("GET", ["zones", z, "disks", n]) => r(DisksGet, Some(z), Some(n)),
        ("DELETE", ["zones", z, "disks", n]) => r(DisksDelete, Some(z), Some(n)),
        ("GET", ["zones", z, "machineTypes"]) => r(MachineTypesList, Some(z), None),
        ("GET", ["zones", z, "machineTypes", n]) => r(MachineTypesGet, Some(z), Some(n)),
        ("GET", ["zones", z, "operations", n]) => r(ZoneOperationsGet, Some(z), Some(n)),
        ("POST", ["zones", z, "operations", n, "wait"]) => r(ZoneOperationsWait, Some(z), Some(n)),
        ("GET", ["aggregated", "instances"]) => r(InstancesAggregatedList, None, None),
        ("GET", ["aggregated", "reservations"]) => r(ReservationsAggregatedList, None, None),
        ("GET", ["aggregated", "disks"]) => r(DisksAggregatedList, None, None),
        ("GET", ["aggregated", "machineTypes"]) => r(MachineTypesAggregatedList, None, None),
        ("GET", ["global", "firewalls"]) => r(FirewallsList, None, None),
        ("POST", ["global", "firewalls"]) => r(FirewallsInsert, None, None),
        ("GET", ["global", "firewalls", n]) => r(FirewallsGet, None, Some(n)),
        ("DELETE", ["global", "firewalls", n]) => r(FirewallsDelete, None, Some(n)),
        ("GET", ["global", "operations", n]) => r(GlobalOperationsGet, None, Some(n)),
        ("POST", ["global", "operations", n, "wait"]) => r(GlobalOperationsWait, None, Some(n)),
        ("GET", ["regions"]) => r(RegionsList, None, None),
        ("GET", ["regions", g]) => r(RegionsGet, Some(g), None),
        ("GET", ["regions", g, "operations", n]) => r(RegionOperationsGet, Some(g), Some(n)),
        ("POST", ["regions", g, "operations", n, "wait"]) => {
            r(RegionOperationsWait, Some(g), Some(n))
        }
        _ => None,
    }
}

/// Answers one request and logs it.
pub(crate) fn handle(state: &Mutex<State>, req: Request) -> Response {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let body: Option<Value> = if req.body.is_empty() {
        None
    } else {
        serde_json::from_slice(&req.body).ok()
    };
    let mut record = RequestRecord {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        body: body.clone(),
        call: None,
        zone: None,
        status: 0,
    };
    let mut resp = answer(&mut st, &req, body, &mut record);
    record.status = resp.status;
    if let Some(call) = record.call
        && st.hold_after.contains(&call)
    {
        st.held.push(call);
        resp.hold = Some(st.hold_gate.clone());
    }
    st.log.push(record);
    resp
}

fn answer(
    st: &mut State,
    req: &Request,
    body: Option<Value>,
    record: &mut RequestRecord,
) -> Response {
    let Some(rest) = req.path.strip_prefix(PREFIX) else {
        return wire::error(
            404,
            "notFound",
            &format!(
                "The requested URL {} was not found on this server.",
                req.path
            ),
        );
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((&project, segs)) = segs.split_first() else {
        return wire::error(404, "notFound", "No project in the path.");
    };
    if project != st.project() {
        return wire::error(
            404,
            "notFound",
            &format!("The resource 'projects/{project}' was not found"),
        );
    }
    let Some(route) = route(&req.method, segs) else {
        return wire::error(
            404,
            "notFound",
            &format!(
                "The requested URL {} was not found on this server.",
                req.path
            ),
        );
    };
    record.call = Some(route.call);
    let zonal = segs.first() == Some(&"zones");
    if zonal {
        record.zone = route.scope.clone();
    }
    // An unknown zone or region: `get` of it says not found, everything under it is invalid.
    if let Some(scope) = &route.scope {
        let known = if zonal {
            st.region_of(scope).is_some()
        } else {
            st.cfg.zones.iter().any(|z| &z.region == scope)
        };
        if !known {
            let what = if zonal { "zone" } else { "region" };
            return match route.call {
                Call::ZonesGet => wire::not_found(st.project(), &format!("zones/{scope}")),
                Call::RegionsGet => wire::not_found(st.project(), &format!("regions/{scope}")),
                _ => wire::invalid_field(what, scope, &format!("Unknown {what}.")),
            };
        }
    }
    let mut request_id = None;
    if route.call.returns_operation()
        && let Some(rid) = req.query_param("requestId")
    {
        if !wire::valid_request_id(rid) {
            return wire::invalid_field(
                "requestId",
                rid,
                "The request ID must be a valid UUID with the exception that zero UUID is not supported (00000000-0000-0000-0000-000000000000).",
            );
        }
        if let Some(op) = st.request_ids.get(&(route.call, rid.to_string())).cloned() {
            return Response::json(200, &st.operation_json(&op, false));
        }
        request_id = Some(rid.to_string());
    }
    if req.method == "POST"
        && route.call.returns_operation()
        && !req.body.is_empty()
        && body.is_none()
    {
        return wire::error(400, "parseError", "Invalid JSON payload received.");
    }
    let mut fault = None;
    if let Some(rule) = st.fire_fault(route.call, route.scope.as_deref()) {
        let message = if rule.message.is_empty() {
            format!("{} ({} injected by the emulator)", rule.code, route.call)
        } else {
            rule.message.clone()
        };
        match rule.delivery {
            Delivery::Sync { status } => return wire::error(status, &rule.code, &message),
            Delivery::InOperation { http_status } if !route.call.returns_operation() => {
                return wire::error(http_status, &rule.code, &message);
            }
            Delivery::InOperation { .. } => fault = Some(rule),
        }
    }
    let ctx = Ctx {
        req,
        call: route.call,
        scope: route.scope,
        name: route.name,
        body: body.unwrap_or(Value::Null),
        fault,
        request_id,
    };
    dispatch(st, &ctx)
}

fn dispatch(st: &mut State, ctx: &Ctx<'_>) -> Response {
    use Call::*;
    match ctx.call {
        InstancesInsert => instances::insert(st, ctx),
        InstancesGet => instances::get(st, ctx),
        InstancesDelete => instances::delete(st, ctx),
        InstancesList => instances::list(st, ctx),
        InstancesAggregatedList => instances::aggregated_list(st, ctx),
        InstancesSetLabels => instances::set_labels(st, ctx),
        ReservationsInsert => reservations::insert(st, ctx),
        ReservationsGet => reservations::get(st, ctx),
        ReservationsDelete => reservations::delete(st, ctx),
        ReservationsList => reservations::list(st, ctx),
        ReservationsAggregatedList => reservations::aggregated_list(st, ctx),
        ReservationsUpdate => reservations::update(st, ctx),
        DisksGet => disks::get(st, ctx),
        DisksDelete => disks::delete(st, ctx),
        DisksList => disks::list(st, ctx),
        DisksAggregatedList => disks::aggregated_list(st, ctx),
        FirewallsInsert => firewalls::insert(st, ctx),
        FirewallsGet => firewalls::get(st, ctx),
        FirewallsDelete => firewalls::delete(st, ctx),
        FirewallsList => firewalls::list(st, ctx),
        ZoneOperationsGet | ZoneOperationsWait | GlobalOperationsGet | GlobalOperationsWait
        | RegionOperationsGet | RegionOperationsWait => operations::get_or_wait(st, ctx),
        ZonesList => catalog::zones_list(st, ctx),
        ZonesGet => catalog::zones_get(st, ctx),
        RegionsList => catalog::regions_list(st, ctx),
        RegionsGet => catalog::regions_get(st, ctx),
        MachineTypesList => catalog::machine_types_list(st, ctx),
        MachineTypesGet => catalog::machine_types_get(st, ctx),
        MachineTypesAggregatedList => catalog::machine_types_aggregated(st, ctx),
    }
}

/// The parsed `filter` of a list call, or the 400 answer for one the emulator cannot read.
pub(crate) fn filter_of(ctx: &Ctx<'_>) -> Result<Option<super::filter::Filter>, Response> {
    match ctx
        .req
        .query_param("filter")
        .filter(|f| !f.trim().is_empty())
    {
        None => Ok(None),
        Some(f) => super::filter::Filter::parse(f).map(Some).map_err(|why| {
            wire::error(
                400,
                "invalid",
                &format!("Invalid list filter expression '{f}': {why}"),
            )
        }),
    }
}

/// A zonal collection (`disks`, `instances`, `reservations`) as its list calls see it: the JSON of
/// each item of a zone, before the request's filter.
pub(crate) type ZoneItems = fn(&State, &str) -> Vec<Value>;

/// The items of `zone` that pass the request's filter.
fn filtered(
    st: &State,
    ctx: &Ctx<'_>,
    zone: &str,
    items: ZoneItems,
) -> Result<Vec<Value>, Response> {
    let f = filter_of(ctx)?;
    Ok(items(st, zone)
        .into_iter()
        .filter(|v| f.as_ref().is_none_or(|f| f.matches(v)))
        .collect())
}

/// `GET …/zones/{zone}/{collection}`, answered as a `compute#{kind}List`.
pub(crate) fn zonal_list(
    st: &State,
    ctx: &Ctx<'_>,
    collection: &str,
    kind: &str,
    items: ZoneItems,
) -> Response {
    let found = match filtered(st, ctx, ctx.zone(), items) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let p = st.project();
    let path = format!("zones/{}/{collection}", ctx.zone());
    Response::json(
        200,
        &wire::list(
            &format!("compute#{kind}List"),
            &format!("projects/{p}/{path}"),
            wire::link(p, &path),
            found,
            ctx.max_results(),
            ctx.req.query_param("pageToken"),
        ),
    )
}

/// `GET …/aggregated/{collection}`: every zone, filtered, as a `compute#{kind}AggregatedList`.
pub(crate) fn zonal_aggregated_list(
    st: &State,
    ctx: &Ctx<'_>,
    collection: &str,
    kind: &str,
    items: ZoneItems,
) -> Response {
    let mut scopes = Vec::new();
    for z in &st.cfg.zones {
        match filtered(st, ctx, &z.name, items) {
            Ok(found) => scopes.push((format!("zones/{}", z.name), found)),
            Err(r) => return r,
        }
    }
    let p = st.project();
    let path = format!("aggregated/{collection}");
    Response::json(
        200,
        &wire::aggregated(
            &format!("compute#{kind}AggregatedList"),
            &format!("projects/{p}/{path}"),
            wire::link(p, &path),
            collection,
            scopes,
        ),
    )
}
