//! Example programs that embed qa-run; see the `[[example]]` entries.
