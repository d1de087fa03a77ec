//! SSH executor.
