//! Disabled reservation.
