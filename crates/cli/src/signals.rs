//! Ctrl-C and SIGTERM during a run. The first asks the run to stop: running steps are
//! interrupted and teardown still runs, so the run ends by itself with exit code 130. The second
//! marks the journal `aborted` and hands the command a [`CliError::Aborted`], so it stops
//! waiting for teardown and exits at once; `qa-run cleanup` removes what is left.

use std::path::Path;
use std::sync::Arc;

use qa_core::dag::RunCancel;
use qa_core::journal::{RunJournal, RunStatus};

use crate::error::CliError;
use crate::progress::Progress;

/// Watches for interrupts while a run goes, and returns at the second one, once the journal
/// says `aborted`. Never returns if the signal handlers cannot be installed.
pub(crate) async fn watch_signals(
    cancel: RunCancel,
    journal: Arc<RunJournal>,
    sink: Arc<Progress>,
) -> CliError {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    sink.message(
        "interrupted: stopping running steps, then tearing down (interrupt again to exit at once)",
    );
    cancel.soft.cancel();
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    journal.update(|s| {
        s.status = RunStatus::Aborted;
        s.finished = Some(qa_core::now_rfc3339());
    });
    // The asynchronous flush waits for a write already under way, so an older state cannot
    // land on top of this one. A journal that cannot be written changes nothing here: the
    // message still points at cleanup, which reads what was last written.
    let _ = journal.flush().await;
    CliError::Aborted {
        run_dir: journal
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    }
}
