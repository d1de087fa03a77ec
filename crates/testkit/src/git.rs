//! Running `git` in tests: setting up and inspecting the repositories that stand in for a
//! publishing remote.

use std::path::Path;
use std::process::Command;

/// Runs `git ARGS` in `dir`, ignoring the system-wide git configuration, and returns its standard
/// output. Panics, with git's standard error, if git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
