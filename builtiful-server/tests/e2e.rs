//! The whole server with the simulated GitHub, over real HTTP and the real `sandbox`
//! commands: people sign in through GitHub's OAuth flow, jobs queued on GitHub appear through
//! webhooks, hosts claim them with JIT runner configs, and runners finish them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use builtiful_core::{ClaimRequest, CpuArchitecture, JobStatus, PageRequest};
use common::{Backend, Options, TestServer};
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::{Value, json};

conformance!(
    sign_in_with_github_and_see_jobs_arrive,
    cli_sign_in_with_pkce,
    hosts_claim_and_runners_finish_jobs,
    long_polls_wake_when_a_job_is_queued,
    cancelled_workflows_stop_their_runners,
    a_user_removed_from_an_org_loses_it,
    the_setup_url_checks_the_installation,
    orphaned_runners_are_swept,
    organization_runners_when_configured,
);

const BIN: &str = env!("CARGO_BIN_EXE_builtiful-server");

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// Signs `login` in the way a browser does: server → simulated GitHub (approving at once
/// with `login=`) → callback. Returns the session token from the cookie and the last hop.
async fn browser_sign_in(
    server: &TestServer,
    login: &str,
    redirect_uri: &str,
) -> (Option<String>, String) {
    let http = http();
    let mut url = url::Url::parse(&server.url("/auth/github/login")).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_uri", redirect_uri);
    let to_github = http.get(url).send().await.unwrap();
    assert_eq!(to_github.status(), 302);
    let approve = format!("{}&login={login}", location(&to_github));
    let to_callback = http.get(approve).send().await.unwrap();
    assert_eq!(to_callback.status(), 302, "{:?}", to_callback.text().await);
    let back = http.get(location(&to_callback)).send().await.unwrap();
    assert_eq!(back.status(), 302, "{:?}", back.text().await);
    let cookie = back.headers().get(SET_COOKIE).map(|c| {
        let value = c.to_str().unwrap();
        assert!(
            value.contains("HttpOnly") && value.contains("SameSite=Lax"),
            "{value}"
        );
        value
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("builtiful_session=")
            .to_owned()
    });
    (cookie, location(&back))
}

async fn sandbox(server: &TestServer, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = http()
        .request(
            method,
            server.url(&format!("/sandbox/github/_sandbox{path}")),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

async fn queue(
    server: &TestServer,
    repo: &str,
    label: &str,
    count: u32,
    duration: u64,
) -> Vec<i64> {
    let body =
        json!({"repository": repo, "labels": [label], "count": count, "duration_secs": duration});
    let jobs = sandbox(server, reqwest::Method::POST, "/jobs", body).await;
    jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect()
}

/// Queues workflow jobs and waits until the server has them all `Queued` (webhooks are
/// delivered in order, so the last one arriving means all did).
async fn queue_and_wait(
    server: &TestServer,
    repo: &str,
    label: &str,
    count: u32,
    duration: u64,
) -> Vec<i64> {
    let ids = queue(server, repo, label, count, duration).await;
    let last = *ids.last().unwrap();
    eventually("the jobs are queued", || async {
        status_of(server, last).await == Some(JobStatus::Queued)
    })
    .await;
    ids
}

/// Waits until `check` holds (webhooks are delivered in the background).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(server: &TestServer, workflow_job_id: i64) -> Option<JobStatus> {
    server
        .store()
        .job_by_workflow_job_id(workflow_job_id)
        .await
        .unwrap()
        .map(|r| r.job.status)
}

async fn sign_in_with_github_and_see_jobs_arrive(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let (token, landed) = browser_sign_in(&server, "octocat", &server.url("/tenants")).await;
    assert_eq!(landed, server.url("/tenants"));
    let client = server.client(&token.expect("a session cookie"));
    let me = client.me().await.unwrap();
    assert_eq!(
        (me.github_login.as_str(), me.email.as_deref()),
        ("octocat", Some("octocat@github.example"))
    );
    let tenants = client.tenants().await.unwrap();
    let logins: Vec<_> = tenants
        .tenants
        .iter()
        .map(|t| t.github_login.as_str())
        .collect();
    assert_eq!(
        logins,
        ["octo-org"],
        "octocat sees octo-org and not mona-org"
    );

    // `sandbox queue`, the real command, against this server.
    let output = Command::new(BIN)
        .args([
            "sandbox",
            "queue",
            "--server",
            &server.base,
            "--repo",
            "octo-org/app",
        ])
        .args(["--label", "builtiful(ubuntu,4cpu)", "--count", "3"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<i64> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let octo = tenants.tenants[0].id;
    eventually("the three jobs are listed", || async {
        client
            .jobs(octo, &PageRequest::default())
            .await
            .unwrap()
            .total_count
            == 3
    })
    .await;
    let jobs = client
        .jobs(octo, &PageRequest::default())
        .await
        .unwrap()
        .jobs;
    let mut listed: Vec<i64> = jobs.iter().map(|j| j.workflow_job_id).collect();
    listed.sort_unstable();
    assert_eq!(listed, ids);
    assert!(
        jobs.iter()
            .all(|j| j.status == JobStatus::Queued && j.vcpus == 4)
    );
    // monalisa sees none of it.
    let (other, _) = browser_sign_in(&server, "monalisa", &server.url("/tenants")).await;
    let other = server.client(&other.unwrap());
    assert_eq!(
        other
            .jobs(octo, &PageRequest::default())
            .await
            .unwrap_err()
            .status()
            .map(|s| s.as_u16()),
        Some(404)
    );
}

async fn cli_sign_in_with_pkce(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let http = http();
    let login_url = server.client("").login_url(
        "http://127.0.0.1:49152/callback?state=cli-state",
        Some(challenge),
    );
    let to_github = http.get(login_url).send().await.unwrap();
    let to_callback = http
        .get(format!("{}&login=monalisa", location(&to_github)))
        .send()
        .await
        .unwrap();
    let back = http.get(location(&to_callback)).send().await.unwrap();
    assert!(
        back.headers().get(SET_COOKIE).is_none(),
        "the CLI gets a code, not a cookie"
    );
    let loopback = url::Url::parse(&location(&back)).unwrap();
    assert_eq!(loopback.host_str(), Some("127.0.0.1"));
    let pairs: std::collections::HashMap<_, _> = loopback.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "cli-state");
    let session = server
        .client("")
        .exchange_code(&pairs["code"], verifier)
        .await
        .unwrap();
    assert_eq!(session.user.github_login, "monalisa");
    let tenants = server.client(&session.token).tenants().await.unwrap();
    assert_eq!(tenants.tenants[0].github_login, "mona-org");
}

/// Runs the real `sandbox runner` with a JIT config; it takes one job, finishes it, exits 0.
fn run_sandbox_runner(jit_config: &str) {
    let output = Command::new(BIN)
        .args(["sandbox", "runner", "--idle-timeout", "20"])
        .env("BUILTIFUL_JIT_CONFIG", jit_config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn claim(host: &str, vcpus: i64, wait: Option<i64>) -> ClaimRequest {
    ClaimRequest {
        available_vcpus: vcpus,
        cpu_architecture: CpuArchitecture::Amd64,
        host: host.into(),
        wait,
    }
}

/// A client authenticated with a new provisioner token.
async fn provisioner(server: &TestServer) -> builtiful_core::Client {
    let token = builtiful_server::auth::Token::generate("bfp_");
    let name = format!("host-{}", uuid::Uuid::new_v4());
    server
        .store()
        .create_provisioner_token(&name, token.hash(), builtiful_core::Timestamp::now())
        .await
        .unwrap();
    server.client(token.expose())
}

async fn hosts_claim_and_runners_finish_jobs(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let host = provisioner(&server).await;
    let ids = queue_and_wait(&server, "octo-org/api", "builtiful(ubuntu,8cpu)", 2, 1).await;
    assert_eq!(
        host.claim_job(&claim("small", 4, None)).await.unwrap(),
        None,
        "too big for 4 vCPUs"
    );
    let job = host
        .claim_job(&claim("big", 8, None))
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(
        (
            job.vcpus,
            job.repository.as_str(),
            job.organization.as_str()
        ),
        (8, "api", "octo-org")
    );
    assert_eq!(job.label, "builtiful(ubuntu,8cpu)");
    assert_eq!(job.max_run_time, 21_600);
    assert!(!job.jit_config.is_empty());
    let record = server
        .store()
        .job_by_workflow_job_id(ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.job.id, record.job.status),
        (job.id, JobStatus::Provisioning)
    );
    assert!(record.job.provisioner_picked_up_at.is_some());
    assert!(!host.heartbeat(job.id).await.unwrap().cancel);

    // The real runner command, given the JIT config, takes the job and finishes it.
    run_sandbox_runner(&job.jit_config);
    eventually("the job completed", || async {
        status_of(&server, ids[0]).await == Some(JobStatus::Completed)
    })
    .await;
    let done = server
        .store()
        .job_by_workflow_job_id(ids[0])
        .await
        .unwrap()
        .unwrap()
        .job;
    assert!(done.started_at.is_some() && done.completed_at.is_some());
    assert_eq!(
        done.billable_duration,
        Some(60),
        "a 1-second job bills one minute"
    );
    assert!(
        host.heartbeat(job.id).await.unwrap().cancel,
        "nothing left to run"
    );
    // Another provisioner cannot touch it.
    let stranger = provisioner(&server).await;
    let refused = stranger.heartbeat(job.id).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(404));
}

async fn long_polls_wake_when_a_job_is_queued(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let host = provisioner(&server).await;
    let started = Instant::now();
    let poll = tokio::spawn(async move { host.claim_job(&claim("waiter", 2, Some(30))).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    queue(&server, "octo-org/app", "builtiful(ubuntu)", 1, 0).await;
    let job = poll
        .await
        .unwrap()
        .unwrap()
        .expect("the long-poll got the job");
    assert_eq!(job.vcpus, 2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken, not timed out: {:?}",
        started.elapsed()
    );
    // With nothing queued, a short wait ends empty.
    let host = provisioner(&server).await;
    let started = Instant::now();
    assert_eq!(
        host.claim_job(&claim("waiter", 2, Some(1))).await.unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

async fn cancelled_workflows_stop_their_runners(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let host = provisioner(&server).await;
    let ids = queue_and_wait(&server, "octo-org/app", "builtiful(ubuntu)", 1, 0).await;
    let job = host.claim_job(&claim("h", 2, None)).await.unwrap().unwrap();
    sandbox(
        &server,
        reqwest::Method::POST,
        &format!("/jobs/{}/cancel", ids[0]),
        json!({}),
    )
    .await;
    eventually("cancelled", || async {
        status_of(&server, ids[0]).await == Some(JobStatus::Cancelled)
    })
    .await;
    assert!(
        host.heartbeat(job.id).await.unwrap().cancel,
        "the heartbeat says stop"
    );
}

async fn a_user_removed_from_an_org_loses_it(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let (token, _) = browser_sign_in(&server, "octocat", &server.url("/tenants")).await;
    let client = server.client(&token.unwrap());
    let octo = client.tenants().await.unwrap().tenants[0].clone();
    sandbox(
        &server,
        reqwest::Method::DELETE,
        "/users/octocat/orgs/octo-org",
        json!({}),
    )
    .await;
    // Within the ten-minute window the last check stands…
    assert_eq!(client.tenants().await.unwrap().total_count, 1);
    // …after it, GitHub is asked again and the organisation is gone.
    server.clock.advance(Duration::from_secs(10 * 60 + 1));
    assert_eq!(client.tenants().await.unwrap().total_count, 0);
    let gone = client
        .jobs(octo.id, &PageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(gone.status().map(|s| s.as_u16()), Some(404));
}

async fn the_setup_url_checks_the_installation(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let setup = |id: i64| {
        server.url(&format!(
            "/auth/github/setup?installation_id={id}&setup_action=install"
        ))
    };
    // Not signed in: sign in first, then back to the setup URL.
    let anonymous = http().get(setup(4_410_001)).send().await.unwrap();
    assert_eq!(anonymous.status(), 302);
    assert!(location(&anonymous).contains("/auth/github/login?redirect_uri="));
    let (token, _) = browser_sign_in(&server, "octocat", &setup(4_410_001)).await;
    let token = token.unwrap();
    let with_cookie = |url: String| {
        http()
            .get(url)
            .header("cookie", format!("builtiful_session={token}"))
            .send()
    };
    let ok = with_cookie(setup(4_410_001)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.json::<Value>().await.unwrap()["message"],
        "Builtiful is installed on octo-org"
    );
    // mona-org's installation id, forged into the URL by octocat.
    let spoofed = with_cookie(setup(4_410_002)).await.unwrap();
    assert_eq!(spoofed.status(), 404);
}

async fn orphaned_runners_are_swept(backend: Backend) {
    use builtiful_server::dispatch::reconciler::{Chores, reconcile};
    use builtiful_server::github::RunnerScope;

    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let host = provisioner(&server).await;
    let ids = queue_and_wait(&server, "octo-org/app", "builtiful(ubuntu)", 2, 0).await;
    let kept = host.claim_job(&claim("h", 2, None)).await.unwrap().unwrap();
    let lost = host.claim_job(&claim("h", 2, None)).await.unwrap().unwrap();
    // The second job's host died and the job was given up on; its registration lingers.
    assert!(
        server
            .store()
            .fail_job(
                lost.id,
                JobStatus::Provisioning,
                builtiful_core::FailureReason::RunnerLost,
                server.app.now()
            )
            .await
            .unwrap()
    );
    let scope = RunnerScope::Repository {
        owner: "octo-org".into(),
        repo: "app".into(),
    };
    let names = || async {
        let mut names: Vec<String> = server
            .app
            .github
            .runners(4_410_001, &scope, None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    };
    assert_eq!(names().await.len(), 2);
    let mut kept_runner = None;
    for id in &ids {
        let record = server
            .store()
            .job_by_workflow_job_id(*id)
            .await
            .unwrap()
            .unwrap();
        if record.job.id == kept.id {
            kept_runner = record.runner_name;
        }
    }
    let kept_runner = kept_runner.expect("the live job holds its runner");
    let state = builtiful_server::app::AppState(server.app.clone());
    let pass = reconcile(
        &state,
        Chores {
            sweep: true,
            ..Chores::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pass.swept, 1);
    assert_eq!(names().await, [kept_runner], "the live job's runner stays");
    common::assert_held_vcpus_exact(&server.db.url).await;
}

async fn organization_runners_when_configured(backend: Backend) {
    use builtiful_server::github::RunnerScope;

    let options = Options {
        organization_runners: true,
        ..Options::default()
    };
    let Some(server) = TestServer::start_with(backend, options).await else {
        return;
    };
    let host = provisioner(&server).await;
    let ids = queue_and_wait(&server, "octo-org/api", "builtiful(ubuntu)", 1, 0).await;
    let job = host.claim_job(&claim("h", 2, None)).await.unwrap().unwrap();
    let org = RunnerScope::Organization {
        org: "octo-org".into(),
    };
    let runners = server
        .app
        .github
        .runners(4_410_001, &org, None)
        .await
        .unwrap();
    assert_eq!(runners.len(), 1, "registered at the organisation");
    let repo = RunnerScope::Repository {
        owner: "octo-org".into(),
        repo: "api".into(),
    };
    assert!(
        server
            .app
            .github
            .runners(4_410_001, &repo, None)
            .await
            .unwrap()
            .is_empty()
    );
    run_sandbox_runner(&job.jit_config);
    eventually("completed", || async {
        status_of(&server, ids[0]).await == Some(JobStatus::Completed)
    })
    .await;
}
