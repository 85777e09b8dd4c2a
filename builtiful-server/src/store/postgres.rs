//! The PostgreSQL backend, for several server replicas sharing one database.

use std::time::Duration;

use std::sync::Arc;

use builtiful_core::Timestamp;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::shared::{PICK_JOB, impl_store, take_job};
use super::{Backend, ClaimFilter, ClaimedJob, Result};

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
}

impl PostgresStore {
    /// Connects to a `postgres://` URL and migrates the database (migrations take an advisory
    /// lock, so replicas starting together apply them once).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            leader: Arc::default(),
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

    /// Claims with row locks: concurrent pollers skip jobs another transaction is taking
    /// (`FOR UPDATE SKIP LOCKED`) instead of queueing behind it.
    async fn claim(&self, filter: &ClaimFilter, now: Timestamp) -> Result<Option<ClaimedJob>> {
        let arch = filter.architecture.as_str();
        let vcpus = i64::from(filter.available_vcpus);
        let mut tx = self.pool.begin().await?;
        let Some(candidate) = sqlx::query_scalar::<_, Uuid>(PICK_JOB)
            .bind(arch)
            .bind(vcpus)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        // The fair pick, if no one else is taking it; else the same tenant's next fitting job;
        // else any fitting job (fairness yields to progress under contention).
        let mut locked: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE id = $1 AND status = 'Queued' FOR UPDATE SKIP LOCKED",
        )
        .bind(candidate)
        .fetch_optional(&mut *tx)
        .await?;
        if locked.is_none() {
            locked = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE status = 'Queued' AND NOT waiting \
                 AND cpu_architecture = $1 AND vcpus <= $2 \
                 AND tenant_id = (SELECT tenant_id FROM jobs WHERE id = $3) \
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .bind(arch)
            .bind(vcpus)
            .bind(candidate)
            .fetch_optional(&mut *tx)
            .await?;
        }
        if locked.is_none() {
            locked = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE status = 'Queued' AND NOT waiting \
                 AND cpu_architecture = $1 AND vcpus <= $2 AND tenant_id IN \
                 (SELECT id FROM tenants WHERE uninstalled_at IS NULL AND NOT github_installation_suspended) \
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .bind(arch)
            .bind(vcpus)
            .fetch_optional(&mut *tx)
            .await?;
        }
        let Some(id) = locked else {
            return Ok(None);
        };
        let claimed = take_job!(&mut *tx, id, filter, now);
        tx.commit().await?;
        Ok(Some(claimed))
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
        self.pool.close().await;
    }
}

impl_store!(PostgresStore, Backend::Postgres);
