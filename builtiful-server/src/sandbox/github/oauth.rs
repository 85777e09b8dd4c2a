//! The OAuth web flow of a GitHub App, as on github.com: `GET /login/oauth/authorize`
//! (a page with one "Continue as …" button per seeded user, or `login=<user>` to approve at
//! once for scripts) and `POST /login/oauth/access_token` (codes, PKCE, rotating refresh
//! tokens; errors with HTTP 200, form-encoded unless `Accept: application/json`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use super::time::plus_secs;
use super::world::{AuthCode, Expiring, World};
use super::{SimulatedGitHub, secrets};

/// An authorization code lives 10 minutes.
pub const CODE_SECS: u64 = 600;
/// A user access token lives 8 hours.
pub const USER_TOKEN_SECS: u64 = 28_800;
/// A refresh token lives about 6 months.
pub const REFRESH_TOKEN_SECS: u64 = 15_897_600;

/// The OAuth routes.
pub fn router() -> Router<Arc<SimulatedGitHub>> {
    Router::new()
        .route("/login/oauth/authorize", get(authorize))
        .route("/login/oauth/access_token", post(access_token))
}

/// An error page (GitHub shows HTML, not JSON, on its web side).
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Error · Simulated GitHub</title></head>\
         <body><h1>{}</h1><p>{}</p></body></html>",
        status.as_u16(),
        escape(message)
    );
    (status, Html(body)).into_response()
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `redirect_uri` with the query parameters `pairs` added.
fn redirect_with(redirect_uri: &Url, pairs: &[(&str, &str)]) -> Response {
    let mut target = redirect_uri.clone();
    {
        let mut query = target.query_pairs_mut();
        for (key, value) in pairs {
            query.append_pair(key, value);
        }
    }
    // 302, as GitHub answers (axum's `Redirect::to` would say 303).
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

async fn authorize(
    State(sim): State<Arc<SimulatedGitHub>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    if param("client_id") != Some(sim.config.client_id.as_str()) {
        return error_page(
            StatusCode::NOT_FOUND,
            "No application is registered with this client_id.",
        );
    }
    // GitHub falls back to the App's callback URL; the simulator has none registered, so
    // the request must name one.
    let Some(redirect_uri) = param("redirect_uri").and_then(|u| Url::parse(u).ok()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The redirect_uri is missing or is not an absolute URL.",
        );
    };
    if !matches!(redirect_uri.scheme(), "http" | "https") {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The redirect_uri MUST match the registered callback URL for this application.",
        );
    }
    let challenge = param("code_challenge");
    if challenge.is_some() && param("code_challenge_method") != Some("S256") {
        return error_page(
            StatusCode::BAD_REQUEST,
            "code_challenge_method must be S256 when a code_challenge is given.",
        );
    }
    let state = param("state");
    match param("login") {
        Some(login) => {
            let now = sim.now();
            let mut world = sim.world();
            let Some(user) = world
                .users
                .iter()
                .position(|u| u.login.eq_ignore_ascii_case(login))
            else {
                return error_page(StatusCode::NOT_FOUND, &format!("There is no user {login}."));
            };
            let code = secrets::hex(20);
            world.codes.insert(
                secrets::hash(&code),
                AuthCode {
                    user,
                    redirect_uri: param("redirect_uri").map(str::to_owned),
                    code_challenge: challenge.map(str::to_owned),
                    expires_at: plus_secs(now, CODE_SECS),
                },
            );
            let mut pairs = vec![("code", code.as_str())];
            pairs.extend(state.map(|s| ("state", s)));
            redirect_with(&redirect_uri, &pairs)
        }
        None => consent_page(
            &sim.world(),
            &sim.config.base_url,
            &params,
            &redirect_uri,
            state,
        ),
    }
}

/// The page a person sees: one button per seeded user, and Cancel.
fn consent_page(
    world: &World,
    base_url: &Url,
    params: &HashMap<String, String>,
    redirect_uri: &Url,
    state: Option<&str>,
) -> Response {
    let mut buttons = String::new();
    for user in &world.users {
        let mut approve = Url::parse(&format!(
            "{}/login/oauth/authorize",
            base_url.as_str().trim_end_matches('/')
        ))
        .expect("the base URL is absolute");
        {
            let mut query = approve.query_pairs_mut();
            let mut keys: Vec<_> = params.keys().filter(|k| *k != "login").collect();
            keys.sort();
            for key in keys {
                query.append_pair(key, &params[key]);
            }
            query.append_pair("login", &user.login);
        }
        let orgs: Vec<&str> = user
            .orgs
            .iter()
            .map(|o| world.orgs[*o].login.as_str())
            .collect();
        let _ = write!(
            buttons,
            "<li><a class=\"button\" href=\"{}\">Continue as {}</a> <small>({}, reaches {})</small></li>",
            escape(approve.as_str()),
            escape(&user.login),
            escape(&user.name),
            escape(&orgs.join(", "))
        );
    }
    let mut cancel = redirect_uri.clone();
    {
        let mut query = cancel.query_pairs_mut();
        query.append_pair("error", "access_denied");
        query.append_pair(
            "error_description",
            "The user has denied your application access.",
        );
        query.append_pair(
            "error_uri",
            "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied",
        );
        if let Some(state) = state {
            query.append_pair("state", state);
        }
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Authorize application · Simulated GitHub</title>\
         <style>body{{font-family:sans-serif;max-width:36em;margin:4em auto}}ul{{list-style:none;padding:0}}\
         li{{margin:1em 0}}.button{{background:#1f883d;color:#fff;padding:.5em 1em;border-radius:6px;text-decoration:none}}</style></head>\
         <body><h1>Authorize Builtiful (sandbox)</h1>\
         <p>This is the simulated GitHub of the Builtiful sandbox. Pick who you are:</p>\
         <ul>{buttons}</ul><p><a href=\"{}\">Cancel</a></p></body></html>",
        escape(cancel.as_str())
    );
    Html(page).into_response()
}

/// A token-endpoint error, answered with HTTP 200 like GitHub.
#[derive(Debug, Clone, Copy)]
enum TokenError {
    BadVerificationCode(&'static str),
    IncorrectClientCredentials,
    RedirectUriMismatch,
    BadRefreshToken,
    UnsupportedGrantType,
}

impl TokenError {
    /// `error`, `error_description` and `error_uri`, GitHub's words.
    fn fields(self) -> [(&'static str, &'static str); 3] {
        const TROUBLESHOOTING: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors";
        let (error, description, uri) = match self {
            Self::BadVerificationCode(description) => (
                "bad_verification_code",
                description,
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
            ),
            Self::IncorrectClientCredentials => (
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials",
            ),
            Self::RedirectUriMismatch => (
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#redirect-uri-mismatch",
            ),
            Self::BadRefreshToken => (
                "bad_refresh_token",
                "The refresh token passed is incorrect or expired.",
                TROUBLESHOOTING,
            ),
            Self::UnsupportedGrantType => (
                "unsupported_grant_type",
                "The grant type is not supported.",
                TROUBLESHOOTING,
            ),
        };
        [
            ("error", error),
            ("error_description", description),
            ("error_uri", uri),
        ]
    }
}

/// Answers `fields` as JSON (`Accept: application/json`) or form-encoded (GitHub's default).
fn token_response(headers: &HeaderMap, fields: &[(&str, String)]) -> Response {
    let wants_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"));
    if wants_json {
        let mut map = serde_json::Map::new();
        for (key, value) in fields {
            // GitHub sends the lifetimes as numbers in JSON.
            let value = match *key {
                "expires_in" | "refresh_token_expires_in" => value
                    .parse::<u64>()
                    .map_or_else(|_| value.clone().into(), Into::into),
                _ => value.clone().into(),
            };
            map.insert((*key).to_owned(), value);
        }
        axum::Json(serde_json::Value::Object(map)).into_response()
    } else {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        (
            [(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            body,
        )
            .into_response()
    }
}

/// The request's parameters: the query string, then the body (JSON object or form).
fn token_params(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    let mut params: HashMap<String, String> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
            for (key, value) in map {
                let value = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                params.insert(key, value);
            }
        }
    } else {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    params
}

async fn access_token(
    State(sim): State<Arc<SimulatedGitHub>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params = token_params(&headers, query.as_deref(), &body);
    let result = sim.exchange(&params);
    match result {
        Ok(fields) => token_response(&headers, &fields),
        Err(error) => {
            let fields: Vec<(&str, String)> = error
                .fields()
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect();
            token_response(&headers, &fields)
        }
    }
}

impl SimulatedGitHub {
    /// Checks the client and the grant, and issues a user token pair.
    fn exchange(
        &self,
        params: &HashMap<String, String>,
    ) -> Result<Vec<(&'static str, String)>, TokenError> {
        let get = |name: &str| {
            params
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let client_ok = get("client_id") == Some(self.config.client_id.as_str())
            && bool::from(
                get("client_secret")
                    .unwrap_or("")
                    .as_bytes()
                    .ct_eq(self.config.client_secret.as_bytes()),
            );
        if !client_ok {
            return Err(TokenError::IncorrectClientCredentials);
        }
        let now = self.now();
        let mut world = self.world();
        let user = match get("grant_type") {
            Some("refresh_token") => {
                // Refresh tokens rotate: the one used is spent.
                let token = get("refresh_token").ok_or(TokenError::BadRefreshToken)?;
                world
                    .refresh_tokens
                    .remove(&secrets::hash(token))
                    .filter(|t| t.expires_at > now)
                    .ok_or(TokenError::BadRefreshToken)?
                    .subject
            }
            None | Some("authorization_code") => {
                const BAD_CODE: &str = "The code passed is incorrect or expired.";
                let code = get("code").ok_or(TokenError::BadVerificationCode(BAD_CODE))?;
                // One-time: whatever happens next, this code is spent.
                let grant = world
                    .codes
                    .remove(&secrets::hash(code))
                    .filter(|c| c.expires_at > now)
                    .ok_or(TokenError::BadVerificationCode(BAD_CODE))?;
                if let (Some(given), Some(expected)) = (get("redirect_uri"), &grant.redirect_uri)
                    && given != expected
                {
                    return Err(TokenError::RedirectUriMismatch);
                }
                if let Some(challenge) = &grant.code_challenge {
                    let verifier = get("code_verifier").unwrap_or("");
                    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                    if !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                        return Err(TokenError::BadVerificationCode(
                            "The code_verifier does not match the code_challenge supplied in the authorization request.",
                        ));
                    }
                }
                grant.user
            }
            Some(_) => return Err(TokenError::UnsupportedGrantType),
        };
        let access = secrets::token("ghu_", 36);
        let refresh = secrets::token("ghr_", 76);
        world.user_tokens.insert(
            secrets::hash(&access),
            Expiring {
                subject: user,
                expires_at: plus_secs(now, USER_TOKEN_SECS),
            },
        );
        world.refresh_tokens.insert(
            secrets::hash(&refresh),
            Expiring {
                subject: user,
                expires_at: plus_secs(now, REFRESH_TOKEN_SECS),
            },
        );
        Ok(vec![
            ("access_token", access),
            ("expires_in", USER_TOKEN_SECS.to_string()),
            ("refresh_token", refresh),
            ("refresh_token_expires_in", REFRESH_TOKEN_SECS.to_string()),
            ("scope", String::new()),
            ("token_type", "bearer".to_owned()),
        ])
    }
}
