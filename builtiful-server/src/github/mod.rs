//! Everything that talks to GitHub: the [`GitHub`] trait the rest of the server uses, and its
//! HTTP implementation ([`HttpGitHub`]), which speaks to api.github.com, GitHub Enterprise, or
//! the sandbox's simulated GitHub alike.

mod app_auth;
mod http;
mod rate_limit;
pub(crate) mod wire;

use std::fmt;

use async_trait::async_trait;
use builtiful_core::Timestamp;

pub use http::{GitHubConfig, HttpGitHub};
pub use wire::parse_time;

use crate::store::Installation;

/// What can go wrong talking to GitHub.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// GitHub answered with an error status.
    #[error("GitHub answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// GitHub's `message`.
        message: String,
    },
    /// We are rate limited until then; no request is sent before it.
    #[error("rate limited by GitHub until {} (epoch seconds)", until.secs_since_epoch)]
    RateLimited {
        /// When calls may resume.
        until: Timestamp,
    },
    /// The OAuth token endpoint refused (GitHub says so with HTTP 200 and an `error` field).
    #[error("GitHub refused the sign-in: {description} ({error})")]
    OAuth {
        /// The OAuth error code, such as `bad_verification_code`.
        error: String,
        /// GitHub's explanation.
        description: String,
    },
    /// No answer: connection refused, timeout, TLS failure.
    #[error("cannot reach GitHub: {0}")]
    Transport(#[source] reqwest::Error),
    /// An answer we cannot read.
    #[error("unexpected answer from GitHub: {0}")]
    Decode(String),
}

impl GitHubError {
    /// Whether trying again later may succeed (network trouble, 5xx, rate limits).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) | Self::RateLimited { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::OAuth { .. } | Self::Decode(_) => false,
        }
    }

    /// Whether GitHub said the resource does not exist (or is not ours to see).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }

    /// Whether the credentials were refused.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Status { status: 401, .. })
    }
}

/// Shorthand for GitHub results.
pub type Result<T, E = GitHubError> = std::result::Result<T, E>;

/// A user's access to GitHub on their behalf. `Debug` redacts the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct UserToken {
    /// The `ghu_` token.
    pub access_token: String,
    /// The `ghr_` token that renews it, when GitHub issued one.
    pub refresh_token: Option<String>,
    /// When the access token expires, when it does.
    pub expires_at: Option<Timestamp>,
}

impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A GitHub user as `/user` describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubUser {
    /// The numeric id (stable; logins change).
    pub id: i64,
    /// The login.
    pub login: String,
    /// The display name.
    pub name: Option<String>,
}

/// Where a runner is registered: one repository, or an organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerScope {
    /// `/repos/{owner}/{repo}/actions/runners`.
    Repository {
        /// The owner's login.
        owner: String,
        /// The repository's name.
        repo: String,
    },
    /// `/orgs/{org}/actions/runners`.
    Organization {
        /// The organisation's login.
        org: String,
    },
}

impl RunnerScope {
    /// The API path of the scope's runners.
    pub fn runners_path(&self) -> String {
        match self {
            Self::Repository { owner, repo } => format!("repos/{owner}/{repo}/actions/runners"),
            Self::Organization { org } => format!("orgs/{org}/actions/runners"),
        }
    }
}

/// A registered self-hosted runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// GitHub's id of the runner.
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// `online` or `offline`.
    pub status: String,
    /// Whether it is running a job.
    pub busy: bool,
}

/// A just-in-time runner registration. `Debug` redacts the config.
#[derive(Clone, PartialEq, Eq)]
pub struct JitConfig {
    /// The runner registered for it.
    pub runner: Runner,
    /// What `./run.sh --jitconfig` takes.
    pub encoded_jit_config: String,
}

impl fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitConfig")
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

/// A webhook delivery as the App's hook log lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The attempt's id (what redelivery takes).
    pub id: i64,
    /// The GUID shared by every attempt of one event (`X-GitHub-Delivery`).
    pub guid: String,
    /// Whether the attempt got a 2xx.
    pub delivered: bool,
    /// The event name.
    pub event: String,
}

/// GitHub, as the server needs it. Behind a trait so the sandbox and tests can point it
/// anywhere; the HTTP implementation serves both GitHub and the simulator.
#[async_trait]
pub trait GitHub: Send + Sync + fmt::Debug + 'static {
    /// The page of GitHub's that asks a person to sign in with the App (OAuth web flow).
    fn authorize_url(&self, state: &str, callback: &url::Url) -> url::Url;

    /// Trades the code GitHub's redirect carried for a user token.
    async fn exchange_code(&self, code: &str, callback: &url::Url) -> Result<UserToken>;

    /// Renews a user token with its refresh token.
    async fn refresh_user_token(&self, refresh_token: &str) -> Result<UserToken>;

    /// `GET /user`.
    async fn user(&self, token: &str) -> Result<GitHubUser>;

    /// The user's primary verified address (`GET /user/emails`), if any.
    async fn primary_email(&self, token: &str) -> Result<Option<String>>;

    /// Every installation of the App the user can reach (`GET /user/installations`, all pages).
    async fn user_installations(&self, token: &str) -> Result<Vec<Installation>>;

    /// Registers a just-in-time runner for one job.
    async fn generate_jitconfig(
        &self,
        installation_id: i64,
        scope: &RunnerScope,
        name: &str,
        labels: &[String],
    ) -> Result<JitConfig>;

    /// The runners of a scope, optionally only the one with this name.
    async fn runners(
        &self,
        installation_id: i64,
        scope: &RunnerScope,
        name: Option<&str>,
    ) -> Result<Vec<Runner>>;

    /// Deletes a runner registration.
    async fn delete_runner(&self, installation_id: i64, scope: &RunnerScope, id: i64)
    -> Result<()>;

    /// The App's webhook deliveries, newest first (one page).
    async fn deliveries(&self) -> Result<Vec<Delivery>>;

    /// Asks GitHub to deliver an event again.
    async fn redeliver(&self, delivery_id: i64) -> Result<()>;
}
