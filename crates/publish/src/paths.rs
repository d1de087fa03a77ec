//! Paths that come from a report (logs, recordings, artifacts) are untrusted: a report may name
//! `../../etc/passwd`, an absolute path, or a symlink a test planted. These functions only ever
//! return files that are really inside the run directory.

use std::path::{Component, Path, PathBuf};

/// A report path, checked: relative, only plain components, no `..`. `None` otherwise.
pub fn relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Resolves report paths inside one run directory. Every component below the (canonical) run
/// directory is checked with `lstat`: a symlink anywhere on the way is refused, so nothing a test
/// planted can point the publisher outside the run. Directories already checked are remembered,
/// which keeps a run with hundreds of steps at about one `lstat` per file.
#[derive(Debug)]
pub struct RunFiles {
    root: PathBuf,
    checked_dirs: std::cell::RefCell<std::collections::HashSet<PathBuf>>,
}

/// A path that [`RunFiles::resolve`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Relative to the run directory, plain components only.
    pub relative: PathBuf,
    /// Absolute, under the canonical run directory.
    pub full: PathBuf,
    /// A directory (otherwise a regular file).
    pub is_dir: bool,
}

impl RunFiles {
    /// For `run_dir`; `None` when it does not exist.
    pub fn new(run_dir: &Path) -> Option<RunFiles> {
        Some(RunFiles {
            root: run_dir.canonicalize().ok()?,
            checked_dirs: Default::default(),
        })
    }

    /// The canonical run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The regular file or directory `path` names, if it exists inside the run with no symlink
    /// on the way.
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        let relative = relative(path)?;
        let count = relative.components().count();
        let mut full = self.root.clone();
        for (k, c) in relative.components().enumerate() {
            full.push(c);
            let last = k + 1 == count;
            if !last && self.checked_dirs.borrow().contains(&full) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&full).ok()?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                return None;
            }
            if last {
                return (ft.is_file() || ft.is_dir()).then_some(Resolved {
                    relative,
                    full,
                    is_dir: ft.is_dir(),
                });
            }
            if !ft.is_dir() {
                return None;
            }
            self.checked_dirs.borrow_mut().insert(full.clone());
        }
        None
    }
}

/// The file or directory a report path names inside `run_dir`, if it exists and no symlink lies
/// on the way: `(relative, absolute)`.
pub fn inside(run_dir: &Path, path: &str) -> Option<(PathBuf, PathBuf)> {
    RunFiles::new(run_dir)?
        .resolve(path)
        .map(|r| (r.relative, r.full))
}

/// Every regular file under `dir` (which must itself be inside `root`), relative to `root`,
/// without following symlinks.
pub fn files_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        if ft.is_dir() {
            files_under(root, &path, out);
        } else if ft.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_path_buf());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes() {
        assert!(relative("../x").is_none());
        assert!(relative("a/../../x").is_none());
        assert!(relative("/etc/passwd").is_none());
        assert!(relative("").is_none());
        assert_eq!(relative("./a/b").unwrap(), PathBuf::from("a/b"));
    }

    #[cfg(unix)]
    #[test]
    fn rejects_symlinks_out_of_the_run() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        std::fs::create_dir_all(run.join("artifacts/box")).unwrap();
        std::fs::write(d.path().join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), run.join("artifacts/box/link"))
            .unwrap();
        std::os::unix::fs::symlink(d.path(), run.join("artifacts/dirlink")).unwrap();
        std::fs::write(run.join("artifacts/box/ok.txt"), "fine").unwrap();
        assert!(inside(&run, "artifacts/box/link").is_none());
        assert!(inside(&run, "artifacts/dirlink/outside").is_none());
        assert!(inside(&run, "artifacts/box/ok.txt").is_some());
        let mut files = Vec::new();
        files_under(&run, &run.join("artifacts"), &mut files);
        assert_eq!(files, vec![PathBuf::from("artifacts/box/ok.txt")]);
    }
}
