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

/// The whole seconds a job ran (zero if it never started) and that time rounded up to a whole
/// minute, which is what is billed.
pub fn run_time(started_at: Option<Timestamp>, completed_at: Timestamp) -> (u64, u64) {
    let duration = started_at.map_or(0, |started| completed_at.whole_secs_since(started));
    (duration, duration.div_ceil(60) * 60)
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

/// A job to record, as a webhook described it. Webhooks can arrive out of order, so a job may
/// be first seen running or even finished: the insert carries its whole initial state.
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
    /// Waiting for an environment approval: not claimable until queued again.
    pub waiting: bool,
    /// When a runner started it, if that is already known.
    pub started_at: Option<Timestamp>,
    /// When it ended, if it already did.
    pub completed_at: Option<Timestamp>,
    /// The raw `workflow_job` object.
    pub workflow_job: serde_json::Value,
}

/// A job with the bookkeeping the API does not show.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job as the API shows it.
    pub job: Job,
    /// Waiting for an environment approval.
    pub waiting: bool,
    /// The name of the runner registered for it (`builtiful-<job id>`).
    pub runner_name: Option<String>,
    /// The host that holds it.
    pub host: Option<String>,
}

/// A change of a job's state, applied only if the job is still in the state it was read in
/// (compare-and-set), so concurrent webhooks can never move a job backwards.
#[derive(Debug, Clone, PartialEq)]
pub struct JobChange {
    /// The new status.
    pub status: JobStatus,
    /// Why it failed, when it did.
    pub failure_reason: Option<FailureReason>,
    /// When it started (`None` keeps what is stored).
    pub started_at: Option<Timestamp>,
    /// When it ended (`None` keeps what is stored).
    pub completed_at: Option<Timestamp>,
    /// Seconds it ran, once it ended (`None` keeps what is stored).
    pub duration: Option<u64>,
    /// Waiting for an environment approval.
    pub waiting: bool,
    /// The raw `workflow_job` of the webhook that made the change.
    pub workflow_job: serde_json::Value,
}

/// What a provisioner offers when it asks for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFilter {
    /// The host's architecture.
    pub architecture: CpuArchitecture,
    /// The host's free vCPUs.
    pub available_vcpus: u32,
    /// The host's name.
    pub host: String,
    /// The provisioner token it authenticated with.
    pub provisioner_id: Uuid,
    /// Until when the claimed job is leased.
    pub lease_expires_at: Timestamp,
}

/// A job just moved to `Provisioning` for a host.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// The job.
    pub job: Job,
    /// Its tenant's App installation.
    pub github_installation_id: i64,
    /// The name its runner registers under.
    pub runner_name: String,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The lease is renewed; keep going.
    Renewed,
    /// The job ended (cancelled, completed or failed): stop its runner.
    Ended,
    /// The job is not held by this provisioner.
    NotHeld,
}

/// A job whose lease ran out, as the reconciler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredLease {
    /// The job.
    pub job: Job,
    /// Its tenant's App installation.
    pub github_installation_id: i64,
    /// How many times it was handed to a host.
    pub attempts: u32,
    /// The runner registered for it, if any.
    pub runner_id: Option<i64>,
}

/// A login in progress: kept server-side between the redirect to GitHub and its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthState {
    /// The SHA-256 of the `state` parameter.
    pub state_hash: TokenHash,
    /// Where to send the person afterwards.
    pub redirect_uri: String,
    /// The CLI's PKCE challenge, when the login is a CLI's.
    pub code_challenge: Option<String>,
    /// When the login expires.
    pub expires_at: Timestamp,
}

/// A user's GitHub token, encrypted at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedGitHubToken {
    /// The sealed access token.
    pub access_token: Vec<u8>,
    /// The sealed refresh token.
    pub refresh_token: Option<Vec<u8>>,
    /// When the access token expires.
    pub expires_at: Option<Timestamp>,
}

impl fmt::Debug for SealedGitHubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedGitHubToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
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

    /// Sets a tenant's limits: the longest a job may run (seconds), and the most vCPUs its jobs
    /// may hold at once (`None`: no quota). `false` if no tenant has that login.
    async fn set_tenant_limits(
        &self,
        github_login: &str,
        max_run_time: u64,
        vcpu_quota: Option<u32>,
        now: Timestamp,
    ) -> Result<bool>;

    /// The repositories (with their installation) that had jobs created after `since`: where
    /// runner registrations of ours may linger.
    async fn recent_repositories(&self, since: Timestamp) -> Result<Vec<(i64, String)>>;

    /// Queued, claimable jobs by architecture and size.
    async fn queue_depth(&self) -> Result<Vec<(CpuArchitecture, u32, u64)>>;

    /// vCPUs held by `Provisioning` and `Running` jobs, by host.
    async fn held_vcpus_by_host(&self) -> Result<Vec<(String, u64)>>;

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

    /// A job by GitHub's workflow job id.
    async fn job_by_workflow_job_id(&self, workflow_job_id: i64) -> Result<Option<JobRecord>>;

    /// The job a runner was registered for, by the runner's name.
    async fn job_by_runner_name(&self, runner_name: &str) -> Result<Option<JobRecord>>;

    /// Applies `change` if the job's status is still `expected`; `false` if it moved meanwhile.
    async fn update_job(
        &self,
        id: Uuid,
        expected: JobStatus,
        change: &JobChange,
        now: Timestamp,
    ) -> Result<bool>;

    /// Starts job `id` (still `expected`) on the runner that was made for job `owner`: GitHub
    /// gave that runner to this job, whose host and lease pass to it. If this job was itself
    /// waiting for a runner of its own, the two swapped: the owner takes that idle runner;
    /// otherwise the owner goes back to the queue for a new one.
    async fn start_on_foreign_runner(
        &self,
        id: Uuid,
        expected: JobStatus,
        owner: Uuid,
        change: &JobChange,
        now: Timestamp,
    ) -> Result<bool>;

    /// Records that a host asked for work, and what it offered.
    async fn record_host(&self, filter: &ClaimFilter, now: Timestamp) -> Result<()>;

    /// Atomically moves at most one fitting `Queued` job to `Provisioning` for the host:
    /// among tenants with a fitting job, the one with the fewest vCPUs held now (within its
    /// quota), and its oldest fitting job.
    async fn claim_job(&self, filter: &ClaimFilter, now: Timestamp) -> Result<Option<ClaimedJob>>;

    /// Records the runner registered for a claimed job.
    async fn set_runner(&self, id: Uuid, runner_id: i64) -> Result<()>;

    /// Undoes a claim that could not be provisioned: back to `Queued` (a transient failure,
    /// not counted as an attempt), or `Failed` with `failure`.
    async fn release_claim(
        &self,
        id: Uuid,
        failure: Option<FailureReason>,
        now: Timestamp,
    ) -> Result<bool>;

    /// Renews the lease of a job the provisioner holds.
    async fn heartbeat(
        &self,
        id: Uuid,
        provisioner_id: Uuid,
        lease_expires_at: Timestamp,
    ) -> Result<HeartbeatOutcome>;

    /// Records what the host says about a job's runner; `false` if the job is not its.
    async fn record_runner_event(
        &self,
        id: Uuid,
        provisioner_id: Uuid,
        event: &builtiful_core::RunnerEvent,
        now: Timestamp,
    ) -> Result<bool>;

    /// Jobs in `Provisioning` or `Running` whose lease ended before `now`.
    async fn expired_leases(&self, now: Timestamp, limit: u32) -> Result<Vec<ExpiredLease>>;

    /// Ends a job the reconciler gave up on, if it is still in `expected`.
    async fn fail_job(
        &self,
        id: Uuid,
        expected: JobStatus,
        reason: FailureReason,
        now: Timestamp,
    ) -> Result<bool>;

    /// Offers a job whose provisioning timed out again, if it is still `Provisioning`.
    async fn requeue_job(&self, id: Uuid, now: Timestamp) -> Result<bool>;

    /// Fails `Queued` jobs created before `before` with `QueueTimeout`; returns how many.
    async fn expire_queue(&self, before: Timestamp, now: Timestamp) -> Result<u64>;

    /// Fails `Running` jobs that started more than their `max_run_time` plus `grace_secs` ago
    /// with `MaxRunTimeExceeded`; returns them.
    async fn expire_run_time(&self, grace_secs: u64, now: Timestamp) -> Result<Vec<ExpiredLease>>;

    /// Whether this server leads the reconciler now (PostgreSQL: holds the advisory lock;
    /// SQLite: always, being the only server).
    async fn try_lead(&self) -> Result<bool>;

    /// Tells every server sharing this database that claimable jobs appeared (PostgreSQL
    /// `NOTIFY`; nothing to do for SQLite, whose only server is this process).
    async fn publish_jobs_signal(&self) -> Result<()>;

    /// Wakes `notify` whenever another server publishes the jobs signal, until `shutdown`.
    async fn listen_for_jobs_signal(
        &self,
        notify: std::sync::Arc<tokio::sync::Notify>,
        shutdown: tokio_util::sync::CancellationToken,
    );

    /// A user by GitHub id.
    async fn user_by_github_id(&self, github_id: i64) -> Result<Option<User>>;

    /// The tenant of an installation (including one that was uninstalled).
    async fn tenant_by_installation(&self, installation_id: i64) -> Result<Option<Tenant>>;

    /// Marks a tenant uninstalled and removes its memberships.
    async fn uninstall_tenant(&self, installation_id: i64, now: Timestamp) -> Result<bool>;

    /// Whether a webhook delivery id was already processed.
    async fn delivery_seen(&self, delivery_id: &str) -> Result<bool>;

    /// Records a webhook delivery id; `false` if it was already recorded (a duplicate).
    async fn record_delivery(&self, delivery_id: &str, event: &str, now: Timestamp)
    -> Result<bool>;

    /// Keeps a login in progress.
    async fn create_oauth_state(&self, state: &OAuthState) -> Result<()>;

    /// Takes (deletes) a login in progress; `None` if unknown, used or expired.
    async fn take_oauth_state(
        &self,
        state_hash: TokenHash,
        now: Timestamp,
    ) -> Result<Option<OAuthState>>;

    /// Keeps a one-time CLI login code with its PKCE challenge.
    async fn create_login_code(
        &self,
        code_hash: TokenHash,
        user_id: Uuid,
        code_challenge: &str,
        expires_at: Timestamp,
    ) -> Result<()>;

    /// Takes (deletes) a CLI login code: the user and the challenge, if live.
    async fn take_login_code(
        &self,
        code_hash: TokenHash,
        now: Timestamp,
    ) -> Result<Option<(Uuid, String)>>;

    /// Stores a user's GitHub token (sealed).
    async fn set_github_token(&self, user_id: Uuid, token: &SealedGitHubToken) -> Result<()>;

    /// A user's GitHub token (sealed).
    async fn github_token(&self, user_id: Uuid) -> Result<Option<SealedGitHubToken>>;

    /// When the user's memberships were last checked against GitHub.
    async fn memberships_checked_at(&self, user_id: Uuid) -> Result<Option<Timestamp>>;

    /// Records that the user's memberships were just checked against GitHub.
    async fn mark_memberships_checked(&self, user_id: Uuid, now: Timestamp) -> Result<()>;

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
