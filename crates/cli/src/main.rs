//! The `qa-run` binary: everything is in the `qa_cli` library, so tests drive the same code.
fn main() -> std::process::ExitCode {
    qa_cli::main()
}
