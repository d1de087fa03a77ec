//! Reading a host's settings from an OpenSSH client config file (`~/.ssh/config`).
//!
//! Only what qa-run needs to reach a host is read: `HostName`, `User`, `Port`, `IdentityFile` and
//! `ProxyJump`. As in OpenSSH, `Host` blocks match the alias by patterns (`*`, `?`, `!`), the
//! first value found for a keyword wins (so specific blocks go first, `Host *` last), and
//! `IdentityFile` accumulates. `Match` blocks are not evaluated and never apply.

use std::fmt;
use std::path::{Path, PathBuf};

use qa_core::{HostKeyPolicy, SshTarget};

/// A problem in a config file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A value is malformed.
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The file (or `<string>`).
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// `ProxyJump` chains loop or nest too deep.
    #[error("ProxyJump of `{alias}` nests more than 8 deep (a loop?)")]
    JumpLoop {
        /// The alias being resolved.
        alias: String,
    },
}

#[derive(Debug, Clone)]
struct Block {
    patterns: Vec<String>,
    /// `Match` blocks are kept so that their settings are skipped, never applied.
    is_match: bool,
    settings: Vec<(String, String, usize)>,
}

/// A parsed OpenSSH client config.
#[derive(Debug, Clone, Default)]
pub struct OpenSshConfig {
    file: String,
    blocks: Vec<Block>,
}

/// The settings that apply to one host alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `HostName` (with `%h` expanded), if set.
    pub host_name: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile`s in order (`~` and `%h`, `%r`, `%p`, `%%` expanded).
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump` hops, outermost first, as written (`[user@]host[:port]`); empty for `none`.
    pub proxy_jump: Vec<String>,
}

impl fmt::Display for HostSettings {
    /// The settings as an OpenSSH config would write them: `HostName h, User u, Port 2222`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host_name {
            parts.push(format!("HostName {h}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("User {u}"));
        }
        if let Some(p) = self.port {
            parts.push(format!("Port {p}"));
        }
        for i in &self.identity_files {
            parts.push(format!("IdentityFile {}", i.display()));
        }
        if !self.proxy_jump.is_empty() {
            parts.push(format!("ProxyJump {}", self.proxy_jump.join(",")));
        }
        if parts.is_empty() {
            f.write_str("no settings")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl OpenSshConfig {
    /// Parses config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, SshConfigError> {
        // Settings before the first Host line apply to every host.
        let mut blocks = vec![Block {
            patterns: vec!["*".into()],
            is_match: false,
            settings: Vec::new(),
        }];
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = split_keyword(line).ok_or_else(|| SshConfigError::Invalid {
                file: file.into(),
                line: i + 1,
                message: format!("`{line}` has no value"),
            })?;
            let key = key.to_ascii_lowercase();
            match key.as_str() {
                "host" => blocks.push(Block {
                    patterns: split_args(&value),
                    is_match: false,
                    settings: Vec::new(),
                }),
                "match" => blocks.push(Block {
                    patterns: Vec::new(),
                    is_match: true,
                    settings: Vec::new(),
                }),
                _ => blocks
                    .last_mut()
                    .expect("a block")
                    .settings
                    .push((key, value, i + 1)),
            }
        }
        Ok(OpenSshConfig {
            file: file.into(),
            blocks,
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, SshConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| SshConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The user's `~/.ssh/config`, or an empty config if there is none.
    pub fn load_user_default() -> Result<Self, SshConfigError> {
        match std::env::var_os("HOME").map(|h| Path::new(&h).join(".ssh/config")) {
            Some(p) if p.is_file() => Self::load(&p),
            _ => Ok(Self::default()),
        }
    }

    /// The settings for `alias`.
    pub fn host(&self, alias: &str) -> Result<HostSettings, SshConfigError> {
        let mut out = HostSettings::default();
        let (mut host_name, mut port, mut user): (Option<String>, Option<u16>, Option<String>) =
            (None, None, None);
        let mut identity_raw: Vec<String> = Vec::new();
        let mut jump: Option<Vec<String>> = None;
        for b in &self.blocks {
            if b.is_match || !block_matches(&b.patterns, alias) {
                continue;
            }
            for (k, v, line) in &b.settings {
                let invalid = |message: String| SshConfigError::Invalid {
                    file: self.file.clone(),
                    line: *line,
                    message,
                };
                let first = split_args(v).into_iter().next().unwrap_or_default();
                match k.as_str() {
                    "hostname" if host_name.is_none() => {
                        host_name = Some(first.replace("%h", alias).replace("%%", "%"))
                    }
                    "user" if user.is_none() => user = Some(first),
                    "port" if port.is_none() => {
                        port =
                            Some(first.parse().map_err(|_| {
                                invalid(format!("Port `{first}` is not a port number"))
                            })?)
                    }
                    "identityfile" => identity_raw.push(first),
                    "proxyjump" if jump.is_none() => {
                        jump = Some(if first.eq_ignore_ascii_case("none") {
                            Vec::new()
                        } else {
                            first
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect()
                        })
                    }
                    _ => {}
                }
            }
        }
        let h = host_name.clone().unwrap_or_else(|| alias.to_string());
        let r = user.clone().unwrap_or_default();
        let p = port.unwrap_or(22).to_string();
        out.identity_files = identity_raw
            .iter()
            .map(|f| {
                let f = f
                    .replace("%h", &h)
                    .replace("%r", &r)
                    .replace("%p", &p)
                    .replace("%%", "%");
                super::conn::expand_home(Path::new(&f))
            })
            .collect();
        out.host_name = host_name;
        out.user = user;
        out.port = port;
        out.proxy_jump = jump.unwrap_or_default();
        Ok(out)
    }

    /// An [`SshTarget`] for `alias`: its HostName, Port, User (else `default_user`), first
    /// IdentityFile and ProxyJump hops (each hop itself resolved through this config, so a hop
    /// may be an alias with its own ProxyJump). Every hop gets `host_keys`.
    pub fn target(
        &self,
        alias: &str,
        default_user: &str,
        host_keys: HostKeyPolicy,
    ) -> Result<SshTarget, SshConfigError> {
        self.target_depth(alias, None, None, default_user, &host_keys, 0)
    }

    fn target_depth(
        &self,
        alias: &str,
        user_override: Option<String>,
        port_override: Option<u16>,
        default_user: &str,
        host_keys: &HostKeyPolicy,
        depth: usize,
    ) -> Result<SshTarget, SshConfigError> {
        if depth > 8 {
            return Err(SshConfigError::JumpLoop {
                alias: alias.into(),
            });
        }
        let s = self.host(alias)?;
        let mut jumps = Vec::new();
        for (i, hop) in s.proxy_jump.iter().enumerate() {
            let (u, h, p) = split_jump(hop).map_err(|message| SshConfigError::Invalid {
                file: self.file.clone(),
                line: 0,
                message: format!("ProxyJump `{hop}` of `{alias}`: {message}"),
            })?;
            let t = self.target_depth(&h, u, p, default_user, host_keys, depth + 1)?;
            // As with `ssh -J a,b`: the first hop is reached with its own ProxyJump; later hops
            // are reached through the earlier ones, their own ProxyJump overridden.
            let mut hop = t;
            let inner = std::mem::take(&mut hop.jumps);
            if i == 0 {
                jumps.extend(inner);
            }
            jumps.push(hop);
        }
        let mut target = SshTarget::new(
            s.host_name.clone().unwrap_or_else(|| alias.to_string()),
            port_override.or(s.port).unwrap_or(22),
            user_override
                .or(s.user.clone())
                .unwrap_or_else(|| default_user.to_string()),
        )
        .host_keys(host_keys.clone());
        target.identity_file = s.identity_files.first().cloned();
        target.jumps = jumps;
        Ok(target)
    }
}

/// `[user@]host[:port]` (IPv6 in brackets).
fn split_jump(s: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let s = s.strip_prefix("ssh://").unwrap_or(s);
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, s),
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or("unclosed `[`")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("`{p}` is not a port number"))
        })
        .transpose()?;
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok((user, host, port))
}

fn split_keyword(line: &str) -> Option<(String, String)> {
    let idx = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let key = &line[..idx];
    let rest = line[idx..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    if rest.is_empty() {
        return None;
    }
    Some((key.to_string(), rest.to_string()))
}

/// Splits on whitespace, honouring double quotes.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn block_matches(patterns: &[String], alias: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if pattern_matches(neg, alias) {
                return false;
            }
        } else if pattern_matches(p, alias) {
            matched = true;
        }
    }
    matched
}

/// OpenSSH pattern match: `*` any run, `?` one character, everything else literal
/// (case-insensitive, as host names are).
pub(crate) fn pattern_matches(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = s.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
# global
IdentityFile ~/.ssh/global_key

Host db-* !db-legacy
    HostName %h.lab.example
    User tester
    Port=2201
    ProxyJump bastion

Host bastion
    HostName 10.0.0.1
    User jump
    IdentityFile "/keys/bastion key"

Host deep
    HostName 10.9.9.9
    ProxyJump admin@bastion:2222,db-1

Match host foo
    User never

Host *
    User fallback
    Port 22
"#;

    #[test]
    fn first_value_wins_and_patterns_match() {
        let c = OpenSshConfig::parse(CONFIG, "cfg").unwrap();
        let s = c.host("db-7").unwrap();
        assert_eq!(s.host_name.as_deref(), Some("db-7.lab.example"));
        assert_eq!(s.user.as_deref(), Some("tester"));
        assert_eq!(s.port, Some(2201));
        assert_eq!(s.proxy_jump, vec!["bastion".to_string()]);
        assert_eq!(s.identity_files.len(), 1);
        let legacy = c.host("db-legacy").unwrap();
        assert_eq!(legacy.user.as_deref(), Some("fallback"));
        assert_eq!(legacy.host_name, None);
        assert!(legacy.proxy_jump.is_empty());
    }

    #[test]
    fn identity_files_accumulate_with_quotes() {
        let c = OpenSshConfig::parse(CONFIG, "cfg").unwrap();
        let s = c.host("bastion").unwrap();
        assert_eq!(s.identity_files.len(), 2);
        assert_eq!(s.identity_files[1], PathBuf::from("/keys/bastion key"));
    }

    #[test]
    fn targets_resolve_jump_chains_through_aliases() {
        let c = OpenSshConfig::parse(CONFIG, "cfg").unwrap();
        let t = c.target("deep", "me", HostKeyPolicy::Strict).unwrap();
        assert_eq!(t.host, "10.9.9.9");
        assert_eq!(t.user, "fallback");
        let hops: Vec<String> = t
            .jumps
            .iter()
            .map(|j| format!("{}@{}:{}", j.user, j.host, j.port))
            .collect();
        // As `ssh -J admin@bastion:2222,db-1`: db-1's own ProxyJump is overridden by the list.
        assert_eq!(
            hops,
            vec!["admin@10.0.0.1:2222", "tester@db-1.lab.example:2201"]
        );
        // A single hop keeps its own ProxyJump: db-1 is reached through bastion.
        let t = c.target("db-1", "me", HostKeyPolicy::Strict).unwrap();
        assert_eq!(t.jumps.len(), 1);
        assert_eq!(t.jumps[0].host, "10.0.0.1");
    }

    #[test]
    fn bad_port_names_file_and_line() {
        let err = OpenSshConfig::parse("Host x\n  Port nope\n", "my.cfg")
            .unwrap()
            .host("x")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "my.cfg:2: Port `nope` is not a port number"
        );
    }

    #[test]
    fn jump_loops_are_reported() {
        let c = OpenSshConfig::parse("Host a\n ProxyJump b\nHost b\n ProxyJump a\n", "c").unwrap();
        assert!(matches!(
            c.target("a", "u", HostKeyPolicy::Strict),
            Err(SshConfigError::JumpLoop { .. })
        ));
    }

    #[test]
    fn glob_patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("web-??", "web-01"));
        assert!(!pattern_matches("web-??", "web-001"));
        assert!(pattern_matches("*.EXAMPLE.com", "a.b.example.COM"));
        assert!(!pattern_matches("a*b", "acbd"));
    }
}
