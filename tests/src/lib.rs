//! Helpers shared by the end-to-end tests, which run the real binaries together.
//!
//! The CLI tests run this package's binaries `e2e-builtiful` and `e2e-builtiful-server`, the
//! CLI and the server built from their libraries (`CARGO_BIN_EXE_…`). The provisioner tests
//! run the workspace's own binaries, found next to the test executable
//! (`target/debug/builtiful-server`, `target/debug/builtiful-provisioner`): `cargo test
//! --workspace` builds both (each package has integration tests); when one is missing, the
//! helper builds it with `cargo build -p …` first. Running only `cargo test -p builtiful-tests`
//! after changing the server or the provisioner needs a `cargo build` first, or the tests
//! run the binaries as last built.

#![allow(clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use builtiful_core::{Job, PageRequest};
use builtiful_server::store::Store;

/// The installation ids of the sandbox's organisations (`octo-org`, `mona-org`).
pub const INSTALLATIONS: [i64; 2] = [4_410_001, 4_410_002];

static BUILD: Mutex<()> = Mutex::new(());

/// The path of a workspace binary, built if it is missing.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join(name);
    let _guard = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name, "--target-dir"])
            .arg(profile_dir.parent().unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "cannot build {name}");
    }
    path
}

/// `builtiful-server`.
pub fn server_bin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| binary("builtiful-server", "builtiful-server"))
        .clone()
}

/// `builtiful-provisioner`, or the one `BUILTIFUL_TESTS_PROVISIONER_BIN` names (the
/// benchmark measures a release build).
pub fn provisioner_bin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var_os("BUILTIFUL_TESTS_PROVISIONER_BIN").map_or_else(
            || binary("builtiful-provisioner", "builtiful-provisioner"),
            PathBuf::from,
        )
    })
    .clone()
}

/// `builtiful-provisioner/launchers/sandbox.sh`.
pub fn sandbox_launcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../builtiful-provisioner/launchers/sandbox.sh")
}

/// A launcher that records when each runner starts and ends (`start|end NANOS VCPUS JOB_ID`
/// lines in the ledger), then runs `sandbox.sh`; the script's path and the ledger's.
pub fn ledger_launcher(dir: &Path, host: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ledger = dir.join(format!("{host}.ledger"));
    let script = dir.join(format!("{host}-launcher.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"start $(date +%s%N) $BUILTIFUL_VCPUS $BUILTIFUL_JOB_ID\" >> '{ledger}'\n\
             '{launcher}'\n\
             status=$?\n\
             echo \"end $(date +%s%N) $BUILTIFUL_VCPUS $BUILTIFUL_JOB_ID\" >> '{ledger}'\n\
             exit $status\n",
            ledger = ledger.display(),
            launcher = sandbox_launcher().display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, ledger)
}

/// Waits until `check` returns `Some`, polling every 100 ms, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `signal` to a process.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        signal,
    );
}

/// The variable naming a PostgreSQL server the tests may create databases on (CI:
/// `postgres://postgres@127.0.0.1:5432/postgres`).
pub const POSTGRES_URL_VAR: &str = "BUILTIFUL_TEST_POSTGRES_URL";

/// A PostgreSQL database made for one test, dropped (with its connections) afterwards, unless
/// `BUILTIFUL_TESTS_KEEP` is set.
#[derive(Debug)]
pub struct PostgresDb {
    /// Its URL.
    pub url: String,
    admin: String,
    name: String,
}

impl PostgresDb {
    /// A new database on the server [`POSTGRES_URL_VAR`] names; `None`, with a note on stderr
    /// that `test` is skipped, when the variable is not set.
    pub fn create(test: &str) -> Option<Self> {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
            eprintln!("skipped {test}: {POSTGRES_URL_VAR} is not set, so it has no PostgreSQL");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "builtiful_e2e_{}_{nanos}_{}",
            std::process::id(),
            COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        if let Err(error) = admin_statement(&admin, &format!("CREATE DATABASE {name}")) {
            panic!("{error}");
        }
        let mut url = url::Url::parse(&admin)
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is not a URL: {e}"));
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            admin,
            name,
        })
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        if std::env::var_os("BUILTIFUL_TESTS_KEEP").is_some() {
            eprintln!("keeping the database {}", self.url);
            return;
        }
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = admin_statement(&self.admin, &drop) {
            eprintln!("cannot drop the test database: {error}");
        }
    }
}

/// Runs one statement on the PostgreSQL server at `admin`, on a thread of its own (so it also
/// works in a drop, inside an async runtime or not).
fn admin_statement(admin: &str, statement: &str) -> Result<(), String> {
    let (admin, sent) = (admin.to_owned(), statement.to_owned());
    std::thread::spawn(move || {
        use sqlx::Connection;
        let statement = sent;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(|e| format!("{POSTGRES_URL_VAR} is set but PostgreSQL refused: {e}"))?;
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut conn)
                .await
                .map_err(|e| format!("{statement}: {e}"))?;
            let _ = conn.close().await;
            Ok::<(), String>(())
        })
    })
    .join()
    .unwrap_or_else(|_| Err(format!("{statement}: the thread panicked")))
}

/// How to start a [`Sandbox`].
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// The database (default: a new SQLite file in the sandbox's directory).
    pub database_url: Option<String>,
    /// The server binary (default: [`server_bin`]).
    pub server: Option<PathBuf>,
    /// Extra `serve` flags.
    pub args: Vec<String>,
}

/// A sandbox server (`builtiful-server serve --sandbox`), on its own SQLite database unless
/// told otherwise.
#[allow(missing_debug_implementations)]
pub struct Sandbox {
    /// Holds the database, logs and everything else of the test.
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The port, kept across restarts.
    pub port: u16,
    database_url: String,
    server: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
    store: OnceLock<Arc<dyn Store>>,
}

impl Sandbox {
    /// Starts a sandbox server on a free port.
    pub fn start() -> Self {
        Self::start_with(SandboxOptions::default())
    }

    /// Starts a sandbox server on a free port, as `options` say.
    pub fn start_with(options: SandboxOptions) -> Self {
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var_os("BUILTIFUL_TESTS_KEEP").is_some() {
            // For a post-mortem: the database, the server's and provisioners' logs, job logs.
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let database_url = options
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("db.sqlite").display()));
        let mut sandbox = Self {
            dir,
            url: String::new(),
            port: 0,
            database_url,
            server: options.server.unwrap_or_else(server_bin),
            args: options.args,
            child: None,
            runtime,
            store: OnceLock::new(),
        };
        sandbox.spawn(0);
        sandbox
    }

    /// The database URL.
    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.server);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("BUILTIFUL_DATABASE_URL", self.database_url())
            .args(args);
        command
    }

    fn spawn(&mut self, port: u16) {
        let log = self.dir.path().join("server.log");
        let mut child = self
            .command(&[
                "serve",
                "--sandbox",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(&self.args)
            .env("BUILTIFUL_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            let mut line = String::new();
            let mut sent = false;
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                if !sent
                    && let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && value["message"] == "serving"
                {
                    let _ = tx.send(value["listen"].as_str().unwrap_or_default().to_owned());
                    sent = true;
                }
                let _ = std::io::Write::write_all(&mut out, line.as_bytes());
                line.clear();
            }
        });
        let listen = rx
            .recv_timeout(Duration::from_mins(1))
            .expect("the sandbox server did not start");
        self.port = listen.rsplit(':').next().unwrap().parse().unwrap();
        self.url = format!("http://{listen}");
        self.child = Some(child);
    }

    /// Kills the server (SIGKILL): it is down until [`Sandbox::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and database.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.spawn(port);
    }

    /// Creates a provisioner token named `name`.
    pub fn provisioner_token(&self, name: &str) -> String {
        let output = self
            .command(&["provisioner-token", "create", "--name", name])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Queues `count` workflow jobs in the simulated GitHub; their workflow job ids.
    pub fn queue(&self, repo: &str, label: &str, count: u32, duration: u64) -> Vec<u64> {
        let output = Command::new(&self.server)
            .args([
                "sandbox", "queue", "--server", &self.url, "--repo", repo, "--label", label,
            ])
            .args([
                "--count",
                &count.to_string(),
                "--duration",
                &duration.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// Cancels a workflow job in the simulated GitHub.
    pub fn cancel(&self, workflow_job_id: u64) {
        let output = Command::new(&self.server)
            .args([
                "sandbox",
                "cancel",
                "--server",
                &self.url,
                &workflow_job_id.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store
            .get_or_init(|| {
                self.runtime
                    .block_on(builtiful_server::store::connect(&self.database_url()))
                    .unwrap()
            })
            .clone()
    }

    /// Every job of the sandbox's tenants, as `GET /tenants/{id}/jobs` lists them.
    pub fn jobs(&self) -> Vec<Job> {
        let store = self.store();
        self.runtime.block_on(async {
            let mut jobs = Vec::new();
            for installation in INSTALLATIONS {
                let Some(tenant) = store.tenant_by_installation(installation).await.unwrap() else {
                    continue;
                };
                let mut request = PageRequest::first(100);
                loop {
                    let page = store
                        .list_jobs(tenant.id, request.validate().unwrap())
                        .await
                        .unwrap();
                    let last = page.jobs.last().map(|j| j.id);
                    let full = page.jobs.len() == 100;
                    jobs.extend(page.jobs);
                    match last {
                        Some(id) if full => {
                            request = PageRequest {
                                starting_after: Some(id),
                                ..PageRequest::first(100)
                            };
                        }
                        _ => break,
                    }
                }
            }
            jobs
        })
    }

    /// Runs one SQL statement or query on the server's database (SQLite or PostgreSQL); the
    /// rows as strings (text and integer columns; cast others, e.g. `id::text`).
    pub fn sql(&self, query: &str) -> Vec<Vec<Option<String>>> {
        let url = self.database_url();
        let query = sqlx::AssertSqlSafe(query.to_owned());
        self.runtime.block_on(async {
            if url.starts_with("postgres") {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let rows = sqlx::query(query).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows.iter().map(row_strings).collect()
            } else {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let rows = sqlx::query(query).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows.iter().map(row_strings).collect()
            }
        })
    }
}

/// A row's columns as strings: text as it is, integers in decimal, anything else `None`.
fn row_strings<R: sqlx::Row>(row: &R) -> Vec<Option<String>>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.columns().len())
        .map(|i| {
            row.try_get::<Option<String>, _>(i)
                .ok()
                .flatten()
                .or_else(|| {
                    row.try_get::<Option<i64>, _>(i)
                        .ok()
                        .flatten()
                        .map(|n| n.to_string())
                })
        })
        .collect()
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options of a provisioner under test.
#[derive(Debug, Clone)]
pub struct ProvisionerOptions {
    /// `--host`.
    pub host: String,
    /// `--vcpus`.
    pub vcpus: u32,
    /// The launcher (default: `launchers/sandbox.sh`).
    pub launcher: PathBuf,
    /// Extra flags.
    pub args: Vec<String>,
}

impl ProvisionerOptions {
    /// A host named `host` with `vcpus`, running the sandbox launcher.
    pub fn new(host: &str, vcpus: u32) -> Self {
        Self {
            host: host.to_owned(),
            vcpus,
            launcher: sandbox_launcher(),
            args: Vec::new(),
        }
    }
}

/// A running `builtiful-provisioner`.
#[derive(Debug)]
pub struct Provisioner {
    /// The process.
    pub child: Child,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Provisioner {
    /// Starts a provisioner against `sandbox` with `token`; its files go in `dir`.
    pub fn start(sandbox: &Sandbox, token: &str, options: &ProvisionerOptions) -> Self {
        let dir = sandbox.dir.path().join(&options.host);
        std::fs::create_dir_all(&dir).unwrap();
        let state_dir = dir.join("state");
        let log = dir.join("provisioner.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(provisioner_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env("BUILTIFUL_TOKEN", token)
            .env("BUILTIFUL_SANDBOX_SERVER_BIN", &sandbox.server)
            .env("BUILTIFUL_SANDBOX_IDLE_TIMEOUT", "30")
            .env("RUST_LOG", "info")
            .args([
                "--config",
                "/dev/null",
                "--server",
                &sandbox.url,
                "--host",
                &options.host,
            ])
            .args([
                "--vcpus",
                &options.vcpus.to_string(),
                "--cpu-architecture",
                "amd64",
            ])
            .arg("--launcher")
            .arg(&options.launcher)
            .arg("--state-dir")
            .arg(&state_dir)
            .args([
                "--poll-wait",
                "5",
                "--heartbeat-interval",
                "2",
                "--stop-grace",
                "5",
            ])
            .args(["--max-backoff", "2"])
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self {
            child,
            state_dir,
            log,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Jobs recorded as running in its state directory.
    pub fn recorded_jobs(&self) -> usize {
        std::fs::read_dir(self.state_dir.join("jobs")).map_or(0, |dir| {
            dir.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
        })
    }

    /// Waits for it to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_for("the provisioner to exit", timeout, || {
            self.child.try_wait().unwrap().map(|status| status.code())
        })
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
