//! Local process executor.
