//! `POST /webhooks/github`: GitHub's events, verified, deduplicated and applied.
//!
//! The signature is checked over the raw bytes before anything parses them. A delivery id
//! already processed is acknowledged and skipped (GitHub redelivers with the same id). The
//! event is applied before it is recorded, so a delivery that failed half-way is retried in
//! full when GitHub redelivers it; every change is idempotent, so applying twice is harmless.

mod payload;
pub mod signature;
mod workflow_job;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use builtiful_core::Message;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, RawBody};
use payload::{Envelope, InstallationEvent, WorkflowJobEvent};

pub use workflow_job::{RUNNER_PREFIX, is_our_runner, runner_claim_suffix, runner_name};

/// GitHub's largest webhook body.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepted(message: &str) -> (StatusCode, Json<Message>) {
    (StatusCode::ACCEPTED, Json(Message::new(message)))
}

/// Receives a GitHub webhook.
#[utoipa::path(
    post,
    path = "/webhooks/github",
    tag = "webhooks",
    request_body(content = Object, description = "A GitHub webhook payload", content_type = "application/json"),
    params(
        ("X-GitHub-Event" = String, Header, description = "The event name"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery GUID (the same on redelivery)"),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` HMAC of the body with the webhook secret")
    ),
    responses(
        (status = 202, description = "Accepted (applied, ignored, or a duplicate)", body = Message),
        (status = 400, description = "Missing headers or a body that is not the event's JSON", body = Message),
        (status = 401, description = "Missing or wrong signature", body = Message),
        (status = 413, description = "Body over 25 MiB", body = Message)
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let signature = header(&headers, "x-hub-signature-256");
    if !signature::verify(state.webhook_secret.0.as_bytes(), &body, signature) {
        return Err(ApiError::Unauthorized(
            "The webhook signature (X-Hub-Signature-256) is missing or wrong".into(),
        ));
    }
    let (Some(event), Some(delivery)) = (
        header(&headers, "x-github-event"),
        header(&headers, "x-github-delivery"),
    ) else {
        return Err(ApiError::bad_request(
            "X-GitHub-Event and X-GitHub-Delivery headers are required",
        ));
    };
    if delivery.is_empty() || delivery.len() > 100 {
        return Err(ApiError::bad_request(
            "X-GitHub-Delivery is not a delivery id",
        ));
    }
    if state.store.delivery_seen(delivery).await? {
        return Ok(accepted("Duplicate delivery ignored"));
    }
    let outcome = apply(&state, event, &body).await?;
    state
        .store
        .record_delivery(delivery, event, state.now())
        .await?;
    tracing::info!(event, delivery, outcome, "webhook applied");
    Ok(accepted("Accepted"))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("The webhook body is not valid for its event: {e}"))
    })
}

/// Applies one event; returns a word for the log.
async fn apply(state: &AppState, event: &str, body: &[u8]) -> ApiResult<&'static str> {
    let envelope: Envelope = parse(body)?;
    let action = envelope.action.as_deref().unwrap_or_default();
    let now = state.now();
    match (event, action) {
        ("installation", "deleted") => {
            if let Some(installation) = envelope.installation {
                state.store.uninstall_tenant(installation.id, now).await?;
            }
            Ok("uninstalled")
        }
        ("installation", "created" | "new_permissions_accepted" | "suspend" | "unsuspend")
        | ("installation_repositories", _) => {
            let event: InstallationEvent = parse(body)?;
            match event.installation() {
                Some(installation) => {
                    state.store.upsert_tenant(&installation, now).await?;
                    Ok("tenant updated")
                }
                None => Ok("ignored: installation without an account"),
            }
        }
        ("github_app_authorization", "revoked") => {
            let Some(sender) = envelope.sender else {
                return Ok("ignored: no sender");
            };
            if let Some(user) = state.store.user_by_github_id(sender.id).await? {
                let ended = state.store.delete_user_sessions(user.id).await?;
                tracing::info!(user.id = %user.id, sessions = ended, "GitHub authorization revoked: sessions ended");
            }
            Ok("sessions ended")
        }
        ("workflow_job", _) => {
            let event: WorkflowJobEvent = parse(body)?;
            let Some(installation) = event.installation.as_ref() else {
                return Ok("ignored: not from an App installation");
            };
            let tenant =
                if let Some(tenant) = state.store.tenant_by_installation(installation.id).await? {
                    tenant
                } else {
                    // An installation we have not heard of yet (its `installation` event may be
                    // late): GitHub vouches for it by signing this delivery.
                    let owner = &event.repository.owner;
                    let installation = crate::store::Installation {
                        github_installation_id: installation.id,
                        github_id: owner.id,
                        github_login: owner.login.clone(),
                        suspended: false,
                    };
                    state.store.upsert_tenant(&installation, now).await?
                };
            let raw: serde_json::Value = parse(body)?;
            workflow_job::apply(state, &tenant, &event, raw["workflow_job"].clone()).await?;
            if matches!(event.action.as_str(), "queued" | "completed") {
                // A job became claimable, or one released its capacity and quota.
                crate::dispatch::signal_jobs(state).await;
            }
            Ok("workflow job applied")
        }
        _ => Ok("ignored"),
    }
}
