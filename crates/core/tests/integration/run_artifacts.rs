//! Artifacts are masked as they are brought back, text and binary alike, unless the plan's
//! `artifacts:` entry opts out with `redact: false`.

use std::sync::Arc;

use qa_core::conformance::fakes::FakeProvisioner;
use qa_core::engine::{Engine, RunOptions};

use crate::LocalDirs;

/// Credential shapes every run masks without being told (made up).
const GITHUB_TOKEN: &str = "ghp_R7kXz3Qm9LwT2vBn8YcJ4hDs6FpA1eGu0Ni5";
const KEY_ID: &str = "AKIAZ7QK3MWN5TPL2XVB";

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_are_masked_as_they_are_collected_unless_the_plan_opts_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("artifacts.yaml");
    std::fs::write(
        &path,
        format!(
            "name: artifacts
machines: [{{name: box}}]
steps:
  - name: write
    command: >-
      mkdir -p out raw &&
      printf 'token {GITHUB_TOKEN}\\nkey {KEY_ID}\\nfine\\n' > out/report.txt &&
      printf '\\000\\377ELF\\000{GITHUB_TOKEN}\\000\\376' > out/core.bin &&
      printf 'id {KEY_ID}\\n' > raw/kept.txt &&
      printf 'both {KEY_ID}\\n' > raw/both.txt &&
      chmod 0750 out/report.txt
artifacts:
  - paths: [\"out/*\", \"raw/both.txt\"]
  - paths: [\"raw/*\"]
    redact: false
"
        ),
    )
    .unwrap();
    let engine = Engine::new()
        .provisioner(Arc::new(
            FakeProvisioner::new().with_workdir_root(dir.path().join("machines")),
        ))
        .connector(Arc::new(LocalDirs));
    let results = dir.path().join("results");
    let summary = engine
        .prepare(&crate::load_file(&path).unwrap(), RunOptions::new(&results))
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    assert_eq!(summary.report.outcome, qa_core::Verdict::Pass);
    let run_dir = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let art = run_dir.join("artifacts/box");
    let read = |rel: &str| std::fs::read(art.join(rel)).unwrap();

    assert_eq!(
        String::from_utf8(read("out/report.txt")).unwrap(),
        "token [REDACTED]\nkey [REDACTED]\nfine\n"
    );
    // A binary file keeps its other bytes; the secret's are replaced.
    assert_eq!(
        read("out/core.bin"),
        [&b"\0\xffELF\0"[..], b"[REDACTED]", b"\0\xfe"].concat()
    );
    // Opted out: byte for byte. Matched by a masked entry too: masked.
    assert_eq!(read("raw/kept.txt"), format!("id {KEY_ID}\n").into_bytes());
    assert_eq!(read("raw/both.txt"), b"both [REDACTED]\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(art.join("out/report.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "the file keeps its mode");

    let mut listed = summary.report.machines[0].artifacts.clone();
    listed.sort();
    assert_eq!(
        listed,
        [
            "artifacts/box/out/core.bin",
            "artifacts/box/out/report.txt",
            "artifacts/box/raw/both.txt",
            "artifacts/box/raw/kept.txt",
        ]
    );
    // The unmasked copies were staged outside the run directory and are gone.
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let staged: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(&run_id))
        .collect();
    assert!(staged.is_empty(), "staging left behind: {staged:?}");
}
