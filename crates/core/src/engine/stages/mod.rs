//! What each kind of task does: machines (provision, ready, upload, collect, teardown), steps,
//! capacity (reserve, release, keepalive) and results (the report, written once and published).

pub(super) mod capacity;
mod machine;
mod results;
mod step;
