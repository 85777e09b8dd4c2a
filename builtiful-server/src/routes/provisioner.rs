//! The provisioner API: claim a job, keep its lease, report on its runner.

use axum::extract::State;
use builtiful_core::{ClaimRequest, ClaimResponse, HeartbeatResponse, Message, RunnerEvent};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Provisioner;
use crate::dispatch::{self, LEASE};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::store::HeartbeatOutcome;

fn not_held(job_id: Uuid) -> ApiError {
    ApiError::not_found(format!("Job {job_id} is not held by this provisioner"))
}

/// Claims at most one queued job that fits the host, waiting up to `wait` seconds for one.
#[utoipa::path(
    get,
    path = "/provisioner/jobs",
    tag = "provisioner",
    security(("bearer" = [])),
    params(ClaimRequest),
    responses(
        (status = 200, description = "A job with its JIT runner config, or `null`", body = ClaimResponse),
        (status = 400, description = "Invalid parameters", body = Message),
        (status = 401, description = "No valid provisioner token", body = Message)
    )
)]
pub async fn claim(
    State(state): State<AppState>,
    Provisioner(provisioner): Provisioner,
    Query(request): Query<ClaimRequest>,
) -> ApiResult<Json<ClaimResponse>> {
    let claim = request
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let new_job = dispatch::claim(&state, &provisioner, &claim).await?;
    Ok(Json(ClaimResponse { new_job }))
}

/// Renews the lease of a job this provisioner holds; says whether to stop its runner.
#[utoipa::path(
    post,
    path = "/provisioner/jobs/{job_id}/heartbeat",
    tag = "provisioner",
    security(("bearer" = [])),
    params(("job_id" = Uuid, Path, description = "The job the provisioner was given")),
    responses(
        (status = 200, description = "Lease renewed", body = HeartbeatResponse),
        (status = 401, description = "No valid provisioner token", body = Message),
        (status = 404, description = "Not a job this provisioner holds", body = Message)
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    Provisioner(provisioner): Provisioner,
    Path(job_id): Path<Uuid>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let now = state.now();
    let lease = builtiful_core::Timestamp::from_secs(now.secs_since_epoch + LEASE.as_secs());
    match state.store.heartbeat(job_id, provisioner.id, lease).await? {
        HeartbeatOutcome::Renewed => Ok(Json(HeartbeatResponse { cancel: false })),
        HeartbeatOutcome::Ended => Ok(Json(HeartbeatResponse { cancel: true })),
        HeartbeatOutcome::NotHeld => Err(not_held(job_id)),
    }
}

/// Records what the host saw of a job's runner (`RunnerStarted`, `RunnerExited`).
#[utoipa::path(
    post,
    path = "/provisioner/jobs/{job_id}/events",
    tag = "provisioner",
    security(("bearer" = [])),
    params(("job_id" = Uuid, Path, description = "The job the provisioner was given")),
    request_body = RunnerEvent,
    responses(
        (status = 202, description = "Recorded", body = Message),
        (status = 400, description = "Not a runner event", body = Message),
        (status = 401, description = "No valid provisioner token", body = Message),
        (status = 404, description = "Not a job this provisioner holds", body = Message)
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Provisioner(provisioner): Provisioner,
    Path(job_id): Path<Uuid>,
    Json(event): Json<RunnerEvent>,
) -> ApiResult<(axum::http::StatusCode, Json<Message>)> {
    if !state
        .store
        .record_runner_event(job_id, provisioner.id, &event, state.now())
        .await?
    {
        return Err(not_held(job_id));
    }
    tracing::info!(job.id = %job_id, event = %event.event, exit_code = ?event.exit_code, "runner event");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(Message::new("Recorded")),
    ))
}
