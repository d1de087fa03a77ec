//! Integration tests of qa-core: what a user of the library sees.

mod plans;
mod run_cost;
mod run_keepalive;
mod run_shared;
