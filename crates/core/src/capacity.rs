//! The [`CapacityReservation`] trait: reserving capacity before machines are made.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;

use crate::backend::{BackendName, SweepScope};
use crate::journal::ResourceLedger;
use crate::types::{Leftovers, TestId};

/// What a run needs reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapacityRequest {
    /// Tag on every reservation.
    pub test_id: TestId,
    /// Region, if the backend has them.
    pub region: Option<String>,
    /// Instance count per instance type.
    pub needs: BTreeMap<String, u32>,
    /// Zones in preference order (empty: every zone that offers all the types).
    pub zones: Vec<String>,
    /// When reservations should end unless extended (unix seconds).
    pub end_unix: Option<i64>,
}

/// Where capacity was reserved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Placement {
    /// The zone.
    pub zone: String,
    /// Reservation id per instance type.
    pub reservations: BTreeMap<String, String>,
}

/// Why a reservation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapacityError {
    /// No zone had capacity for everything.
    #[error("no capacity in any of {}: {last}", tried.join(", "))]
    NoCapacity {
        /// Zones tried, in order.
        tried: Vec<String>,
        /// The last capacity message.
        last: String,
    },
    /// Credentials were refused; zone fallback stops at once.
    #[error("{backend}: not authorised: {message} (check credentials and permissions)")]
    Auth {
        /// The backend.
        backend: BackendName,
        /// The service's message.
        message: String,
    },
    /// An account quota or limit; zone fallback stops at once.
    #[error(
        "{backend}: quota or limit reached: {message} (ask for a higher limit or reserve less)"
    )]
    Quota {
        /// The backend.
        backend: BackendName,
        /// The service's message.
        message: String,
    },
    /// The request itself is wrong; zone fallback stops at once.
    #[error("{backend}: bad request: {message} (check instance types and zones in the plan)")]
    InvalidRequest {
        /// The backend.
        backend: BackendName,
        /// The service's message.
        message: String,
    },
    /// Anything else.
    #[error("{backend}: {message}")]
    Other {
        /// The backend.
        backend: BackendName,
        /// What went wrong.
        message: String,
        /// What exists now.
        leftovers: Leftovers,
    },
}

/// Journal kind of the records a [`CapacityReservation`] keeps (one per reservation); a
/// successful [`CapacityReservation::cancel`] ends all of its backend's.
pub const RESERVATION_KIND: &str = "reservation";

/// Reserves capacity, zone after zone.
///
/// # Contract
/// - `reserve` is all-or-nothing per zone: on a capacity error it cancels what that zone got and
///   tries the next; any other error stops at once. Every reservation is journaled as an intent
///   before it is requested and tagged with the test id.
/// - `cancel` and `cancel_all_regions` are idempotent and find reservations by tag, so they work
///   after a crash.
#[async_trait]
pub trait CapacityReservation: Send + Sync + Debug + 'static {
    /// The backend.
    fn backend(&self) -> BackendName;

    /// Whether reservations are made at all (a disabled one returns an empty placement).
    fn is_enabled(&self) -> bool;

    /// Reserves everything in one zone.
    async fn reserve(
        &self,
        request: &CapacityRequest,
        ledger: &dyn ResourceLedger,
    ) -> Result<Placement, CapacityError>;

    /// Reservation id for a type in a zone, once reserved.
    fn get_id(&self, zone: &str, instance_type: &str) -> Option<String>;

    /// The region a request without one reserves in, for backends with regions. The engine
    /// groups machines by region with it, so that machines that name the default region and
    /// machines that name none share one request.
    fn default_region(&self) -> Option<String> {
        None
    }

    /// Moves the end of this run's reservations to `end_unix`.
    async fn extend(&self, _test_id: &TestId, _end_unix: i64) -> Result<(), CapacityError> {
        Ok(())
    }

    /// Cancels every reservation tagged with the test id where `scope` says (the configured
    /// region, every region, or the regions a run's journal records name plus the configured
    /// one). Returns how many.
    async fn cancel(&self, test_id: &TestId, scope: SweepScope<'_>) -> Result<u32, CapacityError>;

    /// [`CapacityReservation::cancel`] in every region.
    async fn cancel_all_regions(&self, test_id: &TestId) -> Result<u32, CapacityError> {
        self.cancel(test_id, SweepScope::AllRegions).await
    }
}
