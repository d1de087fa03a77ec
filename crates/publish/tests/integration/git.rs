//! Publishing to a git remote: a bare repository on disk stands in for GitHub Pages.

use std::path::Path;

use qa_core::{ResultPublisher, Verdict};
use qa_publish::GitPublisher;
use qa_testkit::git::git;

use crate::helpers::{make_run, step};

fn bare(d: &Path) -> std::path::PathBuf {
    let remote = d.join("pages.git");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare"]);
    remote
}

fn tree(remote: &Path) -> String {
    git(remote, &["ls-tree", "-r", "--name-only", "gh-pages"])
}

#[tokio::test]
async fn two_racing_publishers_both_land() {
    let d = tempfile::tempdir().unwrap();
    let remote = bare(d.path());
    let results = d.path().join("results");
    let mut runs = Vec::new();
    for i in 0..4 {
        runs.push(make_run(
            &results,
            &format!("run-{i}"),
            "race",
            &format!("2026-11-2{i}T10:00:00Z"),
            &[step("s", Verdict::Pass, "ok\n")],
        ));
    }
    // The first publish creates the branch; then pairs race on it.
    let p = GitPublisher::new(remote.display().to_string(), "gh-pages");
    p.publish(&runs[0].0, &runs[0].1).await.unwrap();
    let (a, b) = (p.clone(), p.clone());
    let (r1, r2, r3) = tokio::join!(
        a.publish(&runs[1].0, &runs[1].1),
        b.publish(&runs[2].0, &runs[2].1),
        p.publish(&runs[3].0, &runs[3].1)
    );
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    let files = tree(&remote);
    for i in 0..4 {
        assert!(
            files.contains(&format!("runs/run-{i}/index.html")),
            "run-{i} lost:\n{files}"
        );
    }
    for i in 0..4 {
        // Later publishes check out only reports; earlier runs' logs and recordings must survive.
        for f in [
            "steps/0-box-s.log.txt",
            "steps/0-box-s.cast.js",
            "files/artifacts/box/result.txt",
        ] {
            assert!(
                files.contains(&format!("runs/run-{i}/{f}")),
                "run-{i} lost {f}:\n{files}"
            );
        }
    }
    let index = git(&remote, &["show", "gh-pages:index.html"]);
    for i in 0..4 {
        assert!(
            index.contains(&format!("runs/run-{i}/index.html")),
            "run-{i} missing from the index"
        );
    }
    assert!(files.contains(".nojekyll"));
    // History is linear: nobody force-pushed over anybody.
    let log = git(&remote, &["log", "--format=%s", "gh-pages"]);
    assert_eq!(log.lines().count(), 4, "{log}");
}

#[tokio::test]
async fn two_processes_racing_on_an_empty_remote_both_land() {
    let d = tempfile::tempdir().unwrap();
    let remote = bare(d.path());
    let results = d.path().join("results");
    let r1 = make_run(
        &results,
        "first",
        "race",
        "2026-11-20T10:00:00Z",
        &[step("s", Verdict::Pass, "ok\n")],
    );
    let r2 = make_run(
        &results,
        "second",
        "race",
        "2026-11-21T10:00:00Z",
        &[step("s", Verdict::Fail, "no\n")],
    );
    let p = GitPublisher::new(remote.display().to_string(), "gh-pages");
    let (a, b) = tokio::join!(p.publish(&r1.0, &r1.1), p.publish(&r2.0, &r2.1));
    a.unwrap();
    b.unwrap();
    let files = tree(&remote);
    assert!(
        files.contains("runs/first/index.html") && files.contains("runs/second/index.html"),
        "{files}"
    );
}

#[tokio::test]
async fn republishing_is_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let remote = bare(d.path());
    let (report, dir) = make_run(
        &d.path().join("results"),
        "once",
        "p",
        "2026-11-20T10:00:00Z",
        &[step("s", Verdict::Pass, "ok\n")],
    );
    let p = GitPublisher::new(remote.display().to_string(), "gh-pages");
    p.publish(&report, &dir).await.unwrap();
    p.publish(&report, &dir).await.unwrap();
    assert_eq!(
        git(&remote, &["rev-list", "--count", "gh-pages"]).trim(),
        "1"
    );
}

#[tokio::test]
async fn passwords_in_remotes_are_refused_and_never_shown() {
    let d = tempfile::tempdir().unwrap();
    let (report, dir) = make_run(
        &d.path().join("results"),
        "r",
        "p",
        "2026-11-20T10:00:00Z",
        &[step("s", Verdict::Pass, "ok\n")],
    );
    let e = GitPublisher::new("https://bob:s3cr3t-pw@127.0.0.1:9/x.git", "gh-pages")
        .publish(&report, &dir)
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("s3cr3t-pw") && !text.contains("bob"),
        "{text}"
    );
    assert!(text.contains("credential helper"), "{text}");

    // A token as the user name is scrubbed from git's own messages too.
    let e = GitPublisher::new("http://ghp_tok3nvalue@127.0.0.1:9/x.git", "gh-pages")
        .with_attempts(1)
        .publish(&report, &dir)
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("ghp_tok3nvalue"), "{text}");
}
