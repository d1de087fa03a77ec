//! The catalogue of credential shapes that are masked without being declared: each one is
//! recognised by its look alone, so that a credential a test prints by accident never reaches a
//! log, a report or a page.
//!
//! Every finder scans bytes, not `str`: the same catalogue masks step output and collected
//! artifacts, which need not be text. A finder reports the byte ranges to mask, sorted and not
//! overlapping; every range starts and ends next to an ASCII byte (or at an end of the input), so
//! masking valid UTF-8 keeps it valid.
//!
//! Shapes are chosen so that ordinary output is left alone: a token needs its vendor's prefix and
//! a long enough body, a value is masked for the name it is assigned to (`…password=…`,
//! `"client_secret": "…"`), never for looking random. A credential with neither — an opaque
//! string printed on its own — cannot be recognised; declare it in the plan's `secrets:`.

use std::ops::Range;

/// One kind of credential recognised by its look.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CredentialShape {
    /// What it is, for people: "GitHub token".
    pub name: &'static str,
    /// What of it is masked.
    pub masks: &'static str,
    /// Bytes (lower-cased) that every match holds, for one of its forms: a text that lacks
    /// them all is not scanned for this shape.
    needs: &'static [&'static [u8]],
    find: fn(&[u8], &mut Vec<Range<usize>>),
}

impl CredentialShape {
    /// The byte ranges of `text` this shape masks, in order.
    pub fn find(&self, text: &[u8]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        (self.find)(text, &mut out);
        out
    }

    pub(super) fn find_into(&self, text: &[u8], seen: &ByteSet, out: &mut Vec<Range<usize>>) {
        if self
            .needs
            .iter()
            .any(|form| form.iter().all(|&c| seen.has(c)))
        {
            (self.find)(text, out)
        }
    }
}

/// Which bytes a text holds, lower-cased: one quick pass that lets most shapes skip a line
/// that cannot hold them.
#[derive(Debug)]
pub(super) struct ByteSet([bool; 256]);

impl ByteSet {
    pub(super) fn of(b: &[u8]) -> Self {
        let mut seen = ByteSet([false; 256]);
        seen.add(b);
        seen
    }

    pub(super) fn add(&mut self, b: &[u8]) {
        for &c in b {
            self.0[c.to_ascii_lowercase() as usize] = true;
        }
    }

    pub(super) fn has(&self, c: u8) -> bool {
        self.0[c as usize]
    }
}

/// What a private-key block holds.
pub(super) const PRIVATE_KEY_NEEDS: &[&[u8]] = &[b"-begin privatekey"];

/// Every shape, in the order the redactor applies them. Private-key blocks come first (the
/// redactor applies that one itself, so that a block cut across two chunks of a stream is masked
/// whole), then URLs, then the vendor tokens, then values by the name they are assigned to.
pub const CREDENTIAL_SHAPES: &[CredentialShape] = &[
    CredentialShape {
        name: "private key block",
        masks: "a PEM block whose header names a PRIVATE KEY (RSA, EC, DSA, OpenSSH, PKCS#8, \
                encrypted, PGP), from `-----BEGIN` to the end of its `-----END …-----` line; \
                also inside JSON strings (service-account key files)",
        needs: PRIVATE_KEY_NEEDS,
        find: |b, out| {
            private_key_blocks(b, out);
        },
    },
    CredentialShape {
        name: "URL credentials",
        masks: "the password in `scheme://user:password@host`, or the whole user part when it is \
                a token (`https://ghp_…@github.com`)",
        needs: &[b":/@"],
        find: url_credentials,
    },
    CredentialShape {
        name: "Amazon access key id",
        masks: "`AKIA` or `ASIA` and 16 upper-case letters or digits",
        needs: &[b"aki", b"asi"],
        find: |b, out| tokens(b, &AMAZON_KEY_ID, out),
    },
    CredentialShape {
        name: "GitHub token",
        masks: "`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_` and at least 20 more \
                letters, digits or `_`",
        needs: &[b"gh_"],
        find: |b, out| tokens(b, &GITHUB, out),
    },
    CredentialShape {
        name: "GitLab token",
        masks: "`glpat-`, `gldt-`, `glrt-`, `glptt-`, `glcbt-`, `glsoat-`, `glffct-`, `glimt-`, \
                `glagent-`, `gloas-` or `GR1348941` and at least 20 more letters, digits, `_` or `-`",
        needs: &[b"gl-", b"gr1348941"],
        find: |b, out| tokens(b, &GITLAB, out),
    },
    CredentialShape {
        name: "Slack token",
        masks: "`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxe-`, `xoxe.`, `xapp-` and at \
                least 10 more letters, digits or `-`",
        needs: &[b"xo-", b"xo.", b"xap-"],
        find: |b, out| tokens(b, &SLACK, out),
    },
    CredentialShape {
        name: "Slack webhook URL",
        masks: "the path after `hooks.slack.com/services/`",
        needs: &[b"hooks.slack.com/services/"],
        find: |b, out| tokens(b, &SLACK_WEBHOOK, out),
    },
    CredentialShape {
        name: "Google API key",
        masks: "`AIza` and at least 30 more letters, digits, `_` or `-`",
        needs: &[b"aiza"],
        find: |b, out| tokens(b, &GOOGLE_API_KEY, out),
    },
    CredentialShape {
        name: "Google OAuth token",
        masks: "access tokens (`ya29.` and at least 20 more characters), refresh tokens \
                (`1//0` and at least 20 more) and client secrets (`GOCSPX-` and at least 20 more)",
        needs: &[b"ya29.", b"1/0", b"gocspx-"],
        find: |b, out| tokens(b, &GOOGLE_OAUTH, out),
    },
    CredentialShape {
        name: "JSON Web Token",
        masks: "three base64url parts joined by dots, the first two starting `eyJ` \
                (`eyJhbGci….eyJzdWIi….sig`), whole",
        needs: &[b"eyj."],
        find: json_web_tokens,
    },
    CredentialShape {
        name: "Azure client secret",
        masks: "Entra ID application secrets: 3 characters, a digit, `Q~` and at least 31 more",
        needs: &[b"q~"],
        find: azure_client_secrets,
    },
    CredentialShape {
        name: "secret-named value",
        masks: "the value assigned with `=`, `:`, `:=` or `=>` (or given after a `--flag`) to a \
                name ending in password, passwd, passphrase, secret, secret key, token, api key, \
                access key, account key, private key, or named `sig`, `--password`: \
                `secret_access_key = …` (Amazon), `\"private_key\": \"…\"` (Google), \
                `AccountKey=…;` and `&sig=…` (Azure), `pass_phrase=…` (Oracle Cloud); a value \
                that is a variable reference (`$NAME`, `${NAME}`) is left alone",
        needs: &[b"=", b":", b"--"],
        find: secret_named_values,
    },
    CredentialShape {
        name: "authorization header",
        masks: "the whole value of an `Authorization:` or `Proxy-Authorization:` header \
                (`Basic …`, `Bearer …`, `token …`)",
        needs: &[b"authorizn:", b"authorizn="],
        find: authorization_values,
    },
    CredentialShape {
        name: "bearer token",
        masks: "the token after the word `Bearer` (at least 8 characters with a digit, both \
                cases or punctuation)",
        needs: &[b"bearer"],
        find: bearer_tokens,
    },
];

/// Tokens known by a prefix: the prefix, then a body of `body` bytes, at least `min` long
/// (exactly `min` when `exact`).
struct TokenShape {
    prefixes: &'static [&'static [u8]],
    body: fn(u8) -> bool,
    min: usize,
    exact: bool,
    /// Whether the prefix stays visible (a URL's host part, not the secret).
    keep_prefix: bool,
}

fn upper_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn alnum_under(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}
fn alnum_under_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}
fn alnum_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}
fn alnum_under_dash_dot(c: u8) -> bool {
    alnum_under_dash(c) || c == b'.'
}
fn url_path(c: u8) -> bool {
    alnum_under_dash(c) || c == b'/'
}

const AMAZON_KEY_ID: TokenShape = TokenShape {
    prefixes: &[b"AKIA", b"ASIA"],
    body: upper_digit,
    min: 16,
    exact: true,
    keep_prefix: false,
};
const GITHUB: TokenShape = TokenShape {
    prefixes: &[b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_"],
    body: alnum_under,
    min: 20,
    exact: false,
    keep_prefix: false,
};
const GITLAB: TokenShape = TokenShape {
    prefixes: &[
        b"glpat-",
        b"gldt-",
        b"glrt-",
        b"glptt-",
        b"glcbt-",
        b"glsoat-",
        b"glffct-",
        b"glimt-",
        b"glagent-",
        b"gloas-",
        b"GR1348941",
    ],
    body: alnum_under_dash,
    min: 20,
    exact: false,
    keep_prefix: false,
};
const SLACK: TokenShape = TokenShape {
    prefixes: &[
        b"xoxb-", b"xoxp-", b"xoxa-", b"xoxr-", b"xoxs-", b"xoxe-", b"xoxe.", b"xapp-",
    ],
    body: |c| alnum_dash(c) || c == b'.',
    min: 10,
    exact: false,
    keep_prefix: false,
};
const SLACK_WEBHOOK: TokenShape = TokenShape {
    prefixes: &[b"hooks.slack.com/services/"],
    body: url_path,
    min: 10,
    exact: false,
    keep_prefix: true,
};
const GOOGLE_API_KEY: TokenShape = TokenShape {
    prefixes: &[b"AIza"],
    body: alnum_under_dash,
    min: 30,
    exact: false,
    keep_prefix: false,
};
const GOOGLE_OAUTH: TokenShape = TokenShape {
    prefixes: &[b"ya29.", b"1//0", b"GOCSPX-"],
    body: alnum_under_dash_dot,
    min: 20,
    exact: false,
    keep_prefix: false,
};

/// Whether a token may start at `i`: not in the middle of a word (a terminal escape sequence
/// such as a colour, `ESC [ 1 m`, ends in a letter but is not part of a word).
fn starts_word(b: &[u8], i: usize) -> bool {
    i == 0 || !b[i - 1].is_ascii_alphanumeric() || escape_ending_at(b, i).is_some()
}

/// Where the terminal control sequence (`ESC [` parameters, a final letter) that ends just
/// before `end` starts.
fn escape_ending_at(b: &[u8], end: usize) -> Option<usize> {
    if end < 3 || !b[end - 1].is_ascii_alphabetic() {
        return None;
    }
    let mut k = end - 1;
    while k > 0 && (b[k - 1].is_ascii_digit() || matches!(b[k - 1], b';' | b'?')) {
        k -= 1;
    }
    (k >= 2 && b[k - 1] == b'[' && b[k - 2] == 0x1b).then(|| k - 2)
}

/// The end of the terminal control sequences that start at `at`.
fn after_escapes(b: &[u8], mut at: usize) -> usize {
    while b.get(at) == Some(&0x1b) && b.get(at + 1) == Some(&b'[') {
        let mut k = at + 2;
        while k < b.len() && (b[k].is_ascii_digit() || matches!(b[k], b';' | b'?')) {
            k += 1;
        }
        if k < b.len() && b[k].is_ascii_alphabetic() {
            at = k + 1;
        } else {
            break;
        }
    }
    at
}

fn tokens(b: &[u8], shape: &TokenShape, out: &mut Vec<Range<usize>>) {
    // Most bytes start no prefix: skip them with one table look-up each.
    let mut starts = [false; 256];
    for p in shape.prefixes {
        starts[p[0] as usize] = true;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i..].iter().position(|&c| starts[c as usize]) {
            Some(skip) => i += skip,
            None => return,
        }
        let Some(prefix) = shape.prefixes.iter().find(|p| b[i..].starts_with(p)) else {
            i += 1;
            continue;
        };
        if !starts_word(b, i) {
            i += 1;
            continue;
        }
        let body_start = i + prefix.len();
        let body_len = b[body_start..]
            .iter()
            .take_while(|&&c| (shape.body)(c))
            .count();
        let mut end = body_start + body_len;
        let fits = if shape.exact {
            body_len == shape.min && b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric())
        } else {
            body_len >= shape.min
        };
        if !fits {
            i += 1;
            continue;
        }
        // A body that ends in dots or dashes ends a sentence, not the token.
        while end > body_start + shape.min && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let start = if shape.keep_prefix { body_start } else { i };
        out.push(start..end);
        i = end;
    }
}

/// Where `needle` next occurs in `b` at or after `from`.
pub(super) fn find_from(b: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= b.len() || needle.is_empty() {
        return None;
    }
    let first = needle[0];
    let mut i = from;
    while i + needle.len() <= b.len() {
        let rel = b[i..b.len() - needle.len() + 1]
            .iter()
            .position(|&c| c == first)?;
        i += rel;
        if b[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// The end of a block's closing line that starts at `end_at` (`-----END …-----`), or `None`
/// when the closing dashes are not in `b`.
fn close_of(b: &[u8], end_at: usize) -> Option<usize> {
    find_from(b, DASHES, end_at + END.len()).map(|d| d + DASHES.len())
}

/// Whether a line (without its line end) can be inside a private-key block: base64, empty, or
/// a PEM header such as `Proc-Type: 4,ENCRYPTED` or `Version: …`.
fn key_body_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let base64 = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=');
    if line.iter().all(base64) {
        return true;
    }
    const HEADERS: [&[u8]; 6] = [
        b"Proc-Type: ",
        b"DEK-Info: ",
        b"Version: ",
        b"Comment: ",
        b"Hash: ",
        b"Charset: ",
    ];
    HEADERS.iter().any(|h| line.starts_with(h))
}

/// The end of the line that starts at `at` (its line end not included).
fn line_end(b: &[u8], at: usize) -> usize {
    b[at..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| at + p)
}

/// `at` past one line end (`\n` or `\r\n`), if one is there.
fn past_line_end(b: &[u8], at: usize) -> usize {
    if b[at..].starts_with(b"\r\n") {
        at + 2
    } else if b[at..].starts_with(b"\n") {
        at + 1
    } else {
        at
    }
}

/// How a private-key block's body, read line by line from `from`, ends in `b`.
enum BodyEnd {
    /// At the end of its `-----END …-----` line (this position).
    Closed(usize),
    /// Before a line that cannot be part of a key (this position: the end of the last body line,
    /// before its line end): output that was cut off.
    CutOff(usize),
    /// Not in `b`: the text ends inside the block.
    Open,
}

fn key_body_end(b: &[u8], from: usize) -> BodyEnd {
    let mut at = from;
    let mut last_end = from;
    while at < b.len() {
        let end = line_end(b, at);
        let line = &b[at..end];
        if let Some(e) = find_from(line, END, 0)
            && let Some(close) = close_of(line, e)
        {
            return BodyEnd::Closed(at + close);
        }
        if !key_body_line(line) {
            return BodyEnd::CutOff(last_end);
        }
        last_end = end;
        if end == b.len() {
            break;
        }
        at = end + 1;
    }
    BodyEnd::Open
}

/// How much of `b` is the rest of a private-key block that a previous chunk of a stream left
/// open (and masked): the length to drop, and whether the block is still open after it. A closed
/// block's line end goes too, since the mask in the earlier chunk kept the line end before it.
pub(super) fn private_key_block_rest(b: &[u8]) -> (usize, bool) {
    match key_body_end(b, 0) {
        BodyEnd::Closed(close) => (past_line_end(b, close), false),
        BodyEnd::CutOff(end) => (past_line_end(b, end).min(b.len()), false),
        BodyEnd::Open => (b.len(), true),
    }
}

/// Private-key blocks, each from its `-----BEGIN` to the end of its `-----END …-----` line (also
/// when the block is inside a JSON string, on one line with `\n` escapes). A block whose output
/// was cut off ends before the first line that cannot be part of a key. Returns whether `b` ends
/// inside a block: that block is masked to the end of its last line, and the redactor drops the
/// rest of it from the chunks that follow, so a block cut anywhere in a stream becomes one mask.
pub(super) fn private_key_blocks(b: &[u8], out: &mut Vec<Range<usize>>) -> bool {
    let mut from = 0;
    while let Some(start) = find_from(b, BEGIN, from) {
        // The header: up to the next five dashes, on the same line and short.
        let header_from = start + BEGIN.len();
        let header_end = find_from(b, DASHES, header_from);
        let is_key = header_end.is_some_and(|h| {
            let header = &b[header_from..h];
            header.len() <= 64
                && !header.contains(&b'\n')
                && find_from(header, b"PRIVATE KEY", 0).is_some()
        });
        if !is_key {
            from = header_from;
            continue;
        }
        let after_header = header_end.expect("checked") + DASHES.len();
        let header_line_end = line_end(b, after_header);
        let on_header_line = &b[after_header..header_line_end];
        if let Some(close) =
            find_from(on_header_line, END, 0).and_then(|e| close_of(on_header_line, e))
        {
            // The whole block on one line: a JSON string with `\n` escapes.
            out.push(start..after_header + close);
            from = after_header + close;
            continue;
        }
        if on_header_line.iter().any(|c| !c.is_ascii_whitespace()) {
            out.push(start..header_line_end);
            from = header_line_end;
            continue;
        }
        if header_line_end == b.len() {
            out.push(start..header_line_end);
            return true;
        }
        match key_body_end(b, header_line_end + 1) {
            BodyEnd::Closed(close) => {
                out.push(start..close);
                from = close;
            }
            BodyEnd::CutOff(end) => {
                out.push(start..end.max(after_header));
                from = end.max(after_header);
            }
            BodyEnd::Open => {
                let mut end = b.len();
                while end > after_header && matches!(b[end - 1], b'\n' | b'\r') {
                    end -= 1;
                }
                out.push(start..end);
                return true;
            }
        }
    }
    false
}

fn looks_like_token(user: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 8] = [
        b"ghp_",
        b"gho_",
        b"ghs_",
        b"ghu_",
        b"ghr_",
        b"github_pat_",
        b"glpat-",
        b"x-access-token",
    ];
    PREFIXES.iter().any(|p| user.starts_with(p))
        || (user.len() >= 20
            && user
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'%')))
}

fn url_credentials(b: &[u8], out: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(pos) = find_from(b, b"://", from) {
        let start = pos + 3;
        let end = b[start..]
            .iter()
            .position(|&c| {
                c.is_ascii_whitespace()
                    || matches!(c, b'/' | b'"' | b'\'' | b'?' | b'#' | b'<' | b'>')
            })
            .map_or(b.len(), |p| start + p);
        let authority = &b[start..end];
        if let Some(at) = authority.iter().rposition(|&c| c == b'@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.iter().position(|&c| c == b':') {
                if colon + 1 < at {
                    out.push(start + colon + 1..start + at);
                }
            } else if looks_like_token(userinfo) {
                out.push(start..start + at);
            }
        }
        from = end.max(start);
    }
}

fn base64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn json_web_tokens(b: &[u8], out: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(i) = find_from(b, b"eyJ", from) {
        from = i + 1;
        if !starts_word(b, i) || (i > 0 && matches!(b[i - 1], b'_' | b'-')) {
            continue;
        }
        let part = |s: usize| s + b[s..].iter().take_while(|&&c| base64url(c)).count();
        let header_end = part(i);
        if header_end - i < 10 || b.get(header_end) != Some(&b'.') {
            continue;
        }
        let payload = header_end + 1;
        if !b[payload..].starts_with(b"eyJ") {
            continue;
        }
        let payload_end = part(payload);
        if payload_end - payload < 10 || b.get(payload_end) != Some(&b'.') {
            continue;
        }
        // The signature may be empty (`alg: none`).
        let end = part(payload_end + 1);
        out.push(i..end);
        from = end;
    }
}

fn azure_client_secrets(b: &[u8], out: &mut Vec<Range<usize>>) {
    let chars = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'~' | b'.' | b'-');
    let mut from = 0;
    while let Some(q) = find_from(b, b"Q~", from) {
        from = q + 2;
        if q < 4 || !b[q - 1].is_ascii_digit() || !b[q - 4..q - 1].iter().all(|&c| chars(c)) {
            continue;
        }
        let start = q - 4;
        if start > 0 && chars(b[start - 1]) {
            continue;
        }
        let tail = b[q + 2..].iter().take_while(|&&c| chars(c)).count();
        if tail < 31 {
            continue;
        }
        let end = q + 2 + tail;
        out.push(start..end);
        from = end;
    }
}

/// Names whose values are secret: the name, lower-cased and without `_`, `-` and `.`, ends with
/// one of these.
const SECRET_NAME_ENDINGS: [&[u8]; 10] = [
    b"password",
    b"passwd",
    b"passphrase",
    b"secret",
    b"secretkey",
    b"token",
    b"apikey",
    b"accesskey",
    b"accountkey",
    b"privatekey",
];

fn key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// Whether `key`, lower-cased and without `_`, `-` and `.`, ends with `ending` (lower case), or
/// is exactly `ending` when `whole`. Compares from the end, without allocating: this runs at
/// every `=` and `:` of every line.
fn name_ends_with(key: &[u8], ending: &[u8], whole: bool) -> bool {
    let mut k = key
        .iter()
        .rev()
        .filter(|c| !matches!(c, b'_' | b'-' | b'.'))
        .map(u8::to_ascii_lowercase);
    ending.iter().rev().all(|&e| k.next() == Some(e)) && (!whole || k.next().is_none())
}

fn is_secret_name(key: &[u8]) -> bool {
    key.len() <= 80
        && (name_ends_with(key, b"sig", true)
            || SECRET_NAME_ENDINGS
                .iter()
                .any(|e| name_ends_with(key, e, false)))
}

fn is_authorization_name(key: &[u8]) -> bool {
    name_ends_with(key, b"authorization", true) || name_ends_with(key, b"proxyauthorization", true)
}

/// The name before the separator at `sep` (a run of name bytes), skipping back over spaces,
/// a closing quote and terminal control sequences (a coloured name).
fn name_before(b: &[u8], sep: usize) -> &[u8] {
    let mut k = sep;
    loop {
        while k > 0 && matches!(b[k - 1], b' ' | b'\t') {
            k -= 1;
        }
        match escape_ending_at(b, k) {
            Some(start) => k = start,
            None => break,
        }
    }
    if k > 0 && matches!(b[k - 1], b'"' | b'\'') {
        k -= 1;
        if k > 0 && b[k - 1] == b'\\' {
            k -= 1;
        }
    }
    while let Some(start) = escape_ending_at(b, k) {
        k = start;
    }
    let end = k;
    while k > 0 && key_byte(b[k - 1]) {
        k -= 1;
    }
    &b[k..end]
}

/// The value that starts at `at` (after the separator): quoted (`"…"`, `'…'`, `\"…\"`) up to its
/// closing quote on the same line, or unquoted up to a space or punctuation that ends values —
/// or, with `scheme_and_token` (an `Authorization` header), its first two words.
fn value_at(b: &[u8], at: usize, scheme_and_token: bool) -> Option<Range<usize>> {
    let mut s = at;
    loop {
        while s < b.len() && matches!(b[s], b' ' | b'\t') {
            s += 1;
        }
        let e = after_escapes(b, s);
        if e == s {
            break;
        }
        s = e;
    }
    let rest = &b[s..];
    let line_end = rest
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .unwrap_or(rest.len());
    let range = if rest.starts_with(b"\\\"") {
        let body = s + 2;
        let close = find_from(&b[..s + line_end], b"\\\"", body).unwrap_or(s + line_end);
        body..close
    } else if matches!(rest.first(), Some(b'"' | b'\'')) {
        let q = rest[0];
        let body = s + 1;
        let mut e = body;
        while e < s + line_end && b[e] != q {
            e += if b[e] == b'\\' && q == b'"' { 2 } else { 1 };
        }
        body..e.min(s + line_end)
    } else if scheme_and_token {
        // `Basic dXNlcjpwYXNz`, `Bearer abc`, `token ghp_…`: the scheme and the word after it.
        // A value that starts with a mask was masked before and stays as it is.
        let word = |from: usize| {
            from + b[from..s + line_end]
                .iter()
                .take_while(|&&c| !c.is_ascii_whitespace() && !matches!(c, 0x1b | b'"' | b'\''))
                .count()
        };
        let scheme_end = word(s);
        if b[s..scheme_end] == *super::MASK.as_bytes() {
            return None;
        }
        let gap = b[scheme_end..s + line_end]
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        let token_end = word(scheme_end + gap);
        s..if token_end > scheme_end + gap {
            token_end
        } else {
            scheme_end
        }
    } else {
        let n = rest
            .iter()
            .position(|&c| {
                c.is_ascii_whitespace()
                    || matches!(
                        c,
                        0x1b | b'"'
                            | b'\''
                            | b'`'
                            | b','
                            | b';'
                            | b'&'
                            | b'<'
                            | b'>'
                            | b'('
                            | b')'
                            | b'{'
                            | b'}'
                            | b'['
                            | b']'
                    )
            })
            .unwrap_or(rest.len());
        s..s + n
    };
    let v = &b[range.clone()];
    let reference = rest.starts_with(b"${")
        || (v.first() == Some(&b'$') && v.len() > 1 && v[1..].iter().all(|&c| alnum_under(c)));
    if v.is_empty() || v == super::MASK.as_bytes() || reference {
        return None;
    }
    Some(range)
}

/// Each separator in `b` (`=`, `:`, `:=`, `=>`, or the space after a `--flag`), as the position of
/// the name's end and of the value's start.
fn assignments(b: &[u8], mut each: impl FnMut(&[u8], usize)) {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'=' | b':' => {
                let next = b.get(i + 1).copied();
                let doubled = next == Some(b[i]);
                if doubled {
                    i += 2;
                    continue;
                }
                let value_at = match (b[i], next) {
                    (b'=', Some(b'>')) | (b':', Some(b'=')) => i + 2,
                    _ => i + 1,
                };
                each(name_before(b, i), value_at);
                i = value_at;
            }
            b'-' if b.get(i + 1) == Some(&b'-') && (i == 0 || b[i - 1].is_ascii_whitespace()) => {
                // `--password VALUE`: the flag's name, then one space.
                let name_end = i + 2 + b[i + 2..].iter().take_while(|&&c| key_byte(c)).count();
                if b.get(name_end) == Some(&b' ') {
                    each(&b[i..name_end], name_end + 1);
                }
                i = name_end.max(i + 2);
            }
            _ => i += 1,
        }
    }
}

fn secret_named_values(b: &[u8], out: &mut Vec<Range<usize>>) {
    let mut last_end = 0;
    assignments(b, |name, at| {
        if at < last_end || !is_secret_name(name) || is_authorization_name(name) {
            return;
        }
        if let Some(r) = value_at(b, at, false) {
            last_end = r.end;
            out.push(r);
        }
    });
}

fn authorization_values(b: &[u8], out: &mut Vec<Range<usize>>) {
    let mut last_end = 0;
    assignments(b, |name, at| {
        if at < last_end || !is_authorization_name(name) {
            return;
        }
        if let Some(r) = value_at(b, at, true) {
            last_end = r.end;
            out.push(r);
        }
    });
}

fn bearer_tokens(b: &[u8], out: &mut Vec<Range<usize>>) {
    let token = |c: u8| {
        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
    };
    let mut i = 0;
    while i + 6 < b.len() {
        if !(b[i] == b'b' || b[i] == b'B')
            || !b[i..i + 6].eq_ignore_ascii_case(b"bearer")
            || !starts_word(b, i)
        {
            i += 1;
            continue;
        }
        let mut s = i + 6;
        let spaces = b[s..]
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        s += spaces;
        let n = b[s..].iter().take_while(|&&c| token(c)).count();
        let t = &b[s..s + n];
        let random = t.iter().any(u8::is_ascii_digit)
            || (t.iter().any(u8::is_ascii_uppercase) && t.iter().any(u8::is_ascii_lowercase))
            || t.iter().any(|c| !c.is_ascii_alphanumeric());
        if spaces > 0 && n >= 8 && random {
            out.push(s..s + n);
            i = s + n;
        } else {
            i += 6;
        }
    }
}
