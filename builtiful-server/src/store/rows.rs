//! Row types shared by both backends, and their conversion to the API's types.

use builtiful_core::{Job, Tenant, Timestamp, User};
use sqlx::types::Json;
use uuid::Uuid;

use super::{ProvisionerToken, Result, StoreError};

/// The columns of `users` that make a [`User`] (a macro, so queries stay `&'static str`).
macro_rules! user_columns {
    () => {
        "id, github_id, github_login, github_name, email, created_at, updated_at"
    };
}
pub(super) use user_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct UserRow {
    id: Uuid,
    github_id: i64,
    github_login: String,
    github_name: Option<String>,
    email: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            github_id: row.github_id,
            github_login: row.github_login,
            github_name: row.github_name,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        }
    }
}

/// The columns of `tenants` that make a [`Tenant`].
macro_rules! tenant_columns {
    () => {
        "id, email, github_id, github_installation_id, github_installation_suspended, github_login"
    };
}
pub(super) use tenant_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct TenantRow {
    id: Uuid,
    email: Option<String>,
    github_id: i64,
    github_installation_id: i64,
    github_installation_suspended: bool,
    github_login: String,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            github_id: row.github_id,
            github_installation_id: row.github_installation_id,
            github_installation_suspended: row.github_installation_suspended,
            github_login: row.github_login,
        }
    }
}

/// The columns of `jobs` that make a [`Job`].
macro_rules! job_columns {
    () => {
        "id, tenant_id, workflow_job_id, repository, initiator, initiator_github_id, \
         cpu_architecture, os, label, vcpus, max_run_time, billable_duration, duration, \
         failure_reason, status, created_at, updated_at, completed_at, started_at, \
         provisioner_picked_up_at, workflow_job"
    };
}
pub(super) use job_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRow {
    id: Uuid,
    tenant_id: Uuid,
    workflow_job_id: i64,
    repository: String,
    initiator: String,
    initiator_github_id: i64,
    cpu_architecture: String,
    os: String,
    label: String,
    vcpus: i64,
    max_run_time: i64,
    billable_duration: Option<i64>,
    duration: Option<i64>,
    failure_reason: Option<String>,
    status: String,
    created_at: i64,
    updated_at: i64,
    completed_at: Option<i64>,
    started_at: Option<i64>,
    provisioner_picked_up_at: Option<i64>,
    workflow_job: Json<serde_json::Value>,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn unsigned<T: TryFrom<i64>>(value: i64, column: &str) -> Result<T> {
    T::try_from(value).map_err(|_| corrupt(format!("{column} = {value}")))
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self> {
        Ok(Self {
            id: row.id,
            tenant_id: row.tenant_id,
            workflow_job_id: row.workflow_job_id,
            repository: row.repository,
            initiator: row.initiator,
            initiator_github_id: row.initiator_github_id,
            cpu_architecture: row.cpu_architecture.parse().map_err(corrupt)?,
            os: row.os.parse().map_err(corrupt)?,
            label: row.label,
            vcpus: unsigned(row.vcpus, "vcpus")?,
            max_run_time: unsigned(row.max_run_time, "max_run_time")?,
            billable_duration: row
                .billable_duration
                .map(|v| unsigned(v, "billable_duration"))
                .transpose()?,
            duration: row.duration.map(|v| unsigned(v, "duration")).transpose()?,
            failure_reason: row
                .failure_reason
                .map(|r| r.parse().map_err(corrupt))
                .transpose()?,
            status: row.status.parse().map_err(corrupt)?,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
            completed_at: row.completed_at.map(Timestamp::from_micros),
            started_at: row.started_at.map(Timestamp::from_micros),
            provisioner_picked_up_at: row.provisioner_picked_up_at.map(Timestamp::from_micros),
            workflow_job: row.workflow_job.0,
        })
    }
}

/// The columns of `jobs` that make a [`JobRecord`](super::JobRecord).
macro_rules! job_record_columns {
    () => {
        concat!(
            crate::store::rows::job_columns!(),
            ", waiting, runner_name, host"
        )
    };
}
pub(super) use job_record_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRecordRow {
    #[sqlx(flatten)]
    job: JobRow,
    waiting: bool,
    runner_name: Option<String>,
    host: Option<String>,
}

impl TryFrom<JobRecordRow> for super::JobRecord {
    type Error = StoreError;

    fn try_from(row: JobRecordRow) -> Result<Self> {
        Ok(Self {
            job: row.job.try_into()?,
            waiting: row.waiting,
            runner_name: row.runner_name,
            host: row.host,
        })
    }
}

/// The columns of `jobs` that make a job under dispatch.
macro_rules! dispatch_columns {
    () => {
        concat!(
            crate::store::rows::job_columns!(),
            ", attempts, runner_id, runner_name"
        )
    };
}
pub(super) use dispatch_columns;

/// The columns of an [`InstalledDispatchRow`], selected from `jobs`.
macro_rules! installed_dispatch_columns {
    () => {
        concat!(
            crate::store::rows::dispatch_columns!(),
            ", (SELECT github_installation_id FROM tenants WHERE tenants.id = jobs.tenant_id) \
             AS github_installation_id"
        )
    };
}
pub(super) use installed_dispatch_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct DispatchRow {
    // Fields read by the backends' claim code.
    #[sqlx(flatten)]
    pub(super) job: JobRow,
    pub(super) attempts: i64,
    pub(super) runner_id: Option<i64>,
    pub(super) runner_name: Option<String>,
}

/// A job's dispatch state with its tenant's installation: what a claim answers, and what the
/// reconciler reads of an expired lease.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct InstalledDispatchRow {
    #[sqlx(flatten)]
    dispatch: DispatchRow,
    github_installation_id: i64,
}

impl TryFrom<InstalledDispatchRow> for super::ExpiredLease {
    type Error = StoreError;

    fn try_from(row: InstalledDispatchRow) -> Result<Self> {
        Ok(Self {
            job: row.dispatch.job.try_into()?,
            github_installation_id: row.github_installation_id,
            attempts: unsigned(row.dispatch.attempts, "attempts")?,
            runner_id: row.dispatch.runner_id,
        })
    }
}

impl TryFrom<InstalledDispatchRow> for super::ClaimedJob {
    type Error = StoreError;

    fn try_from(row: InstalledDispatchRow) -> Result<Self> {
        let job: Job = row.dispatch.job.try_into()?;
        let runner_name = row
            .dispatch
            .runner_name
            .ok_or_else(|| corrupt(format!("claimed job {} has no runner name", job.id)))?;
        Ok(Self {
            job,
            github_installation_id: row.github_installation_id,
            runner_name,
        })
    }
}

/// Converts fetched job rows, failing on the first that does not read.
pub(super) fn jobs(rows: Vec<JobRow>) -> Result<Vec<Job>> {
    rows.into_iter().map(Job::try_from).collect()
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct SealedTokenRow {
    github_token: Option<Vec<u8>>,
    github_refresh_token: Option<Vec<u8>>,
    github_token_expires_at: Option<i64>,
}

impl SealedTokenRow {
    pub(super) fn into_token(self) -> Option<super::SealedGitHubToken> {
        Some(super::SealedGitHubToken {
            access_token: self.github_token?,
            refresh_token: self.github_refresh_token,
            expires_at: self.github_token_expires_at.map(Timestamp::from_micros),
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct OAuthStateRow {
    state_hash: Vec<u8>,
    redirect_uri: String,
    code_challenge: Option<String>,
    expires_at: i64,
}

impl TryFrom<OAuthStateRow> for super::OAuthState {
    type Error = StoreError;

    fn try_from(row: OAuthStateRow) -> Result<Self> {
        let hash: [u8; 32] = row
            .state_hash
            .try_into()
            .map_err(|_| corrupt("oauth_states.state_hash is not 32 bytes"))?;
        Ok(Self {
            state_hash: super::TokenHash(hash),
            redirect_uri: row.redirect_uri,
            code_challenge: row.code_challenge,
            expires_at: Timestamp::from_micros(row.expires_at),
        })
    }
}

/// The columns of `provisioner_tokens` that make a [`ProvisionerToken`].
macro_rules! provisioner_token_columns {
    () => {
        "id, name, created_at, last_used_at"
    };
}
pub(super) use provisioner_token_columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct ProvisionerTokenRow {
    id: Uuid,
    name: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<ProvisionerTokenRow> for ProvisionerToken {
    fn from(row: ProvisionerTokenRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            created_at: Timestamp::from_micros(row.created_at),
            last_used_at: row.last_used_at.map(Timestamp::from_micros),
        }
    }
}
