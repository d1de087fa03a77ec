//! The record of one step: a timestamped log (`logs/<machine>/<step>.log`) and an asciicast v2
//! recording (`casts/<machine>/<step>.cast`) written as the output arrives, with secrets masked.
//!
//! Output is held back to the last line end (`\n` or `\r`) so that a secret split across two reads
//! is still masked; whatever is held is written when the step ends.
//!
//! Each of the two files stays within the step's log limit ([`DEFAULT_LOG_LIMIT`] unless the plan
//! sets `log-limit`). A step whose output floods past it keeps the start of its output (the
//! head) and the end (the tail), with a marker between them saying how much was left out. The
//! tail is held in memory until the step ends, at most [`TAIL_KEPT`] a file, so a flood costs
//! bounded memory and disk whatever its size.
//!
//! Why the files can be larger than the output: every log line gets a 15-byte prefix (time and
//! stream), which for short lines is several times the line, and the recording holds the same
//! output again as JSON strings, where a line end takes four bytes (`\r\n` escaped) and a control
//! byte six (`\u001b`). The limit bounds each file, not the output.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use crate::plan::ByteSize;
use crate::redact::{Redactor, StreamCarry};
use crate::remote::{OutputSink, OutputStream};

/// Lines of log kept for the report's tail of a failing step.
pub const TAIL_LINES: usize = 40;

/// Bytes of one line kept for the report's tail; a longer line is cut and ends with `…`.
pub const TAIL_LINE_BYTES: usize = 1024;

/// The most a step's log, and separately its recording, keep when the plan sets no
/// `log-limit`: 64 MiB.
pub const DEFAULT_LOG_LIMIT: u64 = 64 << 20;

/// The smallest `log-limit` a plan may set: room for a head, the marker and a tail.
pub const MIN_LOG_LIMIT: u64 = 4 << 10;

/// The most of a file's end that is kept once its output passed the limit: half the limit, and
/// no more than this (it is held in memory until the step ends).
pub const TAIL_KEPT: u64 = 4 << 20;

/// Room kept at the limit for the marker that says what was left out.
const MARKER_ROOM: u64 = 256;

/// Told of every line as it is written to the log: its stream, where its entry starts in the
/// log file (bytes), and the line without its end. Called with the recorder's lock held: it must
/// not block.
///
/// Once a step's output passed its log limit, lines are held for the log's tail: those that stay
/// in the tail are told when the step ends (with where the finished log has them, so offsets
/// still increase), and those left out of the log are never told.
pub type LineObserver = Box<dyn Fn(OutputStream, u64, &str) + Send + Sync>;

/// Writes a step's log and recording.
pub struct StepRecorder {
    start: Instant,
    redactor: Redactor,
    observer: Option<LineObserver>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StepRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepRecorder").finish_non_exhaustive()
    }
}

/// Where an output line is in its log entry, for telling the observer of a line from the tail.
#[derive(Debug, Clone, Copy)]
struct LineSpan {
    stream: OutputStream,
    start: usize,
    end: usize,
}

struct Inner {
    /// Entries of the log; the tag of an output line says where the line is in its entry.
    log: HeadTail<Option<LineSpan>>,
    cast: HeadTail<()>,
    limit: u64,
    pending: [Vec<u8>; 2],
    /// Per stream: whether its output so far ended inside a private-key block.
    carry: [StreamCarry; 2],
    tail: VecDeque<String>,
}

impl StepRecorder {
    /// Creates both files (and their directories) and writes the recording's header. Each file
    /// keeps at most [`DEFAULT_LOG_LIMIT`] unless [`with_log_limit`](Self::with_log_limit) says
    /// otherwise.
    pub fn create(
        log_path: &Path,
        cast_path: &Path,
        title: &str,
        redactor: Redactor,
    ) -> std::io::Result<Self> {
        for p in [log_path, cast_path] {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
        }
        let log = BufWriter::new(File::create(log_path)?);
        let mut cast = BufWriter::new(File::create(cast_path)?);
        let header = serde_json::json!({
            "version": 2,
            "width": 120,
            "height": 40,
            "timestamp": time::OffsetDateTime::now_utc().unix_timestamp(),
            "title": redactor.redact(title),
            "env": {"TERM": "xterm-256color", "SHELL": "/bin/sh"},
        })
        .to_string();
        writeln!(cast, "{header}")?;
        cast.flush()?;
        let mut cast = HeadTail::new(cast, DEFAULT_LOG_LIMIT);
        cast.len = header.len() as u64 + 1;
        Ok(StepRecorder {
            start: Instant::now(),
            redactor,
            observer: None,
            inner: Mutex::new(Inner {
                log: HeadTail::new(log, DEFAULT_LOG_LIMIT),
                cast,
                limit: DEFAULT_LOG_LIMIT,
                pending: [Vec::new(), Vec::new()],
                carry: Default::default(),
                tail: Default::default(),
            }),
        })
    }

    /// Tells `observer` of every line written to the log from now on.
    pub fn observe_lines(mut self, observer: LineObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Keeps each file within `limit` bytes (at least [`MIN_LOG_LIMIT`]): the head of the output
    /// and its tail, with a marker between them.
    pub fn with_log_limit(self, limit: u64) -> Self {
        {
            let mut g = self.inner.lock().expect("recorder lock");
            let limit = limit.max(MIN_LOG_LIMIT);
            g.limit = limit;
            g.log.set_limit(limit);
            g.cast.set_limit(limit);
        }
        self
    }

    /// Writes whatever is held back (the rest of the output, then the marker and the tail of a
    /// file that passed the limit) and flushes. Returns the last [`TAIL_LINES`] lines of output.
    pub fn finish(&self) -> String {
        let mut g = self.inner.lock().expect("recorder lock");
        for s in 0..2 {
            let rest = std::mem::take(&mut g.pending[s]);
            if !rest.is_empty() {
                self.emit(&mut g, s, &rest);
            }
        }
        let limit = ByteSize(g.limit);
        let placed = g.log.seal(|cut| {
            format!(
                "[{:>9.3}s] # {} bytes of log ({} lines) left out here: the log keeps the start and the end of the output within log-limit {limit}\n",
                cut.at, cut.bytes, cut.records
            )
            .into_bytes()
        });
        g.cast.seal(|cut| {
            let text = format!(
                "\r\n[{} pieces of output left out here: the recording keeps the start and the end within log-limit {limit}]\r\n",
                cut.records
            );
            let at = (cut.at * 1e6).round() / 1e6;
            let mut event = serde_json::json!([at, "o", text]).to_string();
            event.push('\n');
            event.into_bytes()
        });
        if let Some(observe) = &self.observer {
            for (at, entry, span) in placed {
                if let Some(s) = span {
                    observe(
                        s.stream,
                        at,
                        &String::from_utf8_lossy(&entry[s.start..s.end]),
                    );
                }
            }
        }
        g.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn emit(&self, g: &mut Inner, stream: usize, bytes: &[u8]) {
        let t = self.start.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(bytes);
        let text = self
            .redactor
            .redact_continuing(text.as_bytes(), &mut g.carry[stream]);
        let text = String::from_utf8_lossy(&text).into_owned();
        // Recording: terminal output wants CRLF.
        let term = text.replace("\r\n", "\n").replace('\n', "\r\n");
        let event = serde_json::json!([(t * 1e6).round() / 1e6, "o", term]).to_string();
        g.cast.push(&[event.as_bytes(), b"\n"], (), t);
        let marker = if stream == 0 { '|' } else { '!' };
        let which = if stream == 0 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        let prefix = format!("[{t:>9.3}s] {marker} ");
        for piece in text.split_inclusive(['\n', '\r']) {
            let line = piece.trim_end_matches(['\n', '\r']);
            // A line ended by `\r` alone, or not ended (the end of the output, or a part of a
            // very long line), is ended with `\n` so the log stays line-based.
            let end: &[u8] = if piece.ends_with('\n') { b"" } else { b"\n" };
            let span = LineSpan {
                stream: which,
                start: prefix.len(),
                end: prefix.len() + line.len(),
            };
            let written = g
                .log
                .push(&[prefix.as_bytes(), piece.as_bytes(), end], Some(span), t);
            if let (Some(at), Some(observe)) = (written, &self.observer) {
                observe(which, at, line);
            }
            if !line.is_empty() || piece.len() > line.len() {
                g.tail.push_back(tail_line(line));
                if g.tail.len() > TAIL_LINES {
                    g.tail.pop_front();
                }
            }
        }
        g.log.flush();
        g.cast.flush();
    }
}

/// A line for the report's tail: cut at [`TAIL_LINE_BYTES`], on a character boundary.
fn tail_line(line: &str) -> String {
    if line.len() <= TAIL_LINE_BYTES {
        return line.to_string();
    }
    let mut cut = TAIL_LINE_BYTES;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
}

impl OutputSink for StepRecorder {
    fn output(&self, stream: OutputStream, data: &[u8]) {
        let s = match stream {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        };
        let mut g = self.inner.lock().expect("recorder lock");
        g.pending[s].extend_from_slice(data);
        if let Some(cut) = g.pending[s].iter().rposition(|&b| b == b'\n' || b == b'\r') {
            let rest = g.pending[s].split_off(cut + 1);
            let ready = std::mem::replace(&mut g.pending[s], rest);
            self.emit(&mut g, s, &ready);
        } else if g.pending[s].len() > 64 * 1024 {
            // A very long line without an end: write it rather than hold it forever.
            let ready = std::mem::take(&mut g.pending[s]);
            self.emit(&mut g, s, &ready);
        }
    }

    fn note(&self, message: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut g = self.inner.lock().expect("recorder lock");
        let entry = format!("[{t:>9.3}s] # {}\n", self.redactor.redact(message));
        g.log.push(&[entry.as_bytes()], None, t);
        g.log.flush();
    }
}

/// What was left out of a file: whole records (log entries, recording events) and their bytes,
/// from the time of the first record that did not fit in the head.
#[derive(Debug, Clone, Copy, Default)]
struct Cut {
    at: f64,
    records: u64,
    bytes: u64,
}

/// A file that keeps the head and the tail of the records written to it. Records go to the file
/// while they fit in the head; from the first one that does not, they are held, and the oldest
/// held are dropped to keep the tail within its room. [`seal`](Self::seal) writes a marker and
/// the tail. Records are never split, so a file stays a sequence of whole lines or events.
struct HeadTail<T> {
    out: BufWriter<File>,
    /// Bytes in the file.
    len: u64,
    /// Records are written while the file stays within this.
    head_room: u64,
    /// The most the held tail may have.
    tail_room: u64,
    /// Set once a record did not fit in the head.
    cut: Option<Cut>,
    tail: VecDeque<(Vec<u8>, T)>,
    tail_len: u64,
    /// The marker and tail are written: what comes later is written only if the head has room.
    sealed: bool,
}

impl<T> HeadTail<T> {
    fn new(out: BufWriter<File>, limit: u64) -> Self {
        let mut f = HeadTail {
            out,
            len: 0,
            head_room: 0,
            tail_room: 0,
            cut: None,
            tail: VecDeque::new(),
            tail_len: 0,
            sealed: false,
        };
        f.set_limit(limit);
        f
    }

    fn set_limit(&mut self, limit: u64) {
        let limit = limit.max(MIN_LOG_LIMIT);
        self.tail_room = (limit / 2).min(TAIL_KEPT);
        self.head_room = limit - self.tail_room - MARKER_ROOM;
    }

    /// Writes the record made of `parts` if it fits in the head and returns where it starts in
    /// the file; otherwise holds it for the tail (or drops it) and returns `None`.
    fn push(&mut self, parts: &[&[u8]], tag: T, t: f64) -> Option<u64> {
        let n: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if self.cut.is_none() && self.len + n <= self.head_room {
            let at = self.len;
            if parts.iter().all(|p| self.out.write_all(p).is_ok()) {
                self.len += n;
                return Some(at);
            }
            return None;
        }
        if self.sealed {
            return None;
        }
        let cut = self.cut.get_or_insert(Cut {
            at: t,
            ..Cut::default()
        });
        if n > self.tail_room {
            cut.records += 1;
            cut.bytes += n;
            return None;
        }
        self.tail.push_back((parts.concat(), tag));
        self.tail_len += n;
        while self.tail_len > self.tail_room {
            let (dropped, _) = self
                .tail
                .pop_front()
                .expect("a tail over its room holds records");
            self.tail_len -= dropped.len() as u64;
            cut.records += 1;
            cut.bytes += dropped.len() as u64;
        }
        None
    }

    /// Writes the marker (when something was left out) and the held tail, and flushes. Returns
    /// each tail record with where it starts in the file and its tag.
    fn seal(&mut self, marker: impl FnOnce(&Cut) -> Vec<u8>) -> Vec<(u64, Vec<u8>, T)> {
        if self.sealed {
            return Vec::new();
        }
        self.sealed = true;
        if let Some(cut) = self.cut.filter(|c| c.records > 0) {
            let mut m = marker(&cut);
            debug_assert!(m.len() as u64 <= MARKER_ROOM, "marker too long");
            m.truncate(MARKER_ROOM as usize);
            if self.out.write_all(&m).is_ok() {
                self.len += m.len() as u64;
            }
        }
        let mut placed = Vec::with_capacity(self.tail.len());
        for (bytes, tag) in self.tail.drain(..) {
            let at = self.len;
            if self.out.write_all(&bytes).is_ok() {
                self.len += bytes.len() as u64;
                placed.push((at, bytes, tag));
            }
        }
        self.tail_len = 0;
        self.flush();
        placed
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_and_cast_carry_the_output_with_secrets_masked() {
        let dir = tempfile::tempdir().unwrap();
        let (log, cast) = (dir.path().join("l/s.log"), dir.path().join("c/s.cast"));
        let r = StepRecorder::create(
            &log,
            &cast,
            "box: build",
            Redactor::new(["topsecret".to_string()]),
        )
        .unwrap();
        r.output(OutputStream::Stdout, b"hello top");
        r.output(OutputStream::Stdout, b"secret world\nsecond");
        r.output(OutputStream::Stderr, b"oops\n");
        r.note("a note");
        let tail = r.finish();
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(log.contains("| hello [REDACTED] world\n"), "{log}");
        assert!(log.contains("! oops\n"), "{log}");
        assert!(log.contains("| second\n"), "{log}");
        assert!(log.contains("# a note"), "{log}");
        assert!(!log.contains("topsecret"));
        let cast = std::fs::read_to_string(&cast).unwrap();
        let mut lines = cast.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["version"], 2);
        let events: Vec<serde_json::Value> =
            lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        let text: String = events.iter().map(|e| e[2].as_str().unwrap()).collect();
        assert_eq!(text, "hello [REDACTED] world\r\noops\r\nsecond");
        assert!(
            events
                .windows(2)
                .all(|w| w[0][0].as_f64() <= w[1][0].as_f64())
        );
        assert_eq!(tail, "hello [REDACTED] world\noops\nsecond");
    }

    #[test]
    fn observers_see_each_line_where_the_log_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let r = StepRecorder::create(
            &log,
            &dir.path().join("s.cast"),
            "t",
            Redactor::new(["hush".to_string()]),
        )
        .unwrap()
        .observe_lines(Box::new(move |stream, at, line| {
            s2.lock().unwrap().push((stream, at, line.to_string()));
        }));
        r.note("first a note");
        r.output(OutputStream::Stdout, b"one\ntw");
        r.output(OutputStream::Stderr, b"hush now\r");
        r.output(OutputStream::Stdout, b"o\nthree");
        r.finish();
        let log = std::fs::read(&log).unwrap();
        let seen = seen.lock().unwrap();
        let lines: Vec<&str> = seen.iter().map(|(_, _, l)| l.as_str()).collect();
        assert_eq!(lines, ["one", "[REDACTED] now", "two", "three"]);
        assert_eq!(seen[1].0, OutputStream::Stderr);
        for (_, at, line) in seen.iter() {
            let entry = &log[*at as usize..];
            let entry = std::str::from_utf8(entry).unwrap().lines().next().unwrap();
            assert!(
                entry.ends_with(line.as_str()),
                "{entry:?} at {at} is not {line:?}"
            );
            assert!(entry.starts_with('['), "{entry:?} is not an entry's start");
        }
    }

    /// Lines of the log without their time prefix (`[    0.001s] `), which varies.
    fn entries(log: &str) -> Vec<&str> {
        log.lines().map(|l| &l[13..]).collect()
    }

    // Regression: 300 MB of step output became 700 MB on disk (a 15-byte prefix per log line,
    // and the recording's JSON), and nothing bounded either file.
    #[test]
    fn a_flood_keeps_the_head_and_the_tail_of_each_file_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (log, cast) = (dir.path().join("s.log"), dir.path().join("s.cast"));
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let r = StepRecorder::create(&log, &cast, "t", Redactor::default())
            .unwrap()
            .with_log_limit(8192)
            .observe_lines(Box::new(move |_, at, line| {
                s2.lock().unwrap().push((at, line.to_string()));
            }));
        for i in 0..10_000 {
            r.output(OutputStream::Stdout, format!("line {i:06}\n").as_bytes());
        }
        let tail = r.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() <= 8192, "{}", text.len());
        // Each entry is 27 bytes ("[    0.001s] | line 000001\n"). The head has 8192 less the
        // tail's half (4096) and the marker's room (256): 142 entries; the tail 151.
        let lines = entries(&text);
        let expected: Vec<String> = (0..142)
            .map(|i| format!("| line {i:06}"))
            .chain(["# 262089 bytes of log (9707 lines) left out here: the log keeps the start and the end of the output within log-limit 8KiB".to_string()])
            .chain((9849..10_000).map(|i| format!("| line {i:06}")))
            .collect();
        assert_eq!(lines, expected);
        // Observers were told of every line the log keeps, where it has it, in order.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 142 + 151);
        assert_eq!(seen[142].1, "line 009849");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        for (at, line) in seen.iter() {
            assert!(
                text[*at as usize..]
                    .lines()
                    .next()
                    .unwrap()
                    .ends_with(line.as_str())
            );
        }
        assert!(tail.starts_with("line 009960\n") && tail.ends_with("line 009999"));

        let cast = std::fs::read_to_string(&cast).unwrap();
        assert!(cast.len() <= 8192, "{}", cast.len());
        let events: Vec<serde_json::Value> = cast
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let text: Vec<&str> = events.iter().map(|e| e[2].as_str().unwrap()).collect();
        assert_eq!(text[0], "line 000000\r\n");
        assert_eq!(*text.last().unwrap(), "line 009999\r\n");
        let marker = text
            .iter()
            .position(|t| t.contains("left out here"))
            .unwrap();
        assert!(
            text[marker].contains("pieces of output left out here"),
            "{}",
            text[marker]
        );
        assert!(
            events
                .windows(2)
                .all(|w| w[0][0].as_f64() <= w[1][0].as_f64())
        );
    }

    #[test]
    fn output_within_the_limit_is_kept_whole_and_a_long_line_is_kept_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (log, cast) = (dir.path().join("s.log"), dir.path().join("s.cast"));
        let r = StepRecorder::create(&log, &cast, "t", Redactor::default())
            .unwrap()
            .with_log_limit(1 << 20);
        // 300 KiB without a line end: written in parts of a little over 64 KiB.
        let chunk = vec![b'x'; 1000];
        for _ in 0..300 {
            r.output(OutputStream::Stderr, &chunk);
        }
        r.note("done");
        let tail = r.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines = entries(&text);
        assert!(!text.contains("left out"));
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("! "))
                .map(|l| l.len() - 2)
                .sum::<usize>(),
            300_000
        );
        assert_eq!(
            lines[4], "# done",
            "the note comes before the output held at the end"
        );
        // The report's tail cuts each line.
        assert!(
            tail.lines()
                .all(|l| l.len() <= TAIL_LINE_BYTES + '…'.len_utf8())
        );
        assert!(tail.lines().next().unwrap().ends_with('…'));
    }

    #[test]
    fn a_record_larger_than_the_tail_is_left_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (log, cast) = (dir.path().join("s.log"), dir.path().join("s.cast"));
        let r = StepRecorder::create(&log, &cast, "t", Redactor::default())
            .unwrap()
            .with_log_limit(MIN_LOG_LIMIT);
        r.output(OutputStream::Stdout, b"first\n");
        r.output(OutputStream::Stdout, &[b'y'; 5000]);
        r.output(OutputStream::Stdout, b"\nlast\n");
        r.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() as u64 <= MIN_LOG_LIMIT);
        assert_eq!(
            entries(&text),
            [
                "| first",
                "# 5016 bytes of log (1 lines) left out here: the log keeps the start and the end of the output within log-limit 4KiB",
                "| last"
            ]
        );
        let cast = std::fs::read_to_string(&cast).unwrap();
        assert!(cast.len() as u64 <= MIN_LOG_LIMIT);
        assert!(
            cast.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
    }
}
