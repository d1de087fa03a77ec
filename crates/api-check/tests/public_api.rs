//! The public API of every library crate against its reviewed snapshot in `api/`, and the
//! renderer and comparison on a small crate made here.
//!
//! `QA_UPDATE_API=1 cargo test -p qa-api-check` rewrites the snapshots.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use qa_api_check::{
    ApiDiff, DocRun, LIBRARY_CRATES, NOT_SNAPSHOTTED, UPDATE_COMMAND, generate_rustdoc_json,
    render, snapshot_path,
};

fn workspace_root() -> PathBuf {
    // Cargo's variable at run time first: a test binary reused from a build cache may have been
    // compiled in a checkout at another path.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir)
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

fn real_rustdoc() -> OsString {
    std::env::var_os("RUSTDOC").unwrap_or_else(|| "rustdoc".into())
}

fn updating() -> bool {
    std::env::var("QA_UPDATE_API").is_ok_and(|v| v == "1")
}

/// Runs the same `cargo doc` selection as `scripts/test.sh` (the whole workspace, all features)
/// in the target directory of the build that runs this test (`CARGO_TARGET_DIR` is inherited),
/// so only the snapshotted crates themselves are documented again.
#[test]
fn library_public_apis_match_their_snapshots() {
    let root = workspace_root();
    let out = tempfile::Builder::new()
        .prefix("qa-api-check-")
        .tempdir()
        .expect("a temporary directory");
    let run = DocRun {
        cargo: PathBuf::from(env!("CARGO")),
        workspace_root: root.clone(),
        wrapper: PathBuf::from(env!("CARGO_BIN_EXE_qa-api-rustdoc")),
        real_rustdoc: real_rustdoc(),
        out_dir: out.path().to_owned(),
    };
    let json = generate_rustdoc_json(&run).unwrap_or_else(|e| panic!("{e}"));

    let mut report = String::new();
    for package in LIBRARY_CRATES {
        let current = render(&json[*package]).unwrap_or_else(|e| panic!("{e}"));
        let path = snapshot_path(&root, package);
        if updating() {
            std::fs::write(&path, &current)
                .unwrap_or_else(|e| panic!("{}: cannot write: {e}", path.display()));
            continue;
        }
        let snapshot = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.push_str(&format!("{package}: no snapshot at {}\n\n", path.display()));
                continue;
            }
            Err(e) => panic!("{}: cannot read: {e}", path.display()),
        };
        let diff = ApiDiff::between(&snapshot, &current);
        if !diff.is_empty() {
            report.push_str(&format!(
                "{package}: the public API differs from {} (- snapshot, + now):\n{diff}\n",
                path.display()
            ));
        }
    }
    assert!(
        report.is_empty(),
        "\n{report}If these changes are intended, accept them with\n\n    {UPDATE_COMMAND}\n\n\
         and commit the files under api/ with the change, so that review sees them.\n"
    );
}

/// A new library crate gets a snapshot, or a stated reason not to have one.
#[test]
fn every_library_crate_of_the_workspace_is_snapshotted_or_left_out_on_purpose() {
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let with_lib: BTreeSet<String> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| {
            p["targets"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "rlib"))
                })
            })
        })
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect();
    let known: BTreeSet<String> = LIBRARY_CRATES
        .iter()
        .chain(NOT_SNAPSHOTTED)
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(
        with_lib, known,
        "the workspace's library crates (left) and those qa-api-check knows of (right) differ: \
         add a new library to LIBRARY_CRATES (crates/api-check/src/lib.rs) and run \
         `{UPDATE_COMMAND}`, or to NOT_SNAPSHOTTED with the reason in its docs"
    );
}

/// The renderer and the comparison on a small crate documented by the real rustdoc.
mod renderer {
    use super::*;

    const TINY: &str = r#"
//! A small crate with one item of each kind the listing must show.

/// Shapes.
pub mod shapes {
    /// A point.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Point {
        /// Across.
        pub x: i32,
        /// Up.
        pub y: i32,
        hidden: u8,
    }

    /// A shape.
    #[non_exhaustive]
    pub enum Shape {
        /// One point.
        Dot(Point),
        /// Two points.
        Line {
            /// Start.
            from: Point,
            /// End.
            to: Point,
        },
    }

    /// Has an area.
    pub trait Area {
        /// The area.
        fn area(&self) -> f64;
    }

    impl Area for Shape {
        fn area(&self) -> f64 {
            0.0
        }
    }

    impl Point {
        /// A point at `x`, `y`.
        pub fn new(x: i32, y: i32) -> Self {
            Point { x, y, hidden: 0 }
        }

        fn private(&self) -> u8 {
            self.hidden
        }
    }
}

pub use shapes::Point;
pub use std::time::Duration;

/// Scales the area.
pub fn measure(shape: &shapes::Shape, scale: f64) -> Option<f64> {
    let _ = (shape, scale);
    None
}
"#;

    /// The listing of `source` as crate `tiny`, through the real rustdoc and the renderer.
    fn listing(source: &str) -> String {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let lib = dir.path().join("lib.rs");
        std::fs::write(&lib, source).expect("write lib.rs");
        let status = Command::new(real_rustdoc())
            .env("RUSTC_BOOTSTRAP", "1")
            .args([
                "--edition",
                "2024",
                "--crate-type",
                "lib",
                "--crate-name",
                "tiny",
            ])
            .args(["-Z", "unstable-options", "--output-format", "json", "-o"])
            .arg(dir.path())
            .arg(&lib)
            .status()
            .expect("rustdoc runs");
        assert!(status.success(), "rustdoc failed on the test crate");
        render(&dir.path().join("tiny.json")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn listing_shows_public_items_with_their_signatures() {
        let text = listing(TINY);
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "pub mod tiny::shapes",
            "pub struct tiny::shapes::Point",
            "pub tiny::shapes::Point::x: i32",
            "pub tiny::shapes::Point::y: i32",
            "pub fn tiny::shapes::Point::new(i32, i32) -> Self",
            "impl core::clone::Clone for tiny::shapes::Point",
            "impl core::marker::Send for tiny::shapes::Point",
            "#[non_exhaustive] pub enum tiny::shapes::Shape",
            "pub tiny::shapes::Shape::Dot(tiny::shapes::Point)",
            "pub tiny::shapes::Shape::Line",
            "pub tiny::shapes::Shape::Line::from: tiny::shapes::Point",
            "pub trait tiny::shapes::Area",
            "pub fn tiny::shapes::Area::area(&self) -> f64",
            "impl tiny::shapes::Area for tiny::shapes::Shape",
            "pub struct tiny::Point",
            "pub use tiny::Duration",
            "pub fn tiny::measure(&tiny::shapes::Shape, f64) -> core::option::Option<f64>",
        ] {
            assert!(
                lines.contains(&expected),
                "missing `{expected}` in the listing:\n{text}"
            );
        }
        for private in ["hidden", "private"] {
            assert!(
                !text.contains(private),
                "`{private}` is not public but is listed:\n{text}"
            );
        }
        assert!(
            !text.contains("core::convert::From<T>"),
            "blanket impls are left out:\n{text}"
        );
        assert_eq!(listing(TINY), text, "the same crate gives the same listing");
    }

    #[test]
    fn an_added_item_shows_as_an_added_line() {
        let before = listing(TINY);
        let after = listing(&format!(
            "{TINY}\n/// New.\npub fn added(count: usize) -> bool {{ count > 0 }}\n"
        ));
        let diff = ApiDiff::between(&before, &after);
        assert_eq!(diff.added, ["pub fn tiny::added(usize) -> bool"]);
        assert!(diff.removed.is_empty(), "{diff}");
    }

    #[test]
    fn a_removed_item_shows_as_a_removed_line() {
        let before = listing(TINY);
        let after = listing(&TINY.replace("pub use shapes::Point;", ""));
        let diff = ApiDiff::between(&before, &after);
        // A re-export of a crate's own item is listed as the item at its re-exported path.
        for line in ["pub struct tiny::Point", "pub tiny::Point::x: i32"] {
            assert!(diff.removed.contains(&line.to_owned()), "{diff}");
        }
        assert!(diff.added.is_empty(), "{diff}");
    }

    #[test]
    fn a_changed_signature_shows_as_a_removed_and_an_added_line() {
        let before = listing(TINY);
        let after =
            listing(&TINY.replace("scale: f64) -> Option<f64>", "scale: f32) -> Option<f64>"));
        let diff = ApiDiff::between(&before, &after);
        assert_eq!(
            diff.removed,
            ["pub fn tiny::measure(&tiny::shapes::Shape, f64) -> core::option::Option<f64>"]
        );
        assert_eq!(
            diff.added,
            ["pub fn tiny::measure(&tiny::shapes::Shape, f32) -> core::option::Option<f64>"]
        );
    }

    #[test]
    fn a_snapshot_that_lacks_a_non_exhaustive_attribute_differs() {
        let with = listing(TINY);
        let without = listing(&TINY.replace("#[non_exhaustive]\n", ""));
        let diff = ApiDiff::between(&without, &with);
        assert!(
            diff.added
                .contains(&"#[non_exhaustive] pub enum tiny::shapes::Shape".to_owned()),
            "{diff}"
        );
    }
}
