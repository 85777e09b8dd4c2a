//! The reconciler: what no request does by itself. Expired leases are requeued (or failed
//! after three attempts), jobs stuck in the queue or running past their limit are failed,
//! runners of lost jobs are deregistered, and webhook deliveries GitHub failed to make are
//! asked for again. One server leads at a time (a PostgreSQL advisory lock; SQLite has one).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use builtiful_core::{FailureReason, JobStatus, Timestamp};
use tokio_util::sync::CancellationToken;

use super::{runner_scope, signal_jobs};
use crate::app::AppState;
use crate::store::{ExpiredLease, Result};

/// How often the reconciler runs in a server.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// A job is handed to hosts at most this many times before it fails `ProvisioningTimeout`.
pub const MAX_ATTEMPTS: u32 = 3;
/// A job may wait this long in the queue before it fails `QueueTimeout` (GitHub gives up then).
pub const QUEUE_TIMEOUT_SECS: u64 = 24 * 60 * 60;
/// Past `max_run_time`, the host should have stopped the runner; after this grace we stop
/// waiting for it.
pub const RUN_TIME_GRACE_SECS: u64 = 5 * 60;
/// Failed webhook deliveries are looked for this often (it costs a GitHub call).
const REDELIVERY_EVERY_TICKS: u64 = 60;
/// Runner registrations are swept this often (a GitHub call per recent repository).
const SWEEP_EVERY_TICKS: u64 = 12;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Jobs offered again after their lease ran out.
    pub requeued: u64,
    /// Jobs failed (`ProvisioningTimeout`, `RunnerLost`, `QueueTimeout`, `MaxRunTimeExceeded`).
    pub failed: u64,
    /// Webhook deliveries asked for again.
    pub redelivered: u64,
    /// Runner registrations of ours that no live job owns, deleted.
    pub swept: u64,
}

/// Which of the occasional chores a pass does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chores {
    /// Ask GitHub again for deliveries it failed to make.
    pub redeliver: bool,
    /// Delete orphaned runner registrations.
    pub sweep: bool,
}

/// Remembers which failed deliveries were already asked for again.
#[derive(Debug, Default)]
pub struct Redeliveries(Mutex<HashSet<i64>>);

/// Runs the reconciler until `shutdown`.
pub async fn run(state: AppState, every: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0_u64.. {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        // Every server refreshes its own gauges; only the leader reconciles.
        if let Err(error) = state.metrics.refresh_gauges(state.store.as_ref()).await {
            tracing::warn!(error = %error, "cannot refresh the queue gauges");
        }
        match state.store.try_lead().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(error = %error, "cannot take the reconciler lead");
                continue;
            }
        }
        let chores = Chores {
            redeliver: tick % REDELIVERY_EVERY_TICKS == 0,
            sweep: tick % SWEEP_EVERY_TICKS == 0,
        };
        match reconcile(&state, chores).await {
            Ok(pass) if pass != Pass::default() => tracing::info!(?pass, "reconciled"),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "reconciling failed"),
        }
    }
}

/// One pass of the reconciler (tests call it directly).
pub async fn reconcile(state: &AppState, chores: Chores) -> Result<Pass> {
    let now = state.now();
    let mut pass = Pass::default();
    for lease in state.store.expired_leases(now, 100).await? {
        match lease.job.status {
            JobStatus::Provisioning => {
                deregister(state, &lease).await;
                if lease.attempts >= MAX_ATTEMPTS {
                    if state
                        .store
                        .fail_job(
                            lease.job.id,
                            JobStatus::Provisioning,
                            FailureReason::ProvisioningTimeout,
                            now,
                        )
                        .await?
                    {
                        pass.failed += 1;
                    }
                } else if state.store.requeue_job(lease.job.id, now).await? {
                    pass.requeued += 1;
                }
            }
            JobStatus::Running
                if state
                    .store
                    .fail_job(
                        lease.job.id,
                        JobStatus::Running,
                        FailureReason::RunnerLost,
                        now,
                    )
                    .await? =>
            {
                pass.failed += 1;
                deregister(state, &lease).await;
            }
            _ => {}
        }
    }
    if pass.requeued > 0 {
        signal_jobs(state).await;
    }
    let queue_cutoff =
        Timestamp::from_secs(now.secs_since_epoch.saturating_sub(QUEUE_TIMEOUT_SECS));
    pass.failed += state.store.expire_queue(queue_cutoff, now).await?;
    for lease in state
        .store
        .expire_run_time(RUN_TIME_GRACE_SECS, now)
        .await?
    {
        deregister(state, &lease).await;
        pass.failed += 1;
    }
    if chores.redeliver {
        pass.redelivered = redeliver_failed(state).await;
    }
    if chores.sweep {
        pass.swept = sweep_runners(state).await?;
    }
    Ok(pass)
}

/// Deletes idle runner registrations named like ours (`builtiful-<job id>`) that no job in
/// `Provisioning` or `Running` holds: left by hosts that died, by lost answers, or by jobs
/// GitHub gave to another runner.
async fn sweep_runners(state: &AppState) -> Result<u64> {
    let since = Timestamp::from_secs(
        state
            .now()
            .secs_since_epoch
            .saturating_sub(QUEUE_TIMEOUT_SECS),
    );
    let mut swept = 0;
    for (installation, repository) in state.store.recent_repositories(since).await? {
        let Some(scope) = runner_scope(&state.settings, &repository) else {
            continue;
        };
        let runners = match state.github.runners(installation, &scope, None).await {
            Ok(runners) => runners,
            Err(error) => {
                tracing::warn!(error = %error, repository, "cannot list runners");
                continue;
            }
        };
        for runner in runners.into_iter().filter(|r| !r.busy) {
            if !crate::webhooks::is_our_runner(&runner.name) {
                continue; // Not one of ours.
            }
            let holder = state.store.job_by_runner_name(&runner.name).await?;
            let live = holder.is_some_and(|h| {
                matches!(h.job.status, JobStatus::Provisioning | JobStatus::Running)
            });
            if live {
                continue;
            }
            match state
                .github
                .delete_runner(installation, &scope, runner.id)
                .await
            {
                Ok(()) => swept += 1,
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    tracing::warn!(error = %error, runner = runner.name, "cannot delete an orphaned runner");
                }
            }
        }
    }
    Ok(swept)
}

/// Deletes the runner registered for a job that will not use it (best effort; a busy runner,
/// GitHub answers 422, is running something and is left alone).
async fn deregister(state: &AppState, lease: &ExpiredLease) {
    let (Some(runner_id), Some(scope)) = (
        lease.runner_id,
        runner_scope(&state.settings, &lease.job.repository),
    ) else {
        return;
    };
    if let Err(error) = state
        .github
        .delete_runner(lease.github_installation_id, &scope, runner_id)
        .await
        && !error.is_not_found()
    {
        tracing::warn!(job.id = %lease.job.id, error = %error, "cannot delete a runner registration");
    }
}

/// Asks GitHub to deliver again the events it failed to deliver to us.
async fn redeliver_failed(state: &AppState) -> u64 {
    let deliveries = match state.github.deliveries().await {
        Ok(deliveries) => deliveries,
        Err(error) => {
            tracing::warn!(error = %error, "cannot list webhook deliveries");
            return 0;
        }
    };
    let delivered: HashSet<&str> = deliveries
        .iter()
        .filter(|d| d.delivered)
        .map(|d| d.guid.as_str())
        .collect();
    let mut count = 0;
    for delivery in deliveries
        .iter()
        .filter(|d| !d.delivered && !delivered.contains(d.guid.as_str()))
    {
        if state
            .store
            .delivery_seen(&delivery.guid)
            .await
            .unwrap_or(true)
        {
            continue;
        }
        let first_time = state
            .redeliveries
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(delivery.id);
        if !first_time {
            continue;
        }
        match state.github.redeliver(delivery.id).await {
            Ok(()) => count += 1,
            Err(error) => {
                tracing::warn!(error = %error, delivery = %delivery.guid, "cannot redeliver");
            }
        }
    }
    count
}
