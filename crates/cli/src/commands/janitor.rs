//! `qa-run janitor`: list the cloud resources qa-run made that outlived their keep-until tag,
//! and remove them with `--yes`. The work is the cloud's (`clouds::janitor`); a build without a
//! cloud backend says so.

use std::time::Duration;

use crate::clouds::{self, JanitorOptions};
use crate::error::CliError;

/// Runs the janitor over what expired at least `older_than` ago.
pub(super) async fn janitor(
    older_than: Duration,
    yes: bool,
    all_regions: bool,
) -> Result<i32, CliError> {
    clouds::janitor(JanitorOptions {
        older_than,
        remove: yes,
        all_regions,
    })
    .await
}
