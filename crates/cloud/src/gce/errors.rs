//! What a Compute Engine error means to qa-run. Compute Engine reports errors in two places:
//! a call refused at once answers with an HTTP status and `error.errors[].reason`
//! ([`GceError::of_call`]), and work that fails later (a stockout, most quotas) is reported
//! inside the finished operation as `error.errors[].code` ([`GceError::of_operation`]). Both
//! are classified by the raw code, never by words a wrapper chose, with one table:
//!
//! | class | codes |
//! | --- | --- |
//! | [`Capacity`](ErrorClass::Capacity) | `ZONE_RESOURCE_POOL_EXHAUSTED`, `ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS`, `REGION_RESOURCE_POOL_EXHAUSTED`, `GPU_STOCKOUT`, `UNSUPPORTED_OPERATION`, `insufficientCapacity`, `resourcePoolExhausted` |
//! | [`Quota`](ErrorClass::Quota) | `QUOTA_EXCEEDED`, `quotaExceeded`, `limitExceeded`, any code ending in `_QUOTA_EXCEEDED` |
//! | [`Auth`](ErrorClass::Auth) | HTTP 401; `forbidden`, `insufficientPermissions`, `IAM_PERMISSION_DENIED`, `accessNotConfigured`, `authError`, `PERMISSION_DENIED`, `UNAUTHENTICATED` |
//! | [`NotFound`](ErrorClass::NotFound) | HTTP 404; `notFound`, `RESOURCE_NOT_FOUND` |
//! | [`NotOffered`](ErrorClass::NotOffered) | `RESOURCE_NOT_AVAILABLE`, `unsupportedMachineType` |
//! | [`Transient`](ErrorClass::Transient) | HTTP 429 and 5xx without a code above; `rateLimitExceeded`, `userRateLimitExceeded`, `RESOURCE_OPERATION_RATE_EXCEEDED`, `backendError`, `internalError`; and no answer at all |
//! | [`InvalidRequest`](ErrorClass::InvalidRequest) | HTTP 400 and 409 without a code above; `invalid`, `invalidParameter`, `required`, `badRequest`, `conflict`, `alreadyExists`, `RESOURCE_ALREADY_EXISTS`, `resourceInUseByAnotherResource`, `VPC_NOT_FOUND`, `SUBNET_NOT_FOUND_FOR_VPC` |
//! | [`Other`](ErrorClass::Other) | everything else |
//!
//! A stockout reported with HTTP 503 inside its operation is still a capacity error: the code
//! decides before the status.

use std::fmt;

use google_cloud_compute_v1::model::Operation;
use google_cloud_gax::error::Error as CallError;
use google_cloud_gax::error::rpc::StatusDetails;

pub use crate::ErrorClass;

/// Classifies a Compute Engine error code or reason (see the table in the
/// [module docs](self)); `None` when the code alone does not say.
pub fn classify_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "ZONE_RESOURCE_POOL_EXHAUSTED"
        | "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
        | "REGION_RESOURCE_POOL_EXHAUSTED"
        | "GPU_STOCKOUT"
        | "UNSUPPORTED_OPERATION"
        | "insufficientCapacity"
        | "resourcePoolExhausted" => ErrorClass::Capacity,
        "QUOTA_EXCEEDED" | "quotaExceeded" | "limitExceeded" => ErrorClass::Quota,
        c if c.ends_with("_QUOTA_EXCEEDED") => ErrorClass::Quota,
        "forbidden"
        | "insufficientPermissions"
        | "IAM_PERMISSION_DENIED"
        | "accessNotConfigured"
        | "authError"
        | "PERMISSION_DENIED"
        | "UNAUTHENTICATED" => ErrorClass::Auth,
        "notFound" | "RESOURCE_NOT_FOUND" => ErrorClass::NotFound,
        "RESOURCE_NOT_AVAILABLE" | "unsupportedMachineType" => ErrorClass::NotOffered,
        "rateLimitExceeded"
        | "userRateLimitExceeded"
        | "RESOURCE_OPERATION_RATE_EXCEEDED"
        | "backendError"
        | "internalError" => ErrorClass::Transient,
        "invalid"
        | "invalidParameter"
        | "required"
        | "badRequest"
        | "conflict"
        | "alreadyExists"
        | "RESOURCE_ALREADY_EXISTS"
        | "resourceInUseByAnotherResource"
        | "VPC_NOT_FOUND"
        | "SUBNET_NOT_FOUND_FOR_VPC" => ErrorClass::InvalidRequest,
        _ => return None,
    })
}

/// The class of an HTTP status when no code said more.
fn classify_status(status: u16) -> ErrorClass {
    match status {
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        429 | 500..=599 => ErrorClass::Transient,
        400 | 409 | 412 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Other,
    }
}

/// A Compute Engine error as qa-run reads it: its class, the raw code (an operation's `code`
/// or a call's `reason`), the HTTP status and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GceError {
    /// What it means.
    pub class: ErrorClass,
    /// Compute Engine's code or reason, when it gave one.
    pub code: Option<String>,
    /// The HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// The message.
    pub message: String,
    /// Whether Compute Engine answered: a refused create made nothing; without an answer
    /// (connection, timeout) the call may have taken effect.
    pub answered: bool,
}

impl GceError {
    /// An error from its parts, classified by `code` first, then by `http_status`.
    pub fn new(code: Option<&str>, http_status: Option<u16>, message: impl Into<String>) -> Self {
        let class = code
            .and_then(classify_code)
            .or_else(|| http_status.map(classify_status))
            .unwrap_or(ErrorClass::Other);
        GceError {
            class,
            code: code.map(str::to_string),
            http_status,
            message: message.into(),
            // A 5xx or 429 may come after the work was done (or begun): only a refusal made
            // nothing.
            answered: (http_status.is_some() || code.is_some())
                && !http_status.is_some_and(|s| s == 429 || s >= 500),
        }
    }

    /// A call that Compute Engine refused, or that got no answer.
    pub fn of_call(e: &CallError) -> Self {
        let status = e.http_status_code();
        let reasons: Vec<&str> = e
            .status()
            .map(|s| {
                s.details
                    .iter()
                    .filter_map(|d| match d {
                        StatusDetails::ErrorInfo(i) if !i.reason.is_empty() => {
                            Some(i.reason.as_str())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The reason that classifies, else the first one.
        let code = reasons
            .iter()
            .copied()
            .find(|r| classify_code(r).is_some())
            .or(reasons.first().copied());
        let message = match e.status() {
            Some(s) if !s.message.is_empty() => s.message.clone(),
            _ => match e.http_payload() {
                Some(p) => String::from_utf8_lossy(p).chars().take(500).collect(),
                None => crate::class::chain(e),
            },
        };
        let mut out = GceError::new(code, status, message);
        if status.is_none() && code.is_none() {
            out.class = if e.is_authentication() {
                ErrorClass::Auth
            } else {
                ErrorClass::Transient
            };
        }
        out
    }

    /// The error inside a finished operation, if it failed.
    pub fn of_operation(op: &Operation) -> Option<Self> {
        let errors = op.error.as_ref().map(|e| &e.errors[..]).unwrap_or(&[]);
        let status = op
            .http_error_status_code
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| *s >= 400);
        if errors.is_empty() && status.is_none() {
            return None;
        }
        let code = errors
            .iter()
            .filter_map(|e| e.code.as_deref())
            .find(|c| classify_code(c).is_some())
            .or_else(|| errors.iter().find_map(|e| e.code.as_deref()));
        let message = errors
            .iter()
            .filter_map(|e| e.message.as_deref())
            .collect::<Vec<_>>()
            .join("; ");
        let message = if message.is_empty() {
            op.http_error_message.clone().unwrap_or_default()
        } else {
            message
        };
        let mut e = GceError::new(code, status, message);
        e.answered = true;
        Some(e)
    }

    /// Whether the thing named is gone (for a delete: done already).
    pub fn is_not_found(&self) -> bool {
        self.class == ErrorClass::NotFound
    }

    /// Whether a create was refused because the thing exists already (made by an earlier call
    /// whose answer was lost): `alreadyExists` from the call, `RESOURCE_ALREADY_EXISTS` from its
    /// operation.
    pub fn is_already_there(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("alreadyExists" | "RESOURCE_ALREADY_EXISTS")
        )
    }
}

impl fmt::Display for GceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, self.http_status) {
            (Some(c), Some(s)) => write!(f, "{c} (HTTP {s}): {}", self.message),
            (Some(c), None) => write!(f, "{c}: {}", self.message),
            (None, Some(s)) => write!(f, "HTTP {s}: {}", self.message),
            (None, None) => write!(f, "no answer: {}", self.message),
        }
    }
}

impl std::error::Error for GceError {}

/// What to check when an error of `class` stops the work.
pub fn hint(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Auth => {
            "check the credentials (GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`) and the account's roles on the project"
        }
        ErrorClass::Quota => {
            "raise the quota in the console (IAM & Admin > Quotas) or ask for fewer or smaller machines"
        }
        ErrorClass::InvalidRequest => {
            "check the machine's gce options (image, machine type, network) against the project"
        }
        ErrorClass::Capacity => "try other zones or machine types, or later",
        ErrorClass::NotOffered => "pick a machine type or zone that offers it",
        ErrorClass::Transient => "Compute Engine did not answer or failed inside; try again",
        _ => "see the message",
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_compute_v1::model::operation;

    use super::*;

    fn op(code: &str, status: i32) -> Operation {
        Operation::new()
            .set_http_error_status_code(status)
            .set_error(
                operation::Error::new().set_errors([operation::error::Errors::new()
                    .set_code(code)
                    .set_message("the zone does not have enough resources")]),
            )
    }

    #[test]
    fn stockouts_inside_operations_are_capacity_whatever_the_status() {
        for code in [
            "ZONE_RESOURCE_POOL_EXHAUSTED",
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
            "REGION_RESOURCE_POOL_EXHAUSTED",
        ] {
            let e = GceError::of_operation(&op(code, 503)).unwrap();
            assert_eq!(e.class, ErrorClass::Capacity, "{code}");
            assert_eq!(e.code.as_deref(), Some(code));
            assert!(e.to_string().starts_with(code), "{e}");
        }
        assert_eq!(
            GceError::of_operation(&op("QUOTA_EXCEEDED", 403))
                .unwrap()
                .class,
            ErrorClass::Quota
        );
        assert_eq!(
            GceError::of_operation(&op("SOMETHING_NEW", 503))
                .unwrap()
                .class,
            ErrorClass::Transient
        );
        assert!(GceError::of_operation(&Operation::new()).is_none());
    }

    #[test]
    fn codes_decide_before_statuses() {
        assert_eq!(
            GceError::new(Some("quotaExceeded"), Some(403), "").class,
            ErrorClass::Quota
        );
        assert_eq!(
            GceError::new(Some("forbidden"), Some(403), "").class,
            ErrorClass::Auth
        );
        assert_eq!(
            GceError::new(Some("rateLimitExceeded"), Some(403), "").class,
            ErrorClass::Transient
        );
        assert_eq!(
            GceError::new(None, Some(404), "").class,
            ErrorClass::NotFound
        );
        assert_eq!(
            GceError::new(Some("invalid"), Some(400), "").class,
            ErrorClass::InvalidRequest
        );
        assert_eq!(GceError::new(None, Some(418), "").class, ErrorClass::Other);
        assert_eq!(
            classify_code("CPUS_QUOTA_EXCEEDED"),
            Some(ErrorClass::Quota)
        );
    }
}
