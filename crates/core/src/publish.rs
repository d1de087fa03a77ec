//! The [`ResultPublisher`] trait: putting a finished run's results where people read them.

use std::fmt::Debug;
use std::path::Path;

use async_trait::async_trait;

use crate::report::Report;

/// Where a publisher put the results.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PublishReceipt {
    /// The publisher.
    pub publisher: String,
    /// A path or URL.
    pub location: String,
}

/// A publishing failure.
#[derive(Debug, thiserror::Error)]
#[error("publish to {publisher} failed: {message}")]
#[non_exhaustive]
pub struct PublishError {
    /// The publisher.
    pub publisher: String,
    /// What went wrong and what to do.
    pub message: String,
    /// The cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PublishError {
    /// An error with a message.
    pub fn new(publisher: impl Into<String>, message: impl Into<String>) -> Self {
        PublishError {
            publisher: publisher.into(),
            message: message.into(),
            source: None,
        }
    }
}

/// Puts a finished run's results somewhere.
///
/// # Contract
/// - `publish` is idempotent: publishing the same run twice leaves the same result.
/// - It reads only the report and files under `run_dir`; it never changes them.
/// - An `Err` leaves the destination as it was or with this run fully written, never half.
#[async_trait]
pub trait ResultPublisher: Send + Sync + Debug + 'static {
    /// Short name (`junit`, `site`, …).
    fn name(&self) -> &str;

    /// Publishes one run.
    async fn publish(
        &self,
        report: &Report,
        run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError>;
}
