//! qa-publish: the [`qa_core::ResultPublisher`] implementations.
#![warn(missing_docs)]
