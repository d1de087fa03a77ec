//! A run's own SSH key, for clouds that take a public key rather than making a key pair (GCE's
//! instance metadata, Azure's VM profile, OCI's metadata): an Ed25519 key made on this host, its
//! private half written `0600` in OpenSSH's format (what `ssh`, `ssh-keygen` and libssh2 read),
//! its public half as an `authorized_keys` line.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

/// A key made for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    /// Where the private key is.
    pub private_key: PathBuf,
    /// `ssh-ed25519 AAAA… COMMENT`.
    pub public_line: String,
}

/// The key in `dir/name`, made and written there when it does not exist yet (a resumed run keeps
/// its key); `comment` ends the public line.
pub fn run_key(dir: &Path, name: &str, comment: &str) -> std::io::Result<RunKey> {
    let path = dir.join(name);
    let public_path = dir.join(format!("{name}.pub"));
    if let (Ok(_), Ok(public)) = (
        std::fs::metadata(&path),
        std::fs::read_to_string(&public_path),
    ) {
        return Ok(RunKey {
            private_key: path,
            public_line: public.trim().to_string(),
        });
    }
    let seed: [u8; 32] = rand::random();
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| std::io::Error::other(format!("ed25519 key: {e}")))?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| std::io::Error::other("ed25519 public key is not 32 bytes"))?;
    let check: u32 = rand::random();
    let (private_text, public_line) = openssh_ed25519(&seed, &public, check, comment);
    write_private(&path, &private_text)?;
    std::fs::write(&public_path, format!("{public_line}\n"))?;
    Ok(RunKey {
        private_key: path,
        public_line,
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// The private key file (`-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted) and the public
/// line of an Ed25519 key.
fn openssh_ed25519(
    seed: &[u8; 32],
    public: &[u8; 32],
    check: u32,
    comment: &str,
) -> (String, String) {
    const KEY_TYPE: &[u8] = b"ssh-ed25519";
    let mut public_blob = Vec::new();
    put_string(&mut public_blob, KEY_TYPE);
    put_string(&mut public_blob, public);

    let mut private = Vec::new();
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    put_string(&mut private, KEY_TYPE);
    put_string(&mut private, public);
    let mut secret = seed.to_vec();
    secret.extend_from_slice(public);
    put_string(&mut private, &secret);
    put_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }

    let mut blob = b"openssh-key-v1\0".to_vec();
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"");
    blob.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut blob, &public_blob);
    put_string(&mut blob, &private);

    let body = base64(&blob);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in body.as_bytes().chunks(70) {
        text.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let public_line = format!("ssh-ed25519 {} {comment}", base64(&public_blob))
        .trim_end()
        .to_string();
    (text, public_line)
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn base64_matches_the_standard_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn openssh_reads_the_key_back_and_derives_the_same_public_line() {
        let dir = tempfile::tempdir().unwrap();
        let key = run_key(dir.path(), "ssh-key", "qa-run-test").unwrap();
        let mode = std::fs::metadata(&key.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            key.public_line
                .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
        );
        // The same key comes back on a second call (a resumed run).
        assert_eq!(run_key(dir.path(), "ssh-key", "other").unwrap(), key);
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&key.private_key)
            .output()
            .expect("ssh-keygen (openssh-client; scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let derived = String::from_utf8(out.stdout).unwrap();
        let mut want = key.public_line.split(' ');
        let mut got = derived.split_whitespace();
        assert_eq!((got.next(), got.next()), (want.next(), want.next()));
    }
}
