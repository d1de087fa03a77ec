//! qa-capacity: capacity reservations.
//!
//! - [`fallback`]: the zone-fallback algorithm every cloud shares.
//! - `aws` (feature `aws`): EC2 capacity reservations.
//! - `gce` (feature `gce`): Compute Engine specific reservations.
#![warn(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod fallback;
#[cfg(feature = "gce")]
pub mod gce;
