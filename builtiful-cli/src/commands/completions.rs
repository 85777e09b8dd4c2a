//! `builtiful completions SHELL`: a completion script on stdout.

use clap::CommandFactory as _;

use crate::{Cli, Context};

/// Writes the completion script for `shell`.
pub fn run(ctx: &mut Context, shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "builtiful", &mut ctx.io.stdout);
    Ok(())
}
