//! HTTP conformance: every endpoint of the REST API as a client sees it, on both backends.
//! Every JSON answer is also checked against the OpenAPI document.

mod common;

use std::time::Duration;

use builtiful_core::{Message, PageRequest};
use common::{Backend, Options, TestServer, assert_matches_spec, call, insert_jobs, tenant};
use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, COOKIE, LOCATION,
    ORIGIN, SET_COOKIE,
};
use uuid::Uuid;

conformance!(
    me_with_bearer_or_cookie,
    tenants_are_only_the_users,
    jobs_page_forward_and_back,
    jobs_reject_bad_parameters,
    other_tenants_are_not_found,
    email_change_is_confirmed_by_link,
    email_change_rejects_bad_input,
    logout_ends_the_session,
    cors_only_for_frontends,
    system_endpoints,
    unknown_routes_and_methods,
    failures_do_not_leak_internals,
    shutdown_is_graceful,
);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn me_with_bearer_or_cookie(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let (octocat, token) = server.login("octocat", &[]).await;
    let http = http();

    let (status, body) = call(&http, Method::GET, &server.url("/me"), "/me", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["id"], octocat.id.to_string());
    assert_eq!(body["user"]["github_login"], "octocat");
    assert!(body["user"]["created_at"]["secs_since_epoch"].is_u64());

    let by_cookie = http
        .get(server.url("/me"))
        .header(COOKIE, format!("builtiful_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);

    for bad in [
        None,
        Some("bfs_not-a-session"),
        Some("bfp_wrong-kind"),
        Some("garbage"),
    ] {
        let (status, body) = call(&http, Method::GET, &server.url("/me"), "/me", bad).await;
        assert_eq!(status, 401, "{bad:?}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Authentication required")
        );
    }
    // The typed client maps the same answer to an error with the server's message.
    let error = server.client("bfs_nope").me().await.unwrap_err();
    assert!(error.is_unauthorized());
    assert_eq!(server.client(&token).me().await.unwrap(), octocat);
}

async fn tenants_are_only_the_users(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let _mona = tenant(server.store(), "mona-org").await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    let (status, body) = call(
        &http(),
        Method::GET,
        &server.url("/tenants"),
        "/tenants",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["total_count"], 1);
    assert_eq!(body["tenants"][0]["github_login"], "octo-org");
    assert_eq!(body["tenants"][0]["github_installation_suspended"], false);
    assert_eq!(body["tenants"][0]["email"], serde_json::Value::Null);
}

async fn jobs_page_forward_and_back(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    let jobs = insert_jobs(server.store(), &octo, 1, 23).await;
    let newest_first: Vec<Uuid> = jobs.iter().rev().map(|j| j.id).collect();
    let client = server.client(&token);

    // The seed's rule: ask for one more than the page shows to learn whether more exist.
    let page_size = 10;
    let mut request = PageRequest::first(page_size + 1);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let list = client.jobs(octo.id, &request).await.unwrap();
        assert_eq!(list.total_count, 23);
        let more = list.jobs.len() > page_size as usize;
        let shown = &list.jobs[..list.jobs.len().min(page_size as usize)];
        seen.extend(shown.iter().map(|j| j.id));
        pages += 1;
        if !more {
            break;
        }
        request = PageRequest {
            limit: Some(i64::from(page_size) + 1),
            starting_after: Some(shown.last().unwrap().id),
            ending_before: None,
        };
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first);

    // Back from the last page (which starts at index 20) to the middle one.
    let back = client
        .jobs(
            octo.id,
            &PageRequest {
                limit: Some(10),
                starting_after: None,
                ending_before: Some(newest_first[20]),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        back.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        newest_first[10..20]
    );

    let path = "/tenants/{tenant_id}/jobs";
    let url = server.url(&format!("/tenants/{}/jobs", octo.id));
    let (status, body) = call(&http(), Method::GET, &url, path, Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["jobs"].as_array().unwrap().len(), 10, "default limit");
    let job = &body["jobs"][0];
    assert_eq!(job["status"], "Queued");
    assert_eq!(job["cpu_architecture"], "Amd64");
    assert_eq!(job["os"], "Ubuntu2404");
    assert_eq!(job["duration"], serde_json::Value::Null);
    assert_eq!(job["failure_reason"], serde_json::Value::Null);
    assert_eq!(job["max_run_time"], 21_600);
    assert!(job["workflow_job"].is_object());
}

async fn jobs_reject_bad_parameters(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let mona = tenant(server.store(), "mona-org").await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    let monas = insert_jobs(server.store(), &mona, 1, 1).await;
    let id = Uuid::now_v7();
    let base = format!("/tenants/{}/jobs", octo.id);
    let cases = [
        ("/tenants/not-a-uuid/jobs".to_owned(), "UUID"),
        (
            format!("{base}?limit=0"),
            "limit must be between 1 and 100, got 0",
        ),
        (
            format!("{base}?limit=101"),
            "limit must be between 1 and 100, got 101",
        ),
        (format!("{base}?limit=ten"), "limit"),
        (format!("{base}?starting_after=nope"), "starting_after"),
        (
            format!("{base}?starting_after={id}&ending_before={id}"),
            "cannot be used together",
        ),
        (
            format!("{base}?starting_after={}", monas[0].id),
            "is not a job of this tenant",
        ),
        (
            format!("{base}?ending_before={id}"),
            "is not a job of this tenant",
        ),
    ];
    let http = http();
    for (path, expected) in cases {
        let response = http
            .get(server.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: Message = response.json().await.unwrap();
        assert!(body.message.contains(expected), "{path}: {}", body.message);
    }
}

async fn other_tenants_are_not_found(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let mona = tenant(server.store(), "mona-org").await;
    insert_jobs(server.store(), &mona, 1, 2).await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    let http = http();
    let path = "/tenants/{tenant_id}/jobs";
    let (status, theirs) = call(
        &http,
        Method::GET,
        &server.url(&format!("/tenants/{}/jobs", mona.id)),
        path,
        Some(&token),
    )
    .await;
    assert_eq!(status, 404);
    let missing = Uuid::now_v7();
    let (status, nobody) = call(
        &http,
        Method::GET,
        &server.url(&format!("/tenants/{missing}/jobs")),
        path,
        Some(&token),
    )
    .await;
    assert_eq!(status, 404);
    // Indistinguishable but for the id the caller sent.
    assert_eq!(
        theirs["message"]
            .as_str()
            .unwrap()
            .replace(&mona.id.to_string(), "ID"),
        nobody["message"]
            .as_str()
            .unwrap()
            .replace(&missing.to_string(), "ID"),
    );
    let error = server
        .client(&token)
        .request_email_change(mona.id, "x@example.com")
        .await
        .unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(404));
}

/// The confirmation link of the newest message in the outbox.
fn link_in(message: &str) -> String {
    // Quoted-printable may wrap long lines with a trailing `=`.
    let unwrapped = message
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let start = unwrapped.find("http://").expect("a link in the mail");
    unwrapped[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

async fn email_change_is_confirmed_by_link(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    let http = http();

    let response = http
        .post(server.url(&format!("/tenants/{}/email", octo.id)))
        .bearer_auth(&token)
        .json(&serde_json::json!({"email": " billing@octo.example "}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_matches_spec("POST", "/tenants/{tenant_id}/email", 202, &body);
    assert_eq!(body["email"], "billing@octo.example");

    let messages = server.outbox_messages();
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].contains("To: billing@octo.example"),
        "{}",
        messages[0]
    );
    let link = link_in(&messages[0]);
    assert!(link.starts_with(&server.url(&format!("/tenants/{}/email/confirm?jwt=", octo.id))));

    // Not yet changed.
    assert_eq!(
        server.client(&token).tenants().await.unwrap().tenants[0].email,
        None
    );
    let confirm = "/tenants/{tenant_id}/email/confirm";
    let (status, body) = call(&http, Method::GET, &link, confirm, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"],
        "The email address of octo-org is now billing@octo.example"
    );
    assert_eq!(
        server.client(&token).tenants().await.unwrap().tenants[0]
            .email
            .as_deref(),
        Some("billing@octo.example")
    );
    // Once only, by GET or POST.
    let (status, body) = call(&http, Method::POST, &link, confirm, None).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "This confirmation link was already used");

    // A link for another tenant, and an expired one.
    server
        .client(&token)
        .request_email_change(octo.id, "second@octo.example")
        .await
        .unwrap();
    let second = link_in(server.outbox_messages().last().unwrap());
    let other = tenant(server.store(), "mona-org").await;
    let jwt = second.split("jwt=").nth(1).unwrap();
    let wrong = server.url(&format!("/tenants/{}/email/confirm?jwt={jwt}", other.id));
    let (status, body) = call(&http, Method::GET, &wrong, confirm, None).await;
    assert_eq!(
        (status, body["message"].as_str().unwrap()),
        (400, "This confirmation link belongs to another tenant")
    );
    server.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let (status, body) = call(&http, Method::GET, &second, confirm, None).await;
    assert_eq!(
        (status, body["message"].as_str().unwrap()),
        (400, "This confirmation link has expired; request a new one")
    );
    let forged = server.url(&format!(
        "/tenants/{}/email/confirm?jwt=e30.e30.AAAA",
        octo.id
    ));
    let (status, _) = call(&http, Method::GET, &forged, confirm, None).await;
    assert_eq!(status, 400);
}

async fn email_change_rejects_bad_input(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    let url = server.url(&format!("/tenants/{}/email", octo.id));
    let http = http();
    let send = |body: Vec<u8>, content_type: &'static str| {
        http.post(&url)
            .bearer_auth(&token)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let cases: [(Vec<u8>, &str, u16); 5] = [
        (
            br#"{"email": "not-an-address"}"#.to_vec(),
            "application/json",
            400,
        ),
        (br#"{"email": 42}"#.to_vec(), "application/json", 422),
        (b"{".to_vec(), "application/json", 400),
        (br#"{"email": "a@example.com"}"#.to_vec(), "text/plain", 415),
        (
            format!(
                r#"{{"email": "{}@example.com"}}"#,
                "a".repeat(2 * 1024 * 1024)
            )
            .into_bytes(),
            "application/json",
            413,
        ),
    ];
    for (body, content_type, expected) in cases {
        let response = send(body, content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{content_type}");
        let message: Message = response.json().await.unwrap();
        assert!(!message.message.is_empty());
    }
    assert!(server.outbox_messages().is_empty(), "nothing was mailed");
    // A fresh client: the server closes a connection after refusing an oversized body unread,
    // and a pooled connection may be that one.
    let anonymous = self::http()
        .post(&url)
        .json(&serde_json::json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

async fn logout_ends_the_session(backend: Backend) {
    let options = Options {
        frontend_origins: vec!["https://app.builtiful.test"],
        ..Options::default()
    };
    let Some(server) = TestServer::start_with(backend, options).await else {
        return;
    };
    let (_, token) = server.login("octocat", &[]).await;
    let http = http();

    // An open redirect is refused before anything happens.
    let evil = http
        .get(server.url("/auth/logout?redirect_uri=https://evil.example/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 400);
    assert!(server.client(&token).me().await.is_ok());

    let response = http
        .post(server.url("/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("builtiful_session=;"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Max-Age=0")
    );
    assert!(
        !cookie.contains("Secure"),
        "plain-http public URL: {cookie}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_matches_spec("POST", "/auth/logout", 200, &body);
    assert_eq!(body["message"], "Successfully logged out");
    assert!(
        server
            .client(&token)
            .me()
            .await
            .unwrap_err()
            .is_unauthorized()
    );

    let (_, token) = server.login("octocat", &[]).await;
    let redirect = http
        .get(server.url("/auth/logout?redirect_uri=https://app.builtiful.test/goodbye"))
        .header(COOKIE, format!("builtiful_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    assert_eq!(
        redirect.headers()[LOCATION],
        "https://app.builtiful.test/goodbye"
    );
    assert!(
        server
            .client(&token)
            .me()
            .await
            .unwrap_err()
            .is_unauthorized()
    );
    // Logging out without a session still clears the cookie.
    assert_eq!(
        server.client("bfs_x").logout().await.unwrap().message,
        "Successfully logged out"
    );
}

async fn cors_only_for_frontends(backend: Backend) {
    let options = Options {
        frontend_origins: vec!["https://app.builtiful.test"],
        public_url: Some("https://api.builtiful.test"),
        ..Options::default()
    };
    let Some(server) = TestServer::start_with(backend, options).await else {
        return;
    };
    let http = http();
    let preflight = |origin: &'static str| {
        http.request(Method::OPTIONS, server.url("/tenants"))
            .header(ORIGIN, origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.builtiful.test").await.unwrap();
    assert_eq!(
        allowed.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.builtiful.test"
    );
    assert_eq!(allowed.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    // Behind https the cookie is Secure.
    let logout = http.post(server.url("/auth/logout")).send().await.unwrap();
    assert!(
        logout.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
}

async fn system_endpoints(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let http = http();
    for path in ["/health", "/ready"] {
        let (status, body) = call(&http, Method::GET, &server.url(path), path, None).await;
        assert_eq!((status, body["status"].as_str().unwrap()), (200, "ok"));
    }
    let _ = http.get(server.url("/me")).send().await.unwrap();
    let metrics = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"builtiful_http_requests_total{method="GET",route="/me",status="401"} 1"#),
        "{text}"
    );
    let openapi: serde_json::Value = http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi, common::spec());
    let docs = http.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(docs.text().await.unwrap().contains("Builtiful API"));
}

async fn unknown_routes_and_methods(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let http = http();
    let missing = http.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Message>().await.unwrap().message,
        "No route for GET /nope"
    );
    let wrong = http.delete(server.url("/me")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(
        wrong.json::<Message>().await.unwrap().message,
        "DELETE is not allowed on /me"
    );
}

async fn failures_do_not_leak_internals(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    insert_jobs(server.store(), &octo, 1, 1).await;
    // A row this version cannot read (as if written by a newer one).
    let store = builtiful_server::store::connect(&server.db.url)
        .await
        .unwrap();
    drop(store);
    corrupt_jobs(&server.db.url).await;
    let url = server.url(&format!("/tenants/{}/jobs", octo.id));
    let (status, body) = call(
        &http(),
        Method::GET,
        &url,
        "/tenants/{tenant_id}/jobs",
        Some(&token),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["message"], Message::INTERNAL_ERROR);

    // With the database gone, readiness says so.
    server.app.store.close().await;
    let (status, body) = call(&http(), Method::GET, &server.url("/ready"), "/ready", None).await;
    assert_eq!(
        (status, body["message"].as_str().unwrap()),
        (503, "The database does not answer")
    );
}

async fn corrupt_jobs(url: &str) {
    use sqlx::Connection;
    let sql = "UPDATE jobs SET status = 'Exploded'";
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

async fn shutdown_is_graceful(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let base = server.base.clone();
    server.stop().await;
    assert!(
        reqwest::get(format!("{base}/health")).await.is_err(),
        "the port is closed"
    );
}
