//! `builtiful-provisioner`: the Builtiful host agent.
//!
//! It offers the host's free vCPUs to the server by long-polling `GET /provisioner/jobs`,
//! reserves a claimed job's vCPUs before launching its runner, keeps the job's lease with
//! heartbeats, reports `RunnerStarted` and `RunnerExited`, and gives the vCPUs back on every
//! path out. Runners are started by an [`executor::Executor`]; the `command` executor runs a
//! launcher program (`launchers/sandbox.sh`, `launchers/qemu.sh`) per job in its own process
//! group. Running jobs are recorded in the state directory so that a restarted provisioner
//! adopts the launchers still alive.
//!
//! The first SIGTERM or SIGINT drains (no new claims; running jobs finish), the second stops
//! the running jobs.

#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod executor;
pub mod metrics;
pub mod state;

pub use agent::{AgentError, Shutdown, run};
pub use config::{Cli, Config};

/// Installs the global log subscriber: human-readable lines on stderr, JSON lines with
/// `BUILTIFUL_LOG_FORMAT=json`; the level from `RUST_LOG` (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("BUILTIFUL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
