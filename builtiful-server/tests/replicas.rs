//! Several servers on one PostgreSQL: claims never overlap, a signal published by one wakes
//! the long-polls of another, and one reconciler leads at a time. (PostgreSQL only: a SQLite
//! database belongs to one server.)

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use builtiful_core::{CpuArchitecture, Timestamp};
use builtiful_server::store::{ClaimFilter, Store};
use common::{Backend, TestDb, job, tenant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn two_replicas() -> Option<(TestDb, Arc<dyn Store>, Arc<dyn Store>)> {
    let db = TestDb::new(Backend::Postgres).await?;
    let first = db.store().await;
    let second = db.store().await;
    Some((db, first, second))
}

fn filter(host: &str, provisioner: Uuid) -> ClaimFilter {
    ClaimFilter {
        architecture: CpuArchitecture::Amd64,
        available_vcpus: 64,
        host: host.into(),
        provisioner_id: provisioner,
        lease_expires_at: Timestamp::from_secs(Timestamp::now().secs_since_epoch + 120),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_across_replicas_never_overlap() {
    let Some((_db, first, second)) = two_replicas().await else {
        return;
    };
    let octo = tenant(first.as_ref(), "octo-org").await;
    for id in 1..=500 {
        first
            .insert_job(&job(&octo, id), Timestamp::now())
            .await
            .unwrap();
    }
    let token = builtiful_server::auth::Token::generate("bfp_");
    let owner = first
        .create_provisioner_token("fleet", token.hash(), Timestamp::now())
        .await
        .unwrap()
        .id;
    let mut pollers = tokio::task::JoinSet::new();
    for poller in 0..8 {
        let store = if poller % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        pollers.spawn(async move {
            let mut claimed = Vec::new();
            while let Some(job) = store
                .claim_job(&filter(&format!("h{poller}"), owner), Timestamp::now())
                .await
                .unwrap()
            {
                claimed.push(job.job.id);
            }
            claimed
        });
    }
    let mut seen = HashSet::new();
    while let Some(claimed) = pollers.join_next().await {
        for id in claimed.unwrap() {
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_on_one_replica_wakes_the_other() {
    let Some((_db, first, second)) = two_replicas().await else {
        return;
    };
    let notify = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let listener = {
        let (second, notify, shutdown) = (second.clone(), notify.clone(), shutdown.clone());
        tokio::spawn(async move { second.listen_for_jobs_signal(notify, shutdown).await })
    };
    // The listener wakes once when it connects; wait for that, then for the real signal.
    tokio::time::timeout(Duration::from_secs(10), notify.notified())
        .await
        .unwrap();
    let woken = notify.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    first.publish_jobs_signal().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the other replica was woken");
    shutdown.cancel();
    listener.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reconciler_leads() {
    let Some((_db, first, second)) = two_replicas().await else {
        return;
    };
    assert!(first.try_lead().await.unwrap());
    assert!(first.try_lead().await.unwrap(), "the leader keeps leading");
    assert!(!second.try_lead().await.unwrap());
    // The leader shuts down: its session ends and the lock with it.
    first.close().await;
    let mut led = false;
    for _ in 0..50 {
        if second.try_lead().await.unwrap() {
            led = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(led, "the other replica took over");
}
