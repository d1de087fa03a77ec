//! qa-publish's integration tests: one binary, a module per publisher, shared helpers.
//!
//! System packages (Debian): `git`, `libxml2-utils` (xmllint, for the JUnit schema check) and
//! `chromium` (the browser tests). Without xmllint or chromium those tests say SKIPPED and pass,
//! unless `QA_REQUIRE_XMLLINT` / `QA_REQUIRE_CHROMIUM` is set, as CI does. Screenshots from the
//! browser tests are kept in `target/test-artifacts/browser/`.

mod browser;
mod conformance;
mod git;
mod helpers;
mod junit_schema;
mod site;
