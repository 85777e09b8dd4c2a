//! Dispatch under load, on SQLite and (with `BUILTIFUL_TEST_POSTGRES_URL`) PostgreSQL:
//!
//! - claims per second and claim latency with 32 concurrent pollers over 10,000 queued jobs,
//!   both through the store directly (the claim SQL) and over HTTP (`GET /provisioner/jobs`,
//!   which also mints each job's JIT runner config at the simulated GitHub);
//! - an empty poll's latency with 100,000 queued jobs none of which fit;
//! - dispatch latency: from a `queued` webhook's 202 to a long-polling host holding the job.
//!
//! `cargo bench -p builtiful-server --bench dispatch [-- --jobs N --pollers N --samples N]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use builtiful_core::{ClaimRequest, CpuArchitecture, Timestamp};
use builtiful_server::store::{ClaimFilter, Store};
use common::{Backend, TestServer, tenant};
use uuid::Uuid;

struct Args {
    jobs: u64,
    http_jobs: u64,
    pollers: usize,
    samples: usize,
    empty_queue: u64,
}

fn args() -> Args {
    let mut args = Args {
        jobs: 10_000,
        // Each HTTP claim registers a JIT runner, and GitHub allows an installation 5,000
        // requests an hour (the simulator too): stay under that.
        http_jobs: 4_000,
        pollers: 32,
        samples: 1_000,
        empty_queue: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match arg.as_str() {
            "--jobs" => args.jobs = value(),
            "--http-jobs" => args.http_jobs = value(),
            "--pollers" => args.pollers = usize::try_from(value()).unwrap(),
            "--samples" => args.samples = usize::try_from(value()).unwrap(),
            "--empty-queue" => args.empty_queue = value(),
            _ => {}
        }
    }
    args
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(mut samples: Vec<Duration>, elapsed: Duration) -> Figures {
    samples.sort();
    #[allow(clippy::cast_precision_loss)]
    let per_second = samples.len() as f64 / elapsed.as_secs_f64();
    Figures {
        per_second,
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
    }
}

fn filter(vcpus: u32, provisioner: Uuid, poller: usize) -> ClaimFilter {
    ClaimFilter {
        architecture: CpuArchitecture::Amd64,
        available_vcpus: vcpus,
        host: format!("bench-{poller}"),
        provisioner_id: provisioner,
        lease_expires_at: Timestamp::from_secs(Timestamp::now().secs_since_epoch + 600),
    }
}

/// Milliseconds since the epoch, `ago_ms` ago. Seeded jobs must look recent: the reconciler
/// fails jobs queued over a day ago.
fn recent_ms(ago_ms: u64) -> u64 {
    u64::try_from(Timestamp::now().as_micros() / 1000).unwrap() - ago_ms
}

/// Seeds `jobs` queued 2-vCPU jobs over ten tenants.
async fn seed_queue(server: &TestServer, jobs: u64, base_ms: u64) {
    let per_tenant = jobs / 10;
    for t in 0..10 {
        let org = tenant(server.store(), &format!("bench-org-{t}")).await;
        common::bulk_insert_jobs(
            &server.db.url,
            &org,
            per_tenant,
            2,
            "Queued",
            base_ms + t * per_tenant,
        )
        .await;
    }
}

async fn store_claims(server: &TestServer, args: &Args, provisioner: Uuid) -> Figures {
    let store: Arc<dyn Store> = server.app.store.clone();
    let started = Instant::now();
    let mut pollers = tokio::task::JoinSet::new();
    for poller in 0..args.pollers {
        let store = store.clone();
        pollers.spawn(async move {
            let mut times = Vec::new();
            loop {
                let t = Instant::now();
                let claimed = store
                    .claim_job(&filter(64, provisioner, poller), Timestamp::now())
                    .await
                    .unwrap();
                if claimed.is_none() {
                    return times;
                }
                times.push(t.elapsed());
            }
        });
    }
    let mut times = Vec::new();
    while let Some(result) = pollers.join_next().await {
        times.extend(result.unwrap());
    }
    assert_eq!(times.len() as u64, args.jobs, "every job claimed once");
    figures(times, started.elapsed())
}

async fn http_claims(server: &TestServer, args: &Args, token: &str) -> Figures {
    let started = Instant::now();
    let mut pollers = tokio::task::JoinSet::new();
    for poller in 0..args.pollers {
        let client = server.client(token);
        pollers.spawn(async move {
            let request = ClaimRequest {
                available_vcpus: 64,
                cpu_architecture: CpuArchitecture::Amd64,
                host: format!("bench-{poller}"),
                wait: None,
            };
            let mut times = Vec::new();
            loop {
                let t = Instant::now();
                match client.claim_job(&request).await.unwrap() {
                    Some(_) => times.push(t.elapsed()),
                    None => return times,
                }
            }
        });
    }
    let mut times = Vec::new();
    while let Some(result) = pollers.join_next().await {
        times.extend(result.unwrap());
    }
    assert_eq!(times.len() as u64, args.http_jobs, "every job claimed once");
    figures(times, started.elapsed())
}

async fn empty_polls(
    server: &TestServer,
    args: &Args,
    provisioner: Uuid,
    token: &str,
) -> (Figures, Figures) {
    let org = tenant(server.store(), "big-jobs-org").await;
    common::bulk_insert_jobs(
        &server.db.url,
        &org,
        args.empty_queue,
        64,
        "Queued",
        1_600_000_000_000,
    )
    .await;
    let store = server.app.store.clone();
    let client = server.client(token);
    let request = ClaimRequest {
        available_vcpus: 2,
        cpu_architecture: CpuArchitecture::Amd64,
        host: "small-host".into(),
        wait: None,
    };
    let (mut direct, mut http) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..args.samples {
        let t = Instant::now();
        assert!(
            store
                .claim_job(&filter(2, provisioner, 0), Timestamp::now())
                .await
                .unwrap()
                .is_none()
        );
        direct.push(t.elapsed());
    }
    let direct_elapsed = started.elapsed();
    let started = Instant::now();
    for _ in 0..args.samples {
        let t = Instant::now();
        assert!(client.claim_job(&request).await.unwrap().is_none());
        http.push(t.elapsed());
    }
    (
        figures(direct, direct_elapsed),
        figures(http, started.elapsed()),
    )
}

/// From a `queued` webhook's 202 to a long-polling host holding the job.
async fn dispatch_latency(server: &TestServer, token: &str, samples: usize) -> Figures {
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(samples);
    let started = Instant::now();
    for sample in 0..samples {
        let client = server.client(token);
        let poll = tokio::spawn(async move {
            let request = ClaimRequest {
                available_vcpus: 2,
                cpu_architecture: CpuArchitecture::Amd64,
                host: "waiting-host".into(),
                wait: Some(30),
            };
            let job = client.claim_job(&request).await.unwrap();
            (Instant::now(), job)
        });
        // Let the poll find the queue empty and park.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let id = 8_000_000_000 + i64::try_from(sample).unwrap();
        let body = serde_json::to_vec(&serde_json::json!({
            "action": "queued",
            "workflow_job": {"id": id, "labels": ["builtiful(ubuntu)"], "status": "queued"},
            "repository": {"name": "app", "full_name": "octo-org/app", "owner": {"login": "octo-org", "id": 6_811_672}},
            "sender": {"login": "octocat", "id": 583_231},
            "installation": {"id": 4_410_001},
        }))
        .unwrap();
        let response = http
            .post(server.url("/webhooks/github"))
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", Uuid::new_v4().to_string())
            .header(
                "x-hub-signature-256",
                builtiful_server::webhooks::signature::sign(
                    common::WEBHOOK_SECRET.as_bytes(),
                    &body,
                ),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let accepted = Instant::now();
        let (held, job) = poll.await.unwrap();
        assert!(job.is_some(), "the long-poll got the job");
        times.push(held.saturating_duration_since(accepted));
    }
    figures(times, started.elapsed())
}

async fn bench(backend: Backend, args: &Args) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let token = builtiful_server::auth::Token::generate("bfp_");
    let provisioner = server
        .store()
        .create_provisioner_token("bench", token.hash(), Timestamp::now())
        .await
        .unwrap()
        .id;
    let name = format!("{backend:?}");

    // Each seeding gets its own range of ids and times, all within the last few minutes.
    seed_queue(
        &server,
        args.jobs,
        recent_ms(3 * args.empty_queue.max(args.jobs)),
    )
    .await;
    let direct = store_claims(&server, args, provisioner).await;
    println!(
        "| {name} | claim, direct SQL | {} pollers, {} jobs | {:.0}/s | {:.2} | {:.2} |",
        args.pollers,
        args.jobs,
        direct.per_second,
        ms(direct.p50),
        ms(direct.p99)
    );
    // Over HTTP each claim also registers a JIT runner at the simulated GitHub, which knows
    // only the sandbox's organisations: queue these in octo-org/app.
    let seeded = builtiful_server::sandbox::seed(server.store(), Timestamp::now())
        .await
        .unwrap();
    let base = recent_ms(2 * args.empty_queue.max(args.jobs));
    common::bulk_insert_jobs(
        &server.db.url,
        &seeded.tenants[0],
        args.http_jobs,
        2,
        "Queued",
        base,
    )
    .await;
    let http = http_claims(&server, args, token.expose()).await;
    println!(
        "| {name} | claim, HTTP + JIT mint | {} pollers, {} jobs | {:.0}/s ({:.0}% of direct) | {:.2} | {:.2} |",
        args.pollers,
        args.http_jobs,
        http.per_second,
        100.0 * http.per_second / direct.per_second,
        ms(http.p50),
        ms(http.p99)
    );
    let latency = dispatch_latency(&server, token.expose(), 100).await;
    println!(
        "| {name} | dispatch latency, webhook 202 → long-poll holds the job | 100 jobs | – | {:.2} | {:.2} |",
        ms(latency.p50),
        ms(latency.p99)
    );
    let (direct, http) = empty_polls(&server, args, provisioner, token.expose()).await;
    println!(
        "| {name} | empty poll, direct SQL | {} queued, none fit | {:.0}/s | {:.2} | {:.2} |",
        args.empty_queue,
        direct.per_second,
        ms(direct.p50),
        ms(direct.p99)
    );
    println!(
        "| {name} | empty poll, HTTP | {} queued, none fit | {:.0}/s | {:.2} | {:.2} |",
        args.empty_queue,
        http.per_second,
        ms(http.p50),
        ms(http.p99)
    );
    server.stop().await;
}

#[tokio::main]
async fn main() {
    let args = args();
    println!("| backend | measure | load | rate | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    bench(Backend::Sqlite, &args).await;
    bench(Backend::Postgres, &args).await;
}
