//! Signing in: redirects, one-time `state`, PKCE — the parts decided before GitHub is asked.
//! (The full flow through the simulated GitHub is in `e2e.rs`.)

mod common;

use std::time::Duration;

use common::{Backend, Options, TestServer};
use reqwest::header::LOCATION;

conformance!(
    redirects_only_to_allowed_places,
    cli_logins_need_a_pkce_challenge,
    state_is_one_time_and_expires,
    login_codes_need_the_verifier,
);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn login_url(server: &TestServer, redirect_uri: &str, challenge: Option<&str>) -> String {
    let mut url = url::Url::parse(&server.url("/auth/github/login")).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_uri", redirect_uri);
    if let Some(challenge) = challenge {
        url.query_pairs_mut()
            .append_pair("code_challenge", challenge);
    }
    url.into()
}

/// Starts a login and returns the `state` GitHub would be sent.
async fn start(server: &TestServer, redirect_uri: &str, challenge: Option<&str>) -> String {
    let response = http()
        .get(login_url(server, redirect_uri, challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "{redirect_uri}");
    let location = url::Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    assert!(
        location.path().ends_with("/login/oauth/authorize"),
        "{location}"
    );
    let pairs: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(
        pairs["client_id"],
        builtiful_server::sandbox::github::SANDBOX_CLIENT_ID
    );
    assert_eq!(pairs["redirect_uri"], server.url("/auth/github/callback"));
    pairs["state"].clone()
}

async fn redirects_only_to_allowed_places(backend: Backend) {
    let options = Options {
        frontend_origins: vec!["https://app.builtiful.test"],
        ..Options::default()
    };
    let Some(server) = TestServer::start_with(backend, options).await else {
        return;
    };
    start(&server, "https://app.builtiful.test/welcome", None).await;
    start(
        &server,
        "http://127.0.0.1:45678/callback?state=abc",
        Some(CHALLENGE),
    )
    .await;
    start(&server, &server.url("/auth/cli/code"), Some(CHALLENGE)).await;
    for evil in [
        "https://evil.example/",
        "https://app.builtiful.test.evil.example/",
        "http://127.0.0.1.nip.io:45678/",
        "javascript:alert(1)",
        "/relative",
    ] {
        let response = http()
            .get(login_url(&server, evil, Some(CHALLENGE)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{evil}");
        assert!(response.headers().get(LOCATION).is_none());
    }
}

async fn cli_logins_need_a_pkce_challenge(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    for challenge in [
        None,
        Some("too-short"),
        Some("not base64url chars!not base64url chars!abc"),
    ] {
        let url = login_url(&server, "http://127.0.0.1:45678/callback", challenge);
        let response = http().get(url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{challenge:?}");
    }
}

async fn state_is_one_time_and_expires(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let callback = |state: &str| server.url(&format!("/auth/github/callback?code=x&state={state}"));
    // A state GitHub never got from us.
    let forged = http().get(callback("forged")).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    // One that lived too long: refused before GitHub is asked anything.
    let state = start(&server, &server.url("/auth/cli/code"), Some(CHALLENGE)).await;
    server.clock.advance(Duration::from_secs(10 * 60 + 1));
    let expired = http().get(callback(&state)).send().await.unwrap();
    assert_eq!(expired.status(), 400);
    let message: builtiful_core::Message = expired.json().await.unwrap();
    assert!(
        message.message.contains("expired or was already used"),
        "{}",
        message.message
    );
    // Declining on GitHub sends the person back with the error, and burns the state.
    let state = start(
        &server,
        "http://127.0.0.1:45678/cb?state=cli",
        Some(CHALLENGE),
    )
    .await;
    let declined = http()
        .get(server.url(&format!(
            "/auth/github/callback?error=access_denied&error_description=The+user+has+denied&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 302);
    let location = declined.headers()[LOCATION].to_str().unwrap();
    assert_eq!(
        location,
        "http://127.0.0.1:45678/cb?state=cli&error=access_denied&error_description=The+user+has+denied"
    );
    assert_eq!(
        http().get(callback(&state)).send().await.unwrap().status(),
        400,
        "used once"
    );
}

async fn login_codes_need_the_verifier(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let (user, _) = server.login("octocat", &[]).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let code = |name: &str| builtiful_server::auth::hash_token(name);
    let expires = builtiful_core::Timestamp::from_secs(server.app.now().secs_since_epoch + 300);
    for name in ["good", "bad"] {
        server
            .store()
            .create_login_code(code(name), user.id, CHALLENGE, expires)
            .await
            .unwrap();
    }
    let client = server.client("");
    let wrong = client
        .exchange_code("bad", "x".repeat(43).as_str())
        .await
        .unwrap_err();
    assert_eq!(wrong.status().map(|s| s.as_u16()), Some(400));
    // The wrong verifier burned that code: the right one no longer helps.
    assert!(client.exchange_code("bad", verifier).await.is_err());
    let session = client.exchange_code("good", verifier).await.unwrap();
    assert!(session.token.starts_with("bfs_"));
    assert_eq!(session.user, user);
    assert_eq!(server.client(&session.token).me().await.unwrap(), user);
    assert!(
        client.exchange_code("good", verifier).await.is_err(),
        "one-time"
    );
}
