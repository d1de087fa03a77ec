//! The static results site: plain HTML files, written by Rust, that work from `file://`, from any
//! static web server and from GitHub Pages (`.nojekyll`).
//!
//! Layout of a site directory:
//!
//! ```text
//! index.html, index-2.html, …   every run present, newest first, 1,000 to a page
//! history/<plan>.html           step × last runs grid per plan
//! assets/style.css, player.js   shipped inside this crate
//! runs/<run>/index.html         one run: steps, logs, recordings, artifacts
//! runs/<run>/report.json        the run's report (redacted)
//! reports/<run>.json            the same, compact: the index and histories are made from these
//! runs/<run>/steps/…            log copies (`.log.txt`) and recordings (`.cast.js`)
//! runs/<run>/files/…            artifacts
//! ```
//!
//! Each run writes only its own directory (and its `reports/` entry); the index and histories are
//! regenerated from the reports of every run directory present, so runs published by different processes (or pushed by
//! different machines to one git branch) never overwrite each other.
//!
//! Recordings are written as scripts that register the asciicast in `window.QA_CASTS`, because a
//! page opened from `file://` may load scripts but may not `fetch()` files.
//!
//! Logs and recordings are streamed into the site a line at a time, never read whole: a run
//! whose steps flooded their logs costs `qa-run report` little memory.

mod history;
mod index_page;
mod page;
mod run_page;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use qa_core::recorder::TAIL_LINE_BYTES;
use qa_core::redact::{Redactor, StreamCarry};
use qa_core::report::Report;
use qa_core::{PublishError, PublishReceipt, ResultPublisher, Verdict};

pub use history::{HISTORY_RUNS, StepHistory};
pub use index_page::{RUNS_PER_PAGE, page_file};
pub use run_page::StepFiles;

use crate::paths;
use crate::text::slug;

/// The stylesheet shipped with every site.
pub const STYLE_CSS: &str = include_str!("assets/style.css");
/// The recording player shipped with every site.
pub const PLAYER_JS: &str = include_str!("assets/player.js");

/// Lines of a failing step's log shown inline when the report carries no tail.
const TAIL_LINES: usize = 40;
/// Artifacts larger than this are copied as they are rather than read for redaction.
const REDACT_LIMIT: u64 = 16 << 20;

/// What a site (re)generation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteSummary {
    /// Runs on the index.
    pub runs: usize,
    /// Plans with a history page.
    pub plans: usize,
    /// The index page.
    pub index: PathBuf,
    /// Run directories skipped because their report could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// A run as the index and histories see it.
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// Directory name under `runs/`.
    pub dir: String,
    /// The (redacted) report.
    pub report: Report,
}

/// The directory name a run gets under `runs/`.
pub fn run_dir_name(run_id: &str) -> String {
    let name = slug(run_id);
    if name == run_id {
        return name;
    }
    // The id had characters a path cannot carry; a hash of the id keeps `a/b` and `a_b` apart.
    let hash = run_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{name}-{:08x}", hash as u32)
}

/// The history page of a plan, relative to the site root.
pub fn history_file(plan: &str) -> String {
    format!("history/{}.html", slug(plan))
}

fn err(message: impl Into<String>) -> PublishError {
    PublishError::new("site", message)
}

fn io(path: &Path, e: std::io::Error) -> PublishError {
    crate::fsutil::io_error("site", path, e)
}

/// Writes one run into `site_dir/runs/<run>/`, replacing an earlier copy of the same run.
/// Reads logs, recordings and artifacts from `run_dir`; only files really inside it are used.
/// Does not touch the index (see [`regenerate`]).
pub fn write_run(
    site_dir: &Path,
    report: &Report,
    run_dir: &Path,
    redactor: &Redactor,
) -> Result<PathBuf, PublishError> {
    write_run_stamped(site_dir, report, run_dir, redactor, None)
}

fn write_run_stamped(
    site_dir: &Path,
    report: &Report,
    run_dir: &Path,
    redactor: &Redactor,
    stamp: Option<&str>,
) -> Result<PathBuf, PublishError> {
    let report = crate::redaction::report(report, redactor);
    let runs = site_dir.join("runs");
    std::fs::create_dir_all(&runs).map_err(|e| io(&runs, e))?;
    let name = run_dir_name(&report.run_id);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{name}-"))
        .tempdir_in(&runs)
        .map_err(|e| io(&runs, e))?;
    let t = tmp.path();

    let run_files = paths::RunFiles::new(run_dir);
    let resolve = |p: Option<&str>| p.and_then(|p| run_files.as_ref()?.resolve(p));
    let mut files = Vec::with_capacity(report.steps.len());
    let steps_dir = t.join("steps");
    std::fs::create_dir_all(&steps_dir).map_err(|e| io(&steps_dir, e))?;
    for (i, s) in report.steps.iter().enumerate() {
        let base = format!("{i}-{}-{}", slug(&s.machine), slug(&s.step));
        let mut f = StepFiles::default();
        let mut log_tail = None;
        if let Some(found) = resolve(s.log.as_deref()) {
            let real = found.full;
            if !found.is_dir {
                let rel = format!("steps/{base}.log.txt");
                log_tail = Some(copy_log(&real, &t.join(&rel), redactor)?);
                f.log = Some(rel);
            }
        }
        if s.verdict != Verdict::Pass {
            f.tail = s
                .log_tail
                .clone()
                .filter(|t| !t.trim().is_empty())
                .or(log_tail);
        }
        if let Some(found) = resolve(s.cast.as_deref()) {
            let real = found.full;
            if !found.is_dir {
                let rel = format!("steps/{base}.cast.js");
                if write_cast_script(i, &real, &t.join(&rel), redactor)? {
                    f.cast = Some(rel);
                }
            }
        }
        files.push(f);
    }

    let mut artifacts = Vec::new();
    for m in &report.machines {
        let mut links = Vec::new();
        for a in &m.artifacts {
            let (Some(hit), Some(rf)) = (resolve(Some(a.as_str())), run_files.as_ref()) else {
                tracing::warn!(artifact = %a, run = %report.run_id, "artifact skipped: missing, a symlink, or outside the run directory");
                continue;
            };
            let root = rf.root().to_path_buf();
            let mut found = Vec::new();
            if hit.is_dir {
                paths::files_under(&root, &hit.full, &mut found);
            } else {
                found.push(hit.relative);
            }
            for rel in found {
                let dest_rel = PathBuf::from("files").join(inert_name(&rel));
                copy_artifact(&root.join(&rel), &t.join(&dest_rel), redactor)?;
                let href = dest_rel
                    .components()
                    .map(|c| percent(&c.as_os_str().to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join("/");
                links.push((href, rel.display().to_string()));
            }
        }
        artifacts.push((m.name.clone(), links));
    }

    let page = run_page::render(
        &report,
        &files,
        &artifacts,
        &history_file(&report.plan_name),
    );
    std::fs::write(t.join("index.html"), page).map_err(|e| io(&t.join("index.html"), e))?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| err(format!("cannot serialise the report: {e}")))?;
    std::fs::write(t.join("report.json"), json).map_err(|e| io(&t.join("report.json"), e))?;
    if let Some(stamp) = stamp {
        std::fs::write(t.join(".source"), stamp).map_err(|e| io(&t.join(".source"), e))?;
    }

    // Swap the finished directory in: readers see the old copy or the new one.
    let dest = runs.join(&name);
    let old = runs.join(format!(".old-{name}-{}", std::process::id()));
    let had_old = dest.exists();
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&dest, &old).map_err(|e| io(&dest, e))?;
    }
    let t = tmp.keep();
    if let Err(e) = std::fs::rename(&t, &dest) {
        if had_old {
            let _ = std::fs::rename(&old, &dest);
        }
        let _ = std::fs::remove_dir_all(&t);
        return Err(io(&dest, e));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    let summary = site_dir.join(REPORTS_DIR).join(format!("{name}.json"));
    let compact = serde_json::to_vec(&report)
        .map_err(|e| err(format!("cannot serialise the report: {e}")))?;
    crate::fsutil::write_atomic(&summary, &compact).map_err(|e| io(&summary, e))?;
    Ok(dest)
}

/// The longest piece of a log read at once: logs are copied in pieces cut at line ends.
const LOG_PIECE: usize = 1 << 20;

/// Copies a step's log to `dest` with secrets masked, a piece at a time, and returns its last
/// [`TAIL_LINES`] lines (each cut at [`TAIL_LINE_BYTES`]).
fn copy_log(src: &Path, dest: &Path, redactor: &Redactor) -> Result<String, PublishError> {
    let file = std::fs::File::open(src).map_err(|e| io(src, e))?;
    let mut input = BufReader::new(file);
    let out = std::fs::File::create(dest).map_err(|e| io(dest, e))?;
    let mut out = BufWriter::new(out);
    let mut carry = StreamCarry::default();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES + 1);
    let mut piece = Vec::new();
    loop {
        piece.clear();
        // A piece is a line, or the first LOG_PIECE bytes of a longer one.
        let n = (&mut input)
            .take(LOG_PIECE as u64)
            .read_until(b'\n', &mut piece)
            .map_err(|e| io(src, e))?;
        if n == 0 {
            break;
        }
        let masked = redactor.redact_continuing(&piece, &mut carry);
        out.write_all(&masked).map_err(|e| io(dest, e))?;
        let line = String::from_utf8_lossy(&masked);
        let line = line.trim_end_matches(['\n', '\r']);
        tail.push_back(cut_line(line));
        if tail.len() > TAIL_LINES {
            tail.pop_front();
        }
    }
    out.flush().map_err(|e| io(dest, e))?;
    Ok(Vec::from(tail).join("\n"))
}

/// A line cut at [`TAIL_LINE_BYTES`], on a character boundary, marked with `…` when cut.
fn cut_line(line: &str) -> String {
    if line.len() <= TAIL_LINE_BYTES {
        return line.to_string();
    }
    let mut cut = TAIL_LINE_BYTES;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
}

/// Writes the recording `src`, masked, as a script that registers it under the step's index, a
/// line at a time. Returns false (and writes nothing) when `src` is not a recording.
fn write_cast_script(
    index: usize,
    src: &Path,
    dest: &Path,
    redactor: &Redactor,
) -> Result<bool, PublishError> {
    let file = std::fs::File::open(src).map_err(|e| io(src, e))?;
    let mut out: Option<BufWriter<std::fs::File>> = None;
    let mut first_event = true;
    crate::redaction::cast_stream(BufReader::new(file), redactor, |item| {
        match item {
            crate::redaction::CastItem::Header(h) => {
                let mut w = BufWriter::new(std::fs::File::create(dest)?);
                write!(
                    w,
                    "(window.QA_CASTS = window.QA_CASTS || {{}})[\"{index}\"] = {{\"header\":{},\"events\":[",
                    inert_json(&h.to_string())
                )?;
                out = Some(w);
            }
            crate::redaction::CastItem::Event(e) => {
                if let Some(w) = out.as_mut() {
                    if !first_event {
                        w.write_all(b",")?;
                    }
                    first_event = false;
                    w.write_all(inert_json(&e.to_string()).as_bytes())?;
                }
            }
        }
        Ok(())
    })
    .map_err(|e| io(dest, e))?;
    let Some(mut w) = out else {
        return Ok(false);
    };
    w.write_all(b"]};\n")
        .and_then(|()| w.flush())
        .map_err(|e| io(dest, e))?;
    Ok(true)
}

/// JSON text that cannot end a script element or a comment wherever it ends up: `<` never
/// appears outside strings in JSON, so escaping it keeps `</script>` and `<!--` inert; U+2028/2029
/// are line ends to older JavaScript engines.
fn inert_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// An artifact's path with extensions a browser would run (HTML, SVG, scripts) made inert by
/// appending `.txt`: an artifact is a test's output, and must not script the results site.
fn inert_name(rel: &Path) -> PathBuf {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let active = [
        ".html", ".htm", ".xhtml", ".svg", ".svgz", ".js", ".mjs", ".xml", ".xsl", ".shtml",
        ".php", ".swf", ".pdf",
    ];
    let mut out = rel.to_path_buf();
    if active.iter().any(|e| lower.ends_with(e)) {
        out.set_file_name(format!("{name}.txt"));
    }
    out
}

fn copy_artifact(src: &Path, dest: &Path, redactor: &Redactor) -> Result<(), PublishError> {
    if let Some(d) = dest.parent() {
        std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
    }
    let len = std::fs::metadata(src).map(|m| m.len()).unwrap_or(0);
    if len <= REDACT_LIMIT {
        let bytes = std::fs::read(src).map_err(|e| io(src, e))?;
        if let Ok(text) = std::str::from_utf8(&bytes) {
            return std::fs::write(dest, redactor.redact(text)).map_err(|e| io(dest, e));
        }
        return std::fs::write(dest, bytes).map_err(|e| io(dest, e));
    }
    std::fs::copy(src, dest).map(|_| ()).map_err(|e| io(src, e))
}

fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where each run's report is kept beside its directory: `reports/<run>.json`. The index and
/// histories are made from these, so a git publish can check out this one directory instead of
/// every run's files.
pub const REPORTS_DIR: &str = "reports";

/// Reads the report of every run present (`runs/<run>/` exists), newest first, from
/// `reports/<run>.json` or, for sites written before that existed, `runs/<run>/report.json`.
pub fn runs_in(site_dir: &Path) -> (Vec<RunEntry>, Vec<(PathBuf, String)>) {
    let mut present = std::collections::BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(site_dir.join("runs")) {
        for e in entries.flatten() {
            let dir = e.file_name().to_string_lossy().to_string();
            if !dir.starts_with('.') && e.file_type().is_ok_and(|t| t.is_dir()) {
                present.insert(dir);
            }
        }
    }
    runs_present(site_dir, &present)
}

/// Reads the reports of the runs named in `present` (directory names under `runs/`), newest
/// first. For a checkout where run directories are not on disk (a sparse git checkout), the
/// caller says which runs exist.
pub fn runs_present(
    site_dir: &Path,
    present: &std::collections::BTreeSet<String>,
) -> (Vec<RunEntry>, Vec<(PathBuf, String)>) {
    let mut runs = Vec::new();
    let mut bad = Vec::new();
    for dir in present {
        let summary = site_dir.join(REPORTS_DIR).join(format!("{dir}.json"));
        let path = if summary.is_file() {
            summary
        } else {
            site_dir.join("runs").join(dir).join("report.json")
        };
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Report>(&b).map_err(|e| e.to_string()))
        {
            Ok(report) => runs.push(RunEntry {
                dir: dir.clone(),
                report,
            }),
            Err(why) => bad.push((path, why)),
        }
    }
    sort_newest_first(&mut runs);
    (runs, bad)
}

fn sort_newest_first(runs: &mut [RunEntry]) {
    runs.sort_by_cached_key(|r| {
        (
            std::cmp::Reverse(page::epoch(&r.report.started)),
            std::cmp::Reverse(r.report.run_id.clone()),
        )
    });
}

/// Regenerates the index, every plan's history, the assets and `.nojekyll` from the runs present
/// in `site_dir/runs/`.
pub fn regenerate(site_dir: &Path) -> Result<SiteSummary, PublishError> {
    regenerate_from(site_dir, None)
}

/// [`regenerate`] for the runs named in `present` (directory names under `runs/`), for a
/// checkout that does not have every run's directory on disk.
pub fn regenerate_present(
    site_dir: &Path,
    present: &std::collections::BTreeSet<String>,
) -> Result<SiteSummary, PublishError> {
    regenerate_from(site_dir, Some(present))
}

fn regenerate_from(
    site_dir: &Path,
    present: Option<&std::collections::BTreeSet<String>>,
) -> Result<SiteSummary, PublishError> {
    // Two publishers finishing at once: without the lock, the one that read the runs first could
    // write its index last and leave the other's run off it.
    std::fs::create_dir_all(site_dir).map_err(|e| io(site_dir, e))?;
    let _lock = SiteLock::take(site_dir).map_err(|e| io(&site_dir.join(LOCK_FILE), e))?;
    let (runs, unreadable) = match present {
        Some(p) => runs_present(site_dir, p),
        None => runs_in(site_dir),
    };
    write_shared(site_dir, &runs)?;
    let mut plans: Vec<&str> = runs.iter().map(|r| r.report.plan_name.as_str()).collect();
    plans.sort_unstable();
    plans.dedup();
    Ok(SiteSummary {
        runs: runs.len(),
        plans: plans.len(),
        index: site_dir.join("index.html"),
        unreadable,
    })
}

fn write_shared(site_dir: &Path, runs: &[RunEntry]) -> Result<(), PublishError> {
    let w = |rel: &str, bytes: &[u8]| {
        let p = site_dir.join(rel);
        crate::fsutil::write_atomic(&p, bytes).map_err(|e| io(&p, e))
    };
    w(".nojekyll", b"")?;
    w("assets/style.css", STYLE_CSS.as_bytes())?;
    w("assets/player.js", PLAYER_JS.as_bytes())?;
    let mut by_plan: std::collections::BTreeMap<&str, Vec<&RunEntry>> = Default::default();
    for r in runs {
        by_plan
            .entry(r.report.plan_name.as_str())
            .or_default()
            .push(r);
    }
    for (plan, plan_runs) in &by_plan {
        w(
            &history_file(plan),
            history::render(plan, plan_runs).as_bytes(),
        )?;
    }
    let pages = index_page::page_count(runs.len());
    for n in 0..pages {
        w(&page_file(n), index_page::render(runs, n).as_bytes())?;
    }
    // Pages left from when there were more runs.
    if let Ok(entries) = std::fs::read_dir(site_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let number = name
                .strip_prefix("index-")
                .and_then(|r| r.strip_suffix(".html"))
                .and_then(|n| n.parse::<usize>().ok());
            if number.is_some_and(|k| k > pages) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// The file [`regenerate`] locks while it reads the runs and writes the shared pages.
pub const LOCK_FILE: &str = ".qa-publish.lock";

/// An exclusive advisory lock on a site directory, released on drop.
struct SiteLock(#[allow(dead_code)] std::fs::File);

impl SiteLock {
    fn take(site_dir: &Path) -> std::io::Result<SiteLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(site_dir.join(LOCK_FILE))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            loop {
                // SAFETY: flock on a file descriptor this function owns for the call's duration.
                let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
                if rc == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        Ok(SiteLock(file))
    }
}

/// Rebuilds the whole site from every `results_dir/*/report.json` (with its logs, recordings and
/// artifacts), then regenerates the index and histories. Runs whose site copy is up to date with
/// their `report.json` are not rewritten, so rebuilding after each run is cheap.
pub fn rebuild(results_dir: &Path, site_dir: &Path) -> Result<SiteSummary, PublishError> {
    rebuild_with(results_dir, site_dir, &Redactor::default())
}

/// [`rebuild`] with a redactor that knows secrets to mask.
pub fn rebuild_with(
    results_dir: &Path,
    site_dir: &Path,
    redactor: &Redactor,
) -> Result<SiteSummary, PublishError> {
    let entries = std::fs::read_dir(results_dir).map_err(|e| {
        err(format!(
            "cannot read the results directory {}: {e}",
            results_dir.display()
        ))
    })?;
    let mut run_dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("report.json").is_file())
        .collect();
    run_dirs.sort();
    let site_real = site_dir.canonicalize().ok();
    run_dirs.retain(|d| d.canonicalize().ok() != site_real);

    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let problems = std::sync::Mutex::new(Vec::new());
    let failure = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(dir) = run_dirs.get(i) else { break };
                    match publish_from_results(dir, site_dir, redactor) {
                        Ok(()) => {}
                        Err(Problem::Unreadable(p, why)) => problems
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((p, why)),
                        Err(Problem::Failed(e)) => {
                            failure
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut summary = regenerate(site_dir)?;
    summary
        .unreadable
        .extend(problems.into_inner().unwrap_or_else(|p| p.into_inner()));
    Ok(summary)
}

enum Problem {
    Unreadable(PathBuf, String),
    Failed(PublishError),
}

fn publish_from_results(dir: &Path, site_dir: &Path, redactor: &Redactor) -> Result<(), Problem> {
    let path = dir.join("report.json");
    let meta =
        std::fs::metadata(&path).map_err(|e| Problem::Unreadable(path.clone(), e.to_string()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stamp = format!(
        "{}:{}:{}:{}",
        env!("CARGO_PKG_VERSION"),
        meta.len(),
        mtime,
        dir.display()
    );
    let current = |run_name: &str| {
        std::fs::read_to_string(site_dir.join("runs").join(run_name).join(".source"))
            .is_ok_and(|s| s == stamp)
    };
    // Runs usually live in a directory named after their id: then an unchanged run is known
    // without reading its report.
    if let Some(name) = dir.file_name()
        && current(&run_dir_name(&name.to_string_lossy()))
    {
        return Ok(());
    }
    let bytes =
        std::fs::read(&path).map_err(|e| Problem::Unreadable(path.clone(), e.to_string()))?;
    let report: Report = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::Unreadable(path.clone(), e.to_string()))?;
    if current(&run_dir_name(&report.run_id)) {
        return Ok(());
    }
    write_run_stamped(site_dir, &report, dir, redactor, Some(&stamp))
        .map(|_| ())
        .map_err(Problem::Failed)
}

/// Publishes runs into a static site directory.
#[derive(Debug, Clone)]
pub struct SitePublisher {
    dir: PathBuf,
    redactor: Redactor,
}

impl SitePublisher {
    /// A publisher writing the site in `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SitePublisher {
            dir: dir.into(),
            redactor: Redactor::default(),
        }
    }

    /// Masks these secrets too.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }
}

#[async_trait]
impl ResultPublisher for SitePublisher {
    fn name(&self) -> &str {
        "site"
    }

    async fn publish(
        &self,
        report: &Report,
        run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        let (dir, report, run_dir, redactor) = (
            self.dir.clone(),
            report.clone(),
            run_dir.to_path_buf(),
            self.redactor.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let page = write_run(&dir, &report, &run_dir, &redactor)?;
            regenerate(&dir)?;
            Ok(PublishReceipt::new(
                "site",
                page.join("index.html").display().to_string(),
            ))
        })
        .await
        .map_err(|e| err(format!("the site writer stopped: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_script_cannot_close_a_script_element() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("s.cast"), dir.path().join("s.cast.js"));
        let cast = "{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"</script><script>alert(1)</script>\\u2028\"]\n";
        std::fs::write(&src, cast).unwrap();
        assert!(write_cast_script(3, &src, &dest, &Redactor::default()).unwrap());
        let js = std::fs::read_to_string(&dest).unwrap();
        assert!(!js.contains('<'), "{js}");
        assert!(js.starts_with("(window.QA_CASTS = window.QA_CASTS || {})[\"3\"] = {"));
        let json = js
            .trim_start_matches("(window.QA_CASTS = window.QA_CASTS || {})[\"3\"] = ")
            .trim_end()
            .trim_end_matches(';');
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["header"]["width"], 80);
        assert_eq!(
            v["events"][0][2].as_str().unwrap(),
            "</script><script>alert(1)</script>\u{2028}"
        );
        // Not a recording: no script.
        std::fs::write(&src, "not json\n[0.5,\"o\",\"x\"]\n").unwrap();
        assert!(
            !write_cast_script(3, &src, &dest.with_extension("2.js"), &Redactor::default())
                .unwrap()
        );
        assert!(!dest.with_extension("2.js").exists());
    }

    #[test]
    fn a_log_is_copied_in_pieces_with_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("s.log"), dir.path().join("s.log.txt"));
        let mut log = String::new();
        for i in 0..100 {
            log.push_str(&format!("line {i} hunter22\n"));
        }
        log.push_str(&"z".repeat(3 * LOG_PIECE));
        std::fs::write(&src, &log).unwrap();
        let tail = copy_log(&src, &dest, &Redactor::new(["hunter22".to_string()])).unwrap();
        let copy = std::fs::read_to_string(&dest).unwrap();
        assert_eq!(copy, log.replace("hunter22", "[REDACTED]"));
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], "line 63 [REDACTED]");
        assert_eq!(lines[36], "line 99 [REDACTED]");
        assert_eq!(lines[37], format!("{}…", "z".repeat(TAIL_LINE_BYTES)));
    }

    #[test]
    fn run_directory_names_are_safe_and_distinct() {
        assert_eq!(run_dir_name("20261120-100000-abcd"), "20261120-100000-abcd");
        let (a, b) = (run_dir_name("a/b"), run_dir_name("a_b"));
        assert_ne!(a, b);
        assert!(a.starts_with("a_b-"));
        assert!(!run_dir_name("../..").contains('/'));
    }

    #[test]
    fn active_artifact_types_become_text() {
        assert_eq!(
            inert_name(Path::new("a/report.HTML")),
            PathBuf::from("a/report.HTML.txt")
        );
        assert_eq!(
            inert_name(Path::new("a/pic.svg")),
            PathBuf::from("a/pic.svg.txt")
        );
        assert_eq!(
            inert_name(Path::new("a/out.log")),
            PathBuf::from("a/out.log")
        );
    }
}
