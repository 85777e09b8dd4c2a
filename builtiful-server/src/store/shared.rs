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
                    "updated_at = excluded.updated_at, uninstalled_at = NULL ",
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
                    "AND uninstalled_at IS NULL ",
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
                    "AND uninstalled_at IS NULL AND EXISTS (SELECT 1 FROM memberships WHERE user_id = $1 AND tenant_id = $2)"
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

            async fn set_tenant_limits(
                &self,
                github_login: &str,
                max_run_time: u64,
                vcpu_quota: Option<u32>,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let done = sqlx::query(
                    "UPDATE tenants SET max_run_time = $2, vcpu_quota = $3, updated_at = $4 \
                     WHERE lower(github_login) = lower($1)",
                )
                .bind(github_login)
                .bind(i64::try_from(max_run_time).unwrap_or(i64::MAX))
                .bind(vcpu_quota.map(i64::from))
                .bind(now.as_micros())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn recent_repositories(
                &self,
                since: builtiful_core::Timestamp,
            ) -> crate::store::Result<Vec<(i64, String)>> {
                // Ids are UUIDv7: the smallest id of that millisecond bounds the range on the
                // primary key, so this reads only recent rows however large the table is.
                let millis = u64::try_from(since.as_micros() / 1000).unwrap_or(0);
                let boundary = uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT DISTINCT t.github_installation_id, j.repository FROM jobs j \
                     JOIN tenants t ON t.id = j.tenant_id WHERE j.id >= $1",
                )
                .bind(boundary)
                .fetch_all(self.reader())
                .await?;
                Ok(rows)
            }

            async fn queue_depth(
                &self,
            ) -> crate::store::Result<Vec<(builtiful_core::CpuArchitecture, u32, u64)>> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT cpu_architecture, vcpus, COUNT(*) FROM jobs \
                     WHERE status = 'Queued' AND NOT waiting GROUP BY cpu_architecture, vcpus",
                )
                .fetch_all(self.reader())
                .await?;
                rows.into_iter()
                    .map(|(arch, vcpus, count)| {
                        Ok((
                            arch.parse().map_err(|e: builtiful_core::UnknownVariant| {
                                crate::store::StoreError::Corrupt(e.to_string())
                            })?,
                            u32::try_from(vcpus).unwrap_or(0),
                            u64::try_from(count).unwrap_or(0),
                        ))
                    })
                    .collect()
            }

            async fn held_vcpus_by_host(&self) -> crate::store::Result<Vec<(String, u64)>> {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT host, CAST(SUM(vcpus) AS BIGINT) FROM jobs \
                     WHERE status IN ('Provisioning', 'Running') AND host IS NOT NULL GROUP BY host",
                )
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(host, vcpus)| (host, u64::try_from(vcpus).unwrap_or(0)))
                    .collect())
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
                // GitHub redelivers for 30 days: past that a delivery id cannot come back.
                let deliveries_before = now.as_micros() - 31 * 24 * 3600 * 1_000_000;
                for (sql, before) in [
                    ("DELETE FROM sessions WHERE expires_at <= $1", now.as_micros()),
                    ("DELETE FROM email_verifications WHERE expires_at <= $1", now.as_micros()),
                    ("DELETE FROM oauth_states WHERE expires_at <= $1", now.as_micros()),
                    ("DELETE FROM login_codes WHERE expires_at <= $1", now.as_micros()),
                    ("DELETE FROM webhook_deliveries WHERE received_at <= $1", deliveries_before),
                ] {
                    purged += sqlx::query(sql)
                        .bind(before)
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
                let completed_at = job
                    .status
                    .is_final()
                    .then(|| job.completed_at.unwrap_or(now));
                let run_time = completed_at.map(|end| crate::store::run_time(job.started_at, end));
                let row: crate::store::rows::JobRow = sqlx::query_as(concat!(
                    "INSERT INTO jobs (id, tenant_id, workflow_job_id, repository, initiator, ",
                    "initiator_github_id, cpu_architecture, os, label, vcpus, max_run_time, ",
                    "failure_reason, status, created_at, updated_at, completed_at, workflow_job, ",
                    "started_at, duration, billable_duration, waiting) ",
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16, ",
                    "$17, $18, $19, $20) ",
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
                .bind(completed_at.map(builtiful_core::Timestamp::as_micros))
                .bind(sqlx::types::Json(&job.workflow_job))
                .bind(job.started_at.map(builtiful_core::Timestamp::as_micros))
                .bind(run_time.map(|(d, _)| i64::try_from(d).unwrap_or(i64::MAX)))
                .bind(run_time.map(|(_, b)| i64::try_from(b).unwrap_or(i64::MAX)))
                .bind(job.waiting)
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

            async fn job_by_workflow_job_id(
                &self,
                workflow_job_id: i64,
            ) -> crate::store::Result<Option<crate::store::JobRecord>> {
                let row: Option<crate::store::rows::JobRecordRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::job_record_columns!(), " FROM jobs WHERE workflow_job_id = $1"
                ))
                .bind(workflow_job_id)
                .fetch_optional(self.reader())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn job_by_runner_name(
                &self,
                runner_name: &str,
            ) -> crate::store::Result<Option<crate::store::JobRecord>> {
                let row: Option<crate::store::rows::JobRecordRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::job_record_columns!(), " FROM jobs WHERE runner_name = $1 ",
                    // A live holder first, should an ended job still carry the name.
                    "ORDER BY CASE WHEN status IN ('Provisioning', 'Running') THEN 0 ELSE 1 END LIMIT 1"
                ))
                .bind(runner_name)
                .fetch_optional(self.reader())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn update_job(
                &self,
                id: uuid::Uuid,
                expected: builtiful_core::JobStatus,
                change: &crate::store::JobChange,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let mut tx = self.begin_write().await?;
                let applied = crate::store::shared::apply_change!(&mut *tx, id, expected, change, now);
                tx.commit().await?;
                Ok(applied)
            }

            async fn start_on_foreign_runner(
                &self,
                id: uuid::Uuid,
                expected: builtiful_core::JobStatus,
                owner: uuid::Uuid,
                change: &crate::store::JobChange,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let mut tx = self.begin_write().await?;
                // What this job held, if it was itself waiting for a runner of its own.
                let own: Option<crate::store::shared::Held> = sqlx::query_as(
                    "SELECT host, provisioner_token_id, lease_expires_at, runner_name, runner_id, \
                     provisioner_picked_up_at, claimed_as, runner_started_at FROM jobs \
                     WHERE id = $1 AND status = 'Provisioning' AND runner_name IS NOT NULL",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if !crate::store::shared::apply_change!(&mut *tx, id, expected, change, now) {
                    return Ok(false);
                }
                // The job that ran takes over the owner's host, lease and runner…
                sqlx::query(
                    "UPDATE jobs SET (host, provisioner_token_id, lease_expires_at, runner_name, runner_id, \
                     provisioner_picked_up_at, claimed_as, runner_started_at) = (SELECT host, \
                     provisioner_token_id, lease_expires_at, runner_name, runner_id, \
                     provisioner_picked_up_at, claimed_as, runner_started_at FROM jobs WHERE id = $2) \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                match own {
                    // …and the owner gets the runner this job was waiting for, which is idle
                    // and registered with the same label: the two swapped runners.
                    Some(held) => {
                        sqlx::query(
                            "UPDATE jobs SET host = $2, provisioner_token_id = $3, lease_expires_at = $4, \
                             runner_name = $5, runner_id = $6, provisioner_picked_up_at = $7, \
                             claimed_as = $8, runner_started_at = $9, updated_at = $10 \
                             WHERE id = $1 AND status = 'Provisioning'",
                        )
                        .bind(owner)
                        .bind(held.0)
                        .bind(held.1)
                        .bind(held.2)
                        .bind(held.3)
                        .bind(held.4)
                        .bind(held.5)
                        .bind(held.6)
                        .bind(held.7)
                        .bind(now.as_micros())
                        .execute(&mut *tx)
                        .await?;
                    }
                    // …or, still waiting for a runner that is gone, is offered again.
                    None => {
                        sqlx::query(
                            "UPDATE jobs SET status = 'Queued', host = NULL, provisioner_token_id = NULL, \
                             lease_expires_at = NULL, runner_name = NULL, runner_id = NULL, claimed_as = NULL, \
                             provisioner_picked_up_at = NULL, runner_started_at = NULL, updated_at = $2 \
                             WHERE id = $1 AND status = 'Provisioning'",
                        )
                        .bind(owner)
                        .bind(now.as_micros())
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn record_host(
                &self,
                filter: &crate::store::ClaimFilter,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO hosts (name, provisioner_token_id, cpu_architecture, offered_vcpus, last_seen_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET \
                     provisioner_token_id = excluded.provisioner_token_id, \
                     cpu_architecture = excluded.cpu_architecture, \
                     offered_vcpus = excluded.offered_vcpus, last_seen_at = excluded.last_seen_at",
                )
                .bind(&filter.host)
                .bind(filter.provisioner_id)
                .bind(filter.architecture.as_str())
                .bind(i64::from(filter.available_vcpus))
                .bind(now.as_micros())
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn try_lead(&self) -> crate::store::Result<bool> {
                self.lead().await
            }

            async fn publish_jobs_signal(&self) -> crate::store::Result<()> {
                self.publish_signal().await
            }

            async fn listen_for_jobs_signal(
                &self,
                notify: std::sync::Arc<tokio::sync::Notify>,
                shutdown: tokio_util::sync::CancellationToken,
            ) {
                self.listen(notify, shutdown).await;
            }

            async fn claim_job(
                &self,
                filter: &crate::store::ClaimFilter,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<Option<crate::store::ClaimedJob>> {
                self.claim(filter, now).await
            }

            async fn set_runner(&self, id: uuid::Uuid, runner_id: i64) -> crate::store::Result<()> {
                sqlx::query("UPDATE jobs SET runner_id = $2 WHERE id = $1")
                    .bind(id)
                    .bind(runner_id)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn release_claim(
                &self,
                id: uuid::Uuid,
                failure: Option<builtiful_core::FailureReason>,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let query = match failure {
                    None => sqlx::query(
                        "UPDATE jobs SET status = 'Queued', attempts = attempts - 1, host = NULL, \
                         provisioner_token_id = NULL, lease_expires_at = NULL, runner_name = NULL, \
                         runner_id = NULL, claimed_as = NULL, provisioner_picked_up_at = NULL, \
                         updated_at = $2 WHERE id = $1 AND status = 'Provisioning'",
                    )
                    .bind(id)
                    .bind(now.as_micros()),
                    Some(reason) => sqlx::query(
                        "UPDATE jobs SET status = 'Failed', failure_reason = $3, completed_at = $2, \
                         duration = 0, billable_duration = 0, lease_expires_at = NULL, updated_at = $2 \
                         WHERE id = $1 AND status = 'Provisioning'",
                    )
                    .bind(id)
                    .bind(now.as_micros())
                    .bind(reason.as_str()),
                };
                Ok(query.execute(self.writer()).await?.rows_affected() == 1)
            }

            async fn heartbeat(
                &self,
                id: uuid::Uuid,
                provisioner_id: uuid::Uuid,
                lease_expires_at: builtiful_core::Timestamp,
            ) -> crate::store::Result<crate::store::HeartbeatOutcome> {
                // The host speaks of the job it was given; the job its runner runs may be
                // another one (GitHub's routing), which then carries `claimed_as`.
                let held: Vec<(uuid::Uuid, String)> = sqlx::query_as(
                    "SELECT id, status FROM jobs WHERE (id = $1 OR claimed_as = $1) \
                     AND provisioner_token_id = $2",
                )
                .bind(id)
                .bind(provisioner_id)
                .fetch_all(self.reader())
                .await?;
                if held.is_empty() {
                    return Ok(crate::store::HeartbeatOutcome::NotHeld);
                }
                let live = held
                    .iter()
                    .any(|(_, status)| matches!(status.as_str(), "Provisioning" | "Running"));
                if !live {
                    return Ok(crate::store::HeartbeatOutcome::Ended);
                }
                sqlx::query(
                    "UPDATE jobs SET lease_expires_at = $3 WHERE (id = $1 OR claimed_as = $1) \
                     AND provisioner_token_id = $2 AND status IN ('Provisioning', 'Running')",
                )
                .bind(id)
                .bind(provisioner_id)
                .bind(lease_expires_at.as_micros())
                .execute(self.writer())
                .await?;
                Ok(crate::store::HeartbeatOutcome::Renewed)
            }

            async fn record_runner_event(
                &self,
                id: uuid::Uuid,
                provisioner_id: uuid::Uuid,
                event: &builtiful_core::RunnerEvent,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let query = match event.event {
                    builtiful_core::RunnerEventKind::RunnerStarted => sqlx::query(
                        "UPDATE jobs SET runner_started_at = $3, updated_at = $3 \
                         WHERE (id = $1 OR claimed_as = $1) AND provisioner_token_id = $2",
                    )
                    .bind(id)
                    .bind(provisioner_id)
                    .bind(now.as_micros()),
                    builtiful_core::RunnerEventKind::RunnerExited => sqlx::query(
                        "UPDATE jobs SET runner_exited_at = $3, runner_exit_code = $4, \
                         runner_message = $5, updated_at = $3 \
                         WHERE (id = $1 OR claimed_as = $1) AND provisioner_token_id = $2",
                    )
                    .bind(id)
                    .bind(provisioner_id)
                    .bind(now.as_micros())
                    .bind(event.exit_code.map(i64::from))
                    .bind(event.message.as_deref().map(|m| m.chars().take(1000).collect::<String>())),
                };
                Ok(query.execute(self.writer()).await?.rows_affected() > 0)
            }

            async fn expired_leases(
                &self,
                now: builtiful_core::Timestamp,
                limit: u32,
            ) -> crate::store::Result<Vec<crate::store::ExpiredLease>> {
                let rows: Vec<crate::store::rows::InstalledDispatchRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::installed_dispatch_columns!(),
                    " FROM jobs WHERE lease_expires_at < $1 ",
                    "AND status IN ('Provisioning', 'Running') ORDER BY lease_expires_at LIMIT $2"
                ))
                .bind(now.as_micros())
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn fail_job(
                &self,
                id: uuid::Uuid,
                expected: builtiful_core::JobStatus,
                reason: builtiful_core::FailureReason,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let done = sqlx::query(
                    "UPDATE jobs SET status = 'Failed', failure_reason = $4, completed_at = $3, \
                     duration = CASE WHEN started_at IS NULL THEN 0 ELSE ($3 - started_at) / 1000000 END, \
                     billable_duration = CASE WHEN started_at IS NULL THEN 0 \
                         ELSE (($3 - started_at) / 1000000 + 59) / 60 * 60 END, \
                     lease_expires_at = NULL, updated_at = $3 WHERE id = $1 AND status = $2",
                )
                .bind(id)
                .bind(expected.as_str())
                .bind(now.as_micros())
                .bind(reason.as_str())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn requeue_job(
                &self,
                id: uuid::Uuid,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let done = sqlx::query(
                    "UPDATE jobs SET status = 'Queued', host = NULL, provisioner_token_id = NULL, \
                     lease_expires_at = NULL, runner_name = NULL, runner_id = NULL, claimed_as = NULL, \
                     provisioner_picked_up_at = NULL, runner_started_at = NULL, updated_at = $2 \
                     WHERE id = $1 AND status = 'Provisioning'",
                )
                .bind(id)
                .bind(now.as_micros())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn expire_queue(
                &self,
                before: builtiful_core::Timestamp,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<u64> {
                let done = sqlx::query(
                    "UPDATE jobs SET status = 'Failed', failure_reason = 'QueueTimeout', \
                     completed_at = $2, duration = 0, billable_duration = 0, updated_at = $2 \
                     WHERE status = 'Queued' AND created_at < $1",
                )
                .bind(before.as_micros())
                .bind(now.as_micros())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected())
            }

            async fn expire_run_time(
                &self,
                grace_secs: u64,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<Vec<crate::store::ExpiredLease>> {
                let grace = i64::try_from(grace_secs).unwrap_or(i64::MAX / 2_000_000);
                let rows: Vec<crate::store::rows::InstalledDispatchRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::installed_dispatch_columns!(),
                    " FROM jobs WHERE status = 'Running' ",
                    "AND started_at + (max_run_time + $2) * 1000000 < $1"
                ))
                .bind(now.as_micros())
                .bind(grace)
                .fetch_all(self.reader())
                .await?;
                let mut expired = Vec::new();
                for row in rows {
                    let lease: crate::store::ExpiredLease = row.try_into()?;
                    if crate::store::Store::fail_job(
                            self,
                            lease.job.id,
                            builtiful_core::JobStatus::Running,
                            builtiful_core::FailureReason::MaxRunTimeExceeded,
                            now,
                        )
                        .await?
                    {
                        expired.push(lease);
                    }
                }
                Ok(expired)
            }

            async fn user_by_github_id(
                &self,
                github_id: i64,
            ) -> crate::store::Result<Option<builtiful_core::User>> {
                let row: Option<crate::store::rows::UserRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::user_columns!(), " FROM users WHERE github_id = $1"
                ))
                .bind(github_id)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn tenant_by_installation(
                &self,
                installation_id: i64,
            ) -> crate::store::Result<Option<builtiful_core::Tenant>> {
                let row: Option<crate::store::rows::TenantRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::store::rows::tenant_columns!(),
                    " FROM tenants WHERE github_installation_id = $1"
                ))
                .bind(installation_id)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(Into::into))
            }

            async fn uninstall_tenant(
                &self,
                installation_id: i64,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE tenants SET uninstalled_at = $2, updated_at = $2 WHERE github_installation_id = $1",
                )
                .bind(installation_id)
                .bind(now.as_micros())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM memberships WHERE tenant_id IN \
                     (SELECT id FROM tenants WHERE github_installation_id = $1)",
                )
                .bind(installation_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delivery_seen(&self, delivery_id: &str) -> crate::store::Result<bool> {
                let seen: Option<i64> =
                    sqlx::query_scalar("SELECT received_at FROM webhook_deliveries WHERE delivery_id = $1")
                        .bind(delivery_id)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(seen.is_some())
            }

            async fn record_delivery(
                &self,
                delivery_id: &str,
                event: &str,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO webhook_deliveries (delivery_id, event, received_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (delivery_id) DO NOTHING",
                )
                .bind(delivery_id)
                .bind(event)
                .bind(now.as_micros())
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_oauth_state(
                &self,
                state: &crate::store::OAuthState,
            ) -> crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO oauth_states (state_hash, redirect_uri, code_challenge, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&state.state_hash.0[..])
                .bind(&state.redirect_uri)
                .bind(&state.code_challenge)
                .bind(state.expires_at.as_micros())
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn take_oauth_state(
                &self,
                state_hash: crate::store::TokenHash,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<Option<crate::store::OAuthState>> {
                let row: Option<crate::store::rows::OAuthStateRow> = sqlx::query_as(
                    "DELETE FROM oauth_states WHERE state_hash = $1 \
                     RETURNING state_hash, redirect_uri, code_challenge, expires_at",
                )
                .bind(&state_hash.0[..])
                .fetch_optional(self.writer())
                .await?;
                let state = row.map(crate::store::OAuthState::try_from).transpose()?;
                Ok(state.filter(|s| s.expires_at > now))
            }

            async fn create_login_code(
                &self,
                code_hash: crate::store::TokenHash,
                user_id: uuid::Uuid,
                code_challenge: &str,
                expires_at: builtiful_core::Timestamp,
            ) -> crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO login_codes (code_hash, user_id, code_challenge, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&code_hash.0[..])
                .bind(user_id)
                .bind(code_challenge)
                .bind(expires_at.as_micros())
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn take_login_code(
                &self,
                code_hash: crate::store::TokenHash,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<Option<(uuid::Uuid, String)>> {
                let row: Option<(uuid::Uuid, String, i64)> = sqlx::query_as(
                    "DELETE FROM login_codes WHERE code_hash = $1 \
                     RETURNING user_id, code_challenge, expires_at",
                )
                .bind(&code_hash.0[..])
                .fetch_optional(self.writer())
                .await?;
                Ok(row
                    .filter(|(_, _, expires_at)| *expires_at > now.as_micros())
                    .map(|(user_id, challenge, _)| (user_id, challenge)))
            }

            async fn set_github_token(
                &self,
                user_id: uuid::Uuid,
                token: &crate::store::SealedGitHubToken,
            ) -> crate::store::Result<()> {
                sqlx::query(
                    "UPDATE users SET github_token = $2, github_refresh_token = $3, \
                     github_token_expires_at = $4 WHERE id = $1",
                )
                .bind(user_id)
                .bind(&token.access_token)
                .bind(&token.refresh_token)
                .bind(token.expires_at.map(builtiful_core::Timestamp::as_micros))
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn github_token(
                &self,
                user_id: uuid::Uuid,
            ) -> crate::store::Result<Option<crate::store::SealedGitHubToken>> {
                let row: Option<crate::store::rows::SealedTokenRow> = sqlx::query_as(
                    "SELECT github_token, github_refresh_token, github_token_expires_at \
                     FROM users WHERE id = $1",
                )
                .bind(user_id)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.and_then(crate::store::rows::SealedTokenRow::into_token))
            }

            async fn memberships_checked_at(
                &self,
                user_id: uuid::Uuid,
            ) -> crate::store::Result<Option<builtiful_core::Timestamp>> {
                let checked: Option<Option<i64>> =
                    sqlx::query_scalar("SELECT memberships_checked_at FROM users WHERE id = $1")
                        .bind(user_id)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(checked.flatten().map(builtiful_core::Timestamp::from_micros))
            }

            async fn mark_memberships_checked(
                &self,
                user_id: uuid::Uuid,
                now: builtiful_core::Timestamp,
            ) -> crate::store::Result<()> {
                sqlx::query("UPDATE users SET memberships_checked_at = $2 WHERE id = $1")
                    .bind(user_id)
                    .bind(now.as_micros())
                    .execute(self.writer())
                    .await?;
                Ok(())
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

/// The compare-and-set `UPDATE` of a job's state, run on an open transaction; evaluates to
/// whether it applied.
macro_rules! apply_change {
    ($tx:expr, $id:expr, $expected:expr, $change:expr, $now:expr) => {{
        let change: &crate::store::JobChange = $change;
        let billable = change.duration.map(|d| d.div_ceil(60) * 60);
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE jobs SET status = $3, failure_reason = COALESCE($4, failure_reason), \
             started_at = COALESCE($5, started_at), completed_at = COALESCE($6, completed_at), \
             duration = COALESCE($7, duration), billable_duration = COALESCE($8, billable_duration), \
             waiting = $9, workflow_job = $10, updated_at = $11 WHERE id = $1 AND status = $2",
        )
        .bind($id)
        .bind($expected.as_str())
        .bind(change.status.as_str())
        .bind(change.failure_reason.map(builtiful_core::FailureReason::as_str))
        .bind(change.started_at.map(builtiful_core::Timestamp::as_micros))
        .bind(change.completed_at.map(builtiful_core::Timestamp::as_micros))
        .bind(change.duration.map(to_i64))
        .bind(billable.map(to_i64))
        .bind(change.waiting)
        .bind(sqlx::types::Json(&change.workflow_job))
        .bind($now.as_micros())
        .execute($tx)
        .await?
        .rows_affected()
            == 1
    }};
}

pub(super) use apply_change;

/// A job's hold on a host and a runner: host, provisioner, lease, runner name and id, when it
/// was picked up, the id the host knows it by, and when its runner started.
pub(super) type Held = (
    Option<String>,
    Option<uuid::Uuid>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<uuid::Uuid>,
    Option<i64>,
);

/// What a claim sets on the job it takes from `Queued` to `Provisioning`. Parameters: `$3`
/// host, `$4` provisioner, `$5` lease expiry, `$6` now; the runner name is an expression the
/// backend gives.
macro_rules! claim_assignments {
    ($runner_name:literal) => {
        concat!(
            "status = 'Provisioning', host = $3, provisioner_token_id = $4, ",
            "lease_expires_at = $5, provisioner_picked_up_at = $6, updated_at = $6, ",
            "attempts = attempts + 1, runner_name = ",
            $runner_name,
            ", claimed_as = id, runner_id = NULL, runner_started_at = NULL, ",
            "runner_exited_at = NULL, runner_exit_code = NULL, runner_message = NULL"
        )
    };
}

pub(super) use claim_assignments;
