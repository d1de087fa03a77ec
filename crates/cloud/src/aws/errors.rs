//! What an EC2 error means to qa-run: one classification of EC2's error codes ([`ErrorClass`],
//! [`classify_code`]) and one way to put an error into words ([`describe`]), for the
//! provisioner and the capacity reservations alike.
//!
//! The table, checked in this order (the first match wins):
//!
//! | class | codes |
//! | --- | --- |
//! | [`NotFound`](ErrorClass::NotFound) | `*.NotFound`, `*.Unknown`, `*.Malformed` (e.g. `InvalidInstanceID.NotFound`, `InvalidGroup.NotFound`, `InvalidPlacementGroup.Unknown`) |
//! | [`Capacity`](ErrorClass::Capacity) | `InsufficientInstanceCapacity`, `InsufficientCapacity`, `InsufficientReservedInstanceCapacity`, `InsufficientHostCapacity`, `InsufficientCapacityOnHost`, `SpotMaxPriceTooLow` |
//! | [`NotOffered`](ErrorClass::NotOffered) | `Unsupported` (the type or option is not offered in that zone) |
//! | [`Auth`](ErrorClass::Auth) | `AuthFailure`, `UnauthorizedOperation`, `Blocked`, `OptInRequired`, `SignatureDoesNotMatch` |
//! | [`Quota`](ErrorClass::Quota) | any code containing `LimitExceeded` (`InstanceLimitExceeded`, `VcpuLimitExceeded`, `RequestLimitExceeded`, …), `ReservationCapacityExceeded` |
//! | [`InvalidRequest`](ErrorClass::InvalidRequest) | any other code starting with `Invalid`, `MissingParameter` |
//! | [`Transient`](ErrorClass::Transient) | `InternalError`, `InternalFailure`, `ServiceUnavailable`, `Unavailable`; and an error without a code (no answer: connection, timeout) |
//! | [`Other`](ErrorClass::Other) | everything else |
//!
//! Every EC2 not-found code starts with `Invalid`; a caller that reports a not-found id in a
//! request as a bad request treats [`NotFound`](ErrorClass::NotFound) like
//! [`InvalidRequest`](ErrorClass::InvalidRequest).
//!
//! The SDK retries throttling (`RequestLimitExceeded`) and transient errors itself before a
//! caller sees them (except on calls made with [`single_attempt`](super::config::single_attempt)),
//! so what reaches this table has outlived its retries.

use std::fmt;

use aws_sdk_ec2::error::ProvideErrorMetadata;

pub use crate::ErrorClass;

/// Classifies an EC2 error code (see the table in the [module docs](self)).
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        c if c.ends_with(".NotFound") || c.ends_with(".Unknown") || c.ends_with(".Malformed") => {
            ErrorClass::NotFound
        }
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientCapacityOnHost"
        | "SpotMaxPriceTooLow" => ErrorClass::Capacity,
        "Unsupported" => ErrorClass::NotOffered,
        "AuthFailure"
        | "UnauthorizedOperation"
        | "Blocked"
        | "OptInRequired"
        | "SignatureDoesNotMatch" => ErrorClass::Auth,
        c if c.contains("LimitExceeded") || c == "ReservationCapacityExceeded" => ErrorClass::Quota,
        c if c.starts_with("Invalid") || c == "MissingParameter" => ErrorClass::InvalidRequest,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            ErrorClass::Transient
        }
        _ => ErrorClass::Other,
    }
}

/// The class of an SDK error: its code's, or [`ErrorClass::Transient`] when EC2 gave no answer.
pub fn classify<E: ProvideErrorMetadata>(e: &E) -> ErrorClass {
    e.code().map_or(ErrorClass::Transient, classify_code)
}

/// Whether EC2 answered with an error code: the call was refused, so a create made nothing.
/// Without an answer (connection, timeout) the call may have taken effect.
pub fn answered<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code().is_some()
}

/// An error in words: `Code: message` when EC2 answered, else the error and its causes (a
/// connection or timeout error, where the chain says which).
pub fn describe<E: ProvideErrorMetadata + std::error::Error>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => crate::class::chain(e),
    }
}

/// An EC2 error as qa-run reads it: its class, EC2's own code and message, and the
/// [`describe`] text (its `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassifiedError {
    /// What it means.
    pub class: ErrorClass,
    /// EC2's error code, when EC2 answered.
    pub code: Option<String>,
    /// EC2's message, when it gave one.
    pub message: Option<String>,
    description: String,
}

impl ClassifiedError {
    /// Reads an SDK error.
    pub fn of<E: ProvideErrorMetadata + std::error::Error>(e: &E) -> Self {
        ClassifiedError {
            class: classify(e),
            code: e.code().map(str::to_string),
            message: e.message().map(str::to_string),
            description: describe(e),
        }
    }

    /// Whether EC2 answered (see [`answered`]).
    pub fn answered(&self) -> bool {
        self.code.is_some()
    }
}

impl fmt::Display for ClassifiedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::error::ErrorMetadata;

    use super::*;

    fn all(codes: &[&str], class: ErrorClass) {
        for c in codes {
            assert_eq!(classify_code(c), class, "{c}");
        }
    }

    #[test]
    fn gone_things_are_not_found_even_though_their_codes_start_with_invalid() {
        all(
            &[
                "InvalidInstanceID.NotFound",
                "InvalidGroup.NotFound",
                "InvalidKeyPair.NotFound",
                "InvalidPlacementGroup.Unknown",
                "InvalidInstanceID.Malformed",
            ],
            ErrorClass::NotFound,
        );
    }

    // Provisioning had SpotMaxPriceTooLow but not InsufficientReservedInstanceCapacity, capacity
    // reservations the reverse; both now move on for every one of them.
    #[test]
    fn capacity_codes_are_the_union_of_what_launches_and_reservations_meet() {
        all(
            &[
                "InsufficientInstanceCapacity",
                "InsufficientCapacity",
                "InsufficientReservedInstanceCapacity",
                "InsufficientHostCapacity",
                "InsufficientCapacityOnHost",
                "SpotMaxPriceTooLow",
            ],
            ErrorClass::Capacity,
        );
    }

    #[test]
    fn unsupported_is_not_offered() {
        all(&["Unsupported"], ErrorClass::NotOffered);
    }

    #[test]
    fn credential_and_permission_codes_are_auth() {
        all(
            &[
                "AuthFailure",
                "UnauthorizedOperation",
                "Blocked",
                "OptInRequired",
                "SignatureDoesNotMatch",
            ],
            ErrorClass::Auth,
        );
    }

    #[test]
    fn limits_are_quota() {
        all(
            &[
                "InstanceLimitExceeded",
                "ReservationLimitExceeded",
                "VcpuLimitExceeded",
                "ReservationCapacityExceeded",
            ],
            ErrorClass::Quota,
        );
    }

    #[test]
    fn other_invalid_codes_are_invalid_requests() {
        all(
            &[
                "InvalidParameterValue",
                "InvalidParameterCombination",
                "InvalidAMIID.Duplicate",
                "MissingParameter",
            ],
            ErrorClass::InvalidRequest,
        );
    }

    #[test]
    fn service_failures_are_transient() {
        all(
            &[
                "InternalError",
                "InternalFailure",
                "ServiceUnavailable",
                "Unavailable",
            ],
            ErrorClass::Transient,
        );
    }

    #[test]
    fn unknown_codes_are_other() {
        all(
            &["DependencyViolation", "IncorrectState", ""],
            ErrorClass::Other,
        );
    }

    #[derive(Debug)]
    struct Failed(ErrorMetadata);
    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("service error")
        }
    }
    impl std::error::Error for Failed {}
    impl ProvideErrorMetadata for Failed {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    #[test]
    fn an_answer_keeps_its_code_and_message_and_no_answer_is_transient() {
        let e = Failed(
            ErrorMetadata::builder()
                .code("InsufficientInstanceCapacity")
                .message("none left in eu-west-1a")
                .build(),
        );
        let c = ClassifiedError::of(&e);
        assert_eq!(c.class, ErrorClass::Capacity);
        assert_eq!(c.code.as_deref(), Some("InsufficientInstanceCapacity"));
        assert_eq!(c.message.as_deref(), Some("none left in eu-west-1a"));
        assert!(c.answered());
        assert_eq!(
            c.to_string(),
            "InsufficientInstanceCapacity: none left in eu-west-1a"
        );

        let silent = Failed(ErrorMetadata::builder().build());
        assert_eq!(classify(&silent), ErrorClass::Transient);
        assert!(!answered(&silent));
        assert_eq!(describe(&silent), "service error");
    }
}
