//! The harness: a sandbox server as a real process over a fresh SQLite file, the CLI as a real
//! process with its own config directory, and direct access to the server's store to make
//! what the API cannot (sessions, jobs, login codes) until the simulated GitHub does it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use builtiful_core::{CpuArchitecture, FailureReason, Job, JobStatus, Os, Tenant, Timestamp, User};
use builtiful_server::store::{self, JobInsert, Store};

/// The CLI under test.
pub const CLI: &str = env!("CARGO_BIN_EXE_e2e-builtiful");
/// The server under test.
pub const SERVER: &str = env!("CARGO_BIN_EXE_e2e-builtiful-server");

/// A runtime for the store calls of a synchronous test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `builtiful-server serve --sandbox` on `127.0.0.1:0` over its own SQLite file.
pub struct Sandbox {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub runtime: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    child: Child,
}

impl Sandbox {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let mut child = Command::new(SERVER)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("BUILTIFUL_DATABASE_URL", &db_url)
            .env("BUILTIFUL_LOG_FORMAT", "json")
            .args(["serve", "--sandbox", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_mins(1);
        let mut line = String::new();
        let address = loop {
            assert!(Instant::now() < deadline, "the server did not start");
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "the server exited"
            );
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && event["message"] == "serving"
            {
                break event["listen"].as_str().unwrap().to_owned();
            }
        };
        // Keep draining its logs so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let runtime = runtime();
        let store = runtime.block_on(store::connect(&db_url)).unwrap();
        Self {
            base: format!("http://{address}"),
            dir,
            runtime,
            store,
            child,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// A seeded user (`octocat`, `monalisa`).
    pub fn user(&self, login: &str) -> User {
        let seed = builtiful_server::sandbox::USERS
            .iter()
            .find(|u| u.login == login)
            .unwrap();
        self.runtime
            .block_on(self.store().user_by_github_id(seed.github_id))
            .unwrap()
            .unwrap()
    }

    /// A seeded tenant (`octo-org`, `mona-org`).
    pub fn tenant(&self, login: &str) -> Tenant {
        let seed = builtiful_server::sandbox::ORGS
            .iter()
            .find(|o| o.login == login)
            .unwrap();
        self.runtime
            .block_on(self.store().tenant_by_installation(seed.installation_id))
            .unwrap()
            .unwrap()
    }

    /// A new session for `login`: its `bfs_` token.
    pub fn session(&self, login: &str) -> String {
        let user = self.user(login);
        let token = self
            .runtime
            .block_on(builtiful_server::auth::start_session(
                self.store(),
                user.id,
                Timestamp::now(),
            ))
            .unwrap();
        token.expose().to_owned()
    }

    /// A one-time login code for `login`, bound to `challenge`, as GitHub's callback makes it.
    pub fn login_code(&self, login: &str, challenge: &str) -> String {
        let user = self.user(login);
        let code = builtiful_server::auth::Token::generate("");
        let expires = Timestamp::from_secs(Timestamp::now().secs_since_epoch + 300);
        self.runtime
            .block_on(
                self.store()
                    .create_login_code(code.hash(), user.id, challenge, expires),
            )
            .unwrap();
        code.expose().to_owned()
    }

    /// Inserts `count` jobs of `tenant` as webhooks would, returning them newest first. Every
    /// third one failed on its label, so reasons show.
    pub fn jobs(&self, tenant: &Tenant, count: i64) -> Vec<Job> {
        let mut jobs = Vec::new();
        for n in 0..count {
            let failed = n % 3 == 2;
            let insert = JobInsert {
                tenant_id: tenant.id,
                workflow_job_id: 1_000 + n,
                repository: format!("{}/app", tenant.github_login),
                initiator: "octocat".into(),
                initiator_github_id: 583_231,
                cpu_architecture: CpuArchitecture::Amd64,
                os: Os::Ubuntu2404,
                label: if failed {
                    "builtiful(ubuntu,3cpu)".into()
                } else {
                    "builtiful(ubuntu,4cpu)".into()
                },
                vcpus: 4,
                status: if failed {
                    JobStatus::Failed
                } else {
                    JobStatus::Queued
                },
                failure_reason: failed.then_some(FailureReason::InvalidVcpus),
                waiting: false,
                started_at: None,
                completed_at: None,
                workflow_job: serde_json::json!({"id": 1_000 + n}),
            };
            jobs.push(
                self.runtime
                    .block_on(self.store().insert_job(&insert, Timestamp::now()))
                    .unwrap(),
            );
        }
        jobs.reverse();
        jobs
    }

    /// A typed client, for checking what the server thinks.
    pub fn client(&self, token: &str) -> builtiful_core::Client {
        builtiful_core::Client::builder(&self.base)
            .token(token)
            .build()
            .unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a CLI run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

/// A person's machine: a config directory, and the server it talks to.
pub struct Machine {
    pub config: tempfile::TempDir,
    pub server: String,
}

impl Machine {
    pub fn new(server: &str) -> Self {
        Self {
            config: tempfile::tempdir().unwrap(),
            server: server.to_owned(),
        }
    }

    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }

    pub fn token_file(&self) -> PathBuf {
        self.config.path().join("tokens.json")
    }

    /// The CLI with a clean environment: no D-Bus session, so no OS keyring on Linux, as on
    /// a headless machine or in CI.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(CLI);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.config.path())
            .env("BUILTIFUL_CONFIG_DIR", self.config.path())
            .env("BUILTIFUL_SERVER", &self.server)
            .args(args);
        command
    }

    /// Runs the CLI to the end with `stdin` as its input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Run {
        run_with(self.command(args), stdin)
    }
}

/// Runs `command` to the end with `stdin` as its input.
pub fn run_with(mut command: Command, stdin: &str) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().into()
}

/// Polls `check` until it returns something, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A query parameter of a URL.
pub fn query(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A GET's status and body, following no redirects.
pub fn get(url: &str) -> (u16, String) {
    runtime().block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client.get(url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}
