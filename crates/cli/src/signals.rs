//! Ctrl-C and SIGTERM during a run. The first asks the run to stop: running steps are
//! interrupted and teardown still runs, so the run ends by itself with exit code 130. The second
//! marks the journal `aborted` and exits at once with 130; `qa-run cleanup` removes what is left.

use std::sync::Arc;

use qa_core::dag::RunCancel;
use qa_core::exit;
use qa_core::journal::{RunJournal, RunStatus};

use crate::progress::Progress;

/// Watches for interrupts while a run goes; at the second one, writes the journal and exits.
pub(crate) async fn watch_signals(
    cancel: RunCancel,
    journal: Arc<RunJournal>,
    sink: Arc<Progress>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
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
    let _ = journal.flush_blocking();
    eprintln!(
        "aborted: teardown may be incomplete; run `qa-run cleanup {}`",
        journal
            .path()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    std::process::exit(exit::INTERRUPTED);
}
