//! The Compute Engine v1 JSON conventions the emulator writes: resource links, RFC 3339
//! timestamps, Google's error body, operation errors, list and aggregated-list envelopes.
//!
//! Shapes follow the v1 REST reference and recorded traffic of the real API: int64/uint64 fields
//! (`id`, `targetId`, `count`, `diskSizeGb`, …) are JSON strings, int32 fields (`progress`,
//! `httpErrorStatusCode`, `priority`) are numbers, links are absolute
//! `https://www.googleapis.com/compute/v1/…` URLs as the real API returns them.

use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::Response;

/// The prefix of every link the real API returns.
pub(crate) const LINK_BASE: &str = "https://www.googleapis.com/compute/v1/";

/// `https://www.googleapis.com/compute/v1/projects/{project}/{rest}`.
pub(crate) fn link(project: &str, rest: &str) -> String {
    format!("{LINK_BASE}projects/{project}/{rest}")
}

/// The last path segment of a link or partial URL (`zones/z/machineTypes/t` → `t`).
pub(crate) fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Now as RFC 3339 with milliseconds and an explicit offset, the way GCE writes timestamps
/// (`2026-12-02T07:00:00.123-00:00` style, here always UTC as `Z`).
pub(crate) fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

/// Formats seconds since the epoch (UTC).
pub(crate) fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The gRPC-style status name Google's error body carries for an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// The upper-case reason phrase GCE puts in an operation's `httpErrorMessage`.
pub(crate) fn http_error_message(status: u16) -> &'static str {
    match status {
        400 => "BAD REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT FOUND",
        409 => "CONFLICT",
        412 => "PRECONDITION FAILED",
        429 => "TOO MANY REQUESTS",
        500 => "INTERNAL SERVER ERROR",
        503 => "SERVICE UNAVAILABLE",
        _ => "ERROR",
    }
}

/// A synchronous error in Google's JSON error format:
/// `{"error":{"code":404,"message":…,"errors":[{"message":…,"domain":"global","reason":"notFound"}],"status":"NOT_FOUND"}}`.
/// `usageLimits` is the domain of quota and rate reasons, `global` of the rest.
pub(crate) fn error(status: u16, reason: &str, message: &str) -> Response {
    let domain = match reason {
        "quotaExceeded" | "rateLimitExceeded" | "userRateLimitExceeded" => "usageLimits",
        _ => "global",
    };
    Response::json(
        status,
        &json!({
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": domain, "reason": reason}],
                "status": status_name(status),
            }
        }),
    )
}

/// 404 `notFound` for `projects/{project}/{rest}`, worded as GCE words it.
pub(crate) fn not_found(project: &str, rest: &str) -> Response {
    error(
        404,
        "notFound",
        &format!("The resource 'projects/{project}/{rest}' was not found"),
    )
}

/// 400 `invalid` for a bad field of the request body.
pub(crate) fn invalid_field(field: &str, value: &str, why: &str) -> Response {
    error(
        400,
        "invalid",
        &format!("Invalid value for field '{field}': '{value}'. {why}"),
    )
}

/// 409 `alreadyExists` for `projects/{project}/{rest}`.
pub(crate) fn already_exists(project: &str, rest: &str) -> Response {
    error(
        409,
        "alreadyExists",
        &format!("The resource 'projects/{project}/{rest}' already exists"),
    )
}

/// An error a finished operation carries.
#[derive(Debug, Clone)]
pub(crate) struct OpError {
    /// `error.errors[0].code`.
    pub code: String,
    /// `error.errors[0].message`.
    pub message: String,
    /// `httpErrorStatusCode`.
    pub http_status: u16,
    /// `error.errors[0].errorDetails`, when the code has any.
    pub details: Option<Value>,
}

impl OpError {
    /// The error GCE reports for `code` in `zone` (machine type `machine_type`), with `message`
    /// or, when it is empty, GCE's wording; the `_WITH_DETAILS` stockout and `QUOTA_EXCEEDED`
    /// carry the `errorDetails` the real API adds.
    pub fn new(
        project: &str,
        zone: &str,
        machine_type: &str,
        code: &str,
        message: &str,
        http_status: u16,
    ) -> OpError {
        let region = zone.rsplit_once('-').map_or(zone, |(r, _)| r);
        let default_message = match code {
            c if c.starts_with("ZONE_RESOURCE_POOL_EXHAUSTED") => format!(
                "The zone 'projects/{project}/zones/{zone}' does not have enough resources available to fulfill the request.  '(resource type:compute)'."
            ),
            "QUOTA_EXCEEDED" => {
                format!("Quota 'CPUS' exceeded.  Limit: 8.0 in region {region}.")
            }
            other => format!("{other} (injected by the emulator)"),
        };
        let message = if message.is_empty() {
            default_message
        } else {
            message.to_string()
        };
        let details = match code {
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS" => Some(json!([
                {"help": {"links": [{
                    "description": "Troubleshooting documentation",
                    "url": "https://cloud.google.com/compute/docs/resource-error"
                }]}},
                {"localizedMessage": {
                    "locale": "en-US",
                    "message": format!("A {machine_type} VM instance is currently unavailable in the {zone} zone. Alternatively, you can try your request again with a different VM hardware configuration or at a later time. For more information, see the troubleshooting documentation.")
                }},
                {"errorInfo": {
                    "domain": "compute.googleapis.com",
                    "reason": "resource_availability",
                    "metadatas": {"zone": zone, "vmType": machine_type, "attachment": "", "zonesAvailable": ""}
                }}
            ])),
            "QUOTA_EXCEEDED" => Some(json!([
                {"quotaInfo": {
                    "metricName": "compute.googleapis.com/cpus",
                    "limitName": "CPUS-per-project-region",
                    "dimensions": {"region": region},
                    "limit": 8.0
                }}
            ])),
            _ => None,
        };
        OpError {
            code: code.to_string(),
            message,
            http_status,
            details,
        }
    }

    /// The operation fields: `error`, `httpErrorStatusCode`, `httpErrorMessage`.
    pub fn write_into(&self, op: &mut Value) {
        let mut item = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            item["errorDetails"] = d.clone();
        }
        op["error"] = json!({"errors": [item]});
        op["httpErrorStatusCode"] = json!(self.http_status);
        op["httpErrorMessage"] = json!(http_error_message(self.http_status));
    }
}

/// A list answer: `{"kind":…,"id":…,"items":[…],"selfLink":…}` with `items` left out when empty
/// (as the real API does) and `nextPageToken` when `maxResults` cut it short. The page token is
/// the offset of the next item.
pub(crate) fn list(
    kind: &str,
    id: &str,
    self_link: String,
    items: Vec<Value>,
    max_results: Option<usize>,
    page_token: Option<&str>,
) -> Value {
    let start: usize = page_token.and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut page: Vec<Value> = items.iter().skip(start).cloned().collect();
    let mut next = None;
    if let Some(max) = max_results.filter(|m| *m > 0)
        && page.len() > max
    {
        page.truncate(max);
        next = Some((start + max).to_string());
    }
    let mut out = json!({"kind": kind, "id": id, "selfLink": self_link});
    if !page.is_empty() {
        out["items"] = Value::Array(page);
    }
    if let Some(n) = next {
        out["nextPageToken"] = json!(n);
    }
    out
}

/// An aggregated-list answer: `items` maps every scope (`zones/us-central1-a`) to
/// `{"<field>": […]}`, or to the `NO_RESULTS_ON_PAGE` warning when nothing there matched.
pub(crate) fn aggregated(
    kind: &str,
    id: &str,
    self_link: String,
    field: &str,
    scopes: Vec<(String, Vec<Value>)>,
) -> Value {
    let mut items = serde_json::Map::new();
    for (scope, values) in scopes {
        let entry = if values.is_empty() {
            json!({"warning": {
                "code": "NO_RESULTS_ON_PAGE",
                "message": format!("There are no results for scope '{scope}' on this page."),
                "data": [{"key": "scope", "value": scope}]
            }})
        } else {
            json!({ field: values })
        };
        items.insert(scope, entry);
    }
    json!({"kind": kind, "id": id, "items": items, "selfLink": self_link})
}

/// Whether `name` is a valid resource name (RFC 1035: `[a-z]([-a-z0-9]*[a-z0-9])?`, ≤ 63).
pub(crate) fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
}

/// Whether a label key or value is valid: lowercase letters, digits, `_` and `-`, at most 63
/// characters; a key is not empty and starts with a letter.
pub(crate) fn valid_label(s: &str, is_key: bool) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        && (!is_key || s.bytes().next().is_some_and(|c| c.is_ascii_lowercase()))
}

/// Whether `s` is a valid `requestId`: a UUID, not the zero one.
pub(crate) fn valid_request_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    parts.len() == 5
        && parts
            .iter()
            .zip(lens)
            .all(|(p, n)| p.len() == n && p.bytes().all(|c| c.is_ascii_hexdigit()))
        && s.bytes().any(|c| c.is_ascii_hexdigit() && c != b'0')
}

/// An int64 field that may come as a JSON string (how the clients send it) or a number.
pub(crate) fn int64(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A short fingerprint (base64 of 8 bytes, like the API's) of a JSON value.
pub(crate) fn fingerprint(v: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    // URL-safe alphabet: the API's `byte` fields are URL-safe base64, and the official client
    // refuses `+` and `/` in them.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = h.to_be_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// The labels of a body, checked: `Err` is the 400 answer.
pub(crate) fn labels_of(v: &Value, field: &str) -> Result<BTreeMap<String, String>, Response> {
    let mut out = BTreeMap::new();
    let Some(map) = v.as_object() else {
        return Ok(out);
    };
    for (k, val) in map {
        let val_s = val.as_str().unwrap_or("");
        if !valid_label(k, true) || !val.is_string() || !valid_label(val_s, false) {
            return Err(invalid_field(
                field,
                &format!("{k}={val}"),
                "Label keys and values may contain only lowercase letters, digits, '_' and '-', at most 63 characters; keys start with a letter.",
            ));
        }
        out.insert(k.clone(), val_s.to_string());
    }
    Ok(out)
}

/// A partial URL (`global/networks/default`, `projects/p/…`) or link → a link.
pub(crate) fn to_link(project: &str, s: &str) -> String {
    if s.starts_with("https://") {
        s.to_string()
    } else if let Some(r) = s.strip_prefix("projects/") {
        format!("{}projects/{r}", LINK_BASE)
    } else {
        link(project, s)
    }
}

/// A string field of a JSON object.
pub(crate) fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_164_800, 5), "2024-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_796_108_399, 999), "2026-12-01T06:59:59.999Z");
    }

    #[test]
    fn names_labels_and_request_ids() {
        assert!(valid_name("qa-1a2b-0"));
        assert!(!valid_name("Qa") && !valid_name("1a") && !valid_name("a-") && !valid_name(""));
        assert!(valid_label("test_id", true) && valid_label("", false));
        assert!(!valid_label("", true) && !valid_label("Upper", false));
        assert!(valid_request_id("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!valid_request_id("00000000-0000-0000-0000-000000000000"));
        assert!(!valid_request_id("not-a-uuid"));
    }

    #[test]
    fn lists_page_and_leave_out_empty_items() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let page = list("k", "i", "s".into(), items.clone(), Some(2), None);
        assert_eq!(page["items"], json!([0, 1]));
        assert_eq!(page["nextPageToken"], "2");
        let last = list("k", "i", "s".into(), items, Some(2), Some("4"));
        assert_eq!(last["items"], json!([4]));
        assert!(last.get("nextPageToken").is_none());
        assert!(
            list("k", "i", "s".into(), vec![], None, None)
                .get("items")
                .is_none()
        );
    }
}
