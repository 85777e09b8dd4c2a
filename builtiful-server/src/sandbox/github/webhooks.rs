//! Webhooks: payloads shaped like GitHub's, an ordered outbox that the background task
//! POSTs to the server with GitHub's headers and signature, a record of every attempt, and
//! the App's delivery endpoints (`GET /app/hook/deliveries`,
//! `POST /app/hook/deliveries/{id}/attempts`) for listing and redelivering.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::api::{AppAuth, GitHubError, parse_id, with_link};
use super::time::iso8601;
use super::world::{Attempt, Delivery, World};
use super::{SimulatedGitHub, secrets, shapes};

/// The id of the App's webhook (`X-GitHub-Hook-ID`).
pub const HOOK_ID: u64 = 470_000_001;
/// The `User-Agent` of deliveries.
pub const USER_AGENT: &str = "GitHub-Hookshot/sandbox";

impl World {
    /// Puts a delivery of `payload` in the outbox, unless the installation is suspended
    /// (GitHub sends a suspended installation nothing but its `installation` events).
    pub fn emit(
        &mut self,
        event: &'static str,
        payload: &Value,
        installation_id: Option<u64>,
        repository_id: Option<u64>,
    ) {
        let suspended = installation_id
            .and_then(|id| self.installation(id))
            .is_some_and(|i| i.suspended_at.is_some());
        if suspended && event != "installation" {
            return;
        }
        let id = self.delivery_id();
        let delivery = Delivery {
            id,
            guid: uuid::Uuid::now_v7().to_string(),
            event,
            action: payload["action"].as_str().map(str::to_owned),
            installation_id,
            repository_id,
            body: serde_json::to_vec(payload)
                .expect("JSON values serialize")
                .into(),
            redelivery: false,
            attempt: None,
        };
        self.deliveries.insert(id, delivery);
        self.outbox.push_back(id);
    }

    /// Emits `workflow_job` with `action` for job `job_id` as it is now.
    pub fn emit_workflow_job(&mut self, job_id: u64, action: &str) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let repo = &self.repos[job.repo];
        let org = repo.org;
        let repository_id = repo.id;
        let installation = self.installation_of(org).map(|i| i.id);
        let mut payload = json!({
            "action": action,
            "workflow_job": shapes::job(self, job),
            "repository": shapes::repository(self, job.repo),
            "organization": shapes::organization(self, org),
            "sender": shapes::person(self, job.sender),
        });
        if let Some(id) = installation {
            payload["installation"] =
                json!({"id": id, "node_id": shapes::node_id("Installation", id)});
        }
        self.emit("workflow_job", &payload, installation, Some(repository_id));
    }

    /// Emits `installation` with `action` (`suspend`, `unsuspend`) for the installation at
    /// `index`, sent by `sender`.
    pub fn emit_installation(&mut self, index: usize, action: &str, sender: usize) {
        let installation = self.installations[index].clone();
        let payload = json!({
            "action": action,
            "installation": shapes::installation(self, &installation),
            "sender": shapes::person(self, sender),
        });
        self.emit("installation", &payload, Some(installation.id), None);
    }
}

impl SimulatedGitHub {
    /// Sends every delivery in the outbox, in order, recording each attempt.
    pub(super) async fn deliver_outbox(&self, shutdown: &CancellationToken) {
        loop {
            let next = {
                let mut world = self.world();
                let next = world.outbox.pop_front();
                next.and_then(|id| world.deliveries.get(&id).cloned())
            };
            let Some(delivery) = next else {
                return;
            };
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return,
                attempt = self.send(&delivery) => attempt,
            };
            tracing::debug!(
                delivery.id = delivery.id,
                event = delivery.event,
                status = %attempt.status,
                "webhook delivered"
            );
            if let Some(stored) = self.world().deliveries.get_mut(&delivery.id) {
                stored.attempt = Some(attempt);
            }
        }
    }

    /// POSTs one delivery with GitHub's headers.
    async fn send(&self, delivery: &Delivery) -> Attempt {
        let delivered_at = self.now();
        let started = Instant::now();
        let signature =
            secrets::signature_256(self.config.webhook_secret.as_bytes(), &delivery.body);
        let result = self
            .http
            .post(self.config.webhook_url.clone())
            .header("content-type", "application/json")
            .header("user-agent", USER_AGENT)
            .header("x-github-event", delivery.event)
            .header("x-github-delivery", &delivery.guid)
            .header("x-github-hook-id", HOOK_ID.to_string())
            .header("x-github-hook-installation-target-type", "integration")
            .header(
                "x-github-hook-installation-target-id",
                self.config.app_id.to_string(),
            )
            .header("x-hub-signature-256", signature)
            .body(delivery.body.to_vec())
            .send()
            .await;
        let (status, status_code) = match result {
            Ok(response) if response.status().is_success() => {
                ("OK".to_owned(), response.status().as_u16())
            }
            Ok(response) => (
                format!("Invalid HTTP Response: {}", response.status().as_u16()),
                response.status().as_u16(),
            ),
            Err(error) if error.is_timeout() => ("timed out".to_owned(), 0),
            Err(_) => ("failed to connect to host".to_owned(), 0),
        };
        Attempt {
            delivered_at,
            duration: started.elapsed().as_secs_f64(),
            status,
            status_code,
        }
    }
}

/// The delivery routes.
pub fn router() -> Router<Arc<SimulatedGitHub>> {
    Router::new()
        .route("/app/hook/deliveries", get(list))
        .route(
            "/app/hook/deliveries/{delivery_id}/attempts",
            post(redeliver),
        )
}

#[derive(Debug, Deserialize)]
struct DeliveryQuery {
    per_page: Option<String>,
    cursor: Option<String>,
}

/// GitHub's delivery list: attempted deliveries, newest first, `per_page` (≤ 100, default
/// 30) at a time; the `Link` header's `rel="next"` carries the cursor of the next page.
async fn list(
    State(sim): State<Arc<SimulatedGitHub>>,
    _: AppAuth,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response, GitHubError> {
    let per_page = match query.per_page.as_deref() {
        None => 30,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| GitHubError::Unprocessable(format!("Invalid per_page: {raw}")))?
            .min(100),
    };
    let before = match query.cursor.as_deref() {
        None | Some("") => u64::MAX,
        Some(raw) => raw
            .strip_prefix("v1_")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| GitHubError::BadRequest(format!("Invalid cursor: {raw}")))?,
    };
    let world = sim.world();
    let mut page: Vec<&Delivery> = world
        .deliveries
        .range(..before)
        .rev()
        .filter(|(_, d)| d.attempt.is_some())
        .map(|(_, d)| d)
        .take(per_page + 1)
        .collect();
    let more = page.len() > per_page;
    page.truncate(per_page);
    let link = match (more, page.last()) {
        (true, Some(last)) => Some(format!(
            "<{}/app/hook/deliveries?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
            world.links.api, last.id
        )),
        _ => None,
    };
    let items: Vec<Value> = page.into_iter().map(delivery_json).collect();
    Ok(with_link(Value::Array(items), link))
}

fn delivery_json(delivery: &Delivery) -> Value {
    let attempt = delivery.attempt.as_ref();
    json!({
        "id": delivery.id,
        "guid": delivery.guid,
        "delivered_at": attempt.map(|a| iso8601(a.delivered_at)),
        "redelivery": delivery.redelivery,
        "duration": attempt.map_or(0.0, |a| a.duration),
        "status": attempt.map_or("pending", |a| a.status.as_str()),
        "status_code": attempt.map_or(0, |a| a.status_code),
        "event": delivery.event,
        "action": delivery.action,
        "installation_id": delivery.installation_id,
        "repository_id": delivery.repository_id,
        "throttled_at": null,
    })
}

/// Sends a delivery again: a new delivery record with the same GUID and payload,
/// `redelivery: true`. 202.
async fn redeliver(
    State(sim): State<Arc<SimulatedGitHub>>,
    _: AppAuth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), GitHubError> {
    let id = parse_id(&id)?;
    sim.mutate(|world, _| {
        let original = world
            .deliveries
            .get(&id)
            .ok_or(GitHubError::NotFound)?
            .clone();
        let new_id = world.delivery_id();
        world.deliveries.insert(
            new_id,
            Delivery {
                id: new_id,
                redelivery: true,
                attempt: None,
                ..original
            },
        );
        world.outbox.push_back(new_id);
        Ok((StatusCode::ACCEPTED, Json(json!({}))))
    })
}
