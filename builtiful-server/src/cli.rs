//! The `builtiful-server` command line.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::auth::{PROVISIONER_PREFIX, Token};
use crate::clock::rfc3339;
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
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Drive the simulated GitHub of a sandbox server: queue jobs, act as a runner.
    #[command(subcommand)]
    Sandbox(sandbox::command::SandboxCommand),
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Set a tenant's limits (both at once; omitting the quota removes it).
    Limits {
        /// The tenant's GitHub login.
        login: String,
        /// The longest a job may run, in seconds.
        #[arg(long, default_value_t = 21_600, value_parser = clap::value_parser!(u64).range(60..=7 * 24 * 3600))]
        max_run_time: u64,
        /// The most vCPUs the tenant's jobs may hold at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(2..))]
        vcpu_quota: Option<u32>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
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
        Command::Tenant(TenantCommand::Limits {
            login,
            max_run_time,
            vcpu_quota,
            database,
        }) => {
            let store = database.connect().await?;
            let found = store
                .set_tenant_limits(
                    &login,
                    max_run_time,
                    vcpu_quota,
                    builtiful_core::Timestamp::now(),
                )
                .await?;
            store.close().await;
            if !found {
                bail!("no tenant has the login `{login}`");
            }
            let quota = vcpu_quota.map_or_else(
                || "no vCPU quota".to_owned(),
                |q| format!("a quota of {q} vCPUs"),
            );
            eprintln!("{login}: jobs run at most {max_run_time} s, {quota}");
            Ok(())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_are_checked() {
        assert!(check_token_name("amd64-01.hel").is_ok());
        assert!(check_token_name("").is_err());
        assert!(check_token_name("has space").is_err());
        assert!(check_token_name(&"x".repeat(65)).is_err());
    }
}
