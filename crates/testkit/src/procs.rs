//! The process table, read from `/proc`: finding processes by what their command line (or
//! working directory) mentions, or by a variable in their environment, to check that a test left
//! nothing running, and killing a process with all its descendants.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::process::Child;

/// A live (not zombie) process.
struct ProcInfo {
    pid: i32,
    ppid: i32,
    cmdline: String,
}

/// Every live process except zombies, with its parent and its command line (arguments joined
/// by spaces).
fn processes() -> Vec<ProcInfo> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces; fields follow the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        if state == "Z" {
            continue;
        }
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let cmdline = fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push(ProcInfo { pid, ppid, cmdline });
    }
    out
}

/// Processes other than this one, live and not zombies.
fn others() -> impl Iterator<Item = ProcInfo> {
    let me = std::process::id() as i32;
    processes().into_iter().filter(move |p| p.pid != me)
}

/// Pids of processes (other than this one) whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<i32> {
    others()
        .filter(|p| p.cmdline.contains(needle))
        .map(|p| p.pid)
        .collect()
}

/// Processes (other than this one) whose command line or working directory mentions `needle`,
/// one `PID: COMMAND LINE (cwd DIR)` line each, for an assertion message.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    others()
        .filter_map(|p| {
            let cwd = fs::read_link(format!("/proc/{}/cwd", p.pid))
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            (p.cmdline.contains(needle) || cwd.contains(needle))
                .then(|| format!("{}: {} (cwd {cwd})", p.pid, p.cmdline))
        })
        .collect()
}

/// Processes (other than this one) whose environment has `name` set to exactly `value`, one
/// `PID: COMMAND LINE (cwd DIR)` line each. An environment variable is inherited through
/// `setsid`, double forks, `nohup` and `cd`, so a test that sets one on a command finds every
/// process the command started, wherever it went. Only processes whose environment this process
/// may read are seen (root reads every one).
pub fn processes_with_env(name: &str, value: &str) -> Vec<String> {
    let wanted = format!("{name}={value}");
    others()
        .filter(|p| {
            fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
        })
        .map(|p| {
            let cwd = fs::read_link(format!("/proc/{}/cwd", p.pid))
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            format!("{}: {} (cwd {cwd})", p.pid, p.cmdline)
        })
        .collect()
}

/// Kills a process and all its descendants (SIGKILL), then reaps it.
pub(crate) fn kill_tree(child: &mut Option<Child>) {
    let Some(mut c) = child.take() else { return };
    let root = c.id() as i32;
    // Stop the listener first so that it forks no new connections while the tree is walked.
    // SAFETY: plain kill(2) on pids we own.
    unsafe { libc::kill(root, libc::SIGSTOP) };
    let procs = processes();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if seen.insert(pid)
            && let Some(kids) = children.get(&pid)
        {
            stack.extend(kids);
        }
    }
    // Freeze the whole tree before killing any of it: killed one by one, a connection's sshd
    // could still report the exit status of a command killed before it, which a dropped
    // connection never does.
    for pid in &seen {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    for pid in &seen {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let _ = c.wait();
}
