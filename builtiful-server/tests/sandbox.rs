//! The simulated GitHub over real HTTP: mounted at `/sandbox/github` on a plain axum server
//! on 127.0.0.1:0, with its webhooks received by a tiny app that checks their signatures.
//! REST answers are checked against GitHub's own schemas (`fixtures/github/rest-operations.json`)
//! and webhook payloads against GitHub's own examples (`fixtures/github/webhooks.json`).

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use builtiful_server::clock::{Clock, ShiftedClock};
use builtiful_server::sandbox::github::{
    SANDBOX_APP_PRIVATE_KEY_PEM, SimulatedGitHub, SimulatorConfig, jit,
};
use hmac::{KeyInit, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_builtiful-server");
const WEBHOOK_SECRET: &str = "It's a Secret to Everybody";
const OTHER_KEY_PEM: &str = include_str!("fixtures/keys/other-app-private-key.pem");
/// octo-org's installation (repositories `app`, `api`) and mona-org's (`site`).
const OCTO: u64 = 4_410_001;
const MONA: u64 = 4_410_002;
const CALLBACK: &str = "http://127.0.0.1:9/callback";

// ---------------------------------------------------------------------------------------
// GitHub's schemas
// ---------------------------------------------------------------------------------------

struct Operation {
    statuses: Vec<u16>,
    validators: HashMap<u16, jsonschema::Validator>,
}

static OPERATIONS: LazyLock<HashMap<String, Operation>> = LazyLock::new(|| {
    let doc: Value =
        serde_json::from_str(include_str!("fixtures/github/rest-operations.json")).unwrap();
    let mut operations = HashMap::new();
    for (name, op) in doc["operations"].as_object().unwrap() {
        let statuses = op["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().parse().unwrap())
            .collect();
        let mut validators = HashMap::new();
        for (status, schema) in op["responses"].as_object().unwrap() {
            let mut schema = schema.clone();
            if name == "GET /app/installations" {
                patch_app_installations(&mut schema);
            }
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap();
            validators.insert(status.parse().unwrap(), validator);
        }
        operations.insert(
            name.clone(),
            Operation {
                statuses,
                validators,
            },
        );
    }
    operations
});

/// GitHub's description of `GET /app/installations` makes `account` `allOf [Simple User,
/// Enterprise]` (every other installation endpoint says `anyOf`), which no real account
/// satisfies. Read it as `anyOf`, like the other endpoints, instead of faking enterprise
/// fields.
fn patch_app_installations(schema: &mut Value) {
    let any_of = schema["items"]["properties"]["account"]["anyOf"]
        .as_array_mut()
        .expect("account is anyOf [allOf [...], null]");
    let mut branches = Vec::new();
    for branch in any_of.drain(..) {
        match branch.get("allOf") {
            Some(Value::Array(parts)) => branches.extend(parts.iter().cloned()),
            _ => branches.push(branch),
        }
    }
    *any_of = branches;
}

/// Statuses GitHub answers on any endpoint though its description lists them only on
/// some: 401 for a missing or bad credential, 404 for a resource the credential cannot see.
/// Tests reach them only on purpose and assert them explicitly.
const ANY_ENDPOINT_STATUSES: [u16; 2] = [401, 404];

/// Webhook examples by (event, action).
static EXAMPLES: LazyLock<HashMap<(String, String), Vec<Value>>> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(include_str!("fixtures/github/webhooks.json")).unwrap();
    let mut examples: HashMap<(String, String), Vec<Value>> = HashMap::new();
    for example in doc["examples"].as_array().unwrap() {
        let key = (
            example["event"].as_str().unwrap().to_owned(),
            example["action"].as_str().unwrap().to_owned(),
        );
        examples
            .entry(key)
            .or_default()
            .push(example["payload"].clone());
    }
    examples
});

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// A payload has GitHub's shape for its event and action: every top-level key that all of
/// the examples have; for `workflow_job`, every key any example's `workflow_job` has, every
/// key all examples' `repository` have, and `organization`, `installation` (ours are
/// organisation installations); for `installation`, every key of the examples'
/// `installation`.
fn assert_github_shape(event: &str, payload: &Value) {
    let action = payload["action"].as_str().unwrap();
    let examples = EXAMPLES
        .get(&(event.to_owned(), action.to_owned()))
        .unwrap_or_else(|| panic!("no example for {event}/{action}"));
    let have = keys(payload);
    let mut required = keys(&examples[0]);
    for example in examples {
        required = required.intersection(&keys(example)).cloned().collect();
    }
    let missing: Vec<_> = required.difference(&have).collect();
    assert!(missing.is_empty(), "{event}/{action} lacks {missing:?}");
    match event {
        "workflow_job" => {
            for key in ["organization", "installation", "repository", "sender"] {
                assert!(have.contains(key), "{event}/{action} lacks {key}");
            }
            let wanted: BTreeSet<String> = examples
                .iter()
                .flat_map(|e| keys(&e["workflow_job"]))
                .collect();
            let got = keys(&payload["workflow_job"]);
            let missing: Vec<_> = wanted.difference(&got).collect();
            assert!(
                missing.is_empty(),
                "workflow_job/{action} lacks {missing:?}"
            );
            let mut repo_keys = keys(&examples[0]["repository"]);
            for example in examples {
                repo_keys = repo_keys
                    .intersection(&keys(&example["repository"]))
                    .cloned()
                    .collect();
            }
            let repository = keys(&payload["repository"]);
            let missing: Vec<_> = repo_keys.difference(&repository).collect();
            assert!(missing.is_empty(), "repository lacks {missing:?}");
            let job = &payload["workflow_job"];
            assert!(job["id"].as_u64().unwrap() > 1 << 31, "ids exceed 2^31");
            assert!(job["run_id"].as_u64().unwrap() > 1 << 31);
            assert_eq!(job["status"], action);
            for time in ["created_at", "started_at"] {
                assert!(
                    is_iso8601(job[time].as_str().unwrap()),
                    "{time}: {}",
                    job[time]
                );
            }
        }
        "installation" => {
            let wanted: BTreeSet<String> = examples
                .iter()
                .flat_map(|e| keys(&e["installation"]))
                .collect();
            let installation = keys(&payload["installation"]);
            let missing: Vec<_> = wanted.difference(&installation).collect();
            assert!(missing.is_empty(), "installation lacks {missing:?}");
        }
        _ => {}
    }
}

/// `2021-08-05T10:34:58Z`.
fn is_iso8601(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// A webhook as the receiver got it.
#[derive(Debug, Clone)]
struct Hook {
    event: String,
    guid: String,
    id: String,
    user_agent: String,
    signature_ok: bool,
    body: Value,
}

/// The webhook receiver: records every delivery (after checking its signature in constant
/// time); answers 500 to the next `fail` deliveries.
#[derive(Default)]
struct Receiver {
    hooks: Mutex<Vec<Hook>>,
    fail: AtomicUsize,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let signature = header("x-hub-signature-256");
    let signature_ok = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .is_some_and(|expected| {
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
            mac.update(&body);
            mac.verify_slice(&expected).is_ok()
        });
    if receiver
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    receiver.hooks.lock().unwrap().push(Hook {
        event: header("x-github-event"),
        guid: header("x-github-delivery"),
        id: header("x-github-hook-id"),
        user_agent: header("user-agent"),
        signature_ok,
        body: serde_json::from_slice(&body).unwrap(),
    });
    StatusCode::ACCEPTED
}

/// An answer of the simulated GitHub.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

struct Sandbox {
    sim: Arc<SimulatedGitHub>,
    clock: Arc<ShiftedClock>,
    /// The "server": `http://127.0.0.1:PORT`.
    server: String,
    /// The simulator: `{server}/sandbox/github`.
    base: String,
    client_secret: String,
    http: reqwest::Client,
    receiver: Arc<Receiver>,
    exercised: Mutex<BTreeSet<String>>,
    shutdown: CancellationToken,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Sandbox {
    async fn start() -> Self {
        let shutdown = CancellationToken::new();
        let receiver = Arc::new(Receiver::default());
        let hooks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hooks_addr = hooks_listener.local_addr().unwrap();
        let hooks_app = Router::new()
            .route("/webhooks/github", post(receive))
            .with_state(Arc::clone(&receiver));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(hooks_listener, hooks_app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let base = format!("{server}/sandbox/github");
        let config = SimulatorConfig::sandbox(
            base.parse().unwrap(),
            format!("http://{hooks_addr}/webhooks/github")
                .parse()
                .unwrap(),
            WEBHOOK_SECRET.to_owned(),
        );
        let client_secret = config.client_secret.clone();
        let clock = Arc::new(ShiftedClock::default());
        let sim = SimulatedGitHub::with_clock(config, clock.clone()).unwrap();
        let app = Router::new().nest("/sandbox/github", sim.router());
        tokio::spawn(Arc::clone(&sim).run(shutdown.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            sim,
            clock,
            server,
            base,
            client_secret,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            receiver,
            exercised: Mutex::new(BTreeSet::new()),
            shutdown,
        }
    }

    /// A REST call, checked against GitHub's description of operation `op`: the status is
    /// documented, a 2xx body validates against its schema, an error body is GitHub's,
    /// and the rate-limit headers are there.
    async fn api(
        &self,
        op: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}/api{path}", self.base);
        let mut request = self
            .http
            .request(method.parse().unwrap(), &url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{op}: not JSON: {text}"))
        };
        let operation = OPERATIONS
            .get(op)
            .unwrap_or_else(|| panic!("{op} is not in rest-operations.json"));
        assert!(
            operation.statuses.contains(&status) || ANY_ENDPOINT_STATUSES.contains(&status),
            "{op} answered {status}, which GitHub does not document: {body}"
        );
        if let Some(validator) = operation.validators.get(&status) {
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| format!("{e} at {}", e.instance_path))
                .collect();
            assert!(
                errors.is_empty(),
                "{op} {status} breaks GitHub's schema: {errors:#?}"
            );
        }
        if status >= 400 {
            assert!(body["message"].is_string(), "{op} {status}: {body}");
            assert!(
                body["documentation_url"].is_string(),
                "{op} {status}: {body}"
            );
        }
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-used",
            "x-ratelimit-resource",
        ] {
            assert!(headers.contains_key(name), "{op}: no {name}");
        }
        if (200..300).contains(&status) {
            self.exercised.lock().unwrap().insert(op.to_owned());
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A control call (`/_sandbox/…`), optionally as a runner.
    async fn control(
        &self,
        method: &str,
        path: &str,
        secret: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(
            method.parse().unwrap(),
            format!("{}/_sandbox{path}", self.base),
        );
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn now_secs(&self) -> i64 {
        i64::try_from(self.clock.now().secs_since_epoch).unwrap()
    }

    /// An App JWT signed with `key`, issued `iat` and expiring `exp` seconds from now.
    fn jwt_with(&self, key: &str, iss: &Value, iat: i64, exp: i64) -> String {
        let now = self.now_secs();
        let claims = json!({"iss": iss, "iat": now + iat, "exp": now + exp});
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// A good App JWT, made the way GitHub's docs say.
    fn jwt(&self) -> String {
        let app_id = self.sim.config().app_id;
        self.jwt_with(SANDBOX_APP_PRIVATE_KEY_PEM, &json!(app_id), -60, 540)
    }

    async fn installation_token(&self, id: u64) -> String {
        let answer = self
            .api(
                "POST /app/installations/{installation_id}/access_tokens",
                "POST",
                &format!("/app/installations/{id}/access_tokens"),
                Some(&self.jwt()),
                None,
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.body["token"].as_str().unwrap().to_owned()
    }

    /// `GET /login/oauth/authorize` with these parameters; the raw response.
    async fn authorize(&self, params: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .get(format!("{}/login/oauth/authorize", self.base))
            .query(params)
            .send()
            .await
            .unwrap()
    }

    /// Approves as `login` and returns the code (checking the redirect carries `state`).
    async fn code_for(&self, login: &str, extra: &[(&str, &str)]) -> String {
        let mut params = vec![
            ("client_id", self.sim.config().client_id.as_str()),
            ("redirect_uri", CALLBACK),
            ("state", "st4te"),
            ("login", login),
        ];
        params.extend_from_slice(extra);
        let response = self.authorize(&params).await;
        assert_eq!(response.status(), 302);
        let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(CALLBACK), "{location}");
        let query: HashMap<_, _> = location.query_pairs().into_owned().collect();
        assert_eq!(query["state"], "st4te");
        query["code"].clone()
    }

    /// `POST /login/oauth/access_token` with `params`, asking for JSON; always HTTP 200.
    async fn token_request(&self, params: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .post(format!("{}/login/oauth/access_token", self.base))
            .header("accept", "application/json")
            .form(params)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// A user access token for `login`.
    async fn login(&self, login: &str) -> String {
        let code = self.code_for(login, &[]).await;
        let client_id = self.sim.config().client_id.clone();
        let answer = self
            .token_request(&[
                ("client_id", &client_id),
                ("client_secret", &self.client_secret),
                ("code", &code),
                ("redirect_uri", CALLBACK),
            ])
            .await;
        answer["access_token"].as_str().unwrap().to_owned()
    }

    /// Generates a JIT runner in `scope` (`repos/o/r` or `orgs/o`); returns the API answer.
    async fn generate(&self, token: &str, scope: &str, name: &str, labels: &[&str]) -> Answer {
        let op = if scope.starts_with("repos/") {
            "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig"
        } else {
            "POST /orgs/{org}/actions/runners/generate-jitconfig"
        };
        self.api(
            op,
            "POST",
            &format!("/{scope}/actions/runners/generate-jitconfig"),
            Some(token),
            Some(json!({"name": name, "runner_group_id": 1, "labels": labels, "work_folder": "_work"})),
        )
        .await
    }

    /// A JIT runner's decoded config, after a successful generate.
    async fn runner(
        &self,
        token: &str,
        scope: &str,
        name: &str,
        labels: &[&str],
    ) -> jit::JitConfig {
        let answer = self.generate(token, scope, name, labels).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        jit::decode(answer.body["encoded_jit_config"].as_str().unwrap()).unwrap()
    }

    /// Connects a runner (`online`).
    async fn connect(&self, runner: &jit::JitConfig) {
        let (status, body) = self
            .control(
                "POST",
                &format!("/runners/{}/session", runner.runner.agent_id),
                Some(&runner.secret),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "online");
    }

    /// A runner's poll: the job id it got, if any.
    async fn acquire(&self, runner: &jit::JitConfig, wait: u64) -> Option<u64> {
        let (status, body) = self
            .control(
                "POST",
                &format!("/runners/{}/acquire?wait={wait}", runner.runner.agent_id),
                Some(&runner.secret),
                None,
            )
            .await;
        match status {
            200 => Some(body["job"]["id"].as_u64().unwrap()),
            204 => None,
            other => panic!("acquire answered {other}: {body}"),
        }
    }

    async fn runner_step(
        &self,
        runner: &jit::JitConfig,
        job: u64,
        step: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.control(
            "POST",
            &format!("/runners/{}/jobs/{job}/{step}", runner.runner.agent_id),
            Some(&runner.secret),
            body,
        )
        .await
    }

    /// Queues jobs through the control endpoint; their ids.
    async fn queue(&self, repo: &str, labels: &[&str], count: u32, duration: u64) -> Vec<u64> {
        let (status, body) = self
            .control(
                "POST",
                "/jobs",
                None,
                Some(json!({"repository": repo, "labels": labels, "count": count, "duration_secs": duration})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_u64().unwrap())
            .collect()
    }

    /// Waits (up to 10 s) until the receiver holds a webhook matching `predicate`.
    async fn hook(&self, what: &str, predicate: impl Fn(&Hook) -> bool) -> Hook {
        for _ in 0..500 {
            if let Some(hook) = self
                .receiver
                .hooks
                .lock()
                .unwrap()
                .iter()
                .find(|h| predicate(h))
            {
                return hook.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no webhook: {what}");
    }

    /// The `workflow_job` webhook with `action` for job `id`.
    async fn job_hook(&self, id: u64, action: &str) -> Hook {
        self.hook(&format!("workflow_job {action} for {id}"), |h| {
            h.event == "workflow_job"
                && h.body["action"] == action
                && h.body["workflow_job"]["id"] == id
        })
        .await
    }

    fn hooks(&self) -> Vec<Hook> {
        self.receiver.hooks.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Every operation Builtiful uses is exercised, and every answer matches GitHub's schema
/// for that operation and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_answer_matches_githubs_description() {
    let sb = Sandbox::start().await;

    // User endpoints.
    let user = sb.login("octocat").await;
    let me = sb.api("GET /user", "GET", "/user", Some(&user), None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["login"], "octocat");
    assert_eq!(me.body["id"], 583_231);
    let emails = sb
        .api("GET /user/emails", "GET", "/user/emails", Some(&user), None)
        .await;
    assert_eq!(emails.body[0]["email"], "octocat@github.example");
    assert_eq!(emails.body[0]["primary"], true);
    let installs = sb
        .api(
            "GET /user/installations",
            "GET",
            "/user/installations",
            Some(&user),
            None,
        )
        .await;
    assert_eq!(
        installs.body["total_count"], 1,
        "octocat reaches octo-org only"
    );
    assert_eq!(installs.body["installations"][0]["id"], OCTO);
    assert_eq!(
        installs.body["installations"][0]["account"]["login"],
        "octo-org"
    );

    // App endpoints.
    let jwt = sb.jwt();
    let app = sb.api("GET /app", "GET", "/app", Some(&jwt), None).await;
    assert_eq!(app.body["id"], sb.sim.config().app_id);
    let all = sb
        .api(
            "GET /app/installations",
            "GET",
            "/app/installations",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(
        all.body.as_array().unwrap().len(),
        2,
        "a bare array of both installations"
    );
    let one = sb
        .api(
            "GET /app/installations/{installation_id}",
            "GET",
            &format!("/app/installations/{MONA}"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(one.body["account"]["login"], "mona-org");
    let missing = sb
        .api(
            "GET /app/installations/{installation_id}",
            "GET",
            "/app/installations/999",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
    let token = sb.installation_token(OCTO).await;
    assert!(token.starts_with("ghs_"));
    let unknown = sb
        .api(
            "POST /app/installations/{installation_id}/access_tokens",
            "POST",
            "/app/installations/999/access_tokens",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);

    // Runners, repository and organisation scope.
    let repo_runner = sb
        .runner(&token, "repos/octo-org/app", "r-1", &["builtiful(ubuntu)"])
        .await;
    let org_runner = sb
        .runner(&token, "orgs/octo-org", "o-1", &["builtiful(ubuntu)"])
        .await;
    let list = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/runners",
            "GET",
            "/repos/octo-org/app/actions/runners",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(list.body["total_count"], 1);
    let list = sb
        .api(
            "GET /orgs/{org}/actions/runners",
            "GET",
            "/orgs/octo-org/actions/runners?name=o-1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(list.body["runners"][0]["name"], "o-1");
    let got = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/runners/{runner_id}",
            "GET",
            &format!(
                "/repos/octo-org/app/actions/runners/{}",
                repo_runner.runner.agent_id
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(got.body["status"], "offline");

    // A job, run by the repository runner.
    let job = sb.queue("octo-org/app", &["builtiful(ubuntu)"], 1, 0).await[0];
    sb.connect(&repo_runner).await;
    assert_eq!(sb.acquire(&repo_runner, 0).await, Some(job));
    assert_eq!(
        sb.runner_step(&repo_runner, job, "start", None).await.0,
        200
    );
    let running = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/jobs/{job_id}",
            "GET",
            &format!("/repos/octo-org/app/actions/jobs/{job}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(running.body["status"], "in_progress");
    assert_eq!(running.body["runner_name"], "r-1");
    let (status, _) = sb
        .runner_step(
            &repo_runner,
            job,
            "complete",
            Some(json!({"conclusion": "success"})),
        )
        .await;
    assert_eq!(status, 200);
    let done = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/jobs/{job_id}",
            "GET",
            &format!("/repos/octo-org/app/actions/jobs/{job}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(done.body["conclusion"], "success");

    // The unused organisation runner is deleted.
    let deleted = sb
        .api(
            "DELETE /orgs/{org}/actions/runners/{runner_id}",
            "DELETE",
            &format!(
                "/orgs/octo-org/actions/runners/{}",
                org_runner.runner.agent_id
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let spare = sb.runner(&token, "repos/octo-org/app", "r-2", &["x"]).await;
    let deleted = sb
        .api(
            "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}",
            "DELETE",
            &format!(
                "/repos/octo-org/app/actions/runners/{}",
                spare.runner.agent_id
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);

    // Hook deliveries, once the job's three webhooks went out.
    sb.job_hook(job, "completed").await;
    let deliveries = sb
        .api(
            "GET /app/hook/deliveries",
            "GET",
            "/app/hook/deliveries",
            Some(&jwt),
            None,
        )
        .await;
    let first = deliveries.body[0]["id"].as_u64().unwrap();
    let again = sb
        .api(
            "POST /app/hook/deliveries/{delivery_id}/attempts",
            "POST",
            &format!("/app/hook/deliveries/{first}/attempts"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(again.status, 202);

    let exercised = sb.exercised.lock().unwrap().clone();
    let all: BTreeSet<String> = OPERATIONS.keys().cloned().collect();
    let missed: Vec<_> = all.difference(&exercised).collect();
    assert!(
        missed.is_empty(),
        "operations never answered 2xx: {missed:?}"
    );
}

/// Page-number pagination with GitHub's `Link` header, and cursor pagination of
/// deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_follows_githubs_link_headers() {
    let sb = Sandbox::start().await;
    let jwt = sb.jwt();
    let first = sb
        .api(
            "GET /app/installations",
            "GET",
            "/app/installations?per_page=1",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(first.body.as_array().unwrap().len(), 1);
    let link = first.headers["link"].to_str().unwrap().to_owned();
    assert!(
        link.contains("rel=\"next\"") && link.contains("page=2"),
        "{link}"
    );
    let second = sb
        .api(
            "GET /app/installations",
            "GET",
            "/app/installations?per_page=1&page=2",
            Some(&jwt),
            None,
        )
        .await;
    assert_ne!(first.body[0]["id"], second.body[0]["id"]);
    let link = second.headers["link"].to_str().unwrap();
    assert!(
        link.contains("rel=\"prev\"") && !link.contains("rel=\"next\""),
        "{link}"
    );

    let ids = sb.queue("octo-org/api", &["a"], 3, 0).await;
    for id in &ids {
        sb.job_hook(*id, "queued").await;
    }
    let page = sb
        .api(
            "GET /app/hook/deliveries",
            "GET",
            "/app/hook/deliveries?per_page=2",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(page.body.as_array().unwrap().len(), 2);
    let link = page.headers["link"].to_str().unwrap();
    let next = link
        .split(['<', '>'])
        .nth(1)
        .unwrap()
        .split("/api")
        .nth(1)
        .unwrap()
        .to_owned();
    let rest = sb
        .api("GET /app/hook/deliveries", "GET", &next, Some(&jwt), None)
        .await;
    assert_eq!(rest.body.as_array().unwrap().len(), 1);
    assert!(!rest.headers.contains_key("link"));
    let guids: BTreeSet<_> = page
        .body
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.body.as_array().unwrap())
        .map(|d| d["guid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        guids.len(),
        3,
        "three deliveries, each listed once, newest first"
    );
    let bad = sb
        .api(
            "GET /app/hook/deliveries",
            "GET",
            "/app/hook/deliveries?cursor=nope",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_web_flow_works_like_githubs() {
    let sb = Sandbox::start().await;
    let client_id = sb.sim.config().client_id.clone();
    let secret = sb.client_secret.clone();

    // The consent page: a button per user, and a Cancel that refuses with the state.
    let page = sb
        .authorize(&[
            ("client_id", &client_id),
            ("redirect_uri", CALLBACK),
            ("state", "s1"),
        ])
        .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Continue as octocat") && html.contains("Continue as monalisa"),
        "{html}"
    );
    assert!(html.contains("login=octocat"));
    assert!(
        html.contains("error=access_denied") && html.contains("state=s1"),
        "{html}"
    );
    let unknown = sb
        .authorize(&[("client_id", "Iv1.nobody"), ("redirect_uri", CALLBACK)])
        .await;
    assert_eq!(unknown.status(), 404);

    // Code → token, as JSON; the code works once.
    let code = sb.code_for("monalisa", &[]).await;
    let exchange = [
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
    ];
    let token = sb.token_request(&exchange).await;
    assert!(
        token["access_token"].as_str().unwrap().starts_with("ghu_"),
        "{token}"
    );
    assert!(token["refresh_token"].as_str().unwrap().starts_with("ghr_"));
    assert_eq!(token["expires_in"], 28_800);
    assert_eq!(token["refresh_token_expires_in"], 15_897_600);
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["scope"], "");
    let reused = sb.token_request(&exchange).await;
    assert_eq!(reused["error"], "bad_verification_code", "{reused}");
    assert!(reused["error_description"].is_string() && reused["error_uri"].is_string());
    let me = sb
        .api(
            "GET /user",
            "GET",
            "/user",
            token["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(me.body["login"], "monalisa");

    // Form-encoded unless JSON is asked for.
    let code = sb.code_for("octocat", &[]).await;
    let response = sb
        .http
        .post(format!("{}/login/oauth/access_token", sb.base))
        .json(&json!({"client_id": client_id, "client_secret": secret, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
    let form: HashMap<String, String> =
        url::form_urlencoded::parse(response.text().await.unwrap().as_bytes())
            .into_owned()
            .collect();
    assert!(form["access_token"].starts_with("ghu_"), "{form:?}");
    assert_eq!(form["token_type"], "bearer");

    // Wrong secret, wrong code, wrong redirect_uri: HTTP 200 with `error`.
    let code = sb.code_for("octocat", &[]).await;
    let wrong = sb
        .token_request(&[
            ("client_id", &client_id),
            ("client_secret", "nope"),
            ("code", &code),
        ])
        .await;
    assert_eq!(wrong["error"], "incorrect_client_credentials");
    assert!(wrong.get("access_token").is_none());
    let wrong = sb
        .token_request(&[
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("code", "0123456789abcdef0123"),
        ])
        .await;
    assert_eq!(wrong["error"], "bad_verification_code");
    let mismatch = sb
        .token_request(&[
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
        ])
        .await;
    assert_eq!(mismatch["error"], "redirect_uri_mismatch");

    // PKCE: the verifier must match the challenge.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let pkce = [
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let code = sb.code_for("octocat", &pkce).await;
    let refused = sb
        .token_request(&[
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("code", &code),
            ("code_verifier", "wrong-verifier"),
        ])
        .await;
    assert_eq!(refused["error"], "bad_verification_code", "{refused}");
    let code = sb.code_for("octocat", &pkce).await;
    let refused = sb
        .token_request(&[
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("code", &code),
        ])
        .await;
    assert!(
        refused.get("access_token").is_none(),
        "a challenge needs its verifier"
    );
    let code = sb.code_for("octocat", &pkce).await;
    let granted = sb
        .token_request(&[
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("code", &code),
            ("code_verifier", verifier),
        ])
        .await;
    assert!(granted["access_token"].is_string(), "{granted}");

    // Refresh tokens rotate: the new pair works, the old refresh token is spent.
    let old_refresh = granted["refresh_token"].as_str().unwrap();
    let refresh = [
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("grant_type", "refresh_token"),
        ("refresh_token", old_refresh),
    ];
    let rotated = sb.token_request(&refresh).await;
    assert!(rotated["access_token"].is_string(), "{rotated}");
    assert_ne!(rotated["refresh_token"], granted["refresh_token"]);
    let spent = sb.token_request(&refresh).await;
    assert_eq!(spent["error"], "bad_refresh_token");

    // Codes live 10 minutes; user tokens 8 hours.
    let late = sb.code_for("octocat", &[]).await;
    sb.clock.advance(Duration::from_secs(601));
    let expired = sb
        .token_request(&[
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("code", &late),
        ])
        .await;
    assert_eq!(expired["error"], "bad_verification_code");
    let user = rotated["access_token"].as_str().unwrap();
    assert_eq!(
        sb.api("GET /user", "GET", "/user", Some(user), None)
            .await
            .status,
        200
    );
    sb.clock.advance(Duration::from_hours(8));
    let gone = sb.api("GET /user", "GET", "/user", Some(user), None).await;
    assert_eq!(gone.status, 401);
    assert_eq!(gone.body["message"], "Bad credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_jwts_and_installation_tokens_are_checked() {
    let sb = Sandbox::start().await;
    let app_id = sb.sim.config().app_id;
    let client_id = sb.sim.config().client_id.clone();
    let get_app = |token: String| {
        let sb = &sb;
        async move { sb.api("GET /app", "GET", "/app", Some(&token), None).await }
    };
    assert_eq!(get_app(sb.jwt()).await.status, 200);
    let by_client_id = sb.jwt_with(SANDBOX_APP_PRIVATE_KEY_PEM, &json!(client_id), -60, 540);
    assert_eq!(
        get_app(by_client_id).await.status,
        200,
        "iss may be the client id"
    );
    let refused = [
        (
            "expired",
            sb.jwt_with(SANDBOX_APP_PRIVATE_KEY_PEM, &json!(app_id), -700, -100),
        ),
        (
            "wrong key",
            sb.jwt_with(OTHER_KEY_PEM, &json!(app_id), -60, 540),
        ),
        (
            "iat in the future",
            sb.jwt_with(SANDBOX_APP_PRIVATE_KEY_PEM, &json!(app_id), 120, 540),
        ),
        (
            "lives over 10 minutes",
            sb.jwt_with(SANDBOX_APP_PRIVATE_KEY_PEM, &json!(app_id), -10, 900),
        ),
        (
            "another App",
            sb.jwt_with(SANDBOX_APP_PRIVATE_KEY_PEM, &json!(app_id + 1), -60, 540),
        ),
        ("not a JWT", "ghs_notajwt".to_owned()),
    ];
    for (why, jwt) in refused {
        let answer = get_app(jwt).await;
        assert_eq!(answer.status, 401, "{why}: {}", answer.body);
    }
    // An HS256 token "signed" with the public key (algorithm confusion) is refused too.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": app_id, "iat": sb.now_secs() - 60, "exp": sb.now_secs() + 500}),
        &EncodingKey::from_secret(sb.sim.config().app_public_key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(get_app(confused).await.status, 401);
    let none = sb.api("GET /app", "GET", "/app", None, None).await;
    assert_eq!(none.status, 401);

    // Installation tokens reach their own installation only, and are no user tokens.
    let octo = sb.installation_token(OCTO).await;
    let mona = sb.installation_token(MONA).await;
    let list = |token: String, path: &'static str| {
        let sb = &sb;
        async move {
            sb.api(
                "GET /repos/{owner}/{repo}/actions/runners",
                "GET",
                path,
                Some(&token),
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(
        list(octo.clone(), "/repos/octo-org/app/actions/runners").await,
        200
    );
    assert_eq!(
        list(mona.clone(), "/repos/octo-org/app/actions/runners").await,
        404
    );
    assert_eq!(
        list(octo.clone(), "/repos/mona-org/site/actions/runners").await,
        404
    );
    assert_eq!(
        list(mona.clone(), "/repos/mona-org/site/actions/runners").await,
        200
    );
    assert_eq!(
        list(sb.jwt(), "/repos/octo-org/app/actions/runners").await,
        401
    );
    let as_user = sb.api("GET /user", "GET", "/user", Some(&octo), None).await;
    assert_eq!(as_user.status, 401);
    let generate = sb
        .generate(&mona, "orgs/octo-org", "intruder", &["x"])
        .await;
    assert_eq!(generate.status, 404);

    // Installation tokens expire after an hour.
    sb.clock.advance(Duration::from_secs(3601));
    assert_eq!(
        list(mona, "/repos/mona-org/site/actions/runners").await,
        401
    );

    // A suspended installation gets no tokens (403) and an `installation` webhook says so.
    let (status, _) = sb
        .control(
            "POST",
            &format!("/installations/{OCTO}/suspend"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let suspended = sb
        .api(
            "POST /app/installations/{installation_id}/access_tokens",
            "POST",
            &format!("/app/installations/{OCTO}/access_tokens"),
            Some(&sb.jwt()),
            None,
        )
        .await;
    assert_eq!(suspended.status, 403, "{}", suspended.body);
    let hook = sb
        .hook("installation suspend", |h| {
            h.event == "installation" && h.body["action"] == "suspend"
        })
        .await;
    assert_github_shape("installation", &hook.body);
    assert!(hook.body["installation"]["suspended_at"].is_string());
    sb.control(
        "POST",
        &format!("/installations/{OCTO}/unsuspend"),
        None,
        None,
    )
    .await;
    let hook = sb
        .hook("installation unsuspend", |h| {
            h.event == "installation" && h.body["action"] == "unsuspend"
        })
        .await;
    assert_github_shape("installation", &hook.body);
    sb.installation_token(OCTO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jit_runners_register_list_and_delete_like_githubs() {
    let sb = Sandbox::start().await;
    let token = sb.installation_token(OCTO).await;
    let first = sb
        .generate(
            &token,
            "repos/octo-org/app",
            "bf-1",
            &["builtiful(ubuntu,8cpu)"],
        )
        .await;
    assert_eq!(first.status, 201);
    let runner = &first.body["runner"];
    assert_eq!(runner["status"], "offline");
    assert_eq!(runner["busy"], false);
    assert_eq!(runner["labels"][0]["name"], "builtiful(ubuntu,8cpu)");
    let again = sb
        .generate(
            &token,
            "repos/octo-org/app",
            "bf-1",
            &["builtiful(ubuntu,8cpu)"],
        )
        .await;
    assert_eq!(again.status, 409, "the name is taken: {}", again.body);
    // The same name in another scope is fine.
    assert_eq!(
        sb.generate(&token, "repos/octo-org/api", "bf-1", &["a"])
            .await
            .status,
        201
    );

    // Validation.
    let labels_101: Vec<String> = (0..101).map(|n| format!("l{n}")).collect();
    let labels_101: Vec<&str> = labels_101.iter().map(String::as_str).collect();
    assert_eq!(
        sb.generate(&token, "repos/octo-org/app", "bf-2", &[])
            .await
            .status,
        422
    );
    assert_eq!(
        sb.generate(&token, "repos/octo-org/app", "bf-2", &labels_101)
            .await
            .status,
        422
    );
    let op = "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig";
    let path = "/repos/octo-org/app/actions/runners/generate-jitconfig";
    for body in [
        json!({"name": "bf-2", "labels": ["a"]}),
        json!({"runner_group_id": 1, "labels": ["a"]}),
        json!({"name": "bf-2", "runner_group_id": 7, "labels": ["a"]}),
    ] {
        let answer = sb
            .api(op, "POST", path, Some(&token), Some(body.clone()))
            .await;
        assert_eq!(answer.status, 422, "{body}");
    }
    let nowhere = sb
        .generate(&token, "repos/octo-org/nope", "bf-2", &["a"])
        .await;
    assert_eq!(nowhere.status, 404);

    // The encoded config: base64 JSON of three base64 files.
    let encoded = first.body["encoded_jit_config"].as_str().unwrap();
    let files: HashMap<String, String> =
        serde_json::from_slice(&STANDARD.decode(encoded).unwrap()).unwrap();
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([".credentials", ".credentials_rsaparams", ".runner"])
    );
    let dot_runner: Value =
        serde_json::from_slice(&STANDARD.decode(&files[".runner"]).unwrap()).unwrap();
    assert_eq!(dot_runner["agentId"], runner["id"]);
    assert_eq!(dot_runner["agentName"], "bf-1");
    assert_eq!(dot_runner["serverUrl"], sb.base);
    assert_eq!(dot_runner["gitHubUrl"], format!("{}/octo-org/app", sb.base));
    assert_eq!(dot_runner["labels"], json!(["builtiful(ubuntu,8cpu)"]));
    let config = jit::decode(encoded).unwrap();
    assert!(!config.secret.is_empty());
    assert!(
        !format!("{config:?}").contains(&config.secret),
        "Debug redacts the secret"
    );

    // Listed by name.
    let listed = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/runners",
            "GET",
            "/repos/octo-org/app/actions/runners?name=bf-1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(listed.body["total_count"], 1);
    assert_eq!(listed.body["runners"][0]["id"], runner["id"]);
    let none = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/runners",
            "GET",
            "/repos/octo-org/app/actions/runners?name=bf-9",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(none.body["total_count"], 0);

    // Busy runners cannot be deleted; idle ones can.
    let id = config.runner.agent_id;
    sb.queue("octo-org/app", &["builtiful(ubuntu,8cpu)"], 1, 0)
        .await;
    sb.connect(&config).await;
    let job = sb.acquire(&config, 0).await.unwrap();
    sb.runner_step(&config, job, "start", None).await;
    let runner_path = format!("/repos/octo-org/app/actions/runners/{id}");
    let delete_op = "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}";
    let busy = sb
        .api(delete_op, "DELETE", &runner_path, Some(&token), None)
        .await;
    assert_eq!(busy.status, 422, "{}", busy.body);
    let shown = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/runners/{runner_id}",
            "GET",
            &format!("/repos/octo-org/app/actions/runners/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(shown.body["busy"], true);
    assert_eq!(shown.body["status"], "online");
    sb.runner_step(
        &config,
        job,
        "complete",
        Some(json!({"conclusion": "success"})),
    )
    .await;
    // Its one job done, the JIT runner is gone.
    assert_eq!(
        sb.api(delete_op, "DELETE", &runner_path, Some(&token), None)
            .await
            .status,
        404
    );
    let idle = sb
        .runner(&token, "repos/octo-org/app", "bf-3", &["a"])
        .await;
    let path = format!(
        "/repos/octo-org/app/actions/runners/{}",
        idle.runner.agent_id
    );
    let answer = sb
        .api(
            "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}",
            "DELETE",
            &path,
            Some(&token),
            None,
        )
        .await;
    assert_eq!(answer.status, 204);
    let (status, _) = sb
        .control(
            "POST",
            &format!("/runners/{}/session", idle.runner.agent_id),
            Some(&idle.secret),
            None,
        )
        .await;
    assert_eq!(status, 401, "a deleted runner cannot connect");
}

/// GitHub's routing: a queued job goes to any idle, online runner with matching labels of
/// its repository (or organisation), oldest job first, and each step is a signed webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_routed_like_githubs_and_announced_by_signed_webhooks() {
    let sb = Sandbox::start().await;
    let token = sb.installation_token(OCTO).await;
    let label = "builtiful(ubuntu,4cpu)";
    let job = sb.queue("octo-org/app", &[label], 1, 0).await[0];
    let queued = sb.job_hook(job, "queued").await;

    let other_repo = sb
        .runner(&token, "repos/octo-org/api", "other-repo", &[label])
        .await;
    let other_label = sb
        .runner(
            &token,
            "repos/octo-org/app",
            "other-label",
            &["builtiful(ubuntu,8cpu)"],
        )
        .await;
    let matching = sb
        .runner(&token, "repos/octo-org/app", "matching", &[label, "extra"])
        .await;
    for runner in [&other_repo, &other_label, &matching] {
        sb.connect(runner).await;
    }
    assert_eq!(
        sb.acquire(&other_repo, 0).await,
        None,
        "a runner of another repository"
    );
    assert_eq!(
        sb.acquire(&other_label, 0).await,
        None,
        "a runner with other labels"
    );
    assert_eq!(sb.acquire(&matching, 0).await, Some(job));
    assert_eq!(sb.runner_step(&matching, job, "start", None).await.0, 200);
    let started = sb.job_hook(job, "in_progress").await;
    let (status, _) = sb
        .runner_step(
            &matching,
            job,
            "complete",
            Some(json!({"conclusion": "failure"})),
        )
        .await;
    assert_eq!(status, 200);
    let completed = sb.job_hook(job, "completed").await;

    for hook in [&queued, &started, &completed] {
        assert!(hook.signature_ok, "X-Hub-Signature-256 verifies");
        assert_eq!(hook.event, "workflow_job");
        assert!(hook.user_agent.starts_with("GitHub-Hookshot/"));
        assert!(!hook.id.is_empty(), "X-GitHub-Hook-ID");
        assert_eq!(
            uuid::Uuid::parse_str(&hook.guid).unwrap().to_string(),
            hook.guid
        );
        assert_github_shape("workflow_job", &hook.body);
        assert_eq!(hook.body["installation"]["id"], OCTO);
        assert_eq!(hook.body["repository"]["full_name"], "octo-org/app");
        assert_eq!(hook.body["organization"]["login"], "octo-org");
        assert_eq!(hook.body["workflow_job"]["labels"], json!([label]));
    }
    let q = &queued.body["workflow_job"];
    assert_eq!(q["status"], "queued");
    assert!(q["runner_name"].is_null() && q["runner_id"].is_null() && q["conclusion"].is_null());
    let s = &started.body["workflow_job"];
    assert_eq!(s["status"], "in_progress");
    assert_eq!(s["runner_name"], "matching");
    assert_eq!(s["runner_id"], matching.runner.agent_id);
    assert_eq!(s["runner_group_id"], 1);
    assert_eq!(s["runner_group_name"], "Default");
    let c = &completed.body["workflow_job"];
    assert_eq!(c["status"], "completed");
    assert_eq!(c["conclusion"], "failure");
    assert_eq!(c["runner_name"], "matching");
    assert!(is_iso8601(c["completed_at"].as_str().unwrap()));
    assert!(c["started_at"].as_str().unwrap() <= c["completed_at"].as_str().unwrap());
    let order: Vec<String> = sb
        .hooks()
        .iter()
        .filter(|h| h.body["workflow_job"]["id"] == job)
        .map(|h| h.body["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        ["queued", "in_progress", "completed"],
        "delivered in order"
    );

    // A runner made for job A takes job B when B is first in the queue.
    let job_b = sb.queue("octo-org/app", &[label], 1, 0).await[0];
    let job_a = sb.queue("octo-org/app", &[label], 1, 0).await[0];
    let made_for_a = sb
        .runner(&token, "repos/octo-org/app", "for-a", &[label])
        .await;
    sb.connect(&made_for_a).await;
    assert_eq!(sb.acquire(&made_for_a, 0).await, Some(job_b));
    sb.runner_step(&made_for_a, job_b, "start", None).await;
    assert_eq!(
        sb.job_hook(job_b, "in_progress").await.body["workflow_job"]["runner_name"],
        "for-a"
    );

    // An organisation runner serves every repository of its organisation, not others.
    let org_runner = sb
        .runner(&token, "orgs/octo-org", "org-runner", &[label])
        .await;
    sb.connect(&org_runner).await;
    assert_eq!(sb.acquire(&org_runner, 0).await, Some(job_a));
    let mona_job = sb.queue("mona-org/site", &[label], 1, 0).await[0];
    let api_job = sb.queue("octo-org/api", &[label], 1, 0).await[0];
    assert_eq!(sb.acquire(&other_repo, 0).await, Some(api_job));
    let mona = sb.installation_token(MONA).await;
    let mona_runner = sb
        .runner(&mona, "orgs/mona-org", "mona-runner", &[label])
        .await;
    sb.connect(&mona_runner).await;
    assert_eq!(sb.acquire(&mona_runner, 0).await, Some(mona_job));
    let mona_hook = sb.job_hook(mona_job, "queued").await;
    assert_eq!(mona_hook.body["installation"]["id"], MONA);

    // Long-polling: a waiting runner gets a job queued while it waits.
    let waiter = sb
        .runner(&token, "repos/octo-org/app", "waiter", &["late"])
        .await;
    sb.connect(&waiter).await;
    let poll = {
        let (base, id, secret) = (
            sb.base.clone(),
            waiter.runner.agent_id,
            waiter.secret.clone(),
        );
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/_sandbox/runners/{id}/acquire?wait=10"))
                .bearer_auth(secret)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = sb.queue("octo-org/app", &["late"], 1, 0).await[0];
    let got = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["job"]["id"], late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_abandoned_jobs() {
    let sb = Sandbox::start().await;
    let token = sb.installation_token(OCTO).await;

    // Cancelled before any runner took it: `completed`, `cancelled`, no runner.
    let job = sb.queue("octo-org/app", &["c"], 1, 0).await[0];
    let (status, body) = sb
        .control("POST", &format!("/jobs/{job}/cancel"), None, None)
        .await;
    assert_eq!(status, 200, "{body}");
    let hook = sb.job_hook(job, "completed").await;
    assert_github_shape("workflow_job", &hook.body);
    let j = &hook.body["workflow_job"];
    assert_eq!(j["conclusion"], "cancelled");
    for field in [
        "runner_id",
        "runner_name",
        "runner_group_id",
        "runner_group_name",
    ] {
        assert!(j[field].is_null(), "{field} is null");
    }
    let runner = sb.runner(&token, "repos/octo-org/app", "c-1", &["c"]).await;
    sb.connect(&runner).await;
    assert_eq!(
        sb.acquire(&runner, 0).await,
        None,
        "a cancelled job is not handed out"
    );

    // Handed to a runner that never starts it: back to the queue after 60 s, for another.
    let job = sb.queue("octo-org/app", &["c"], 1, 0).await[0];
    assert_eq!(sb.acquire(&runner, 0).await, Some(job));
    let other = sb.runner(&token, "repos/octo-org/app", "c-2", &["c"]).await;
    sb.connect(&other).await;
    assert_eq!(
        sb.acquire(&other, 0).await,
        None,
        "assigned jobs are not handed out twice"
    );
    sb.clock.advance(Duration::from_secs(61));
    assert_eq!(
        sb.acquire(&other, 3).await,
        Some(job),
        "the job went back to the queue"
    );
    let (status, body) = sb.runner_step(&runner, job, "start", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(sb.runner_step(&other, job, "start", None).await.0, 200);
    assert_eq!(
        sb.job_hook(job, "in_progress").await.body["workflow_job"]["runner_name"],
        "c-2"
    );
}

/// Failed deliveries are recorded; a redelivery sends the same payload with the same GUID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_recorded_and_redelivered() {
    let sb = Sandbox::start().await;
    sb.receiver.fail.store(1, Ordering::SeqCst);
    let job = sb.queue("mona-org/site", &["d"], 1, 0).await[0];
    let jwt = sb.jwt();
    let mut failed = Value::Null;
    for _ in 0..250 {
        let list = sb
            .api(
                "GET /app/hook/deliveries",
                "GET",
                "/app/hook/deliveries",
                Some(&jwt),
                None,
            )
            .await;
        if let Some(first) = list.body.as_array().unwrap().first() {
            failed = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed["status_code"], 500, "{failed}");
    assert_eq!(failed["status"], "Invalid HTTP Response: 500");
    assert_eq!(failed["event"], "workflow_job");
    assert_eq!(failed["action"], "queued");
    assert_eq!(failed["redelivery"], false);
    assert!(sb.hooks().is_empty(), "the receiver refused it");

    let id = failed["id"].as_u64().unwrap();
    let again = sb
        .api(
            "POST /app/hook/deliveries/{delivery_id}/attempts",
            "POST",
            &format!("/app/hook/deliveries/{id}/attempts"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(again.status, 202);
    let hook = sb.job_hook(job, "queued").await;
    assert_eq!(hook.guid, failed["guid"].as_str().unwrap());
    let list = sb
        .api(
            "GET /app/hook/deliveries",
            "GET",
            "/app/hook/deliveries",
            Some(&jwt),
            None,
        )
        .await;
    let newest = &list.body[0];
    assert_eq!(newest["guid"], failed["guid"]);
    assert_eq!(newest["redelivery"], true);
    assert_eq!(newest["status"], "OK");
    assert_ne!(newest["id"], failed["id"]);
    let missing = sb
        .api(
            "POST /app/hook/deliveries/{delivery_id}/attempts",
            "POST",
            "/app/hook/deliveries/1/attempts",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
}

// ---------------------------------------------------------------------------------------
// The commands, as real processes
// ---------------------------------------------------------------------------------------

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(args, env);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_runner_commands() {
    let sb = Sandbox::start().await;
    let token = sb.installation_token(OCTO).await;
    let label = "builtiful(ubuntu,2cpu)";
    let runner = sb
        .generate(&token, "repos/octo-org/app", "cli-1", &[label])
        .await;
    let encoded = runner.body["encoded_jit_config"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = run(
        &[
            "sandbox",
            "queue",
            "--server",
            &sb.server,
            "--repo",
            "octo-org/app",
            "--label",
            label,
            "--count",
            "2",
            "--duration",
            "1",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ids: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    sb.job_hook(ids[0], "queued").await;

    // The runner takes the oldest job, works ~1 s, finishes it, exits 0.
    let started = std::time::Instant::now();
    let out = run(
        &["sandbox", "runner", "--idle-timeout", "10"],
        &[("BUILTIFUL_JIT_CONFIG", &encoded)],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it worked for the job's duration"
    );
    assert!(
        text(&out.stderr).contains("completed with result: success"),
        "{}",
        text(&out.stderr)
    );
    let done = sb.job_hook(ids[0], "completed").await;
    assert_eq!(done.body["workflow_job"]["conclusion"], "success");
    assert_eq!(done.body["workflow_job"]["runner_name"], "cli-1");

    // From a file; no job with its label: non-zero after the idle timeout, one line.
    let dir = tempfile::tempdir().unwrap();
    let idle = sb
        .generate(
            &token,
            "repos/octo-org/app",
            "cli-2",
            &["nobody-queues-this"],
        )
        .await;
    let file = dir.path().join("jit");
    std::fs::write(&file, idle.body["encoded_jit_config"].as_str().unwrap()).unwrap();
    let out = run(
        &["sandbox", "runner", "--idle-timeout", "1"],
        &[("BUILTIFUL_JIT_CONFIG_FILE", file.to_str().unwrap())],
    )
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("got no job within 1s"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
    let listed = sb
        .api(
            "GET /repos/{owner}/{repo}/actions/runners",
            "GET",
            "/repos/octo-org/app/actions/runners?name=cli-2",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        listed.body["runners"][0]["status"], "offline",
        "it stays registered, offline"
    );

    // An invalid config.
    let out = run(
        &["sandbox", "runner"],
        &[("BUILTIFUL_JIT_CONFIG", "bm90IGEgY29uZmln")],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid JIT config"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["sandbox", "runner"], &[]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("BUILTIFUL_JIT_CONFIG"));

    // SIGTERM while working: the job is reported cancelled, the runner exits non-zero.
    let long = sb.queue("octo-org/app", &["long"], 1, 60).await[0];
    let runner = sb
        .generate(&token, "repos/octo-org/app", "cli-3", &["long"])
        .await;
    let encoded = runner.body["encoded_jit_config"]
        .as_str()
        .unwrap()
        .to_owned();
    let child = command(
        &["sandbox", "runner", "--idle-timeout", "10"],
        &[("BUILTIFUL_JIT_CONFIG", &encoded)],
    )
    .spawn()
    .unwrap();
    sb.job_hook(long, "in_progress").await;
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cancelled"),
        "{}",
        text(&out.stderr)
    );
    let hook = sb.job_hook(long, "completed").await;
    assert_eq!(hook.body["workflow_job"]["conclusion"], "cancelled");

    // `sandbox cancel` cancels the second job, still queued.
    let out = run(
        &[
            "sandbox",
            "cancel",
            "--server",
            &sb.server,
            &ids[1].to_string(),
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        sb.job_hook(ids[1], "completed").await.body["workflow_job"]["conclusion"],
        "cancelled"
    );
    let out = run(
        &[
            "sandbox",
            "queue",
            "--server",
            &sb.server,
            "--repo",
            "octo-org/nope",
            "--label",
            "x",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no repository `octo-org/nope`"),
        "{}",
        text(&out.stderr)
    );
}
