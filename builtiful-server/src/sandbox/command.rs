//! `builtiful-server sandbox …`: the commands that play GitHub's users and runners against
//! the simulated GitHub of a sandbox server.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use url::Url;

use super::{queue, runner};

/// `builtiful-server sandbox …`.
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Trigger workflow jobs in the simulated GitHub and print their ids, one per line.
    Queue(QueueArgs),
    /// Cancel a workflow job in the simulated GitHub.
    Cancel(CancelArgs),
    /// Act as the actions runner given a JIT config: take one matching job, work on it for
    /// its duration, finish it.
    Runner(RunnerArgs),
}

/// `sandbox queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The sandbox server's public URL (the simulator is at `{URL}/sandbox/github`).
    #[arg(long, env = "BUILTIFUL_SERVER")]
    pub server: Url,
    /// The repository, `OWNER/REPO`.
    #[arg(long)]
    pub repo: String,
    /// A `runs-on` label; repeat for several (labels may contain commas).
    #[arg(long, required = true)]
    pub label: Vec<String>,
    /// How many jobs (one workflow run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,
    /// How long a runner works on each job, in seconds.
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// The conclusion runners report (`success`, `failure`, …).
    #[arg(long, default_value = "success")]
    pub conclusion: String,
}

/// `sandbox cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The sandbox server's public URL.
    #[arg(long, env = "BUILTIFUL_SERVER")]
    pub server: Url,
    /// The workflow job's id.
    pub job_id: u64,
}

/// `sandbox runner`.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// The encoded JIT config (`encoded_jit_config`).
    #[arg(
        long = "jitconfig",
        env = "BUILTIFUL_JIT_CONFIG",
        hide_env_values = true
    )]
    pub jit_config: Option<String>,
    /// A file holding the encoded JIT config.
    #[arg(long = "jitconfig-file", env = "BUILTIFUL_JIT_CONFIG_FILE")]
    pub jit_config_file: Option<PathBuf>,
    /// Give up (exit 1) when no job came within this many seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout: u64,
}

/// The simulator's URL on the sandbox server at `server`.
pub fn simulator_url(server: &Url) -> String {
    format!(
        "{}{}",
        server.as_str().trim_end_matches('/'),
        super::MOUNT_PATH
    )
}

/// Runs a `sandbox` command.
pub async fn run(command: SandboxCommand) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Queue(args) => queue::queue(&args).await,
        SandboxCommand::Cancel(args) => queue::cancel(&args).await,
        SandboxCommand::Runner(args) => runner::run(&args).await,
    }
}
