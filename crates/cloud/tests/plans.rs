//! Plan files as users write them, loaded with every backend qa-run has: every bad plan in
//! `tests/bad-plans` is rejected with exactly the messages in its snapshot, and every plan in
//! `examples/plans` loads.

use std::path::{Path, PathBuf};

fn load_file(path: &Path) -> Result<qa_core::plan::LoadedPlan, qa_core::plan::PlanError> {
    qa_core::plan::load_file_with(path, &qa_cloud::backends())
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.yaml` files of a directory, sorted by name.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    files.sort();
    files
}

/// The rendered error of a plan that must not load, with the checkout's location taken out so
/// snapshots are the same on every machine.
fn rendered_error(plan: &Path) -> String {
    let err = match load_file(plan) {
        Ok(_) => panic!(
            "{} loaded, but it is in the corpus of bad plans",
            plan.display()
        ),
        Err(e) => e,
    };
    let prefix = format!("{}/", manifest_dir().display());
    err.to_string().replace(&prefix, "")
}

#[test]
fn every_bad_plan_is_rejected_with_its_exact_messages() {
    let plans = yaml_files(&manifest_dir().join("tests/bad-plans"));
    assert!(
        plans.len() >= 15,
        "the corpus of bad plans shrank to {}",
        plans.len()
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots");
    settings.bind(|| {
        for plan in &plans {
            let name = plan.file_stem().unwrap().to_string_lossy().into_owned();
            insta::assert_snapshot!(format!("bad-plan-{name}"), rendered_error(plan));
        }
    });
}

#[test]
fn every_problem_has_a_place_in_the_file() {
    // A problem without line and column is one the user has to hunt for; only a plan that
    // cannot be read at all may have one.
    for plan in yaml_files(&manifest_dir().join("tests/bad-plans")) {
        let err = load_file(&plan).unwrap_err();
        for d in &err.diagnostics {
            assert!(
                d.line.is_some() && d.column.is_some(),
                "{}: no place for {d:?}",
                plan.display()
            );
        }
        let places: Vec<_> = err.diagnostics.iter().map(|d| (d.line, d.column)).collect();
        assert!(
            places.is_sorted(),
            "{}: diagnostics are not in file order: {places:?}",
            plan.display()
        );
    }
}

#[test]
fn an_unreadable_plan_says_so() {
    let err = load_file(Path::new("no/such/plan.yaml")).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1);
    assert!(
        err.diagnostics[0]
            .message
            .starts_with("cannot read the plan file"),
        "{err}"
    );
}

#[test]
fn every_example_plan_loads() {
    let dir = manifest_dir().join("../../examples/plans");
    let plans = yaml_files(&dir);
    let failures: Vec<String> = plans
        .iter()
        .filter_map(|p| load_file(p).err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "example plans that do not load:\n{}",
        failures.join("\n")
    );
    assert!(
        !plans.is_empty(),
        "no example plans found in {}",
        dir.display()
    );
}

/// The plan file was read whole whatever its size; `/dev/zero` never ends.
#[test]
fn a_plan_larger_than_a_mebibyte_is_not_read() {
    let err = load_file(Path::new("/dev/zero")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/dev/zero: 1 problem in plan\n\
         /dev/zero: the plan is larger than 1024 KiB, the most qa-run reads \
         (is this the plan file? split a generated plan into several)\n"
    );
    let text = format!(
        "name: big\n#{}\n",
        "x".repeat(qa_core::plan::MAX_PLAN_BYTES)
    );
    let err = qa_core::plan::load_str(&text, Path::new("big.yaml")).unwrap_err();
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
}
