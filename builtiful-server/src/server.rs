//! Assembling the router and running it: `serve(listener, app, shutdown)`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::app::{App, AppState};
use crate::error::ApiError;
use crate::routes;

/// The largest request body the API accepts (webhooks have their own, larger limit).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How often expired sessions and used confirmation links are purged.
const PURGE_INTERVAL: Duration = Duration::from_mins(15);

/// The complete router: API routes, error fallbacks, and the middleware stack.
pub fn router(state: AppState) -> Router {
    let (api, _) = routes::api().split_for_parts();
    let mut router = api
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::not_found(format!("No route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::Status(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_panic| -> Response {
            // The panic itself is printed by the panic hook; answer like any other 500.
            ApiError::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let route = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or_else(
                        || request.uri().path().to_owned(),
                        |p| p.as_str().to_owned(),
                    );
                tracing::info_span!("request", method = %request.method(), route = %route)
            }),
        );
    if let Some(cors) = cors(&state.settings.frontend_origins) {
        router = router.layer(cors);
    }
    let sandbox = state.sandbox.clone();
    let router = router.with_state(state);
    // The simulated GitHub stands apart from the API: its own routes, errors and limits.
    match sandbox {
        Some(simulator) => router.nest(crate::sandbox::MOUNT_PATH, simulator.router()),
        None => router,
    }
}

/// CORS for the configured frontends only, with credentials (the session cookie).
fn cors(origins: &[url::Url]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|url| HeaderValue::try_from(url.origin().ascii_serialization()).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_hours(1)),
    )
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish, stops the background tasks and closes the database.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState(app);
    let tasks = TaskTracker::new();
    tasks.spawn(purge_expired(state.clone(), shutdown.clone()));
    if let Some(simulator) = state.sandbox.clone() {
        tasks.spawn(simulator.run(shutdown.clone()));
    }
    if let Some(every) = state.reconcile_every {
        tasks.spawn(crate::dispatch::reconciler::run(
            state.clone(),
            every,
            shutdown.clone(),
        ));
    }
    {
        let (store, signal, shutdown) = (
            state.store.clone(),
            state.dispatcher.jobs_signal(),
            shutdown.clone(),
        );
        tasks.spawn(async move { store.listen_for_jobs_signal(signal, shutdown).await });
    }

    let result = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;

    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    state.store.close().await;
    result.map_err(Into::into)
}

async fn purge_expired(state: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match state.store.purge_expired(state.now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired sessions and links"),
            Err(error) => tracing::warn!(error = %error, "purging expired rows failed"),
        }
    }
}
