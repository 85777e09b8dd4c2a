//! `builtiful`: the command line for Builtiful. Its commands arrive with the CLI issue.

use clap::Parser;

/// Run GitHub Actions jobs on right-sized, ephemeral runners.
#[derive(Debug, Parser)]
#[command(name = "builtiful", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!(
        "builtiful {}: no commands are available yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(1);
}
