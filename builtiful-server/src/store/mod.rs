//! Storage: the [`Store`] trait and its two backends, SQLite (the default, one file) and
//! PostgreSQL (for several server replicas). The backend is picked from the URL scheme.
//!
//! Times are stored as microseconds since the epoch and ids as UUIDs in both backends, so the
//! row types in [`rows`] and most SQL are shared; `shared` writes the queries both dialects
//! accept once, and each backend adds what only it can do.

mod postgres;
mod rows;
mod shared;
mod sqlite;

use std::fmt;

use async_trait::async_trait;
use builtiful_core::{
    CpuArchitecture, FailureReason, Job, JobList, JobStatus, Os, Page, Tenant, Timestamp, User,
};
use uuid::Uuid;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The SHA-256 of a bearer token: tokens are stored only in this form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell hashes apart in a log, and says nothing about the token.
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is already taken (a name, an id).
    #[error("{0}")]
    Conflict(String),
    /// A pagination cursor that is not a job of the tenant.
    #[error("the cursor {0} is not a job of this tenant")]
    UnknownCursor(Uuid),
    /// The database could not be reached in time (pool exhausted, server down).
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value that this version cannot read (written by a newer version, or damaged).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL cannot be used.
    #[error("{0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(error)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::Conflict(db.message().to_owned())
            }
            _ => Self::Database(error),
        }
    }
}

/// Shorthand for storage results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: one file, one process.
    Sqlite,
    /// PostgreSQL: shared by server replicas.
    Postgres,
}

/// A GitHub user as the login flow saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    /// GitHub's numeric user id.
    pub github_id: i64,
    /// The GitHub login.
    pub github_login: String,
    /// The display name.
    pub github_name: Option<String>,
    /// The primary verified email.
    pub email: Option<String>,
}

/// A GitHub App installation as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// The installation id.
    pub github_installation_id: i64,
    /// The id of the account it is installed on.
    pub github_id: i64,
    /// The login of the account it is installed on.
    pub github_login: String,
    /// Whether the installation is suspended.
    pub suspended: bool,
}

/// A job to record, as a webhook described it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInsert {
    /// The tenant the job belongs to.
    pub tenant_id: Uuid,
    /// GitHub's id of the workflow job.
    pub workflow_job_id: i64,
    /// The repository's full name.
    pub repository: String,
    /// Who triggered the workflow.
    pub initiator: String,
    /// Their GitHub id.
    pub initiator_github_id: i64,
    /// Requested architecture.
    pub cpu_architecture: CpuArchitecture,
    /// Requested OS.
    pub os: Os,
    /// The label as written.
    pub label: String,
    /// Requested vCPUs.
    pub vcpus: u32,
    /// `Queued`, or `Failed` for a label that cannot run.
    pub status: JobStatus,
    /// Why, when `Failed`.
    pub failure_reason: Option<FailureReason>,
    /// The raw `workflow_job` object.
    pub workflow_job: serde_json::Value,
}

/// A provisioner token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionerToken {
    /// Its id.
    pub id: Uuid,
    /// The unique name given at creation.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When a provisioner last used it.
    pub last_used_at: Option<Timestamp>,
}

/// Everything the server keeps. Both backends pass the same conformance suite.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Closes the connections, waiting for those in use.
    async fn close(&self);

    /// Creates or refreshes a user from their GitHub profile (keyed on the GitHub id).
    async fn upsert_user(&self, profile: &UserProfile, now: Timestamp) -> Result<User>;

    /// A user by id.
    async fn user(&self, id: Uuid) -> Result<Option<User>>;

    /// Creates or refreshes a tenant from its installation (keyed on the installation id).
    async fn upsert_tenant(&self, installation: &Installation, now: Timestamp) -> Result<Tenant>;

    /// A tenant by id.
    async fn tenant(&self, id: Uuid) -> Result<Option<Tenant>>;

    /// Replaces the set of tenants a user belongs to.
    async fn set_memberships(&self, user_id: Uuid, tenant_ids: &[Uuid]) -> Result<()>;

    /// The tenants a user belongs to, by login.
    async fn tenants_of_user(&self, user_id: Uuid) -> Result<Vec<Tenant>>;

    /// The tenant, if the user belongs to it.
    async fn tenant_of_user(&self, user_id: Uuid, tenant_id: Uuid) -> Result<Option<Tenant>>;

    /// Sets a tenant's email address.
    async fn set_tenant_email(&self, tenant_id: Uuid, email: &str, now: Timestamp) -> Result<()>;

    /// Records that an email confirmation link was used; `false` if it already was.
    async fn consume_email_verification(
        &self,
        jti: Uuid,
        tenant_id: Uuid,
        expires_at: Timestamp,
    ) -> Result<bool>;

    /// Starts a session.
    async fn create_session(
        &self,
        token_hash: TokenHash,
        user_id: Uuid,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()>;

    /// The user of a live session.
    async fn session_user(&self, token_hash: TokenHash, now: Timestamp) -> Result<Option<User>>;

    /// Ends a session; `false` if there was none.
    async fn delete_session(&self, token_hash: TokenHash) -> Result<bool>;

    /// Ends every session of a user; returns how many there were.
    async fn delete_user_sessions(&self, user_id: Uuid) -> Result<u64>;

    /// Deletes expired sessions and confirmation records; returns how many rows went.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64>;

    /// Records a job and counts it for its tenant, in one transaction.
    async fn insert_job(&self, job: &JobInsert, now: Timestamp) -> Result<Job>;

    /// One page of a tenant's jobs, newest first, with the tenant's total.
    async fn list_jobs(&self, tenant_id: Uuid, page: Page) -> Result<JobList>;

    /// Creates a provisioner token; `Conflict` if the name is taken.
    async fn create_provisioner_token(
        &self,
        name: &str,
        token_hash: TokenHash,
        now: Timestamp,
    ) -> Result<ProvisionerToken>;

    /// Every provisioner token, by name.
    async fn provisioner_tokens(&self) -> Result<Vec<ProvisionerToken>>;

    /// Deletes a provisioner token by name; `false` if there was none.
    async fn revoke_provisioner_token(&self, name: &str) -> Result<bool>;

    /// The provisioner token with this hash, marking it used.
    async fn authenticate_provisioner(
        &self,
        token_hash: TokenHash,
        now: Timestamp,
    ) -> Result<Option<ProvisionerToken>>;
}

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`) and migrates it.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL `{}`: use sqlite://PATH or postgres://…",
            redact_url(url)
        )))
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}
