//! JUnit output validated with `xmllint --schema` against the Ant/Jenkins JUnit schema
//! (tests/fixtures/junit.xsd). Needs Debian's `libxml2-utils`.

use std::process::Command;

use qa_core::Verdict;

use crate::helpers::{fixture, have, make_run, step};

fn xmllint_or_skip() -> bool {
    if have("xmllint") {
        return true;
    }
    if std::env::var_os("QA_REQUIRE_XMLLINT").is_some()
        || std::env::var_os("QA_REQUIRE_CHROMIUM").is_some()
    {
        panic!("xmllint is required (Debian package libxml2-utils)");
    }
    eprintln!(
        "SKIPPED: xmllint not found; install Debian package libxml2-utils to check JUnit against its schema"
    );
    false
}

fn validate(xml: &str) -> (bool, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("junit.xml");
    std::fs::write(&p, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(fixture("junit.xsd"))
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn junit_of_every_verdict_and_hostile_output_is_schema_valid() {
    if !xmllint_or_skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let hostile = "ok\n\u{1b}[31mred\u{1b}[0m\n<script>alert(1)</script>\n\"><img src=x onerror=alert(1)>\n]]>\u{0}\u{7}\u{1b}]0;t\u{7}\n";
    let (mut report, _) = make_run(
        d.path(),
        "run-1",
        "nightly  plan",
        "2026-11-20T10:00:00.5+01:00",
        &[
            step("build", Verdict::Pass, "built\n"),
            step("unit tests", Verdict::Fail, hostile),
            step("ssh", Verdict::Error, "dropped\n"),
            step("soak", Verdict::Timeout, "..."),
            step("after", Verdict::Skipped, ""),
            step("stop", Verdict::Interrupted, ""),
        ],
    );
    report.infrastructure.push(qa_core::report::TaskReport::new(
        "collect:box",
        Verdict::Error,
        Some("scp: <lost>".into()),
    ));
    let xml = qa_publish::junit::render(&report);
    let (ok, why) = validate(&xml);
    assert!(ok, "schema rejected the report: {why}\n{xml}");
    assert!(xml.contains("classname=\"nightly plan/box\""), "{xml}");
    assert!(xml.contains("timestamp=\"2026-11-20T09:00:00\""), "{xml}");
}

#[test]
fn the_schema_check_rejects_what_ci_would_reject() {
    if !xmllint_or_skip() {
        return;
    }
    // Guards the guard: a testcase without classname and a zoned timestamp must not validate.
    let bad = "<?xml version=\"1.0\"?><testsuites><testsuite package=\"p\" id=\"0\" name=\"p/m\" timestamp=\"2026-11-20T10:00:00Z\" hostname=\"m\" tests=\"1\" failures=\"0\" errors=\"0\" time=\"1\"><properties/><testcase name=\"x\" time=\"1\"/><system-out/><system-err/></testsuite></testsuites>";
    let (ok, _) = validate(bad);
    assert!(!ok, "the schema accepted an invalid document");
}
