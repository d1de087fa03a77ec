//! The static site as files: what is on the index and run pages, what is copied, what must never
//! be (escapes, secrets, files outside the run).

use std::path::Path;

use qa_core::redact::Redactor;
use qa_core::{ResultPublisher, Verdict};
use qa_publish::SitePublisher;

use crate::helpers::{all_files, make_run, step};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test]
async fn publishing_two_runs_lists_both_newest_first_with_pages_logs_and_artifacts() {
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("results");
    let site = d.path().join("site");
    let (old, old_dir) = make_run(
        &results,
        "run-old",
        "smoke",
        "2026-11-19T10:00:00Z",
        &[step("build", Verdict::Pass, "ok\n")],
    );
    let (new, new_dir) = make_run(
        &results,
        "run-new",
        "smoke",
        "2026-11-20T10:00:00Z",
        &[
            step("build", Verdict::Pass, "ok\n"),
            step("test", Verdict::Fail, "1 failed\nassertion x == y\n"),
            step("after", Verdict::Skipped, ""),
        ],
    );
    let publisher = SitePublisher::new(&site);
    publisher.publish(&old, &old_dir).await.unwrap();
    let receipt = publisher.publish(&new, &new_dir).await.unwrap();
    assert!(
        receipt.location.ends_with("runs/run-new/index.html"),
        "{receipt:?}"
    );

    let index = read(&site.join("index.html"));
    let (a, b) = (
        index.find("run-new").unwrap(),
        index.find("run-old").unwrap(),
    );
    assert!(a < b, "newest first");
    assert!(index.contains("1 PASS, 1 FAIL, 1 SKIPPED"), "{index}");
    assert!(index.contains("0.42 USD"));
    assert!(site.join(".nojekyll").exists());
    assert!(site.join("assets/player.js").exists() && site.join("assets/style.css").exists());
    assert!(site.join("history/smoke.html").exists());

    let page = read(&site.join("runs/run-new/index.html"));
    assert!(page.contains("<span class=\"v v-FAIL\">FAIL</span>"));
    assert!(page.contains("assertion x == y"), "failing tail inline");
    let log_href = "steps/1-box-test.log.txt";
    assert!(page.contains(log_href));
    assert_eq!(
        read(&site.join("runs/run-new").join(log_href)),
        "1 failed\nassertion x == y\n"
    );
    assert!(site.join("runs/run-new/steps/1-box-test.cast.js").exists());
    assert!(
        site.join("runs/run-new/files/artifacts/box/result.txt")
            .exists()
    );
    assert!(
        site.join("runs/run-new/files/artifacts/box/nested/deep.txt")
            .exists()
    );
    assert!(
        site.join("runs/run-new/files/artifacts/box/page.html.txt")
            .exists(),
        "active types are made inert"
    );
    assert!(
        !site
            .join("runs/run-new/files/artifacts/box/page.html")
            .exists()
    );
    for f in all_files(&site) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains("must never be published"),
            "{} holds a file from outside the run",
            f.display()
        );
        assert!(
            !text.contains("root:x:0:0"),
            "{} holds /etc/passwd",
            f.display()
        );
    }

    assert!(site.join("reports/run-new.json").is_file());

    // A run deleted by hand leaves the index at the next regeneration, even though its entry in
    // reports/ is still there.
    std::fs::rename(site.join("runs/run-old"), d.path().join("kept-aside")).unwrap();
    qa_publish::site::regenerate(&site).unwrap();
    assert!(!read(&site.join("index.html")).contains("run-old"));
    std::fs::rename(d.path().join("kept-aside"), site.join("runs/run-old")).unwrap();
    qa_publish::site::regenerate(&site).unwrap();
    assert!(read(&site.join("index.html")).contains("run-old"));

    // Publishing again is idempotent: same runs, same page.
    publisher.publish(&new, &new_dir).await.unwrap();
    assert_eq!(read(&site.join("runs/run-new/index.html")), page);
    assert_eq!(
        std::fs::read_dir(site.join("runs")).unwrap().count(),
        2,
        "no temporary directories left behind"
    );
}

#[tokio::test]
async fn nothing_a_test_printed_becomes_markup_and_secrets_are_masked() {
    let d = tempfile::tempdir().unwrap();
    let hostile = "<script>document.title='pwned'</script>\n\"><img src=x onerror=alert(1)>\n\u{1b}[31mred\u{1b}[0m \u{1b}]0;<b>t</b>\u{7}\npassword=hunter22-secret key AKIAIOSFODNN7EXAMPLE\nhttps://bob:tok3n@example.com/repo.git\ngit clone https://ghp_Pers0nalT0ken@github.com/o/r\n";
    let (mut report, dir) = make_run(
        d.path(),
        "run-<x>",
        "p<lan>",
        "2026-11-20T10:00:00Z",
        &[step("<b>step</b>", Verdict::Fail, hostile)],
    );
    report.steps[0].message = Some("\"><img src=x onerror=alert(2)>".into());
    let site = d.path().join("site");
    SitePublisher::new(&site)
        .with_redactor(Redactor::new(["hunter22-secret".to_string()]))
        .publish(&report, &dir)
        .await
        .unwrap();
    for f in all_files(&site) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for secret in [
            "hunter22-secret",
            "AKIAIOSFODNN7EXAMPLE",
            "tok3n",
            "Pers0nalT0ken",
        ] {
            assert!(!text.contains(secret), "{} leaks {secret}", f.display());
        }
        if f.extension().is_some_and(|e| e == "html") {
            assert!(!text.contains("<img"), "{} has an img element", f.display());
            assert!(
                !text.contains("<b>"),
                "{} has markup from the run",
                f.display()
            );
            assert!(!text.contains('\u{1b}'), "{} has a raw escape", f.display());
            let scripts = text.matches("<script").count();
            let ours = text.matches("<script src=\"").count();
            assert_eq!(
                scripts,
                ours,
                "{} has a script element that is not the player",
                f.display()
            );
        }
    }
    let page = all_files(&site)
        .into_iter()
        .find(|f| {
            f.ends_with("index.html") && f.parent().unwrap().parent().unwrap().ends_with("runs")
        })
        .unwrap();
    assert!(
        read(&page).contains("&lt;script&gt;document.title="),
        "the planted script is shown as text"
    );
}

#[test]
fn rebuild_makes_the_site_from_every_report_and_skips_unchanged_runs() {
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("results");
    for (i, v) in [Verdict::Pass, Verdict::Fail, Verdict::Pass, Verdict::Fail]
        .into_iter()
        .enumerate()
    {
        make_run(
            &results,
            &format!("run-{i}"),
            "nightly",
            &format!("2026-11-2{i}T10:00:00Z"),
            &[
                step("flip", v, "x\n"),
                step("steady", Verdict::Pass, "y\n"),
                step(
                    "broken",
                    if i >= 2 { Verdict::Fail } else { Verdict::Pass },
                    "z\n",
                ),
            ],
        );
    }
    std::fs::create_dir_all(results.join("not-a-run")).unwrap();
    std::fs::write(
        results
            .join("garbage/report.json")
            .parent()
            .map(|p| {
                std::fs::create_dir_all(p).unwrap();
                p.join("report.json")
            })
            .unwrap(),
        "{not json",
    )
    .unwrap();
    let site = d.path().join("site");
    let summary = qa_publish::site::rebuild(&results, &site).unwrap();
    assert_eq!(summary.runs, 4);
    assert_eq!(summary.plans, 1);
    assert_eq!(summary.unreadable.len(), 1, "{:?}", summary.unreadable);

    let history = read(&site.join("history/nightly.html"));
    let flip_row = history.lines().find(|l| l.contains(">flip</th>")).unwrap();
    assert!(flip_row.contains("flaky"), "{flip_row}");
    let steady_row = history
        .lines()
        .find(|l| l.contains(">steady</th>"))
        .unwrap();
    assert!(!steady_row.contains("flaky"));
    let broken_row = history
        .lines()
        .find(|l| l.contains(">broken</th>"))
        .unwrap();
    assert!(
        broken_row.contains("<a href=\"../runs/run-2/index.html\">run-2</a>"),
        "first failing run of the current streak is linked: {broken_row}"
    );

    // A second rebuild leaves untouched runs alone (their pages keep their modification time).
    let page = site.join("runs/run-0/index.html");
    let before = std::fs::metadata(&page).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let summary = qa_publish::site::rebuild(&results, &site).unwrap();
    assert_eq!(summary.runs, 4);
    assert_eq!(
        std::fs::metadata(&page).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn from_target_builds_each_publisher_with_paths_from_the_base() {
    use qa_core::plan::PublishTarget;
    let base = Path::new("/base");
    let cases = [
        (PublishTarget::Site { dir: "site".into() }, "site"),
        (
            PublishTarget::Junit {
                path: "j.xml".into(),
            },
            "junit",
        ),
        (
            PublishTarget::Json {
                path: "r.json".into(),
            },
            "json",
        ),
        (
            PublishTarget::Markdown {
                path: "s.md".into(),
            },
            "markdown",
        ),
        (
            PublishTarget::Git {
                remote: "pages.git".into(),
                branch: None,
            },
            "git",
        ),
    ];
    for (target, name) in cases {
        let p = qa_publish::from_target(&target, base);
        assert_eq!(p.name(), name);
        let debug = format!("{p:?}");
        assert!(debug.contains("/base/"), "{debug}");
    }
}

#[tokio::test]
async fn file_publishers_write_their_formats() {
    let d = tempfile::tempdir().unwrap();
    let (report, dir) = make_run(
        d.path(),
        "r1",
        "plan",
        "2026-11-20T10:00:00Z",
        &[step("a", Verdict::Fail, "no\n")],
    );
    let out = d.path().join("out");
    for (target, file) in [
        (
            qa_core::plan::PublishTarget::Junit {
                path: "j.xml".into(),
            },
            "j.xml",
        ),
        (
            qa_core::plan::PublishTarget::Json {
                path: "r.json".into(),
            },
            "r.json",
        ),
        (
            qa_core::plan::PublishTarget::Markdown {
                path: "s.md".into(),
            },
            "s.md",
        ),
    ] {
        let receipt = qa_publish::from_target(&target, &out)
            .publish(&report, &dir)
            .await
            .unwrap();
        assert!(receipt.location.ends_with(file));
        assert!(!read(&out.join(file)).is_empty());
    }
    let back: qa_core::report::Report = serde_json::from_str(&read(&out.join("r.json"))).unwrap();
    assert_eq!(back, report);
}

#[test]
fn run_page_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let (report, dir) = make_run(
        d.path(),
        "run-snap",
        "snap",
        "2026-11-20T10:00:00Z",
        &[
            step("build", Verdict::Pass, "ok\n"),
            step("test", Verdict::Fail, "bad <thing>\n"),
        ],
    );
    let site = d.path().join("site");
    qa_publish::site::write_run(&site, &report, &dir, &Redactor::default()).unwrap();
    qa_publish::site::regenerate(&site).unwrap();
    insta::assert_snapshot!("run_page", read(&site.join("runs/run-snap/index.html")));
    insta::assert_snapshot!("index_page", read(&site.join("index.html")));
    insta::assert_snapshot!("history_page", read(&site.join("history/snap.html")));
}

#[tokio::test]
async fn concurrent_publishers_to_one_directory_all_reach_the_index() {
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("results");
    let site = d.path().join("site");
    let mut runs = Vec::new();
    for i in 0..8 {
        runs.push(make_run(
            &results,
            &format!("run-{i}"),
            "p",
            &format!("2026-11-2{i}T10:00:00Z"),
            &[step("s", Verdict::Pass, "ok\n")],
        ));
    }
    let publisher = SitePublisher::new(&site);
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|(report, dir)| {
            let p = publisher.clone();
            tokio::spawn(async move { p.publish(&report, &dir).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let index = read(&site.join("index.html"));
    for i in 0..8 {
        assert!(
            index.contains(&format!("runs/run-{i}/index.html")),
            "run-{i} missing from the index"
        );
    }
}

#[test]
fn load_report_reads_a_run_directory_and_says_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let (report, dir) = make_run(
        d.path(),
        "r",
        "p",
        "2026-11-20T10:00:00Z",
        &[step("a", Verdict::Pass, "ok\n")],
    );
    assert_eq!(qa_publish::load_report(&dir).unwrap(), report);
    std::fs::write(dir.join("report.json"), "{}").unwrap();
    let e = qa_publish::load_report(&dir).unwrap_err().to_string();
    assert!(e.contains("is not a qa-run report"), "{e}");
    let e = qa_publish::load_report(&d.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn the_index_is_paged_past_a_thousand_runs() {
    use qa_core::report::Report;
    let d = tempfile::tempdir().unwrap();
    let site = d.path().join("site");
    let (template, _) = make_run(
        d.path(),
        "t",
        "p",
        "2026-11-20T10:00:00Z",
        &[step("a", Verdict::Pass, "ok\n")],
    );
    // Reports only, as a git checkout has them: the index is made from reports/.
    let n = qa_publish::site::RUNS_PER_PAGE + 5;
    for i in 0..n {
        let mut r: Report = template.clone();
        r.run_id = format!("run-{i:05}");
        r.started = format!("2026-01-01T00:00:{:02}Z", i % 60)
            .replace("T00:00", &format!("T{:02}:{:02}", i / 3600, (i / 60) % 60));
        std::fs::create_dir_all(site.join("runs").join(&r.run_id)).unwrap();
        crate::helpers::write(
            &site.join("reports").join(format!("{}.json", r.run_id)),
            &serde_json::to_string(&r).unwrap(),
        );
    }
    let summary = qa_publish::site::regenerate(&site).unwrap();
    assert_eq!(summary.runs, n);
    let first = read(&site.join("index.html"));
    let second = read(&site.join("index-2.html"));
    assert_eq!(
        first.matches("<tr><th scope=\"row\">").count(),
        qa_publish::site::RUNS_PER_PAGE
    );
    assert_eq!(second.matches("<tr><th scope=\"row\">").count(), 5);
    assert!(first.contains("href=\"index-2.html\" rel=\"next\""));
    assert!(second.contains("href=\"index.html\" rel=\"prev\""));
    assert!(
        second.contains("runs/run-00000/index.html"),
        "the oldest run is on the last page"
    );

    // Fewer runs again: the extra page goes.
    for i in 0..10 {
        std::fs::remove_dir_all(site.join("runs").join(format!("run-{i:05}"))).unwrap();
    }
    qa_publish::site::regenerate(&site).unwrap();
    assert!(!site.join("index-2.html").exists());
}
