//! The POSIX shell text qa-run sends to a remote machine.
//!
//! sshd runs every command through the login user's shell, and `AcceptEnv` is usually off, so
//! environment, working directory and sudo are all expressed in the command line itself. Each
//! command runs in its own session and process group, whose id is written to a file,
//! so that a timeout or a cancellation can kill the whole tree with `kill -- -PGID` even when the
//! channel that started it is gone.

use std::collections::BTreeMap;

use qa_core::CommandSpec;

/// Quotes `s` for a POSIX shell.
pub(crate) fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Joins a remote path onto the work directory (absolute paths stay as they are).
pub(crate) fn resolve(workdir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else if path.is_empty() || path == "." {
        workdir.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), path)
    }
}

fn is_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The command as it runs inside its process group: change directory, export the environment,
/// run the user's command line with `/bin/sh -c`. Under sudo the whole of it runs as root, so
/// sudo's environment reset does not drop the variables.
pub(crate) fn inner_argv(spec: &CommandSpec, workdir: &str) -> Result<String, String> {
    let dir = resolve(workdir, spec.workdir.as_deref().unwrap_or("."));
    let mut inner = format!("cd -- {} || exit 126; ", quote(&dir));
    inner.push_str(&exports(&spec.env)?);
    inner.push_str(&format!("exec /bin/sh -c {}", quote(&spec.command)));
    let mut argv = String::new();
    if spec.sudo {
        argv.push_str("sudo -n -- ");
    }
    argv.push_str(&format!("/bin/sh -c {}", quote(&inner)));
    Ok(argv)
}

fn exports(env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut s = String::new();
    for (k, v) in env {
        if !is_env_name(k) {
            return Err(format!("`{k}` is not a valid environment variable name"));
        }
        s.push_str(&format!("{k}={}; export {k}; ", quote(v)));
    }
    Ok(s)
}

/// A foreground command. sshd starts every session's command as a session and process-group
/// leader, so the command `exec`s down to the user's `/bin/sh -c`: the login shell's pid is the
/// process group to kill, it is written to `pidfile`, and a death by signal reaches sshd (and so
/// the channel's exit-signal) unchanged. `stale` pidfiles of finished commands are removed first.
pub(crate) fn foreground(
    spec: &CommandSpec,
    workdir: &str,
    pidfile: &str,
    stale: &[String],
) -> Result<String, String> {
    let dir = resolve(workdir, spec.workdir.as_deref().unwrap_or("."));
    let piddir = pidfile.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
    let mut script = String::new();
    if !stale.is_empty() {
        let files: Vec<String> = stale.iter().map(|f| quote(f)).collect();
        script.push_str(&format!("rm -f -- {}; ", files.join(" ")));
    }
    script.push_str(&format!(
        "mkdir -p -- {piddir} {dir} || exit 125; echo $$ > {pidfile}; exec {argv}",
        piddir = quote(piddir),
        dir = quote(&dir),
        pidfile = quote(pidfile),
        argv = inner_argv(spec, workdir)?,
    ));
    // The login shell may be anything; only `exec` and single quotes are asked of it.
    Ok(format!("exec /bin/sh -c {}", quote(&script)))
}

/// Starts a detached, supervised command with its files in `jobdir`: `pgid`, `out`, `err`,
/// `boot` (boot id at start) and, once it has ended, `status` (written to a temporary name and
/// renamed, so a reader never sees half of it). Prints `started` once the supervisor runs.
pub(crate) fn detached(
    spec: &CommandSpec,
    workdir: &str,
    jobdir: &str,
    boot_id_path: &str,
) -> Result<String, String> {
    let dir = resolve(workdir, spec.workdir.as_deref().unwrap_or("."));
    let supervisor = "jd=$1; shift; echo $$ > \"$jd/pgid.tmp\" && mv -f \"$jd/pgid.tmp\" \"$jd/pgid\"; \
                      \"$@\" > \"$jd/out\" 2> \"$jd/err\" < /dev/null; \
                      echo $? > \"$jd/status.tmp\"; mv -f \"$jd/status.tmp\" \"$jd/status\"";
    Ok(format!(
        "mkdir -p -- {jd} {dir} || exit 125; cat {boot} > {jd}/boot 2>/dev/null; \
         : > {jd}/out; : > {jd}/err; \
         setsid /bin/sh -c {sup} qa-run-supervisor {jd} {argv} < /dev/null > /dev/null 2>&1 & \
         i=0; while [ ! -s {jd}/pgid ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         [ -s {jd}/pgid ] && echo started",
        jd = quote(jobdir),
        dir = quote(&dir),
        boot = quote(boot_id_path),
        sup = quote(supervisor),
        argv = inner_argv(spec, workdir)?,
    ))
}

/// Kills the process group whose id is in `pidfile` (TERM, then KILL after two seconds). Waits a
/// little for the file, in case the command was killed just as it started.
pub(crate) fn kill_group(pidfile: &str, sudo: bool) -> String {
    let s = format!(
        "i=0; while [ ! -s {f} ] && [ $i -lt 20 ]; do sleep 0.05; i=$((i+1)); done; \
         p=$(cat {f} 2>/dev/null); [ -n \"$p\" ] || exit 0; \
         kill -TERM -- -$p 2>/dev/null; i=0; \
         while kill -0 -- -$p 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; \
         kill -KILL -- -$p 2>/dev/null; true",
        f = quote(pidfile)
    );
    if sudo {
        format!("sudo -n /bin/sh -c {}", quote(&s))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        for s in ["plain", "with space", "it's", "$HOME `x` \"q\"", "", "a\nb"] {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }

    #[test]
    fn relative_paths_are_inside_the_workdir() {
        assert_eq!(resolve("/w", "a/b"), "/w/a/b");
        assert_eq!(resolve("/w/", "."), "/w/");
        assert_eq!(resolve("/w", "/abs"), "/abs");
    }

    #[test]
    fn bad_env_names_are_refused() {
        let mut spec = CommandSpec {
            command: "true".into(),
            ..Default::default()
        };
        spec.env.insert("A B".into(), "x".into());
        assert!(inner_argv(&spec, "/w").is_err());
    }

    #[test]
    fn foreground_runs_locally_with_env_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().to_str().unwrap();
        let mut spec = CommandSpec {
            command: "echo \"$GREETING\" > out.txt; pwd >> out.txt; exit 3".into(),
            ..Default::default()
        };
        spec.env.insert("GREETING".into(), "it's me".into());
        spec.workdir = Some("sub".into());
        let pidfile = format!("{wd}/.qa-run/pids/x");
        let script = foreground(&spec, wd, &pidfile, &[format!("{wd}/stale")]).unwrap();
        std::fs::write(format!("{wd}/stale"), "").unwrap();
        let st = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(3));
        let out = std::fs::read_to_string(dir.path().join("sub/out.txt")).unwrap();
        assert_eq!(out, format!("it's me\n{wd}/sub\n"));
        assert!(std::path::Path::new(&pidfile).exists());
        assert!(!std::path::Path::new(&format!("{wd}/stale")).exists());
    }
}
