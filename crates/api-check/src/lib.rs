//! The public API of qa-run's library crates as text, and its comparison with the reviewed
//! snapshots under `api/` at the workspace root.
//!
//! A library is a promise: every change to what `qa-core`, `qa-cloud`, `qa-provision`,
//! `qa-capacity`, `qa-remote` and `qa-publish` export shows as added and removed lines of
//! `api/<package>.txt` in review. This crate has three parts:
//!
//! - [`generate_rustdoc_json`] runs `cargo doc --workspace --all-features --no-deps` with rustdoc
//!   writing JSON instead of HTML (through the `qa-api-rustdoc` wrapper binary, see
//!   [`wrapped_rustdoc_args`]);
//! - [`render`] turns one crate's rustdoc JSON into one line per public item (path, kind,
//!   signature), sorted, with the `public-api` crate;
//! - [`ApiDiff`] compares a snapshot with the current rendering, line by line.
//!
//! The test `tests/public_api.rs` ties them together; `QA_UPDATE_API=1 cargo test -p
//! qa-api-check` rewrites the snapshots.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The library crates whose public API is kept in `api/<package>.txt`.
///
/// Left out on purpose: `qa-cli` (its library is how the `qa-run` binary is built and tested, not
/// an API offered to anyone), `qa-testkit` (test support), `qa-examples` and `qa-api-check`
/// itself. [`NOT_SNAPSHOTTED`] names them so that a new library crate is not skipped silently.
pub const LIBRARY_CRATES: &[&str] = &[
    "qa-core",
    "qa-cloud",
    "qa-provision",
    "qa-capacity",
    "qa-remote",
    "qa-publish",
];

/// Workspace members with a library target that have no snapshot, on purpose (see
/// [`LIBRARY_CRATES`]).
pub const NOT_SNAPSHOTTED: &[&str] = &["qa-cli", "qa-testkit", "qa-examples", "qa-api-check"];

/// The rustdoc JSON format this crate reads (`rustdoc_types::FORMAT_VERSION`, the version the
/// pinned `public-api` release is built on).
pub const FORMAT_VERSION: u32 = rustdoc_types::FORMAT_VERSION;

/// The command that accepts a changed API, for messages.
pub const UPDATE_COMMAND: &str = "QA_UPDATE_API=1 cargo test -p qa-api-check";

/// Environment of the `qa-api-rustdoc` wrapper: the rustdoc it runs.
pub const ENV_REAL_RUSTDOC: &str = "QA_API_CHECK_REAL_RUSTDOC";
/// Environment of the `qa-api-rustdoc` wrapper: the directory the JSON goes to.
pub const ENV_OUT_DIR: &str = "QA_API_CHECK_OUT_DIR";
/// Environment of the `qa-api-rustdoc` wrapper: the crate names (comma-separated) to document;
/// rustdoc is not run for the other workspace members.
pub const ENV_CRATES: &str = "QA_API_CHECK_CRATES";

/// What can go wrong while producing or reading the API listings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiCheckError {
    /// `cargo` could not be started.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// `cargo doc` (or `cargo metadata`) exited with an error.
    #[error("`{command}` failed ({status}); its output:\n{output}")]
    CargoFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its standard error.
        output: String,
    },
    /// rustdoc ran but wrote no JSON for a crate.
    #[error(
        "`{command}` wrote no rustdoc JSON for {package} at {path}; run it by hand to see why",
        path = path.display()
    )]
    MissingJson {
        /// The command line.
        command: String,
        /// The package.
        package: String,
        /// Where the JSON was expected.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is of a format version this crate does not read.
    #[error(
        "{}: rustdoc JSON format_version {found}, but the public-api crate pinned in the root \
         Cargo.toml reads format_version {FORMAT_VERSION}; after a toolchain update, pin the \
         public-api release (and its rustdoc-types) that reads format {found}, then run `{UPDATE_COMMAND}`",
        path.display()
    )]
    FormatVersion {
        /// The JSON file.
        path: PathBuf,
        /// The version it declares.
        found: u32,
    },
    /// The JSON could not be parsed.
    #[error("{}: not readable as rustdoc JSON: {message}", path.display())]
    Parse {
        /// The JSON file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

/// The snapshot file of `package` in the workspace at `workspace_root`.
pub fn snapshot_path(workspace_root: &Path, package: &str) -> PathBuf {
    workspace_root.join("api").join(format!("{package}.txt"))
}

/// The crate name of a package (`qa-core` -> `qa_core`), which names its rustdoc JSON file.
pub fn crate_name(package: &str) -> String {
    package.replace('-', "_")
}

/// How to run `cargo doc` for [`generate_rustdoc_json`].
#[derive(Debug, Clone)]
pub struct DocRun {
    /// The cargo binary (in a test: `env!("CARGO")`).
    pub cargo: PathBuf,
    /// The workspace root (where the root `Cargo.toml` is).
    pub workspace_root: PathBuf,
    /// The `qa-api-rustdoc` wrapper binary.
    pub wrapper: PathBuf,
    /// The rustdoc the wrapper runs.
    pub real_rustdoc: OsString,
    /// Where the JSON files go; a fresh directory for each run (its path is part of the rustdoc
    /// flags, so cargo always runs rustdoc again instead of reusing an earlier run's output).
    pub out_dir: PathBuf,
}

/// Runs `cargo doc --workspace --all-features --no-deps` with rustdoc writing JSON for the
/// [`LIBRARY_CRATES`] into `run.out_dir`, and returns the JSON file of each, by package.
///
/// The whole workspace with all features is documented, the same selection as the `cargo doc`
/// line of `scripts/test.sh`: cargo resolves dependency features over the selected packages, so
/// any other selection would check (part of) the dependency tree, the AWS SDK included, a second
/// time with other features. Members that are not snapshotted are passed over by the wrapper.
///
/// rustdoc's JSON output is unstable, so the wrapper sets `RUSTC_BOOTSTRAP=1` for rustdoc
/// alone: set for the whole cargo run, it would also reach the build scripts that watch it
/// (proc-macro2's and thiserror's) and rebuild every dependency, twice per test run.
pub fn generate_rustdoc_json(run: &DocRun) -> Result<BTreeMap<String, PathBuf>, ApiCheckError> {
    std::fs::create_dir_all(&run.out_dir).map_err(|source| ApiCheckError::Io {
        path: run.out_dir.clone(),
        source,
    })?;
    let crates: Vec<String> = LIBRARY_CRATES.iter().map(|p| crate_name(p)).collect();
    let mut rustdocflags = OsString::from("-Z unstable-options --output-format json -o ");
    rustdocflags.push(&run.out_dir);
    let mut cmd = Command::new(&run.cargo);
    cmd.current_dir(&run.workspace_root)
        .args([
            "doc",
            "--workspace",
            "--all-features",
            "--no-deps",
            "--quiet",
        ])
        .env("RUSTDOC", &run.wrapper)
        .env(ENV_REAL_RUSTDOC, &run.real_rustdoc)
        .env(ENV_OUT_DIR, &run.out_dir)
        .env(ENV_CRATES, crates.join(","))
        .env("RUSTDOCFLAGS", &rustdocflags)
        .env_remove("CARGO_ENCODED_RUSTDOCFLAGS");
    let command = format!(
        "RUSTDOC={} RUSTDOCFLAGS='{}' cargo doc --workspace --all-features --no-deps",
        run.wrapper.display(),
        rustdocflags.to_string_lossy()
    );
    let output = cmd.output().map_err(|source| ApiCheckError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(ApiCheckError::CargoFailed {
            command,
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let mut files = BTreeMap::new();
    for package in LIBRARY_CRATES {
        let path = run.out_dir.join(format!("{}.json", crate_name(package)));
        if !path.is_file() {
            return Err(ApiCheckError::MissingJson {
                command,
                package: (*package).to_owned(),
                path,
            });
        }
        files.insert((*package).to_owned(), path);
    }
    Ok(files)
}

/// The arguments the `qa-api-rustdoc` wrapper passes to the real rustdoc, or `None` when the
/// crate is not to be documented.
///
/// `crates` are the crate names to document and `out_dir` the directory given in
/// `RUSTDOCFLAGS`: cargo passes its own `-o <target>/doc` as well, which is dropped so that only
/// this run's directory is written (a target directory shared between checkouts would otherwise
/// hold another checkout's JSON). Arguments without `--crate-name` (`rustdoc -vV`) pass
/// unchanged.
pub fn wrapped_rustdoc_args(
    args: &[OsString],
    crates: &[&str],
    out_dir: &OsStr,
) -> Option<Vec<OsString>> {
    let crate_name = args
        .iter()
        .position(|a| a == "--crate-name")
        .and_then(|i| args.get(i + 1));
    let Some(crate_name) = crate_name else {
        return Some(args.to_vec());
    };
    if !crates.iter().any(|c| OsStr::new(c) == crate_name) {
        return None;
    }
    let mut kept = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-o" || arg == "--out-dir" {
            match iter.next() {
                Some(dir) if dir == out_dir => {
                    kept.push(arg.clone());
                    kept.push(dir.clone());
                }
                _ => {}
            }
        } else if let Some(dir) = arg.to_str().and_then(|a| a.strip_prefix("--out-dir=")) {
            if OsStr::new(dir) == out_dir {
                kept.push(arg.clone());
            }
        } else {
            kept.push(arg.clone());
        }
    }
    Some(kept)
}

#[derive(serde::Deserialize)]
struct FormatHeader {
    format_version: u32,
}

/// The public API in the rustdoc JSON file at `path`: one line per item, sorted, ending in a
/// newline.
///
/// Each line is an item with its path and kind and, where it has one, its signature: struct
/// fields with their types, enum variants, functions and methods with parameter and return
/// types, trait items, trait impls of public types (derived and auto traits such as `Send` and
/// `Sync` included: losing one breaks users), `#[non_exhaustive]` and re-exports. Blanket impls
/// (`impl<T> From<T> for T`, `Any`, `Borrow`, …) are left out: every type has them, and they
/// change only with the standard library.
pub fn render(path: &Path) -> Result<String, ApiCheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiCheckError::Io {
        path: path.to_owned(),
        source,
    })?;
    let header: FormatHeader = serde_json::from_str(&text).map_err(|e| ApiCheckError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if header.format_version != FORMAT_VERSION {
        return Err(ApiCheckError::FormatVersion {
            path: path.to_owned(),
            found: header.format_version,
        });
    }
    let api = public_api::Builder::from_rustdoc_json(path)
        .omit_blanket_impls(true)
        .build()
        .map_err(|e| ApiCheckError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    Ok(api.to_string())
}

/// The lines that differ between a snapshot and the current API listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiDiff {
    /// Lines in the current listing and not in the snapshot, in listing order.
    pub added: Vec<String>,
    /// Lines in the snapshot and not in the current listing, in snapshot order.
    pub removed: Vec<String>,
    /// Both hold the same lines in another order (the renderer's sorting changed).
    pub reordered: bool,
}

impl ApiDiff {
    /// Compares line by line; a line present twice in one and once in the other counts once as
    /// added or removed.
    pub fn between(snapshot: &str, current: &str) -> Self {
        let mut counts: BTreeMap<&str, isize> = BTreeMap::new();
        for line in current.lines() {
            *counts.entry(line).or_default() += 1;
        }
        for line in snapshot.lines() {
            *counts.entry(line).or_default() -= 1;
        }
        let mut pending = counts.clone();
        let mut added = Vec::new();
        for line in current.lines() {
            let n = pending.get_mut(line).expect("counted above");
            if *n > 0 {
                *n -= 1;
                added.push(line.to_owned());
            }
        }
        let mut removed = Vec::new();
        for line in snapshot.lines() {
            let n = pending.get_mut(line).expect("counted above");
            if *n < 0 {
                *n += 1;
                removed.push(line.to_owned());
            }
        }
        let reordered = added.is_empty() && removed.is_empty() && snapshot != current;
        ApiDiff {
            added,
            removed,
            reordered,
        }
    }

    /// No difference at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && !self.reordered
    }
}

impl fmt::Display for ApiDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.removed {
            writeln!(f, "-{line}")?;
        }
        for line in &self.added {
            writeln!(f, "+{line}")?;
        }
        if self.reordered {
            writeln!(f, "(same lines, in another order)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn diff_lists_added_and_removed_lines() {
        let snapshot = "pub fn a::f()\npub fn a::g()\npub struct a::S\n";
        let current = "pub fn a::f()\npub fn a::h() -> u8\npub struct a::S\n";
        let diff = ApiDiff::between(snapshot, current);
        assert_eq!(diff.added, ["pub fn a::h() -> u8"]);
        assert_eq!(diff.removed, ["pub fn a::g()"]);
        assert!(!diff.is_empty());
        assert_eq!(diff.to_string(), "-pub fn a::g()\n+pub fn a::h() -> u8\n");
    }

    #[test]
    fn diff_of_equal_listings_is_empty() {
        let text = "pub fn a::f()\npub struct a::S\n";
        assert!(ApiDiff::between(text, text).is_empty());
    }

    #[test]
    fn diff_counts_duplicate_lines() {
        let diff = ApiDiff::between("impl X\n", "impl X\nimpl X\n");
        assert_eq!(diff.added, ["impl X"]);
        assert!(diff.removed.is_empty());
    }

    #[test]
    fn diff_notices_a_new_order() {
        let diff = ApiDiff::between("a\nb\n", "b\na\n");
        assert!(diff.reordered);
        assert!(!diff.is_empty());
    }

    #[test]
    fn wrapper_keeps_only_the_runs_output_directory() {
        let args = os(&[
            "--crate-name",
            "qa_core",
            "crates/core/src/lib.rs",
            "-o",
            "/t/doc",
            "-Z",
            "unstable-options",
            "--output-format",
            "json",
            "-o",
            "/t/run1",
        ]);
        let kept = wrapped_rustdoc_args(&args, &["qa_core"], OsStr::new("/t/run1")).unwrap();
        assert_eq!(
            kept,
            os(&[
                "--crate-name",
                "qa_core",
                "crates/core/src/lib.rs",
                "-Z",
                "unstable-options",
                "--output-format",
                "json",
                "-o",
                "/t/run1",
            ])
        );
    }

    #[test]
    fn wrapper_skips_crates_without_a_snapshot() {
        let args = os(&["--crate-name", "qa_cli", "src/lib.rs", "-o", "/t/doc"]);
        assert_eq!(
            wrapped_rustdoc_args(&args, &["qa_core"], OsStr::new("/t/run1")),
            None
        );
    }

    #[test]
    fn wrapper_passes_version_queries_through() {
        let args = os(&["-vV"]);
        assert_eq!(
            wrapped_rustdoc_args(&args, &["qa_core"], OsStr::new("/t/run1")),
            Some(args.clone())
        );
    }
}
