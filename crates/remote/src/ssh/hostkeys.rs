//! Host-key verification: OpenSSH known_hosts files, SHA256 fingerprints, trust on first use.
//!
//! Matching is done here rather than by libssh2's own check, because that one compares keys of
//! different types (an RSA line would "mismatch" an ed25519 key). Plain host patterns (with `*`,
//! `?` and `!`) are matched directly; hashed lines (`|1|salt|hash`) are handed one at a time to
//! libssh2, which knows the HMAC.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use qa_core::{HostKeyPolicy, RemoteError, SshTarget};
use sha2::{Digest, Sha256};
use ssh2::Session;

use super::config::pattern_matches;
use super::conn::ConnSettings;

/// Serialises appends to run-local known_hosts files, so that concurrent first connections to
/// one host write one line.
static TOFU_LOCK: Mutex<()> = Mutex::new(());

/// What one connection must check, decided before the handshake.
pub(crate) struct HostKeyCheck {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    files: Vec<PathBuf>,
}

/// The outcome of looking a key up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Match,
    /// The host is known with another key of the same type; the known key's fingerprint and file.
    Mismatch {
        fingerprint: String,
        file: PathBuf,
    },
    NotFound,
}

impl HostKeyCheck {
    pub fn new(hop: &SshTarget, settings: &ConnSettings) -> Self {
        let files = match &hop.host_keys {
            HostKeyPolicy::Strict => {
                if settings.known_hosts.is_empty() {
                    default_known_hosts()
                } else {
                    settings.known_hosts.clone()
                }
            }
            HostKeyPolicy::TrustFirstUse { known_hosts } => vec![known_hosts.clone()],
            HostKeyPolicy::Insecure => Vec::new(),
            // A policy added to qa-core after this was written: `verify` refuses it, so no file
            // is read.
            _ => Vec::new(),
        };
        HostKeyCheck {
            host: hop.host.clone(),
            port: hop.port,
            policy: hop.host_keys.clone(),
            files,
        }
    }

    /// Host-key algorithms to offer, those of keys already on record for this host first (as
    /// OpenSSH does), so that the server presents a key we can check.
    pub fn preferred_algorithms(&self, sess: &Session) -> Option<String> {
        let mut known_types: Vec<String> = Vec::new();
        for f in &self.files {
            for line in read_lines(f) {
                let Some(e) = parse_line(&line) else { continue };
                if known_types.contains(&e.key_type) {
                    continue;
                }
                let names_host = if e.hashed {
                    // A hashed line names the host if libssh2 matches it against its own key.
                    base64_decode(&e.key_b64).is_some_and(|blob| {
                        hashed_line_names(sess, &line, &self.host, self.port, &blob)
                    })
                } else {
                    host_matches(&e.hosts, &self.host, self.port)
                };
                if names_host {
                    known_types.push(e.key_type);
                }
            }
        }
        if known_types.is_empty() {
            return None;
        }
        let all = [
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "rsa-sha2-512",
            "rsa-sha2-256",
            "ssh-rsa",
        ];
        let algs_for = |t: &str| -> Vec<&'static str> {
            if t == "ssh-rsa" {
                vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
            } else {
                all.iter().copied().filter(|a| *a == t).collect()
            }
        };
        let mut out: Vec<&str> = known_types.iter().flat_map(|t| algs_for(t)).collect();
        for a in all {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Some(out.join(","))
    }

    /// Checks the key the server presented against the policy.
    pub fn verify(&self, sess: &Session) -> Result<(), RemoteError> {
        let label = if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        };
        let Some((blob, _)) = sess.host_key() else {
            return Err(RemoteError::Connect {
                target: label,
                message: "server presented no host key".into(),
                source: None,
            });
        };
        let presented = fingerprint(blob);
        let files_text = || {
            self.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.policy {
            HostKeyPolicy::Insecure => Ok(()),
            HostKeyPolicy::Strict => match lookup(sess, &self.files, &self.host, self.port, blob) {
                Lookup::Match => Ok(()),
                Lookup::Mismatch { fingerprint, file } => Err(RemoteError::HostKeyChanged {
                    host: label,
                    known_fingerprint: fingerprint,
                    presented_fingerprint: presented,
                    known_hosts: file.display().to_string(),
                }),
                Lookup::NotFound => Err(RemoteError::HostKeyUnknown {
                    host: label,
                    fingerprint: presented,
                    known_hosts: files_text(),
                }),
            },
            HostKeyPolicy::TrustFirstUse { known_hosts } => {
                let _g = TOFU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                match lookup(sess, &self.files, &self.host, self.port, blob) {
                    Lookup::Match => Ok(()),
                    Lookup::Mismatch { fingerprint, file } => Err(RemoteError::HostKeyChanged {
                        host: label,
                        known_fingerprint: fingerprint,
                        presented_fingerprint: presented,
                        known_hosts: file.display().to_string(),
                    }),
                    Lookup::NotFound => {
                        append_known_host(known_hosts, &label, blob).map_err(|e| {
                            RemoteError::Io {
                                context: format!(
                                    "recording the host key of {label} in {}",
                                    known_hosts.display()
                                ),
                                source: e,
                            }
                        })?;
                        tracing::info!(host = %label, fingerprint = %presented, file = %known_hosts.display(), "trusted host key on first use");
                        Ok(())
                    }
                }
            }
            // A policy added to qa-core after this was written: checking nothing would be the
            // insecure choice, so the connection is refused.
            other => Err(RemoteError::Connect {
                target: label,
                message: format!(
                    "host-key policy {other:?} is not supported by this version of qa-remote; use strict, trust-first-use or insecure"
                ),
                source: None,
            }),
        }
    }
}

fn default_known_hosts() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(Path::new(&home).join(".ssh/known_hosts"));
    }
    v.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    v
}

fn read_lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

struct Entry {
    hosts: String,
    hashed: bool,
    key_type: String,
    key_b64: String,
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut parts = line.split_whitespace();
    let mut hosts = parts.next()?;
    if hosts.starts_with('@') {
        // @cert-authority and @revoked lines are not plain host keys.
        return None;
    }
    if hosts.is_empty() {
        hosts = parts.next()?;
    }
    let key_type = parts.next()?.to_string();
    let key_b64 = parts.next()?.to_string();
    Some(Entry {
        hashed: hosts.starts_with("|1|"),
        hosts: hosts.to_string(),
        key_type,
        key_b64,
    })
}

/// Does a known_hosts host field (comma-separated patterns, `!` negates) name `host:port`?
fn host_matches(field: &str, host: &str, port: u16) -> bool {
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut matched = false;
    for pat in field.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if pattern_matches(neg, &name) {
                return false;
            }
        } else if pattern_matches(pat, &name) {
            matched = true;
        }
    }
    matched
}

/// Looks the presented key up in `files`.
pub(crate) fn lookup(
    sess: &Session,
    files: &[PathBuf],
    host: &str,
    port: u16,
    blob: &[u8],
) -> Lookup {
    let presented_type = key_type_of(blob);
    let presented_b64 = base64_encode(blob, true);
    let mut mismatch = None;
    for f in files {
        for line in read_lines(f) {
            let Some(e) = parse_line(&line) else { continue };
            if Some(e.key_type.as_str()) != presented_type.as_deref() {
                continue;
            }
            let host_ok = if e.hashed {
                // One line at a time, so that a mismatch can be tied to its line.
                let Ok(mut kh) = sess.known_hosts() else {
                    continue;
                };
                if kh
                    .read_str(&line, ssh2::KnownHostFileKind::OpenSSH)
                    .is_err()
                {
                    continue;
                }
                !matches!(
                    kh.check_port(host, port, blob),
                    ssh2::CheckResult::NotFound | ssh2::CheckResult::Failure
                )
            } else {
                host_matches(&e.hosts, host, port)
            };
            if !host_ok {
                continue;
            }
            if e.key_b64 == presented_b64 {
                return Lookup::Match;
            }
            if mismatch.is_none() {
                let fp = base64_decode(&e.key_b64)
                    .map(|k| fingerprint(&k))
                    .unwrap_or_else(|| "SHA256:?".into());
                mismatch = Some(Lookup::Mismatch {
                    fingerprint: fp,
                    file: f.clone(),
                });
            }
        }
    }
    mismatch.unwrap_or(Lookup::NotFound)
}

/// Does the hashed known_hosts `line` name `host:port`? (Its key may differ from `blob`.)
fn hashed_line_names(sess: &Session, line: &str, host: &str, port: u16, blob: &[u8]) -> bool {
    let Ok(mut kh) = sess.known_hosts() else {
        return false;
    };
    if kh.read_str(line, ssh2::KnownHostFileKind::OpenSSH).is_err() {
        return false;
    }
    matches!(
        kh.check_port(host, port, blob),
        ssh2::CheckResult::Match | ssh2::CheckResult::Mismatch
    )
}

fn append_known_host(file: &Path, label: &str, blob: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
    {
        fs::create_dir_all(dir)?;
    }
    let kt = key_type_of(blob).unwrap_or_else(|| "unknown".into());
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    f.write_all(format!("{label} {kt} {}\n", base64_encode(blob, true)).as_bytes())?;
    f.sync_all()
}

/// The key type name at the start of an SSH public key blob.
pub(crate) fn key_type_of(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(0..4)?.try_into().ok()?) as usize;
    String::from_utf8(blob.get(4..4 + len)?.to_vec()).ok()
}

/// `SHA256:<base64 without padding>`, as OpenSSH prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", base64_encode(&Sha256::digest(blob), false))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(data: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..20u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data, true)).unwrap(), data);
            assert_eq!(base64_decode(&base64_encode(&data, false)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar", true), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo", true), "Zm8=");
        assert_eq!(base64_encode(b"fo", false), "Zm8");
    }

    #[test]
    fn host_patterns_follow_openssh() {
        assert!(host_matches("example.com,10.0.0.1", "10.0.0.1", 22));
        assert!(!host_matches("example.com", "10.0.0.1", 22));
        assert!(host_matches("[127.0.0.1]:2222", "127.0.0.1", 2222));
        assert!(!host_matches("127.0.0.1", "127.0.0.1", 2222));
        assert!(host_matches("*.lab", "db.lab", 22));
        assert!(!host_matches("*.lab,!db.lab", "db.lab", 22));
    }

    #[test]
    fn key_type_is_read_from_the_blob() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 1, 7]);
        assert_eq!(key_type_of(&blob).as_deref(), Some("ssh-ed25519"));
        assert_eq!(key_type_of(&[0, 0]), None);
    }
}
