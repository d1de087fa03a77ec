//! Where a run keeps what: the run directory's files and the paths used on machines.

use std::path::{Path, PathBuf};

/// The report of a run, in its directory.
pub(crate) const REPORT_FILE: &str = "report.json";

/// A name safe as one path component.
pub fn file_name_of(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// The log of attempt `n` (from 1, counted over every run in the directory, resumed ones too)
/// of a step on a machine, relative to the run directory: `<step>.log`, then `<step>~<n>.log`.
/// `~` is never in a [`file_name_of`], so no step's name can collide with another's attempt.
pub(crate) fn step_log(machine: &str, step: &str, n: u32) -> String {
    format!(
        "logs/{}/{}.log",
        file_name_of(machine),
        attempt_name(step, n)
    )
}

/// The recording of attempt `n` of a step on a machine, named as [`step_log`].
pub(crate) fn step_cast(machine: &str, step: &str, n: u32) -> String {
    format!(
        "casts/{}/{}.cast",
        file_name_of(machine),
        attempt_name(step, n)
    )
}

fn attempt_name(step: &str, n: u32) -> String {
    match n {
        0 | 1 => file_name_of(step),
        n => format!("{}~{n}", file_name_of(step)),
    }
}

/// Where a machine's artifacts are brought back to.
pub(crate) fn artifacts_dir(run_dir: &Path, machine: &str) -> PathBuf {
    run_dir.join("artifacts").join(file_name_of(machine))
}

/// Remote path of an uploaded step script, relative to the machine's work directory.
pub(crate) fn script_remote_path(step: &str) -> String {
    format!(".qa-run/scripts/{}.sh", file_name_of(step))
}

/// `p` made absolute against the current directory, as text.
pub(crate) fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// `s` quoted for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
