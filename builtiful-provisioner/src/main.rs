//! `builtiful-provisioner`: see the library for what it does.

use std::process::ExitCode;

use builtiful_provisioner::{AgentError, Cli, Config, Shutdown};
use clap::Parser;

/// Exit code when the server refuses the token (as the CLI's "authentication needed").
const EXIT_UNAUTHORIZED: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    builtiful_provisioner::init_logging();
    let config = match Config::load(cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = Shutdown::default();
        if let Err(error) = shutdown.on_signals() {
            eprintln!("error: cannot listen for signals: {error}");
            return Err(None);
        }
        builtiful_provisioner::run(config, shutdown)
            .await
            .map_err(Some)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Some(error)) => {
            eprintln!("error: {error}");
            if matches!(error, AgentError::Unauthorized) {
                ExitCode::from(EXIT_UNAUTHORIZED)
            } else {
                ExitCode::FAILURE
            }
        }
        Err(None) => ExitCode::FAILURE,
    }
}
