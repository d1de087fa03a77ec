//! Plan files: the YAML a user writes, its typed model, and the loader that reports every problem
//! at once with file, line, column, key path and a hint.
//!
//! Loading goes YAML → spanned tree (`tree`) → walk against the schema (`schema`: unknown keys,
//! types, enum values, durations) → typed [`Plan`] → semantic checks (`load`: names, references,
//! cycles, files), each problem placed in the file. The format is documented in `docs/plan.md`.
//!
//! ```
//! let src = "name: demo\nmachines:\n  - name: box\nsteps:\n  - name: hello\n    command: echo hi\n";
//! let plan = qa_core::plan::load_str(src, "demo.yaml".as_ref()).unwrap();
//! assert_eq!(plan.plan.steps[0].name, "hello");
//! ```

mod build;
mod diag;
mod duration;
mod load;
mod locate;
mod model;
pub mod schema;
mod size;
mod tree;
mod values;

pub use diag::{Diagnostic, PlanError};
pub use duration::PlanDuration;
pub use load::{LoadedPlan, load_file, load_file_with, load_str, load_str_with};
pub(crate) use locate::locate;
pub use model::*;
pub use size::ByteSize;
pub use values::{MAX_CONCURRENCY, MAX_PLAN_BYTES};
