//! One process at a time in a run directory: `run.lock`, an OS file lock (`flock`) taken by
//! whatever works there — a run for its whole life, a resume for its whole life, a cleanup, a
//! publish — with the holder (program, command, pid, host, since when) written into the file so
//! that a refusal can name it.
//!
//! The kernel releases the lock when its holder's process ends, however it ends (a crash, a
//! `kill -9`, a power cut), so a lock left by a dead process is free again by construction: there
//! is no stale lock to break by hand. The file itself stays (an empty file once released);
//! removing it could let two processes lock two different files of the same name.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::EngineError;

/// Name of the lock file in a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// What a process does in a run directory while it holds its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunDirUse {
    Plan,
    Run,
    Resume,
    Cleanup,
    Publish,
}

impl RunDirUse {
    /// The command's name, as written into the lock file.
    fn command(self) -> &'static str {
        match self {
            RunDirUse::Plan => "plan",
            RunDirUse::Run => "run",
            RunDirUse::Resume => "resume",
            RunDirUse::Cleanup => "cleanup",
            RunDirUse::Publish => "publish",
        }
    }

    /// What was refused, for the message.
    fn verb(self) -> &'static str {
        match self {
            RunDirUse::Plan => "plan",
            RunDirUse::Run => "run",
            RunDirUse::Resume => "resume",
            RunDirUse::Cleanup => "clean up",
            RunDirUse::Publish => "publish",
        }
    }
}

/// Who holds a run directory's lock, as it wrote itself into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct LockHolder {
    /// The holder's program (`qa-run`, or the harness that embeds the engine).
    pub program: String,
    /// What it does there: `run`, `resume`, `cleanup`, `publish` or `plan`.
    pub command: String,
    /// Its process id.
    pub pid: u32,
    /// The host it runs on (a results directory may be shared over the network).
    pub host: String,
    /// When it took the lock, RFC 3339.
    pub since: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (pid {} on {}, since {})",
            self.program, self.command, self.pid, self.host, self.since
        )
    }
}

/// The refusal when another process holds a run directory's lock.
pub(crate) fn in_use(run_dir: &Path, wanted: RunDirUse, holder: Option<LockHolder>) -> EngineError {
    EngineError::RunInUse {
        run_dir: run_dir.to_path_buf(),
        wanted: wanted.verb(),
        holder: holder.map(Box::new),
    }
}

/// A held lock on a run directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct RunLock {
    file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir` (an existing directory) for `purpose`, without waiting: if
    /// another process holds it, the error names that process.
    pub(crate) fn acquire(run_dir: &Path, purpose: RunDirUse) -> Result<RunLock, EngineError> {
        let path = run_dir.join(LOCK_FILE);
        let io = |what: &str, source| EngineError::Io {
            context: format!("{what} {}", path.display()),
            source,
        };
        // Not truncated on open: the holder's name must stay readable to whoever is refused.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("opening the lock file", e))?;
        loop {
            // SAFETY: flock on a file descriptor this function owns, open for its whole call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {
                    return Err(in_use(run_dir, purpose, read_holder(&file)));
                }
                _ => return Err(io("locking", e)),
            }
        }
        let holder = LockHolder {
            program: program_name(),
            command: purpose.command().to_string(),
            pid: std::process::id(),
            host: host_name(),
            since: crate::now_rfc3339(),
        };
        let text = serde_json::to_string(&holder).expect("a lock holder serialises") + "\n";
        file.set_len(0)
            .and_then(|()| file.write_all_at(text.as_bytes(), 0))
            .map_err(|e| io("writing the lock holder into", e))?;
        Ok(RunLock { file })
    }

    /// Who holds the lock of `run_dir` now, if anyone: `Some(None)` when it is held by a process
    /// that has not written its name yet.
    #[cfg(test)]
    #[allow(clippy::option_option)] // free, held by someone unnamed, held by a named holder
    pub(crate) fn holder(run_dir: &Path) -> Option<Option<LockHolder>> {
        let file = File::open(run_dir.join(LOCK_FILE)).ok()?;
        // SAFETY: as in `acquire`; a shared lock taken only to test, released at once.
        let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            // SAFETY: as above.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return None;
        }
        Some(read_holder(&file))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Emptied while still held, so that the file never names a process that has let go.
        // Closing the file releases the lock.
        let _ = self.file.set_len(0);
    }
}

/// The holder a lock file names, if it has written itself yet.
fn read_holder(mut file: &File) -> Option<LockHolder> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// This program's file name.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "qa-run".into())
}

/// This host's name.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown host".into()
    }
}

/// `run_dir` if it is a run's directory (it has a journal or a report), else the refusal: a lock
/// file is never made in a directory that is not a run's.
pub(crate) fn check_run_dir(run_dir: &Path) -> Result<(), EngineError> {
    let is_run = [crate::journal::JOURNAL_FILE, super::layout::REPORT_FILE]
        .iter()
        .any(|f| run_dir.join(f).is_file());
    if is_run {
        Ok(())
    } else {
        Err(EngineError::NotARunDir {
            path: PathBuf::from(run_dir),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_others_and_names_its_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RunLock::holder(dir.path()), None);
        let held = RunLock::acquire(dir.path(), RunDirUse::Run).unwrap();
        // flock locks belong to an open file, so a second open in this process is refused too.
        let e = RunLock::acquire(dir.path(), RunDirUse::Cleanup).unwrap_err();
        let EngineError::RunInUse {
            wanted,
            holder: Some(holder),
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(*wanted, "clean up");
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.command, "run");
        assert_eq!(holder.host, host_name());
        assert_eq!(RunLock::holder(dir.path()), Some(Some(*holder.clone())));
        let text = e.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains(" run "),
            "{text}"
        );
        drop(held);
        assert_eq!(RunLock::holder(dir.path()), None);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            "",
            "a released lock file names nobody"
        );
        let again = RunLock::acquire(dir.path(), RunDirUse::Resume).unwrap();
        assert_eq!(
            RunLock::holder(dir.path()).unwrap().unwrap().command,
            "resume"
        );
        drop(again);
    }

    #[test]
    fn a_lock_held_by_a_process_that_died_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        // A process that takes the lock, writes a holder and is killed while holding it.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 9>>'{}' && flock -n 9 && echo '{{\"program\":\"x\"}}' >&9 && echo locked && exec sleep 600",
                lock.display()
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            "locked",
            "the util-linux `flock` command is needed"
        );
        assert!(matches!(
            RunLock::acquire(dir.path(), RunDirUse::Resume),
            Err(EngineError::RunInUse { holder: None, .. })
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        let taken = RunLock::acquire(dir.path(), RunDirUse::Resume).unwrap();
        assert_eq!(
            RunLock::holder(dir.path()).unwrap().unwrap().pid,
            std::process::id()
        );
        drop(taken);
    }
}
