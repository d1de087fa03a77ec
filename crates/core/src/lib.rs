//! qa-core: the heart of qa-run.
//!
//! It holds the plan model and its validation ([`plan`]), the domain types ([`types`]), the four
//! traits every backend implements ([`Provisioner`], [`CapacityReservation`], [`RemoteExecutor`],
//! [`ResultPublisher`]), the generic DAG runner ([`dag`]), the stage graph a plan expands into
//! ([`stages`]), the engine that runs a plan ([`engine`]), the run journal ([`journal`]), the
//! report format ([`report`]), events ([`events`]) and exit codes ([`exit`]).
//!
//! Backends live in other crates (qa-provision, qa-capacity, qa-remote, qa-publish); the
//! conformance suites in `conformance` (behind the cargo feature of that name, for backends'
//! tests; not a stable part of the API) are what every one of them must pass.
//!
#![doc = include_str!("guide.md")]
#![warn(missing_docs)]

pub mod backend;
pub mod capacity;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod construct;
pub mod dag;
pub mod engine;
pub mod events;
pub mod exit;
pub mod journal;
pub mod plan;
pub mod provision;
pub mod publish;
pub mod recorder;
pub mod redact;
pub mod remote;
pub mod report;
pub mod stages;
pub mod tags;
pub mod types;

pub use backend::{
    Backend, BackendDescriptor, BackendName, BackendRegistry, Janitor, RegistryError, SweepScope,
};
pub use capacity::{CapacityError, CapacityRequest, CapacityReservation, Placement};
pub use provision::{MachineRequest, ProvisionError, Provisioner, RunContext};
pub use publish::{PublishError, PublishReceipt, ResultPublisher};
pub use remote::{
    CommandSpec, Connector, ExitInfo, OutputSink, OutputStream, RemoteError, RemoteExecutor,
};
pub use types::*;

// Foreign types in qa-core's signatures, so that an embedding program names them without
// depending on (and matching the versions of) the crates they come from.
pub use async_trait::async_trait;
pub use futures_core::Stream;
pub use serde_json;
pub use tokio_util::sync::CancellationToken;

/// What an embedding program usually needs, in one `use qa_core::prelude::*;`.
pub mod prelude {
    pub use crate::backend::{
        Backend, BackendDescriptor, BackendName, BackendRegistry, ReservationNeed, SweepScope,
    };
    pub use crate::dag::RunCancel;
    pub use crate::engine::{
        Engine, EngineError, PreparedRun, RunOptions, RunSummary, SetupError, StepContext,
        StepOutcome, StepType,
    };
    pub use crate::events::{Event, EventRecord, EventSink, EventStream, TaskId, TaskKind};
    pub use crate::plan::{LoadedPlan, MachineSpec, Plan, StepSpec};
    pub use crate::{CancellationToken, async_trait};
    pub use crate::{
        CapacityReservation, CommandSpec, Connector, ExitInfo, Machine, OutputSink, OutputStream,
        Provisioner, PublishError, PublishReceipt, RemoteError, RemoteExecutor, ResultPublisher,
        Verdict,
    };
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
