//! The PostgreSQL backend, for several server replicas sharing one database.

use std::time::Duration;

use std::sync::Arc;

use builtiful_core::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::rows::InstalledDispatchRow;
use super::shared::{claim_assignments, impl_store};
use super::{Backend, ClaimFilter, ClaimedJob, Result, StoreError};

/// The `NOTIFY` channel on which servers tell each other that jobs can be claimed.
const JOBS_CHANNEL: &str = "builtiful_jobs";
/// The advisory lock key of the reconciler's leader ("bfrecon" in ASCII).
const LEADER_LOCK: i64 = 0x0062_6672_6563_6f6e;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The connection holding the reconciler's advisory lock, while this server leads.
    leader: Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
    /// The connections claims run on, few and without waiting for the WAL flush at commit.
    ///
    /// Few: every claim reaches for the same rows at the head of the queue; beyond a few at a
    /// time they only wait on each other's buffer locks inside the database (measured: 4
    /// concurrent claims take ~1,000 jobs/s on 2 cores where 32 take ~700), so the rest wait
    /// for a connection, in line.
    ///
    /// Without the flush (`synchronous_commit = off`): no host learns of a claim before a
    /// synchronous commit that follows it (the runner id recorded, or the claim released),
    /// and that commit flushes the WAL through the claim's too. A crash before then loses a
    /// claim nobody was told of: the job is simply still queued.
    claims: PgPool,
}

/// How many claims a server runs against PostgreSQL at once; see `PostgresStore::claims`.
const CONCURRENT_CLAIMS: u32 = 4;

impl PostgresStore {
    /// Connects to a `postgres://` URL and migrates the database (migrations take an advisory
    /// lock, so replicas starting together apply them once).
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let claims = PgPoolOptions::new()
            .max_connections(CONCURRENT_CLAIMS)
            .min_connections(0)
            // Claims queue here under load; a poll waits as long as any other request would.
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.options([("synchronous_commit", "off")]));
        Ok(Self {
            pool,
            leader: Arc::default(),
            claims,
        })
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Claims in one statement, which commits alone: pick, lock and take, with no round trip
    /// while a row is locked. Concurrent pollers skip the rows others are taking (`SKIP
    /// LOCKED`) and move on to the tenant's next job, then to the next tenant in line.
    async fn claim(&self, filter: &ClaimFilter, now: Timestamp) -> Result<Option<ClaimedJob>> {
        let taken: Option<InstalledDispatchRow> = sqlx::query_as(CLAIM_JOB)
            .bind(filter.architecture.as_str())
            .bind(i64::from(filter.available_vcpus))
            .bind(&filter.host)
            .bind(filter.provisioner_id)
            .bind(filter.lease_expires_at.as_micros())
            .bind(now.as_micros())
            .bind(crate::webhooks::RUNNER_PREFIX)
            .bind(crate::webhooks::runner_claim_suffix())
            .fetch_optional(&self.claims)
            .await?;
        taken.map(TryInto::try_into).transpose()
    }

    /// Holds the reconciler's advisory lock on a dedicated connection: the lock lives as long
    /// as that session, so a leader that dies hands over as soon as its connection closes.
    async fn lead(&self) -> Result<bool> {
        let mut held = self.leader.lock().await;
        if let Some(conn) = held.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                return Ok(true);
            }
            *held = None;
        }
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if locked {
            *held = Some(conn.detach());
        }
        Ok(locked)
    }

    async fn publish_signal(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(JOBS_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `LISTEN`s on its own connection, reconnecting after failures, and wakes `notify` for
    /// every signal (and after reconnecting, in case one was missed meanwhile).
    async fn listen(&self, notify: Arc<Notify>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot LISTEN for new jobs; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(error) = listener.listen(JOBS_CHANNEL).await {
                tracing::warn!(error = %error, "cannot LISTEN for new jobs; retrying");
                continue;
            }
            notify.notify_waiters();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(_) => notify.notify_waiters(),
                        Err(error) => {
                            tracing::warn!(error = %error, "lost the LISTEN connection; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn close_pools(&self) {
        // Hand the reconciler's lead over now rather than when the process exits.
        if let Some(conn) = self.leader.lock().await.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        self.claims.close().await;
        self.pool.close().await;
    }
}

impl_store!(PostgresStore, Backend::Postgres);

/// The id of tenant `t`'s oldest claimable job of one size, if the host (`$1` architecture,
/// `$2` free vCPUs) and the tenant's quota (`held.vcpus` held now) leave room for it; NULL
/// otherwise. The size is a literal, not a parameter, so that the planner weighs each probe
/// with what it knows of that size (one `jobs_queued_size` lookup), and one uncorrelated
/// probe of the whole queue (`jobs_queued_fit`, once per statement) rules out a size no one
/// queued before any tenant is looked at.
macro_rules! oldest_of_size {
    ($vcpus:literal) => {
        concat!(
            "CASE WHEN $2 >= ",
            $vcpus,
            " AND (t.vcpu_quota IS NULL OR held.vcpus + ",
            $vcpus,
            " <= t.vcpu_quota)",
            " AND EXISTS (SELECT FROM jobs q WHERE q.status = 'Queued' AND NOT q.waiting",
            " AND q.cpu_architecture = $1 AND q.vcpus = ",
            $vcpus,
            ")",
            " THEN (SELECT j.id FROM jobs j WHERE j.tenant_id = t.id AND j.status = 'Queued'",
            " AND NOT j.waiting AND j.cpu_architecture = $1 AND j.vcpus = ",
            $vcpus,
            " ORDER BY j.id LIMIT 1) END"
        )
    };
}

/// Takes a job for a host with `$2` free vCPUs of architecture `$1`, naming its runner
/// `$7 || id || $8`.
///
/// `line`: every tenant with a job that fits, with the vCPUs it holds now (the sum of its
/// `tenant_held_vcpus` shards, kept by triggers) and its oldest job that fits (one probe
/// per size, [`VCPU_CHOICES`]); evaluated once. Tenants go in order of held vCPUs, then of
/// that oldest job. The first tenant whose jobs of that size are not all being taken by
/// others gives its oldest free one (`SKIP LOCKED`). The cost follows the number of
/// tenants, not the length of the queue.
///
/// Under contention a claim may take a tenant's later job of the same size, or go to the
/// next tenant, rather than wait. The quota check reads held vCPUs without a lock: claims
/// racing for one tenant can take it over its quota by the jobs in flight.
///
/// [`VCPU_CHOICES`]: builtiful_core::label::VCPU_CHOICES
const CLAIM_JOB: &str = concat!(
    "WITH line AS MATERIALIZED (SELECT t.id AS tenant_id, held.vcpus AS held, LEAST(",
    oldest_of_size!("2"),
    ", ",
    oldest_of_size!("4"),
    ", ",
    oldest_of_size!("8"),
    ", ",
    oldest_of_size!("16"),
    ", ",
    oldest_of_size!("32"),
    ", ",
    oldest_of_size!("64"),
    ") AS oldest_id FROM tenants t ",
    "CROSS JOIN LATERAL (SELECT CAST(COALESCE(SUM(h.vcpus), 0) AS BIGINT) AS vcpus ",
    "FROM tenant_held_vcpus h WHERE h.tenant_id = t.id) held ",
    "WHERE t.uninstalled_at IS NULL AND NOT t.github_installation_suspended) ",
    "UPDATE jobs SET ",
    claim_assignments!("$7 || id::text || $8"),
    " WHERE status = 'Queued' AND id = (SELECT pick.id FROM (",
    "SELECT line.tenant_id, line.oldest_id, oldest.vcpus FROM line ",
    "JOIN jobs oldest ON oldest.id = line.oldest_id ORDER BY line.held, line.oldest_id) fair ",
    "CROSS JOIN LATERAL (SELECT j.id FROM jobs j WHERE j.tenant_id = fair.tenant_id ",
    "AND j.status = 'Queued' AND NOT j.waiting AND j.cpu_architecture = $1 ",
    "AND j.vcpus = fair.vcpus AND j.id >= fair.oldest_id ",
    "ORDER BY j.id LIMIT 1 FOR UPDATE SKIP LOCKED) pick LIMIT 1) RETURNING ",
    crate::store::rows::installed_dispatch_columns!()
);

#[cfg(test)]
mod tests {
    #[test]
    fn every_size_is_probed() {
        for vcpus in builtiful_core::label::VCPU_CHOICES {
            let probe = format!("AND j.vcpus = {vcpus} ORDER BY");
            assert_eq!(super::CLAIM_JOB.matches(&probe).count(), 1, "{vcpus} vCPUs");
        }
        assert_eq!(super::CLAIM_JOB.matches("THEN (SELECT j.id").count(), 6);
    }
}
