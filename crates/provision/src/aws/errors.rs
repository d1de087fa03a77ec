//! The provisioner's errors: every EC2 failure becomes a [`ProvisionError`] that names the call,
//! gives EC2's code and message with a hint for its [`ErrorClass`], and says what it left
//! behind. A create refused by EC2 made nothing; one that got no answer may have made something,
//! which teardown must look for.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use qa_cloud::aws::errors::{ErrorClass, answered, classify, describe};
use qa_core::journal::ResourceLedger;
use qa_core::types::ResourceKey;
use qa_core::{Leftovers, ProvisionError};

use super::AWS_BACKEND;

/// What the provisioner's steps return.
pub(super) type PResult<T> = Result<T, ProvisionError>;

/// An error of the EC2 backend about `machine` (or the run), leaving `leftovers`.
pub(super) fn err(
    machine: Option<&str>,
    message: impl Into<String>,
    leftovers: Leftovers,
) -> ProvisionError {
    ProvisionError::new(AWS_BACKEND, machine, message, leftovers)
}

/// What a user can do about an error of this class.
fn hint(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Auth => " (check credentials and IAM permissions)",
        ErrorClass::Quota => " (an account limit: ask for more or use fewer resources)",
        // Every EC2 not-found code is an `Invalid…` one: an id or name the plan gave.
        ErrorClass::InvalidRequest | ErrorClass::NotFound => " (check the plan's aws section)",
        _ => "",
    }
}

/// An EC2 call's error: `call: Code: message (hint)`, with the SDK error as its source.
pub(super) fn api_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    machine: Option<&str>,
    call: &str,
    e: E,
    leftovers: Leftovers,
) -> ProvisionError {
    let hint = hint(classify(&e));
    err(
        machine,
        format!("{call}: {}{hint}", describe(&e)),
        leftovers,
    )
    .with_source(e)
}

/// An error of a create call: refused by EC2 (nothing made: [`Leftovers::Clear`]) or not
/// answered (it may exist: the resource under `key` remains for teardown). Closing a refused
/// intent is [`close_if_refused`]'s, as the caller owns the ledger.
pub(super) fn refused_or_unknown<E>(
    machine: Option<&str>,
    call: &str,
    e: SdkError<E>,
    key: &ResourceKey,
) -> ProvisionError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    SdkError<E>: ProvideErrorMetadata,
{
    let left = if answered(&e) {
        Leftovers::Clear
    } else {
        Leftovers::Remaining(vec![key.clone()])
    };
    api_error(machine, call, e, left)
}

/// A create refused by EC2 made nothing: its intent is closed.
pub(super) async fn close_if_refused(
    ledger: &dyn ResourceLedger,
    key: &ResourceKey,
    e: ProvisionError,
) -> ProvisionError {
    if e.leftovers == Leftovers::Clear {
        let _ = ledger.destroyed(key).await;
    }
    e
}

/// Names the machine in an error about the run's shared resources made for it.
pub(super) fn named(mut e: ProvisionError, machine: &str) -> ProvisionError {
    if e.machine.is_none() {
        e.machine = Some(machine.to_string());
    }
    e
}

/// Adds resources made earlier in the same `create` to an error's leftovers.
pub(super) fn with_leftovers(mut e: ProvisionError, earlier: &[ResourceKey]) -> ProvisionError {
    e.leftovers = match e.leftovers {
        Leftovers::Clear => Leftovers::Remaining(earlier.to_vec()),
        Leftovers::Remaining(mut keys) => {
            for k in earlier {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            Leftovers::Remaining(keys)
        }
        other => other,
    };
    e
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::error::ErrorMetadata;

    use super::*;

    #[test]
    fn earlier_resources_join_an_errors_leftovers() {
        let k = ResourceKey("aws/key-pair/x".into());
        let e = with_leftovers(err(None, "x", Leftovers::Clear), std::slice::from_ref(&k));
        assert_eq!(e.leftovers, Leftovers::Remaining(vec![k]));
    }

    fn message(code: &str) -> String {
        let e = ErrorMetadata::builder()
            .code(code)
            .message("refused")
            .build();
        api_error(Some("web"), "RunInstances", e, Leftovers::Clear).message
    }

    #[test]
    fn errors_say_the_call_the_code_and_what_to_check() {
        assert_eq!(
            message("UnauthorizedOperation"),
            "RunInstances: UnauthorizedOperation: refused (check credentials and IAM permissions)"
        );
        assert!(
            message("VcpuLimitExceeded")
                .ends_with("(an account limit: ask for more or use fewer resources)")
        );
        assert!(message("InvalidAMIID.NotFound").ends_with("(check the plan's aws section)"));
        assert!(message("InvalidParameterValue").ends_with("(check the plan's aws section)"));
        assert_eq!(
            message("InsufficientInstanceCapacity"),
            "RunInstances: InsufficientInstanceCapacity: refused"
        );
    }
}
