//! The clouds of a build without cloud features (`--no-default-features`): the same functions as
//! `enabled.rs`, none of which reaches a cloud. A plan that needs one is refused by the engine's
//! check, which names the feature to build; the janitor says this build has no cloud backend.

use qa_core::engine::Engine;

use super::{CloudError, Clouds, JanitorOptions};
use crate::error::CliError;

/// Returns the engine as it is: there is no cloud backend to add. A plan that needs one is
/// refused by the engine's check, with the feature to build.
pub async fn with_clouds(engine: Engine, _clouds: &Clouds) -> Result<Engine, CloudError> {
    Ok(engine)
}

/// Refuses: the janitor looks only at cloud resources.
pub async fn janitor(_options: JanitorOptions) -> Result<i32, CliError> {
    Err(CloudError::NotBuiltIn {
        needed_by: "the janitor looks at cloud resources",
    }
    .into())
}
