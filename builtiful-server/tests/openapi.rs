//! The OpenAPI document: committed, complete, and true to the router.

mod common;

use common::{Backend, TestServer};

/// `openapi.json` at the repo root must be what the code generates. To refresh it:
/// `cargo run -p builtiful-server -- openapi > openapi.json`, or run this test with
/// `BUILTIFUL_UPDATE_OPENAPI=1`.
#[test]
fn committed_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json");
    let generated = format!("{}\n", builtiful_server::routes::openapi_json());
    if std::env::var_os("BUILTIFUL_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json is stale: run `cargo run -p builtiful-server -- openapi > openapi.json`"
    );
}

/// Every endpoint DESIGN.md gives this server so far is documented.
#[test]
fn every_endpoint_is_documented() {
    let spec = common::spec();
    let expected = [
        ("get", "/me"),
        ("get", "/tenants"),
        ("get", "/tenants/{tenant_id}/jobs"),
        ("post", "/tenants/{tenant_id}/email"),
        ("get", "/tenants/{tenant_id}/email/confirm"),
        ("post", "/tenants/{tenant_id}/email/confirm"),
        ("get", "/auth/logout"),
        ("post", "/auth/logout"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
    ];
    for (method, path) in expected {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is missing");
        assert!(
            operation["responses"]["500"].is_object(),
            "{method} {path} does not document the 500 answer"
        );
    }
}

/// Every documented operation is served: none falls through to "no route" or "not allowed".
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let spec = common::spec();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete = path.replace("{tenant_id}", &uuid::Uuid::nil().to_string());
        for method in item.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let response = http
                .request(method.clone(), server.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(!body.contains("No route for"), "{method} {path}: {body}");
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} operations");
}
