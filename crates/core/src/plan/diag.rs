//! Problems found in a plan, each with its place in the file.

use std::fmt;
use std::path::PathBuf;

/// One problem in a plan file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Diagnostic {
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// Dotted key path, e.g. `steps[2].depends-on[0]`.
    pub key_path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it (nearest valid key for a typo, …).
    pub hint: Option<String>,
}

/// Everything wrong with a plan file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub struct PlanError {
    /// The plan file.
    pub file: PathBuf,
    /// Every problem found, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        writeln!(
            f,
            "{}: {n} problem{} in plan",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            write!(f, "{}", self.file.display())?;
            if let Some(l) = d.line {
                write!(f, ":{l}")?;
                if let Some(c) = d.column {
                    write!(f, ":{c}")?;
                }
            }
            if d.key_path.is_empty() {
                write!(f, ": {}", d.message)?;
            } else {
                write!(f, ": {}: {}", d.key_path, d.message)?;
            }
            if let Some(h) = &d.hint {
                write!(f, " ({h})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
