//! The shape of a plan file, written as data, and a walk of a YAML tree against it.
//!
//! serde stops at the first problem it meets and cannot say where a semantic problem is. This walk
//! runs first, over the spanned tree of `super::tree`, and collects *every* unknown key, missing
//! key, wrong type, unknown enum value and bad duration, each with its line, column and key path.
//! Only when it finds nothing does the loader deserialize the typed [`super::Plan`] (which keeps
//! `deny_unknown_fields`, so the two cannot silently drift apart: a test walks every example plan
//! through both). It also records where every key path is, so that semantic checks made later on
//! the typed plan can point at the offending value.
//!
//! The schema below must follow `model.rs`: a key added there must be added here too.

use std::collections::BTreeMap;

use super::diag::Diagnostic;
use super::duration::PlanDuration;
use super::size::ByteSize;
use super::tree::{Node, Pos, Value};
use crate::backend::{BackendName, BackendRegistry};

/// What a value in the plan must look like. Backends describe their options block with it
/// ([`crate::backend::BackendDescriptor::options_shape`]), so their keys are checked with the
/// same messages as the rest of the plan.
#[derive(Debug)]
#[non_exhaustive]
pub enum Shape {
    /// A string; numbers are accepted too (`version: 1.2` means the text `1.2`).
    Str,
    /// `true` or `false`.
    Bool,
    /// A whole number from `min` to `max`.
    UInt {
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A [`PlanDuration`] from `min` to `max`: seconds as a number, or text like `90s`, `1h30m`.
    Duration {
        /// The shortest duration allowed.
        min: PlanDuration,
        /// The longest duration allowed (at most [`PlanDuration::MAX`]).
        max: PlanDuration,
    },
    /// A [`ByteSize`] of at least `min` bytes: bytes as a number, or text like `64MiB`.
    Size {
        /// The smallest size allowed.
        min: u64,
    },
    /// One of a fixed set of words; `what` names the set in messages ("backend").
    Enum {
        /// What the set is called in messages.
        what: &'static str,
        /// The words.
        values: &'static [&'static str],
    },
    /// A list of values of one shape.
    List(&'static Shape),
    /// A mapping from names the user chooses (env variables, roles) to values of one shape.
    Map(&'static Shape),
    /// A mapping with a fixed set of keys.
    Struct(&'static [Field]),
    /// A mapping with exactly one key that says which variant this is (`{site: {dir: …}}`).
    OneOf {
        /// What the value is called in messages.
        what: &'static str,
        /// Each key and the shape of its value.
        variants: &'static [(&'static str, &'static Shape)],
    },
    /// Anything; checked later by whoever uses it (parameters of custom step types).
    Any,
    /// The name of a backend this build has (`local`, `static`, or a registered one).
    Backend,
    /// A machine: a mapping with these keys, plus the options block of any registered backend
    /// under the backend's name.
    Machine(&'static [Field]),
}

/// One key of a [`Shape::Struct`]; made with [`req`], [`opt`] or [`dflt`].
#[derive(Debug)]
pub struct Field {
    key: &'static str,
    shape: &'static Shape,
    /// The key must be present.
    required: bool,
    /// An empty value (`key:` or `key: ~`) means "not set" (an `Option` in the model).
    nullable: bool,
}

impl Field {
    /// The key.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// Whether the key must be present.
    pub fn is_required(&self) -> bool {
        self.required
    }
}

/// A key that must be present.
pub const fn req(key: &'static str, shape: &'static Shape) -> Field {
    Field {
        key,
        shape,
        required: true,
        nullable: false,
    }
}

/// An optional key that may also be left empty (an `Option` in the model).
pub const fn opt(key: &'static str, shape: &'static Shape) -> Field {
    Field {
        key,
        shape,
        required: false,
        nullable: true,
    }
}

/// An optional key with a default; left empty, it is an error (serde would reject it).
pub const fn dflt(key: &'static str, shape: &'static Shape) -> Field {
    Field {
        key,
        shape,
        required: false,
        nullable: false,
    }
}

/// A string.
pub const STR: Shape = Shape::Str;
/// `true` or `false`.
pub const BOOL: Shape = Shape::Bool;
/// A whole number that fits 16 bits.
pub const U16: Shape = Shape::UInt {
    min: 0,
    max: u16::MAX as u64,
};
/// A whole number that fits 32 bits.
pub const U32: Shape = Shape::UInt {
    min: 0,
    max: u32::MAX as u64,
};
/// A whole number that fits 64 bits.
pub const U64: Shape = Shape::UInt {
    min: 0,
    max: u64::MAX,
};
/// Any duration a plan may hold, from 0 to [`PlanDuration::MAX`].
pub const DURATION: Shape = Shape::Duration {
    min: PlanDuration(std::time::Duration::ZERO),
    max: PlanDuration::MAX,
};

// The ranges of the plan's own numbers, as documented in docs/plan.md. The loader checks plans
// built in code against the same shapes (`values.rs`).
/// `concurrency`.
pub(crate) const CONCURRENCY: Shape = Shape::UInt {
    min: 1,
    max: super::values::MAX_CONCURRENCY as u64,
};
/// `machines[].count`.
pub(crate) const COUNT: Shape = Shape::UInt {
    min: 1,
    max: super::values::MAX_MACHINES,
};
/// `retries` of steps and `defaults`.
pub(crate) const RETRIES: Shape = Shape::UInt { min: 0, max: 100 };
/// `inventory[].port`.
pub(crate) const PORT: Shape = Shape::UInt {
    min: 1,
    max: u16::MAX as u64,
};
/// `inventory[].min-free-mib`: up to 1 PiB, which a shell's `test -ge` still compares.
pub(crate) const MIB: Shape = Shape::UInt {
    min: 0,
    max: 1 << 30,
};
/// `timeout` of steps and `defaults`, and `budget`: a run or step with no time at all cannot do
/// anything, and 30 days is longer than any test run.
pub(crate) const TIMEOUT: Shape = Shape::Duration {
    min: PlanDuration(std::time::Duration::from_secs(1)),
    max: PlanDuration(std::time::Duration::from_secs(30 * 86_400)),
};
/// The most of a step's output its log and recording keep.
const LOG_LIMIT: Shape = Shape::Size {
    min: crate::recorder::MIN_LOG_LIMIT,
};
/// A list of strings.
pub const STR_LIST: Shape = Shape::List(&STR);
const ENV: Shape = Shape::Map(&STR);
const ANY_MAP: Shape = Shape::Map(&Shape::Any);
const BACKEND: Shape = Shape::Backend;
const BACKENDS: Shape = Shape::List(&BACKEND);
const CLEANUP_POLICY: Shape = Shape::Enum {
    what: "cleanup policy",
    values: &["always", "on-success", "never"],
};

const DEFAULTS: Shape = Shape::Struct(&[
    opt("timeout", &TIMEOUT),
    opt("retries", &RETRIES),
    dflt("env", &ENV),
    opt("workdir", &STR),
    opt("log-limit", &LOG_LIMIT),
]);

const LOCAL_MACHINE: Shape = Shape::Struct(&[opt("root", &STR)]);
const STATIC_MACHINE: Shape = Shape::Struct(&[req("hosts", &STR_LIST)]);

const MACHINE: Shape = Shape::Machine(&[
    req("name", &STR),
    opt("role", &STR),
    dflt("count", &COUNT),
    opt("backend", &BACKEND),
    dflt("fallback", &BACKENDS),
    opt("local", &LOCAL_MACHINE),
    opt("static", &STATIC_MACHINE),
]);

const INVENTORY_HOST: Shape = Shape::Struct(&[
    req("name", &STR),
    opt("host", &STR),
    opt("port", &PORT),
    opt("user", &STR),
    opt("identity-file", &STR),
    opt("passphrase-env", &STR),
    dflt("proxy-jump", &STR_LIST),
    opt("ssh-config", &STR),
    dflt("require-commands", &STR_LIST),
    opt("min-free-mib", &MIB),
    opt("repair", &STR),
]);

const FILE_UPLOAD: Shape = Shape::Struct(&[
    req("src", &STR),
    req("dest", &STR),
    dflt("machines", &STR_LIST),
    opt("mode", &STR),
]);

const STEP: Shape = Shape::Struct(&[
    req("name", &STR),
    opt("script", &STR),
    opt("command", &STR),
    dflt("reboot", &BOOL),
    opt("uses", &STR),
    dflt("with", &ANY_MAP),
    dflt("machines", &STR_LIST),
    dflt("env", &ENV),
    opt("workdir", &STR),
    opt("timeout", &TIMEOUT),
    dflt("depends-on", &STR_LIST),
    dflt("after", &STR_LIST),
    opt("retries", &RETRIES),
    dflt("expect-reboot", &BOOL),
    dflt("sudo", &BOOL),
    dflt("pty", &BOOL),
    dflt("detached", &BOOL),
    opt("log-limit", &LOG_LIMIT),
]);

const ARTIFACT: Shape = Shape::Struct(&[
    req("paths", &STR_LIST),
    dflt("machines", &STR_LIST),
    dflt("redact", &BOOL),
]);

const PUBLISH_TARGET: Shape = Shape::OneOf {
    what: "publish target",
    variants: &[
        ("site", &Shape::Struct(&[req("dir", &STR)])),
        ("junit", &Shape::Struct(&[req("path", &STR)])),
        ("json", &Shape::Struct(&[req("path", &STR)])),
        ("markdown", &Shape::Struct(&[req("path", &STR)])),
        (
            "git",
            &Shape::Struct(&[req("remote", &STR), opt("branch", &STR)]),
        ),
    ],
};

const CLEANUP: Shape = Shape::Struct(&[
    dflt("default", &CLEANUP_POLICY),
    dflt("roles", &Shape::Map(&CLEANUP_POLICY)),
]);

/// The whole plan file.
pub(crate) const PLAN: Shape = Shape::Struct(&[
    req("name", &STR),
    opt("description", &STR),
    opt("backend", &BACKEND),
    opt("concurrency", &CONCURRENCY),
    opt("budget", &TIMEOUT),
    dflt("defaults", &DEFAULTS),
    dflt("secrets", &STR_LIST),
    dflt("inventory", &Shape::List(&INVENTORY_HOST)),
    req("machines", &Shape::List(&MACHINE)),
    dflt("files", &Shape::List(&FILE_UPLOAD)),
    req("steps", &Shape::List(&STEP)),
    dflt("artifacts", &Shape::List(&ARTIFACT)),
    dflt("publish", &Shape::List(&PUBLISH_TARGET)),
    dflt("cleanup", &CLEANUP),
]);

impl Shape {
    /// What a value of this shape looks like, for "expected …" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Shape::Str => "a string".into(),
            Shape::Bool => "`true` or `false`".into(),
            Shape::UInt { min, max } if *max == u64::MAX => {
                format!("a whole number ({min} or more)")
            }
            Shape::UInt { min, max } => format!("a whole number from {min} to {max}"),
            Shape::Duration { .. } => "a duration such as `90`, `90s`, `2m` or `1h30m`".into(),
            Shape::Size { min } => format!(
                "a size of at least {} such as `65536`, `512KiB` or `64MiB`",
                ByteSize(*min)
            ),
            Shape::Enum { what, values } => format!("a {what} ({})", one_of(values)),
            Shape::List(item) => match item {
                Shape::Str => "a list of strings".into(),
                _ => "a list".into(),
            },
            Shape::Map(_) => "a mapping of names to values".into(),
            Shape::Struct(fields) => {
                let keys: Vec<&str> = fields.iter().map(|f| f.key).take(3).collect();
                format!("a mapping with keys such as {}", backticked(&keys))
            }
            Shape::OneOf { what, variants } => {
                let keys: Vec<&str> = variants.iter().map(|v| v.0).collect();
                format!(
                    "a {what}: a mapping with one key, one of {}",
                    backticked(&keys)
                )
            }
            Shape::Any => "any value".into(),
            Shape::Backend => "a backend name such as `local` or `static`".into(),
            Shape::Machine(_) => "a mapping with keys such as `name`, `backend`, `count`".into(),
        }
    }
}

/// The message for a duration outside the range of its key.
pub(crate) fn out_of_range(d: PlanDuration, min: PlanDuration, max: PlanDuration) -> String {
    format!("{d} is out of range: expected a duration from {min} to {max}")
}

fn backticked(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_of(words: &[&str]) -> String {
    format!("one of {}", backticked(words))
}

/// The nearest of `candidates` to `word`, if it is near enough to be a likely typo; backends
/// use it for "did you mean" hints in their own checks, so every hint reads alike.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // `depends_on` for `depends-on` is the most common slip; compare without the separator too.
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let w = norm(word);
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&w, &norm(c)), c))
        .filter(|(score, c)| *score >= 0.8 || is_abbreviation(&w, &norm(c)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `cnt` for `count`, `deps` for `depends-on`: same first letter, and every letter of `short`
/// appears in `long` in order.
fn is_abbreviation(short: &str, long: &str) -> bool {
    if short.len() < 3 || short.len() >= long.len() || short.get(..1) != long.get(..1) {
        return false;
    }
    let mut rest = long.chars();
    short.chars().all(|c| rest.any(|l| l == c))
}

/// Where each key path of the plan is in the file: the position of its value, or for entries of a
/// free-form mapping (`env`, `cleanup.roles`) of its key.
pub(crate) type Locations = BTreeMap<String, Pos>;

/// The text of a mapping key, whatever scalar type YAML gave it.
fn key_text(key: &Node) -> Option<String> {
    match &key.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("~".into()),
        Value::Seq(_) | Value::Map(_) => None,
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks a parsed plan against [`PLAN`], with the backends of `backends`; returns every
/// problem, and fills `locations`.
pub(crate) fn check(
    root: &Node,
    locations: &mut Locations,
    backends: &BackendRegistry,
) -> Vec<Diagnostic> {
    let mut walk = Walk {
        diags: Vec::new(),
        locations,
        backends,
    };
    match &root.value {
        Value::Map(_) => walk.node(root, &PLAN, ""),
        Value::Null => walk.push(
            Some(Pos { line: 1, column: 1 }),
            "",
            "the plan is empty".into(),
            Some("a plan needs at least `name`, `machines` and `steps`".into()),
        ),
        other => walk.push(
            root.pos,
            "",
            format!("a plan must be a mapping with keys such as `name`, `machines` and `steps`, found {}", other.describe()),
            None,
        ),
    }
    walk.diags
}

struct Walk<'a> {
    diags: Vec<Diagnostic>,
    locations: &'a mut Locations,
    backends: &'a BackendRegistry,
}

impl Walk<'_> {
    fn push(&mut self, pos: Option<Pos>, path: &str, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            key_path: path.to_owned(),
            message,
            hint,
        });
    }

    fn mismatch(&mut self, node: &Node, shape: &Shape, path: &str) {
        let hint = match (shape, &node.value) {
            (Shape::List(_), Value::Str(s)) => Some(format!(
                "write a list, e.g. `[{s}]`, or one `- {s}` line per item"
            )),
            (Shape::List(_), Value::Map(_)) => Some("start each item of the list with `- `".into()),
            (Shape::Str, Value::Bool(b)) => {
                Some(format!("quote it if you mean the text: `\"{b}\"`"))
            }
            _ => None,
        };
        let message = format!(
            "expected {}, found {}",
            shape.describe(),
            node.value.describe()
        );
        self.push(node.pos, path, message, hint);
    }

    fn node(&mut self, node: &Node, shape: &Shape, path: &str) {
        if let Some(pos) = node.pos {
            self.locations.entry(path.to_owned()).or_insert(pos);
        }
        match (shape, &node.value) {
            (Shape::Any, _) => {}
            (Shape::Str, Value::Str(_) | Value::Int(_) | Value::Float(_)) => {}
            (Shape::Bool, Value::Bool(_)) => {}
            (Shape::UInt { min, max }, Value::Int(i)) => {
                if *i < i128::from(*min) || *i > i128::from(*max) {
                    self.push(
                        node.pos,
                        path,
                        format!("{i} is out of range: expected {}", shape.describe()),
                        None,
                    );
                }
            }
            (Shape::Duration { min, max }, Value::Int(_) | Value::Float(_) | Value::Str(_)) => {
                let parsed = match &node.value {
                    Value::Int(i) if *i >= 0 => PlanDuration::parse(&i.to_string()),
                    Value::Float(f) if *f >= 0.0 => PlanDuration::from_secs_f64(*f),
                    Value::Str(s) => PlanDuration::parse(s),
                    _ => Err(format!(
                        "{} is not a duration: it cannot be negative",
                        node.value.describe()
                    )),
                };
                match parsed {
                    Err(e) => self.push(node.pos, path, e, None),
                    Ok(d) if d < *min || d > *max => {
                        self.push(node.pos, path, out_of_range(d, *min, *max), None)
                    }
                    Ok(_) => {}
                }
            }
            (Shape::Size { min }, Value::Int(_) | Value::Str(_)) => {
                let size = match &node.value {
                    Value::Int(i) => u64::try_from(*i)
                        .map(ByteSize)
                        .map_err(|_| format!("{i} is not a size: it is negative")),
                    Value::Str(s) => ByteSize::parse(s),
                    _ => unreachable!("matched above"),
                };
                match size {
                    Ok(b) if b.get() < *min => self.push(
                        node.pos,
                        path,
                        format!("{b} is too small: expected {}", shape.describe()),
                        None,
                    ),
                    Ok(_) => {}
                    Err(e) => self.push(node.pos, path, e, None),
                }
            }
            (Shape::Enum { what, values }, Value::Str(s)) => {
                if !values.contains(&s.as_str()) {
                    let hint = match nearest(s, values.iter().copied()) {
                        Some(n) => format!("did you mean `{n}`?"),
                        None => format!("expected {}", one_of(values)),
                    };
                    self.push(node.pos, path, format!("unknown {what} `{s}`"), Some(hint));
                }
            }
            (Shape::List(item), Value::Seq(items)) => {
                for (i, n) in items.iter().enumerate() {
                    self.node(n, item, &format!("{path}[{i}]"));
                }
            }
            (Shape::Map(value_shape), Value::Map(entries)) => {
                let mut seen = BTreeMap::new();
                for (k, v) in entries {
                    let Some(key) = self.key(k, path) else {
                        continue;
                    };
                    let p = child(path, &key);
                    if let Some(pos) = k.pos {
                        self.locations.entry(p.clone()).or_insert(pos);
                    }
                    self.duplicate(&mut seen, &key, k, &p);
                    self.node(v, value_shape, &p);
                }
            }
            (Shape::Struct(fields), Value::Map(entries)) => {
                self.fields(node, fields, entries, path, false)
            }
            (Shape::Machine(fields), Value::Map(entries)) => {
                self.fields(node, fields, entries, path, true)
            }
            (Shape::Backend, Value::Str(s)) => {
                self.backend_name(node.pos, path, s);
            }
            (Shape::OneOf { what, variants }, Value::Map(entries)) => {
                let keys: Vec<&str> = variants.iter().map(|v| v.0).collect();
                if entries.len() != 1 {
                    self.push(
                        node.pos,
                        path,
                        format!("a {what} has exactly one key, found {}", entries.len()),
                        Some(format!("use one of {}", backticked(&keys))),
                    );
                }
                for (k, v) in entries {
                    let Some(key) = self.key(k, path) else {
                        continue;
                    };
                    let p = child(path, &key);
                    match variants.iter().find(|(name, _)| *name == key) {
                        Some((_, variant)) => self.node(v, variant, &p),
                        None => {
                            let hint = match nearest(&key, keys.iter().copied()) {
                                Some(n) => format!("did you mean `{n}`?"),
                                None => format!("expected {}", one_of(&keys)),
                            };
                            self.push(k.pos, &p, format!("unknown {what} `{key}`"), Some(hint));
                        }
                    }
                }
            }
            _ => self.mismatch(node, shape, path),
        }
    }

    /// The text of a key, or a diagnostic when the key is a list or mapping.
    fn key(&mut self, k: &Node, path: &str) -> Option<String> {
        let text = key_text(k);
        if text.is_none() {
            self.push(
                k.pos,
                path,
                format!("a key must be a plain word, found {}", k.value.describe()),
                None,
            );
        }
        text
    }

    fn duplicate(
        &mut self,
        seen: &mut BTreeMap<String, Option<Pos>>,
        key: &str,
        k: &Node,
        path: &str,
    ) {
        if let Some(first) = seen.insert(key.to_owned(), k.pos) {
            let at = first
                .map(|p| format!(" (first at line {})", p.line))
                .unwrap_or_default();
            self.push(
                k.pos,
                path,
                format!("key `{key}` appears twice{at}"),
                Some("remove one of them".into()),
            );
        }
    }

    /// Whether `name` is a backend of this build; if not, says so (with the cargo feature that
    /// would add it, when the build knows one).
    fn backend_name(&mut self, pos: Option<Pos>, path: &str, name: &str) -> bool {
        let backend = BackendName::intern(name);
        if self.backends.get(backend).is_some() {
            return true;
        }
        if let Some(feature) = self.backends.absent_feature(backend) {
            self.push(
                pos,
                path,
                format!("backend `{name}` is not in this build of qa-run"),
                Some(format!(
                    "rebuild with the cargo feature `{feature}`: `cargo build --release -p qa-cli --features {feature}`"
                )),
            );
            return false;
        }
        let names: Vec<&str> = self.backends.names().map(BackendName::as_str).collect();
        let hint = match nearest(name, names.iter().copied()) {
            Some(n) => format!("did you mean `{n}`?"),
            None => format!("expected {}", one_of(&names)),
        };
        self.push(pos, path, format!("unknown backend `{name}`"), Some(hint));
        false
    }

    fn fields(
        &mut self,
        node: &Node,
        fields: &[Field],
        entries: &[(Node, Node)],
        path: &str,
        backend_options: bool,
    ) {
        let mut seen = BTreeMap::new();
        // Keys a typo was taken for: "missing key" for them would say the same thing twice.
        let mut suggested = Vec::new();
        for (k, v) in entries {
            let Some(key) = self.key(k, path) else {
                continue;
            };
            let p = child(path, &key);
            self.duplicate(&mut seen, &key, k, &p);
            match fields.iter().find(|f| f.key == key) {
                Some(field) => {
                    if matches!(v.value, Value::Null) {
                        if let Some(pos) = v.pos {
                            self.locations.entry(p.clone()).or_insert(pos);
                        }
                        if !field.nullable {
                            let message =
                                format!("`{key}` is empty: expected {}", field.shape.describe());
                            let hint = Some("give it a value or remove the key".to_owned());
                            self.push(k.pos.or(v.pos), &p, message, hint);
                        }
                        continue;
                    }
                    self.node(v, field.shape, &p);
                }
                None if backend_options && self.is_backend_key(&key) => {
                    self.backend_options(k, v, &key, &p);
                }
                None => {
                    let hint = match nearest(&key, fields.iter().map(|f| f.key)) {
                        Some(n) => {
                            suggested.push(n);
                            format!("did you mean `{n}`?")
                        }
                        None => {
                            let keys: Vec<&str> = fields.iter().map(|f| f.key).collect();
                            format!("expected one of {}", backticked(&keys))
                        }
                    };
                    self.push(k.pos, &p, format!("unknown key `{key}`"), Some(hint));
                }
            }
        }
        for field in fields.iter().filter(|f| f.required) {
            let present = entries
                .iter()
                .any(|(k, _)| key_text(k).as_deref() == Some(field.key));
            if !present && !suggested.contains(&field.key) {
                self.push(node.pos, path, format!("missing key `{}`", field.key), None);
            }
        }
    }
}

impl Walk<'_> {
    /// A key of a machine that names a backend, registered or absent.
    fn is_backend_key(&self, key: &str) -> bool {
        let name = BackendName::intern(key);
        self.backends.get(name).is_some() || self.backends.absent_feature(name).is_some()
    }

    /// The options block of a backend in a machine.
    fn backend_options(&mut self, k: &Node, v: &Node, key: &str, path: &str) {
        if !self.backend_name(k.pos, path, key) {
            return;
        }
        let descriptor = self
            .backends
            .get(BackendName::intern(key))
            .map(|b| b.descriptor().clone());
        match descriptor.as_ref().and_then(|d| d.options_shape()) {
            Some(shape) => self.node(v, shape, path),
            None => self.push(
                k.pos,
                path,
                format!("backend `{key}` takes no options"),
                Some("remove this block".into()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tree;

    fn problems(src: &str) -> Vec<String> {
        let root = tree::parse(src).unwrap();
        check(&root, &mut Locations::new(), &BackendRegistry::new())
            .into_iter()
            .map(|d| {
                format!(
                    "{}:{} {}: {}{}",
                    d.line.unwrap_or(0),
                    d.column.unwrap_or(0),
                    d.key_path,
                    d.message,
                    d.hint.map(|h| format!(" ({h})")).unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn a_clean_plan_has_no_problems() {
        let src = "name: x\nmachines:\n  - name: a\n    backend: local\nsteps:\n  - name: s\n    command: true\n    timeout: 5m\n";
        // `command: true` is a boolean to YAML: reported, with a hint to quote it.
        let p = problems(src);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("steps[0].command: expected a string, found the boolean `true`"),
            "{p:?}"
        );
        let src = "name: x\nmachines:\n  - name: a\nsteps:\n  - name: s\n    command: \"true\"\n    timeout: 5m\n";
        assert_eq!(problems(src), Vec::<String>::new());
    }

    #[test]
    fn typo_of_a_key_names_the_nearest_one() {
        let src = "name: x\nmachines:\n  - name: a\nsteps:\n  - name: s\n    command: c\n    depends_on: [t]\n";
        assert_eq!(
            problems(src),
            ["7:5 steps[0].depends_on: unknown key `depends_on` (did you mean `depends-on`?)"]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let src = "nme: x\nmachines: a\nsteps:\n  - name: s\n    timeout: 10 parsecs\n    retries: -1\nbackend: statik\n";
        let p = problems(src);
        assert_eq!(p.len(), 5, "{p:#?}"); // no "missing key `name`": the typo hint says it
        assert!(
            p[0].starts_with("1:1 nme: unknown key `nme` (did you mean `name`?)"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("2:11 machines: expected a list, found the string `a`"),
            "{p:#?}"
        );
        assert!(
            p[2].contains("5:14 steps[0].timeout: `10 parsecs` is not a duration"),
            "{p:#?}"
        );
        assert!(
            p[3].contains("6:14 steps[0].retries: -1 is out of range"),
            "{p:#?}"
        );
        assert!(
            p[4].contains("7:10 backend: unknown backend `statik` (did you mean `static`?)"),
            "{p:#?}"
        );
    }

    #[test]
    fn publish_targets_have_one_key() {
        let src = "name: x\nmachines: [{name: a}]\nsteps: [{name: s, command: c}]\npublish:\n  - sit: {dir: out}\n  - junit: {path: j.xml}\n    json: {path: r.json}\n";
        let p = problems(src);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].contains("publish[0].sit: unknown publish target `sit` (did you mean `site`?)"),
            "{p:#?}"
        );
        assert!(
            p[1].contains("publish[1]: a publish target has exactly one key, found 2"),
            "{p:#?}"
        );
    }

    #[test]
    fn the_documentation_names_every_key() {
        fn keys(shape: &Shape, out: &mut Vec<&'static str>) {
            match shape {
                Shape::List(s) | Shape::Map(s) => keys(s, out),
                Shape::Struct(fields) | Shape::Machine(fields) => fields.iter().for_each(|f| {
                    out.push(f.key);
                    keys(f.shape, out);
                }),
                Shape::OneOf { variants, .. } => variants.iter().for_each(|(k, s)| {
                    out.push(k);
                    keys(s, out);
                }),
                Shape::Enum { values, .. } => out.extend(values.iter().copied()),
                _ => {}
            }
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plan.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let mut all = Vec::new();
        keys(&PLAN, &mut all);
        let missing: Vec<_> = all
            .into_iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/plan.md does not mention {missing:?}"
        );
    }

    #[test]
    fn locations_are_recorded_for_semantic_checks() {
        let src = "name: x\nmachines: [{name: a}]\nsteps:\n  - name: s\n    command: c\n    depends-on: [t, u]\ncleanup:\n  roles:\n    web: never\n";
        let mut locs = Locations::new();
        assert!(
            check(
                &tree::parse(src).unwrap(),
                &mut locs,
                &BackendRegistry::new()
            )
            .is_empty()
        );
        assert_eq!(
            locs["steps[0].depends-on[1]"],
            Pos {
                line: 6,
                column: 21
            }
        );
        assert_eq!(locs["cleanup.roles.web"], Pos { line: 9, column: 5 });
        assert_eq!(locs["steps[0]"], Pos { line: 4, column: 5 });
    }
}
