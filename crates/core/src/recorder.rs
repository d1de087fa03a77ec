//! The record of one step: a timestamped log (`logs/<machine>/<step>.log`) and an asciicast v2
//! recording (`casts/<machine>/<step>.cast`) written as the output arrives, with secrets masked.
//!
//! Output is held back to the last line end (`\n` or `\r`) so that a secret split across two reads
//! is still masked; whatever is held is written when the step ends.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use crate::redact::{Redactor, StreamCarry};
use crate::remote::{OutputSink, OutputStream};

/// Lines of log kept for the report's tail of a failing step.
pub const TAIL_LINES: usize = 40;

/// Told of every line as it is written to the log: its stream, where its entry starts in the
/// log file (bytes), and the line without its end. Called with the recorder's lock held: it must
/// not block.
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

struct Inner {
    log: BufWriter<File>,
    /// Bytes written to the log so far.
    log_len: u64,
    cast: BufWriter<File>,
    pending: [Vec<u8>; 2],
    /// Per stream: whether its output so far ended inside a private-key block.
    carry: [StreamCarry; 2],
    tail: std::collections::VecDeque<String>,
    at_line_start: [bool; 2],
}

impl StepRecorder {
    /// Creates both files (and their directories) and writes the recording's header.
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
        });
        writeln!(cast, "{header}")?;
        cast.flush()?;
        Ok(StepRecorder {
            start: Instant::now(),
            redactor,
            observer: None,
            inner: Mutex::new(Inner {
                log,
                log_len: 0,
                cast,
                pending: [Vec::new(), Vec::new()],
                carry: Default::default(),
                tail: Default::default(),
                at_line_start: [true, true],
            }),
        })
    }

    /// Tells `observer` of every line written to the log from now on.
    pub fn observe_lines(mut self, observer: LineObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Writes whatever is held back and flushes. Returns the last [`TAIL_LINES`] lines of output.
    pub fn finish(&self) -> String {
        let mut g = self.inner.lock().expect("recorder lock");
        for s in 0..2 {
            let rest = std::mem::take(&mut g.pending[s]);
            if !rest.is_empty() {
                self.emit(&mut g, s, &rest);
            }
        }
        let _ = g.log.flush();
        let _ = g.cast.flush();
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
        let _ = writeln!(
            g.cast,
            "{}",
            serde_json::json!([(t * 1e6).round() / 1e6, "o", term])
        );
        let marker = if stream == 0 { '|' } else { '!' };
        let which = if stream == 0 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        for piece in text.split_inclusive(['\n', '\r']) {
            let entry_at = g.log_len;
            if g.at_line_start[stream] {
                g.write_log(format!("[{t:>9.3}s] {marker} ").as_bytes());
            }
            g.write_log(piece.as_bytes());
            let ended = piece.ends_with('\n') || piece.ends_with('\r');
            if ended && piece.ends_with('\r') {
                g.write_log(b"\n");
            }
            g.at_line_start[stream] = ended;
            let line = piece.trim_end_matches(['\n', '\r']).to_string();
            if let Some(observe) = &self.observer {
                observe(which, entry_at, &line);
            }
            if !line.is_empty() || ended {
                g.tail.push_back(line);
                if g.tail.len() > TAIL_LINES {
                    g.tail.pop_front();
                }
            }
        }
        if !g.at_line_start[stream] {
            // A partial line is only written at the end; finish it so the log stays line-based.
            g.write_log(b"\n");
            g.at_line_start[stream] = true;
        }
        let _ = g.log.flush();
        let _ = g.cast.flush();
    }
}

impl Inner {
    /// Writes to the log, counting what was written.
    fn write_log(&mut self, bytes: &[u8]) {
        if self.log.write_all(bytes).is_ok() {
            self.log_len += bytes.len() as u64;
        }
    }
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
        g.write_log(entry.as_bytes());
        let _ = g.log.flush();
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
}
