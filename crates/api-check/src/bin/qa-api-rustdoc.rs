//! The rustdoc that `cargo doc` runs (as `RUSTDOC`) while the API snapshots are made: it
//! documents only the snapshotted crates, into the run's own directory, and lets that rustdoc
//! alone use its unstable JSON output (`RUSTC_BOOTSTRAP=1`), see
//! `qa_api_check::generate_rustdoc_json`.

use std::ffi::OsString;
use std::process::{Command, ExitCode};

use qa_api_check::{ENV_CRATES, ENV_OUT_DIR, ENV_REAL_RUSTDOC, wrapped_rustdoc_args};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let real = std::env::var_os(ENV_REAL_RUSTDOC).unwrap_or_else(|| "rustdoc".into());
    let args = match (std::env::var(ENV_CRATES), std::env::var_os(ENV_OUT_DIR)) {
        (Ok(crates), Some(out_dir)) => {
            let crates: Vec<&str> = crates.split(',').collect();
            match wrapped_rustdoc_args(&args, &crates, &out_dir) {
                Some(args) => args,
                None => return ExitCode::SUCCESS,
            }
        }
        _ => args,
    };
    match Command::new(&real)
        .args(&args)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
    {
        Ok(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!(
                "qa-api-rustdoc: could not run {}: {e}; set {ENV_REAL_RUSTDOC} to the rustdoc to use",
                real.to_string_lossy()
            );
            ExitCode::FAILURE
        }
    }
}
