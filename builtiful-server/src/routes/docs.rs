//! The OpenAPI document (`/openapi.json`) and its rendering for people (`/docs`).

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
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
        (name = "webhooks", description = "Events from GitHub"),
        (name = "provisioner", description = "Hosts claiming and running jobs"),
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

/// Adds the answers every operation can give, whatever it does: 500 (the seed's sentence)
/// and 503 (the database is unreachable). Run on the finished document, once the routes
/// have added their paths.
pub fn add_common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    let message = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Message")))
                    .build(),
            )
            .build()
    };
    let common = [
        (
            "500",
            message("Unexpected failure; the cause is logged, never sent"),
        ),
        ("503", message("A dependency is unavailable; retry later")),
    ];
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in &common {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| response.clone().into());
            }
        }
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
