//! `builtiful-server`, as the end-to-end tests run it (the same body as its `main.rs`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    builtiful_server::telemetry::init();
    match builtiful_server::cli::run(builtiful_server::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
