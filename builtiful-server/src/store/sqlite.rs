//! The SQLite backend: one file in WAL mode, many readers and exactly one writer.
//!
//! SQLite allows one writer at a time. Instead of letting writers race for the lock and retry
//! on `SQLITE_BUSY`, every write goes through a pool of one connection, and transactions that
//! read before they write start with `BEGIN IMMEDIATE`, so they can never deadlock on upgrade.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use std::sync::Arc;

use builtiful_core::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::shared::{PICK_JOB, impl_store, take_job};
use super::{Backend, ClaimFilter, ClaimedJob, Result, StoreError};

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and migrates it.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL `{url}`: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { reader, writer })
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Claims under the single writer. The pick runs first on a reader, so a poll that finds
    /// nothing never waits for the write lock; a pick that finds a job is repeated inside
    /// `BEGIN IMMEDIATE`, where nothing can change under it.
    async fn claim(&self, filter: &ClaimFilter, now: Timestamp) -> Result<Option<ClaimedJob>> {
        let arch = filter.architecture.as_str();
        let vcpus = i64::from(filter.available_vcpus);
        let candidate: Option<Uuid> = sqlx::query_scalar(PICK_JOB)
            .bind(arch)
            .bind(vcpus)
            .fetch_optional(&self.reader)
            .await?;
        if candidate.is_none() {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        let Some(id) = sqlx::query_scalar::<_, Uuid>(PICK_JOB)
            .bind(arch)
            .bind(vcpus)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let claimed = take_job!(&mut *tx, id, filter, now);
        tx.commit().await?;
        Ok(Some(claimed))
    }

    /// One process is the whole server: it always leads.
    #[allow(clippy::unused_async)]
    async fn lead(&self) -> Result<bool> {
        Ok(true)
    }

    /// One process is the whole server: the in-process signal is all there is.
    #[allow(clippy::unused_async)]
    async fn publish_signal(&self) -> Result<()> {
        Ok(())
    }

    #[allow(clippy::unused_async)]
    async fn listen(&self, _notify: Arc<Notify>, _shutdown: CancellationToken) {}

    async fn close_pools(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

impl_store!(SqliteStore, Backend::Sqlite);
