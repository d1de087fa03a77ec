//! No planted secret reaches any file a run, `qa-run publish` or `qa-run report` writes: the
//! declared secret and every credential shape of the redaction corpus, printed by a step and
//! collected as artifacts.

use std::path::Path;

use qa_testkit::cli::{bin, only_run_dir, write_plan};
use qa_testkit::redaction::corpus;

use super::{QA_RUN, walk};

/// The declared secret of the run (made up).
const DECLARED: &str = "planted-declared-secret-77";

/// The `in:` texts of the corpus cases that need no declared secret, and every `leak:` of them.
fn corpus_shapes() -> (Vec<String>, Vec<String>) {
    let (mut inputs, mut leaks) = (Vec::new(), Vec::new());
    for case in corpus() {
        if !case.secrets.is_empty() || case.leaks.is_empty() {
            continue;
        }
        inputs.push(case.whole_input());
        leaks.extend(case.leaks);
    }
    (inputs, leaks)
}

/// Every file under `dirs` that holds one of `planted`, with what it holds.
fn leaks_in(dirs: &[&Path], planted: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        for file in walk(dir) {
            let bytes = std::fs::read(&file).unwrap();
            for p in planted {
                if bytes.windows(p.len()).any(|w| w == p.as_bytes()) {
                    found.push(format!("{}: {p:?}", file.display()));
                }
            }
        }
    }
    found
}

#[test]
fn planted_secrets_reach_no_file_a_run_or_a_republish_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, mut planted) = corpus_shapes();
    assert!(
        inputs.len() > 30,
        "the corpus is read: {} cases",
        inputs.len()
    );
    planted.push(DECLARED.to_string());
    // Outside the plan's and the results' directories: only the step reads it.
    let source = tmp.path().join("planted");
    std::fs::create_dir_all(&source).unwrap();
    let hostile = source.join("hostile.txt");
    std::fs::write(&hostile, inputs.join("\n") + "\n").unwrap();
    let hostile = hostile.display().to_string();

    let results = tmp.path().join("results");
    let out = tmp.path().join("out");
    let plan = write_plan(
        tmp.path(),
        "planted",
        &format!(
            "  - name: leak
    command: >-
      cat {hostile};
      echo \"declared=$QA_E2E_PLANTED and Authorization: Bearer $QA_E2E_PLANTED\";
      mkdir -p out && cp {hostile} out/hostile.txt &&
      printf '\\000\\377ELF\\000%s\\000' \"$QA_E2E_PLANTED\" > out/core.bin &&
      echo \"message $QA_E2E_PLANTED\" >&2;
      exit 3
"
        ),
        &format!(
            "secrets: [QA_E2E_PLANTED]
artifacts:
  - paths: [\"out/*\"]
publish:
  - markdown: {{path: {out}/summary.md}}
  - site: {{dir: {out}/site}}
  - json: {{path: {out}/report.json}}
  - junit: {{path: {out}/junit.xml}}
",
            out = out.display()
        ),
    );
    let run = bin(QA_RUN)
        .env("QA_E2E_PLANTED", DECLARED)
        .args(["--results", results.to_str().unwrap(), "run"])
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let run_dir = only_run_dir(&results);

    // The secrets did reach the files, masked: the step saw them, the log and artifact hold
    // masks where they were, and the site links the masked artifact.
    let log = std::fs::read_to_string(run_dir.join("logs/box/leak.log")).unwrap();
    assert!(
        log.contains("declared=[REDACTED] and Authorization: [REDACTED]"),
        "{log}"
    );
    let artifact = std::fs::read(run_dir.join("artifacts/box/out/hostile.txt")).unwrap();
    assert!(String::from_utf8_lossy(&artifact).contains("GITHUB_TOKEN=[REDACTED]"));
    assert_eq!(
        std::fs::read(run_dir.join("artifacts/box/out/core.bin")).unwrap(),
        b"\0\xffELF\0[REDACTED]\0"
    );
    let site_files = walk(&out.join("site"));
    assert!(
        site_files
            .iter()
            .any(|f| f.to_string_lossy().contains("hostile.txt")),
        "the artifact is published: {site_files:?}"
    );

    // Published again and rebuilt later, without the secret in the environment.
    std::fs::remove_dir_all(&out).unwrap();
    let publish = bin(QA_RUN)
        .env_remove("QA_E2E_PLANTED")
        .arg("publish")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert_eq!(
        publish.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&publish.stderr)
    );
    assert!(out.join("summary.md").is_file() && out.join("site/index.html").is_file());
    let site2 = tmp.path().join("site2");
    let report = bin(QA_RUN)
        .env_remove("QA_E2E_PLANTED")
        .args(["report", results.to_str().unwrap(), "--site"])
        .arg(&site2)
        .output()
        .unwrap();
    assert_eq!(
        report.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );

    let found = leaks_in(&[&results, &out, &site2], &planted);
    assert!(
        found.is_empty(),
        "planted secrets in written files:\n{}",
        found.join("\n")
    );
    // What the commands printed is no file, but is read by people and CI logs all the same.
    for (what, o) in [("run", &run), ("publish", &publish), ("report", &report)] {
        let text = [&o.stdout[..], &o.stderr[..]].concat();
        for p in &planted {
            assert!(
                !text.windows(p.len()).any(|w| w == p.as_bytes()),
                "`qa-run {what}` printed {p:?}"
            );
        }
    }
}
