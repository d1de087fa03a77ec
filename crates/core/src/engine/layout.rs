//! Where a run keeps what: the run directory's files and the paths used on machines.

use std::path::{Path, PathBuf};

/// The report of a run, in its directory.
pub(crate) const REPORT_FILE: &str = "report.json";

/// The longest readable part [`file_name_of`] keeps, in bytes: with the hash and an extension
/// the file name stays far below the 255 bytes file systems allow.
const READABLE_MAX: usize = 100;

/// The file name (one path component, no extension) of a step or machine name: its logs,
/// recordings, scripts and artifacts are kept under it.
///
/// The mapping is injective, stable and readable:
/// - a name made only of ASCII letters, digits, `.`, `_` and `-`, not starting with `.` and at
///   most 100 bytes long, is its own file name (`build`, `unit-tests`, `box-1`);
/// - any other name keeps its letters and digits (of any script) and those three marks, every
///   other character becomes `_`, the result is cut to 100 bytes and prefixed with `_` if it
///   starts with `.`, and then `~` and 8 hex digits of a hash of the whole name are added
///   (`a b` → `a_b~10a3f9f2`, `a/b` → `a_b~3a8e75c1`).
///
/// Unchanged names never hold `~` and changed ones always end with `~` + hash, so the two kinds
/// cannot meet; two changed names share a file name only if their 32-bit hashes collide, which
/// the plan loader checks for and refuses. The hash is FNV-1a, written out here so that it can
/// never change between builds or platforms.
pub fn file_name_of(name: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.is_empty()
        && name.len() <= READABLE_MAX
        && !name.starts_with('.')
        && name.chars().all(keep)
    {
        return name.to_owned();
    }
    let mut readable = String::with_capacity(name.len().min(READABLE_MAX) + 10);
    if name.starts_with('.') {
        readable.push('_');
    }
    for c in name.chars() {
        let c = if keep(c) || c.is_alphanumeric() {
            c
        } else {
            '_'
        };
        if readable.len() + c.len_utf8() > READABLE_MAX {
            break;
        }
        readable.push(c);
    }
    format!("{readable}~{:08x}", fnv1a_32(name.as_bytes()))
}

/// The 32-bit FNV-1a hash.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_are_their_own_file_names() {
        for n in ["build", "unit-tests", "box-1", "a_b", "v1.2", "A.b-c_D"] {
            assert_eq!(file_name_of(n), n);
        }
    }

    /// Steps named `a b`, `a_b`, `a/b` and `a:b` all wrote `logs/box/a_b.log`, and so did any
    /// two names made only of non-ASCII letters of the same length.
    #[test]
    fn names_that_used_to_collide_get_their_own_file_names() {
        let names = [
            "a b",
            "a_b",
            "a/b",
            "a:b",
            "a\\b",
            "a~b",
            "тест",
            "тотт",
            "构建",
            "测试",
            "",
            ".",
            "..",
            "_",
            "_.",
            ".hidden",
            "_.hidden",
            "a_b~00000000",
        ];
        let files: std::collections::BTreeSet<String> =
            names.iter().map(|n| file_name_of(n)).collect();
        assert_eq!(files.len(), names.len(), "{files:?}");
        assert_eq!(file_name_of("a_b"), "a_b");
        assert!(file_name_of("a b").starts_with("a_b~"));
        assert!(file_name_of("тест").starts_with("тест~"));
        assert!(file_name_of("..").starts_with("_..~"));
    }

    #[test]
    fn file_names_are_one_short_component_and_stable() {
        let long = "x".repeat(300);
        let wide = "я".repeat(300);
        for n in [
            long.as_str(),
            wide.as_str(),
            "../../etc/passwd",
            "a\0b",
            "\u{202e}gpj.exe",
        ] {
            let f = file_name_of(n);
            assert!(f.len() <= READABLE_MAX + 9, "{f}");
            assert!(!f.contains(['/', '\0']) && !f.starts_with('.'), "{f}");
            assert_eq!(file_name_of(n), f, "stable");
        }
        // Fixed forever: a resumed run finds the logs of the runs before it.
        assert_eq!(file_name_of("a b"), "a_b~10a3f9f2");
        assert_eq!(file_name_of("тест"), "тест~2cfa556c");
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
    }
}
