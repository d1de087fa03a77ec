//! Reading a plan file and checking it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use petgraph::graphmap::DiGraphMap;

use super::diag::{Diagnostic, PlanError};
use super::model::Plan;
use super::schema::{self, Locations, Shape, nearest};
use super::tree;
use super::values::{self, MAX_PLAN_BYTES};
use crate::backend::{BackendName, BackendRegistry};

/// A plan with the place it came from; relative paths in it are relative to `base_dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPlan {
    /// The plan.
    pub plan: Plan,
    /// The plan file (or a label for in-memory plans).
    pub path: PathBuf,
    /// Directory that relative `script:` and `files:` paths are resolved against.
    pub base_dir: PathBuf,
}

impl LoadedPlan {
    /// Wraps a plan built in code; relative paths resolve against `base_dir`. Only the built-in
    /// backends are known: see [`LoadedPlan::from_plan_with`].
    pub fn from_plan(plan: Plan, base_dir: impl Into<PathBuf>) -> Result<Self, PlanError> {
        Self::from_plan_with(plan, base_dir, &BackendRegistry::new())
    }

    /// Wraps a plan built in code, whose machines may use the backends of `backends`.
    pub fn from_plan_with(
        plan: Plan,
        base_dir: impl Into<PathBuf>,
        backends: &BackendRegistry,
    ) -> Result<Self, PlanError> {
        let base_dir = base_dir.into();
        let loaded = LoadedPlan {
            plan,
            path: base_dir.join("<in-memory plan>"),
            base_dir,
        };
        let diags = validate(&loaded, &Locations::new(), backends);
        if diags.is_empty() {
            Ok(loaded)
        } else {
            Err(PlanError {
                file: loaded.path,
                diagnostics: diags,
            })
        }
    }

    /// Resolves a plan-relative path.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Reads and checks a plan file whose machines use only the built-in backends (`local`,
/// `static`); [`load_file_with`] knows registered ones too.
pub fn load_file(path: &Path) -> Result<LoadedPlan, PlanError> {
    load_file_with(path, &BackendRegistry::new())
}

/// Reads and checks a plan file whose machines may use the backends of `backends`.
pub fn load_file_with(path: &Path, backends: &BackendRegistry) -> Result<LoadedPlan, PlanError> {
    let unreadable = |e: std::io::Error| PlanError {
        file: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            line: None,
            column: None,
            key_path: String::new(),
            message: format!("cannot read the plan file: {e}"),
            hint: Some("check the path".into()),
        }],
    };
    // One byte more than the limit is enough to know the file is too large, whatever it is
    // (a huge file, a device that never ends).
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PLAN_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() > MAX_PLAN_BYTES {
        return Err(PlanError {
            file: path.to_path_buf(),
            diagnostics: vec![too_large()],
        });
    }
    let src = String::from_utf8(bytes).map_err(|e| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })?;
    load_str_with(&src, path, backends)
}

fn too_large() -> Diagnostic {
    Diagnostic {
        line: None,
        column: None,
        key_path: String::new(),
        message: format!(
            "the plan is larger than {} KiB, the most qa-run reads",
            MAX_PLAN_BYTES / 1024
        ),
        hint: Some("is this the plan file? split a generated plan into several".into()),
    }
}

/// Parses and checks plan text; `path` is used in messages and to resolve relative paths.
///
/// Every problem is reported at once: first everything wrong with the shape of the file (unknown
/// keys, wrong types, unknown backends, bad durations), then, if the shape is right, everything
/// wrong with its meaning (unknown or cyclic dependencies, duplicate names, missing scripts).
pub fn load_str(src: &str, path: &Path) -> Result<LoadedPlan, PlanError> {
    load_str_with(src, path, &BackendRegistry::new())
}

/// [`load_str`] with the backends of `backends`.
pub fn load_str_with(
    src: &str,
    path: &Path,
    backends: &BackendRegistry,
) -> Result<LoadedPlan, PlanError> {
    let fail = |diagnostics: Vec<Diagnostic>| PlanError {
        file: path.to_path_buf(),
        diagnostics: sorted(diagnostics),
    };
    if src.len() > MAX_PLAN_BYTES {
        return Err(fail(vec![too_large()]));
    }
    let root = tree::parse(src).map_err(|e| fail(vec![from_saphyr(&e)]))?;
    let mut locations = Locations::new();
    let shape_problems = schema::check(&root, &mut locations, backends);
    if !shape_problems.is_empty() {
        return Err(fail(shape_problems));
    }
    // The walk found nothing, so this should not fail; if the schema and the model ever
    // disagree, serde's own (located) message is still better than none.
    let plan: Plan = serde_saphyr::from_str(src).map_err(|e| fail(vec![from_saphyr(&e)]))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let loaded = LoadedPlan {
        plan,
        path: path.to_path_buf(),
        base_dir,
    };
    let diags = validate(&loaded, &locations, backends);
    if diags.is_empty() {
        Ok(loaded)
    } else {
        Err(fail(diags))
    }
}

/// A serde-saphyr error as a diagnostic: its plain message (no source snippet) and its place.
fn from_saphyr(e: &serde_saphyr::Error) -> Diagnostic {
    let loc = e
        .location()
        .filter(|l| *l != serde_saphyr::Location::UNKNOWN);
    let mut message = e
        .without_snippet()
        .render_with_formatter(&serde_saphyr::UserMessageFormatter);
    if let Some(l) = loc {
        // The location is printed by PlanError already.
        for suffix in [
            format!(" at line {}, column {}", l.line(), l.column()),
            format!(" at {}:{}", l.line(), l.column()),
        ] {
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
    }
    Diagnostic {
        line: loc.map(|l| l.line()),
        column: loc.map(|l| l.column()),
        key_path: String::new(),
        message,
        hint: None,
    }
}

/// Diagnostics in file order; those without a place go last, in the order they were found.
fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| (d.line.is_none(), d.line, d.column));
    diags
}

/// A diagnostic at the place of `key_path`, or of its nearest enclosing key that has one.
fn diag_at(
    locations: &Locations,
    key_path: String,
    message: String,
    hint: Option<String>,
) -> Diagnostic {
    let mut p = key_path.as_str();
    let pos = loop {
        if let Some(pos) = locations.get(p) {
            break Some(*pos);
        }
        match p.rfind(['.', '[']) {
            Some(i) => p = &p[..i],
            None => break None,
        }
    };
    Diagnostic {
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        key_path,
        message,
        hint,
    }
}

fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    nearest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// Checks what the shape of the file cannot: names, references, cycles, files that must exist.
/// `locations` (empty for plans built in code) places each problem in the file.
pub(crate) fn validate(
    loaded: &LoadedPlan,
    locations: &Locations,
    backends: &BackendRegistry,
) -> Vec<Diagnostic> {
    let plan = &loaded.plan;
    let mut out = Vec::new();
    let mut diag = |key_path: String, message: String, hint: Option<String>| {
        out.push(diag_at(locations, key_path, message, hint));
    };
    let line_of = |key_path: &str| {
        locations
            .get(key_path)
            .map(|p| format!(" (first at line {})", p.line))
            .unwrap_or_default()
    };
    let relative_hint = |p: &Path| {
        Some(format!(
            "looked for `{}`; paths are relative to the plan file's directory",
            loaded.resolve(p).display()
        ))
    };

    let mut problems = Vec::new();
    let expandable = values::numbers(plan, &mut problems);
    values::texts(plan, &mut problems);
    for (key_path, message, hint) in problems {
        diag(key_path, message, hint);
    }

    let mut inventory: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, h) in plan.inventory.iter().enumerate() {
        if let Some(first) = inventory.insert(h.name.as_str(), i) {
            diag(
                format!("inventory[{i}].name"),
                format!(
                    "inventory host `{}` is defined twice{}",
                    h.name,
                    line_of(&format!("inventory[{first}].name"))
                ),
                None,
            );
        }
    }

    if plan.machines.is_empty() {
        diag(
            "machines".into(),
            "a plan needs at least one machine".into(),
            None,
        );
    }
    // Machine instance name -> index of the spec that made it.
    let mut machine_names: BTreeMap<String, usize> = BTreeMap::new();
    let mut selectors: BTreeSet<String> = BTreeSet::new();
    // Made once per machine only when the counts are in range: `count: 1000000000` would
    // otherwise be a billion names.
    let mut instance_files: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (i, m) in plan.machines.iter().enumerate() {
        let names = if expandable {
            m.instance_names()
        } else {
            vec![m.name.clone()]
        };
        for n in names {
            same_file_name(
                &mut instance_files,
                &mut diag,
                (&n, format!("machines[{i}].name")),
                "machine",
                &line_of,
            );
            if let Some(first) = machine_names.insert(n.clone(), i) {
                let what = if n == m.name {
                    String::new()
                } else {
                    format!(" (made by `count: {}`)", m.count)
                };
                diag(
                    format!("machines[{i}].name"),
                    format!(
                        "machine `{n}`{what} is defined twice{}",
                        line_of(&format!("machines[{first}].name"))
                    ),
                    Some("machine names must be unique".into()),
                );
            }
            selectors.insert(n);
        }
        selectors.insert(m.name.clone());
        selectors.insert(m.role().to_string());
        let default = plan.backend.unwrap_or(BackendName::LOCAL);
        let own = m.backend_or(default);
        check_backend(
            &mut diag,
            backends,
            i,
            m,
            own,
            format!("machines[{i}].backend"),
        );
        for (j, &alt) in m.fallback.iter().enumerate() {
            let path = format!("machines[{i}].fallback[{j}]");
            if alt == own || m.fallback[..j].contains(&alt) {
                diag(
                    path,
                    format!("backend `{alt}` is tried already"),
                    Some("list each backend once, after the machine's own".into()),
                );
                continue;
            }
            match backends.get(alt) {
                Some(b) if !b.descriptor().is_cloud() => diag(
                    path,
                    format!("backend `{alt}` is not a cloud: it has no capacity to run out of"),
                    Some("only cloud backends can be fallbacks".into()),
                ),
                Some(_) if m.options_of(alt).is_none() => diag(
                    format!("machines[{i}]"),
                    format!(
                        "machine `{}` falls back to `{alt}` but has no `{alt}:` options",
                        m.name
                    ),
                    Some(format!(
                        "add `{alt}:` with the options of the machine there"
                    )),
                ),
                _ => check_backend(&mut diag, backends, i, m, alt, path),
            }
        }
    }
    let check_selectors =
        |diag: &mut dyn FnMut(String, String, Option<String>), path: String, list: &[String]| {
            for (j, s) in list.iter().enumerate() {
                if !selectors.contains(s) {
                    diag(
                        format!("{path}[{j}]"),
                        format!("no machine or role is called `{s}`"),
                        did_you_mean(s, selectors.iter().map(String::as_str)),
                    );
                }
            }
        };

    for (i, f) in plan.files.iter().enumerate() {
        check_selectors(&mut diag, format!("files[{i}].machines"), &f.machines);
        if !loaded.resolve(&f.src).exists() {
            diag(
                format!("files[{i}].src"),
                format!("`{}` does not exist", f.src.display()),
                relative_hint(&f.src),
            );
        }
    }

    if plan.steps.is_empty() {
        diag(
            "steps".into(),
            "a plan needs at least one step".into(),
            None,
        );
    }
    let mut step_index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut step_files: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        same_file_name(
            &mut step_files,
            &mut diag,
            (&s.name, format!("steps[{i}].name")),
            "step",
            &line_of,
        );
        if let Some(&first) = step_index.get(s.name.as_str()) {
            diag(
                format!("steps[{i}].name"),
                format!(
                    "step `{}` is defined twice{}",
                    s.name,
                    line_of(&format!("steps[{first}].name"))
                ),
                Some("step names must be unique".into()),
            );
        } else {
            step_index.insert(s.name.as_str(), i);
        }
    }

    // Edge k -> i: step i waits for step k; the weight says which entry of i asked for it.
    let mut graph: DiGraphMap<usize, (&str, usize)> = DiGraphMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        graph.add_node(i);
        let actions: Vec<&str> = [
            ("script", s.script.is_some()),
            ("command", s.command.is_some()),
            ("uses", s.uses.is_some()),
            ("reboot", s.reboot),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if !s.with.is_empty() && s.uses.is_none() {
            diag(
                format!("steps[{i}].with"),
                format!("step `{}` has `with` but no `uses`", s.name),
                Some("`with` gives parameters to the step type named by `uses`".into()),
            );
        }
        match actions.as_slice() {
            [_] => {}
            [] => diag(
                format!("steps[{i}]"),
                format!("step `{}` does nothing", s.name),
                Some("give it one of `script`, `command`, `uses` or `reboot: true`".into()),
            ),
            [.., last] => diag(
                format!("steps[{i}].{last}"),
                match actions.as_slice() {
                    [first, second] => format!("step `{}` has both `{first}` and `{second}`", s.name),
                    _ => format!("step `{}` has all of `{}`", s.name, actions.join("`, `")),
                },
                Some("a step does exactly one of `script`, `command`, `uses` or `reboot: true`; split it into two steps".into()),
            ),
        }
        if let Some(script) = &s.script
            && !loaded.resolve(script).is_file()
        {
            diag(
                format!("steps[{i}].script"),
                format!("script `{}` does not exist", script.display()),
                relative_hint(script),
            );
        }
        check_selectors(&mut diag, format!("steps[{i}].machines"), &s.machines);
        for (field, list) in [("depends-on", &s.depends_on), ("after", &s.after)] {
            for (j, d) in list.iter().enumerate() {
                match step_index.get(d.as_str()) {
                    Some(&k) if k == i => diag(
                        format!("steps[{i}].{field}[{j}]"),
                        format!("step `{}` waits for itself", s.name),
                        Some(format!("remove `{d}` from `{field}`")),
                    ),
                    Some(&k) => {
                        graph.add_edge(k, i, (field, j));
                    }
                    None => diag(
                        format!("steps[{i}].{field}[{j}]"),
                        format!("no step is called `{d}`"),
                        did_you_mean(d, step_index.keys().copied()),
                    ),
                }
            }
        }
    }
    // Every cycle, once: each strongly connected component of more than one step is one.
    let mut components = petgraph::algo::tarjan_scc(&graph);
    components.iter_mut().for_each(|c| c.sort_unstable());
    components.sort();
    for component in components.into_iter().filter(|c| c.len() > 1) {
        let start = component[0];
        let members: BTreeSet<usize> = component.iter().copied().collect();
        let cycle = cycle_path(&graph, start, &members);
        // cycle[0] waits for cycle[1], which waits for cycle[2], …, back to cycle[0].
        let names: Vec<String> = cycle
            .iter()
            .map(|&k| format!("`{}`", plan.steps[k].name))
            .collect();
        let (field, j) = cycle
            .get(1)
            .and_then(|&next| graph.edge_weight(next, start))
            .copied()
            .unwrap_or(("depends-on", 0));
        diag(
            format!("steps[{start}].{field}[{j}]"),
            format!(
                "steps wait for each other in a cycle: {}",
                names.join(" waits for ")
            ),
            Some("remove one of these `depends-on`/`after` entries".into()),
        );
    }

    for (i, a) in plan.artifacts.iter().enumerate() {
        check_selectors(&mut diag, format!("artifacts[{i}].machines"), &a.machines);
    }
    if expandable && values::step_runs(plan).is_none() {
        diag(
            "steps".into(),
            format!(
                "the plan has more than {} step runs (a step on one machine)",
                values::MAX_STEP_RUNS
            ),
            Some("split the plan, or run steps on fewer machines with `machines:`".into()),
        );
    }
    for role in plan.cleanup.roles.keys() {
        if !selectors.contains(role) {
            diag(
                format!("cleanup.roles.{role}"),
                format!("no machine or role is called `{role}`"),
                did_you_mean(role, selectors.iter().map(String::as_str)),
            );
        }
    }
    sorted(out)
}

/// Two different names that would share a file name (logs, recordings, scripts, artifacts).
/// [`crate::engine::file_name_of`] adds a hash to every name it changes, so only two names
/// whose hashes collide can get here; checked so that it can never happen silently.
fn same_file_name(
    seen: &mut BTreeMap<String, (String, String)>,
    diag: &mut dyn FnMut(String, String, Option<String>),
    (name, key_path): (&str, String),
    what: &str,
    line_of: &dyn Fn(&str) -> String,
) {
    let file = crate::engine::file_name_of(name);
    match seen.get(&file) {
        Some((first, first_path)) if first != name => diag(
            key_path,
            format!(
                "{what} `{name}` would have the same file name `{file}` as {what} `{first}`{}",
                line_of(first_path)
            ),
            Some(format!("rename one of the two {what}s")),
        ),
        Some(_) => {}
        None => {
            seen.insert(file, (name.to_owned(), key_path));
        }
    }
}

/// What a machine's backend asks of it: that the build has the backend, that its options block
/// is there when the backend needs one, and whatever the backend checks in it.
fn check_backend(
    diag: &mut dyn FnMut(String, String, Option<String>),
    backends: &BackendRegistry,
    i: usize,
    m: &super::model::MachineSpec,
    backend: BackendName,
    name_path: String,
) {
    let Some(b) = backends.get(backend) else {
        let (message, hint) = match backends.absent_feature(backend) {
            Some(feature) => (
                format!("backend `{backend}` is not in this build of qa-run"),
                format!("rebuild with the cargo feature `{feature}`"),
            ),
            None => (
                format!("unknown backend `{backend}`"),
                format!(
                    "this program has {}",
                    backends
                        .names()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        diag(name_path, message, Some(hint));
        return;
    };
    let descriptor = b.descriptor();
    match m.options_of(backend) {
        None if descriptor.requires_options() => {
            let required = match descriptor.options_shape() {
                Some(Shape::Struct(fields)) => fields
                    .iter()
                    .filter(|f| f.is_required())
                    .map(|f| format!("`{}`", f.key()))
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            };
            let hint = if required.is_empty() {
                format!("add `{backend}:` with its options (docs/plan.md)")
            } else {
                format!("add `{backend}:` with at least {}", required.join(" and "))
            };
            diag(
                format!("machines[{i}]"),
                format!(
                    "machine `{}` uses backend `{backend}` but has no `{backend}:` options",
                    m.name
                ),
                Some(hint),
            );
        }
        None => {}
        Some(options) => {
            for p in descriptor.check_options(options) {
                let path = if p.key_path.is_empty() {
                    format!("machines[{i}].{backend}")
                } else {
                    format!("machines[{i}].{backend}.{}", p.key_path)
                };
                diag(path, p.message, p.hint);
            }
        }
    }
}

/// The shortest cycle from `start` back to itself along "waits for" links (edges reversed),
/// staying inside `members`; as step indices, ending where it began.
fn cycle_path(
    graph: &DiGraphMap<usize, (&str, usize)>,
    start: usize,
    members: &BTreeSet<usize>,
) -> Vec<usize> {
    // Breadth-first over predecessors (the steps a step waits for), so the path reads in the
    // order a user follows `depends-on` entries.
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut waits_for: Vec<usize> = graph
            .neighbors_directed(node, petgraph::Direction::Incoming)
            .filter(|n| members.contains(n))
            .collect();
        waits_for.sort_unstable();
        for next in waits_for {
            if next == start {
                let mut path = vec![start];
                let mut at = node;
                while at != start {
                    path.push(at);
                    at = parent[&at];
                }
                path[1..].reverse();
                path.push(start);
                return path;
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of every section, so the schema walk and the typed model are checked to agree.
    const EVERY_KEY: &str = r#"
name: every-key
description: all of it
backend: local
concurrency: 4
budget: 2h
defaults:
  timeout: 10m
  retries: 1
  env: {A: "1"}
  workdir: work
  log-limit: 64MiB
secrets: [TOKEN]
inventory:
  - name: lab1
    host: 10.0.0.1
    port: 2222
    user: qa
    identity-file: ~/.ssh/id_ed25519
    passphrase-env: KEY_PASS
    proxy-jump: [bastion]
    ssh-config: ~/.ssh/config
    require-commands: [mkfs.btrfs]
    min-free-mib: 1024
    repair: apt-get install -y btrfs-progs
machines:
  - name: box
    role: worker
    count: 1
    backend: local
    local: {root: /tmp/sandboxes}
  - name: lab
    backend: static
    static: {hosts: [lab1]}
files:
  - src: load.rs
    dest: /tmp/load.rs
    machines: [worker]
    mode: "0644"
steps:
  - name: build
    command: make
    machines: [box]
    env: {CC: clang}
    workdir: src
    timeout: 90
    retries: 2
    sudo: true
    pty: true
    detached: true
    log-limit: 1048576
  - name: reboot
    reboot: true
    after: [build]
  - name: test
    script: load.rs
    depends-on: [build]
    expect-reboot: true
  - name: custom
    uses: fio-job
    with: {size: 1G, jobs: 4}
artifacts:
  - paths: ["*.log"]
    machines: [box]
publish:
  - site: {dir: site}
  - junit: {path: junit.xml}
  - json: {path: report.json}
  - markdown: {path: summary.md}
  - git: {remote: git@example.com:qa/results.git, branch: pages}
cleanup:
  default: on-success
  roles: {worker: never, lab: always}
"#;

    fn here() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plan/plan.yaml")
    }

    #[test]
    fn a_plan_using_every_key_loads() {
        let loaded = load_str(EVERY_KEY, &here()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.plan.steps.len(), 4);
        assert_eq!(
            loaded.plan.cleanup.policy_for("worker"),
            crate::plan::CleanupPolicy::Never
        );
        assert_eq!(loaded.plan.publish.len(), 5);
    }

    #[test]
    fn the_schema_knows_every_key_of_the_model() {
        // A key added to model.rs but not to schema.rs would be refused as unknown. Serializing a
        // plan that sets every field writes every key the model has; the schema walk must take it.
        let plan = load_str(EVERY_KEY, &here()).unwrap().plan;
        let yaml = serde_saphyr::to_string(&plan).unwrap();
        let root = tree::parse(&yaml).unwrap();
        let problems = schema::check(&root, &mut Locations::new(), &BackendRegistry::new());
        assert!(problems.is_empty(), "{problems:#?}\n{yaml}");
    }

    #[test]
    fn empty_optional_keys_load() {
        let src = "name: x\ndescription:\nbackend:\ndefaults:\n  timeout:\nmachines:\n  - name: a\n    role:\n    local:\nsteps:\n  - name: s\n    command: echo\n    timeout:\n";
        let loaded = load_str(src, &here()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.plan.description, None);
        let src = "name: x\nmachines:\n  - name: a\nsteps:\n  - name: s\n    command: echo\n    env:\ncleanup:\n";
        let e = load_str(src, Path::new("p.yaml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml: 2 problems in plan\n\
             p.yaml:7:5: steps[0].env: `env` is empty: expected a mapping of names to values (give it a value or remove the key)\n\
             p.yaml:8:1: cleanup: `cleanup` is empty: expected a mapping with keys such as `default`, `roles` (give it a value or remove the key)\n"
        );
    }

    #[test]
    fn numbers_are_accepted_as_text() {
        let src =
            "name: 42\nmachines: [{name: a}]\nsteps: [{name: s, command: 123, env: {N: 1}}]\n";
        let loaded = load_str(src, &here()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.plan.steps[0].command.as_deref(), Some("123"));
        assert_eq!(loaded.plan.steps[0].env["N"], "1");
    }

    #[test]
    fn anchors_aliases_and_merge_keys_work() {
        let src = "name: x\nmachines: [{name: a}]\nsteps:\n  - &base\n    name: one\n    command: c\n    timeout: 5m\n  - <<: *base\n    name: two\n    depends-on: [one]\n";
        let loaded = load_str(src, Path::new("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.plan.steps[1].command.as_deref(), Some("c"));
        assert_eq!(loaded.plan.steps[1].name, "two");
    }

    #[test]
    fn yaml_booleans_are_not_text() {
        for word in ["true", "yes", "off"] {
            let src = format!(
                "name: x\nmachines: [{{name: a}}]\nsteps: [{{name: s, command: {word}}}]\n"
            );
            let e = load_str(&src, Path::new("p.yaml")).unwrap_err();
            assert!(
                e.to_string()
                    .contains("expected a string, found the boolean"),
                "{word}: {e}"
            );
        }
    }

    /// A backend an embedding program registers, with options of its own.
    #[derive(Debug)]
    struct Racks;

    const RACK_OPTIONS: Shape = Shape::Struct(&[
        schema::req("rack", &schema::STR),
        schema::dflt("slots", &schema::U32),
    ]);

    impl crate::backend::BackendDescriptor for Racks {
        fn name(&self) -> BackendName {
            BackendName::new("racks")
        }
        fn options_shape(&self) -> Option<&'static Shape> {
            Some(&RACK_OPTIONS)
        }
        fn requires_options(&self) -> bool {
            true
        }
        fn check_options(&self, options: &serde_json::Value) -> Vec<crate::backend::OptionProblem> {
            match options.get("slots").and_then(|s| s.as_u64()) {
                Some(0) => vec![crate::backend::OptionProblem::new(
                    "slots",
                    "a machine needs at least one slot",
                    None,
                )],
                _ => vec![],
            }
        }
    }

    fn with_racks() -> BackendRegistry {
        let mut r = BackendRegistry::new();
        r.register(crate::backend::Backend::new(std::sync::Arc::new(Racks)))
            .unwrap();
        r.absent(BackendName::new("far-cloud"), "far-cloud");
        r
    }

    #[test]
    fn registered_backends_check_their_options_with_places() {
        let src = "name: x\nmachines:\n  - name: a\n    racks: {rack: r1, slots: 0, colour: red}\n  - name: b\n    backend: racks\nsteps: [{name: s, command: c}]\n";
        let e = load_str_with(src, Path::new("p.yaml"), &with_racks()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml: 1 problem in plan\n\
             p.yaml:4:33: machines[0].racks.colour: unknown key `colour` (expected one of `rack`, `slots`)\n"
        );
        let src = "name: x\nmachines:\n  - name: a\n    racks: {rack: r1, slots: 0}\n  - name: b\n    backend: racks\nsteps: [{name: s, command: c}]\n";
        let e = load_str_with(src, Path::new("p.yaml"), &with_racks()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml: 2 problems in plan\n\
             p.yaml:4:30: machines[0].racks.slots: a machine needs at least one slot\n\
             p.yaml:5:5: machines[1]: machine `b` uses backend `racks` but has no `racks:` options (add `racks:` with at least `rack`)\n"
        );
        let src =
            "name: x\nmachines: [{name: a, racks: {rack: r1}}]\nsteps: [{name: s, command: c}]\n";
        let loaded = load_str_with(src, Path::new("p.yaml"), &with_racks()).unwrap();
        let m = &loaded.plan.machines[0];
        assert_eq!(m.backend_or(BackendName::LOCAL), BackendName::new("racks"));
        assert_eq!(
            m.options_of(BackendName::new("racks")).unwrap()["rack"],
            "r1"
        );
    }

    #[test]
    fn a_backend_the_build_lacks_is_refused_with_its_feature() {
        let src = "name: x\nmachines:\n  - name: a\n    backend: far-cloud\n  - name: b\n    backend: rakcs\nsteps: [{name: s, command: c}]\n";
        let e = load_str_with(src, Path::new("p.yaml"), &with_racks()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml: 2 problems in plan\n\
             p.yaml:4:14: machines[0].backend: backend `far-cloud` is not in this build of qa-run (rebuild with the cargo feature `far-cloud`: `cargo build --release -p qa-cli --features far-cloud`)\n\
             p.yaml:6:14: machines[1].backend: unknown backend `rakcs` (did you mean `racks`?)\n"
        );
        // Without the registration, the built-in loader knows only `local` and `static`.
        let src =
            "name: x\nmachines: [{name: a, racks: {rack: r1}}]\nsteps: [{name: s, command: c}]\n";
        let e = load_str(src, Path::new("p.yaml")).unwrap_err();
        assert!(e.to_string().contains("unknown key `racks`"), "{e}");
    }

    #[test]
    fn semantic_problems_point_at_the_value() {
        let src = "name: x\nmachines: [{name: a}]\nsteps:\n  - name: s\n    command: c\n    depends-on: [s, t]\n    machines: [b]\n";
        let e = load_str(src, Path::new("p.yaml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml: 3 problems in plan\n\
             p.yaml:6:18: steps[0].depends-on[0]: step `s` waits for itself (remove `s` from `depends-on`)\n\
             p.yaml:6:21: steps[0].depends-on[1]: no step is called `t`\n\
             p.yaml:7:16: steps[0].machines[0]: no machine or role is called `b`\n"
        );
    }

    #[test]
    fn a_cycle_is_named_step_by_step() {
        let src = "name: x\nmachines: [{name: a}]\nsteps:\n  - {name: one, command: c, depends-on: [three]}\n  - {name: two, command: c, depends-on: [one]}\n  - {name: three, command: c, after: [two]}\n";
        let e = load_str(src, Path::new("p.yaml")).unwrap_err();
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        let d = &e.diagnostics[0];
        assert_eq!(d.key_path, "steps[0].depends-on[0]");
        assert_eq!(
            d.message,
            "steps wait for each other in a cycle: `one` waits for `three` waits for `two` waits for `one`"
        );
        assert_eq!((d.line, d.column), (Some(4), Some(42)));
    }

    #[test]
    fn plans_built_in_code_are_checked_without_places() {
        let mut plan = load_str(EVERY_KEY, &here()).unwrap().plan;
        plan.steps[0].depends_on.push("nope".into());
        let e = LoadedPlan::from_plan(plan, here().parent().unwrap()).unwrap_err();
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        assert!(e.diagnostics.iter().all(|d| d.line.is_none()));
    }
}
