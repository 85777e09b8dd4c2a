//! The `builtiful-server` command line.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::auth::{PROVISIONER_PREFIX, Token};
use crate::config::{DatabaseArgs, ServeArgs};
use crate::{routes, sandbox, server};

/// The Builtiful server: REST API, webhooks, dispatch.
#[derive(Debug, Parser)]
#[command(name = "builtiful-server", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations, then exit.
    Migrate(DatabaseArgs),
    /// Manage the tokens provisioners authenticate with.
    #[command(subcommand)]
    ProvisionerToken(TokenCommand),
    /// Print the OpenAPI document.
    Openapi,
    /// Drive the simulated GitHub of a sandbox server: queue jobs, act as a runner.
    #[command(subcommand)]
    Sandbox(sandbox::command::SandboxCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (alone, on stdout). It is shown only this once.
    Create {
        /// A unique name, such as the host or fleet it is for.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List the tokens (names and use, never the tokens).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a token: provisioners using it are refused from now on.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&args).await,
        Command::Migrate(database) => {
            database.connect().await?.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::ProvisionerToken(command) => provisioner_token(command).await,
        Command::Openapi => {
            println!("{}", routes::openapi_json());
            Ok(())
        }
        Command::Sandbox(command) => sandbox::command::run(command).await,
    }
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    args.check()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let app = args.build(bound).await?;
    let public = app.settings.public_url.clone();
    if args.sandbox {
        let seeded = sandbox::seed(app.store.as_ref(), app.now()).await?;
        print_sandbox_banner(&public, &seeded, &app.webhook_secret.0);
    }
    tracing::info!(listen = %bound, public_url = %public, backend = ?app.store.backend(), "serving");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    server::serve(listener, Arc::new(app), shutdown).await
}

fn print_sandbox_banner(public: &url::Url, seeded: &sandbox::Seeded, webhook_secret: &str) {
    let base = public.as_str().trim_end_matches('/');
    let mut text = format!(
        "\nBuiltiful sandbox: GitHub is simulated, nothing leaves this machine.\n\
         \x20 API            {base}\n\
         \x20 API reference  {base}/docs\n\
         \x20 Sign in        {base}/auth/github/login?redirect_uri={base}/tenants (GitHub is simulated at {base}{mount})\n\
         \x20 Webhook secret {webhook_secret}\n\
         \x20 Organisations  ",
        mount = sandbox::MOUNT_PATH
    );
    let orgs: Vec<_> = sandbox::ORGS
        .iter()
        .map(|o| format!("{} ({})", o.login, o.repositories.join(", ")))
        .collect();
    text.push_str(&orgs.join("; "));
    text.push_str("\n  Users          ");
    let users: Vec<_> = sandbox::USERS
        .iter()
        .map(|u| format!("{} (reaches {})", u.login, u.orgs.join(", ")))
        .collect();
    text.push_str(&users.join("; "));
    text.push_str("\n  Provisioner    BUILTIFUL_TOKEN=");
    text.push_str(seeded.provisioner_token.expose());
    text.push('\n');
    eprintln!("{text}");
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(error = %error, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
    shutdown.cancel();
}

fn check_token_name(name: &str) -> anyhow::Result<()> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        bail!("invalid token name `{name}`: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

async fn provisioner_token(command: TokenCommand) -> anyhow::Result<()> {
    let now = builtiful_core::Timestamp::now();
    match command {
        TokenCommand::Create { name, database } => {
            check_token_name(&name)?;
            let store = database.connect().await?;
            let token = Token::generate(PROVISIONER_PREFIX);
            store
                .create_provisioner_token(&name, token.hash(), now)
                .await?;
            store.close().await;
            println!("{}", token.expose());
            eprintln!("created provisioner token `{name}`; it is shown only this once");
        }
        TokenCommand::List { database } => {
            let store = database.connect().await?;
            let tokens = store.provisioner_tokens().await?;
            store.close().await;
            let mut out = std::io::stdout().lock();
            writeln!(out, "NAME\tCREATED\tLAST USED")?;
            for token in tokens {
                let last = token
                    .last_used_at
                    .map_or_else(|| "never".to_owned(), rfc3339);
                writeln!(out, "{}\t{}\t{last}", token.name, rfc3339(token.created_at))?;
            }
        }
        TokenCommand::Revoke { name, database } => {
            let store = database.connect().await?;
            let revoked = store.revoke_provisioner_token(&name).await?;
            store.close().await;
            if !revoked {
                bail!("no provisioner token is named `{name}`");
            }
            eprintln!("revoked provisioner token `{name}`");
        }
    }
    Ok(())
}

/// A UTC timestamp as `2026-12-04T20:01:12Z`.
fn rfc3339(time: builtiful_core::Timestamp) -> String {
    let secs = time.secs_since_epoch;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        let t = builtiful_core::Timestamp::from_secs(1_730_738_711);
        assert_eq!(rfc3339(t), "2024-11-04T16:45:11Z");
        assert_eq!(
            rfc3339(builtiful_core::Timestamp::from_secs(0)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn token_names_are_checked() {
        assert!(check_token_name("amd64-01.hel").is_ok());
        assert!(check_token_name("").is_err());
        assert!(check_token_name("has space").is_err());
        assert!(check_token_name(&"x".repeat(65)).is_err());
    }
}
