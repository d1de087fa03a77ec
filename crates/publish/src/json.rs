//! The run's report as JSON (the `report.json` format of [`qa_core::report`]), written with
//! secrets masked, for programs that consume results.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use qa_core::redact::Redactor;
use qa_core::report::Report;
use qa_core::{PublishError, PublishReceipt, ResultPublisher};

/// The report as pretty-printed JSON, common credential shapes masked.
pub fn render(report: &Report) -> String {
    render_with(report, &Redactor::default())
}

/// [`render`] with a redactor that knows the plan's secrets.
pub fn render_with(report: &Report, redactor: &Redactor) -> String {
    let r = crate::redaction::report(report, redactor);
    let mut s = serde_json::to_string_pretty(&r).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// Writes the report JSON to `path` at once (temporary file and rename).
pub fn write(report: &Report, path: &Path, redactor: &Redactor) -> Result<(), PublishError> {
    crate::fsutil::write_atomic(path, render_with(report, redactor).as_bytes())
        .map_err(|e| crate::fsutil::io_error("json", path, e))
}

/// Writes the report JSON to a fixed path.
#[derive(Debug, Clone)]
pub struct JsonPublisher {
    path: PathBuf,
    redactor: Redactor,
}

impl JsonPublisher {
    /// A publisher writing to `path` (parent directories are created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonPublisher {
            path: path.into(),
            redactor: Redactor::default(),
        }
    }

    /// Masks these secrets too.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }
}

#[async_trait]
impl ResultPublisher for JsonPublisher {
    fn name(&self) -> &str {
        "json"
    }

    async fn publish(
        &self,
        report: &Report,
        _run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        write(report, &self.path, &self.redactor)?;
        Ok(PublishReceipt::new("json", self.path.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_masks() {
        let mut r = crate::testdata::report();
        r.steps[0].message = Some("key AKIAIOSFODNN7EXAMPLE".into());
        let text = render(&r);
        assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"));
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.steps.len(), r.steps.len());
        assert_eq!(back.run_id, r.run_id);
    }
}
