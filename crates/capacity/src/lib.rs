//! qa-capacity: capacity reservations.
//!
//! - [`fallback`]: the zone-fallback algorithm every cloud shares.
//! - `aws` (feature `aws`): EC2 capacity reservations.
//! - [`disabled`]: the reservation used when a plan reserves nothing.
#![warn(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod disabled;
pub mod fallback;
