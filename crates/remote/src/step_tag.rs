//! The processes of a step, found by the tag in their environment.
//!
//! Every step runs with [`STEP_TAG_VAR`] set to a value of its own. Children inherit it through
//! everything a step may do to leave its process group: `setsid`, a double fork, `nohup`, a `cd`
//! out of the sandbox. So when a step ends, every process on the machine whose environment
//! carries the step's tag is one the step left behind, and is ended. Only a process that clears
//! its own environment (`env -i`) escapes this; a process started by a service manager
//! (`systemd-run`, `systemctl start`) is the service manager's, not the step's.
//!
//! The same search runs on SSH hosts as shell (see `ssh::shell`); this is the local one, reading
//! `/proc` directly. A process of another user is found only when this process may read its
//! environment (root may read every one).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub use qa_core::remote::STEP_TAG_VAR;

/// How long a step's output may stay open after its main process exited, for background
/// children to finish writing, before the processes still holding it are ended.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How long after a scan that found nothing the second one looks (see [`end_tagged`]).
const SECOND_LOOK: Duration = Duration::from_millis(20);

/// After SIGKILL, how many rounds of stop-and-kill to give a tree that keeps forking.
const KILL_ROUNDS: usize = 50;

/// A fresh tag: random enough that no two steps anywhere share one.
pub(crate) fn new_tag() -> String {
    let mut bytes = [0u8; 12];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // The clock and pid make tags unique even if /dev/urandom could not be read.
    let mut s = format!("{:x}-{:x}-", std::process::id(), nanos as u64);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A process a step left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leftover {
    pub pid: i32,
    /// Its command line, arguments joined by spaces (shortened).
    pub command: String,
    /// Its process group.
    pub pgid: i32,
}

fn read_pgid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.nth(1)?.parse().ok()
}

fn read_command(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s = String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ");
    if s.chars().count() > 120 {
        s = s.chars().take(117).collect::<String>() + "...";
    }
    s
}

/// The kernel's flag for its own threads (`PF_KTHREAD`), in field 9 of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether `pid` is a live process of user space: not a zombie, not a kernel thread.
fn user_process(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let flags = f.get(6).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    f.first().is_some_and(|state| *state != "Z") && flags & PF_KTHREAD == 0
}

/// How many times, 2 ms apart, a process whose environment read empty is read again: one in
/// the middle of an `exec` (a step's child on its way to a new program) reads empty for a moment.
const EMPTY_ENVIRONMENT_RETRIES: usize = 5;

/// Live processes (not zombies, not this one) whose environment carries `tag`.
pub(crate) fn tagged(tag: &str) -> Vec<Leftover> {
    let wanted = format!("{STEP_TAG_VAR}={tag}");
    let carries = |env: &[u8]| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes());
    let mut matched = Vec::new();
    let mut unsure = Vec::new();
    for pid in other_processes() {
        match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(env) if carries(&env) => matched.push(pid),
            Ok(env) if !env.is_empty() => {}
            // Another user's: not ours to read.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            // Empty or unreadable: a zombie, or a process in the middle of an exec.
            _ if user_process(pid) => unsure.push(pid),
            _ => {}
        }
    }
    for _ in 0..EMPTY_ENVIRONMENT_RETRIES {
        if unsure.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        unsure.retain(|&pid| match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(env) if carries(&env) => {
                matched.push(pid);
                false
            }
            Ok(env) if !env.is_empty() => false,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => false,
            _ => user_process(pid),
        });
    }
    let mut out = Vec::new();
    for pid in matched {
        // A zombie's environment reads empty, so it was not matched; one that died since is
        // skipped here.
        let Some(pgid) = read_pgid(pid) else { continue };
        let mut command = read_command(pid);
        for _ in 0..EMPTY_ENVIRONMENT_RETRIES {
            // In the middle of an exec the command line reads empty too; its new one comes soon.
            if !command.is_empty() || read_pgid(pid).is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            command = read_command(pid);
        }
        if command.is_empty() {
            // An empty command line: either it is exiting (a shell that just forked the real
            // leftover, say: then it is a zombie by now), or it was started without arguments,
            // when its name stands in.
            if read_pgid(pid).is_none() {
                continue;
            }
            command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| format!("[{}]", c.trim_end()))
                .unwrap_or_default();
        }
        out.push(Leftover { pid, command, pgid });
    }
    out
}

/// Whether process group `pgid` has a member that is not a zombie. A killed orphan stays a
/// zombie until init reaps it, which some inits do only now and then, so `kill(-pgid, 0)` would
/// call a dead group alive.
pub(crate) fn group_alive(pgid: i32) -> bool {
    other_processes().any(|pid| read_pgid(pid) == Some(pgid))
}

/// Processes (other than this one) that hold an open descriptor on any of `files`, given as
/// what `/proc/PID/fd/N` links to (`pipe:[1234]`).
pub(crate) fn holders_of(files: &[String]) -> BTreeSet<i32> {
    other_processes()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| files.iter().any(|f| l.as_os_str() == f.as_str()))
                })
            })
        })
        .collect()
}

/// The pids in `/proc`, this process's left out.
fn other_processes() -> impl Iterator<Item = i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(move |&pid| pid != me)
}

/// What `/proc/self/fd/FD` links to.
pub(crate) fn fd_link(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|l| l.display().to_string())
}

fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) only sends a signal; it touches no memory of ours.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Kills every process carrying `tag` at once, freezing them first so that none forks a new
/// one in between, until none is left (or the rounds are used up). Blocking; quick.
pub(crate) fn kill_tagged_now(tag: &str) {
    for _ in 0..KILL_ROUNDS {
        let procs = tagged(tag);
        if procs.is_empty() {
            return;
        }
        for p in &procs {
            signal(p.pid, libc::SIGSTOP);
        }
        for p in &procs {
            signal(p.pid, libc::SIGKILL);
        }
    }
}

/// Ends every process carrying `tag`: SIGTERM, up to `grace` for them to go, then SIGKILL.
/// Returns the processes found, and those still there at the end (which could not be ended:
/// another user's, say).
pub(crate) async fn end_tagged(tag: &str, grace: Duration) -> (Vec<Leftover>, Vec<Leftover>) {
    let mut found = tagged(tag);
    if found.is_empty() {
        // A scan lists /proc first: a process forked after that by one that has exited since
        // (the middle of a double fork) is in neither. A second look, a moment later, is.
        tokio::time::sleep(SECOND_LOOK).await;
        found = tagged(tag);
    }
    if found.is_empty() {
        return (found, Vec::new());
    }
    for p in &found {
        signal(p.pid, libc::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until && !tagged(tag).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tag2 = tag.to_string();
    let _ = tokio::task::spawn_blocking(move || kill_tagged_now(&tag2)).await;
    // SIGKILL is delivered asynchronously; give it a moment to land before reporting.
    let until = Instant::now() + Duration::from_secs(1);
    let mut left = tagged(tag);
    while !left.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        left = tagged(tag);
    }
    (found, left)
}

/// `N process(es)`.
pub(crate) fn count(procs: &[Leftover]) -> String {
    format!(
        "{} process{}",
        procs.len(),
        if procs.len() == 1 { "" } else { "es" }
    )
}

/// `pid (command), …` for the step's log.
pub(crate) fn list(procs: &[Leftover]) -> String {
    let list: Vec<String> = procs
        .iter()
        .map(|p| format!("{} ({})", p.pid, p.command))
        .collect();
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ() {
        assert_ne!(new_tag(), new_tag());
    }

    #[test]
    fn a_tagged_child_is_found_and_an_untagged_one_is_not() {
        let tag = new_tag();
        let mut tagged_child = std::process::Command::new("sleep")
            .arg("30")
            .env(STEP_TAG_VAR, &tag)
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .env(STEP_TAG_VAR, format!("{tag}x"))
            .spawn()
            .unwrap();
        let found = tagged(&tag);
        assert_eq!(
            found.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![tagged_child.id() as i32]
        );
        assert_eq!(found[0].command, "sleep 30");
        kill_tagged_now(&tag);
        assert!(tagged_child.wait().unwrap().code().is_none());
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn descriptions_name_pids_and_commands() {
        let p = Leftover {
            pid: 7,
            command: "sleep 9".into(),
            pgid: 7,
        };
        assert_eq!(count(std::slice::from_ref(&p)), "1 process");
        assert_eq!(list(&[p.clone(), p]), "7 (sleep 9), 7 (sleep 9)");
    }
}
