//! The `serve` configuration: flags and `BUILTIFUL_*` environment variables, their defaults,
//! and building the [`App`] from them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use lettre::message::Mailbox;
use url::Url;

use crate::app::{App, Settings, WebhookSecret};
use crate::clock::SystemClock;
use crate::crypto::Sealer;
use crate::dispatch::Dispatcher;
use crate::dispatch::reconciler::Redeliveries;
use crate::github::{GitHubConfig, HttpGitHub};
use crate::mail::{Mailer, OutboxMailer, SmtpMailer};
use crate::metrics::Metrics;
use crate::sandbox;
use crate::sandbox::github::{SANDBOX_APP_PRIVATE_KEY_PEM, SimulatedGitHub, SimulatorConfig};
use crate::secret::{self, Secret};
use crate::store::{self, Store};

/// Where the database lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` or `postgres://…` [default: a SQLite file in the platform data dir]
    #[arg(long, env = "BUILTIFUL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL to use: the given one, or the default SQLite file.
    pub fn url(&self) -> anyhow::Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => Ok(format!(
                "sqlite://{}",
                data_dir()?.join("builtiful.db").display()
            )),
        }
    }

    /// Opens and migrates the database.
    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = self.url()?;
        store::connect(&url)
            .await
            .with_context(|| format!("cannot open the database {}", store::redact_url(&url)))
    }
}

/// The platform's data directory for Builtiful (`~/.local/share/builtiful` on Linux).
pub fn data_dir() -> anyhow::Result<PathBuf> {
    directories::ProjectDirs::from("", "", "builtiful")
        .map(|dirs| dirs.data_dir().to_owned())
        .context("cannot find a home directory for the default data dir; pass --database-url")
}

/// `builtiful-server serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "BUILTIFUL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The URL people and GitHub reach this server at [default: http://LISTEN]
    #[arg(long, env = "BUILTIFUL_PUBLIC_URL")]
    pub public_url: Option<Url>,
    /// A web frontend's origin, allowed for CORS and redirects (repeat, or comma-separate)
    #[arg(long, env = "BUILTIFUL_FRONTEND_ORIGIN", value_delimiter = ',')]
    pub frontend_origin: Vec<Url>,
    /// A file holding the signing secret [default: generated once beside the database]
    #[arg(long, env = "BUILTIFUL_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// The GitHub App's numeric id.
    #[arg(long, env = "BUILTIFUL_GITHUB_APP_ID")]
    pub github_app_id: Option<u64>,
    /// The GitHub App's OAuth client id (`Iv1…`).
    #[arg(long, env = "BUILTIFUL_GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,
    /// The GitHub App's OAuth client secret.
    #[arg(long, env = "BUILTIFUL_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    pub github_client_secret: Option<String>,
    /// The GitHub App's private key (PEM file).
    #[arg(long, env = "BUILTIFUL_GITHUB_PRIVATE_KEY")]
    pub github_private_key: Option<PathBuf>,
    /// The secret GitHub signs webhooks with.
    #[arg(long, env = "BUILTIFUL_GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<String>,
    /// GitHub's REST API (GitHub Enterprise, or the sandbox) [default: https://api.github.com]
    #[arg(long, env = "BUILTIFUL_GITHUB_API_URL")]
    pub github_api_url: Option<Url>,
    /// An SMTP server for mail (`smtp://user:pass@host:587`); without it mail goes to an outbox folder.
    #[arg(long, env = "BUILTIFUL_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of mail [default: Builtiful <builtiful@PUBLIC-URL-HOST>]
    #[arg(long, env = "BUILTIFUL_MAIL_FROM")]
    pub mail_from: Option<Mailbox>,
    /// Register JIT runners at the organisation instead of the repository.
    #[arg(long, env = "BUILTIFUL_GITHUB_ORGANIZATION_RUNNERS")]
    pub github_organization_runners: bool,
    /// Replace GitHub with the built-in simulator and seed demo organisations and users.
    #[arg(long, env = "BUILTIFUL_SANDBOX")]
    pub sandbox: bool,
}

impl ServeArgs {
    /// The GitHub settings that are missing, by flag name.
    pub fn missing_github_settings(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.github_app_id.is_none() {
            missing.push("--github-app-id");
        }
        if self.github_client_id.is_none() {
            missing.push("--github-client-id");
        }
        if self.github_client_secret.is_none() {
            missing.push("--github-client-secret");
        }
        if self.github_private_key.is_none() {
            missing.push("--github-private-key");
        }
        if self.github_webhook_secret.is_none() {
            missing.push("--github-webhook-secret");
        }
        missing
    }

    /// The public URL: the given one, or the address the server is bound to over plain http.
    pub fn public_url(&self, bound: SocketAddr) -> Url {
        self.public_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://{bound}"))
                .unwrap_or_else(|e| unreachable!("a socket address makes a URL: {e}"))
        })
    }

    /// Checks the GitHub settings: all of them, unless the sandbox replaces GitHub.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.sandbox {
            let missing = self.missing_github_settings();
            if !missing.is_empty() {
                bail!(
                    "GitHub App settings are missing: {} (flags, or BUILTIFUL_* environment \
                     variables); or run with --sandbox to use the built-in GitHub simulator",
                    missing.join(", ")
                );
            }
        }
        Ok(())
    }

    /// Builds the application for a server bound to `bound`.
    pub async fn build(&self, bound: SocketAddr) -> anyhow::Result<App> {
        self.check()?;
        let public_url = self.public_url(bound);
        let url = self.database.url()?;
        let state_dir = state_dir(&url)?;
        let secret = match &self.secret_file {
            Some(path) => secret::read(path)?,
            None => secret::read_or_create(&state_dir.join("secret"))?,
        };
        let from = match &self.mail_from {
            Some(from) => from.clone(),
            None => default_sender(&public_url)?,
        };
        let mailer: Arc<dyn Mailer> = match &self.smtp_url {
            Some(smtp) => Arc::new(SmtpMailer::new(smtp, from)?),
            None => Arc::new(OutboxMailer::new(&state_dir.join("outbox"), from)?),
        };
        let (github, webhook_secret, sandbox) = if self.sandbox {
            let (simulator, github, secret) = self.simulator(&public_url)?;
            (github, secret, Some(simulator))
        } else {
            let (github, secret) = self.github()?;
            (github, secret, None)
        };
        let store = self.database.connect().await?;
        Ok(App {
            store,
            settings: Settings {
                public_url,
                frontend_origins: self.frontend_origin.clone(),
                organization_runners: self.github_organization_runners,
            },
            mailer,
            clock: Arc::new(SystemClock),
            sealer: Sealer::new(&secret, "github-token"),
            secret,
            github: Arc::new(HttpGitHub::new(&github)?),
            webhook_secret: WebhookSecret(webhook_secret),
            sandbox,
            dispatcher: Dispatcher::default(),
            redeliveries: Redeliveries::default(),
            reconcile_every: Some(crate::dispatch::reconciler::INTERVAL),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The simulated GitHub of a sandbox server at `public_url`, with the configuration the
    /// server's GitHub client needs to talk to it.
    pub fn simulator(
        &self,
        public_url: &Url,
    ) -> anyhow::Result<(Arc<SimulatedGitHub>, GitHubConfig, String)> {
        let base = sandbox_github_url(public_url);
        let webhook_secret = self
            .github_webhook_secret
            .clone()
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 20]>()));
        let (simulator, github) =
            sandbox_github(base, public_url.join("webhooks/github")?, &webhook_secret)?;
        Ok((simulator, github, webhook_secret))
    }

    /// How to reach GitHub and the webhook secret, from the flags.
    pub fn github(&self) -> anyhow::Result<(GitHubConfig, String)> {
        let missing = || {
            anyhow::anyhow!(
                "{}",
                self.check()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            )
        };
        let key_path = self.github_private_key.as_ref().ok_or_else(missing)?;
        let private_key_pem = std::fs::read(key_path).with_context(|| {
            format!(
                "cannot read the GitHub App private key {}",
                key_path.display()
            )
        })?;
        let api_url = self.github_api_url.clone().unwrap_or_else(|| {
            Url::parse("https://api.github.com").unwrap_or_else(|e| unreachable!("{e}"))
        });
        let config = GitHubConfig {
            web_url: GitHubConfig::web_url_for(&api_url),
            api_url,
            app_id: self.github_app_id.ok_or_else(missing)?,
            client_id: self.github_client_id.clone().ok_or_else(missing)?,
            client_secret: self.github_client_secret.clone().ok_or_else(missing)?,
            private_key_pem,
        };
        Ok((
            config,
            self.github_webhook_secret.clone().ok_or_else(missing)?,
        ))
    }
}

/// Where the simulated GitHub is mounted on a sandbox server (with a trailing slash, so
/// relative paths join under it).
pub fn sandbox_github_url(public_url: &Url) -> Url {
    let mut url = public_url.clone();
    url.set_path(&format!("{}/", sandbox::MOUNT_PATH));
    url.set_query(None);
    url
}

/// A simulated GitHub mounted at `base`, delivering webhooks to `webhook_url`, and the
/// configuration of a GitHub client that talks to it as the sandbox App.
pub fn sandbox_github(
    base: Url,
    webhook_url: Url,
    webhook_secret: &str,
) -> anyhow::Result<(Arc<SimulatedGitHub>, GitHubConfig)> {
    let config = SimulatorConfig::sandbox(base.clone(), webhook_url, webhook_secret.to_owned());
    let github = GitHubConfig {
        api_url: base.join("api")?,
        web_url: base,
        app_id: config.app_id,
        client_id: config.client_id.clone(),
        client_secret: config.client_secret.clone(),
        private_key_pem: SANDBOX_APP_PRIVATE_KEY_PEM.as_bytes().to_vec(),
    };
    Ok((SimulatedGitHub::new(config)?, github))
}

/// Where the server keeps its own files (secret, outbox): beside a SQLite database, else in
/// the data dir.
fn state_dir(database_url: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    {
        let path = Path::new(path.split('?').next().unwrap_or(path));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            return Ok(dir.to_owned());
        }
        return Ok(PathBuf::from("."));
    }
    data_dir()
}

fn default_sender(public_url: &Url) -> anyhow::Result<Mailbox> {
    let host = public_url.host_str().unwrap_or("localhost");
    let host = if host.contains('.') {
        host
    } else {
        "localhost.localdomain"
    };
    format!("Builtiful <builtiful@{host}>")
        .parse()
        .context("cannot make a sender address from the public URL; pass --mail-from")
}

/// A secret for tests and tools that need one without files.
pub fn random_secret() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::from_bytes(hex::encode(bytes).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_follows_the_sqlite_file() {
        assert_eq!(
            state_dir("sqlite:///var/lib/builtiful/db.sqlite?mode=rwc").unwrap(),
            PathBuf::from("/var/lib/builtiful")
        );
        assert_eq!(state_dir("sqlite://db.sqlite").unwrap(), PathBuf::from("."));
    }
}
