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

/// Writes a step's log and recording.
#[derive(Debug)]
pub struct StepRecorder {
    start: Instant,
    redactor: Redactor,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: BufWriter<File>,
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
            inner: Mutex::new(Inner {
                log,
                cast,
                pending: [Vec::new(), Vec::new()],
                carry: Default::default(),
                tail: Default::default(),
                at_line_start: [true, true],
            }),
        })
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
        for piece in text.split_inclusive(['\n', '\r']) {
            if g.at_line_start[stream] {
                let _ = write!(g.log, "[{t:>9.3}s] {marker} ");
            }
            let _ = g.log.write_all(piece.as_bytes());
            let ended = piece.ends_with('\n') || piece.ends_with('\r');
            if ended && piece.ends_with('\r') {
                let _ = g.log.write_all(b"\n");
            }
            g.at_line_start[stream] = ended;
            let line = piece.trim_end_matches(['\n', '\r']).to_string();
            if !line.is_empty() || ended {
                g.tail.push_back(line);
                if g.tail.len() > TAIL_LINES {
                    g.tail.pop_front();
                }
            }
        }
        if !g.at_line_start[stream] {
            // A partial line is only written at the end; finish it so the log stays line-based.
            let _ = g.log.write_all(b"\n");
            g.at_line_start[stream] = true;
        }
        let _ = g.log.flush();
        let _ = g.cast.flush();
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
        let _ = writeln!(g.log, "[{t:>9.3}s] # {}", self.redactor.redact(message));
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
}
