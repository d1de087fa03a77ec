//! The POSIX shell text qa-run sends to a remote machine.
//!
//! sshd runs every command through the login user's shell, and `AcceptEnv` is usually off, so
//! environment, working directory and sudo are all expressed in the command line itself. Each
//! command runs in its own session and process group, whose id is written to a file, and with a
//! step tag of its own in its environment ([`crate::step_tag`]), so that a timeout or a
//! cancellation can end the whole tree, and whatever left it, even when the channel that started
//! it is gone.
//!
//! A command runs under a small supervisor shell: it starts the command, and once the command has
//! exited gives children still holding its output [`OUTPUT_GRACE`] to finish, ends every process
//! still carrying the tag, and exits with the command's status. What it ended it reports on
//! stderr, on lines starting with [`note_marker`], which the executor turns into notes.

use std::collections::BTreeMap;

use qa_core::CommandSpec;

use crate::step_tag::{OUTPUT_GRACE, STEP_TAG_VAR};

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

/// A detached command as it runs inside its process group: change directory, export the
/// environment, run the user's command line with `/bin/sh -c`. Under sudo the whole of it runs
/// as root, so sudo's environment reset does not drop the variables.
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

/// How a note saying that a command could not be started on the machine begins.
pub(crate) const NOT_STARTED: &str = "the command could not start: ";

/// The start of the stderr lines in which a step's supervisor reports what it ended.
pub(crate) fn note_marker(tag: &str) -> String {
    format!("qa-run-note-{tag}: ")
}

/// Tenths of a second, as the shell's polling loops count.
fn tenths(d: std::time::Duration) -> u128 {
    d.as_millis().div_ceil(100)
}

/// Shell functions for the processes of the step tagged `tag`, with `grace` between SIGTERM and
/// SIGKILL:
/// - `qa_tagged`: the pids of the processes carrying the tag (a zombie's environment reads
///   empty, so zombies are not among them). One `grep -z` over every environment where grep has
///   `-z`, else one grep per process.
/// - `qa_list PID…`: ` PID (COMMAND)` for each.
/// - `qa_count N`: `N process` or `N processes`.
/// - `qa_end`: ends every tagged process (SIGTERM, the grace, then rounds of SIGSTOP and SIGKILL
///   for a tree that keeps forking) and prints what it ended, and what it could not, as notes on
///   stderr.
fn procs_functions(tag: &str, grace: std::time::Duration) -> String {
    format!(
        r#"qa_tag={tag}; qa_note={note}; qa_grace={grace}
qa_tagged() {{
  if printf 'x\000' | grep -qzxF x 2>/dev/null; then
    qa_f=$(grep -lzxF "{var}=$qa_tag" /proc/[0-9]*/environ 2>/dev/null)
  else
    qa_f=$(for f in /proc/[0-9]*/environ; do
      tr '\000' '\n' < "$f" 2>/dev/null | grep -qxF "{var}=$qa_tag" && echo "$f"
    done)
  fi
  for qa_x in $qa_f; do qa_x=${{qa_x#/proc/}}; echo "${{qa_x%/environ}}"; done
}}
qa_list() {{
  for p in "$@"; do
    printf ' %s (%s),' "$p" "$(tr '\000' ' ' < /proc/$p/cmdline 2>/dev/null | cut -c1-120 | sed 's/ *$//')"
  done | sed 's/,$//'
}}
qa_count() {{ if [ "$1" = 1 ]; then echo "1 process"; else echo "$1 processes"; fi; }}
qa_end() {{
  qa_p=$(qa_tagged); [ -n "$qa_p" ] || return 0
  qa_d=$(qa_list $qa_p); qa_n=$(echo $qa_p | wc -w)
  kill -TERM $qa_p 2>/dev/null
  qa_i=0; while [ $qa_i -lt $qa_grace ] && [ -n "$(qa_tagged)" ]; do sleep 0.1; qa_i=$((qa_i+1)); done
  qa_i=0; while qa_q=$(qa_tagged); [ -n "$qa_q" ] && [ $qa_i -lt 50 ]; do
    kill -STOP $qa_q 2>/dev/null; kill -KILL $qa_q 2>/dev/null; qa_i=$((qa_i+1))
  done
  echo "$qa_note""ended $(qa_count $qa_n) the command left running:$qa_d" >&2
  qa_q=$(qa_tagged); [ -z "$qa_q" ] || echo "$qa_note""could not end $(qa_count $(echo $qa_q | wc -w)) the command left running:$(qa_list $qa_q)" >&2
}}
"#,
        tag = quote(tag),
        note = quote(&note_marker(tag)),
        grace = tenths(grace),
        var = STEP_TAG_VAR,
    )
}

/// The supervisor of a foreground command, which it is given as its first argument (with the
/// environment and working directory already in place, so that no process keeps the
/// environment's values on its command line): runs it with the step's tag, and once it has exited
/// looks for tagged processes (twice if the first look finds none: a process in the middle of an
/// `exec` cannot be read); only if there are any, it waits up to [`OUTPUT_GRACE`] for them to let
/// go of its output (fd 1 and 2) and ends everything tagged. It exits with the command's status. A command killed by a signal (a
/// status above 128) is passed on as that signal, as sshd would have seen it.
fn supervisor(tag: &str, grace: std::time::Duration) -> String {
    format!(
        r#"{functions}{var}=$qa_tag /bin/sh -c "$1"
qa_st=$?
qa_p=$(qa_tagged); [ -n "$qa_p" ] || qa_p=$(qa_tagged)
if [ -n "$qa_p" ]; then
qa_o=$(readlink /proc/$$/fd/1); qa_e=$(readlink /proc/$$/fd/2)
qa_holding() {{
  for p in $(qa_tagged); do
    ls -l /proc/$p/fd 2>/dev/null | grep -qF -e "> $qa_o" -e "> $qa_e" && echo $p
  done
}}
qa_i=0; while [ $qa_i -lt {output_grace} ] && [ -n "$(qa_holding)" ]; do sleep 0.1; qa_i=$((qa_i+1)); done
qa_h=$(qa_holding)
[ -z "$qa_h" ] || echo "$qa_note""the command exited, but $(qa_count $(echo $qa_h | wc -w)) still held its output open {output_grace_text:?} later:$(qa_list $qa_h)" >&2
qa_end
fi
if [ $qa_st -gt 128 ] && [ $qa_st -lt 160 ]; then kill -$((qa_st - 128)) $$; fi
exit $qa_st"#,
        functions = procs_functions(tag, grace),
        var = STEP_TAG_VAR,
        output_grace = tenths(OUTPUT_GRACE),
        output_grace_text = OUTPUT_GRACE,
    )
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
/// leader, so the command `exec`s down to the [`supervisor`] (under sudo if asked for, so that it
/// may end root's processes, with the environment passed through `env` since sudo resets it):
/// the login shell's pid is the process group to kill, and it is written to `pidfile`. `stale`
/// pidfiles of finished commands are removed first.
pub(crate) fn foreground(
    spec: &CommandSpec,
    workdir: &str,
    pidfile: &str,
    stale: &[String],
    tag: &str,
    grace: std::time::Duration,
) -> Result<String, String> {
    let dir = resolve(workdir, spec.workdir.as_deref().unwrap_or("."));
    let piddir = pidfile.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
    let mut script = String::new();
    if !stale.is_empty() {
        let files: Vec<String> = stale.iter().map(|f| quote(f)).collect();
        script.push_str(&format!("rm -f -- {}; ", files.join(" ")));
    }
    // A directory that cannot be made or entered is the machine's problem, not the command's
    // failure: it is said in a note, which the executor turns into an error.
    let cannot = |what: String| {
        format!(
            "{{ echo {} >&2; exit 125; }}",
            quote(&format!("{}{NOT_STARTED}{what}", note_marker(tag)))
        )
    };
    script.push_str(&format!(
        "mkdir -p -- {piddir} {dir} || {no_dirs}; echo $$ > {pidfile} || {no_pidfile}; cd -- {dir} || {no_cd}; ",
        piddir = quote(piddir),
        dir = quote(&dir),
        pidfile = quote(pidfile),
        no_dirs = cannot(format!("cannot make {dir} and {piddir}")),
        no_pidfile = cannot(format!("cannot write {pidfile}")),
        no_cd = cannot(format!("cannot enter {dir}")),
    ));
    if spec.sudo {
        script.push_str("exec sudo -n -- env");
        for (k, v) in &spec.env {
            if !is_env_name(k) {
                return Err(format!("`{k}` is not a valid environment variable name"));
            }
            script.push_str(&format!(" {}", quote(&format!("{k}={v}"))));
        }
        script.push(' ');
    } else {
        script.push_str(&exports(&spec.env)?);
        script.push_str("exec ");
    }
    script.push_str(&format!(
        "/bin/sh -c {sup} qa-run-step {cmd}",
        sup = quote(&supervisor(tag, grace)),
        cmd = quote(&spec.command),
    ));
    // The login shell may be anything; only `exec` and single quotes are asked of it.
    Ok(format!("exec /bin/sh -c {}", quote(&script)))
}

/// Starts a detached, supervised command with its files in `jobdir`: `pgid`, `out`, `err`,
/// `boot` (boot id at start) and, once it has ended, `status` (written to a temporary name and
/// renamed, so a reader never sees half of it). Prints `started` once the supervisor runs. The
/// command runs with the step's tag; once it has exited the supervisor ends whatever it left
/// running (notes go to `err`), then writes the status.
pub(crate) fn detached(
    spec: &CommandSpec,
    workdir: &str,
    jobdir: &str,
    boot_id_path: &str,
    tag: &str,
    grace: std::time::Duration,
) -> Result<String, String> {
    let dir = resolve(workdir, spec.workdir.as_deref().unwrap_or("."));
    let supervisor = format!(
        "{functions}jd=$1; shift; echo $$ > \"$jd/pgid.tmp\" && mv -f \"$jd/pgid.tmp\" \"$jd/pgid\"; \
         {var}=$qa_tag \"$@\" > \"$jd/out\" 2> \"$jd/err\" < /dev/null; \
         st=$?; qa_end 2>> \"$jd/err\"; \
         echo $st > \"$jd/status.tmp\"; mv -f \"$jd/status.tmp\" \"$jd/status\"",
        functions = procs_functions(tag, grace),
        var = STEP_TAG_VAR,
    );
    Ok(format!(
        "mkdir -p -- {jd} {dir} || exit 125; cat {boot} > {jd}/boot 2>/dev/null; \
         : > {jd}/out; : > {jd}/err; \
         setsid /bin/sh -c {sup} qa-run-supervisor {jd} {argv} < /dev/null > /dev/null 2>&1 & \
         i=0; while [ ! -s {jd}/pgid ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         [ -s {jd}/pgid ] && echo started",
        jd = quote(jobdir),
        dir = quote(&dir),
        boot = quote(boot_id_path),
        sup = quote(&supervisor),
        argv = inner_argv(spec, workdir)?,
    ))
}

/// Ends a command that is still running: SIGTERM to the process group whose id is in `pidfile`
/// and to every process carrying `tag`, up to `grace` for the tagged ones to go, then SIGKILL to
/// the group and to whatever is tagged. (The group is not polled: `kill -0` counts zombies, which
/// some inits reap only now and then; every member but the supervisor carries the tag.)
/// Waits a little for the pid file, in case the command was killed just as it started. Prints,
/// as a note marked with [`note_marker`], the tagged processes that had left the group.
pub(crate) fn kill_step(
    pidfile: &str,
    tag: &str,
    grace: std::time::Duration,
    sudo: bool,
) -> String {
    let s = format!(
        r#"{functions}i=0; while [ ! -s {f} ] && [ $i -lt 20 ]; do sleep 0.05; i=$((i+1)); done
p=$(cat {f} 2>/dev/null)
qa_x=""
for q in $(qa_tagged); do
  g=$(sed 's/.*) //' /proc/$q/stat 2>/dev/null | cut -d' ' -f3)
  [ -z "$g" ] || [ "$g" = "$p" ] || qa_x="$qa_x $q"
done
qa_xd=$(qa_list $qa_x)
[ -z "$p" ] || kill -TERM -- -$p 2>/dev/null
qa_q=$(qa_tagged); [ -z "$qa_q" ] || kill -TERM $qa_q 2>/dev/null
i=0
while [ $i -lt $qa_grace ] && [ -n "$(qa_tagged)" ]; do
  sleep 0.1; i=$((i+1))
done
[ -z "$p" ] || kill -KILL -- -$p 2>/dev/null
i=0; while qa_q=$(qa_tagged); [ -n "$qa_q" ] && [ $i -lt 50 ]; do
  kill -STOP $qa_q 2>/dev/null; kill -KILL $qa_q 2>/dev/null; i=$((i+1))
done
[ -z "$qa_x" ] || echo "$qa_note""ended $(qa_count $(echo $qa_x | wc -w)) that had left the command's process group:$qa_xd"
true"#,
        functions = procs_functions(tag, grace),
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
        let mut spec = CommandSpec::new("true").env("A B", "x");
        assert!(inner_argv(&spec, "/w").is_err());
        let fg = |spec: &CommandSpec| {
            foreground(
                spec,
                "/w",
                "/w/p",
                &[],
                "t",
                std::time::Duration::from_secs(1),
            )
        };
        assert!(fg(&spec).is_err());
        spec.sudo = true;
        assert!(fg(&spec).is_err());
    }

    #[test]
    fn foreground_runs_locally_with_env_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().to_str().unwrap();
        let spec = CommandSpec::new("echo \"$GREETING\" > out.txt; pwd >> out.txt; exit 3")
            .env("GREETING", "it's me")
            .workdir("sub");
        let pidfile = format!("{wd}/.qa-run/pids/x");
        let script = foreground(
            &spec,
            wd,
            &pidfile,
            &[format!("{wd}/stale")],
            "t1",
            std::time::Duration::from_secs(2),
        )
        .unwrap();
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

    #[test]
    fn a_directory_it_cannot_make_is_said_in_a_note_and_nothing_runs() {
        let spec = CommandSpec::new("echo ran");
        let script = foreground(
            &spec,
            "/proc/qa-run-no-such-dir",
            "/proc/qa-run-no-such-dir/.qa-run/pids/x",
            &[],
            "t2",
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        let note = format!("{}{NOT_STARTED}cannot make", note_marker("t2"));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&note),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
