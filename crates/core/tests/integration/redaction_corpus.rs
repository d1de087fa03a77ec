//! The redaction corpus (`tests/redaction/corpus.txt` at the workspace root): hostile outputs and
//! credential shapes, each with the exact text qa-run writes for it, as a stream of chunks and as
//! a file.

use qa_core::redact::{Redactor, StreamCarry};
use qa_testkit::redaction::{CHUNK_CUT, corpus};

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
        for chunk in case.input.split(CHUNK_CUT) {
            streamed.extend_from_slice(&r.redact_continuing(chunk.as_bytes(), &mut carry));
        }
        let streamed = String::from_utf8_lossy(&streamed).into_owned();
        // As an artifact: the file, masked as it is copied.
        let (src, dest) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::write(&src, case.whole_input()).unwrap();
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
