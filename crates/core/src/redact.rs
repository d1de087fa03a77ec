//! Redaction of secrets in everything qa-run writes: step logs, recordings, reports, pages.
//!
//! Two sources of secrets: values the plan marks secret (`secrets:` names environment variables)
//! and common credential shapes that need no declaration — access key ids (`AKIA…`, `ASIA…`), private-key
//! blocks, and passwords in URLs (`scheme://user:password@host`).

/// What replaces a secret.
pub const MASK: &str = "[REDACTED]";

/// Replaces secrets in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values (empty and very short values are ignored: masking
    /// every `a` would destroy the log without protecting anything).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= 4).collect();
        // Longest first, so a secret that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    /// Text with every secret masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        let out = mask_private_keys(&out);
        let out = mask_access_key_ids(&out);
        mask_url_passwords(&out)
    }
}

fn mask_private_keys(text: &str) -> String {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let header_end = rest[start..].find("-----\n").or_else(|| {
            rest[start + BEGIN.len()..]
                .find("-----")
                .map(|i| i + BEGIN.len())
        });
        let is_key = rest[start..]
            .lines()
            .next()
            .is_some_and(|l| l.contains("PRIVATE KEY"));
        if !is_key || header_end.is_none() {
            out.push_str(&rest[..start + BEGIN.len()]);
            rest = &rest[start + BEGIN.len()..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(MASK);
        match rest[start..].find("-----END ") {
            Some(end) => {
                let after = start + end + "-----END ".len();
                let close = rest[after..]
                    .find("-----")
                    .map(|i| after + i + 5)
                    .unwrap_or(rest.len());
                rest = &rest[close..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

fn mask_access_key_ids(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    while i + 20 <= b.len() {
        let prefix = &b[i..i + 4];
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if boundary
            && matches!(prefix, b"AKIA" | b"ASIA")
            && b[i + 4..i + 20]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && (i + 20 == b.len() || !b[i + 20].is_ascii_alphanumeric())
        {
            out.push_str(&text[last..i]);
            out.push_str(MASK);
            i += 20;
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[last..]);
    out
}

fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let after = pos + 3;
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                out.push_str(&userinfo[..colon + 1]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
                rest = &tail[end..];
                continue;
            }
            // A token used as the user name (`https://ghp_…@github.com/…`): user names are short
            // words, tokens are long or carry a known prefix.
            if looks_like_token(userinfo) {
                out.push_str(MASK);
                out.push_str(&authority[at..]);
                rest = &tail[end..];
                continue;
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn looks_like_token(user: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "ghp_",
        "gho_",
        "ghs_",
        "ghu_",
        "github_pat_",
        "glpat-",
        "x-access-token",
    ];
    PREFIXES.iter().any(|p| user.starts_with(p))
        || (user.len() >= 20
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '%')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_declared_values_longest_first() {
        let r = Redactor::new([
            "hunter22".to_string(),
            "hunter22-extended".to_string(),
            "ab".into(),
        ]);
        assert_eq!(
            r.redact("pw=hunter22-extended and hunter22 ab"),
            "pw=[REDACTED] and [REDACTED] ab"
        );
    }

    #[test]
    fn masks_credential_shapes() {
        let r = Redactor::default();
        assert_eq!(
            r.redact("key AKIAIOSFODNN7EXAMPLE end"),
            "key [REDACTED] end"
        );
        assert_eq!(r.redact("XAKIAIOSFODNN7EXAMPLE"), "XAKIAIOSFODNN7EXAMPLE");
        assert_eq!(
            r.redact("git push https://bob:s3cr3t@example.com/x.git"),
            "git push https://bob:[REDACTED]@example.com/x.git"
        );
        assert_eq!(
            r.redact("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(
            r.redact("clone https://ghp_abc@github.com/o/r"),
            "clone https://[REDACTED]@github.com/o/r"
        );
        assert_eq!(
            r.redact("https://0123456789abcdef0123456789@h/x"),
            "https://[REDACTED]@h/x"
        );
        assert_eq!(
            r.redact("ssh://git@github.com/o/r"),
            "ssh://git@github.com/o/r"
        );
        let pem = "before\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\nafter";
        assert_eq!(r.redact(pem), "before\n[REDACTED]\nafter");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(r.redact(cert), cert);
    }
}
