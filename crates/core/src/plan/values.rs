//! What single values of a plan may be: the range of every number, the characters of names,
//! environment variable names, and paths that must stay where the plan says.
//!
//! Each of these would otherwise be found only once machines exist (a local sandbox that cannot
//! be named `..`, a shell that refuses `export 1ABC=…`, a collector that refuses `../x`), or
//! never (a step that waits 10^20 seconds, `count: 1000000000` expanded into names). The loader
//! runs these checks on the typed plan, so plans built in code get them too; the ranges are the
//! ones documented in `docs/plan.md`.

use std::path::{Component, Path};

use super::duration::PlanDuration;
use super::model::{Plan, PublishTarget};
use super::schema::{self, Shape};

/// The largest plan file read: 1 MiB. Real plans are a few kilobytes; this keeps a runaway
/// generator (or a wrong path) from being read whole into memory.
pub const MAX_PLAN_BYTES: usize = 1 << 20;

/// The largest `concurrency` of a plan and `--concurrency` of `qa-run run` (the least is 1).
pub const MAX_CONCURRENCY: usize = 1024;
/// The most machines a plan may expand to, counting `count`; also the largest `count`.
pub(crate) const MAX_MACHINES: u64 = 1000;
/// The most step runs (a step on one machine) a plan may expand to.
pub(crate) const MAX_STEP_RUNS: u64 = 100_000;

/// One problem with one value: where (a key path), what, and what to do.
pub(crate) type Problem = (String, String, Option<String>);

/// A number against the range of its key (a [`Shape::UInt`] of the schema).
fn number(out: &mut Vec<Problem>, path: String, value: u64, shape: &Shape) {
    if let Shape::UInt { min, max } = shape
        && (value < *min || value > *max)
    {
        out.push((
            path,
            format!("{value} is out of range: expected {}", shape.describe()),
            None,
        ));
    }
}

/// A duration against the range of its key (a [`Shape::Duration`] of the schema).
fn duration(out: &mut Vec<Problem>, path: String, value: Option<PlanDuration>, shape: &Shape) {
    if let (Some(d), Shape::Duration { min, max }) = (value, shape)
        && (d < *min || d > *max)
    {
        out.push((path, schema::out_of_range(d, *min, *max), None));
    }
}

/// Every number of the plan against its documented range. Also says whether the machines'
/// counts are small enough to expand into names (the semantic checks that follow do that).
pub(crate) fn numbers(plan: &Plan, out: &mut Vec<Problem>) -> bool {
    if let Some(c) = plan.concurrency {
        number(
            out,
            "concurrency".into(),
            c.try_into().unwrap_or(u64::MAX),
            &schema::CONCURRENCY,
        );
    }
    duration(out, "budget".into(), plan.budget, &schema::TIMEOUT);
    duration(
        out,
        "defaults.timeout".into(),
        plan.defaults.timeout,
        &schema::TIMEOUT,
    );
    if let Some(r) = plan.defaults.retries {
        number(out, "defaults.retries".into(), r.into(), &schema::RETRIES);
    }
    for (i, h) in plan.inventory.iter().enumerate() {
        if let Some(p) = h.port {
            number(out, format!("inventory[{i}].port"), p.into(), &schema::PORT);
        }
        if let Some(m) = h.min_free_mib {
            number(out, format!("inventory[{i}].min-free-mib"), m, &schema::MIB);
        }
    }
    let mut total: u64 = 0;
    let mut expandable = true;
    for (i, m) in plan.machines.iter().enumerate() {
        let count = u64::from(m.count);
        let before = out.len();
        number(out, format!("machines[{i}].count"), count, &schema::COUNT);
        expandable &= out.len() == before;
        total = total.saturating_add(count);
    }
    if expandable && total > MAX_MACHINES {
        out.push((
            "machines".into(),
            format!(
                "the plan has {total} machines in all; the most a plan may have is {MAX_MACHINES}"
            ),
            Some("split the plan, or lower the `count` of its machines".into()),
        ));
        expandable = false;
    }
    for (i, s) in plan.steps.iter().enumerate() {
        duration(
            out,
            format!("steps[{i}].timeout"),
            s.timeout,
            &schema::TIMEOUT,
        );
        if let Some(r) = s.retries {
            number(
                out,
                format!("steps[{i}].retries"),
                r.into(),
                &schema::RETRIES,
            );
        }
    }
    for (i, f) in plan.files.iter().enumerate() {
        if let Some(mode) = &f.mode {
            let digits = mode.strip_prefix("0o").unwrap_or(mode);
            let ok = !digits.is_empty()
                && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
                && u32::from_str_radix(digits, 8).is_ok_and(|m| m <= 0o7777);
            if !ok {
                out.push((
                    format!("files[{i}].mode"),
                    format!("`{mode}` is not a file mode: expected octal digits from 0 to 7777"),
                    Some("write it quoted, e.g. `mode: \"0644\"`".into()),
                ));
            }
        }
    }
    expandable
}

/// The step runs (a step on one machine) a plan expands to, counted the way the task graph
/// selects machines; `None` when there are more than [`MAX_STEP_RUNS`].
pub(crate) fn step_runs(plan: &Plan) -> Option<u64> {
    let instances = crate::stages::machine_instances(plan);
    let mut total: u64 = 0;
    for s in &plan.steps {
        let on = instances
            .iter()
            .filter(|m| crate::stages::selects(&s.machines, m, &plan.machines[m.spec_index]))
            .count() as u64;
        total += on;
        if total > MAX_STEP_RUNS {
            return None;
        }
    }
    Some(total)
}

/// Characters a name may not hold: control characters (a newline in a name forges lines in
/// logs and reports) and the invisible marks that reorder text (a name that reads as `deploy`
/// but is stored otherwise).
fn forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `name` as a name of a `what` (e.g. "step"): not empty, no control characters or bidi marks.
fn name(out: &mut Vec<Problem>, path: String, what: &str, name: &str) -> bool {
    if name.is_empty() {
        out.push((
            path,
            format!("a {what} name cannot be empty"),
            Some(format!("give the {what} a name")),
        ));
        return false;
    }
    if let Some(c) = name.chars().find(|&c| forbidden_in_name(c)) {
        out.push((
            path,
            format!(
                "{what} name {:?} holds the invisible character U+{:04X}",
                name, c as u32
            ),
            Some(
                "names may not hold control characters or marks that change the direction of text"
                    .into(),
            ),
        ));
        return false;
    }
    true
}

/// An environment variable name as POSIX shells take it: a letter or `_`, then letters,
/// digits and `_`.
pub(crate) fn is_env_name(k: &str) -> bool {
    k.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn env_name(out: &mut Vec<Problem>, path: String, k: &str) {
    if !is_env_name(k) {
        out.push((
            path,
            format!("{k:?} is not a valid environment variable name"),
            Some("use letters, digits and `_`, not starting with a digit, e.g. `BUILD_DIR`".into()),
        ));
    }
}

fn env(out: &mut Vec<Problem>, path: &str, env: &std::collections::BTreeMap<String, String>) {
    for (k, v) in env {
        env_name(out, format!("{path}.{k}"), k);
        if v.contains('\0') {
            out.push((
                format!("{path}.{k}"),
                format!("the value of `{k}` holds a NUL character, which no environment can carry"),
                None,
            ));
        }
    }
}

fn has_parent(p: &str) -> bool {
    Path::new(p)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
}

/// A path on a machine that must stay inside the machine's work directory when relative.
fn no_parent(out: &mut Vec<Problem>, path: String, what: &str, p: &str) {
    if has_parent(p) {
        out.push((
            path,
            format!("{what} `{p}` goes up with `..`"),
            Some("write the path without `..`: relative paths are inside the machine's work directory, or give an absolute path".into()),
        ));
    }
}

/// A local file a publisher writes, relative to the plan's directory.
fn output_path(out: &mut Vec<Problem>, path: String, what: &str, p: &Path, is_dir: bool) {
    let text = p.to_string_lossy();
    let plan_dir = p.components().all(|c| matches!(c, Component::CurDir));
    if plan_dir {
        let message = if text.is_empty() {
            format!("the {what} is empty")
        } else {
            format!("the {what} `{text}` is the plan's own directory")
        };
        out.push((
            path,
            message,
            Some(if is_dir {
                "name a directory of its own, e.g. `public`; it is relative to the plan file".into()
            } else {
                "name a file, e.g. `junit.xml`; it is relative to the plan file".into()
            }),
        ));
    } else if !is_dir && text.ends_with('/') {
        out.push((
            path,
            format!("the {what} `{text}` names a directory"),
            Some("name a file, e.g. `results/junit.xml`".into()),
        ));
    }
}

/// Names, environment variable names and paths.
pub(crate) fn texts(plan: &Plan, out: &mut Vec<Problem>) {
    name(out, "name".into(), "plan", &plan.name);
    for (i, h) in plan.inventory.iter().enumerate() {
        name(
            out,
            format!("inventory[{i}].name"),
            "inventory host",
            &h.name,
        );
        if let Some(p) = &h.passphrase_env {
            env_name(out, format!("inventory[{i}].passphrase-env"), p);
        }
    }
    for (i, m) in plan.machines.iter().enumerate() {
        let path = format!("machines[{i}].name");
        if name(out, path.clone(), "machine", &m.name)
            && (m.name == "." || m.name == ".." || m.name.contains('/'))
        {
            out.push((
                path,
                format!("machine name `{}` cannot name a directory", m.name),
                Some("a machine's name is a directory in the run's results; use letters, digits, `-`, `_` or `.`".into()),
            ));
        } else if m.name.contains('@') {
            out.push((
                path,
                format!("machine name `{}` holds `@`", m.name),
                Some("task ids name a step on a machine as `step@machine`; use letters, digits, `-`, `_` or `.`".into()),
            ));
        }
        if let Some(role) = &m.role {
            name(out, format!("machines[{i}].role"), "role", role);
        }
    }
    for (j, s) in plan.secrets.iter().enumerate() {
        env_name(out, format!("secrets[{j}]"), s);
    }
    env(out, "defaults.env", &plan.defaults.env);
    if let Some(w) = &plan.defaults.workdir {
        no_parent(out, "defaults.workdir".into(), "workdir", w);
    }
    for (i, f) in plan.files.iter().enumerate() {
        if f.dest.is_empty() {
            out.push((
                format!("files[{i}].dest"),
                "the destination is empty".into(),
                Some(
                    "give a path on the machine; relative paths are inside its work directory"
                        .into(),
                ),
            ));
        }
        no_parent(out, format!("files[{i}].dest"), "destination", &f.dest);
    }
    for (i, s) in plan.steps.iter().enumerate() {
        name(out, format!("steps[{i}].name"), "step", &s.name);
        env(out, &format!("steps[{i}].env"), &s.env);
        if let Some(w) = &s.workdir {
            no_parent(out, format!("steps[{i}].workdir"), "workdir", w);
        }
        if s.command.as_deref().is_some_and(|c| c.contains('\0')) {
            out.push((
                format!("steps[{i}].command"),
                "the command holds a NUL character, which no shell can run".into(),
                None,
            ));
        }
    }
    for (i, a) in plan.artifacts.iter().enumerate() {
        for (j, p) in a.paths.iter().enumerate() {
            let path = format!("artifacts[{i}].paths[{j}]");
            if p.is_empty() {
                out.push((
                    path,
                    "the pattern is empty".into(),
                    Some("write a glob such as `*.log`".into()),
                ));
            } else if Path::new(p).is_absolute() || has_parent(p) {
                out.push((
                    path,
                    format!("artifact pattern `{p}` leaves the machine's work directory"),
                    Some("patterns are relative to the work directory, without `..`; have a step copy files from elsewhere into it".into()),
                ));
            } else if let Err(e) = glob::Pattern::new(p) {
                out.push((
                    path,
                    format!("`{p}` is not a glob pattern: {}", e.msg),
                    Some("`*` matches within a name, `**` across directories, `[abc]` one of the characters".into()),
                ));
            }
        }
    }
    for (i, t) in plan.publish.iter().enumerate() {
        match t {
            PublishTarget::Site { dir } => output_path(
                out,
                format!("publish[{i}].site.dir"),
                "site directory",
                dir,
                true,
            ),
            PublishTarget::Junit { path } => output_path(
                out,
                format!("publish[{i}].junit.path"),
                "JUnit file",
                path,
                false,
            ),
            PublishTarget::Json { path } => output_path(
                out,
                format!("publish[{i}].json.path"),
                "JSON report file",
                path,
                false,
            ),
            PublishTarget::Markdown { path } => output_path(
                out,
                format!("publish[{i}].markdown.path"),
                "Markdown file",
                path,
                false,
            ),
            PublishTarget::Git { remote, branch } => {
                if remote.trim().is_empty() {
                    out.push((
                        format!("publish[{i}].git.remote"),
                        "the git remote is empty".into(),
                        Some("give a URL or a path of a repository".into()),
                    ));
                }
                if let Some(b) = branch
                    && (b.is_empty()
                        || b.starts_with('-')
                        || b.contains("..")
                        || b.contains(|c: char| c.is_whitespace() || c.is_control()))
                {
                    out.push((
                            format!("publish[{i}].git.branch"),
                            format!("{b:?} is not a usable branch name"),
                            Some("a branch name has no spaces or `..` and does not start with `-`, e.g. `gh-pages`".into()),
                        ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variable_names_are_what_a_shell_exports() {
        for ok in ["A", "_", "BUILD_DIR", "a1", "_1"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1ABC", "A=B", "A B", "A-B", "É", "A\0"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_refuse_invisible_characters_only() {
        let check = |n: &str| {
            let mut out = Vec::new();
            name(&mut out, "p".into(), "step", n);
            out
        };
        for ok in ["build", "a b", "a/b", "тест", "构建", "日本語-テスト"] {
            assert!(check(ok).is_empty(), "{ok}");
        }
        for bad in ["", "a\nb", "a\u{7}", "a\u{202E}b", "\u{2067}x", "a\u{200F}"] {
            assert_eq!(check(bad).len(), 1, "{bad:?}");
        }
    }
}
