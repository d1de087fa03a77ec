//! `zoneOperations`, `globalOperations` and `regionOperations`: `get` and `wait`.
//!
//! Every zonal client's `get_operation` (instances, reservations, disks) is
//! `zoneOperations.get`, and the firewalls client's is `globalOperations.get`, so these paths
//! serve them all. Each `get` or `wait` is one poll: the operation is `DONE` on the
//! `operation_polls`-th (see `GceConfig`). `wait` does not block (the reference allows it to
//! return before the operation is done). The emulator makes no regional operations, so
//! `regionOperations` always answers 404.

use super::config::Call;
use super::router::Ctx;
use super::state::{Scope, State};
use super::wire;
use crate::http::Response;

/// `GET …/operations/{operation}` and `POST …/operations/{operation}/wait`.
pub(crate) fn get_or_wait(st: &mut State, ctx: &Ctx<'_>) -> Response {
    let (scope, path) = match ctx.call {
        Call::ZoneOperationsGet | Call::ZoneOperationsWait => (
            Some(Scope::Zone(ctx.zone().to_string())),
            format!("zones/{}/operations/{}", ctx.zone(), ctx.name()),
        ),
        Call::GlobalOperationsGet | Call::GlobalOperationsWait => (
            Some(Scope::Global),
            format!("global/operations/{}", ctx.name()),
        ),
        _ => (
            None,
            format!(
                "regions/{}/operations/{}",
                ctx.scope.as_deref().unwrap_or(""),
                ctx.name()
            ),
        ),
    };
    let exists = st
        .operations
        .iter()
        .any(|o| o.name == ctx.name() && Some(&o.scope) == scope.as_ref());
    if !exists {
        return wire::not_found(st.project(), &path);
    }
    st.poll(ctx.name());
    Response::json(200, &st.operation_json(ctx.name(), false))
}
