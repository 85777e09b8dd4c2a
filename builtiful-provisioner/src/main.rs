//! `builtiful-provisioner`: the host agent. Its loop arrives with the provisioner issue.

use clap::Parser;

/// Claims Builtiful jobs that fit this host's free vCPUs and runs them.
#[derive(Debug, Parser)]
#[command(name = "builtiful-provisioner", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!(
        "builtiful-provisioner {}: the agent loop is not available yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(1);
}
