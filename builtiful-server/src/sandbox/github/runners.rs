//! Self-hosted runner and workflow job endpoints of the REST API, for repositories
//! (`/repos/{owner}/{repo}/actions/…`) and organisations (`/orgs/{org}/actions/…`). They take
//! an installation token whose installation owns the repository or organisation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{GitHubError, InstallationAuth, PageQuery, paginate, parse_id, with_link};
use super::world::{Runner, Scope, World};
use super::{SimulatedGitHub, jit, secrets, shapes};

/// The longest runner name GitHub accepts.
const MAX_RUNNER_NAME: usize = 64;

/// The runner and job routes.
pub fn router() -> Router<Arc<SimulatedGitHub>> {
    Router::new()
        .route(
            "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
            post(repo_jitconfig),
        )
        .route("/repos/{owner}/{repo}/actions/runners", get(repo_runners))
        .route(
            "/repos/{owner}/{repo}/actions/runners/{runner_id}",
            get(repo_runner).delete(delete_repo_runner),
        )
        .route(
            "/orgs/{org}/actions/runners/generate-jitconfig",
            post(org_jitconfig),
        )
        .route("/orgs/{org}/actions/runners", get(org_runners))
        .route(
            "/orgs/{org}/actions/runners/{runner_id}",
            get(org_runner).delete(delete_org_runner),
        )
        .route("/repos/{owner}/{repo}/actions/jobs/{job_id}", get(job))
}

/// The repository `owner/repo` as a runner scope, if `installation` owns it.
fn repo_scope(
    world: &World,
    installation: InstallationAuth,
    owner: &str,
    repo: &str,
) -> Result<Scope, GitHubError> {
    let repo = world
        .repo_by_name(owner, repo)
        .ok_or(GitHubError::NotFound)?;
    owned(world, installation, world.repos[repo].org)?;
    Ok(Scope::Repo(repo))
}

/// The organisation `org` as a runner scope, if `installation` is on it.
fn org_scope(
    world: &World,
    installation: InstallationAuth,
    org: &str,
) -> Result<Scope, GitHubError> {
    let org = world.org_by_login(org).ok_or(GitHubError::NotFound)?;
    owned(world, installation, org)?;
    Ok(Scope::Org(org))
}

/// Resources of other installations are invisible: 404, as on GitHub.
fn owned(world: &World, installation: InstallationAuth, org: usize) -> Result<(), GitHubError> {
    match world.installation(installation.0) {
        Some(i) if i.org == org => Ok(()),
        _ => Err(GitHubError::NotFound),
    }
}

#[derive(Deserialize)]
struct JitRequest {
    name: Option<Value>,
    runner_group_id: Option<Value>,
    labels: Option<Value>,
    work_folder: Option<Value>,
}

/// Validates a generate-jitconfig body like GitHub: 400 for JSON that does not parse, 422
/// for missing or wrong fields. Returns (name, group, labels, work folder).
fn parse_jit_request(body: &[u8]) -> Result<(String, u64, Vec<String>, String), GitHubError> {
    let request: JitRequest = serde_json::from_slice(body)
        .map_err(|_| GitHubError::BadRequest("Problems parsing JSON".into()))?;
    let invalid = |what: &str| GitHubError::Unprocessable(format!("Invalid request.\n\n{what}"));
    let name = match request.name {
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        Some(Value::String(_)) | None => return Err(invalid("\"name\" wasn't supplied.")),
        Some(other) => {
            return Err(invalid(&format!(
                "For 'properties/name', {other} is not a string."
            )));
        }
    };
    if name.chars().count() > MAX_RUNNER_NAME {
        return Err(invalid(
            "The runner name is too long (maximum is 64 characters).",
        ));
    }
    let group = match request.runner_group_id {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            invalid(&format!(
                "For 'properties/runner_group_id', {n} is not an integer."
            ))
        })?,
        None => return Err(invalid("\"runner_group_id\" wasn't supplied.")),
        Some(other) => {
            return Err(invalid(&format!(
                "For 'properties/runner_group_id', {other} is not an integer."
            )));
        }
    };
    World::runner_group(group).map_err(|e| GitHubError::Unprocessable(e.to_string()))?;
    let labels = match request.labels {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(label) if !label.trim().is_empty() => Ok(label),
                other => Err(invalid(&format!(
                    "For 'items', {other} is not a non-empty string."
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => return Err(invalid("\"labels\" wasn't supplied.")),
        Some(other) => {
            return Err(invalid(&format!(
                "For 'properties/labels', {other} is not an array."
            )));
        }
    };
    if labels.is_empty() {
        return Err(invalid(
            "For 'properties/labels', [] has fewer than 1 items.",
        ));
    }
    if labels.len() > 100 {
        return Err(invalid(
            "For 'properties/labels', the array has more than 100 items.",
        ));
    }
    let work_folder = match request.work_folder {
        Some(Value::String(folder)) => folder,
        None | Some(Value::Null) => "_work".to_owned(),
        Some(other) => {
            return Err(invalid(&format!(
                "For 'properties/work_folder', {other} is not a string."
            )));
        }
    };
    Ok((name, group, labels, work_folder))
}

impl SimulatedGitHub {
    /// Registers a JIT runner in `scope` (offline until its process connects) and returns
    /// GitHub's 201 body with the encoded config.
    fn generate_jitconfig(&self, scope: Scope, body: &[u8]) -> Result<Response, GitHubError> {
        let (name, group_id, labels, work_folder) = parse_jit_request(body)?;
        let now = self.now();
        let response = self.mutate(|world, _| {
            let taken = world
                .runners
                .values()
                .any(|r| r.scope == scope && r.name.eq_ignore_ascii_case(&name));
            if taken {
                return Err(GitHubError::Conflict(format!(
                    "Already exists - A runner with the name {name} already exists."
                )));
            }
            let secret = secrets::token("", 64);
            let id = world.runner_id();
            let runner = Runner {
                id,
                name,
                scope,
                group_id,
                labels: labels.iter().map(|l| world.label(l)).collect(),
                work_folder,
                secret: secrets::hash(&secret),
                online: false,
                job: None,
                last_seen: now,
            };
            let encoded = jit::encode(world, &runner, &self.config.base_url, &secret);
            let body = json!({"runner": shapes::runner(&runner), "encoded_jit_config": encoded});
            world.runners.insert(id, runner);
            Ok((StatusCode::CREATED, Json(body)).into_response())
        })?;
        Ok(response)
    }

    /// `{"total_count", "runners"}` of `scope`, optionally only the one named `name`.
    fn list_runners(&self, scope: Scope, query: &RunnerQuery) -> Response {
        let world = self.world();
        let all: Vec<Value> = world
            .runners
            .values()
            .filter(|r| r.scope == scope)
            .filter(|r| query.name.as_deref().is_none_or(|n| r.name == n))
            .map(shapes::runner)
            .collect();
        let total = all.len();
        let path = match scope {
            Scope::Repo(repo) => {
                let repo = &world.repos[repo];
                format!("repos/{}/{}", world.orgs[repo.org].login, repo.name)
            }
            Scope::Org(org) => format!("orgs/{}", world.orgs[org].login),
        };
        let url = format!("{}/{path}/actions/runners", world.links.api);
        let params: Vec<(&str, &str)> = query.name.iter().map(|n| ("name", n.as_str())).collect();
        let (items, link) = paginate(all, &query.page, &url, &params);
        with_link(json!({"total_count": total, "runners": items}), link)
    }

    /// One runner of `scope`.
    fn get_runner(&self, scope: Scope, id: &str) -> Result<Json<Value>, GitHubError> {
        let id = parse_id(id)?;
        let world = self.world();
        let runner = world
            .runners
            .get(&id)
            .filter(|r| r.scope == scope)
            .ok_or(GitHubError::NotFound)?;
        Ok(Json(shapes::runner(runner)))
    }

    /// Removes a runner of `scope`: 204, or 422 while it holds a job.
    fn delete_runner(&self, scope: Scope, id: &str) -> Result<StatusCode, GitHubError> {
        let id = parse_id(id)?;
        self.mutate(|world, _| {
            let runner = world
                .runners
                .get(&id)
                .filter(|r| r.scope == scope)
                .ok_or(GitHubError::NotFound)?;
            if runner.job.is_some() {
                return Err(GitHubError::Unprocessable(format!(
                    "Bad request - Runner \"{}\" is still running a job\"",
                    runner.name
                )));
            }
            world.runners.remove(&id);
            Ok(StatusCode::NO_CONTENT)
        })
    }
}

/// `?name=&per_page=&page=` of the runner lists.
#[derive(Debug, Deserialize)]
struct RunnerQuery {
    name: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn repo_jitconfig(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path((owner, repo)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, GitHubError> {
    let scope = repo_scope(&sim.world(), auth, &owner, &repo)?;
    sim.generate_jitconfig(scope, &body)
}

async fn org_jitconfig(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path(org): Path<String>,
    body: Bytes,
) -> Result<Response, GitHubError> {
    let scope = org_scope(&sim.world(), auth, &org)?;
    sim.generate_jitconfig(scope, &body)
}

async fn repo_runners(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<RunnerQuery>,
) -> Result<Response, GitHubError> {
    let scope = repo_scope(&sim.world(), auth, &owner, &repo)?;
    Ok(sim.list_runners(scope, &query))
}

async fn org_runners(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path(org): Path<String>,
    Query(query): Query<RunnerQuery>,
) -> Result<Response, GitHubError> {
    let scope = org_scope(&sim.world(), auth, &org)?;
    Ok(sim.list_runners(scope, &query))
}

async fn repo_runner(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, GitHubError> {
    let scope = repo_scope(&sim.world(), auth, &owner, &repo)?;
    sim.get_runner(scope, &id)
}

async fn org_runner(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<Value>, GitHubError> {
    let scope = org_scope(&sim.world(), auth, &org)?;
    sim.get_runner(scope, &id)
}

async fn delete_repo_runner(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Result<StatusCode, GitHubError> {
    let scope = repo_scope(&sim.world(), auth, &owner, &repo)?;
    sim.delete_runner(scope, &id)
}

async fn delete_org_runner(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path((org, id)): Path<(String, String)>,
) -> Result<StatusCode, GitHubError> {
    let scope = org_scope(&sim.world(), auth, &org)?;
    sim.delete_runner(scope, &id)
}

async fn job(
    State(sim): State<Arc<SimulatedGitHub>>,
    auth: InstallationAuth,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, GitHubError> {
    let id = parse_id(&id)?;
    let world = sim.world();
    let Scope::Repo(repo) = repo_scope(&world, auth, &owner, &repo)? else {
        return Err(GitHubError::NotFound);
    };
    let job = world
        .jobs
        .get(&id)
        .filter(|j| j.repo == repo)
        .ok_or(GitHubError::NotFound)?;
    Ok(Json(shapes::job(&world, job)))
}
