//! Redaction of secrets in everything qa-run writes: step logs, recordings, collected artifacts,
//! reports and pages.
//!
//! Two sources of secrets:
//!
//! - values the plan declares (`secrets:` names environment variables): masked wherever they
//!   occur, also in their JSON-escaped and percent-encoded forms. A value shorter than
//!   [`MIN_SECRET_LEN`] cannot be masked safely (masking every `abc` would both wreck the log and
//!   point at the secret) and is refused by [`check_secret`] before a run starts;
//! - credential shapes that need no declaration: the catalogue in [`shapes`]
//!   ([`CREDENTIAL_SHAPES`]) — cloud keys, private keys, JWTs and bearer tokens, forge and chat
//!   tokens, passwords in URLs, values of secret-named settings.
//!
//! Everything is masked when it is written: the recorder masks output as it arrives, the collect
//! stage masks artifacts as they are brought back ([`Redactor::redact_file`]), the report and the
//! publishers mask what they write. So no later command needs to know a secret to keep it out of
//! what it publishes.
//!
//! Redaction works on bytes, so the same code masks text and binary files, and runs on every line
//! of output: one pass over the text per shape, no allocation when nothing matches.

pub mod shapes;

use std::borrow::Cow;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::Path;

pub use shapes::{CREDENTIAL_SHAPES, CredentialShape};

/// What replaces a secret.
pub const MASK: &str = "[REDACTED]";

/// The shortest declared secret qa-run accepts. A shorter value would turn up by chance in
/// ordinary output, so masking it would destroy logs and, by where the masks fall, reveal it.
pub const MIN_SECRET_LEN: usize = 8;

/// Checks a declared secret's value before a run uses it: `Err` says what is wrong and what to do.
/// Call it for every secret of a plan (with the variable's name) where the values are read from
/// the environment, and refuse to start if any fails.
pub fn check_secret(name: &str, value: &str) -> Result<(), String> {
    let len = value.chars().count();
    if value.is_empty() {
        return Err(format!(
            "secret `{name}` is empty: set it to the secret's value, or remove it from `secrets:`"
        ));
    }
    if len < MIN_SECRET_LEN {
        return Err(format!(
            "secret `{name}` is {len} characters long; qa-run masks only secrets of at least \
             {MIN_SECRET_LEN} characters (a shorter one turns up by chance in ordinary output): \
             use a longer secret, or remove `{name}` from `secrets:` if it is not secret"
        ));
    }
    if value.trim() != value {
        return Err(format!(
            "secret `{name}` starts or ends with white space, which output often drops or \
             changes, so it would not be masked: remove the white space from its value"
        ));
    }
    Ok(())
}

/// What a stream redaction carries from one chunk to the next: whether the previous chunk ended
/// inside a private-key block.
#[derive(Debug, Clone, Default)]
pub struct StreamCarry {
    in_private_key: bool,
}

/// Replaces secrets in text and bytes.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Declared values and their encoded forms, longest first.
    values: Vec<Vec<u8>>,
    /// Whether a byte starts one of `values`.
    first: Vec<bool>,
}

impl Redactor {
    /// A redactor for these declared secret values (empty values are ignored). Values are
    /// expected to have passed [`check_secret`]; a shorter one is masked anyway, since masking
    /// too much is the safe mistake.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<Vec<u8>> = Vec::new();
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            let json = serde_json::to_string(&v).expect("a string serialises");
            let json = &json[1..json.len() - 1];
            for form in [
                json.to_string(),
                percent_encoded(&v, true),
                percent_encoded(&v, false),
            ] {
                if form != v {
                    all.push(form.into_bytes());
                }
            }
            all.push(v.into_bytes());
        }
        // Longest first, so a secret that contains another is masked whole.
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        let mut first = vec![false; 256];
        for v in &all {
            first[v[0] as usize] = true;
        }
        Redactor { values: all, first }
    }

    /// Text with every secret masked.
    pub fn redact(&self, text: &str) -> String {
        match self.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => text.to_string(),
            Cow::Owned(b) => into_string(b),
        }
    }

    /// Bytes with every secret masked; borrowed when nothing was.
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        self.redact_continuing(bytes, &mut StreamCarry::default())
    }

    /// One chunk of a stream (output cut at line ends, a file read in pieces) with every secret
    /// masked. `carry` goes from one chunk to the next, so a private-key block that starts in
    /// one chunk and ends in a later one becomes one mask, wherever the stream is cut at line
    /// ends: the chunk where it starts ends with the mask, the chunks inside it come out empty. A
    /// secret cut inside one line is not seen, so cut chunks at line ends.
    pub fn redact_continuing<'a>(&self, bytes: &'a [u8], carry: &mut StreamCarry) -> Cow<'a, [u8]> {
        let mut bytes = bytes;
        if carry.in_private_key {
            // The rest of a block whose start (already masked) was in an earlier chunk.
            let (rest, open) = shapes::private_key_block_rest(bytes);
            carry.in_private_key = open;
            bytes = &bytes[rest..];
            if open {
                return Cow::Borrowed(bytes);
            }
        }
        let mut text = Cow::Borrowed(bytes);
        let mut ranges = Vec::new();
        self.declared(&text, &mut ranges);
        text = masked(text, &mut ranges);
        // What the text holds, for every pass: masks add only the bytes of `[REDACTED]`.
        let mut seen = shapes::ByteSet::of(bytes);
        if matches!(text, Cow::Owned(_)) {
            seen.add(MASK.as_bytes());
        }
        // The first shape is the private-key block, applied here with its carry.
        if shapes::PRIVATE_KEY_NEEDS[0].iter().all(|&c| seen.has(c)) {
            carry.in_private_key = shapes::private_key_blocks(&text, &mut ranges);
            text = masked(text, &mut ranges);
        }
        for shape in &CREDENTIAL_SHAPES[1..] {
            shape.find_into(&text, &seen, &mut ranges);
            text = masked(text, &mut ranges);
        }
        text
    }

    /// Copies the file `src` to `dest` with every secret masked, reading and writing in pieces
    /// cut at line ends (or NUL bytes, in binary files), so files of any size take little
    /// memory. Returns whether anything was masked.
    ///
    /// Binary files are masked too: a secret's bytes are found wherever they are, and replaced
    /// even though that changes the file's length and may leave it unusable. Content that is
    /// compressed or encoded (gzip, zip, base64 of a whole file) is not looked into. A stretch of
    /// more than [`FILE_PIECE_MAX`] bytes with no line end or NUL byte is cut where it reaches
    /// that length, and a secret across that cut is not seen.
    pub fn redact_file(&self, src: &Path, dest: &Path) -> std::io::Result<bool> {
        let mut input = std::fs::File::open(src)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(dest)?);
        let mut carry = StreamCarry::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut block = vec![0u8; 256 << 10];
        let mut changed = false;
        loop {
            let n = input.read(&mut block)?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&block[..n]);
            if pending.len() < 1 << 20 {
                // Files up to a MiB are masked in one piece, exactly as the same text would be.
                continue;
            }
            let cut = match pending.iter().rposition(|&c| c == b'\n' || c == 0) {
                Some(p) => p + 1,
                None if pending.len() >= FILE_PIECE_MAX => pending.len(),
                None => continue,
            };
            let masked = self.redact_continuing(&pending[..cut], &mut carry);
            changed |= matches!(masked, Cow::Owned(_)) || masked.len() != cut;
            out.write_all(&masked)?;
            pending.drain(..cut);
        }
        let masked = self.redact_continuing(&pending, &mut carry);
        changed |= matches!(masked, Cow::Owned(_)) || masked.len() != pending.len();
        out.write_all(&masked)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(changed)
    }

    fn declared(&self, b: &[u8], out: &mut Vec<Range<usize>>) {
        if self.values.is_empty() {
            return;
        }
        let mut i = 0;
        'at: while i < b.len() {
            if self.first[b[i] as usize] {
                for v in &self.values {
                    if b[i..].starts_with(v) {
                        out.push(i..i + v.len());
                        i += v.len();
                        continue 'at;
                    }
                }
            }
            i += 1;
        }
    }
}

/// The longest stretch of a file without a line end or NUL byte that [`Redactor::redact_file`]
/// masks as one piece.
pub const FILE_PIECE_MAX: usize = 4 << 20;

/// `text` with `ranges` (sorted, not overlapping) replaced by [`MASK`]; `ranges` is emptied.
fn masked<'a>(text: Cow<'a, [u8]>, ranges: &mut Vec<Range<usize>>) -> Cow<'a, [u8]> {
    if ranges.is_empty() {
        return text;
    }
    // A range that holds a mask already (masked by an earlier shape, or text masked before)
    // changes nothing.
    ranges.retain(|r| text[r.clone()] != *MASK.as_bytes());
    if ranges.is_empty() {
        return text;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut last = 0;
    for r in ranges.drain(..) {
        if r.start < last {
            continue;
        }
        out.extend_from_slice(&text[last..r.start]);
        out.extend_from_slice(MASK.as_bytes());
        last = r.end;
    }
    out.extend_from_slice(&text[last..]);
    Cow::Owned(out)
}

/// Masked text back into a `String`. Every masked range starts and ends next to an ASCII byte or
/// inside a declared value's exact bytes, so valid UTF-8 stays valid; the lossy path is a guard.
fn into_string(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `v` as it appears in a URL: every byte but the unreserved ones as `%XX`.
fn percent_encoded(v: &str, upper: bool) -> String {
    let mut out = String::with_capacity(v.len());
    for &c in v.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else if upper {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push_str(&format!("%{c:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_declared_values_longest_first() {
        let r = Redactor::new([
            "hunter22".to_string(),
            "hunter22-extended".to_string(),
            String::new(),
        ]);
        assert_eq!(
            r.redact("pw=hunter22-extended and hunter22 ab"),
            "pw=[REDACTED] and [REDACTED] ab"
        );
    }

    #[test]
    fn masks_encoded_forms_of_declared_values() {
        let r = Redactor::new(["p@ss\"w/rd 1".to_string()]);
        assert_eq!(
            r.redact(r#"{"x": "p@ss\"w/rd 1"} url p%40ss%22w%2Frd%201 lower p%40ss%22w%2frd%201"#),
            r#"{"x": "[REDACTED]"} url [REDACTED] lower [REDACTED]"#
        );
    }

    #[test]
    fn masks_credential_shapes() {
        let r = Redactor::default();
        assert_eq!(
            r.redact("key AKIAIOSFODNN7EXAMPLE end"),
            "key [REDACTED] end"
        );
        assert_eq!(r.redact("XAKIAIOSFODNN7EXAMPLE"), "XAKIAIOSFODNN7EXAMPLE");
        assert_eq!(
            r.redact("git push https://bob:s3cr3t@example.com/x.git"),
            "git push https://bob:[REDACTED]@example.com/x.git"
        );
        assert_eq!(
            r.redact("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(
            r.redact("clone https://ghp_abc@github.com/o/r"),
            "clone https://[REDACTED]@github.com/o/r"
        );
        assert_eq!(
            r.redact("https://0123456789abcdef0123456789@h/x"),
            "https://[REDACTED]@h/x"
        );
        assert_eq!(
            r.redact("ssh://git@github.com/o/r"),
            "ssh://git@github.com/o/r"
        );
        let pem = "before\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\nafter";
        assert_eq!(r.redact(pem), "before\n[REDACTED]\nafter");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(r.redact(cert), cert);
    }

    #[test]
    fn a_private_key_cut_across_chunks_is_masked_whole() {
        let r = Redactor::default();
        let mut carry = StreamCarry::default();
        let chunks = [
            "start\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n",
            "c2VjcmV0IGtleSBib2R5\n",
            "bW9yZSBrZXk=\n-----END RSA PRIVATE KEY-----\nafter\n",
        ];
        let out: Vec<String> = chunks
            .iter()
            .map(|c| into_string(r.redact_continuing(c.as_bytes(), &mut carry).into_owned()))
            .collect();
        assert_eq!(out, ["start\n[REDACTED]\n", "", "after\n"]);
    }

    #[test]
    fn binary_bytes_are_masked_and_unchanged_text_is_borrowed() {
        let r = Redactor::new(["topsecret-value".to_string()]);
        let mut bin = vec![0u8, 0xff, 0xfe];
        bin.extend_from_slice(b"topsecret-value");
        bin.extend_from_slice(&[0x80, 0]);
        let out = r.redact_bytes(&bin);
        let mut want = vec![0u8, 0xff, 0xfe];
        want.extend_from_slice(MASK.as_bytes());
        want.extend_from_slice(&[0x80, 0]);
        assert_eq!(&*out, &want[..]);
        assert!(matches!(
            r.redact_bytes(b"nothing here\n"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn redact_file_masks_across_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in");
        let dest = dir.path().join("out");
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("line {i} fine\n"));
        }
        text.push_str("-----BEGIN PRIVATE KEY-----\n");
        text.push_str(&"QUJDRA==\n".repeat(100_000));
        text.push_str("-----END PRIVATE KEY-----\ntoken=topsecret-value\n");
        std::fs::write(&src, &text).unwrap();
        let r = Redactor::new(["topsecret-value".to_string()]);
        assert!(r.redact_file(&src, &dest).unwrap());
        let out = std::fs::read_to_string(&dest).unwrap();
        assert!(!out.contains("QUJDRA=="));
        assert!(!out.contains("topsecret-value"));
        assert!(out.starts_with("line 0 fine\n") && out.contains("line 199999 fine\n"));
        assert!(
            out.ends_with("token=[REDACTED]\n"),
            "{}",
            &out[out.len() - 200..]
        );
        std::fs::write(&src, "plain\n").unwrap();
        assert!(!r.redact_file(&src, &dest).unwrap());
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "plain\n");
    }

    #[test]
    fn short_empty_or_padded_secrets_are_refused_with_the_fix() {
        assert!(check_secret("TOKEN", "long-enough").is_ok());
        let e = check_secret("PIN", "1234").unwrap_err();
        assert!(
            e.contains("`PIN`") && e.contains("4 characters") && e.contains("at least 8"),
            "{e}"
        );
        assert!(check_secret("EMPTY", "").unwrap_err().contains("empty"));
        assert!(
            check_secret("PADDED", " long-enough ")
                .unwrap_err()
                .contains("white space")
        );
    }
}
