//! The redaction corpus (`tests/redaction/corpus.txt` at the workspace root): hostile outputs and
//! credential shapes, each with the exact text qa-run writes for it, as a stream of chunks and as
//! a file.

use std::path::PathBuf;

use qa_core::redact::{Redactor, StreamCarry};

/// One case of the corpus.
#[derive(Debug, Default)]
struct Case {
    name: String,
    line: usize,
    secrets: Vec<String>,
    input: String,
    output: Option<String>,
    leaks: Vec<String>,
}

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/redaction/corpus.txt")
}

/// `\n \r \t \e \0 \\ \s` as their characters; `\c` (a chunk cut) as U+0001, which no case
/// holds otherwise.
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
            Some('c') => out.push('\u{1}'),
            Some('\\') => out.push('\\'),
            other => panic!("unknown escape \\{other:?} in {s:?}"),
        }
    }
    out
}

fn corpus() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_path()).unwrap();
    let mut cases: Vec<Case> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("=== ") {
            cases.push(Case {
                name: name.to_string(),
                line: i + 1,
                ..Case::default()
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
            case.output = Some(case.input.replace('\u{1}', ""));
        } else if let Some(v) = line.strip_prefix("leak: ") {
            case.leaks.push(unescape(v));
        } else {
            panic!("corpus line {}: cannot read {line:?}", i + 1);
        }
    }
    cases
}

#[test]
fn every_case_of_the_corpus_is_masked_exactly() {
    let cases = corpus();
    assert!(
        cases.len() > 50,
        "the corpus is read: {} cases",
        cases.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let want = case
            .output
            .as_deref()
            .unwrap_or_else(|| panic!("case `{}` has no `out:`", case.name));
        for secret in &case.secrets {
            qa_core::redact::check_secret("CORPUS", secret)
                .unwrap_or_else(|e| panic!("case `{}`: {e}", case.name));
        }
        let r = Redactor::new(case.secrets.iter().cloned());
        // As output arrives: one chunk at a time, with the stream's carry.
        let mut carry = StreamCarry::default();
        let mut streamed = Vec::new();
        for chunk in case.input.split('\u{1}') {
            streamed.extend_from_slice(&r.redact_continuing(chunk.as_bytes(), &mut carry));
        }
        let streamed = String::from_utf8_lossy(&streamed).into_owned();
        // As an artifact: the file, masked as it is copied.
        let (src, dest) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::write(&src, case.input.replace('\u{1}', "")).unwrap();
        r.redact_file(&src, &dest).unwrap();
        let filed = String::from_utf8_lossy(&std::fs::read(&dest).unwrap()).into_owned();
        // Published again later: masking what was masked changes nothing.
        let twice = r.redact(&streamed);
        for (how, got) in [
            ("streamed", &streamed),
            ("as a file", &filed),
            ("masked twice", &twice),
        ] {
            if got != want {
                failures.push(format!(
                    "line {} `{}` ({how}):\n   want {want:?}\n    got {got:?}",
                    case.line, case.name
                ));
            }
            for leak in &case.leaks {
                if got.contains(leak.as_str()) {
                    failures.push(format!(
                        "line {} `{}` ({how}): {leak:?} is left in {got:?}",
                        case.line, case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
