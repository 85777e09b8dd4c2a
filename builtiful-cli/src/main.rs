//! `builtiful`: the command line for Builtiful. All of it lives in the library.

fn main() -> std::process::ExitCode {
    builtiful_cli::main()
}
