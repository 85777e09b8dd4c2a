//! Control endpoints under `/_sandbox`: not GitHub's API, but the levers that GitHub's
//! users and runners pull. No credentials are needed except for the runner protocol,
//! which takes the runner's secret from its JIT config.
//!
//! | method path | does |
//! |---|---|
//! | `POST /_sandbox/jobs` [`QueueJobs`] | queues workflow jobs (one run): 201 `{"jobs": [job]}` |
//! | `GET /_sandbox/jobs/{id}` | the job, REST shape |
//! | `POST /_sandbox/jobs/{id}/cancel` | cancels it: `completed`/`cancelled` |
//! | `POST /_sandbox/installations/{id}/suspend`, `…/unsuspend` | suspends or restores an installation (with its `installation` webhook) |
//! | `POST /_sandbox/runners/{id}/session` | the runner process connects: `online` |
//! | `DELETE /_sandbox/runners/{id}/session` | it disconnects: `offline` |
//! | `POST /_sandbox/runners/{id}/acquire?wait=SECS` | long-polls (≤ 60 s) for a job: 200 `{"job": Assignment}` or 204 |
//! | `POST /_sandbox/runners/{id}/jobs/{job}/start` | starts the assigned job: `in_progress` |
//! | `POST /_sandbox/runners/{id}/jobs/{job}/complete` `{"conclusion"}` | finishes it: `completed`; the JIT runner is removed |
//!
//! Runner requests carry `Authorization: Bearer <secret from .credentials>`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::actions::{ActionError, QueueJobs};
use super::world::World;
use super::{SimulatedGitHub, shapes};

/// The longest a runner's `acquire` may wait.
const MAX_WAIT_SECS: u64 = 60;

/// What a runner is told about the job it acquired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Assignment {
    /// The workflow job's id.
    pub id: u64,
    /// Its run's id.
    pub run_id: u64,
    /// The job's name.
    pub name: String,
    /// The workflow's name.
    pub workflow_name: String,
    /// `owner/name`.
    pub repository: String,
    /// The job's labels.
    pub labels: Vec<String>,
    /// How long to work on it.
    pub duration_secs: u64,
    /// The conclusion to report when done.
    pub conclusion: String,
}

/// An error of the control endpoints: `{"message"}` with a status.
#[derive(Debug)]
pub struct ControlError(StatusCode, String);

impl From<ActionError> for ControlError {
    fn from(error: ActionError) -> Self {
        let status = match error {
            ActionError::UnknownRepository(..) | ActionError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ActionError::UnknownJob(_) => StatusCode::NOT_FOUND,
            ActionError::UnknownRunner => StatusCode::UNAUTHORIZED,
            ActionError::Conflict(_) => StatusCode::CONFLICT,
        };
        Self(status, error.to_string())
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"message": self.1}))).into_response()
    }
}

/// The control routes.
pub fn router() -> Router<Arc<SimulatedGitHub>> {
    Router::new()
        .route("/jobs", post(queue))
        .route("/jobs/{job_id}", get(job))
        .route("/jobs/{job_id}/cancel", post(cancel))
        .route("/installations/{installation_id}/suspend", post(suspend))
        .route(
            "/users/{login}/orgs/{org}",
            axum::routing::put(add_member).delete(remove_member),
        )
        .route(
            "/installations/{installation_id}/unsuspend",
            post(unsuspend),
        )
        .route(
            "/runners/{runner_id}/session",
            post(connect).delete(disconnect),
        )
        .route("/runners/{runner_id}/acquire", post(acquire))
        .route("/runners/{runner_id}/jobs/{job_id}/start", post(start))
        .route(
            "/runners/{runner_id}/jobs/{job_id}/complete",
            post(complete),
        )
        .fallback(|| async {
            ControlError(StatusCode::NOT_FOUND, "no such control endpoint".into())
        })
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| {
        ControlError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid body: {e}"),
        )
    })
}

fn job_json(world: &World, id: u64) -> Result<Value, ControlError> {
    let job = world.jobs.get(&id).ok_or(ActionError::UnknownJob(id))?;
    Ok(shapes::job(world, job))
}

async fn queue(
    State(sim): State<Arc<SimulatedGitHub>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ControlError> {
    let request: QueueJobs = parse_body(&body)?;
    sim.mutate(|world, now| {
        let ids = world.queue_jobs(&request, now)?;
        let jobs = ids
            .iter()
            .map(|id| job_json(world, *id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((StatusCode::CREATED, Json(json!({"jobs": jobs}))))
    })
}

async fn job(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ControlError> {
    Ok(Json(job_json(&sim.world(), id)?))
}

async fn cancel(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ControlError> {
    sim.mutate(|world, now| {
        world.cancel(id, now)?;
        Ok(Json(job_json(world, id)?))
    })
}

/// Suspends (`suspend = true`) or restores an installation, emitting its webhook.
fn set_suspended(
    sim: &SimulatedGitHub,
    id: u64,
    suspend: bool,
) -> Result<Json<Value>, ControlError> {
    sim.mutate(|world, now| {
        let index = world
            .installations
            .iter()
            .position(|i| i.id == id)
            .ok_or_else(|| ControlError(StatusCode::NOT_FOUND, format!("no installation {id}")))?;
        if world.installations[index].suspended_at.is_some() == suspend {
            return Err(ControlError(
                StatusCode::CONFLICT,
                format!(
                    "installation {id} is already {}",
                    if suspend { "suspended" } else { "active" }
                ),
            ));
        }
        let sender = world.member_of(world.installations[index].org);
        let installation = &mut world.installations[index];
        if suspend {
            installation.suspended_at = Some(now);
            installation.suspended_by = Some(sender);
            // A suspended installation's tokens stop working.
            world.installation_tokens.retain(|_, t| t.subject != id);
            world.emit_installation(index, "suspend", sender);
        } else {
            installation.suspended_at = None;
            installation.suspended_by = None;
            world.emit_installation(index, "unsuspend", sender);
        }
        Ok(Json(shapes::installation(
            world,
            &world.installations[index],
        )))
    })
}

async fn suspend(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ControlError> {
    set_suspended(&sim, id, true)
}

async fn unsuspend(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ControlError> {
    set_suspended(&sim, id, false)
}

/// Adds or removes a person's membership of an organisation, as an org owner would on
/// GitHub: it changes which installations `GET /user/installations` shows them.
fn set_membership(
    sim: &SimulatedGitHub,
    login: &str,
    org: &str,
    member: bool,
) -> Result<Json<Value>, ControlError> {
    sim.mutate(|world, _| {
        let org_index = world
            .orgs
            .iter()
            .position(|o| o.login.eq_ignore_ascii_case(org))
            .ok_or_else(|| ControlError(StatusCode::NOT_FOUND, format!("no organisation {org}")))?;
        let person = world
            .users
            .iter_mut()
            .find(|p| p.login.eq_ignore_ascii_case(login))
            .ok_or_else(|| ControlError(StatusCode::NOT_FOUND, format!("no user {login}")))?;
        person.orgs.retain(|o| *o != org_index);
        if member {
            person.orgs.push(org_index);
        }
        Ok(Json(
            serde_json::json!({"login": person.login, "org": org, "member": member}),
        ))
    })
}

async fn add_member(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path((login, org)): Path<(String, String)>,
) -> Result<Json<Value>, ControlError> {
    set_membership(&sim, &login, &org, true)
}

async fn remove_member(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path((login, org)): Path<(String, String)>,
) -> Result<Json<Value>, ControlError> {
    set_membership(&sim, &login, &org, false)
}

/// The runner secret of a runner-protocol request.
fn runner_secret(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

async fn connect(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Json<Value>, ControlError> {
    sim.mutate(|world, now| {
        world.authenticate_runner(id, runner_secret(&headers), now)?;
        world.set_online(id, true)?;
        Ok(Json(shapes::runner(&world.runners[&id])))
    })
}

async fn disconnect(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<StatusCode, ControlError> {
    sim.mutate(|world, now| {
        world.authenticate_runner(id, runner_secret(&headers), now)?;
        world.set_online(id, false)?;
        Ok(StatusCode::NO_CONTENT)
    })
}

#[derive(Debug, Deserialize)]
struct AcquireQuery {
    wait: Option<u64>,
}

async fn acquire(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path(id): Path<u64>,
    Query(query): Query<AcquireQuery>,
    headers: HeaderMap,
) -> Result<Response, ControlError> {
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let secret = runner_secret(&headers);
    loop {
        // Registered before looking, so a job queued in between still wakes this poll.
        let notified = sim.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let found = sim.mutate(|world, now| -> Result<Option<Assignment>, ControlError> {
            world.authenticate_runner(id, secret, now)?;
            let Some(job_id) = world.acquire(id, now)? else {
                return Ok(None);
            };
            let job = &world.jobs[&job_id];
            let repo = &world.repos[job.repo];
            Ok(Some(Assignment {
                id: job.id,
                run_id: job.run_id,
                name: job.name.clone(),
                workflow_name: job.workflow_name.clone(),
                repository: format!("{}/{}", world.orgs[repo.org].login, repo.name),
                labels: job.labels.clone(),
                duration_secs: job.duration_secs,
                conclusion: job.outcome.clone(),
            }))
        })?;
        if let Some(assignment) = found {
            return Ok(Json(json!({"job": assignment})).into_response());
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

async fn start(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path((id, job_id)): Path<(u64, u64)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ControlError> {
    sim.mutate(|world, now| {
        world.authenticate_runner(id, runner_secret(&headers), now)?;
        world.start(id, job_id, now)?;
        Ok(Json(job_json(world, job_id)?))
    })
}

#[derive(Debug, Deserialize)]
struct Completion {
    conclusion: String,
}

async fn complete(
    State(sim): State<Arc<SimulatedGitHub>>,
    Path((id, job_id)): Path<(u64, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ControlError> {
    let completion: Completion = parse_body(&body)?;
    sim.mutate(|world, now| {
        world.authenticate_runner(id, runner_secret(&headers), now)?;
        world.complete(id, job_id, &completion.conclusion, now)?;
        Ok(Json(job_json(world, job_id)?))
    })
}
