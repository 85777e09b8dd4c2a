//! The harness of the conformance suite: a fresh database per test (a SQLite file, or a new
//! PostgreSQL database when `BUILTIFUL_TEST_POSTGRES_URL` is set) and a real server on port 0.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;

use builtiful_core::{JobStatus, Tenant, Timestamp, User};
use builtiful_server::app::{App, Settings, WebhookSecret};
use builtiful_server::auth::start_session;
use builtiful_server::clock::ShiftedClock;
use builtiful_server::crypto::Sealer;
use builtiful_server::dispatch::Dispatcher;
use builtiful_server::dispatch::reconciler::Redeliveries;
use builtiful_server::github::{GitHubConfig, HttpGitHub};
use builtiful_server::mail::OutboxMailer;
use builtiful_server::metrics::Metrics;
use builtiful_server::sandbox::github::{
    SANDBOX_APP_PRIVATE_KEY_PEM, SimulatedGitHub, SimulatorConfig,
};
use builtiful_server::store::{self, Installation, JobInsert, Store, UserProfile};
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

/// The variable naming the PostgreSQL server tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "BUILTIFUL_TEST_POSTGRES_URL";

/// The webhook secret of test servers.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// Which backend a conformance test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test and is removed after it.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database, or `None` (with a note on stderr) when the backend is not available.
    pub async fn new(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Some(Self {
                url: format!("sqlite://{}", dir.path().join("builtiful.db").display()),
                dir,
                postgres: None,
            }),
            Backend::Postgres => {
                let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
                    eprintln!(
                        "skipped: {POSTGRES_URL_VAR} is not set, so the PostgreSQL variant does not run"
                    );
                    return None;
                };
                let name = format!("builtiful_test_{}", Uuid::new_v4().simple());
                let mut conn = connect_admin(&admin).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let mut url = Url::parse(&admin).unwrap();
                url.set_path(&name);
                Some(Self {
                    url: url.to_string(),
                    dir,
                    postgres: Some((admin, name)),
                })
            }
        }
    }

    /// Opens (and migrates) the store.
    pub async fn store(&self) -> Arc<dyn Store> {
        store::connect(&self.url).await.unwrap()
    }
}

async fn connect_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is set but PostgreSQL refused: {e}"))
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut conn = connect_admin(&admin).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                });
            })
            .join();
        }
    }
}

/// Generates one `#[tokio::test]` per backend for each named `async fn(Backend)`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )+
        }
    };
}

/// A server running in-process on `127.0.0.1:0` over a fresh database.
pub struct TestServer {
    pub base: String,
    pub app: Arc<App>,
    pub clock: Arc<ShiftedClock>,
    pub outbox: PathBuf,
    pub db: TestDb,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// What a test may change about the server.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub frontend_origins: Vec<&'static str>,
    pub organization_runners: bool,
    pub public_url: Option<&'static str>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, options: Options) -> Option<Self> {
        let db = TestDb::new(backend).await?;
        let store = db.store().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let outbox = db.dir.path().join("outbox");
        let clock = Arc::new(ShiftedClock::default());
        let secret = builtiful_server::config::random_secret();
        let public_url = Url::parse(options.public_url.unwrap_or(&base)).unwrap();
        // GitHub is the simulated one, mounted on the server as in `serve --sandbox`, on the
        // test's clock so that tests can move time for both.
        let base_url = Url::parse(&base).unwrap();
        let github_base = builtiful_server::config::sandbox_github_url(&base_url);
        let config = SimulatorConfig::sandbox(
            github_base.clone(),
            base_url.join("webhooks/github").unwrap(),
            WEBHOOK_SECRET.into(),
        );
        let github = GitHubConfig {
            api_url: github_base.join("api").unwrap(),
            web_url: github_base,
            app_id: config.app_id,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            private_key_pem: SANDBOX_APP_PRIVATE_KEY_PEM.as_bytes().to_vec(),
        };
        let simulator = SimulatedGitHub::with_clock(config, clock.clone()).unwrap();
        let app = Arc::new(App {
            store,
            settings: Settings {
                public_url,
                frontend_origins: options
                    .frontend_origins
                    .iter()
                    .map(|o| Url::parse(o).unwrap())
                    .collect(),
                organization_runners: options.organization_runners,
            },
            mailer: Arc::new(
                OutboxMailer::new(
                    &outbox,
                    "Builtiful <builtiful@example.com>".parse().unwrap(),
                )
                .unwrap(),
            ),
            clock: clock.clone(),
            sealer: Sealer::new(&secret, "github-token"),
            secret,
            github: Arc::new(HttpGitHub::new(&github).unwrap()),
            webhook_secret: WebhookSecret(WEBHOOK_SECRET.into()),
            sandbox: Some(simulator),
            dispatcher: Dispatcher::default(),
            redeliveries: Redeliveries::default(),
            // Tests run passes themselves, so a background pass never races their assertions.
            reconcile_every: None,
            metrics: Arc::new(Metrics::default()),
        });
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(builtiful_server::serve(
            listener,
            app.clone(),
            shutdown.clone(),
        ));
        Some(Self {
            base,
            app,
            clock,
            outbox,
            db,
            shutdown,
            handle,
        })
    }

    pub fn store(&self) -> &dyn Store {
        self.app.store.as_ref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A user with a session; returns the user and their `bfs_` token.
    pub async fn login(&self, login: &str, tenants: &[&Tenant]) -> (User, String) {
        let user = user(self.store(), login).await;
        let ids: Vec<Uuid> = tenants.iter().map(|t| t.id).collect();
        self.store().set_memberships(user.id, &ids).await.unwrap();
        let token = start_session(self.store(), user.id, self.app.now())
            .await
            .unwrap();
        (user, token.expose().to_owned())
    }

    /// A typed client authenticated as `token`.
    pub fn client(&self, token: &str) -> builtiful_core::Client {
        builtiful_core::Client::builder(&self.base)
            .token(token)
            .build()
            .unwrap()
    }

    /// The files in the outbox, oldest first.
    pub fn outbox_messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.outbox) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
        files
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// Creates (or refreshes) a GitHub user.
pub async fn user(store: &dyn Store, login: &str) -> User {
    let profile = UserProfile {
        github_id: github_id(login),
        github_login: login.to_owned(),
        github_name: Some(format!("{login} (name)")),
        email: Some(format!("{login}@example.com")),
    };
    store.upsert_user(&profile, Timestamp::now()).await.unwrap()
}

/// Creates (or refreshes) a tenant for an organisation.
pub async fn tenant(store: &dyn Store, login: &str) -> Tenant {
    let installation = Installation {
        github_installation_id: github_id(login) + 1_000_000_000,
        github_id: github_id(login),
        github_login: login.to_owned(),
        suspended: false,
    };
    store
        .upsert_tenant(&installation, Timestamp::now())
        .await
        .unwrap()
}

/// A stable fake GitHub id for a login.
pub fn github_id(login: &str) -> i64 {
    login
        .bytes()
        .fold(7_i64, |acc, b| (acc * 31 + i64::from(b)) % 1_000_000_007)
}

/// A queued job of `tenant`, as a webhook would record it.
pub fn job(tenant: &Tenant, workflow_job_id: i64) -> JobInsert {
    JobInsert {
        tenant_id: tenant.id,
        workflow_job_id,
        repository: format!("{}/app", tenant.github_login),
        initiator: "octocat".into(),
        initiator_github_id: 583_231,
        cpu_architecture: builtiful_core::CpuArchitecture::Amd64,
        os: builtiful_core::Os::Ubuntu2404,
        label: "builtiful(ubuntu,4cpu)".into(),
        vcpus: 4,
        status: JobStatus::Queued,
        failure_reason: None,
        waiting: false,
        started_at: None,
        completed_at: None,
        workflow_job: serde_json::json!({"id": workflow_job_id, "labels": ["builtiful(ubuntu,4cpu)"]}),
    }
}

/// Inserts `count` queued jobs of `tenant`, returning them oldest first.
pub async fn insert_jobs(
    store: &dyn Store,
    tenant: &Tenant,
    first_id: i64,
    count: i64,
) -> Vec<builtiful_core::Job> {
    let mut jobs = Vec::new();
    for id in first_id..first_id + count {
        jobs.push(
            store
                .insert_job(&job(tenant, id), Timestamp::now())
                .await
                .unwrap(),
        );
    }
    jobs
}

/// The API's OpenAPI document.
pub fn spec() -> serde_json::Value {
    serde_json::from_str(&builtiful_server::routes::openapi_json()).unwrap()
}

/// Asserts that `body` is what the OpenAPI document promises for `method path → status`.
pub fn assert_matches_spec(method: &str, path: &str, status: u16, body: &serde_json::Value) {
    let spec = spec();
    let operation = &spec["paths"][path][method.to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {path} is not in the OpenAPI document"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which the OpenAPI document does not list"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} → {status} has no JSON schema"
    );
    let root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": spec["components"],
    });
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} → {status}: the body does not match its schema: {errors:?}\n{body:#}"
    );
}

/// Sends a request and checks the JSON answer against the OpenAPI document.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    spec_path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = http.request(method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_matches_spec(method.as_str(), spec_path, status, &body);
    (status, body)
}

/// Runs one SQL statement directly on a test database (to set up states no API makes yet).
pub async fn execute(url: &str, sql: &str) {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

/// UUIDv7 ids one millisecond apart from `base_ms`, so their order is their index.
pub fn sequential_id(base_ms: u64, index: u64) -> Uuid {
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(base_ms + index, &random).into_uuid()
}

const BULK_COLUMNS: &str = "INSERT INTO jobs (id, tenant_id, workflow_job_id, repository, initiator, \
    initiator_github_id, cpu_architecture, os, label, vcpus, max_run_time, status, created_at, \
    updated_at, workflow_job) ";

macro_rules! bulk_insert_with {
    ($conn:expr, $tenant:expr, $count:expr, $vcpus:expr, $status:expr, $base_ms:expr) => {{
        const BATCH: u64 = 1_000;
        let mut tx = sqlx::Connection::begin(&mut $conn).await.unwrap();
        let mut start = 0;
        while start < $count {
            let end = ($count).min(start + BATCH);
            let mut query = sqlx::QueryBuilder::new(BULK_COLUMNS);
            query.push_values(start..end, |mut row, i| {
                let at = i64::try_from(($base_ms + i) * 1000).unwrap();
                let workflow_job_id = i64::try_from($base_ms + i).unwrap();
                row.push_bind(sequential_id($base_ms, i))
                    .push_bind($tenant.id)
                    .push_bind(workflow_job_id)
                    .push_bind(format!("{}/app", $tenant.github_login))
                    .push_bind("octocat")
                    .push_bind(583_231_i64)
                    .push_bind("Amd64")
                    .push_bind("Ubuntu2404")
                    .push_bind(format!("builtiful(ubuntu,{}cpu)", $vcpus))
                    .push_bind(i64::from($vcpus))
                    .push_bind(21_600_i64)
                    .push_bind($status)
                    .push_bind(at)
                    .push_bind(at)
                    .push_bind(sqlx::types::Json(serde_json::json!({"id": workflow_job_id})));
            });
            query.build().execute(&mut *tx).await.unwrap();
            start = end;
        }
        sqlx::query("UPDATE tenants SET job_count = job_count + $1 WHERE id = $2")
            .bind(i64::try_from($count).unwrap())
            .bind($tenant.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }};
}

/// Inserts `count` jobs of one size and status for `tenant` in bulk (benchmarks seed
/// millions of rows; one insert each would take minutes). Their ids and creation times are
/// one millisecond apart from `base_ms` (and their workflow job ids are `base_ms + index`).
pub async fn bulk_insert_jobs(
    url: &str,
    tenant: &Tenant,
    count: u64,
    vcpus: u32,
    status: &str,
    base_ms: u64,
) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        bulk_insert_with!(conn, tenant, count, vcpus, status, base_ms);
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        bulk_insert_with!(conn, tenant, count, vcpus, status, base_ms);
        // What autovacuum would do soon after such a load. (Not on SQLite: the server never
        // analyzes its SQLite database, and statistics there change what is measured — with
        // STAT4 samples SQLite re-plans a statement whenever its parameters are bound anew.)
        sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    }
}

/// Asserts that every tenant's held vCPUs (kept by triggers: a column on SQLite, shards on
/// PostgreSQL) equal the vCPUs of its provisioning and running jobs.
pub async fn assert_held_vcpus_exact(url: &str) {
    use sqlx::Connection;
    macro_rules! held_and_actual {
        ($held:literal) => {
            concat!(
                "SELECT t.github_login, ",
                $held,
                ", CAST(COALESCE((SELECT SUM(vcpus) FROM jobs j WHERE j.tenant_id = t.id ",
                "AND j.status IN ('Provisioning', 'Running')), 0) AS BIGINT) FROM tenants t"
            )
        };
    }
    let rows: Vec<(String, i64, i64)> = if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(held_and_actual!("t.held_vcpus"))
            .fetch_all(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(held_and_actual!(
            "CAST(COALESCE((SELECT SUM(h.vcpus) FROM tenant_held_vcpus h \
             WHERE h.tenant_id = t.id), 0) AS BIGINT)"
        ))
        .fetch_all(&mut conn)
        .await
        .unwrap()
    };
    for (login, kept, actual) in rows {
        assert_eq!(kept, actual, "held vCPUs of {login}");
    }
}
