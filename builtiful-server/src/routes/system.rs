//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use builtiful_core::{HealthResponse, Message};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;

/// The process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    responses((status = 200, description = "The server is running", body = HealthResponse))
)]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// The process is up and its database answers: ready for traffic.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "system",
    responses(
        (status = 200, description = "Ready", body = HealthResponse),
        (status = 503, description = "The database does not answer", body = Message)
    )
)]
pub async fn ready(State(state): State<AppState>) -> ApiResult<Json<HealthResponse>> {
    state.store.ping().await.map_err(|error| {
        tracing::warn!(error = %error, "readiness check failed");
        ApiError::Unavailable("The database does not answer".into())
    })?;
    Ok(Json(HealthResponse {
        status: "ok".into(),
    }))
}

/// Prometheus metrics, in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
