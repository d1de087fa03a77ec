//! Notes from a step's supervisor on the machine, picked out of the step's output.
//!
//! The supervisor (see `shell`) has no channel of its own back to the executor, so it writes what
//! it did (processes it ended) as lines starting with a marker unique to the step. A
//! [`NoteFilter`] sits between the SSH channel and the step's sink: marked lines become notes,
//! everything else passes through unchanged, whatever way the bytes are split into chunks.

use std::sync::{Arc, Mutex};

use qa_core::remote::{OutputSink, OutputStream};

/// An [`OutputSink`] that turns lines starting with `marker` into notes of the sink it wraps.
pub(crate) struct NoteFilter {
    inner: Arc<dyn OutputSink>,
    marker: Vec<u8>,
    /// Per stream: bytes held back because they may be the start of a marked line.
    held: Mutex<[Vec<u8>; 2]>,
    /// The notes that say what the command left running, for the step's result.
    leftovers: Mutex<Vec<String>>,
    /// Why the command could not be started, if it said so.
    not_started: Mutex<Option<String>>,
}

/// The slot of `stream` in `held`; `None` for a stream added to qa-core after this was
/// written, which is passed on unfiltered (notes come on stdout or stderr only).
fn index(stream: OutputStream) -> Option<usize> {
    match stream {
        OutputStream::Stdout => Some(0),
        OutputStream::Stderr => Some(1),
        _ => None,
    }
}

impl NoteFilter {
    pub(crate) fn new(inner: Arc<dyn OutputSink>, marker: String) -> Arc<Self> {
        Arc::new(NoteFilter {
            inner,
            marker: marker.into_bytes(),
            held: Mutex::new([Vec::new(), Vec::new()]),
            leftovers: Mutex::new(Vec::new()),
            not_started: Mutex::new(None),
        })
    }

    /// Why the command could not be started on the machine, if a note said so.
    pub(crate) fn not_started(&self) -> Option<String> {
        self.not_started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The notes so far that say which processes the command left running were ended, or
    /// could not be.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        self.leftovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn pass_note(&self, text: &str) {
        if let Some(why) = text.strip_prefix(super::shell::NOT_STARTED) {
            *self.not_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
        } else if text.starts_with("ended ") || text.starts_with("could not end ") {
            self.leftovers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(text.to_string());
        }
        self.inner.note(text);
    }

    /// Passes on what was held back at the end of the output (a marked line without its newline
    /// is still a note).
    pub(crate) fn finish(&self) {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, rest) in held.into_iter().enumerate() {
            let stream = if i == 0 {
                OutputStream::Stdout
            } else {
                OutputStream::Stderr
            };
            if let Some(note) = rest.strip_prefix(self.marker.as_slice()) {
                self.note_bytes(note);
            } else if !rest.is_empty() {
                self.inner.output(stream, &rest);
            }
        }
    }

    fn note_bytes(&self, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        self.pass_note(text.trim_end_matches(['\r', '\n']));
    }

    /// The length of the longest end of `buf` that is a proper start of the marker.
    fn partial_marker_at_end(&self, buf: &[u8]) -> usize {
        (1..self.marker.len().min(buf.len() + 1))
            .rev()
            .find(|&n| buf.ends_with(&self.marker[..n]))
            .unwrap_or(0)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl OutputSink for NoteFilter {
    fn output(&self, stream: OutputStream, data: &[u8]) {
        let Some(i) = index(stream) else {
            self.inner.output(stream, data);
            return;
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut held[i];
        slot.extend_from_slice(data);
        let buf = std::mem::take(slot);
        let mut rest = buf.as_slice();
        loop {
            match find(rest, &self.marker) {
                Some(at) => {
                    if at > 0 {
                        self.inner.output(stream, &rest[..at]);
                    }
                    let line = &rest[at + self.marker.len()..];
                    match line.iter().position(|b| *b == b'\n') {
                        Some(nl) => {
                            self.note_bytes(&line[..nl]);
                            rest = &line[nl + 1..];
                        }
                        None => {
                            // The rest of the note is still on its way.
                            *slot = rest[at..].to_vec();
                            return;
                        }
                    }
                }
                None => {
                    let keep = self.partial_marker_at_end(rest);
                    let pass = rest.len() - keep;
                    if pass > 0 {
                        self.inner.output(stream, &rest[..pass]);
                    }
                    *slot = rest[pass..].to_vec();
                    return;
                }
            }
        }
    }

    fn note(&self, message: &str) {
        self.pass_note(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qa_core::conformance::executor::RecordedOutput;

    #[test]
    fn marked_lines_become_notes_however_the_chunks_fall() {
        let text = b"out 1\nqa-run-note-abc: ended 1 process: 7 (x)\nout 2 qa-run-no";
        for split in 0..text.len() {
            let rec = RecordedOutput::new();
            let f = NoteFilter::new(rec.clone(), "qa-run-note-abc: ".into());
            f.output(OutputStream::Stderr, &text[..split]);
            f.output(OutputStream::Stderr, &text[split..]);
            f.finish();
            assert_eq!(
                rec.text(OutputStream::Stderr),
                "out 1\nout 2 qa-run-no",
                "split at {split}"
            );
            assert_eq!(rec.notes(), vec!["ended 1 process: 7 (x)".to_string()]);
            assert_eq!(f.leftovers(), rec.notes(), "split at {split}");
        }
    }

    #[test]
    fn only_notes_of_what_was_left_running_are_kept_for_the_result() {
        let rec = RecordedOutput::new();
        let f = NoteFilter::new(rec.clone(), "m: ".into());
        f.output(
            OutputStream::Stderr,
            b"m: the command exited, but 1 process still held its output open\n",
        );
        f.note("reconnecting");
        f.note("could not end 1 process the command left running: 9 (y)");
        assert_eq!(rec.notes().len(), 3);
        assert_eq!(
            f.leftovers(),
            vec!["could not end 1 process the command left running: 9 (y)".to_string()]
        );
    }

    #[test]
    fn output_without_the_marker_passes_at_once() {
        let rec = RecordedOutput::new();
        let f = NoteFilter::new(rec.clone(), "qa-run-note-abc: ".into());
        f.output(OutputStream::Stdout, b"hello\n");
        assert_eq!(rec.text(OutputStream::Stdout), "hello\n");
        f.output(OutputStream::Stdout, b"tail q");
        // Only the `q`, which may start a marker, waits for more.
        assert_eq!(rec.text(OutputStream::Stdout), "hello\ntail ");
        f.finish();
        assert_eq!(rec.text(OutputStream::Stdout), "hello\ntail q");
    }
}
