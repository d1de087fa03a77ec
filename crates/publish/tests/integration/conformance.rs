//! qa-core's shared `ResultPublisher` conformance suite, run against every publisher here.

use std::process::Command;

use qa_core::conformance::publisher::run_all;
use qa_publish::{GitPublisher, JsonPublisher, JunitPublisher, MarkdownPublisher, SitePublisher};

#[tokio::test]
async fn file_publishers_conform() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let receipt = run_all(
        &SitePublisher::new(out.join("site")),
        &d.path().join("site-scratch"),
    )
    .await;
    assert!(receipt.location.ends_with("index.html"));
    run_all(
        &JunitPublisher::new(out.join("junit.xml")),
        &d.path().join("junit-scratch"),
    )
    .await;
    run_all(
        &JsonPublisher::new(out.join("report.json")),
        &d.path().join("json-scratch"),
    )
    .await;
    run_all(
        &MarkdownPublisher::new(out.join("summary.md")),
        &d.path().join("md-scratch"),
    )
    .await;
    // The sample run's description carries `<&>`: it must arrive escaped.
    let page =
        std::fs::read_to_string(out.join("site/runs/sample-20260101T000000Z-0001/index.html"))
            .unwrap();
    assert!(page.contains("&lt;&amp;&gt;") && !page.contains("<&>"));
}

#[tokio::test]
async fn git_publisher_conforms() {
    let d = tempfile::tempdir().unwrap();
    let remote = d.path().join("pages.git");
    std::fs::create_dir_all(&remote).unwrap();
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare"])
            .current_dir(&remote)
            .status()
            .unwrap()
            .success()
    );
    run_all(
        &GitPublisher::new(remote.display().to_string(), "gh-pages"),
        &d.path().join("scratch"),
    )
    .await;
}
