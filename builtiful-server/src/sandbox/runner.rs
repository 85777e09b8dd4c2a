//! `sandbox runner`: what the actions runner does with a JIT config, against the simulated
//! GitHub: connect, wait for one matching job, work on it for its duration, report it,
//! and exit. It exits 1 when no job came within the idle timeout, when the config is
//! invalid, or when a signal stopped it (a job in hand is then reported `cancelled`).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::command::RunnerArgs;
use super::github::control::Assignment;
use super::github::jit::{self, JitConfig};

/// The longest single long-poll; the simulator caps it at 60 s.
const POLL_SECS: u64 = 30;

/// Runs the runner.
pub async fn run(args: &RunnerArgs) -> anyhow::Result<()> {
    let encoded = match (&args.jit_config, &args.jit_config_file) {
        (Some(config), _) => config.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the JIT config file {}", path.display()))?,
        (None, None) => bail!(
            "no JIT config: set BUILTIFUL_JIT_CONFIG, or BUILTIFUL_JIT_CONFIG_FILE to a file holding it"
        ),
    };
    let config = jit::decode(&encoded).map_err(|e| anyhow!("invalid JIT config: {e}"))?;
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));
    Runner::new(config)
        .work(Duration::from_secs(args.idle_timeout), &stop)
        .await
}

/// Cancels `stop` on SIGTERM or SIGINT.
async fn cancel_on_signal(stop: CancellationToken) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
}

#[derive(Deserialize)]
struct Acquired {
    job: Assignment,
}

/// A connected runner.
struct Runner {
    config: JitConfig,
    http: reqwest::Client,
    base: String,
}

impl Runner {
    fn new(config: JitConfig) -> Self {
        let base = format!(
            "{}/_sandbox/runners/{}",
            config.runner.server_url, config.runner.agent_id
        );
        Self {
            config,
            http: reqwest::Client::new(),
            base,
        }
    }

    /// Connects, takes a job within `idle_timeout`, runs it and reports it.
    async fn work(&self, idle_timeout: Duration, stop: &CancellationToken) -> anyhow::Result<()> {
        let name = &self.config.runner.agent_name;
        self.call(reqwest::Method::POST, "/session", None, None)
            .await?;
        eprintln!("√ Connected to GitHub as runner {name}");
        eprintln!(
            "Listening for Jobs (labels: {})",
            self.config.runner.labels.join(", ")
        );
        let Some(job) = self.wait_for_job(idle_timeout, stop).await? else {
            // Like the real runner, going away leaves the registration offline.
            let _ = self
                .call(reqwest::Method::DELETE, "/session", None, None)
                .await;
            if stop.is_cancelled() {
                bail!("runner {name} stopped by a signal before it got a job");
            }
            bail!(
                "runner {name} got no job within {}s; giving up",
                idle_timeout.as_secs()
            );
        };
        self.call(
            reqwest::Method::POST,
            &format!("/jobs/{}/start", job.id),
            None,
            None,
        )
        .await?;
        eprintln!(
            "{}: Running job: {} ({}, job {})",
            name, job.name, job.repository, job.id
        );
        let interrupted = tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(job.duration_secs)) => false,
            () = stop.cancelled() => true,
        };
        let conclusion = if interrupted {
            "cancelled"
        } else {
            job.conclusion.as_str()
        };
        let finished = self
            .call(
                reqwest::Method::POST,
                &format!("/jobs/{}/complete", job.id),
                Some(json!({"conclusion": conclusion})),
                None,
            )
            .await?;
        // The job may have been cancelled on GitHub's side while the runner worked: its
        // conclusion is then GitHub's, not the runner's.
        let result = finished
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .and_then(|job| job["conclusion"].as_str().map(str::to_owned))
            .unwrap_or_else(|| conclusion.to_owned());
        if interrupted {
            bail!(
                "runner {name} received a shutdown signal; reported job {} as cancelled",
                job.id
            );
        }
        eprintln!("{}: Job {} completed with result: {result}", name, job.name);
        Ok(())
    }

    /// Long-polls until a job comes, the idle timeout passes (`None`) or `stop`.
    async fn wait_for_job(
        &self,
        idle_timeout: Duration,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Assignment>> {
        let deadline = tokio::time::Instant::now() + idle_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let wait = left.as_secs().min(POLL_SECS);
            let path = format!("/acquire?wait={wait}");
            let poll = self.call(
                reqwest::Method::POST,
                &path,
                None,
                Some(Duration::from_secs(wait + 10)),
            );
            let body = tokio::select! {
                () = stop.cancelled() => return Ok(None),
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                body = poll => body?,
            };
            if let Some(body) = body {
                let acquired: Acquired = serde_json::from_slice(&body)
                    .context("the simulated GitHub sent a job this runner cannot read")?;
                return Ok(Some(acquired.job));
            }
            if wait == 0 {
                // Under a second left: one last immediate look happened; pause briefly.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// One request of the runner protocol. `Ok(None)` is a 204.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.config.secret)
            .timeout(timeout.unwrap_or(Duration::from_secs(10)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the simulated GitHub at {url}"))?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        match status {
            StatusCode::NO_CONTENT => Ok(None),
            status if status.is_success() => Ok(Some(bytes.to_vec())),
            StatusCode::UNAUTHORIZED => bail!(
                "runner {} is not registered with the simulated GitHub (removed, or a wrong secret)",
                self.config.runner.agent_name
            ),
            status => {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                bail!("the simulated GitHub refused ({status}): {message}")
            }
        }
    }
}
