//! Processes that try to outlive their step, one way each, against any executor: none may be
//! left running when the step timed out, was cancelled, or ended by itself (after which teardown
//! and cleanup would find nothing of it; there is nothing later for them to end).
//!
//! Survivors are looked for from outside the executor, on this machine's `/proc`, by a variable
//! the test puts in the step's environment (children inherit it wherever they go); the SSH tests'
//! sshd runs on this machine too.

use std::time::Duration;

use qa_core::conformance::executor::RecordedOutput;
use qa_core::remote::{CommandSpec, OutputStream, RemoteExecutor};
use qa_testkit::procs::processes_with_env;
use tokio_util::sync::CancellationToken;

/// The variable that marks a test's processes.
const MARK: &str = "QA_TEST_ESCAPE_MARK";

/// A way for a step's child to get away from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// A new session (and so a new process group), output sent elsewhere.
    Setsid,
    /// Fork, new session, fork again, and the middle process exits: the daemon's way.
    DoubleFork,
    /// `nohup`, immune to hangups, output sent elsewhere.
    Nohup,
    /// A new session working outside the work directory.
    CdAway,
    /// A new session still holding the step's output open.
    HeldPipe,
}

impl Escape {
    /// Shell text starting the escaping child (a `sleep 600`) in the background.
    fn start(self) -> &'static str {
        match self {
            Escape::Setsid => "setsid sleep 600 > /dev/null 2>&1 < /dev/null &",
            Escape::DoubleFork => {
                "( setsid sh -c 'sleep 600 & exit 0' > /dev/null 2>&1 < /dev/null & )"
            }
            Escape::Nohup => "nohup sleep 600 > /dev/null 2>&1 < /dev/null &",
            Escape::CdAway => {
                "cd / && setsid sh -c 'cd /tmp && exec sleep 600' > /dev/null 2>&1 < /dev/null &"
            }
            Escape::HeldPipe => "setsid sleep 600 &",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Timeout,
    Cancel,
    Exit,
}

fn unique_mark(form: Escape, ending: Ending) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{form:?}-{ending:?}-{}-{t}", std::process::id())
}

/// Runs the escape once per way a step can end and asserts that nothing of it survives.
pub async fn leaves_no_survivor(exec: &dyn RemoteExecutor, form: Escape) {
    for ending in [Ending::Timeout, Ending::Cancel, Ending::Exit] {
        let mark = unique_mark(form, ending);
        let tail = match ending {
            Ending::Timeout | Ending::Cancel => "exec sleep 600",
            Ending::Exit => "exit 0",
        };
        let spec = CommandSpec::new(format!("{}\necho started; {tail}", form.start()))
            .timeout(match ending {
                Ending::Timeout => Duration::from_secs(2),
                _ => Duration::from_secs(600),
            })
            .env(MARK, mark.clone());
        let out = RecordedOutput::new();
        let token = CancellationToken::new();
        let run = exec.run(&spec, out.clone(), token.clone());
        let control = async {
            if let Ending::Cancel = ending {
                assert!(
                    out.wait_for(OutputStream::Stdout, "started", Duration::from_secs(60))
                        .await,
                    "{form:?}: the step did not start"
                );
                // The step's shell and its escaping child (which may still be on its way
                // through exec, when its environment cannot be read).
                let mut running = processes_with_env(MARK, &mark);
                for _ in 0..6000 {
                    if running.len() >= 2 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    running = processes_with_env(MARK, &mark);
                }
                assert!(
                    running.len() >= 2,
                    "{form:?}: the step and its escaping child should both run: {running:?}"
                );
                token.cancel();
            }
        };
        let (info, ()) = tokio::join!(run, control);
        let info = info.unwrap();
        let notes = out.notes();
        match ending {
            Ending::Timeout => assert!(info.timed_out, "{form:?}: {info:?}"),
            Ending::Cancel => assert!(info.cancelled && !info.timed_out, "{form:?}: {info:?}"),
            Ending::Exit => {
                // Ended by its main process, not by the timeout, with its status.
                assert!(info.success(), "{form:?}: {info:?} {notes:?}");
                // A double fork leaves the intermediate shell exiting while its child starts:
                // which of the two the scan meets first (and names) is a race, so only the
                // other forms are held to naming `sleep 600`; all are held to ending it.
                assert!(
                    notes.iter().any(|n| n.contains("ended ")
                        && (form == Escape::DoubleFork || n.contains("sleep 600"))),
                    "{form:?}: the ended process is named in the log: {notes:?}"
                );
                if form == Escape::HeldPipe {
                    assert!(
                        notes.iter().any(|n| n.contains("held its output open")),
                        "{form:?}: {notes:?}"
                    );
                }
                // ... and in the step's result.
                assert!(
                    info.leftovers.iter().any(|n| n.starts_with("ended ")
                        && (form == Escape::DoubleFork || n.contains("sleep 600"))),
                    "{form:?}: the ended process is named in the result: {info:?}"
                );
            }
        }
        for said in &info.leftovers {
            assert!(
                notes.contains(said),
                "{form:?}: {said:?} is not in {notes:?}"
            );
        }
        assert_eq!(
            processes_with_env(MARK, &mark),
            Vec::<String>::new(),
            "{form:?} survived {ending:?}; notes: {notes:?}"
        );
        assert_eq!(out.text(OutputStream::Stdout).trim(), "started");
    }
}
