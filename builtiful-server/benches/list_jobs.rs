//! Listing jobs at depth: one tenant with 1,000,000 jobs; the first page and a page 500,000
//! deep (reached by cursor), on SQLite and (when `BUILTIFUL_TEST_POSTGRES_URL` is set)
//! PostgreSQL. Prints p50/p99 of the store call (server-side) and of the HTTP round trip.
//!
//! `cargo bench -p builtiful-server --bench list_jobs [-- --jobs N --samples N]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use builtiful_core::{Cursor, Page, PageRequest};
use common::{Backend, TestServer, tenant};
use sqlx::Connection;
use uuid::Uuid;

struct Args {
    jobs: u64,
    samples: usize,
}

fn args() -> Args {
    let mut args = Args {
        jobs: 1_000_000,
        samples: 2_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--jobs" => args.jobs = it.next().and_then(|v| v.parse().ok()).expect("--jobs N"),
            "--samples" => {
                args.samples = it.next().and_then(|v| v.parse().ok()).expect("--samples N");
            }
            _ => {} // cargo bench passes --bench
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

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.3} | {:.3}",
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99))
    )
}

async fn bench(backend: Backend, args: &Args) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let octo = tenant(server.store(), "octo-org").await;
    let (_, token) = server.login("octocat", &[&octo]).await;
    let base_ms: u64 = 1_700_000_000_000;
    let started = Instant::now();
    common::bulk_insert_jobs(&server.db.url, &octo, args.jobs, 4, "Completed", base_ms).await;
    eprintln!(
        "{backend:?}: seeded {} jobs in {:.1?}",
        args.jobs,
        started.elapsed()
    );

    // Newest first: depth d is the job with index jobs - 1 - d.
    let depth = args.jobs / 2;
    let cursor_id = {
        let page = server
            .store()
            .list_jobs(
                octo.id,
                Page {
                    limit: 1,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total_count, args.jobs);
        // Walk to the cursor by SQL rather than by paging half a million times.
        deep_id(&server.db.url, octo.id, depth).await
    };
    let client = server.client(&token);
    for (name, cursor) in [
        ("first page", None),
        ("depth 500,000", Some(Cursor::After(cursor_id))),
    ] {
        let page = Page { limit: 10, cursor };
        let request = PageRequest {
            limit: Some(10),
            starting_after: cursor.map(Cursor::id),
            ending_before: None,
        };
        // Warm up caches and connections.
        for _ in 0..50 {
            server.store().list_jobs(octo.id, page).await.unwrap();
            client.jobs(octo.id, &request).await.unwrap();
        }
        let mut store_times = Vec::with_capacity(args.samples);
        let mut http_times = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let t = Instant::now();
            let list = server.store().list_jobs(octo.id, page).await.unwrap();
            store_times.push(t.elapsed());
            assert_eq!(list.jobs.len(), 10);
            let t = Instant::now();
            client.jobs(octo.id, &request).await.unwrap();
            http_times.push(t.elapsed());
        }
        println!(
            "| {backend:?} | {} | {name} | {} | {} |",
            args.jobs,
            summary(store_times),
            summary(http_times)
        );
    }
    server.stop().await;
}

async fn deep_id(url: &str, tenant_id: Uuid, depth: u64) -> Uuid {
    let sql = "SELECT id FROM jobs WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2";
    let offset = i64::try_from(depth).unwrap();
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql)
            .bind(tenant_id)
            .bind(offset)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql)
            .bind(tenant_id)
            .bind(offset)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    println!("| backend | jobs | page | store p50 ms | store p99 ms | HTTP p50 ms | HTTP p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    bench(Backend::Sqlite, &args).await;
    bench(Backend::Postgres, &args).await;
}
