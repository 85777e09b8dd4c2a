//! Webhook intake: signatures, duplicates, every GitHub example payload, and events arriving
//! twice, late and out of order — on both backends.

mod common;

use builtiful_core::{FailureReason, JobStatus, Page};
use builtiful_server::webhooks::signature;
use common::{Backend, TestServer, WEBHOOK_SECRET};
use serde_json::{Value, json};

conformance!(
    signatures_are_required,
    duplicates_are_applied_once,
    every_github_example_is_accepted,
    installations_keep_tenants_current,
    job_lifecycle_in_order,
    out_of_order_deliveries_never_go_backwards,
    waiting_jobs_are_held_until_queued,
    labels_decide_what_is_ours,
    suspended_tenants_fail_jobs,
    revoked_authorization_ends_sessions,
    a_runner_taken_by_another_job,
    two_waiting_jobs_swap_runners,
);

const INSTALLATION_ID: i64 = 4_410_001;

/// Posts a signed webhook; returns the status and the message.
async fn post(server: &TestServer, event: &str, delivery: &str, body: &Value) -> (u16, String) {
    let bytes = serde_json::to_vec(body).unwrap();
    post_raw(
        server,
        event,
        delivery,
        &bytes,
        Some(&signature::sign(WEBHOOK_SECRET.as_bytes(), &bytes)),
    )
    .await
}

async fn post_raw(
    server: &TestServer,
    event: &str,
    delivery: &str,
    bytes: &[u8],
    signature: Option<&str>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(server.url("/webhooks/github"))
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(bytes.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn delivery() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A `workflow_job` event in GitHub's shape for the seeded installation.
fn workflow_job(action: &str, id: i64, labels: &[&str], extra: &Value) -> Value {
    let mut job = json!({
        "id": id,
        "run_id": 5_000_000_001_i64,
        "run_attempt": 1,
        "name": "build",
        "workflow_name": "CI",
        "head_branch": "main",
        "head_sha": "0123456789abcdef0123456789abcdef01234567",
        "labels": labels,
        "status": match action { "in_progress" => "in_progress", "completed" => "completed", _ => "queued" },
        "conclusion": null,
        "created_at": "2026-12-04T10:00:00Z",
        "started_at": "2026-12-04T10:00:05Z",
        "completed_at": null,
        "runner_id": null,
        "runner_name": null,
        "runner_group_id": null,
        "runner_group_name": null,
    });
    for (key, value) in extra.as_object().unwrap() {
        job[key] = value.clone();
    }
    json!({
        "action": action,
        "workflow_job": job,
        "repository": {"id": 1, "name": "app", "full_name": "octo-org/app", "owner": {"login": "octo-org", "id": 6_811_672, "type": "Organization"}},
        "organization": {"login": "octo-org", "id": 6_811_672},
        "sender": {"login": "octocat", "id": 583_231},
        "installation": {"id": INSTALLATION_ID},
    })
}

async fn job_status(server: &TestServer, workflow_job_id: i64) -> Option<(JobStatus, bool)> {
    server
        .store()
        .job_by_workflow_job_id(workflow_job_id)
        .await
        .unwrap()
        .map(|record| (record.job.status, record.waiting))
}

async fn signatures_are_required(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let body = serde_json::to_vec(&json!({"zen": "Keep it logically awesome."})).unwrap();
    let good = signature::sign(WEBHOOK_SECRET.as_bytes(), &body);
    let wrong = signature::sign(b"another secret", &body);
    for bad in [
        None,
        Some(wrong.as_str()),
        Some(&good[..good.len() - 4]),
        Some("sha256="),
    ] {
        let (status, message) = post_raw(&server, "ping", &delivery(), &body, bad).await;
        assert_eq!(status, 401, "{bad:?}");
        assert!(message.contains("signature"), "{message}");
    }
    // A valid signature over other bytes does not pass either.
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert_eq!(
        post_raw(&server, "ping", &delivery(), &tampered, Some(&good))
            .await
            .0,
        401
    );
    let (status, message) = post_raw(&server, "ping", &delivery(), &body, Some(&good)).await;
    assert_eq!((status, message.as_str()), (202, "Accepted"));
}

async fn duplicates_are_applied_once(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let id = delivery();
    let event = workflow_job("queued", 9_000_000_001, &["builtiful(ubuntu)"], &json!({}));
    assert_eq!(
        post(&server, "workflow_job", &id, &event).await,
        (202, "Accepted".into())
    );
    assert_eq!(
        post(&server, "workflow_job", &id, &event).await,
        (202, "Duplicate delivery ignored".into())
    );
    let octo = server
        .store()
        .tenant_by_installation(INSTALLATION_ID)
        .await
        .unwrap()
        .unwrap();
    let list = server
        .store()
        .list_jobs(
            octo.id,
            Page {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(list.total_count, 1);
}

fn examples() -> Vec<(String, String, Value)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github/webhooks.json"
    ))
    .unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    fixture["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["payload"].clone(),
            )
        })
        .collect()
}

async fn every_github_example_is_accepted(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    for (index, (event, action, mut payload)) in examples().into_iter().enumerate() {
        let mut expected = None;
        if event == "workflow_job" {
            // Ours, and one job per example so each shows its own end state.
            let id = 7_000_000_000 + i64::try_from(index).unwrap();
            payload["workflow_job"]["id"] = json!(id);
            payload["workflow_job"]["labels"] = json!(["builtiful(ubuntu,8cpu)"]);
            let has_installation = payload.get("installation").is_some();
            let conclusion = payload["workflow_job"]["conclusion"]
                .as_str()
                .map(str::to_owned);
            expected = Some((
                id,
                has_installation.then(|| match action.as_str() {
                    "queued" => (JobStatus::Queued, false),
                    "waiting" => (JobStatus::Queued, true),
                    "in_progress" => (JobStatus::Running, false),
                    _ if conclusion.as_deref() == Some("cancelled") => {
                        (JobStatus::Cancelled, false)
                    }
                    _ => (JobStatus::Completed, false),
                }),
            ));
        }
        let (status, message) = post(&server, &event, &delivery(), &payload).await;
        assert_eq!(status, 202, "{event}.{action}: {message}");
        if let Some((id, state)) = expected {
            assert_eq!(
                job_status(&server, id).await,
                state,
                "{event}.{action} #{index}"
            );
        }
    }
}

async fn installations_keep_tenants_current(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let installation = |action: &str, suspended: bool| {
        json!({
            "action": action,
            "installation": {
                "id": 77, "account": {"login": "new-org", "id": 777, "type": "Organization"},
                "target_type": "Organization", "repository_selection": "all",
                // GitHub sends either ISO strings or epoch integers here.
                "created_at": 1_557_933_591, "updated_at": "2021-04-28T22:32:21.000-04:00",
                "suspended_at": if suspended { json!("2021-04-29T02:32:50Z") } else { Value::Null },
            },
            "sender": {"login": "octocat", "id": 583_231},
        })
    };
    post(
        &server,
        "installation",
        &delivery(),
        &installation("created", false),
    )
    .await;
    let created = server
        .store()
        .tenant_by_installation(77)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (created.github_login.as_str(), created.github_id),
        ("new-org", 777)
    );
    assert!(!created.github_installation_suspended);
    let (_, token) = server.login("octocat", &[&created]).await;

    post(
        &server,
        "installation",
        &delivery(),
        &installation("suspend", true),
    )
    .await;
    assert!(
        server
            .store()
            .tenant(created.id)
            .await
            .unwrap()
            .unwrap()
            .github_installation_suspended
    );
    post(
        &server,
        "installation",
        &delivery(),
        &installation("unsuspend", false),
    )
    .await;
    assert!(
        !server
            .store()
            .tenant(created.id)
            .await
            .unwrap()
            .unwrap()
            .github_installation_suspended
    );

    post(
        &server,
        "installation",
        &delivery(),
        &installation("deleted", false),
    )
    .await;
    let tenants = server.client(&token).tenants().await.unwrap();
    assert_eq!(
        tenants.total_count, 0,
        "an uninstalled tenant is no longer listed"
    );
}

async fn job_lifecycle_in_order(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let label = ["builtiful(ubuntu-22.04, 16cpu, arm64)"];
    let id = 9_100_000_001;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", id, &label, &json!({})),
    )
    .await;
    let record = server
        .store()
        .job_by_workflow_job_id(id)
        .await
        .unwrap()
        .unwrap();
    let job = record.job;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(
        (job.vcpus, job.os.as_str(), job.cpu_architecture.as_str()),
        (16, "Ubuntu2204", "Arm64")
    );
    assert_eq!(job.label, label[0]);
    assert_eq!(job.repository, "octo-org/app");
    assert_eq!(
        (job.initiator.as_str(), job.initiator_github_id),
        ("octocat", 583_231)
    );
    assert_eq!(job.workflow_job["id"], id);

    let running = json!({"runner_name": "builtiful-x", "started_at": "2026-12-04T10:01:00Z"});
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("in_progress", id, &label, &running),
    )
    .await;
    let job = server
        .store()
        .job_by_workflow_job_id(id)
        .await
        .unwrap()
        .unwrap()
        .job;
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.started_at.unwrap().secs_since_epoch, 1_796_378_460);

    let done = json!({"runner_name": "builtiful-x", "started_at": "2026-12-04T10:01:00Z",
                      "completed_at": "2026-12-04T10:05:01Z", "conclusion": "success"});
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("completed", id, &label, &done),
    )
    .await;
    let job = server
        .store()
        .job_by_workflow_job_id(id)
        .await
        .unwrap()
        .unwrap()
        .job;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.duration, Some(241));
    assert_eq!(job.billable_duration, Some(300));
    assert_eq!(job.completed_at.unwrap().secs_since_epoch, 1_796_378_701);
    assert_eq!(
        job.workflow_job["conclusion"], "success",
        "the latest payload is kept"
    );
}

async fn out_of_order_deliveries_never_go_backwards(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let label = ["builtiful(ubuntu)"];
    let done = json!({"runner_name": "r", "completed_at": "2026-12-04T10:02:05Z", "conclusion": "failure"});

    // completed, then in_progress and queued arrive late.
    let first = 9_200_000_001;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("completed", first, &label, &done),
    )
    .await;
    for action in ["in_progress", "queued", "waiting"] {
        post(
            &server,
            "workflow_job",
            &delivery(),
            &workflow_job(action, first, &label, &json!({"runner_name": "r"})),
        )
        .await;
    }
    let job = server
        .store()
        .job_by_workflow_job_id(first)
        .await
        .unwrap()
        .unwrap()
        .job;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(
        job.duration,
        Some(120),
        "from started_at 10:00:05 to 10:02:05"
    );
    assert_eq!(job.workflow_job["conclusion"], "failure");

    // in_progress before queued.
    let second = 9_200_000_002;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("in_progress", second, &label, &json!({"runner_name": "r"})),
    )
    .await;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", second, &label, &json!({})),
    )
    .await;
    assert_eq!(
        job_status(&server, second).await,
        Some((JobStatus::Running, false))
    );

    // Cancelled before any runner took it.
    let third = 9_200_000_003;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", third, &label, &json!({})),
    )
    .await;
    let cancelled = json!({"conclusion": "cancelled", "completed_at": "2026-12-04T10:00:30Z", "started_at": "2026-12-04T10:00:30Z"});
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("completed", third, &label, &cancelled),
    )
    .await;
    let job = server
        .store()
        .job_by_workflow_job_id(third)
        .await
        .unwrap()
        .unwrap()
        .job;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!((job.duration, job.billable_duration), (Some(0), Some(0)));
}

async fn waiting_jobs_are_held_until_queued(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let label = ["builtiful(ubuntu)"];
    let held = 9_300_000_001;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("waiting", held, &label, &json!({})),
    )
    .await;
    assert_eq!(
        job_status(&server, held).await,
        Some((JobStatus::Queued, true))
    );
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", held, &label, &json!({})),
    )
    .await;
    assert_eq!(
        job_status(&server, held).await,
        Some((JobStatus::Queued, false))
    );
    // `waiting` arriving after `queued` (out of order) does not hold it again.
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("waiting", held, &label, &json!({})),
    )
    .await;
    assert_eq!(
        job_status(&server, held).await,
        Some((JobStatus::Queued, false))
    );
}

async fn labels_decide_what_is_ours(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    for (id, labels) in [
        (9_400_000_001, vec!["ubuntu-latest"]),
        (9_400_000_002, vec!["self-hosted", "linux"]),
        (9_400_000_003, vec![]),
    ] {
        post(
            &server,
            "workflow_job",
            &delivery(),
            &workflow_job("queued", id, &labels, &json!({})),
        )
        .await;
        assert_eq!(
            job_status(&server, id).await,
            None,
            "{labels:?} is not ours"
        );
    }
    for (id, label, reason) in [
        (
            9_400_000_011,
            "builtiful(ubuntu,3cpu)",
            FailureReason::InvalidVcpus,
        ),
        (
            9_400_000_012,
            "builtiful(windows)",
            FailureReason::UnsupportedOs,
        ),
        (
            9_400_000_013,
            "builtiful(ubuntu,sparc)",
            FailureReason::InvalidArchitecture,
        ),
        (
            9_400_000_014,
            "builtiful(ubuntu",
            FailureReason::InvalidLabel,
        ),
    ] {
        post(
            &server,
            "workflow_job",
            &delivery(),
            &workflow_job("queued", id, &[label], &json!({})),
        )
        .await;
        let job = server
            .store()
            .job_by_workflow_job_id(id)
            .await
            .unwrap()
            .unwrap()
            .job;
        assert_eq!(
            (job.status, job.failure_reason),
            (JobStatus::Failed, Some(reason)),
            "{label}"
        );
        assert!(job.completed_at.is_some());
        // Later events do not revive it.
        post(
            &server,
            "workflow_job",
            &delivery(),
            &workflow_job("in_progress", id, &[label], &json!({})),
        )
        .await;
        assert_eq!(
            job_status(&server, id).await,
            Some((JobStatus::Failed, false))
        );
    }
}

async fn suspended_tenants_fail_jobs(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let suspended = builtiful_server::store::Installation {
        github_installation_id: INSTALLATION_ID,
        github_id: 6_811_672,
        github_login: "octo-org".into(),
        suspended: true,
    };
    server
        .store()
        .upsert_tenant(&suspended, builtiful_core::Timestamp::now())
        .await
        .unwrap();
    let id = 9_500_000_001;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", id, &["builtiful(ubuntu)"], &json!({})),
    )
    .await;
    let job = server
        .store()
        .job_by_workflow_job_id(id)
        .await
        .unwrap()
        .unwrap()
        .job;
    assert_eq!(
        (job.status, job.failure_reason),
        (JobStatus::Failed, Some(FailureReason::TenantSuspended))
    );
}

async fn revoked_authorization_ends_sessions(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let (user, token) = server.login("octocat", &[]).await;
    let (mallory, other) = server.login("mallory", &[]).await;
    assert_ne!(user.id, mallory.id);
    let revoked =
        json!({"action": "revoked", "sender": {"login": "octocat", "id": user.github_id}});
    assert_eq!(
        post(&server, "github_app_authorization", &delivery(), &revoked)
            .await
            .0,
        202
    );
    assert!(
        server
            .client(&token)
            .me()
            .await
            .unwrap_err()
            .is_unauthorized()
    );
    assert!(
        server.client(&other).me().await.is_ok(),
        "only that user's sessions end"
    );
}

async fn a_runner_taken_by_another_job(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let label = ["builtiful(ubuntu)"];
    let (a, b) = (9_600_000_001, 9_600_000_002);
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", a, &label, &json!({})),
    )
    .await;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", b, &label, &json!({})),
    )
    .await;
    let job_b = server
        .store()
        .job_by_workflow_job_id(b)
        .await
        .unwrap()
        .unwrap()
        .job;
    // B was handed to a host, which registered runner `builtiful-<B>`.
    let runner = format!("builtiful-{}-0a1b2c3d", job_b.id);
    common::execute(
        &server.db.url,
        &format!(
            "UPDATE jobs SET status = 'Provisioning', host = 'amd64-01', runner_name = '{runner}', \
             lease_expires_at = 1 WHERE workflow_job_id = {b}"
        ),
    )
    .await;
    // GitHub gives that runner to A instead.
    let running = json!({"runner_name": runner, "started_at": "2026-12-04T10:01:00Z"});
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("in_progress", a, &label, &running),
    )
    .await;
    let record_a = server
        .store()
        .job_by_workflow_job_id(a)
        .await
        .unwrap()
        .unwrap();
    let record_b = server
        .store()
        .job_by_workflow_job_id(b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record_a.job.status, JobStatus::Running);
    assert_eq!(
        record_a.host.as_deref(),
        Some("amd64-01"),
        "A runs where B's runner was"
    );
    assert_eq!(record_a.runner_name.as_deref(), Some(runner.as_str()));
    assert_eq!(
        record_b.job.status,
        JobStatus::Queued,
        "B waits for a new runner"
    );
    common::assert_held_vcpus_exact(&server.db.url).await;
    assert_eq!((record_b.host, record_b.runner_name), (None, None));

    // B is handed to another host under a new runner name, and GitHub gives that runner to a
    // third job C: C follows the runner it got, A keeps the one it had.
    let c = 9_600_000_003;
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("queued", c, &label, &json!({})),
    )
    .await;
    let second_runner = format!("builtiful-{}-ffff0000", record_b.job.id);
    common::execute(
        &server.db.url,
        &format!(
            "UPDATE jobs SET status = 'Provisioning', host = 'amd64-02', runner_name = '{second_runner}', \
             lease_expires_at = 1 WHERE workflow_job_id = {b}"
        ),
    )
    .await;
    let running = json!({"runner_name": second_runner, "started_at": "2026-12-04T10:02:00Z"});
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("in_progress", c, &label, &running),
    )
    .await;
    let record_c = server
        .store()
        .job_by_workflow_job_id(c)
        .await
        .unwrap()
        .unwrap();
    let record_a = server
        .store()
        .job_by_workflow_job_id(a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record_c.host.as_deref(), Some("amd64-02"));
    assert_eq!(record_a.host.as_deref(), Some("amd64-01"));
    assert_eq!(record_a.runner_name.as_deref(), Some(runner.as_str()));
    common::assert_held_vcpus_exact(&server.db.url).await;
}

async fn two_waiting_jobs_swap_runners(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let label = ["builtiful(ubuntu)"];
    let (a, b) = (9_700_000_001, 9_700_000_002);
    for id in [a, b] {
        post(
            &server,
            "workflow_job",
            &delivery(),
            &workflow_job("queued", id, &label, &json!({})),
        )
        .await;
    }
    // Both are with hosts, each waiting for its own runner.
    for (id, host) in [(a, "host-a"), (b, "host-b")] {
        common::execute(
            &server.db.url,
            &format!(
                "UPDATE jobs SET status = 'Provisioning', host = '{host}', runner_name = 'builtiful-{}-{host}', \
                 provisioner_picked_up_at = 1, lease_expires_at = 1 WHERE workflow_job_id = {id}",
                uuid::Uuid::nil()
            ),
        )
        .await;
    }
    let runner = |host: &str| format!("builtiful-{}-{host}", uuid::Uuid::nil());
    // GitHub gives B's runner to A, then A's (now idle) runner to B.
    let on = |r: String| json!({"runner_name": r, "started_at": "2026-12-04T10:01:00Z"});
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("in_progress", a, &label, &on(runner("host-b"))),
    )
    .await;
    let record_b = server
        .store()
        .job_by_workflow_job_id(b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record_b.job.status,
        JobStatus::Provisioning,
        "B keeps a runner: A's"
    );
    assert_eq!(record_b.runner_name, Some(runner("host-a")));
    post(
        &server,
        "workflow_job",
        &delivery(),
        &workflow_job("in_progress", b, &label, &on(runner("host-a"))),
    )
    .await;
    let record_a = server
        .store()
        .job_by_workflow_job_id(a)
        .await
        .unwrap()
        .unwrap();
    let record_b = server
        .store()
        .job_by_workflow_job_id(b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record_a.job.status, record_a.host.as_deref()),
        (JobStatus::Running, Some("host-b"))
    );
    assert_eq!(
        (record_b.job.status, record_b.host.as_deref()),
        (JobStatus::Running, Some("host-a"))
    );
    assert!(
        record_a.job.provisioner_picked_up_at.is_some()
            && record_b.job.provisioner_picked_up_at.is_some()
    );
    common::assert_held_vcpus_exact(&server.db.url).await;
}
