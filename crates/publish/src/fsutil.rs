//! File writing shared by the publishers: whole files appear at once or not at all.

use std::io::Write;
use std::path::Path;

use qa_core::PublishError;

/// Writes `bytes` to a temporary file next to `path` and renames it over `path`, creating parent
/// directories. A reader sees the old file or the new one, never half of one. The file is
/// world-readable (0644), like any file of a web site.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // Temporary files are private (0600); published files are read by web servers and people.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.write_all(bytes)?;
    tmp.flush()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A [`PublishError`] for an I/O failure on `path`.
pub fn io_error(publisher: &str, path: &Path, e: std::io::Error) -> PublishError {
    let mut err = PublishError::new(publisher, format!("cannot write {}: {e}", path.display()));
    err.source = Some(Box::new(e));
    err
}
