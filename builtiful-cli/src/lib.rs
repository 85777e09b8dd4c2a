//! `builtiful`, the command line for Builtiful: log in with GitHub, list your tenants and their
//! jobs, change a tenant's email address.
//!
//! The binary is [`main`]; everything it does goes through [`run`], which takes the arguments
//! and the streams, so tests drive the CLI in-process with buffers and scripted key presses.
//! Each command is a module of [`commands`] that receives a [`Context`].
//!
//! Output follows `gh`: data on stdout (a table on a terminal, tab-separated values without
//! header or colour when piped, `--json` for scripts), everything else on stderr, `NO_COLOR`
//! honoured. Exit codes: 0 ok, 1 error, 2 cancelled, 4 authentication needed.

pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod error;
pub mod format;
pub mod io;
pub mod token_store;

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;

pub use cli::Cli;
pub use context::Context;
pub use io::Io;

use crate::config::Config;
use crate::token_store::{OsKeyring, TokenStore};

/// The binary's entry point: the process's arguments, streams and environment.
pub fn main() -> ExitCode {
    run(std::env::args_os(), Io::std())
}

/// Parses `args` and runs the command with `io`, reading the environment (`BUILTIFUL_SERVER`,
/// `BUILTIFUL_TOKEN`, `BUILTIFUL_CONFIG_DIR`, `BUILTIFUL_NO_KEYRING`, `BROWSER`, …).
///
/// `--help` and `--version` return before anything else happens: no runtime, no keyring.
pub fn run(args: impl IntoIterator<Item = OsString>, mut io: Io) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let text = if io.color && io.stderr_tty {
                error.render().ansi().to_string()
            } else {
                error.render().to_string()
            };
            let stream = if error.use_stderr() {
                &mut io.stderr
            } else {
                &mut io.stdout
            };
            let _ = stream.write_all(text.as_bytes());
            let _ = stream.flush();
            return ExitCode::from(if error.use_stderr() {
                error::code::ERROR
            } else {
                error::code::OK
            });
        }
    };
    let var = |name: &str| std::env::var(name).ok();
    let result = context(&cli, io, var).and_then(|mut ctx| {
        let outcome = execute(cli, &mut ctx);
        let _ = ctx.io.stdout.flush();
        outcome.map_err(|error| (error, ctx.io.stderr))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((error, mut stderr)) => match error::report(&error) {
            None => ExitCode::SUCCESS,
            Some((line, code)) => {
                let _ = writeln!(stderr, "{line}");
                let _ = stderr.flush();
                ExitCode::from(code)
            }
        },
    }
}

type Failure = (anyhow::Error, Box<dyn std::io::Write + Send>);

/// Builds the context from the command line and the environment.
fn context(cli: &Cli, io: Io, var: impl Fn(&str) -> Option<String>) -> Result<Context, Failure> {
    let built = (|| {
        let dir = config::config_dir(&var)?;
        let config = Config::load(&dir)?;
        let server = config::server_url(cli.server.as_deref(), &config)?;
        let keyring = var("BUILTIFUL_NO_KEYRING")
            .is_none_or(|v| v.is_empty() || v == "0")
            .then(|| Arc::new(OsKeyring) as Arc<dyn token_store::Keyring>);
        anyhow::Ok((server, TokenStore::new(keyring, &dir)))
    })();
    match built {
        Ok((server, tokens)) => Ok(Context {
            io,
            server,
            tokens,
            env_token: var("BUILTIFUL_TOKEN").filter(|t| !t.trim().is_empty()),
            browser: var("BROWSER").filter(|b| !b.trim().is_empty()),
        }),
        Err(error) => Err((error, io.stderr)),
    }
}

/// Runs a parsed command.
pub fn execute(cli: Cli, ctx: &mut Context) -> anyhow::Result<()> {
    use cli::{Command, EmailCommand, TenantCommand};
    if let Command::Completions(args) = &cli.command {
        return commands::completions::run(ctx, args.shell);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Login(args) => commands::login::run(ctx, &args).await,
            Command::Logout => commands::logout::run(ctx).await,
            Command::Status => commands::status::run(ctx).await,
            Command::Tenants(args) => commands::tenants::run(ctx, &args).await,
            Command::Jobs(args) => commands::jobs::run(ctx, &args).await,
            Command::Tenant(TenantCommand::Email(EmailCommand::Set(args))) => {
                commands::tenant_email::set(ctx, &args).await
            }
            Command::Completions(_) => unreachable!("handled above"),
        }
    })
}
