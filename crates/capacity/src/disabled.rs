//! The reservation of a plan that reserves nothing: always enabled = false, every call a no-op.

use async_trait::async_trait;
use qa_core::journal::ResourceLedger;
use qa_core::plan::BackendKind;
use qa_core::{CapacityError, CapacityRequest, CapacityReservation, Placement, TestId};

/// Reserves nothing.
#[derive(Debug, Clone, Copy)]
pub struct NoReservation {
    backend: BackendKind,
}

impl NoReservation {
    /// For a backend that has no reservations (or a plan that asks for none).
    pub fn new(backend: BackendKind) -> Self {
        NoReservation { backend }
    }
}

#[async_trait]
impl CapacityReservation for NoReservation {
    fn backend(&self) -> BackendKind {
        self.backend
    }
    fn is_enabled(&self) -> bool {
        false
    }
    async fn reserve(
        &self,
        request: &CapacityRequest,
        _: &dyn ResourceLedger,
    ) -> Result<Placement, CapacityError> {
        Ok(Placement {
            zone: request.zones.first().cloned().unwrap_or_default(),
            reservations: Default::default(),
        })
    }
    fn get_id(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    async fn cancel(&self, _: &TestId) -> Result<u32, CapacityError> {
        Ok(0)
    }
    async fn cancel_all_regions(&self, _: &TestId) -> Result<u32, CapacityError> {
        Ok(0)
    }
}
