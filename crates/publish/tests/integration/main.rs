//! qa-publish's integration tests: one binary, a module per publisher, shared helpers.

mod browser;
mod git;
mod helpers;
mod junit_schema;
mod site;
