//! The REST API under `/api` (api.github.com): GitHub's error bodies, authentication (user
//! tokens, App JWTs, installation tokens), rate-limit headers, pagination, and the user
//! and App endpoints. Runner, job and hook-delivery endpoints live in [`super::runners`]
//! and [`super::webhooks`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::shapes::{self, APP_EVENTS, APP_SLUG};
use super::time::{iso8601, plus_secs};
use super::world::{Expiring, SEED_TIME, World};
use super::{RateWindow, SimulatedGitHub, runners, secrets, webhooks};

/// Requests per hour per credential, as for GitHub user and installation tokens.
const RATE_LIMIT: u64 = 5_000;
/// Requests per hour without credentials.
const ANONYMOUS_RATE_LIMIT: u64 = 60;
/// An installation token lives one hour.
pub const INSTALLATION_TOKEN_SECS: u64 = 3_600;
/// The longest an App JWT may live (`exp` − `iat`).
const MAX_JWT_LIFETIME_SECS: i64 = 600;
/// How far in the future `iat` may be (clock drift).
const JWT_DRIFT_SECS: i64 = 60;

/// The documentation GitHub links from its error bodies.
const DOCS: &str = "https://docs.github.com/rest";

/// An error answered the way api.github.com answers it:
/// `{"message", "documentation_url", "status"}`.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// 401 without credentials.
    #[error("Requires authentication")]
    RequiresAuthentication,
    /// 401 with a credential that is unknown or expired.
    #[error("Bad credentials")]
    BadCredentials,
    /// 401 with an App JWT that is wrong; the message says why, as GitHub's does.
    #[error("{0}")]
    BadJwt(&'static str),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404: absent, or not visible to the caller.
    #[error("Not Found")]
    NotFound,
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 422.
    #[error("{0}")]
    Unprocessable(String),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 403 with `x-ratelimit-remaining: 0`.
    #[error("API rate limit exceeded. Check out the documentation for more details.")]
    RateLimited,
}

impl GitHubError {
    /// The status GitHub answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::RequiresAuthentication | Self::BadCredentials | Self::BadJwt(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden(_) | Self::RateLimited => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for GitHubError {
    fn into_response(self) -> Response {
        let status = self.status();
        let documentation_url = match self {
            Self::RateLimited => {
                "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
            }
            Self::BadJwt(_) => {
                "https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app"
            }
            _ => DOCS,
        };
        let body = json!({
            "message": self.to_string(),
            "documentation_url": documentation_url,
            "status": status.as_str(),
        });
        (status, Json(body)).into_response()
    }
}

/// The routes under `/api`.
pub fn router(sim: &Arc<SimulatedGitHub>) -> Router<Arc<SimulatedGitHub>> {
    Router::new()
        .route("/user", get(user))
        .route("/user/emails", get(emails))
        .route("/user/installations", get(user_installations))
        .route("/app", get(app))
        .route("/app/installations", get(app_installations))
        .route(
            "/app/installations/{installation_id}",
            get(app_installation),
        )
        .route(
            "/app/installations/{installation_id}/access_tokens",
            post(installation_token),
        )
        .merge(runners::router())
        .merge(webhooks::router())
        .fallback(|| async { GitHubError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(sim),
            rate_limit,
        ))
}

/// The credential of a request: `Authorization: Bearer …` or `Authorization: token …`.
fn credential(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| credential.trim())
}

/// Counts the request against its credential's hourly window and adds GitHub's
/// `x-ratelimit-*` headers; over the limit answers 403 like GitHub.
async fn rate_limit(
    State(sim): State<Arc<SimulatedGitHub>>,
    request: Request,
    next: Next,
) -> Response {
    let credential = credential(request.headers());
    let limit = if credential.is_some() {
        RATE_LIMIT
    } else {
        ANONYMOUS_RATE_LIMIT
    };
    let key = secrets::hash(credential.unwrap_or(""));
    let now = sim.now().secs_since_epoch;
    let window = {
        let mut windows = sim
            .rate_windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !windows.contains_key(&key) {
            // Forget finished windows whenever a new one opens, so memory stays bounded.
            windows.retain(|_, window| window.reset > now);
        }
        let window = windows.entry(key).or_insert(RateWindow {
            used: 0,
            reset: now + 3_600,
        });
        if window.reset <= now {
            *window = RateWindow {
                used: 0,
                reset: now + 3_600,
            };
        }
        window.used += 1;
        *window
    };
    let mut response = if window.used > limit {
        GitHubError::RateLimited.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    let used = window.used.min(limit);
    for (name, value) in [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", (limit - used).to_string()),
        ("x-ratelimit-reset", window.reset.to_string()),
        ("x-ratelimit-used", used.to_string()),
        ("x-ratelimit-resource", "core".to_owned()),
        ("x-github-api-version-selected", "2022-11-28".to_owned()),
        ("x-github-media-type", "github.v3; format=json".to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// What the live token the request presents grants, among `tokens` (user or installation).
fn live_subject<T: Copy>(
    parts: &Parts,
    sim: &SimulatedGitHub,
    tokens: fn(&World) -> &HashMap<secrets::Hash, Expiring<T>>,
) -> Result<T, GitHubError> {
    let token = credential(&parts.headers).ok_or(GitHubError::RequiresAuthentication)?;
    let now = sim.now();
    let world = sim.world();
    tokens(&world)
        .get(&secrets::hash(token))
        .filter(|t| t.expires_at > now)
        .map(|t| t.subject)
        .ok_or(GitHubError::BadCredentials)
}

/// A request made with a live user access token (`ghu_`): the user's index.
#[derive(Debug, Clone, Copy)]
pub struct UserAuth(pub usize);

impl FromRequestParts<Arc<SimulatedGitHub>> for UserAuth {
    type Rejection = GitHubError;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &Arc<SimulatedGitHub>,
    ) -> Result<Self, GitHubError> {
        live_subject(parts, sim, |world| &world.user_tokens).map(Self)
    }
}

/// A request made with a live installation token (`ghs_`): the installation's id.
#[derive(Debug, Clone, Copy)]
pub struct InstallationAuth(pub u64);

impl FromRequestParts<Arc<SimulatedGitHub>> for InstallationAuth {
    type Rejection = GitHubError;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &Arc<SimulatedGitHub>,
    ) -> Result<Self, GitHubError> {
        live_subject(parts, sim, |world| &world.installation_tokens).map(Self)
    }
}

/// A request made with a valid App JWT.
#[derive(Debug, Clone, Copy)]
pub struct AppAuth;

#[derive(Deserialize)]
struct AppClaims {
    iss: Option<Value>,
    iat: Option<i64>,
    exp: Option<i64>,
}

impl FromRequestParts<Arc<SimulatedGitHub>> for AppAuth {
    type Rejection = GitHubError;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &Arc<SimulatedGitHub>,
    ) -> Result<Self, GitHubError> {
        let token = credential(&parts.headers)
            .ok_or(GitHubError::BadJwt("A JSON web token could not be decoded"))?;
        sim.verify_app_jwt(token)?;
        Ok(Self)
    }
}

impl SimulatedGitHub {
    /// Checks an App JWT as GitHub does: RS256 signed by the App's key, `iss` = the App id
    /// or client id, `iat` at most a minute in the future, `exp` in the future and at most
    /// ten minutes after `iat`.
    fn verify_app_jwt(&self, token: &str) -> Result<(), GitHubError> {
        let mut validation = Validation::new(Algorithm::RS256);
        // Times are checked below against the simulator's clock, with GitHub's messages.
        validation.validate_exp = false;
        validation.required_spec_claims = HashSet::new();
        let claims = jsonwebtoken::decode::<AppClaims>(token, &self.app_key, &validation)
            .map_err(|_| GitHubError::BadJwt("A JSON web token could not be decoded"))?
            .claims;
        let app_id = self.config.app_id.to_string();
        let issuer_ok = match &claims.iss {
            Some(Value::Number(n)) => n.as_u64() == Some(self.config.app_id),
            Some(Value::String(s)) => *s == app_id || *s == self.config.client_id,
            _ => false,
        };
        if !issuer_ok {
            return Err(GitHubError::BadJwt("Integration not found"));
        }
        let now = i64::try_from(self.now().secs_since_epoch).unwrap_or(i64::MAX);
        let Some(iat) = claims.iat.filter(|iat| *iat <= now + JWT_DRIFT_SECS) else {
            return Err(GitHubError::BadJwt(
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            ));
        };
        let Some(exp) = claims.exp.filter(|exp| *exp > now) else {
            return Err(GitHubError::BadJwt(
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            ));
        };
        if exp - iat > MAX_JWT_LIFETIME_SECS {
            return Err(GitHubError::BadJwt(
                "'Expiration time' claim ('exp') is too far in the future",
            ));
        }
        Ok(())
    }
}

/// `per_page` and `page`, GitHub's page-number pagination.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    per_page: Option<String>,
    page: Option<String>,
}

impl PageQuery {
    /// `per_page`: 30 unless given, at most 100 (GitHub clamps larger values).
    fn per_page(&self) -> usize {
        self.per_page
            .as_deref()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .map_or(30, |n| n.min(100))
    }

    /// `page`: from 1.
    fn page(&self) -> usize {
        self.page
            .as_deref()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1)
    }
}

/// Cuts one page out of `items` and makes GitHub's `Link` header for `url` (with any other
/// query parameters in `params`).
pub fn paginate<T>(
    items: Vec<T>,
    query: &PageQuery,
    url: &str,
    params: &[(&str, &str)],
) -> (Vec<T>, Option<String>) {
    let per_page = query.per_page();
    let page = query.page();
    let last = items.len().div_ceil(per_page).max(1);
    let page_items = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let link_to = |n: usize, rel: &str| {
        let mut target = url::Url::parse(url).expect("the simulator's URLs are absolute");
        {
            let mut pairs = target.query_pairs_mut();
            for (key, value) in params {
                pairs.append_pair(key, value);
            }
            pairs.append_pair("per_page", &per_page.to_string());
            pairs.append_pair("page", &n.to_string());
        }
        format!("<{target}>; rel=\"{rel}\"")
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link_to(page - 1, "prev"));
    }
    if page < last {
        links.push(link_to(page + 1, "next"));
        links.push(link_to(last, "last"));
    }
    if page > 1 {
        links.push(link_to(1, "first"));
    }
    (page_items, (!links.is_empty()).then(|| links.join(", ")))
}

/// A JSON body with an optional `Link` header.
pub fn with_link(body: Value, link: Option<String>) -> Response {
    let mut response = Json(body).into_response();
    if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// Parses a numeric path id; GitHub answers 404 for ids that are not numbers.
pub fn parse_id(raw: &str) -> Result<u64, GitHubError> {
    raw.parse().map_err(|_| GitHubError::NotFound)
}

async fn user(State(sim): State<Arc<SimulatedGitHub>>, UserAuth(user): UserAuth) -> Json<Value> {
    Json(shapes::private_user(&sim.world(), user))
}

async fn emails(State(sim): State<Arc<SimulatedGitHub>>, UserAuth(user): UserAuth) -> Json<Value> {
    let world = sim.world();
    Json(json!([{
        "email": world.users[user].email,
        "primary": true,
        "verified": true,
        "visibility": "public",
    }]))
}

/// The installations of this App that `user` can reach: those on their organisations.
fn reachable_installations(world: &World, user: usize) -> Vec<Value> {
    world
        .installations
        .iter()
        .filter(|i| world.users[user].orgs.contains(&i.org))
        .map(|i| shapes::installation(world, i))
        .collect()
}

async fn user_installations(
    State(sim): State<Arc<SimulatedGitHub>>,
    UserAuth(user): UserAuth,
    Query(page): Query<PageQuery>,
) -> Response {
    let world = sim.world();
    let all = reachable_installations(&world, user);
    let total = all.len();
    let url = format!("{}/user/installations", world.links.api);
    let (items, link) = paginate(all, &page, &url, &[]);
    with_link(json!({"total_count": total, "installations": items}), link)
}

async fn app(State(sim): State<Arc<SimulatedGitHub>>, _: AppAuth) -> Json<Value> {
    let world = sim.world();
    let web = &world.links.web;
    Json(json!({
        "id": world.app_id,
        "client_id": sim.config.client_id,
        "slug": APP_SLUG,
        "node_id": shapes::node_id("App", world.app_id),
        "owner": shapes::org_account(&world, 0),
        "name": "Builtiful (sandbox)",
        "description": "Ephemeral, right-sized GitHub Actions runners: the simulated App of the sandbox.",
        "external_url": web,
        "html_url": format!("{web}/apps/{APP_SLUG}"),
        "created_at": iso8601(SEED_TIME),
        "updated_at": iso8601(SEED_TIME),
        "permissions": shapes::app_permissions(),
        "events": APP_EVENTS,
        "installations_count": world.installations.len(),
    }))
}

async fn app_installations(
    State(sim): State<Arc<SimulatedGitHub>>,
    _: AppAuth,
    Query(page): Query<PageQuery>,
) -> Response {
    let world = sim.world();
    let all: Vec<Value> = world
        .installations
        .iter()
        .map(|i| shapes::installation(&world, i))
        .collect();
    let url = format!("{}/app/installations", world.links.api);
    let (items, link) = paginate(all, &page, &url, &[]);
    with_link(Value::Array(items), link)
}

async fn app_installation(
    State(sim): State<Arc<SimulatedGitHub>>,
    _: AppAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, GitHubError> {
    let id = parse_id(&id)?;
    let world = sim.world();
    let installation = world.installation(id).ok_or(GitHubError::NotFound)?;
    Ok(Json(shapes::installation(&world, installation)))
}

async fn installation_token(
    State(sim): State<Arc<SimulatedGitHub>>,
    _: AppAuth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), GitHubError> {
    let id = parse_id(&id)?;
    let now = sim.now();
    let mut world = sim.world();
    let installation = world.installation(id).ok_or(GitHubError::NotFound)?;
    if installation.suspended_at.is_some() {
        return Err(GitHubError::Forbidden(
            "This installation has been suspended".into(),
        ));
    }
    let token = secrets::token("ghs_", 36);
    let expires_at = plus_secs(now, INSTALLATION_TOKEN_SECS);
    world.installation_tokens.insert(
        secrets::hash(&token),
        Expiring {
            subject: id,
            expires_at,
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": iso8601(expires_at),
            "permissions": shapes::app_permissions(),
            "repository_selection": "all",
        })),
    ))
}
