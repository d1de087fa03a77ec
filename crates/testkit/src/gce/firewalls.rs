//! `firewalls` (global): insert, get, delete, list. Their operations are global
//! (`globalOperations`). An accepted insert makes the rule at once; a delete removes it when its
//! operation is done.

use serde_json::{Value, json};

use super::router::{Ctx, filter_of};
use super::state::{Effect, Firewall, Scope, State, Target};
use super::wire::{self, get_str, to_link};
use crate::http::Response;

/// `POST …/global/firewalls`.
pub(crate) fn insert(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let body = &ctx.body;
    if !body.is_object() {
        return wire::invalid_field("resource", "", "The firewall resource is required.");
    }
    let name = get_str(body, "name").unwrap_or("").to_string();
    if !wire::valid_name(&name) {
        return wire::invalid_field(
            "resource.name",
            &name,
            "Must be a match of regex '[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?'",
        );
    }
    let has = |k: &str| {
        body.get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if has("allowed") == has("denied") {
        return wire::invalid_field(
            "resource.allowed",
            "",
            "Exactly one of 'allowed' or 'denied' must be specified.",
        );
    }
    if st.firewalls.iter().any(|f| f.name == name) {
        return wire::already_exists(&project, &format!("global/firewalls/{name}"));
    }
    let id = st.id();
    let link = wire::link(&project, &format!("global/firewalls/{name}"));
    let error = ctx.fault_error(&project, "");
    if error.is_none() {
        let mut v = body.clone();
        let direction = get_str(body, "direction").unwrap_or("INGRESS").to_string();
        let network = to_link(
            &project,
            get_str(body, "network").unwrap_or("global/networks/default"),
        );
        let obj = v.as_object_mut().expect("checked above");
        for (k, val) in [
            ("kind", json!("compute#firewall")),
            ("id", json!(id.to_string())),
            ("creationTimestamp", json!(wire::now_rfc3339())),
            ("selfLink", json!(link)),
            ("network", json!(network)),
            ("direction", json!(direction)),
        ] {
            obj.insert(k.to_string(), val);
        }
        obj.entry("priority").or_insert(json!(1000));
        obj.entry("disabled").or_insert(json!(false));
        obj.entry("logConfig").or_insert(json!({"enable": false}));
        if direction == "INGRESS" && !has("sourceRanges") && !has("sourceTags") {
            obj.insert("sourceRanges".into(), json!(["0.0.0.0/0"]));
        }
        st.firewalls.push(Firewall {
            name: name.clone(),
            json: v,
        });
    }
    let op = st.start_operation(
        Target {
            scope: Scope::Global,
            op_type: "insert",
            link,
            id,
        },
        Effect::None,
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

/// `GET …/global/firewalls/{firewall}`.
pub(crate) fn get(st: &mut State, ctx: &Ctx<'_>) -> Response {
    match st.firewalls.iter().find(|f| f.name == ctx.name()) {
        Some(f) => Response::json(200, &f.json),
        None => wire::not_found(st.project(), &format!("global/firewalls/{}", ctx.name())),
    }
}

/// `DELETE …/global/firewalls/{firewall}`.
pub(crate) fn delete(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let project = st.project().to_string();
    let name = ctx.name().to_string();
    let Some(f) = st.firewalls.iter().find(|f| f.name == name) else {
        return wire::not_found(&project, &format!("global/firewalls/{name}"));
    };
    let id: u64 = f.json["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let link = f.json["selfLink"].as_str().unwrap_or("").to_string();
    let error = ctx.fault_error(&project, "");
    let op = st.start_operation(
        Target {
            scope: Scope::Global,
            op_type: "delete",
            link,
            id,
        },
        Effect::FirewallDeleted { name },
        error,
        ctx.request_key(),
    );
    Response::json(200, &op)
}

/// `GET …/global/firewalls`.
pub(crate) fn list(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let f = match filter_of(ctx) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let items = st
        .firewalls
        .iter()
        .filter(|x| f.as_ref().is_none_or(|f| f.matches(&x.json)))
        .map(|x| x.json.clone())
        .collect();
    let p = st.project();
    Response::json(
        200,
        &wire::list(
            "compute#firewallList",
            &format!("projects/{p}/global/firewalls"),
            wire::link(p, "global/firewalls"),
            items,
            ctx.max_results(),
            ctx.req.query_param("pageToken"),
        ),
    )
}
