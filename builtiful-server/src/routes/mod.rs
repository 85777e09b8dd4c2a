//! The REST API: one module per area, each handler documented for the OpenAPI spec.

mod auth;
mod docs;
mod email;
mod login;
mod provisioner;
mod system;
mod tenants;
mod users;

use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::app::AppState;
use crate::webhooks;

pub use docs::ApiDoc;

/// Every documented route, with the OpenAPI document they make up.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::metrics))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::docs))
        .routes(routes!(auth::logout))
        .routes(routes!(login::login))
        .routes(routes!(login::callback))
        .routes(routes!(login::token))
        .routes(routes!(login::cli_code))
        .routes(routes!(login::setup))
        .routes(routes!(provisioner::claim))
        .routes(routes!(provisioner::heartbeat))
        .routes(routes!(provisioner::events))
        .routes(routes!(users::me))
        .routes(routes!(tenants::list_tenants))
        .routes(routes!(tenants::list_jobs))
        .routes(routes!(email::request_email_change))
        .routes(routes!(email::confirm_email_change))
        .routes(
            routes!(webhooks::receive).layer(DefaultBodyLimit::max(webhooks::MAX_WEBHOOK_BYTES)),
        )
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut openapi) = api().split_for_parts();
    docs::add_common_responses(&mut openapi);
    openapi
}

/// The OpenAPI document as served at `/openapi.json` and committed at the repo root.
pub fn openapi_json() -> String {
    openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| unreachable!("the OpenAPI document serialises: {e}"))
}
