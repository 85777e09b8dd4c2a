//! Dispatch conformance: claims, fairness, quotas, leases and the reconciler, on both backends.
//! (Claims over HTTP, with JIT configs minted by the simulated GitHub, are in `e2e` tests.)

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use builtiful_core::{
    CpuArchitecture, FailureReason, JobStatus, RunnerEvent, RunnerEventKind, Timestamp,
};
use builtiful_server::app::AppState;
use builtiful_server::dispatch::reconciler::{self, Chores, Pass};
use builtiful_server::store::{ClaimFilter, HeartbeatOutcome, JobInsert, Store};
use common::{Backend, TestDb, TestServer, job, tenant};
use uuid::Uuid;

conformance!(
    concurrent_pollers_claim_each_job_once,
    fairness_serves_the_tenant_holding_least,
    quotas_and_suspensions_are_respected,
    waiting_jobs_are_not_claimed,
    heartbeats_renew_only_held_jobs,
    expired_leases_are_requeued_then_fail,
    running_jobs_without_heartbeats_are_lost,
    queue_and_run_time_limits,
    tenant_limits_and_gauges,
);

fn filter(vcpus: u32, host: &str, provisioner: Uuid) -> ClaimFilter {
    ClaimFilter {
        architecture: CpuArchitecture::Amd64,
        available_vcpus: vcpus,
        host: host.into(),
        provisioner_id: provisioner,
        lease_expires_at: Timestamp::from_secs(Timestamp::now().secs_since_epoch + 120),
    }
}

fn sized(tenant: &builtiful_core::Tenant, id: i64, vcpus: u32) -> JobInsert {
    JobInsert {
        vcpus,
        ..job(tenant, id)
    }
}

async fn provisioner(store: &dyn Store, name: &str) -> Uuid {
    let token = builtiful_server::auth::Token::generate("bfp_");
    store
        .create_provisioner_token(name, token.hash(), Timestamp::now())
        .await
        .unwrap()
        .id
}

async fn concurrent_pollers_claim_each_job_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let tenants = [
        tenant(store.as_ref(), "octo-org").await,
        tenant(store.as_ref(), "mona-org").await,
    ];
    let sizes = [2, 4, 8, 16];
    let mut expected = HashSet::new();
    for i in 0..2_000_i64 {
        let t = &tenants[usize::try_from(i % 2).unwrap()];
        let size = sizes[usize::try_from(i % 4).unwrap()];
        let inserted = store
            .insert_job(&sized(t, i + 1, size), Timestamp::now())
            .await
            .unwrap();
        expected.insert(inserted.id);
    }
    let owner = provisioner(store.as_ref(), "fleet").await;
    let mut pollers = tokio::task::JoinSet::new();
    for poller in 0..16_u32 {
        let store = store.clone();
        // Hosts of different sizes: none may get a job larger than it offers.
        let offered = [2, 4, 8, 16][(poller % 4) as usize];
        pollers.spawn(async move {
            let mut claimed = Vec::new();
            let host = format!("host-{poller}");
            loop {
                match store
                    .claim_job(&filter(offered, &host, owner), Timestamp::now())
                    .await
                    .unwrap()
                {
                    Some(job) => {
                        assert!(job.job.vcpus <= offered, "{} > {offered}", job.job.vcpus);
                        assert_eq!(job.job.status, JobStatus::Provisioning);
                        // Named as `webhooks::runner_name` names it, even where the
                        // database spells the name.
                        let claim = job
                            .runner_name
                            .strip_prefix(&format!("builtiful-{}-", job.job.id))
                            .unwrap_or_else(|| panic!("runner name {}", job.runner_name));
                        assert!(
                            claim.len() == 8
                                && claim
                                    .bytes()
                                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                            "runner name {}",
                            job.runner_name
                        );
                        claimed.push(job.job.id);
                    }
                    None => return claimed,
                }
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(claimed) = pollers.join_next().await {
        for id in claimed.unwrap() {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(seen, expected, "every job claimed exactly once");
    common::assert_held_vcpus_exact(&db.url).await;
}

async fn fairness_serves_the_tenant_holding_least(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let busy = tenant(store.as_ref(), "busy-org").await;
    let quiet = tenant(store.as_ref(), "quiet-org").await;
    for i in 0..1_000 {
        store
            .insert_job(&sized(&busy, i + 1, 2), Timestamp::now())
            .await
            .unwrap();
    }
    let single = store
        .insert_job(&sized(&quiet, 5_000, 2), Timestamp::now())
        .await
        .unwrap();
    let owner = provisioner(store.as_ref(), "fleet").await;
    // The busy tenant's oldest job goes first (both hold nothing; its job is older)…
    let first = store
        .claim_job(&filter(2, "h", owner), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.job.tenant_id, busy.id);
    // …then the quiet tenant, which now holds less, despite 999 older jobs of the other.
    let second = store
        .claim_job(&filter(2, "h", owner), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.job.id, single.id);
    let third = store
        .claim_job(&filter(2, "h", owner), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.job.tenant_id, busy.id);
    assert!(third.job.id > first.job.id, "oldest first within a tenant");
}

async fn quotas_and_suspensions_are_respected(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let capped = tenant(store.as_ref(), "capped-org").await;
    common::execute(
        &db.url,
        "UPDATE tenants SET vcpu_quota = 8 WHERE github_login = 'capped-org'",
    )
    .await;
    for i in 0..4 {
        store
            .insert_job(&sized(&capped, i + 1, 4), Timestamp::now())
            .await
            .unwrap();
    }
    let owner = provisioner(store.as_ref(), "fleet").await;
    for _ in 0..2 {
        assert!(
            store
                .claim_job(&filter(64, "h", owner), Timestamp::now())
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(
        store
            .claim_job(&filter(64, "h", owner), Timestamp::now())
            .await
            .unwrap()
            .is_none(),
        "8 vCPUs held: the quota is full"
    );
    let suspended = builtiful_server::store::Installation {
        github_installation_id: capped.github_installation_id,
        github_id: capped.github_id,
        github_login: capped.github_login.clone(),
        suspended: true,
    };
    common::execute(&db.url, "UPDATE tenants SET vcpu_quota = NULL").await;
    store
        .upsert_tenant(&suspended, Timestamp::now())
        .await
        .unwrap();
    assert!(
        store
            .claim_job(&filter(64, "h", owner), Timestamp::now())
            .await
            .unwrap()
            .is_none()
    );
}

async fn waiting_jobs_are_not_claimed(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    store
        .insert_job(
            &JobInsert {
                waiting: true,
                ..job(&octo, 1)
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    let big = store
        .insert_job(&sized(&octo, 2, 16), Timestamp::now())
        .await
        .unwrap();
    let owner = provisioner(store.as_ref(), "fleet").await;
    assert!(
        store
            .claim_job(&filter(8, "h", owner), Timestamp::now())
            .await
            .unwrap()
            .is_none()
    );
    let mut arm = filter(64, "h", owner);
    arm.architecture = CpuArchitecture::Arm64;
    assert!(
        store
            .claim_job(&arm, Timestamp::now())
            .await
            .unwrap()
            .is_none(),
        "other architecture"
    );
    let claimed = store
        .claim_job(&filter(16, "h", owner), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.job.id, big.id);
}

async fn heartbeats_renew_only_held_jobs(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    store
        .insert_job(&job(&octo, 1), Timestamp::now())
        .await
        .unwrap();
    let mine = provisioner(store.as_ref(), "mine").await;
    let other = provisioner(store.as_ref(), "other").await;
    let claimed = store
        .claim_job(&filter(8, "h", mine), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let lease = Timestamp::from_secs(Timestamp::now().secs_since_epoch + 600);
    let id = claimed.job.id;
    assert_eq!(
        store.heartbeat(id, mine, lease).await.unwrap(),
        HeartbeatOutcome::Renewed
    );
    assert_eq!(
        store.heartbeat(id, other, lease).await.unwrap(),
        HeartbeatOutcome::NotHeld
    );
    assert_eq!(
        store.heartbeat(Uuid::now_v7(), mine, lease).await.unwrap(),
        HeartbeatOutcome::NotHeld
    );
    let started = RunnerEvent {
        event: RunnerEventKind::RunnerStarted,
        exit_code: None,
        message: None,
    };
    assert!(
        store
            .record_runner_event(id, mine, &started, Timestamp::now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_runner_event(id, other, &started, Timestamp::now())
            .await
            .unwrap()
    );
    // The workflow was cancelled: the next heartbeat says so.
    assert!(
        store
            .fail_job(
                id,
                JobStatus::Provisioning,
                FailureReason::RunnerLost,
                Timestamp::now()
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.heartbeat(id, mine, lease).await.unwrap(),
        HeartbeatOutcome::Ended
    );
}

fn state(server: &TestServer) -> AppState {
    AppState(server.app.clone())
}

async fn expired_leases_are_requeued_then_fail(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let store = server.app.store.clone();
    let octo = tenant(store.as_ref(), "octo-org").await;
    let inserted = store
        .insert_job(&job(&octo, 1), Timestamp::now())
        .await
        .unwrap();
    let owner = provisioner(store.as_ref(), "fleet").await;
    for attempt in 1..=3 {
        let now = server.app.now();
        let mut f = filter(8, "h", owner);
        f.lease_expires_at = Timestamp::from_secs(now.secs_since_epoch + 120);
        let claimed = store
            .claim_job(&f, now)
            .await
            .unwrap()
            .expect("claimable again");
        assert_eq!(claimed.job.id, inserted.id);
        // The host vanished: no heartbeat for longer than the lease.
        server.clock.advance(Duration::from_secs(121));
        let pass = reconciler::reconcile(&state(&server), Chores::default())
            .await
            .unwrap();
        if attempt < 3 {
            assert_eq!(
                pass,
                Pass {
                    requeued: 1,
                    ..Pass::default()
                },
                "attempt {attempt}"
            );
        } else {
            assert_eq!(
                pass,
                Pass {
                    failed: 1,
                    ..Pass::default()
                }
            );
        }
    }
    let job = store.job_by_workflow_job_id(1).await.unwrap().unwrap().job;
    assert_eq!(
        (job.status, job.failure_reason),
        (JobStatus::Failed, Some(FailureReason::ProvisioningTimeout))
    );
    common::assert_held_vcpus_exact(&server.db.url).await;
}

async fn running_jobs_without_heartbeats_are_lost(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let store = server.app.store.clone();
    let octo = tenant(store.as_ref(), "octo-org").await;
    store
        .insert_job(&job(&octo, 1), Timestamp::now())
        .await
        .unwrap();
    let owner = provisioner(store.as_ref(), "fleet").await;
    let claimed = store
        .claim_job(&filter(8, "h", owner), server.app.now())
        .await
        .unwrap()
        .unwrap();
    common::execute(
        &server.db.url,
        &format!(
            "UPDATE jobs SET status = 'Running', started_at = {}",
            server.app.now().as_micros()
        ),
    )
    .await;
    server.clock.advance(Duration::from_secs(121));
    let pass = reconciler::reconcile(&state(&server), Chores::default())
        .await
        .unwrap();
    assert_eq!(pass.failed, 1);
    let job = store.job_by_workflow_job_id(1).await.unwrap().unwrap().job;
    assert_eq!(
        (job.id, job.status, job.failure_reason),
        (
            claimed.job.id,
            JobStatus::Failed,
            Some(FailureReason::RunnerLost)
        )
    );
}

async fn queue_and_run_time_limits(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let store: Arc<dyn Store> = server.app.store.clone();
    let octo = tenant(store.as_ref(), "octo-org").await;
    let old = store
        .insert_job(&job(&octo, 1), server.app.now())
        .await
        .unwrap();
    let owner = provisioner(store.as_ref(), "fleet").await;
    store
        .insert_job(&job(&octo, 2), server.app.now())
        .await
        .unwrap();
    // Job 2 runs with a 60 s limit.
    let running = store
        .claim_job(&filter(8, "h", owner), server.app.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.job.id, old.id, "oldest first");
    common::execute(
        &server.db.url,
        "UPDATE jobs SET max_run_time = 60 WHERE workflow_job_id = 1",
    )
    .await;
    let now = server.app.now();
    common::execute(
        &server.db.url,
        &format!(
            "UPDATE jobs SET status = 'Running', started_at = {} WHERE workflow_job_id = 1",
            now.as_micros()
        ),
    )
    .await;
    // Keep the running job's lease alive so only the run-time limit applies.
    server.clock.advance(Duration::from_secs(
        60 + reconciler::RUN_TIME_GRACE_SECS + 1,
    ));
    let far = Timestamp::from_secs(server.app.now().secs_since_epoch + 3600);
    store.heartbeat(running.job.id, owner, far).await.unwrap();
    reconciler::reconcile(&state(&server), Chores::default())
        .await
        .unwrap();
    let job = store.job_by_workflow_job_id(1).await.unwrap().unwrap().job;
    assert_eq!(job.failure_reason, Some(FailureReason::MaxRunTimeExceeded));
    assert_eq!(job.duration, Some(60 + reconciler::RUN_TIME_GRACE_SECS + 1));
    // Job 2 has now waited a day.
    server
        .clock
        .advance(Duration::from_secs(reconciler::QUEUE_TIMEOUT_SECS));
    reconciler::reconcile(&state(&server), Chores::default())
        .await
        .unwrap();
    let job = store.job_by_workflow_job_id(2).await.unwrap().unwrap().job;
    assert_eq!(
        (job.status, job.failure_reason),
        (JobStatus::Failed, Some(FailureReason::QueueTimeout))
    );
}

async fn tenant_limits_and_gauges(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let store = server.app.store.clone();
    let octo = tenant(store.as_ref(), "Octo-Org").await;
    assert!(
        store
            .set_tenant_limits("octo-org", 600, Some(4), Timestamp::now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_tenant_limits("nobody", 600, None, Timestamp::now())
            .await
            .unwrap()
    );
    let limited = store
        .insert_job(&sized(&octo, 1, 2), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        limited.max_run_time, 600,
        "new jobs take the tenant's limit"
    );
    for (id, vcpus) in [(2, 2), (3, 4), (4, 16)] {
        store
            .insert_job(&sized(&octo, id, vcpus), Timestamp::now())
            .await
            .unwrap();
    }
    let owner = provisioner(store.as_ref(), "fleet").await;
    let held = store
        .claim_job(&filter(64, "amd64-01", owner), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.job.vcpus, 2);
    let mut depth = store.queue_depth().await.unwrap();
    depth.sort_unstable();
    assert_eq!(
        depth,
        [
            (CpuArchitecture::Amd64, 2, 1),
            (CpuArchitecture::Amd64, 4, 1),
            (CpuArchitecture::Amd64, 16, 1)
        ]
    );
    assert_eq!(
        store.held_vcpus_by_host().await.unwrap(),
        [("amd64-01".to_owned(), 2)]
    );
    common::assert_held_vcpus_exact(&server.db.url).await;
    server
        .app
        .metrics
        .refresh_gauges(store.as_ref())
        .await
        .unwrap();
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"builtiful_queue_depth{architecture="Amd64",vcpus="16"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"builtiful_host_held_vcpus{host="amd64-01"} 2"#),
        "{text}"
    );
}
