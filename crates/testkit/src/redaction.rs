//! The redaction corpus, `tests/redaction/corpus.txt` at the workspace root: hostile outputs and
//! credential shapes, each with the exact text qa-run must write for it.
//!
//! A case starts with `=== name`; then `secrets:` (the declared secrets, space-separated), `in:`
//! (the output), `out:` (what is written) or `unchanged`, and any number of `leak:` (text that
//! must not survive). Values are escaped: `\n \r \t \e \0 \\ \s` stand for their characters, and
//! `\c` marks where the output is cut into chunks ([`CHUNK_CUT`] in [`CorpusCase::input`]).

use std::path::PathBuf;

/// Where [`CorpusCase::input`] is cut into chunks (`\c` in the corpus); no case holds it
/// otherwise.
pub const CHUNK_CUT: char = '\u{1}';

/// One case of the corpus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorpusCase {
    /// Its name.
    pub name: String,
    /// Its line in the corpus file.
    pub line: usize,
    /// The secrets the plan declares.
    pub secrets: Vec<String>,
    /// The step's output, with [`CHUNK_CUT`] where it arrives in pieces.
    pub input: String,
    /// What must be written for it.
    pub output: Option<String>,
    /// Texts that must not be left in what is written.
    pub leaks: Vec<String>,
}

impl CorpusCase {
    /// The output as one text, without its chunk cuts.
    pub fn whole_input(&self) -> String {
        self.input.replace(CHUNK_CUT, "")
    }
}

/// Where the corpus is, relative to the workspace root.
const CORPUS: &str = "tests/redaction/corpus.txt";

/// The corpus file: found above the directory of the crate under test (Cargo's variable at run
/// time, so that a test binary reused from a build cache made in another checkout still finds
/// this one's), else above this crate's.
pub fn corpus_path() -> PathBuf {
    let starts = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    starts
        .into_iter()
        .flatten()
        .find_map(|start| {
            start
                .ancestors()
                .map(|dir| dir.join(CORPUS))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(CORPUS))
}

/// Every case of the corpus; panics naming the line that cannot be read.
pub fn corpus() -> Vec<CorpusCase> {
    let text = std::fs::read_to_string(corpus_path()).expect("the redaction corpus is readable");
    parse(&text)
}

fn parse(text: &str) -> Vec<CorpusCase> {
    let mut cases: Vec<CorpusCase> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("=== ") {
            cases.push(CorpusCase {
                name: name.to_string(),
                line: i + 1,
                ..CorpusCase::default()
            });
            continue;
        }
        let case = cases
            .last_mut()
            .unwrap_or_else(|| panic!("corpus line {}: outside a case", i + 1));
        if let Some(v) = line.strip_prefix("secrets: ") {
            case.secrets = v.split(' ').map(unescape).collect();
        } else if let Some(v) = line.strip_prefix("in: ") {
            case.input = unescape(v);
        } else if let Some(v) = line.strip_prefix("out: ") {
            case.output = Some(unescape(v));
        } else if line == "unchanged" {
            case.output = Some(case.whole_input());
        } else if let Some(v) = line.strip_prefix("leak: ") {
            case.leaks.push(unescape(v));
        } else {
            panic!("corpus line {}: cannot read {line:?}", i + 1);
        }
    }
    cases
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('e') => out.push('\x1b'),
            Some('0') => out.push('\0'),
            Some('s') => out.push(' '),
            Some('c') => out.push(CHUNK_CUT),
            Some('\\') => out.push('\\'),
            other => panic!("unknown escape \\{other:?} in {s:?}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_read_with_their_escapes_and_lines() {
        let cases = parse(
            "# a comment\n\n=== one\nsecrets: abcdefgh s\\s2\nin: a\\cb\\n\\e[1m\nunchanged\nleak: b\n=== two\nin: x\nout: y\n",
        );
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].line, 3);
        assert_eq!(cases[0].secrets, ["abcdefgh", "s 2"]);
        assert_eq!(cases[0].input, "a\u{1}b\n\x1b[1m");
        assert_eq!(cases[0].output.as_deref(), Some("ab\n\x1b[1m"));
        assert_eq!(cases[0].leaks, ["b"]);
        assert_eq!(cases[1].output.as_deref(), Some("y"));
    }

    #[test]
    #[should_panic(expected = "corpus line 2: cannot read")]
    fn a_line_it_cannot_read_is_named() {
        parse("=== one\nwhat: x\n");
    }
}
