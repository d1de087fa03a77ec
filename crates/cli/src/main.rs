//! The `qa-run` binary. Everything is in the library ([`qa_cli::main`]), so tests drive the same
//! code.

fn main() -> std::process::ExitCode {
    qa_cli::main()
}
