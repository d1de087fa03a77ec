//! What a cloud's error means to qa-run, whatever the cloud: the classes each cloud's own table
//! (`aws::errors`, `gce::errors`) sorts its error codes into, so that the provisioners, the
//! capacity reservations and the fallback between zones and clouds read every cloud alike.

/// What a cloud's error code means for the caller: move on, stop, or treat it as gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The zone has no capacity for the request now: try another zone, or on demand.
    Capacity,
    /// What was asked for is not offered there (machine type or option in that zone).
    NotOffered,
    /// An account quota or limit.
    Quota,
    /// Credentials, permissions, or an account not opted in.
    Auth,
    /// The request itself is wrong (a parameter, an id, a name).
    InvalidRequest,
    /// The cloud failed inside, throttled the call, or did not answer; the same call may work
    /// later.
    Transient,
    /// The thing named is gone (or never was): for a delete, done already.
    NotFound,
    /// Anything else.
    Other,
}

/// An error and its causes, `: `-separated (a connection or timeout error, where the chain says
/// which).
#[cfg(any(feature = "aws", feature = "gce"))]
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
