//! qa-capacity: capacity reservations.
//!
//! - [`fallback`]: the zone-fallback algorithm every cloud shares.
//! - [`disabled`]: the reservation used when a plan reserves nothing.
#![warn(missing_docs)]

pub mod disabled;
pub mod fallback;
