//! The OpenAPI document (`/openapi.json`) and its rendering for people (`/docs`).

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_scalar::Scalar;

use crate::auth::SESSION_COOKIE;

/// The document's fixed parts; the routes add their paths.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Builtiful API",
        description = "Run GitHub Actions jobs on right-sized, ephemeral runners on bare metal. \
            Errors are always `{\"message\": …}` with the matching status code.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Signing in and out"),
        (name = "users", description = "The signed-in user"),
        (name = "tenants", description = "Organisations that installed the App, and their jobs"),
        (name = "system", description = "Health, readiness, metrics and this document")
    )
)]
pub struct ApiDoc;

/// The ways to authenticate: the browser's cookie, or a bearer token (sessions and provisioners).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A `bfs_` session token or a `bfp_` provisioner token"))
                    .build(),
            ),
        );
    }
}

static SPEC: LazyLock<String> = LazyLock::new(super::openapi_json);

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], SPEC.as_str())
}

/// This API's reference, rendered for a browser.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "system",
    responses((status = 200, description = "An HTML page", content_type = "text/html"))
)]
pub async fn docs() -> Html<String> {
    static PAGE: LazyLock<String> = LazyLock::new(|| {
        let spec: serde_json::Value =
            serde_json::from_str(&SPEC).unwrap_or_else(|e| unreachable!("valid JSON: {e}"));
        Scalar::new(spec).to_html()
    });
    Html(PAGE.clone())
}
