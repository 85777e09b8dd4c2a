//! Dispatch: handing each queued job to exactly one host that can run it, and the long-poll
//! that lets a host wait for one.
//!
//! The claim itself is one transaction in the store (fair across tenants, atomic). The JIT
//! runner config is minted after it commits, never under a database lock; when GitHub refuses,
//! the claim is undone (back to the queue when the failure is transient, `Failed/GitHubError`
//! otherwise) and the poll moves on to the next job.

pub mod reconciler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use builtiful_core::{Claim, FailureReason, NewJob, Timestamp};
use tokio::sync::Notify;

use crate::app::AppState;
use crate::error::ApiError;
use crate::github::{GitHubError, RunnerScope};
use crate::store::{ClaimFilter, ClaimedJob, ProvisionerToken};

/// How long a claimed job is leased before it must be renewed by a heartbeat.
pub const LEASE: Duration = Duration::from_mins(2);

/// A host's contact is written at most this often (each poll would otherwise be a write).
const HOST_RECORD_INTERVAL: Duration = Duration::from_secs(5);

/// While long-polling, look again at least this often even without a signal: a signal from
/// another replica can be lost while its LISTEN connection reconnects.
const RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The dispatcher's in-process state: who is waiting, and when hosts were last recorded.
#[derive(Debug, Default)]
pub struct Dispatcher {
    jobs_signal: Arc<Notify>,
    hosts_seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Dispatcher {
    /// The signal long-polls wait on.
    pub fn jobs_signal(&self) -> Arc<Notify> {
        self.jobs_signal.clone()
    }

    fn should_record_host(&self, host: &str, offered: u32) -> bool {
        let mut seen = self
            .hosts_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match seen.get(host) {
            Some((at, previous)) if *previous == offered && now - *at < HOST_RECORD_INTERVAL => {
                false
            }
            _ => {
                seen.insert(host.to_owned(), (now, offered));
                true
            }
        }
    }
}

/// Wakes the long-polls of this server and, through the database, of every other one.
pub async fn signal_jobs(state: &AppState) {
    state.dispatcher.jobs_signal.notify_waiters();
    if let Err(error) = state.store.publish_jobs_signal().await {
        tracing::warn!(error = %error, "cannot signal new jobs to other servers");
    }
}

/// Where runners for a job of `repository` (`owner/name`) are registered: the repository
/// itself, or its owner organisation when the server is configured so.
pub fn runner_scope(settings: &crate::app::Settings, repository: &str) -> Option<RunnerScope> {
    let (owner, repo) = repository.split_once('/')?;
    Some(if settings.organization_runners {
        RunnerScope::Organization {
            org: owner.to_owned(),
        }
    } else {
        RunnerScope::Repository {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
        }
    })
}

/// Claims a job for a host, waiting up to `claim.wait_secs` for one to fit.
pub async fn claim(
    state: &AppState,
    provisioner: &ProvisionerToken,
    claim: &Claim,
) -> Result<Option<NewJob>, ApiError> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(claim.wait_secs));
    let signal = state.dispatcher.jobs_signal();
    loop {
        // Subscribe before looking, so a job queued between the look and the wait still wakes us.
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let now = state.now();
        let filter = ClaimFilter {
            architecture: claim.cpu_architecture,
            available_vcpus: claim.available_vcpus,
            host: claim.host.clone(),
            provisioner_id: provisioner.id,
            lease_expires_at: Timestamp::from_secs(now.secs_since_epoch + LEASE.as_secs()),
        };
        if state
            .dispatcher
            .should_record_host(&claim.host, claim.available_vcpus)
        {
            state.store.record_host(&filter, now).await?;
        }
        while let Some(claimed) = state.store.claim_job(&filter, now).await? {
            state.metrics.observe_claim(&claimed, now);
            match provision(state, claimed).await? {
                Provisioned::Ready(job) => return Ok(Some(*job)),
                Provisioned::Refused => {} // That job failed; try the next one.
                // GitHub is down or limiting us: stop asking it until the host polls again.
                Provisioned::Later => return Ok(None),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(left.min(RECHECK_INTERVAL)) => {}
        }
    }
}

/// What registering a claimed job's runner came to.
enum Provisioned {
    /// The job, with its JIT config, for the host.
    Ready(Box<NewJob>),
    /// GitHub refused this job for good; it failed `GitHubError`.
    Refused,
    /// GitHub could not register it now; the job is back in the queue.
    Later,
}

/// Registers the job's JIT runner with GitHub, undoing the claim when GitHub refuses.
async fn provision(state: &AppState, claimed: ClaimedJob) -> Result<Provisioned, ApiError> {
    let job = &claimed.job;
    let Some(scope) = runner_scope(&state.settings, &job.repository) else {
        state
            .store
            .release_claim(job.id, Some(FailureReason::GitHubError), state.now())
            .await?;
        return Ok(Provisioned::Refused);
    };
    let labels = [job.label.clone()];
    let github = &state.github;
    let installation = claimed.github_installation_id;
    let mut result = github
        .generate_jitconfig(installation, &scope, &claimed.runner_name, &labels)
        .await;
    if let Err(GitHubError::Status { status: 409, .. }) = &result {
        // A runner of that name exists: an earlier attempt registered it (perhaps a call that
        // succeeded but whose answer was lost). It cannot serve us; replace it.
        delete_runner_named(state, installation, &scope, &claimed.runner_name).await;
        result = github
            .generate_jitconfig(installation, &scope, &claimed.runner_name, &labels)
            .await;
    }
    match result {
        Ok(jit) => {
            // Before the host hears of the claim: on PostgreSQL this synchronous commit is what
            // makes the claim itself durable (claims commit without waiting for the flush;
            // see `PostgresStore`'s claim connections). Every path out of here writes first.
            state.store.set_runner(job.id, jit.runner.id).await?;
            let (organization, repository) = job
                .repository
                .split_once('/')
                .unwrap_or(("", &job.repository));
            tracing::info!(job.id = %job.id, runner = %claimed.runner_name, "job handed to a host");
            Ok(Provisioned::Ready(Box::new(NewJob {
                id: job.id,
                github_installation_id: installation,
                repository: repository.to_owned(),
                tenant_id: job.tenant_id,
                vcpus: job.vcpus,
                max_run_time: job.max_run_time,
                jit_config: jit.encoded_jit_config,
                cpu_architecture: job.cpu_architecture,
                os: job.os,
                organization: organization.to_owned(),
                label: job.label.clone(),
            })))
        }
        Err(error) => {
            // A config may have been registered even if its answer failed: remove it.
            delete_runner_named(state, installation, &scope, &claimed.runner_name).await;
            let failure = (!error.is_transient()).then_some(FailureReason::GitHubError);
            tracing::warn!(job.id = %job.id, error = %error, requeued = failure.is_none(), "GitHub refused a JIT runner");
            state
                .store
                .release_claim(job.id, failure, state.now())
                .await?;
            if failure.is_some() {
                return Ok(Provisioned::Refused);
            }
            state.metrics.provisioning_failures.inc();
            Ok(Provisioned::Later)
        }
    }
}

/// Deletes the runner registered under `name`, if there is one (best effort: the reconciler
/// sweeps what this misses).
pub async fn delete_runner_named(
    state: &AppState,
    installation: i64,
    scope: &RunnerScope,
    name: &str,
) {
    match state.github.runners(installation, scope, Some(name)).await {
        Ok(runners) => {
            for runner in runners.into_iter().filter(|r| r.name == name) {
                if let Err(error) = state
                    .github
                    .delete_runner(installation, scope, runner.id)
                    .await
                {
                    tracing::warn!(error = %error, runner = name, "cannot delete a runner registration");
                }
            }
        }
        Err(error) => tracing::warn!(error = %error, runner = name, "cannot list runners"),
    }
}
