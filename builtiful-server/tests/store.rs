//! Store conformance: the same behaviour on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use builtiful_core::{Cursor, FailureReason, JobStatus, Page, Timestamp};
use builtiful_server::auth::{Token, hash_token};
use builtiful_server::store::StoreError;
use common::{Backend, TestDb, insert_jobs, job, tenant, user};
use uuid::Uuid;

conformance!(
    users_are_keyed_on_github_id,
    tenants_follow_their_installation,
    memberships_scope_tenants,
    sessions_expire_and_end,
    jobs_are_counted_and_paged_by_cursor,
    cursors_must_belong_to_the_tenant,
    failed_jobs_are_recorded_as_final,
    concurrent_inserts_keep_the_count_exact,
    workflow_jobs_are_unique,
    provisioner_tokens,
    email_links_work_once,
    purge_removes_only_expired_rows,
);

fn page(limit: u32, cursor: Option<Cursor>) -> Page {
    Page { limit, cursor }
}

async fn users_are_keyed_on_github_id(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let first = user(store.as_ref(), "octocat").await;
    // The same GitHub id under a new login is the same person.
    let mut profile = builtiful_server::store::UserProfile {
        github_id: first.github_id,
        github_login: "octocat-renamed".into(),
        github_name: None,
        email: None,
    };
    let later = Timestamp::from_micros(first.updated_at.as_micros() + 1_000_000);
    let renamed = store.upsert_user(&profile, later).await.unwrap();
    assert_eq!(renamed.id, first.id);
    assert_eq!(renamed.github_login, "octocat-renamed");
    assert_eq!(renamed.created_at, first.created_at);
    assert_eq!(renamed.updated_at, later);
    assert_eq!(renamed.email, None);
    assert_eq!(store.user(first.id).await.unwrap(), Some(renamed));
    assert_eq!(store.user(Uuid::now_v7()).await.unwrap(), None);
    profile.github_id += 1;
    assert_ne!(
        store.upsert_user(&profile, later).await.unwrap().id,
        first.id
    );
}

async fn tenants_follow_their_installation(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let org = tenant(store.as_ref(), "octo-org").await;
    assert!(!org.github_installation_suspended);
    assert_eq!(org.email, None);
    let suspended = store
        .upsert_tenant(
            &builtiful_server::store::Installation {
                github_installation_id: org.github_installation_id,
                github_id: org.github_id,
                github_login: "Octo-Org".into(),
                suspended: true,
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert_eq!(suspended.id, org.id);
    assert!(suspended.github_installation_suspended);
    assert_eq!(suspended.github_login, "Octo-Org");
    store
        .set_tenant_email(org.id, "ops@octo.example", Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        store
            .tenant(org.id)
            .await
            .unwrap()
            .unwrap()
            .email
            .as_deref(),
        Some("ops@octo.example")
    );
}

async fn memberships_scope_tenants(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    let mona = tenant(store.as_ref(), "mona-org").await;
    let zeta = tenant(store.as_ref(), "Zeta-org").await;
    let octocat = user(store.as_ref(), "octocat").await;

    store
        .set_memberships(octocat.id, &[zeta.id, octo.id])
        .await
        .unwrap();
    let logins: Vec<_> = store
        .tenants_of_user(octocat.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.github_login)
        .collect();
    assert_eq!(logins, ["octo-org", "Zeta-org"]);
    assert!(
        store
            .tenant_of_user(octocat.id, octo.id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .tenant_of_user(octocat.id, mona.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .tenant_of_user(octocat.id, Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );

    // Replacing the set removes what is gone.
    store.set_memberships(octocat.id, &[mona.id]).await.unwrap();
    assert!(
        store
            .tenant_of_user(octocat.id, octo.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.tenants_of_user(octocat.id).await.unwrap(), [mona]);
    store.set_memberships(octocat.id, &[]).await.unwrap();
    assert!(store.tenants_of_user(octocat.id).await.unwrap().is_empty());
}

async fn sessions_expire_and_end(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octocat = user(store.as_ref(), "octocat").await;
    let now = Timestamp::now();
    let token = builtiful_server::auth::start_session(store.as_ref(), octocat.id, now)
        .await
        .unwrap();
    let hash = hash_token(token.expose());
    assert_eq!(
        store.session_user(hash, now).await.unwrap(),
        Some(octocat.clone())
    );
    let after_30_days = Timestamp::from_secs(now.secs_since_epoch + 30 * 24 * 3600 + 1);
    assert_eq!(store.session_user(hash, after_30_days).await.unwrap(), None);
    let unknown = Token::generate("bfs_").hash();
    assert_eq!(store.session_user(unknown, now).await.unwrap(), None);

    assert!(store.delete_session(hash).await.unwrap());
    assert!(!store.delete_session(hash).await.unwrap());
    assert_eq!(store.session_user(hash, now).await.unwrap(), None);

    for _ in 0..3 {
        builtiful_server::auth::start_session(store.as_ref(), octocat.id, now)
            .await
            .unwrap();
    }
    assert_eq!(store.delete_user_sessions(octocat.id).await.unwrap(), 3);
}

async fn jobs_are_counted_and_paged_by_cursor(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    let mona = tenant(store.as_ref(), "mona-org").await;
    let jobs = insert_jobs(store.as_ref(), &octo, 1, 25).await;
    insert_jobs(store.as_ref(), &mona, 100, 3).await;
    let newest_first: Vec<Uuid> = jobs.iter().rev().map(|j| j.id).collect();

    let first = store.list_jobs(octo.id, page(10, None)).await.unwrap();
    assert_eq!(first.total_count, 25);
    let ids: Vec<Uuid> = first.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, newest_first[..10]);
    assert_eq!(
        first.jobs[0], jobs[24],
        "a listed job equals the inserted one"
    );

    let second = store
        .list_jobs(octo.id, page(10, Some(Cursor::After(ids[9]))))
        .await
        .unwrap();
    let second_ids: Vec<Uuid> = second.jobs.iter().map(|j| j.id).collect();
    assert_eq!(second_ids, newest_first[10..20]);

    let last = store
        .list_jobs(octo.id, page(10, Some(Cursor::After(second_ids[9]))))
        .await
        .unwrap();
    assert_eq!(last.jobs.len(), 5);
    assert_eq!(last.jobs[4].id, jobs[0].id);

    // Back from the third page: the page before its first item is the second page, newest first.
    let back = store
        .list_jobs(octo.id, page(10, Some(Cursor::Before(last.jobs[0].id))))
        .await
        .unwrap();
    assert_eq!(
        back.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        second_ids
    );
    // Before the newest job there is nothing.
    let none = store
        .list_jobs(octo.id, page(10, Some(Cursor::Before(newest_first[0]))))
        .await
        .unwrap();
    assert!(none.jobs.is_empty());
    assert_eq!(none.total_count, 25);
    // A short page near the top when going back.
    let top = store
        .list_jobs(octo.id, page(10, Some(Cursor::Before(newest_first[3]))))
        .await
        .unwrap();
    assert_eq!(
        top.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        newest_first[..3]
    );

    assert_eq!(
        store
            .list_jobs(mona.id, page(100, None))
            .await
            .unwrap()
            .total_count,
        3
    );
    let empty = tenant(store.as_ref(), "empty-org").await;
    let nothing = store.list_jobs(empty.id, page(10, None)).await.unwrap();
    assert!(nothing.jobs.is_empty());
    assert_eq!(nothing.total_count, 0);
}

async fn cursors_must_belong_to_the_tenant(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    let mona = tenant(store.as_ref(), "mona-org").await;
    let monas = insert_jobs(store.as_ref(), &mona, 1, 1).await;
    for cursor in [
        Cursor::After(monas[0].id),
        Cursor::Before(monas[0].id),
        Cursor::After(Uuid::now_v7()),
    ] {
        let error = store
            .list_jobs(octo.id, page(10, Some(cursor)))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::UnknownCursor(id) if id == cursor.id()),
            "{error}"
        );
    }
}

async fn failed_jobs_are_recorded_as_final(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    let mut failed = job(&octo, 7);
    failed.label = "builtiful(ubuntu,3cpu)".into();
    failed.status = JobStatus::Failed;
    failed.failure_reason = Some(FailureReason::InvalidVcpus);
    let now = Timestamp::now();
    let stored = store.insert_job(&failed, now).await.unwrap();
    assert_eq!(stored.status, JobStatus::Failed);
    assert_eq!(stored.failure_reason, Some(FailureReason::InvalidVcpus));
    assert_eq!(
        stored.completed_at,
        Some(Timestamp::from_micros(now.as_micros()))
    );
    assert_eq!(stored.max_run_time, 21_600);
    // It ended without running: zero seconds, nothing to bill.
    assert_eq!(
        (stored.duration, stored.billable_duration),
        (Some(0), Some(0))
    );
    assert_eq!(stored.started_at, None);
    assert_eq!(stored.workflow_job["id"], 7);
    assert_eq!(stored.label, "builtiful(ubuntu,3cpu)");
}

async fn concurrent_inserts_keep_the_count_exact(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8_i64 {
        let store = store.clone();
        let octo = octo.clone();
        tasks.spawn(async move { insert_jobs(store.as_ref(), &octo, worker * 1000, 25).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let all = store.list_jobs(octo.id, page(100, None)).await.unwrap();
    assert_eq!(all.total_count, 200);
    assert!(
        all.jobs.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
}

async fn workflow_jobs_are_unique(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    store
        .insert_job(&job(&octo, 42), Timestamp::now())
        .await
        .unwrap();
    let error = store
        .insert_job(&job(&octo, 42), Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error}");
    // The failed insert rolled back: the count did not move.
    assert_eq!(
        store
            .list_jobs(octo.id, page(10, None))
            .await
            .unwrap()
            .total_count,
        1
    );
}

async fn provisioner_tokens(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let now = Timestamp::now();
    let token = Token::generate("bfp_");
    let created = store
        .create_provisioner_token("amd64-01", token.hash(), now)
        .await
        .unwrap();
    assert_eq!(created.name, "amd64-01");
    assert_eq!(created.last_used_at, None);

    let other = Token::generate("bfp_");
    let error = store
        .create_provisioner_token("amd64-01", other.hash(), now)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "a provisioner token named `amd64-01` already exists"
    );
    store
        .create_provisioner_token("arm64-01", other.hash(), now)
        .await
        .unwrap();
    let names: Vec<_> = store
        .provisioner_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["amd64-01", "arm64-01"]);

    let used = store
        .authenticate_provisioner(token.hash(), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.id, created.id);
    let listed = store.provisioner_tokens().await.unwrap();
    assert_eq!(
        listed[0].last_used_at,
        Some(Timestamp::from_micros(now.as_micros()))
    );
    assert!(
        store
            .authenticate_provisioner(Token::generate("bfp_").hash(), now)
            .await
            .unwrap()
            .is_none()
    );

    assert!(store.revoke_provisioner_token("amd64-01").await.unwrap());
    assert!(!store.revoke_provisioner_token("amd64-01").await.unwrap());
    assert!(
        store
            .authenticate_provisioner(token.hash(), now)
            .await
            .unwrap()
            .is_none()
    );
}

async fn email_links_work_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    let jti = Uuid::now_v7();
    let expires = Timestamp::from_secs(Timestamp::now().secs_since_epoch + 3600);
    assert!(
        store
            .consume_email_verification(jti, octo.id, expires)
            .await
            .unwrap()
    );
    assert!(
        !store
            .consume_email_verification(jti, octo.id, expires)
            .await
            .unwrap()
    );
    assert!(
        store
            .consume_email_verification(Uuid::now_v7(), octo.id, expires)
            .await
            .unwrap()
    );
}

async fn purge_removes_only_expired_rows(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let octocat = user(store.as_ref(), "octocat").await;
    let octo = tenant(store.as_ref(), "octo-org").await;
    let now = Timestamp::now();
    let old = builtiful_server::auth::start_session(store.as_ref(), octocat.id, now)
        .await
        .unwrap();
    let later = Timestamp::from_micros(now.as_micros() + 10 * 24 * 3600 * 1_000_000);
    let fresh = builtiful_server::auth::start_session(store.as_ref(), octocat.id, later)
        .await
        .unwrap();
    store
        .consume_email_verification(
            Uuid::now_v7(),
            octo.id,
            Timestamp::from_secs(now.secs_since_epoch + 60),
        )
        .await
        .unwrap();

    let past_first_expiry = Timestamp::from_secs(now.secs_since_epoch + 30 * 24 * 3600 + 1);
    assert_eq!(store.purge_expired(past_first_expiry).await.unwrap(), 2);
    assert!(store.delete_session(fresh.hash()).await.unwrap());
    assert!(!store.delete_session(old.hash()).await.unwrap());
    let _ = Duration::ZERO;
}
