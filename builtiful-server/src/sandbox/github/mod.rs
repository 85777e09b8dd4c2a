//! A simulated GitHub that speaks GitHub's wire format, so the whole system runs on one
//! machine without credentials and what passes against it passes against GitHub.
//!
//! [`SimulatedGitHub`] keeps an in-memory world seeded from [`crate::sandbox::ORGS`] and
//! [`crate::sandbox::USERS`] (same ids, logins, installation ids and repositories;
//! repository `n` of an organisation has the id `org id × 100 + n`). Its
//! [`router`](SimulatedGitHub::router) is mounted anywhere (the server uses
//! `/sandbox/github`); [`run`](SimulatedGitHub::run) is its background task, which delivers
//! webhooks in order and returns stale job assignments to the queue.
//!
//! # URL layout (relative to the mount point, `base_url`)
//!
//! | path | stands for | |
//! |---|---|---|
//! | `/login/oauth/authorize`, `/login/oauth/access_token` | `https://github.com` | the OAuth web flow ([`oauth`]) |
//! | `/api/…` | `https://api.github.com/…` | REST: `/user…`, `/app…`, runners, jobs, hook deliveries ([`api`], [`runners`], [`webhooks`]) |
//! | `/_sandbox/…` | nothing on GitHub | control endpoints: queue and cancel jobs, suspend installations, and the runner protocol ([`control`]) |
//!
//! Links inside objects (`html_url`, `url`, …) point at `base_url` and `base_url/api`.
//! Webhooks go to [`SimulatorConfig::webhook_url`], signed with
//! [`SimulatorConfig::webhook_secret`].

pub mod actions;
pub mod api;
pub mod control;
pub mod jit;
pub mod oauth;
pub mod runners;
pub mod secrets;
pub mod shapes;
pub mod time;
pub mod webhooks;
pub mod world;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use builtiful_core::Timestamp;
use jsonwebtoken::DecodingKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::clock::{Clock, SystemClock};
use world::{Links, World};

/// The sandbox App's numeric id.
pub const SANDBOX_APP_ID: u64 = 1_000_001;
/// The sandbox App's OAuth client id.
pub const SANDBOX_CLIENT_ID: &str = "Iv1.sandbox";
/// The public half of the sandbox App's key: the simulator verifies App JWTs with it.
pub const SANDBOX_APP_PUBLIC_KEY_PEM: &str = include_str!("../keys/app-public-key.pem");
/// The private half (PKCS#1): the sandbox server signs its App JWTs with it. It grants
/// nothing anywhere else (see `keys/README.md`).
pub const SANDBOX_APP_PRIVATE_KEY_PEM: &str = include_str!("../keys/app-private-key.pem");

/// How long the background task sleeps between housekeeping rounds when nothing happens.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// What the simulator needs to know about its surroundings and the App it simulates.
#[derive(Clone)]
pub struct SimulatorConfig {
    /// Where the simulator is mounted, e.g. `http://127.0.0.1:8080/sandbox/github`.
    pub base_url: Url,
    /// Where webhooks go: the server's `POST /webhooks/github`.
    pub webhook_url: Url,
    /// Signs `X-Hub-Signature-256`.
    pub webhook_secret: String,
    /// The App's OAuth client id, e.g. `Iv1.sandbox`.
    pub client_id: String,
    /// The App's OAuth client secret.
    pub client_secret: String,
    /// The App's numeric id.
    pub app_id: u64,
    /// The PEM public key that verifies App JWTs (RS256).
    pub app_public_key_pem: String,
}

impl SimulatorConfig {
    /// The sandbox App ([`SANDBOX_APP_ID`], [`SANDBOX_CLIENT_ID`], the committed key pair)
    /// with a fresh random client secret.
    pub fn sandbox(base_url: Url, webhook_url: Url, webhook_secret: String) -> Self {
        Self {
            base_url,
            webhook_url,
            webhook_secret,
            client_id: SANDBOX_CLIENT_ID.to_owned(),
            client_secret: secrets::hex(40),
            app_id: SANDBOX_APP_ID,
            app_public_key_pem: SANDBOX_APP_PUBLIC_KEY_PEM.to_owned(),
        }
    }
}

impl fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("base_url", &self.base_url.as_str())
            .field("webhook_url", &self.webhook_url.as_str())
            .field("webhook_secret", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// Why a simulator cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The App's public key is not an RSA PEM key.
    #[error("the App public key is not a PEM RSA public key: {0}")]
    PublicKey(#[source] jsonwebtoken::errors::Error),
    /// The HTTP client for webhook deliveries cannot be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// A GitHub API rate-limit window of one credential.
#[derive(Debug, Clone, Copy)]
struct RateWindow {
    used: u64,
    reset: u64,
}

/// The simulated GitHub. Create it with [`SimulatedGitHub::new`], mount
/// [`router`](Self::router), and spawn [`run`](Self::run).
pub struct SimulatedGitHub {
    config: SimulatorConfig,
    app_key: DecodingKey,
    clock: Arc<dyn Clock>,
    world: Mutex<World>,
    /// Woken when a job becomes available, so long-polling runners look again.
    work: Notify,
    /// Woken when a delivery enters the outbox.
    outbox: Notify,
    http: reqwest::Client,
    rate_windows: Mutex<HashMap<secrets::Hash, RateWindow>>,
}

impl fmt::Debug for SimulatedGitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedGitHub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SimulatedGitHub {
    /// A simulator on the real clock.
    pub fn new(config: SimulatorConfig) -> Result<Arc<Self>, SimulatorError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A simulator on `clock` (tests move it to expire codes and tokens).
    pub fn with_clock(
        config: SimulatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, SimulatorError> {
        let app_key = DecodingKey::from_rsa_pem(config.app_public_key_pem.as_bytes())
            .map_err(SimulatorError::PublicKey)?;
        let http = reqwest::Client::builder()
            // GitHub gives up on a receiver after 10 s.
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(SimulatorError::HttpClient)?;
        let world = World::seeded(
            Links::new(&config.base_url),
            config.app_id,
            config.client_id.clone(),
        );
        Ok(Arc::new(Self {
            config,
            app_key,
            clock,
            world: Mutex::new(world),
            work: Notify::new(),
            outbox: Notify::new(),
            http,
            rate_windows: Mutex::new(HashMap::new()),
        }))
    }

    /// Its configuration.
    pub fn config(&self) -> &SimulatorConfig {
        &self.config
    }

    /// The routes, relative to the mount point (see the module documentation).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .merge(oauth::router())
            .nest("/api", api::router(self))
            .nest("/_sandbox", control::router())
            .with_state(Arc::clone(self))
    }

    /// The background task: delivers webhooks in order, returns jobs whose runner never
    /// started them to the queue, marks silent runners offline and forgets expired
    /// credentials. Returns when `shutdown` is cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.mutate(World::housekeeping);
            self.deliver_outbox(&shutdown).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.outbox.notified() => {}
                () = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => {}
            }
        }
    }

    /// Now, by the simulator's clock.
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The world, for reading.
    fn world(&self) -> MutexGuard<'_, World> {
        // A panic elsewhere leaves the world consistent enough for a simulator: keep going.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the world, then wakes the delivery task if there is something to deliver
    /// and long-polling runners if a job became available.
    fn mutate<R>(&self, change: impl FnOnce(&mut World, Timestamp) -> R) -> R {
        let now = self.now();
        let (result, deliveries, jobs) = {
            let mut world = self.world();
            let result = change(&mut world, now);
            let jobs = std::mem::take(&mut world.wake_runners);
            (result, !world.outbox.is_empty(), jobs)
        };
        if deliveries {
            self.outbox.notify_one();
        }
        if jobs {
            self.work.notify_waiters();
        }
        result
    }
}
