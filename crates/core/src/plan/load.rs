//! Reading a plan file and checking it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::graphmap::DiGraphMap;

use super::diag::{Diagnostic, PlanError};
use super::model::Plan;

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
    /// Wraps a plan built in code; relative paths resolve against `base_dir`.
    pub fn from_plan(plan: Plan, base_dir: impl Into<PathBuf>) -> Result<Self, PlanError> {
        let base_dir = base_dir.into();
        let loaded = LoadedPlan { plan, path: base_dir.join("<in-memory plan>"), base_dir };
        let diags = validate(&loaded);
        if diags.is_empty() { Ok(loaded) } else { Err(PlanError { file: loaded.path, diagnostics: diags }) }
    }

    /// Resolves a plan-relative path.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) }
    }
}

/// Reads and checks a plan file.
pub fn load_file(path: &Path) -> Result<LoadedPlan, PlanError> {
    let src = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            line: None,
            column: None,
            key_path: String::new(),
            message: format!("cannot read the plan file: {e}"),
            hint: Some("check the path".into()),
        }],
    })?;
    load_str(&src, path)
}

/// Parses and checks plan text; `path` is used in messages and to resolve relative paths.
pub fn load_str(src: &str, path: &Path) -> Result<LoadedPlan, PlanError> {
    let plan: Plan = serde_saphyr::from_str(src).map_err(|e| {
        let loc = e.location();
        PlanError {
            file: path.to_path_buf(),
            diagnostics: vec![Diagnostic {
                line: loc.map(|l| l.line()),
                column: loc.map(|l| l.column()),
                key_path: String::new(),
                message: e.to_string(),
                hint: None,
            }],
        }
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
    let loaded = LoadedPlan { plan, path: path.to_path_buf(), base_dir };
    let diags = validate(&loaded);
    if diags.is_empty() { Ok(loaded) } else { Err(PlanError { file: path.to_path_buf(), diagnostics: diags }) }
}

fn diag(key_path: String, message: String, hint: Option<String>) -> Diagnostic {
    Diagnostic { line: None, column: None, key_path, message, hint }
}

fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Checks what serde cannot: names, references, cycles, files that must exist.
pub(crate) fn validate(loaded: &LoadedPlan) -> Vec<Diagnostic> {
    let plan = &loaded.plan;
    let mut out = Vec::new();
    if plan.machines.is_empty() {
        out.push(diag("machines".into(), "a plan needs at least one machine".into(), None));
    }
    let mut machine_names = BTreeSet::new();
    let mut selectors: BTreeSet<String> = BTreeSet::new();
    for (i, m) in plan.machines.iter().enumerate() {
        if m.count == 0 {
            out.push(diag(format!("machines[{i}].count"), "count must be at least 1".into(), None));
        }
        for n in m.instance_names() {
            if !machine_names.insert(n.clone()) {
                out.push(diag(format!("machines[{i}].name"), format!("machine `{n}` is defined twice"), None));
            }
            selectors.insert(n);
        }
        selectors.insert(m.name.clone());
        selectors.insert(m.role().to_string());
    }
    let check_selectors = |out: &mut Vec<Diagnostic>, path: String, list: &[String]| {
        for (j, s) in list.iter().enumerate() {
            if !selectors.contains(s) {
                out.push(diag(
                    format!("{path}[{j}]"),
                    format!("no machine or role is called `{s}`"),
                    nearest(s, selectors.iter().map(String::as_str)),
                ));
            }
        }
    };
    for (i, f) in plan.files.iter().enumerate() {
        check_selectors(&mut out, format!("files[{i}].machines"), &f.machines);
        if !loaded.resolve(&f.src).exists() {
            out.push(diag(
                format!("files[{i}].src"),
                format!("`{}` does not exist", f.src.display()),
                Some(format!("paths are relative to the plan's directory {}", loaded.base_dir.display())),
            ));
        }
    }
    let mut step_index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if step_index.insert(s.name.as_str(), i).is_some() {
            out.push(diag(format!("steps[{i}].name"), format!("step `{}` is defined twice", s.name), None));
        }
    }
    if plan.steps.is_empty() {
        out.push(diag("steps".into(), "a plan needs at least one step".into(), None));
    }
    let mut graph: DiGraphMap<usize, ()> = DiGraphMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        graph.add_node(i);
        let actions = s.script.is_some() as u8 + s.command.is_some() as u8 + s.reboot as u8;
        if actions != 1 {
            out.push(diag(
                format!("steps[{i}]"),
                format!("step `{}` must have exactly one of `script`, `command` or `reboot: true`", s.name),
                None,
            ));
        }
        if let Some(script) = &s.script {
            if !loaded.resolve(script).is_file() {
                out.push(diag(
                    format!("steps[{i}].script"),
                    format!("script `{}` does not exist", script.display()),
                    Some(format!("paths are relative to the plan's directory {}", loaded.base_dir.display())),
                ));
            }
        }
        check_selectors(&mut out, format!("steps[{i}].machines"), &s.machines);
        for (field, list) in [("depends-on", &s.depends_on), ("after", &s.after)] {
            for (j, d) in list.iter().enumerate() {
                match step_index.get(d.as_str()) {
                    Some(&k) if k == i => out.push(diag(
                        format!("steps[{i}].{field}[{j}]"),
                        format!("step `{}` cannot wait for itself", s.name),
                        None,
                    )),
                    Some(&k) => {
                        graph.add_edge(k, i, ());
                    }
                    None => out.push(diag(
                        format!("steps[{i}].{field}[{j}]"),
                        format!("no step is called `{d}`"),
                        nearest(d, step_index.keys().copied()),
                    )),
                }
            }
        }
    }
    if let Err(cycle) = petgraph::algo::toposort(&graph, None) {
        let start = cycle.node_id();
        let names: Vec<&str> = cycle_path(&graph, start).iter().map(|&k| plan.steps[k].name.as_str()).collect();
        out.push(diag(
            format!("steps[{start}].depends-on"),
            format!("steps wait for each other in a cycle: {}", names.join(" -> ")),
            Some("remove one of these `depends-on`/`after` entries".into()),
        ));
    }
    check_selectors(&mut out, "artifacts".into(), &[]);
    for (i, a) in plan.artifacts.iter().enumerate() {
        check_selectors(&mut out, format!("artifacts[{i}].machines"), &a.machines);
    }
    for role in plan.cleanup.roles.keys() {
        if !selectors.contains(role) {
            out.push(diag(
                format!("cleanup.roles.{role}"),
                format!("no machine or role is called `{role}`"),
                nearest(role, selectors.iter().map(String::as_str)),
            ));
        }
    }
    out
}

/// A cycle through `start`, as node ids ending where it began.
fn cycle_path(graph: &DiGraphMap<usize, ()>, start: usize) -> Vec<usize> {
    // Depth-first search from start's successors back to start.
    let mut stack = vec![(start, vec![start])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.neighbors(node) {
            if next == start {
                let mut p = path.clone();
                p.push(start);
                return p;
            }
            if seen.insert(next) {
                let mut p = path.clone();
                p.push(next);
                stack.push((next, p));
            }
        }
    }
    vec![start]
}
