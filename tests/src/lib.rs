//! End-to-end tests that drive the real `qa-run` binary live in `tests/e2e/`.
