//! File transfer over SFTP: uploads that land atomically, downloads, and artifact collection by
//! glob that never leaves the work directory.
//!
//! Every function here is blocking and runs on a blocking thread with its own SFTP channel, so
//! the per-SFTP state of libssh2 is only ever touched by one thread.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use qa_core::RemoteError;
use ssh2::{FileStat, OpenFlags, OpenType, Sftp};

use super::conn::{Conn, Readable, Wait};
use super::shell::quote;

const CHUNK: usize = 1 << 20;

fn transfer_err(
    from: impl Into<String>,
    to: impl Into<String>,
    e: impl Into<io::Error>,
) -> RemoteError {
    let e = e.into();
    // An ssh2 error's `Display` starts with its code (`[SFTP(2)]`): keep the message only.
    let source = match e.get_ref().and_then(|i| i.downcast_ref::<ssh2::Error>()) {
        Some(inner) => io::Error::new(e.kind(), inner.readable()),
        None => e,
    };
    RemoteError::Transfer {
        from: from.into(),
        to: to.into(),
        source,
    }
}

/// An SFTP channel on `conn`, shut down under the connection lock when dropped.
pub(crate) struct SftpChannel<'a> {
    conn: &'a Conn,
    sftp: Option<Sftp>,
    limit: Duration,
}

impl Drop for SftpChannel<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sftp.take() {
            self.conn.drop_locked(s);
        }
    }
}

impl<'a> SftpChannel<'a> {
    pub fn open(conn: &'a Conn, limit: Duration) -> Result<Self, ssh2::Error> {
        let sftp = conn.call(Wait::Session, Some(limit), || conn.sess.sftp())?;
        Ok(SftpChannel {
            conn,
            sftp: Some(sftp),
            limit,
        })
    }

    fn sftp(&self) -> &Sftp {
        self.sftp.as_ref().expect("open")
    }

    fn call<T>(&self, f: impl FnMut() -> Result<T, ssh2::Error>) -> Result<T, ssh2::Error> {
        self.conn.call(Wait::Channel, Some(self.limit), f)
    }

    pub fn lstat(&self, p: &str) -> Result<FileStat, ssh2::Error> {
        self.call(|| self.sftp().lstat(Path::new(p)))
    }

    pub fn stat(&self, p: &str) -> Result<FileStat, ssh2::Error> {
        self.call(|| self.sftp().stat(Path::new(p)))
    }

    /// `mkdir -p`, with `mode` for directories it creates.
    pub fn mkdir_all(&self, dir: &str, mode: i32) -> Result<(), ssh2::Error> {
        if dir.is_empty() || dir == "/" {
            return Ok(());
        }
        if let Ok(st) = self.stat(dir)
            && st.is_dir()
        {
            return Ok(());
        }
        if let Some((parent, _)) = dir.trim_end_matches('/').rsplit_once('/') {
            self.mkdir_all(parent, 0o755)?;
        }
        match self.call(|| self.sftp().mkdir(Path::new(dir), mode)) {
            Ok(()) => Ok(()),
            // Someone else made it meanwhile.
            Err(_) if self.stat(dir).map(|s| s.is_dir()).unwrap_or(false) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn readdir(&self, dir: &str) -> Result<Vec<(String, FileStat)>, ssh2::Error> {
        // Sftp::readdir is a loop of calls with per-handle state; each step retried on its own.
        let mut handle = self.call(|| self.sftp().opendir(Path::new(dir)))?;
        let mut out = Vec::new();
        loop {
            match self.call(|| handle.readdir()) {
                Ok((name, st)) => {
                    let name = name.to_string_lossy().into_owned();
                    if name != "." && name != ".." {
                        out.push((name, st));
                    }
                }
                // End of directory.
                Err(e) if matches!(e.code(), ssh2::ErrorCode::Session(-16)) => break,
                Err(e) => {
                    self.conn.drop_locked(handle);
                    return Err(e);
                }
            }
        }
        self.conn.drop_locked(handle);
        Ok(out)
    }

    /// Uploads `local` to `remote` by a temporary name in the same directory, then renames it.
    pub fn upload(
        &self,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<u64, RemoteError> {
        let mut src = fs::File::open(local)
            .map_err(|e| transfer_err(local.display().to_string(), remote, e))?;
        let meta = src
            .metadata()
            .map_err(|e| transfer_err(local.display().to_string(), remote, e))?;
        let mode = mode.unwrap_or(meta.permissions().mode()) & 0o7777;
        let (dir, name) = remote.rsplit_once('/').unwrap_or((".", remote));
        let dir = if dir.is_empty() { "/" } else { dir };
        let err = |e: ssh2::Error| transfer_err(local.display().to_string(), remote, e);
        self.mkdir_all(dir, 0o755).map_err(err)?;
        let tmp = format!("{dir}/.{name}.qa-tmp-{:08x}", rand::random::<u32>());
        let mut f = self
            .call(|| {
                self.sftp().open_mode(
                    Path::new(&tmp),
                    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                    (mode & 0o777) as i32,
                    OpenType::File,
                )
            })
            .map_err(err)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let result: Result<(), RemoteError> = (|| {
            loop {
                let n = src
                    .read(&mut buf)
                    .map_err(|e| transfer_err(local.display().to_string(), remote, e))?;
                if n == 0 {
                    break;
                }
                let mut off = 0;
                while off < n {
                    let w = self
                        .conn
                        .call(Wait::Channel, Some(self.limit), || f.write(&buf[off..n]))
                        .map_err(|e| transfer_err(local.display().to_string(), remote, e))?;
                    off += w;
                }
                total += n as u64;
            }
            // The server applies its umask at creation; set the mode we were asked for.
            let st = FileStat {
                size: None,
                uid: None,
                gid: None,
                perm: Some(mode),
                atime: None,
                mtime: None,
            };
            self.call(|| f.setstat(st.clone())).map_err(err)?;
            self.call(|| f.close()).map_err(err)?;
            Ok(())
        })();
        self.conn.drop_locked(f);
        if let Err(e) = result {
            let _ = self.call(|| self.sftp().unlink(Path::new(&tmp)));
            return Err(e);
        }
        // SFTP v3 rename refuses to replace an existing file; then replace it with `mv -f`, which
        // is rename(2) and as atomic.
        if self
            .call(|| self.sftp().rename(Path::new(&tmp), Path::new(remote), None))
            .is_err()
        {
            let cmd = format!("mv -f -- {} {}", quote(&tmp), quote(remote));
            match super::exec_capture(
                self.conn,
                &cmd,
                self.limit,
                &std::sync::atomic::AtomicBool::new(false),
            ) {
                Ok(out) if out.status == 0 => {}
                Ok(out) => {
                    let _ = self.call(|| self.sftp().unlink(Path::new(&tmp)));
                    return Err(transfer_err(
                        local.display().to_string(),
                        remote,
                        io::Error::other(format!(
                            "rename failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )),
                    ));
                }
                Err(e) => {
                    return Err(transfer_err(
                        local.display().to_string(),
                        remote,
                        io::Error::other(e.readable()),
                    ));
                }
            }
        }
        Ok(total)
    }

    /// Downloads `remote` into `local` (through a temporary local name), keeping its mode.
    pub fn download(&self, remote: &str, local: &Path) -> Result<u64, RemoteError> {
        let err = |e: ssh2::Error| transfer_err(remote, local.display().to_string(), e);
        let ioerr = |e: io::Error| transfer_err(remote, local.display().to_string(), e);
        let mut f = self
            .call(|| self.sftp().open(Path::new(remote)))
            .map_err(err)?;
        let st = self.call(|| f.stat());
        if let Some(parent) = local.parent() {
            fs::create_dir_all(parent).map_err(ioerr)?;
        }
        let tmp = local.with_file_name(format!(
            ".{}.qa-tmp-{:08x}",
            local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            rand::random::<u32>()
        ));
        let result: Result<u64, RemoteError> = (|| {
            let mut out = fs::File::create(&tmp).map_err(ioerr)?;
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = self
                    .conn
                    .call(Wait::Channel, Some(self.limit), || f.read(&mut buf))
                    .map_err(|e| transfer_err(remote, local.display().to_string(), e))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(ioerr)?;
                total += n as u64;
            }
            if let Ok(st) = &st
                && let Some(perm) = st.perm
            {
                out.set_permissions(fs::Permissions::from_mode(perm & 0o7777))
                    .map_err(ioerr)?;
            }
            out.sync_all().map_err(ioerr)?;
            fs::rename(&tmp, local).map_err(ioerr)?;
            Ok(total)
        })();
        self.conn.drop_locked(f);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads `remote` from byte `offset` to its current end.
    pub fn read_from(&self, remote: &str, offset: u64) -> io::Result<Vec<u8>> {
        use std::io::Seek;
        let mut f = self.call(|| self.sftp().open(Path::new(remote)))?;
        let r = (|| {
            f.seek(io::SeekFrom::Start(offset))?;
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = self
                    .conn
                    .call(Wait::Channel, Some(self.limit), || f.read(&mut buf))?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            Ok(out)
        })();
        self.conn.drop_locked(f);
        r
    }
}

/// Uploads a directory tree: directories with their modes, files atomically. Symbolic links are
/// skipped (with a warning): following them could upload things outside the tree.
pub(crate) fn put_tree(
    sftp: &SftpChannel<'_>,
    local: &Path,
    remote: &str,
) -> Result<u64, RemoteError> {
    let meta =
        fs::metadata(local).map_err(|e| transfer_err(local.display().to_string(), remote, e))?;
    sftp.mkdir_all(remote, (meta.permissions().mode() & 0o7777) as i32)
        .map_err(|e| transfer_err(local.display().to_string(), remote, e))?;
    let mut count = 0;
    let mut entries: Vec<_> = fs::read_dir(local)
        .map_err(|e| transfer_err(local.display().to_string(), remote, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| transfer_err(local.display().to_string(), remote, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e
            .file_type()
            .map_err(|er| transfer_err(path.display().to_string(), remote, er))?;
        let dest = format!("{}/{name}", remote.trim_end_matches('/'));
        if ft.is_dir() {
            count += put_tree(sftp, &path, &dest)?;
        } else if ft.is_file() {
            sftp.upload(&path, &dest, None)?;
            count += 1;
        } else {
            tracing::warn!(path = %path.display(), "put_tree skips non-regular file");
        }
    }
    Ok(count)
}

/// Checks a collect pattern: relative, no `..`.
pub(crate) fn check_pattern(pattern: &str, root: &str) -> Result<(), RemoteError> {
    let p = Path::new(pattern);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
    {
        return Err(RemoteError::PathEscape {
            path: pattern.into(),
            root: root.into(),
        });
    }
    Ok(())
}

/// The literal directory prefix of a glob (components before the first one with a wildcard).
fn literal_prefix(pattern: &str) -> Vec<&str> {
    let mut v = Vec::new();
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() || part.contains(['*', '?', '[']) {
            break;
        }
        v.push(*part);
    }
    v
}

/// Files under `root` matching any of `patterns`, as relative paths. Symbolic links are never
/// followed, neither as directories nor as files.
pub(crate) fn find_matches(
    sftp: &SftpChannel<'_>,
    root: &str,
    patterns: &[String],
) -> Result<Vec<String>, RemoteError> {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut compiled = Vec::new();
    for p in patterns {
        check_pattern(p, root)?;
        let pat = glob::Pattern::new(p.trim_start_matches("./")).map_err(|e| RemoteError::Io {
            context: format!("bad glob pattern `{p}`"),
            source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        compiled.push((pat, literal_prefix(p)));
    }
    let mut found = std::collections::BTreeSet::new();
    for (pat, prefix) in &compiled {
        // Walk from the literal prefix, checking with lstat that no component of it is a link.
        let mut rel = String::new();
        let mut ok = true;
        for part in prefix {
            let next = if rel.is_empty() {
                part.to_string()
            } else {
                format!("{rel}/{part}")
            };
            match sftp.lstat(&format!("{root}/{next}")) {
                Ok(st) if st.is_dir() && !is_symlink(&st) => rel = next,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let mut stack = vec![rel];
        while let Some(dir) = stack.pop() {
            let abs = if dir.is_empty() {
                root.to_string()
            } else {
                format!("{root}/{dir}")
            };
            let Ok(entries) = sftp.readdir(&abs) else {
                continue;
            };
            for (name, st) in entries {
                let relp = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                if is_symlink(&st) {
                    continue;
                }
                if st.is_dir() {
                    stack.push(relp);
                } else if st.is_file() && pat.matches_with(&relp, opts) {
                    found.insert(relp);
                }
            }
        }
    }
    Ok(found.into_iter().collect())
}

fn is_symlink(st: &FileStat) -> bool {
    st.perm.is_some_and(|p| p & 0o170000 == 0o120000)
}

/// `dest/rel`, refusing anything that is not a plain relative path.
pub(crate) fn local_dest(dest: &Path, rel: &str) -> Result<PathBuf, RemoteError> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(RemoteError::PathEscape {
            path: rel.into(),
            root: dest.display().to_string(),
        });
    }
    Ok(dest.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_patterns_are_refused() {
        assert!(check_pattern("../etc/passwd", "/w").is_err());
        assert!(check_pattern("/etc/*", "/w").is_err());
        assert!(check_pattern("logs/../../x", "/w").is_err());
        assert!(check_pattern("logs/**/*.log", "/w").is_ok());
    }

    #[test]
    fn literal_prefix_stops_at_wildcards() {
        assert_eq!(literal_prefix("logs/run1/*.txt"), vec!["logs", "run1"]);
        assert_eq!(literal_prefix("*.txt"), Vec::<&str>::new());
        assert_eq!(literal_prefix("a/b"), vec!["a"]);
    }

    #[test]
    fn local_destinations_stay_inside() {
        assert!(local_dest(Path::new("/d"), "a/b").is_ok());
        assert!(local_dest(Path::new("/d"), "../b").is_err());
        assert!(local_dest(Path::new("/d"), "/b").is_err());
    }
}
