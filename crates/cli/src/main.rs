fn main() -> std::process::ExitCode {
    qa_cli::main()
}
