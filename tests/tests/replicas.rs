//! Server replicas as an operator runs them behind a load balancer: two real `builtiful-server
//! serve --sandbox` processes on one PostgreSQL database (DESIGN.md, "Storage": claims use
//! `FOR UPDATE SKIP LOCKED`, long-poll wake-ups cross replicas via `LISTEN/NOTIFY`). Hosts
//! polling both drain one queue and no job is claimed twice; a job queued through one server
//! wakes a long-poll waiting on the other at once, not at its periodic recheck.
//!
//! Jobs are queued as GitHub queues them, by signed `workflow_job` webhooks POSTed to either
//! server; hosts claim them through either with `GET /provisioner/jobs`. Each sandbox process
//! has its own simulated GitHub, seeded with the same organisations and installation ids, so a
//! claim through either server registers its JIT runner at that server's simulator. Both share
//! the webhook secret and the signing secret, as replicas must, and one provisioner token.
//!
//! Skipped, with a note, unless `BUILTIFUL_TEST_POSTGRES_URL` names a PostgreSQL server the
//! test may create a database on (the database is made for the run and dropped after it).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use builtiful_core::{ClaimRequest, Client, CpuArchitecture, JobStatus, NewJob, Os, Timestamp};
use builtiful_server::sandbox::{ORGS, SeedOrg};
use builtiful_server::store::JobInsert;
use builtiful_server::webhooks::signature;
use builtiful_tests::{PostgresDb, Sandbox, SandboxOptions, wait_for};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The server under test, built from this checkout with the test.
const SERVER: &str = env!("CARGO_BIN_EXE_e2e-builtiful-server");

/// The webhook secret both replicas check deliveries with.
const WEBHOOK_SECRET: &str = "replicas-webhook-secret";

/// How often a waiting long-poll looks again without a signal: the server's
/// `dispatch::RECHECK_INTERVAL` (private there). A long-poll that returns a job queued after it
/// began, sooner than this after it began, was woken by a signal; the other server's is the
/// only one sent.
const RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The two servers' names in messages.
const NAMES: [&str; 2] = ["a", "b"];

/// Jobs drained through both servers at once.
const JOBS: usize = 40;

/// Hosts polling each server.
const POLLERS: usize = 3;

/// Two sandbox servers on one fresh PostgreSQL database, and a provisioner token for both.
struct Replicas {
    servers: [Sandbox; 2],
    token: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    _shared: tempfile::TempDir,
    // Last, so it is dropped after the servers are killed.
    _db: PostgresDb,
}

impl Replicas {
    fn start(db: PostgresDb) -> Self {
        let shared = tempfile::tempdir().unwrap();
        let secret = shared.path().join("secret");
        std::fs::write(&secret, "5f175efdd6f563f9".repeat(4)).unwrap();
        let options = SandboxOptions {
            database_url: Some(db.url.clone()),
            server: Some(SERVER.into()),
            args: vec![
                "--github-webhook-secret".into(),
                WEBHOOK_SECRET.into(),
                "--secret-file".into(),
                secret.display().to_string(),
            ],
        };
        // One after the other: each seeds the same organisations and users as it starts.
        let a = Sandbox::start_with(options.clone());
        let b = Sandbox::start_with(options);
        // Made after both started: each sandbox start replaces the token of its banner.
        let token = a.provisioner_token("fleet");
        // Both servers LISTEN (on a connection of their own, opened after they serve) before
        // anything is queued.
        wait_for("both servers to LISTEN", Duration::from_secs(20), || {
            let rows = a.sql(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN %'",
            );
            let listening: u32 = rows[0][0].as_deref().unwrap().parse().unwrap();
            (listening >= 2).then_some(())
        });
        Self {
            servers: [a, b],
            token,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::new(),
            _shared: shared,
            _db: db,
        }
    }

    /// A provisioner's client of server `side`.
    fn client(&self, side: usize) -> Client {
        Client::builder(&self.servers[side].url)
            .token(&self.token)
            .build()
            .unwrap()
    }

    /// Queues workflow job `id` of `org` through server `side`, as GitHub does: a signed
    /// `workflow_job` `queued` webhook (the server signals waiting long-polls before it
    /// answers).
    async fn queue(&self, side: usize, org: &SeedOrg, id: i64) {
        let body = serde_json::to_vec(&queued_event(org, id)).unwrap();
        let response = self
            .http
            .post(format!("{}/webhooks/github", self.servers[side].url))
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", format!("replicas-{id}"))
            .header(
                "x-hub-signature-256",
                signature::sign(WEBHOOK_SECRET.as_bytes(), &body),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202, "{response:?}");
    }

    /// Starts a long-poll (`wait=30`) on server `side` as host `host`, and returns it once it
    /// waits, with when it began.
    fn long_poll(
        &self,
        side: usize,
        host: &str,
    ) -> (JoinHandle<(Option<NewJob>, Instant)>, Instant) {
        let client = self.client(side);
        let request = claim_request(host, 30);
        let began = Instant::now();
        let poll = self.runtime.spawn(async move {
            let job = client.claim_job(&request).await.unwrap();
            (job, Instant::now())
        });
        // The server records a host just before a poll's first look.
        wait_for("the long-poll to arrive", Duration::from_secs(10), || {
            let rows =
                self.servers[0].sql(&format!("SELECT COUNT(*) FROM hosts WHERE name = '{host}'"));
            (rows[0][0].as_deref() == Some("1")).then_some(())
        });
        // Room for that look to end: from then on only a wake-up or a recheck finds a job.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !poll.is_finished(),
            "nothing is queued: the long-poll waits"
        );
        (poll, began)
    }

    /// The jobs in the database: id → (status, host).
    fn jobs(&self) -> HashMap<String, (String, Option<String>)> {
        self.servers[0]
            .sql("SELECT id::text, status, host FROM jobs")
            .into_iter()
            .map(|row| {
                let mut row = row.into_iter();
                let id = row.next().flatten().unwrap();
                let status = row.next().flatten().unwrap();
                (id, (status, row.next().flatten()))
            })
            .collect()
    }

    /// The id of the job of workflow job `workflow_job_id`.
    fn job_id(&self, workflow_job_id: i64) -> String {
        let rows = self.servers[0].sql(&format!(
            "SELECT id::text FROM jobs WHERE workflow_job_id = {workflow_job_id}"
        ));
        rows[0][0].clone().unwrap()
    }
}

/// A `workflow_job` `queued` event in GitHub's shape, for a 2-vCPU job of `org`'s first
/// repository.
fn queued_event(org: &SeedOrg, id: i64) -> serde_json::Value {
    let repository = org.repositories[0];
    serde_json::json!({
        "action": "queued",
        "workflow_job": {
            "id": id,
            "run_id": 7_000_000_000_i64 + id,
            "run_attempt": 1,
            "name": "build",
            "workflow_name": "CI",
            "head_branch": "main",
            "head_sha": "0123456789abcdef0123456789abcdef01234567",
            "labels": ["builtiful(ubuntu,2cpu)"],
            "status": "queued",
            "conclusion": null,
            "created_at": "2026-12-04T10:00:00Z",
            "started_at": "2026-12-04T10:00:00Z",
            "completed_at": null,
            "runner_id": null,
            "runner_name": null,
            "runner_group_id": null,
            "runner_group_name": null,
        },
        "repository": {
            "id": org.github_id * 10,
            "name": repository,
            "full_name": format!("{}/{repository}", org.login),
            "owner": {"login": org.login, "id": org.github_id, "type": "Organization"},
        },
        "organization": {"login": org.login, "id": org.github_id},
        "sender": {"login": "octocat", "id": 583_231},
        "installation": {"id": org.installation_id},
    })
}

fn claim_request(host: &str, wait: i64) -> ClaimRequest {
    ClaimRequest {
        available_vcpus: 64,
        cpu_architecture: CpuArchitecture::Amd64,
        host: host.to_owned(),
        wait: Some(wait),
    }
}

#[test]
fn two_servers_on_one_postgres_share_one_queue() {
    let Some(db) = PostgresDb::create("two_servers_on_one_postgres_share_one_queue") else {
        return;
    };
    let started = Instant::now();
    let replicas = Replicas::start(db);
    eprintln!("two servers up and listening in {:?}", started.elapsed());

    // 1. Forty jobs of both organisations, queued through both servers; three hosts polling
    // each server drain the queue at once. Every job is claimed exactly once.
    replicas.runtime.block_on(async {
        for n in 0..JOBS {
            let id = 1_000 + i64::try_from(n).unwrap();
            replicas.queue(n % 2, &ORGS[n / 2 % 2], id).await;
        }
    });
    assert_eq!(replicas.jobs().len(), JOBS);
    let draining = Instant::now();
    let total = Arc::new(AtomicUsize::new(0));
    let mut pollers = tokio::task::JoinSet::new();
    for (side, name) in NAMES.iter().enumerate() {
        for n in 0..POLLERS {
            let client = replicas.client(side);
            let host = format!("{name}-{n}");
            let total = total.clone();
            pollers.spawn_on(
                async move {
                    let (mut claimed, mut empty) = (Vec::new(), 0);
                    let deadline = Instant::now() + Duration::from_mins(1);
                    loop {
                        let request = claim_request(&host, 0);
                        if let Some(job) = client.claim_job(&request).await.unwrap() {
                            claimed.push(job.id.to_string());
                            total.fetch_add(1, Ordering::SeqCst);
                        } else if total.load(Ordering::SeqCst) >= JOBS {
                            break;
                        } else {
                            // Some claims are not in yet: others may be taking the last jobs
                            // now, or a job is left that no poll can claim. Look again.
                            empty += 1;
                            assert!(
                                Instant::now() < deadline,
                                "{} of {JOBS} jobs claimed; {host} finds none",
                                total.load(Ordering::SeqCst)
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    (side, host, claimed, empty)
                },
                replicas.runtime.handle(),
            );
        }
    }
    let mut holders: HashMap<String, String> = HashMap::new();
    let (mut per_server, mut empty_polls) = ([0; 2], 0);
    while let Some(done) = replicas.runtime.block_on(pollers.join_next()) {
        let (side, host, claimed, empty) =
            done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        per_server[side] += claimed.len();
        empty_polls += empty;
        for id in claimed {
            if let Some(first) = holders.insert(id.clone(), host.clone()) {
                panic!("job {id} claimed twice: by {first} and by {host}");
            }
        }
    }
    eprintln!(
        "{JOBS} jobs drained in {:?}: {} through a, {} through b; {empty_polls} polls answered \
         null before all claims were in",
        draining.elapsed(),
        per_server[0],
        per_server[1]
    );
    assert!(
        per_server.iter().all(|&n| n > 0),
        "both servers hand out jobs: {per_server:?}"
    );
    let jobs = replicas.jobs();
    assert_eq!(holders.len(), jobs.len(), "every job was claimed");
    for (id, (status, host)) in &jobs {
        assert_eq!(status, "Provisioning", "{id}");
        assert_eq!(
            host.as_ref(),
            holders.get(id),
            "{id} is held by the host it was handed to"
        );
    }

    // 2. A long-poll waits on one server, with nothing queued; a job queued through the other
    // wakes it: it returns that job before its first recheck could have found it. Both ways.
    for (waiter, queuer, workflow_job_id) in [(1, 0, 2_001), (0, 1, 2_002)] {
        let (poll, polled) = replicas.long_poll(waiter, &format!("waiter-{}", NAMES[waiter]));
        let queued = Instant::now();
        replicas
            .runtime
            .block_on(replicas.queue(queuer, &ORGS[0], workflow_job_id));
        let (job, returned) = replicas.runtime.block_on(poll).unwrap();
        let after_poll = returned - polled;
        eprintln!(
            "a job queued through {} woke the long-poll on {} after {:?} ({after_poll:?} \
             after it began)",
            NAMES[queuer],
            NAMES[waiter],
            returned - queued
        );
        let job = job.expect("the long-poll returns the job");
        assert_eq!(job.id.to_string(), replicas.job_id(workflow_job_id));
        assert!(
            after_poll < RECHECK_INTERVAL,
            "the job queued through {} {:?} after the long-poll on {} began reached it only \
             {after_poll:?} after it began, no sooner than its periodic recheck: the wake-up \
             did not cross servers",
            NAMES[queuer],
            queued - polled,
            NAMES[waiter]
        );
    }

    // 3. The control: a job that comes with no signal at all (written to the database
    // directly, as if the signal were lost) is found by the periodic recheck, which comes
    // no sooner than RECHECK_INTERVAL after the poll began. So the bound above tells a wake-up
    // from a recheck, and stays true to the server's interval.
    let (poll, polled) = replicas.long_poll(1, "control-b");
    let queued = Instant::now();
    let id = replicas.runtime.block_on(async {
        let url = replicas.servers[0].database_url();
        let store = builtiful_server::store::connect(&url).await.unwrap();
        let tenant = store
            .tenant_by_installation(ORGS[0].installation_id)
            .await
            .unwrap()
            .unwrap();
        let job = store
            .insert_job(&unsignalled_job(tenant.id, 3_001), Timestamp::now())
            .await
            .unwrap();
        store.close().await;
        job.id
    });
    let (job, returned) = replicas.runtime.block_on(poll).unwrap();
    let after_poll = returned - polled;
    eprintln!(
        "a job queued without a signal reached the long-poll on b after {:?} ({after_poll:?} \
         after it began)",
        returned - queued
    );
    assert_eq!(job.expect("the recheck finds the job").id, id);
    assert!(
        after_poll >= RECHECK_INTERVAL,
        "an unsignalled job reached the long-poll {after_poll:?} after it began: the server \
         rechecks more often than RECHECK_INTERVAL ({RECHECK_INTERVAL:?}) says; lower it here"
    );
    eprintln!("done in {:?}", started.elapsed());
}

/// A queued job as the webhook of workflow job `id` would record it.
fn unsignalled_job(tenant_id: Uuid, id: i64) -> JobInsert {
    JobInsert {
        tenant_id,
        workflow_job_id: id,
        repository: format!("{}/{}", ORGS[0].login, ORGS[0].repositories[0]),
        initiator: "octocat".into(),
        initiator_github_id: 583_231,
        cpu_architecture: CpuArchitecture::Amd64,
        os: Os::Ubuntu2404,
        label: "builtiful(ubuntu,2cpu)".into(),
        vcpus: 2,
        status: JobStatus::Queued,
        failure_reason: None,
        waiting: false,
        started_at: None,
        completed_at: None,
        workflow_job: queued_event(&ORGS[0], id)["workflow_job"].clone(),
    }
}
