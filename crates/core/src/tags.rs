//! The names of the tags (labels, freeform tags) qa-run puts on every resource it makes, so
//! that a sweep, a janitor or a person can tell whose it is and until when it may live. Backends
//! whose tag rules forbid a character (`:`) map these names; they never spell their own.

/// The test id: what `qa-run cleanup --test-id` sweeps by.
pub const TEST_ID: &str = "qa-run:test-id";
/// The run id.
pub const RUN_ID: &str = "qa-run:run-id";
/// The plan's name.
pub const PLAN: &str = "qa-run:plan";
/// Who ran it.
pub const USER: &str = "qa-run:user";
/// When the janitor may remove it (RFC 3339).
pub const KEEP_UNTIL: &str = "qa-run:keep-until";
/// The idempotency token of the create call.
pub const CLIENT_TOKEN: &str = "qa-run:client-token";
/// Always [`CREATED_BY_VALUE`]: marks what qa-run made, for the janitor.
pub const CREATED_BY: &str = "created-by";
/// The value of [`CREATED_BY`].
pub const CREATED_BY_VALUE: &str = "qa-run";
