//! Prometheus metrics, one registry per server (no global state, so tests can run several).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::app::AppState;

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`…
    pub method: String,
    /// The matched route (`/tenants/{tenant_id}/jobs`), never the raw path: ids would make
    /// every request a new series.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of latency histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `POST`…
    pub method: String,
    /// The matched route.
    pub route: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    claims: Family<ClaimLabels, Counter>,
    dispatch_latency: Histogram,
    /// Claims undone because GitHub would not register a runner for a while.
    pub provisioning_failures: Counter,
}

/// Labels of claim metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// `Amd64` or `Arm64`.
    pub architecture: String,
    /// The job's vCPUs.
    pub vcpus: u32,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("builtiful");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                60.0,
            ])
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route",
            latency.clone(),
        );
        let claims = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "claims",
            "Jobs handed to hosts, by architecture and size",
            claims.clone(),
        );
        let dispatch_latency = Histogram::new([
            0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
        ]);
        registry.register(
            "dispatch_latency_seconds",
            "Time from a job being queued to a host claiming it",
            dispatch_latency.clone(),
        );
        let provisioning_failures = Counter::default();
        registry.register(
            "provisioning_failures",
            "Claims undone because GitHub would not register a runner",
            provisioning_failures.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            claims,
            dispatch_latency,
            provisioning_failures,
        }
    }
}

impl Metrics {
    /// The registry, for other parts of the server to register their metrics in.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts a claim and how long its job waited.
    pub fn observe_claim(
        &self,
        claimed: &crate::store::ClaimedJob,
        now: builtiful_core::Timestamp,
    ) {
        let job = &claimed.job;
        self.claims
            .get_or_create(&ClaimLabels {
                architecture: job.cpu_architecture.to_string(),
                vcpus: job.vcpus,
            })
            .inc();
        let waited = now.as_micros().saturating_sub(job.created_at.as_micros());
        #[allow(clippy::cast_precision_loss)]
        self.dispatch_latency.observe(waited as f64 / 1e6);
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .unwrap_or_else(|e| unreachable!("writing to a String cannot fail: {e}"));
        text
    }
}

/// Middleware that counts and times every request by its matched route.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let metrics: &Arc<Metrics> = &state.metrics;
    metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
