//! The part of [`Store`](super::Store) whose SQL both SQLite and PostgreSQL accept.
//!
//! `impl_store!` expands the same method bodies for each backend's concrete types, so no
//! generic sqlx bounds are needed and each backend still compiles its own queries. A backend
//! provides `reader()`, `writer()` (pools), `begin_write()` (a write transaction) and the
//! methods it implements its own way, such as `list_jobs_query`.

/// How often a provisioner token's `last_used_at` is refreshed, in microseconds: a poll every
/// second must not turn into a write every second.
pub(super) const LAST_USED_RESOLUTION_MICROS: i64 = 60_000_000;

macro_rules! impl_store {
    ($store:ty, $backend:expr) => {
        #[async_trait::async_trait]
        impl crate::store::Store for $store {
            fn backend(&self) -> crate::store::Backend {
                $backend
            }

            async fn ping(&self) -> crate::store::Result<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn close(&self) {
                self.close_pools().await;
            }

            async fn upsert_user(
                &self,
                profile: &crate::store::UserProfile,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<builtiful_core::User> {
                let row: crate::store::rows::UserRow = sqlx::query_as(concat!(
                    "INSERT INTO users (id, github_id, github_login, github_name, email, created_at, updated_at) ",
                    "VALUES ($1, $2, $3, $4, $5, $6, $6) ",
                    "ON CONFLICT (github_id) DO UPDATE SET github_login = excluded.github_login, ",
                    "github_name = excluded.github_name, email = excluded.email, updated_at = excluded.updated_at ",
                    "RETURNING ", crate::store::rows::user_columns!()
                ))
                .bind(uuid::Uuid::now_v7())
                .bind(profile.github_id)
                .bind(&profile.github_login)
                .bind(&profile.github_name)
                .bind(&profile.email)
                .bind(now.as_micros())
                .fetch_one(self.writer())
                .await?;
                Ok(row.into())
            }

            async fn user(&self, id: uuid::Uuid) -> crate::store::Result<Option<builtiful_core::User>> {
                let row: Option<crate::store::rows::UserRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::user_columns!(), " FROM users WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn upsert_tenant(
                &self,
                installation: &crate::store::Installation,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<builtiful_core::Tenant> {
                let row: crate::store::rows::TenantRow = sqlx::query_as(concat!(
                    "INSERT INTO tenants (id, github_id, github_login, github_installation_id, ",
                    "github_installation_suspended, created_at, updated_at) ",
                    "VALUES ($1, $2, $3, $4, $5, $6, $6) ",
                    "ON CONFLICT (github_installation_id) DO UPDATE SET github_id = excluded.github_id, ",
                    "github_login = excluded.github_login, ",
                    "github_installation_suspended = excluded.github_installation_suspended, ",
                    "updated_at = excluded.updated_at ",
                    "RETURNING ", crate::store::rows::tenant_columns!()
                ))
                .bind(uuid::Uuid::now_v7())
                .bind(installation.github_id)
                .bind(&installation.github_login)
                .bind(installation.github_installation_id)
                .bind(installation.suspended)
                .bind(now.as_micros())
                .fetch_one(self.writer())
                .await?;
                Ok(row.into())
            }

            async fn tenant(&self, id: uuid::Uuid) -> crate::store::Result<Option<builtiful_core::Tenant>> {
                let row: Option<crate::store::rows::TenantRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::tenant_columns!(), " FROM tenants WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn set_memberships(
                &self,
                user_id: uuid::Uuid,
                tenant_ids: &[uuid::Uuid],
            ) -> crate::store::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM memberships WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                for tenant_id in tenant_ids {
                    sqlx::query(
                        "INSERT INTO memberships (user_id, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(user_id)
                    .bind(tenant_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn tenants_of_user(
                &self,
                user_id: uuid::Uuid,
            ) -> crate::store::Result<Vec<builtiful_core::Tenant>> {
                let rows: Vec<crate::store::rows::TenantRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::tenant_columns!(), " FROM tenants ",
                    "WHERE id IN (SELECT tenant_id FROM memberships WHERE user_id = $1) ",
                    "ORDER BY lower(github_login), id"
                ))
                .bind(user_id)
                .fetch_all(self.reader())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn tenant_of_user(
                &self,
                user_id: uuid::Uuid,
                tenant_id: uuid::Uuid,
            ) -> crate::store::Result<Option<builtiful_core::Tenant>> {
                let row: Option<crate::store::rows::TenantRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::tenant_columns!(), " FROM tenants WHERE id = $2 ",
                    "AND EXISTS (SELECT 1 FROM memberships WHERE user_id = $1 AND tenant_id = $2)"
                ))
                .bind(user_id)
                .bind(tenant_id)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn set_tenant_email(
                &self,
                tenant_id: uuid::Uuid,
                email: &str,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<()> {
                sqlx::query("UPDATE tenants SET email = $2, updated_at = $3 WHERE id = $1")
                    .bind(tenant_id)
                    .bind(email)
                    .bind(now.as_micros())
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn consume_email_verification(
                &self,
                jti: uuid::Uuid,
                tenant_id: uuid::Uuid,
                expires_at: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO email_verifications (jti, tenant_id, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(tenant_id)
                .bind(expires_at.as_micros())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_session(
                &self,
                token_hash: crate::store::TokenHash,
                user_id: uuid::Uuid,
                now: builtiful_core::Timestamp,
                expires_at: builtiful_core::Timestamp,
            ) -> crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&token_hash.0[..])
                .bind(user_id)
                .bind(now.as_micros())
                .bind(expires_at.as_micros())
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn session_user(
                &self,
                token_hash: crate::store::TokenHash,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<Option<builtiful_core::User>> {
                let row: Option<crate::store::rows::UserRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::user_columns!(), " FROM users WHERE id = ",
                    "(SELECT user_id FROM sessions WHERE token_hash = $1 AND expires_at > $2)"
                ))
                .bind(&token_hash.0[..])
                .bind(now.as_micros())
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn delete_session(&self, token_hash: crate::store::TokenHash) -> crate::store::Result<bool> {
                let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(&token_hash.0[..])
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_user_sessions(&self, user_id: uuid::Uuid) -> crate::store::Result<u64> {
                let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(user_id)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected())
            }

            async fn purge_expired(&self, now: builtiful_core::Timestamp) -> crate::store::Result<u64> {
                let mut purged = 0;
                for sql in [
                    "DELETE FROM sessions WHERE expires_at <= $1",
                    "DELETE FROM email_verifications WHERE expires_at <= $1",
                ] {
                    purged += sqlx::query(sql)
                        .bind(now.as_micros())
                        .execute(self.writer())
                        .await?
                        .rows_affected();
                }
                Ok(purged)
            }

            async fn insert_job(
                &self,
                job: &crate::store::JobInsert,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<builtiful_core::Job> {
                let mut tx = self.begin_write().await?;
                let max_run_time: i64 =
                    sqlx::query_scalar("SELECT max_run_time FROM tenants WHERE id = $1")
                        .bind(job.tenant_id)
                        .fetch_one(&mut *tx)
                        .await?;
                let completed_at = job.status.is_final().then(|| now.as_micros());
                let row: crate::store::rows::JobRow = sqlx::query_as(concat!(
                    "INSERT INTO jobs (id, tenant_id, workflow_job_id, repository, initiator, ",
                    "initiator_github_id, cpu_architecture, os, label, vcpus, max_run_time, ",
                    "failure_reason, status, created_at, updated_at, completed_at, workflow_job) ",
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16) ",
                    "RETURNING ", crate::store::rows::job_columns!()
                ))
                .bind(uuid::Uuid::now_v7())
                .bind(job.tenant_id)
                .bind(job.workflow_job_id)
                .bind(&job.repository)
                .bind(&job.initiator)
                .bind(job.initiator_github_id)
                .bind(job.cpu_architecture.as_str())
                .bind(job.os.as_str())
                .bind(&job.label)
                .bind(i64::from(job.vcpus))
                .bind(max_run_time)
                .bind(job.failure_reason.map(builtiful_core::FailureReason::as_str))
                .bind(job.status.as_str())
                .bind(now.as_micros())
                .bind(completed_at)
                .bind(sqlx::types::Json(&job.workflow_job))
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("UPDATE tenants SET job_count = job_count + 1 WHERE id = $1")
                    .bind(job.tenant_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn list_jobs(
                &self,
                tenant_id: uuid::Uuid,
                page: builtiful_core::Page,
            ) -> crate::store::Result<builtiful_core::JobList> {
                use builtiful_core::Cursor;
                use crate::store::rows::{job_columns, JobRow};

                if let Some(cursor) = page.cursor {
                    let owner: Option<uuid::Uuid> =
                        sqlx::query_scalar("SELECT tenant_id FROM jobs WHERE id = $1")
                            .bind(cursor.id())
                            .fetch_optional(self.reader())
                            .await?;
                    if owner != Some(tenant_id) {
                        return Err(crate::store::StoreError::UnknownCursor(cursor.id()));
                    }
                }
                let limit = i64::from(page.limit);
                let rows: Vec<JobRow> = match page.cursor {
                    None => sqlx::query_as(concat!(
                        "SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 ",
                        "ORDER BY id DESC LIMIT $2"
                    ))
                    .bind(tenant_id)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await?,
                    Some(Cursor::After(id)) => sqlx::query_as(concat!(
                        "SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 AND id < $2 ",
                        "ORDER BY id DESC LIMIT $3"
                    ))
                    .bind(tenant_id)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await?,
                    Some(Cursor::Before(id)) => {
                        // The page just newer than the cursor: walk up from it, then show it
                        // newest first like every other page.
                        let mut rows: Vec<JobRow> = sqlx::query_as(concat!(
                            "SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 AND id > $2 ",
                            "ORDER BY id ASC LIMIT $3"
                        ))
                        .bind(tenant_id)
                        .bind(id)
                        .bind(limit)
                        .fetch_all(self.reader())
                        .await?;
                        rows.reverse();
                        rows
                    }
                };
                let total: Option<i64> =
                    sqlx::query_scalar("SELECT job_count FROM tenants WHERE id = $1")
                        .bind(tenant_id)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(builtiful_core::JobList {
                    jobs: crate::store::rows::jobs(rows)?,
                    total_count: u64::try_from(total.unwrap_or(0)).unwrap_or(0),
                })
            }

            async fn create_provisioner_token(
                &self,
                name: &str,
                token_hash: crate::store::TokenHash,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<crate::store::ProvisionerToken> {
                let row: crate::store::rows::ProvisionerTokenRow = sqlx::query_as(concat!(
                    "INSERT INTO provisioner_tokens (id, name, token_hash, created_at) ",
                    "VALUES ($1, $2, $3, $4) RETURNING ",
                    crate::store::rows::provisioner_token_columns!()
                ))
                .bind(uuid::Uuid::now_v7())
                .bind(name)
                .bind(&token_hash.0[..])
                .bind(now.as_micros())
                .fetch_one(self.writer())
                .await
                .map_err(|error| match crate::store::StoreError::from(error) {
                    crate::store::StoreError::Conflict(_) => crate::store::StoreError::Conflict(
                        format!("a provisioner token named `{name}` already exists"),
                    ),
                    other => other,
                })?;
                Ok(row.into())
            }

            async fn provisioner_tokens(&self) -> crate::store::Result<Vec<crate::store::ProvisionerToken>> {
                let rows: Vec<crate::store::rows::ProvisionerTokenRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::provisioner_token_columns!(),
                    " FROM provisioner_tokens ORDER BY name"
                ))
                .fetch_all(self.reader())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn revoke_provisioner_token(&self, name: &str) -> crate::store::Result<bool> {
                let done = sqlx::query("DELETE FROM provisioner_tokens WHERE name = $1")
                    .bind(name)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn authenticate_provisioner(
                &self,
                token_hash: crate::store::TokenHash,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<Option<crate::store::ProvisionerToken>> {
                let row: Option<crate::store::rows::ProvisionerTokenRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::provisioner_token_columns!(),
                    " FROM provisioner_tokens WHERE token_hash = $1"
                ))
                .bind(&token_hash.0[..])
                .fetch_optional(self.reader())
                .await?;
                let Some(row) = row else { return Ok(None) };
                let mut token = crate::store::ProvisionerToken::from(row);
                let stale = token.last_used_at.is_none_or(|used| {
                    now.as_micros() - used.as_micros()
                        >= crate::store::shared::LAST_USED_RESOLUTION_MICROS
                });
                if stale {
                    sqlx::query("UPDATE provisioner_tokens SET last_used_at = $2 WHERE id = $1")
                        .bind(token.id)
                        .bind(now.as_micros())
                        .execute(self.writer())
                        .await?;
                    token.last_used_at = Some(now);
                }
                Ok(Some(token))
            }
        }
    };
}

pub(super) use impl_store;
