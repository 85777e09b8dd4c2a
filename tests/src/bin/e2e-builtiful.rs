//! `builtiful`, as the end-to-end tests run it.

fn main() -> std::process::ExitCode {
    builtiful_cli::main()
}
