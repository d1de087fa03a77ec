//! Process exit codes of `qa-run`: an API, documented here and in `qa-run --help`.

/// Every step passed (and cleanup, if asked for, completed).
pub const ALL_PASSED: i32 = 0;
/// The run completed and at least one step FAILED or TIMED OUT (or was skipped because of that).
pub const TEST_FAILED: i32 = 1;
/// The plan or the command line is wrong; nothing was created.
pub const BAD_PLAN_OR_USAGE: i32 = 2;
/// Infrastructure failed (provisioning, SSH, an API refused); some verdict is ERROR.
pub const INFRASTRUCTURE_ERROR: i32 = 3;
/// Cleanup did not remove everything; the journal lists what is left.
pub const CLEANUP_INCOMPLETE: i32 = 4;
/// The run was interrupted (Ctrl-C or SIGTERM).
pub const INTERRUPTED: i32 = 130;

/// One line per code, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    every step passed
  1    a step failed or timed out
  2    bad plan or bad usage (nothing was created)
  3    infrastructure error (provisioning, SSH, cloud API)
  4    cleanup incomplete (see state.json for what is left)
  130  interrupted (Ctrl-C / SIGTERM); teardown ran unless interrupted twice";
