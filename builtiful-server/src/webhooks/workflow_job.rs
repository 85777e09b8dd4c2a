//! Applying `workflow_job` events to jobs. Deliveries come twice, late, and out of order, so
//! every change is forward-only: a job's status only ever moves toward its end, and each
//! change is a compare-and-set on the status it was read in.

use builtiful_core::{FailureReason, JobStatus, Tenant, Timestamp, label};
use uuid::Uuid;

use super::payload::WorkflowJobEvent;
use crate::app::AppState;
use crate::error::ApiError;
use crate::github::parse_time;
use crate::store::{JobChange, JobInsert, JobRecord, run_time};

/// Runners Builtiful registers are named `builtiful-<job id>-<claim>`: unique per claim, so
/// a job offered again gets a runner of a new name while the old one may still be working.
pub const RUNNER_PREFIX: &str = "builtiful-";

/// The name of the runner registered for one claim of a job.
pub fn runner_name(job_id: Uuid) -> String {
    format!("{RUNNER_PREFIX}{job_id}{}", runner_claim_suffix())
}

/// What follows the job id in a runner's name: a new random tag for each claim. (For a
/// claim that learns the job's id only in the database, which joins the parts itself.)
pub fn runner_claim_suffix() -> String {
    let claim: [u8; 4] = rand::random();
    format!("-{}", hex::encode(claim))
}

/// Whether a runner is one Builtiful registered.
pub fn is_our_runner(runner_name: &str) -> bool {
    runner_name
        .strip_prefix(RUNNER_PREFIX)
        .and_then(|rest| rest.get(..36))
        .is_some_and(|id| id.parse::<Uuid>().is_ok())
}

/// How far along a status is; a change must not lower it.
const fn progress(status: JobStatus) -> u8 {
    match status {
        JobStatus::Queued | JobStatus::Provisioning => 0,
        JobStatus::Running => 1,
        JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled => 2,
    }
}

/// What an event says the job's state is now.
struct Target {
    status: JobStatus,
    waiting: bool,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
}

fn time(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| parse_time(t).ok())
}

fn target(event: &WorkflowJobEvent, now: Timestamp) -> Option<Target> {
    let job = &event.workflow_job;
    let started_at = time(job.started_at.as_deref());
    Some(match event.action.as_str() {
        "queued" => Target {
            status: JobStatus::Queued,
            waiting: false,
            started_at: None,
            completed_at: None,
        },
        "waiting" => Target {
            status: JobStatus::Queued,
            waiting: true,
            started_at: None,
            completed_at: None,
        },
        "in_progress" => Target {
            status: JobStatus::Running,
            waiting: false,
            started_at: started_at.or(Some(now)),
            completed_at: None,
        },
        "completed" => {
            // Cancelled before any runner took it: no runner, nothing ran.
            let never_ran = job.runner_name.as_deref().is_none_or(str::is_empty);
            let cancelled = job.conclusion.as_deref() == Some("cancelled") && never_ran;
            Target {
                status: if cancelled {
                    JobStatus::Cancelled
                } else {
                    JobStatus::Completed
                },
                waiting: false,
                started_at: if never_ran { None } else { started_at },
                completed_at: Some(time(job.completed_at.as_deref()).unwrap_or(now)),
            }
        }
        _ => return None,
    })
}

/// Applies a `workflow_job` event for `tenant`.
pub async fn apply(
    state: &AppState,
    tenant: &Tenant,
    event: &WorkflowJobEvent,
    raw_job: serde_json::Value,
) -> Result<(), ApiError> {
    let labels = event.workflow_job.labels.iter().map(String::as_str);
    let Some((label, spec)) = label::find(labels) else {
        return Ok(()); // Not a Builtiful job.
    };
    let now = state.now();
    let Some(target) = target(event, now) else {
        return Ok(()); // An action we do not know: ignored, as GitHub asks.
    };
    // A few rounds in case another delivery for the same job changes it between our read and
    // our write; each round re-reads and re-decides.
    for _ in 0..5 {
        let existing = state
            .store
            .job_by_workflow_job_id(event.workflow_job.id)
            .await?;
        let done = match existing {
            None => {
                insert(
                    state,
                    tenant,
                    event,
                    label,
                    &spec,
                    &target,
                    raw_job.clone(),
                    now,
                )
                .await?
            }
            Some(record) => advance(state, event, &record, &target, raw_job.clone(), now).await?,
        };
        if done {
            return Ok(());
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "workflow job {} kept changing under us",
        event.workflow_job.id
    )))
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    state: &AppState,
    tenant: &Tenant,
    event: &WorkflowJobEvent,
    label: &str,
    spec: &Result<label::JobSpec, label::LabelError>,
    target: &Target,
    workflow_job: serde_json::Value,
    now: Timestamp,
) -> Result<bool, ApiError> {
    // A label we cannot run, or a suspended installation, fails the job at once, visibly.
    let refusal = match spec {
        Err(error) => Some(error.failure_reason()),
        Ok(_) if tenant.github_installation_suspended => Some(FailureReason::TenantSuspended),
        Ok(_) => None,
    };
    let (status, failure_reason) = match refusal {
        Some(reason) if !target.status.is_final() => (JobStatus::Failed, Some(reason)),
        _ => (target.status, None),
    };
    let spec = spec.as_ref().ok();
    let sender = event.sender.as_ref();
    let job = JobInsert {
        tenant_id: tenant.id,
        workflow_job_id: event.workflow_job.id,
        repository: event.repository.full_name.clone(),
        initiator: sender.map_or_else(String::new, |s| s.login.clone()),
        initiator_github_id: sender.map_or(0, |s| s.id),
        cpu_architecture: spec.map_or(builtiful_core::CpuArchitecture::Amd64, |s| s.architecture),
        os: spec.map_or(builtiful_core::Os::Ubuntu2404, |s| s.os),
        label: label.to_owned(),
        vcpus: spec.map_or(label::DEFAULT_VCPUS, |s| s.vcpus),
        status,
        failure_reason,
        waiting: target.waiting,
        started_at: target.started_at,
        completed_at: target
            .completed_at
            .or_else(|| status.is_final().then_some(now)),
        workflow_job,
    };
    match state.store.insert_job(&job, now).await {
        Ok(inserted) => {
            tracing::info!(job.id = %inserted.id, tenant.id = %tenant.id, status = %inserted.status, "job recorded");
            Ok(true)
        }
        // Another delivery for the same job inserted it first: go round and apply ours to it.
        Err(crate::store::StoreError::Conflict(_)) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

async fn advance(
    state: &AppState,
    event: &WorkflowJobEvent,
    record: &JobRecord,
    target: &Target,
    workflow_job: serde_json::Value,
    now: Timestamp,
) -> Result<bool, ApiError> {
    let current = record.job.status;
    let moves_forward = progress(target.status) > progress(current);
    // `queued` after `waiting`: the approval came, the job may now be claimed.
    let approved = target.status == JobStatus::Queued && !target.waiting && record.waiting;
    if !moves_forward && !approved {
        return Ok(true); // Late, duplicate or backward: nothing to do.
    }
    let started_at = target.started_at.or(record.job.started_at);
    let change = JobChange {
        status: target.status,
        failure_reason: None,
        started_at: target.started_at,
        completed_at: target.completed_at,
        duration: target.completed_at.map(|end| run_time(started_at, end).0),
        waiting: target.waiting && current == JobStatus::Queued,
        workflow_job,
    };
    // Which job holds the runner that took this one: usually this job, but GitHub may have
    // given the runner registered for another job to it. Runner names are unique per claim, and
    // a runner's name moves with it from job to job, so the holder is whoever has it now.
    let owner = match event
        .workflow_job
        .runner_name
        .as_deref()
        .filter(|n| is_our_runner(n))
    {
        Some(name) if target.status == JobStatus::Running => state
            .store
            .job_by_runner_name(name)
            .await?
            .map(|holder| holder.job.id)
            .filter(|holder| *holder != record.job.id),
        _ => None,
    };
    let applied = match owner {
        // GitHub gave the runner made for another job to this one.
        Some(owner) if target.status == JobStatus::Running => {
            state
                .store
                .start_on_foreign_runner(record.job.id, current, owner, &change, now)
                .await?
        }
        _ => {
            state
                .store
                .update_job(record.job.id, current, &change, now)
                .await?
        }
    };
    if applied {
        tracing::info!(job.id = %record.job.id, from = %current, to = %target.status, "job advanced");
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_names_are_ours_and_unique_per_claim() {
        let id = Uuid::now_v7();
        let (first, second) = (runner_name(id), runner_name(id));
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("builtiful-{id}-")));
        assert!(is_our_runner(&first));
        assert!(!is_our_runner("builtiful-nope"));
        assert!(!is_our_runner("GitHub Actions 5"));
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(progress(JobStatus::Running) > progress(JobStatus::Provisioning));
        assert!(progress(JobStatus::Cancelled) > progress(JobStatus::Running));
        assert_eq!(
            progress(JobStatus::Queued),
            progress(JobStatus::Provisioning)
        );
    }
}
