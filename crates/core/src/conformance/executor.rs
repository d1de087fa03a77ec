//! Conformance suite for [`RemoteExecutor`].
//!
//! The executor under test must be bound to a machine with a POSIX shell, coreutils and `/proc`
//! (Linux), and a work directory the suite may write into: it makes files and directories named
//! `conf-*` there. `scratch` is a local directory for the local side of transfers; each check makes
//! its own subdirectory in it.
//!
//! Process checks run *through the executor* (they scan `/proc/*/cmdline` on the machine), so the
//! same suite proves that a timeout kills the whole process tree on a local sandbox and on an SSH
//! host alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::unique;
use crate::remote::{CommandSpec, ExitInfo, OutputSink, OutputStream, RemoteError, RemoteExecutor};

/// Every command of the suite gets this timeout unless it tests timeouts, so that a broken executor
/// fails the suite instead of hanging it.
const GUARD: Duration = Duration::from_secs(120);

/// How long after cancellation `run` may take to return. The contract says "a second or two"; the
/// bound is generous so that a loaded CI machine does not fail the suite, while an executor that
/// waits for the command (which sleeps for minutes) still does.
const CANCEL_LIMIT: Duration = Duration::from_secs(15);

/// An [`OutputSink`] that keeps everything, and lets a test wait for some output to arrive.
#[derive(Debug, Default)]
pub struct RecordedOutput {
    chunks: Mutex<Vec<(OutputStream, Vec<u8>)>>,
    notes: Mutex<Vec<String>>,
    changed: tokio::sync::Notify,
}

impl RecordedOutput {
    /// A new, empty recording.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Everything received on `stream`, in order.
    pub fn bytes(&self, stream: OutputStream) -> Vec<u8> {
        let chunks = self.chunks.lock().expect("output lock");
        chunks
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, d)| d.iter().copied())
            .collect()
    }

    /// Everything received on `stream`, as text.
    pub fn text(&self, stream: OutputStream) -> String {
        String::from_utf8_lossy(&self.bytes(stream)).into_owned()
    }

    /// The executor's notes.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }

    /// Waits until `needle` appears on `stream`; `false` if it did not within `limit`.
    pub async fn wait_for(&self, stream: OutputStream, needle: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so output arriving in between still wakes us.
            notified.as_mut().enable();
            if self.text(stream).contains(needle) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.text(stream).contains(needle);
            }
        }
    }
}

impl OutputSink for RecordedOutput {
    fn output(&self, stream: OutputStream, data: &[u8]) {
        self.chunks
            .lock()
            .expect("output lock")
            .push((stream, data.to_vec()));
        self.changed.notify_waiters();
    }

    fn note(&self, message: &str) {
        self.notes
            .lock()
            .expect("notes lock")
            .push(message.to_string());
    }
}

/// Runs every check of the suite, one after the other.
pub async fn run_all(exec: &dyn RemoteExecutor, scratch: &Path) {
    exit_status_and_streams(exec).await;
    killed_by_signal(exec).await;
    env_and_workdir(exec).await;
    output_is_streamed_in_order(exec, scratch).await;
    timeout_kills_process_tree(exec).await;
    cancel_is_prompt_and_kills_process_tree(exec).await;
    file_round_trip_preserves_mode(exec, scratch).await;
    put_replaces_atomically(exec, scratch).await;
    collect_stays_inside(exec, scratch).await;
    boot_id_is_stable(exec).await;
}

fn shell(command: impl Into<String>) -> CommandSpec {
    CommandSpec {
        command: command.into(),
        timeout: Some(GUARD),
        ..CommandSpec::default()
    }
}

/// Runs `spec` to its end and returns how it ended and what it printed; panics on `Err`.
pub async fn run_recorded(
    exec: &dyn RemoteExecutor,
    spec: &CommandSpec,
) -> (ExitInfo, Arc<RecordedOutput>) {
    let out = RecordedOutput::new();
    let info = exec
        .run(spec, out.clone(), CancellationToken::new())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: running `{}` failed: {e}",
                exec.describe(),
                spec.command
            )
        });
    (info, out)
}

/// Runs a helper command that must succeed, and returns its stdout.
async fn checked(exec: &dyn RemoteExecutor, command: &str) -> String {
    let (info, out) = run_recorded(exec, &shell(command)).await;
    assert!(
        info.success(),
        "{}: helper command `{command}` did not succeed: {info:?}\nstderr: {}",
        exec.describe(),
        out.text(OutputStream::Stderr)
    );
    out.text(OutputStream::Stdout)
}

fn scratch_dir(scratch: &Path, name: &str) -> PathBuf {
    let dir = scratch.join(unique(name));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot make scratch dir {}: {e}", dir.display()));
    dir
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("make scratch parent");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("chmod scratch file");
}

fn local_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A non-zero exit is `Ok` with the status; stdout and stderr reach the sink on their own streams.
pub async fn exit_status_and_streams(exec: &dyn RemoteExecutor) {
    let who = exec.describe();
    let (info, out) =
        run_recorded(exec, &shell("echo to-stdout; echo to-stderr >&2; exit 3")).await;
    assert_eq!(
        info.code,
        Some(3),
        "{who}: exit status 3 expected: {info:?}"
    );
    assert_eq!(info.signal, None, "{who}: no signal expected: {info:?}");
    assert!(
        !info.timed_out && !info.cancelled && !info.success(),
        "{who}: {info:?}"
    );
    assert_eq!(
        out.text(OutputStream::Stdout),
        "to-stdout\n",
        "{who}: stdout"
    );
    assert_eq!(
        out.text(OutputStream::Stderr),
        "to-stderr\n",
        "{who}: stderr"
    );

    let (info, _) = run_recorded(exec, &shell("true")).await;
    assert!(info.success(), "{who}: `true` must succeed: {info:?}");
}

/// A command killed by a signal reports the signal and no exit status.
pub async fn killed_by_signal(exec: &dyn RemoteExecutor) {
    let (info, _) = run_recorded(exec, &shell("kill -9 $$")).await;
    assert_eq!(
        info.signal,
        Some(9),
        "{}: SIGKILL expected: {info:?}",
        exec.describe()
    );
    assert_eq!(
        info.code,
        None,
        "{}: no exit status expected: {info:?}",
        exec.describe()
    );
    assert!(!info.success());
}

/// Extra environment reaches the command; a relative working directory is inside the work
/// directory.
pub async fn env_and_workdir(exec: &dyn RemoteExecutor) {
    let who = exec.describe();
    let mut spec = shell("printf '%s' \"$QA_CONF_VALUE\"");
    spec.env = BTreeMap::from([(
        "QA_CONF_VALUE".to_string(),
        "two words; $NOT_EXPANDED".to_string(),
    )]);
    let (info, out) = run_recorded(exec, &spec).await;
    assert!(info.success(), "{who}: {info:?}");
    assert_eq!(
        out.text(OutputStream::Stdout),
        "two words; $NOT_EXPANDED",
        "{who}: env value must arrive verbatim"
    );

    let dir = unique("conf-wd");
    checked(exec, &format!("mkdir -p {dir}/sub")).await;
    let home = checked(exec, "pwd -P").await;
    let mut spec = shell("pwd -P");
    spec.workdir = Some(format!("{dir}/sub"));
    let (info, out) = run_recorded(exec, &spec).await;
    assert!(info.success(), "{who}: {info:?}");
    assert_eq!(
        out.text(OutputStream::Stdout).trim_end(),
        format!("{}/{dir}/sub", home.trim_end()),
        "{who}: a relative workdir must resolve inside the work directory"
    );
    checked(exec, &format!("rm -rf {dir}")).await;
}

/// Output reaches the sink while the command still runs, in the order it was written.
pub async fn output_is_streamed_in_order(exec: &dyn RemoteExecutor, scratch: &Path) {
    let who = exec.describe();
    let go = unique("conf-go");
    // The command cannot finish before the test has seen its first line and uploaded `go`, so
    // the first line must have been streamed, not delivered at exit.
    let spec = shell(format!(
        "echo first; echo err-first >&2; while [ ! -e {go} ]; do sleep 0.05; done; rm -f {go}; \
         i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"
    ));
    let out = RecordedOutput::new();
    let run = exec.run(&spec, out.clone(), CancellationToken::new());
    let control = async {
        let seen = out.wait_for(OutputStream::Stdout, "first\n", GUARD).await;
        // Unblock the command either way, so that a failure does not wait for the guard timeout.
        let local = scratch_dir(scratch, "stream").join("go");
        write_file(&local, b"go", 0o644);
        let put = exec.put_file(&local, &go, None).await;
        (seen, put)
    };
    let (info, (seen, put)) = tokio::join!(run, control);
    let info = info.unwrap_or_else(|e| panic!("{who}: run failed: {e}"));
    put.unwrap_or_else(|e| panic!("{who}: put_file while a command runs failed: {e}"));
    assert!(
        seen,
        "{who}: output must be streamed to the sink while the command runs"
    );
    assert!(info.success(), "{who}: {info:?}");
    let mut expected = String::from("first\n");
    for i in 0..2000 {
        expected.push_str(&format!("line-{i}\n"));
    }
    assert_eq!(
        out.text(OutputStream::Stdout),
        expected,
        "{who}: stdout must arrive complete and in order"
    );
    assert_eq!(
        out.text(OutputStream::Stderr),
        "err-first\n",
        "{who}: stderr"
    );
}

/// Counts processes on the machine whose command line contains `marker`. The marker travels in
/// the environment, never on a command line, so the scan does not count itself.
pub async fn count_processes_with_marker(exec: &dyn RemoteExecutor, marker: &str) -> usize {
    let mut spec = shell(
        "n=0; for f in /proc/[0-9]*/cmdline; do \
           c=$(tr '\\000' ' ' < \"$f\" 2>/dev/null) || continue; \
           case \"$c\" in *\"$QA_CONF_MARKER\"*) n=$((n+1));; esac; \
         done; echo $n",
    );
    spec.env.insert("QA_CONF_MARKER".into(), marker.into());
    let (info, out) = run_recorded(exec, &spec).await;
    assert!(
        info.success(),
        "{}: process scan failed: {info:?} {}",
        exec.describe(),
        out.text(OutputStream::Stderr)
    );
    let text = out.text(OutputStream::Stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: process scan printed {text:?}", exec.describe()))
}

/// A command line that forks a background child and waits in a second one; both carry `marker`
/// on their command lines.
fn forking_command(marker: &str) -> String {
    format!(
        "/bin/sh -c 'sleep 600; : {marker}' & echo started; /bin/sh -c 'sleep 600; : {marker}'; wait"
    )
}

/// A timeout kills the whole process tree (the background child included) before `run` returns.
pub async fn timeout_kills_process_tree(exec: &dyn RemoteExecutor) {
    let who = exec.describe();
    let marker = unique("qa-conf-timeout");
    let mut spec = shell(forking_command(&marker));
    spec.timeout = Some(Duration::from_secs(2));
    let (info, out) = run_recorded(exec, &spec).await;
    assert!(info.timed_out, "{who}: timed_out expected: {info:?}");
    assert!(!info.success() && !info.cancelled, "{who}: {info:?}");
    assert!(
        out.text(OutputStream::Stdout).contains("started"),
        "{who}: the command must have started"
    );
    let left = count_processes_with_marker(exec, &marker).await;
    assert_eq!(
        left, 0,
        "{who}: {left} process(es) of the timed-out command are still running"
    );
}

/// Cancelling through the token returns promptly and kills the whole process tree.
pub async fn cancel_is_prompt_and_kills_process_tree(exec: &dyn RemoteExecutor) {
    let who = exec.describe();
    let marker = unique("qa-conf-cancel");
    let out = RecordedOutput::new();
    let token = CancellationToken::new();
    let mut spec = shell(forking_command(&marker));
    spec.timeout = Some(Duration::from_secs(600));
    let run = async {
        let r = exec.run(&spec, out.clone(), token.clone()).await;
        (r, Instant::now())
    };
    let control = async {
        let started = out.wait_for(OutputStream::Stdout, "started", GUARD).await;
        let running = count_processes_with_marker(exec, &marker).await;
        token.cancel();
        (started, running, Instant::now())
    };
    let ((result, ended), (started, running, cancelled_at)) = tokio::join!(run, control);
    let info = result.unwrap_or_else(|e| panic!("{who}: a cancelled run must still be Ok: {e}"));
    assert!(started, "{who}: the command never printed `started`");
    // Proves the scan sees the processes at all, so that the zero below means something.
    assert!(
        running >= 2,
        "{who}: the process scan found {running} marked processes while the command ran"
    );
    assert!(info.cancelled, "{who}: cancelled expected: {info:?}");
    assert!(!info.success() && !info.timed_out, "{who}: {info:?}");
    let waited = ended.saturating_duration_since(cancelled_at);
    assert!(
        waited < CANCEL_LIMIT,
        "{who}: run returned {waited:?} after cancellation"
    );
    let left = count_processes_with_marker(exec, &marker).await;
    assert_eq!(
        left, 0,
        "{who}: {left} process(es) of the cancelled command are still running"
    );
}

/// `put_file`, `put_tree` and `get_file` carry bytes and modes both ways; `put_file` makes missing
/// parent directories and is idempotent.
pub async fn file_round_trip_preserves_mode(exec: &dyn RemoteExecutor, scratch: &Path) {
    let who = exec.describe();
    let local = scratch_dir(scratch, "files");
    let remote = unique("conf-files");
    let script = local.join("script.sh");
    let content = b"#!/bin/sh\necho hello\nexit 0\n\x00\xffbinary tail\n".to_vec();
    write_file(&script, &content, 0o750);

    let target = format!("{remote}/nested/dir/script.sh");
    for _ in 0..2 {
        exec.put_file(&script, &target, None)
            .await
            .unwrap_or_else(|e| panic!("{who}: put_file: {e}"));
    }
    assert_eq!(
        checked(exec, &format!("stat -c %a {target}")).await.trim(),
        "750",
        "{who}: mode of the source"
    );
    assert_eq!(
        checked(exec, &format!("./{target}")).await,
        "hello\n",
        "{who}: uploaded script must run"
    );

    let explicit = format!("{remote}/explicit");
    exec.put_file(&script, &explicit, Some(0o600))
        .await
        .unwrap_or_else(|e| panic!("{who}: put_file: {e}"));
    assert_eq!(
        checked(exec, &format!("stat -c %a {explicit}"))
            .await
            .trim(),
        "600",
        "{who}: explicit mode"
    );

    let back = local.join("back/script.sh");
    std::fs::create_dir_all(back.parent().unwrap()).unwrap();
    exec.get_file(&target, &back)
        .await
        .unwrap_or_else(|e| panic!("{who}: get_file: {e}"));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        content,
        "{who}: bytes must survive the round trip"
    );
    assert_eq!(
        local_mode(&back),
        0o750,
        "{who}: get_file must keep the mode"
    );

    let tree = local.join("tree");
    write_file(&tree.join("a.txt"), b"a", 0o644);
    write_file(&tree.join("sub/b.sh"), b"#!/bin/sh\n", 0o755);
    write_file(&tree.join("sub/deeper/c.key"), b"secret", 0o600);
    let count = exec
        .put_tree(&tree, &format!("{remote}/tree"))
        .await
        .unwrap_or_else(|e| panic!("{who}: put_tree: {e}"));
    assert_eq!(count, 3, "{who}: put_tree must report the number of files");
    let modes = checked(
        exec,
        &format!("cd {remote}/tree && stat -c '%n %a' a.txt sub/b.sh sub/deeper/c.key"),
    )
    .await;
    assert_eq!(
        modes, "a.txt 644\nsub/b.sh 755\nsub/deeper/c.key 600\n",
        "{who}: put_tree modes"
    );
    let again = exec
        .put_tree(&tree, &format!("{remote}/tree"))
        .await
        .unwrap_or_else(|e| panic!("{who}: put_tree again: {e}"));
    assert_eq!(again, 3, "{who}: put_tree is idempotent");
    assert_eq!(
        checked(exec, &format!("cat {remote}/tree/sub/deeper/c.key")).await,
        "secret"
    );
    checked(exec, &format!("rm -rf {remote}")).await;
}

/// `put_file` replaces a file by renaming a complete temporary file over it: a hard link to the
/// old file keeps the old bytes, and no temporary file is left behind.
pub async fn put_replaces_atomically(exec: &dyn RemoteExecutor, scratch: &Path) {
    let who = exec.describe();
    let local = scratch_dir(scratch, "atomic");
    let remote = unique("conf-atomic");
    let v1 = local.join("v1");
    let v2 = local.join("v2");
    write_file(&v1, b"version one\n", 0o644);
    write_file(&v2, b"version two\n", 0o644);
    let target = format!("{remote}/file");
    exec.put_file(&v1, &target, None)
        .await
        .unwrap_or_else(|e| panic!("{who}: put_file: {e}"));
    checked(exec, &format!("ln {target} {remote}/old-link")).await;
    exec.put_file(&v2, &target, None)
        .await
        .unwrap_or_else(|e| panic!("{who}: put_file: {e}"));
    assert_eq!(
        checked(exec, &format!("cat {target}")).await,
        "version two\n",
        "{who}: new content"
    );
    assert_eq!(
        checked(exec, &format!("cat {remote}/old-link")).await,
        "version one\n",
        "{who}: the old file was written in place instead of replaced by rename"
    );
    assert_eq!(
        checked(exec, &format!("ls -A {remote}")).await,
        "file\nold-link\n",
        "{who}: temporary files were left behind"
    );
    checked(exec, &format!("rm -rf {remote}")).await;
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                _ => found.push(p),
            }
        }
    }
    found.sort();
    found
}

/// `collect` copies matches into `dest` keeping their relative paths, refuses patterns that leave
/// the work directory and never copies what a symlink outside points at.
pub async fn collect_stays_inside(exec: &dyn RemoteExecutor, scratch: &Path) {
    let who = exec.describe();
    let remote = unique("conf-collect");
    checked(
        exec,
        &format!(
            "mkdir -p {remote}/logs/sub && echo a > {remote}/logs/a.log && echo b > {remote}/logs/sub/b.log \
             && echo c > {remote}/logs/c.txt"
        ),
    )
    .await;
    let base = scratch_dir(scratch, "collect");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let pattern = format!("{remote}/logs/**/*.log");
    let mut got = exec
        .collect(std::slice::from_ref(&pattern), &dest)
        .await
        .unwrap_or_else(|e| panic!("{who}: collect: {e}"));
    got.sort();
    let expected = vec![
        dest.join(&remote).join("logs/a.log"),
        dest.join(&remote).join("logs/sub/b.log"),
    ];
    assert_eq!(
        got, expected,
        "{who}: collect must return the local paths it wrote"
    );
    assert_eq!(
        files_under(&dest),
        expected,
        "{who}: collect wrote other files"
    );
    assert_eq!(
        std::fs::read(&expected[1]).unwrap(),
        b"b\n",
        "{who}: collected bytes"
    );

    for bad in ["../*", "../../etc/passwd", "/etc/passwd", "conf-x/../../*"] {
        let dest = base.join("escape");
        match exec.collect(&[bad.to_string()], &dest).await {
            Err(RemoteError::PathEscape { .. }) => {}
            other => {
                panic!("{who}: collect of `{bad}` must be refused with PathEscape, got {other:?}")
            }
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    entries.sort();
    let allowed: Vec<std::ffi::OsString> = vec!["dest".into(), "escape".into()];
    assert!(
        entries.iter().all(|e| allowed.contains(e)),
        "{who}: collect wrote outside dest: {entries:?}"
    );
    assert!(
        files_under(&base.join("escape")).is_empty(),
        "{who}: a refused collect wrote files"
    );

    // Symlinks leading out of the work directory: either the whole collect is refused or the
    // links are left out, but what they point at never lands in dest.
    checked(
        exec,
        &format!("ln -s /etc/passwd {remote}/logs/passwd.log && ln -s /etc {remote}/logs/etc"),
    )
    .await;
    let dest2 = base.join("dest2");
    std::fs::create_dir_all(&dest2).unwrap();
    let everything = [
        format!("{remote}/**/*"),
        format!("{remote}/logs/passwd.log"),
        format!("{remote}/logs/etc/passwd"),
    ];
    match exec.collect(&everything, &dest2).await {
        Ok(paths) => {
            for p in &paths {
                assert!(
                    p.starts_with(&dest2),
                    "{who}: collect returned {} outside dest",
                    p.display()
                );
            }
            for p in files_under(&dest2) {
                let meta = std::fs::symlink_metadata(&p).unwrap();
                assert!(
                    !meta.file_type().is_symlink(),
                    "{who}: collect made a symlink {}",
                    p.display()
                );
                let bytes = std::fs::read(&p).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains("root:"),
                    "{who}: {} holds a file from outside the work directory",
                    p.display()
                );
            }
            assert!(
                paths.contains(&dest2.join(&remote).join("logs/a.log")),
                "{who}: ordinary files must still be collected"
            );
        }
        Err(RemoteError::PathEscape { .. }) => {
            for p in files_under(&dest2) {
                let bytes = std::fs::read(&p).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains("root:"),
                    "{who}: {} leaked",
                    p.display()
                );
            }
        }
        Err(e) => panic!("{who}: collect with outward symlinks failed with {e}"),
    }
    checked(exec, &format!("rm -rf {remote}")).await;
}

/// Without a reboot the boot id stays the same and is not empty.
pub async fn boot_id_is_stable(exec: &dyn RemoteExecutor) {
    let who = exec.describe();
    let a = exec
        .boot_id()
        .await
        .unwrap_or_else(|e| panic!("{who}: boot_id: {e}"));
    let b = exec
        .boot_id()
        .await
        .unwrap_or_else(|e| panic!("{who}: boot_id: {e}"));
    assert!(!a.0.trim().is_empty(), "{who}: empty boot id");
    assert_eq!(a, b, "{who}: boot id changed without a reboot");
}
