//! Prometheus metrics, served at `GET /metrics` on `--metrics-listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The provisioner's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// vCPUs offered to jobs (the host's less the reserve).
    pub vcpus_total: Gauge,
    /// vCPUs not reserved by a job.
    pub vcpus_free: Gauge,
    /// Jobs whose launcher runs.
    pub jobs_running: Gauge,
    /// Jobs claimed from the server.
    pub claims: Counter,
    /// Launchers that could not start.
    pub launcher_failures: Counter,
    /// Failed requests to the server (each retried after a backoff).
    pub server_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("builtiful_provisioner");
        let metrics = Self {
            vcpus_total: Gauge::default(),
            vcpus_free: Gauge::default(),
            jobs_running: Gauge::default(),
            claims: Counter::default(),
            launcher_failures: Counter::default(),
            server_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "vcpus_total",
            "vCPUs offered to jobs",
            metrics.vcpus_total.clone(),
        );
        registry.register(
            "vcpus_free",
            "vCPUs not reserved by a job",
            metrics.vcpus_free.clone(),
        );
        registry.register(
            "jobs_running",
            "Jobs whose launcher runs",
            metrics.jobs_running.clone(),
        );
        registry.register("claims", "Jobs claimed", metrics.claims.clone());
        registry.register(
            "launcher_failures",
            "Launchers that could not start",
            metrics.launcher_failures.clone(),
        );
        registry.register(
            "server_errors",
            "Failed requests to the server",
            metrics.server_errors.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Binds `addr` and serves the metrics until `stop`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(listen = %listener.local_addr()?, "serving metrics");
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(metrics);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    }))
}
