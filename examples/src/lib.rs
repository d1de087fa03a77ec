//! Example programs that embed qa-run's libraries. They live beside this file:
//!
//! - `embed.rs`: a harness that builds a plan in code, registers a step type of its own and runs
//!   the plan on the local backend (`cargo run -p qa-examples --example embed`).
//! - `custom_provisioner.rs`: a minimal provisioner of one's own that passes the provisioner
//!   conformance suite (`cargo run -p qa-examples --example custom_provisioner`).
//!
//! - `custom_cloud.rs`: a cloud of one's own (descriptor, provisioner and capacity reservation)
//!   registered by name, and a plan with `backend: toy-cloud` run through the engine
//!   (`cargo run -p qa-examples --example custom_cloud`).
//!
//! Example plans for the `qa-run` binary are in `plans/`.
