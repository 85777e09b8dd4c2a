//! The SQLite backend: one file in WAL mode, many readers and exactly one writer.
//!
//! SQLite allows one writer at a time. Instead of letting writers race for the lock and retry
//! on `SQLITE_BUSY`, every write goes through a pool of one connection, and transactions that
//! read before they write start with `BEGIN IMMEDIATE`, so they can never deadlock on upgrade.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use std::sync::Arc;

use builtiful_core::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::rows::InstalledDispatchRow;
use super::shared::{claim_assignments, impl_store};
use super::{Backend, ClaimFilter, ClaimedJob, Result, StoreError};

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// Whether the last claim took a job: a hint for the next one, never a guarantee.
    last_claim_found: Arc<AtomicBool>,
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
        Ok(Self {
            reader,
            writer,
            last_claim_found: Arc::default(),
        })
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

    /// Claims under the single writer, in one statement: pick and take. A lone `UPDATE`
    /// opens its write transaction before it reads anything (its program starts with
    /// `Transaction` for writing), as `BEGIN IMMEDIATE` would, so it cannot fail upgrading a
    /// stale read; an explicit transaction would only add two round trips (~12% of the claim
    /// rate, measured).
    ///
    /// While claims find nothing, the pick runs first on a reader, so that empty polls do not
    /// queue for the write lock behind each other; while they find jobs, that look is skipped,
    /// as it would find one too and only cost the claim a second pick.
    async fn claim(&self, filter: &ClaimFilter, now: Timestamp) -> Result<Option<ClaimedJob>> {
        let arch = filter.architecture.as_str();
        let vcpus = i64::from(filter.available_vcpus);
        if !self.last_claim_found.load(Ordering::Relaxed) {
            let candidate: Option<Uuid> = sqlx::query_scalar(PICK_JOB)
                .bind(arch)
                .bind(vcpus)
                .fetch_optional(&self.reader)
                .await?;
            if candidate.is_none() {
                return Ok(None);
            }
        }
        let taken: Option<InstalledDispatchRow> = sqlx::query_as(CLAIM_JOB)
            .bind(arch)
            .bind(vcpus)
            .bind(&filter.host)
            .bind(filter.provisioner_id)
            .bind(filter.lease_expires_at.as_micros())
            .bind(now.as_micros())
            .bind(crate::webhooks::RUNNER_PREFIX)
            .bind(crate::webhooks::runner_claim_suffix())
            .fetch_optional(&self.writer)
            .await?;
        self.last_claim_found
            .store(taken.is_some(), Ordering::Relaxed);
        taken.map(TryInto::try_into).transpose()
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

/// The sizes a job can have, as a table `size(vcpus)`: a claim looks up a tenant's oldest
/// queued job of each size that fits (served by `jobs_queued_size`) instead of walking its
/// queue past the jobs too large for the host. Kept equal to [`VCPU_CHOICES`] by a test.
///
/// [`VCPU_CHOICES`]: builtiful_core::label::VCPU_CHOICES
macro_rules! vcpu_sizes {
    () => {
        "(SELECT 2 AS vcpus UNION ALL SELECT 4 UNION ALL SELECT 8 UNION ALL SELECT 16 \
         UNION ALL SELECT 32 UNION ALL SELECT 64) size"
    };
}

/// The oldest claimable job of the tenant that holds the fewest vCPUs now, among tenants with
/// a job that fits the host (and their quota). `$1` architecture, `$2` free vCPUs. Served by
/// `jobs_queued_size` (per tenant and size, in id order) and `tenants.held_vcpus` (kept by
/// triggers), so its cost follows the number of tenants, not the length of the queue or the
/// number of jobs running.
macro_rules! pick_job {
    () => {
        concat!(
            "SELECT job_id FROM (SELECT t.held_vcpus AS held, (SELECT MIN(( ",
            "SELECT j.id FROM jobs j WHERE j.tenant_id = t.id AND j.status = 'Queued' ",
            "AND NOT j.waiting AND j.cpu_architecture = $1 AND j.vcpus = size.vcpus ",
            "ORDER BY j.id LIMIT 1)) FROM ",
            vcpu_sizes!(),
            " WHERE size.vcpus <= $2 ",
            "AND (t.vcpu_quota IS NULL OR t.held_vcpus + size.vcpus <= t.vcpu_quota)) AS job_id ",
            "FROM tenants t WHERE t.uninstalled_at IS NULL AND NOT t.github_installation_suspended) ",
            "WHERE job_id IS NOT NULL ORDER BY held, job_id LIMIT 1"
        )
    };
}

const PICK_JOB: &str = pick_job!();

/// Takes the job [`PICK_JOB`] picks (architecture `$1`, `$2` free vCPUs) from `Queued` to
/// `Provisioning`, naming its runner `$7 || id || $8`. One statement is one write
/// transaction: nothing can change between the pick and the take. SQLite keeps a UUID as
/// 16 bytes; the runner name spells it as Rust does, in lowercase 8-4-4-4-12 hex.
const CLAIM_JOB: &str = concat!(
    "UPDATE jobs SET ",
    claim_assignments!(
        "$7 || lower(substr(hex(id), 1, 8) || '-' || substr(hex(id), 9, 4) || '-' || \
         substr(hex(id), 13, 4) || '-' || substr(hex(id), 17, 4) || '-' || substr(hex(id), 21)) || $8"
    ),
    " WHERE status = 'Queued' AND id = (",
    pick_job!(),
    ") RETURNING ",
    crate::store::rows::installed_dispatch_columns!()
);

#[cfg(test)]
mod tests {
    #[test]
    fn vcpu_sizes_are_the_label_grammars() {
        let listed: Vec<u32> = vcpu_sizes!()
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert_eq!(listed, builtiful_core::label::VCPU_CHOICES);
    }
}
