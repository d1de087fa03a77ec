//! qa-capacity: capacity reservations.
//!
//! - [`fallback`]: the zone-fallback algorithm every cloud shares.
//! - `aws` (feature `aws`): EC2 capacity reservations.
#![warn(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod fallback;
