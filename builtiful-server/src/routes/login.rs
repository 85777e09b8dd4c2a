//! Signing in with GitHub: the browser flow for the web frontend, the PKCE code exchange for
//! the CLI, the page that shows a headless CLI its code, and GitHub's post-install setup URL.

use axum::extract::State;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use builtiful_core::{Message, Timestamp, TokenRequest, TokenResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;
use utoipa::IntoParams;

use crate::accounts;
use crate::app::{AppState, Settings};
use crate::auth::{MaybeSession, Token, hash_token, session_cookie, start_session};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::github::GitHubError;
use crate::store::OAuthState;

/// A login must come back from GitHub within this time.
const STATE_LIFETIME_SECS: u64 = 10 * 60;
/// The CLI must trade its one-time code within this time.
const LOGIN_CODE_LIFETIME_SECS: u64 = 5 * 60;

/// Where a login may send the person back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// A configured web frontend: the session travels as a cookie.
    Frontend,
    /// A CLI (loopback listener or the code page): the session is traded for a one-time code
    /// bound to a PKCE challenge.
    Cli,
}

fn destination(settings: &Settings, uri: &str) -> Option<Destination> {
    let url = Url::parse(uri).ok()?;
    if settings
        .frontend_origins
        .iter()
        .any(|origin| origin.origin() == url.origin())
    {
        return Some(Destination::Frontend);
    }
    // This server's own pages: the CLI's code page, or anything else (the setup URL, the
    // API itself in a browser); none of them can lead a person off-site.
    if url.origin() == settings.public_url.origin() {
        return Some(if url.path() == "/auth/cli/code" {
            Destination::Cli
        } else {
            Destination::Frontend
        });
    }
    let loopback = url.scheme() == "http"
        && matches!(url.host_str(), Some("127.0.0.1" | "localhost"))
        && url.port().is_some()
        && url.username().is_empty()
        && url.password().is_none();
    loopback.then_some(Destination::Cli)
}

/// A PKCE S256 challenge: 43 base64url characters (a SHA-256).
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `verifier` hashes to `challenge` (RFC 7636 S256), compared in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    valid_verifier && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

fn redirect(location: &str) -> ApiResult<Response> {
    let location = HeaderValue::try_from(location).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((StatusCode::FOUND, [(LOCATION, location)]).into_response())
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> ApiResult<String> {
    let mut url = Url::parse(uri).map_err(|e| ApiError::Internal(e.into()))?;
    url.query_pairs_mut().extend_pairs(pairs);
    Ok(url.into())
}

fn callback_url(settings: &Settings) -> Url {
    settings.public("/auth/github/callback")
}

/// The start of a login.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// Where to send the person afterwards: a configured frontend, or, for the CLI (with a
    /// `code_challenge`), `http://127.0.0.1:<port>/…`, `http://localhost:<port>/…` or this
    /// server's `/auth/cli/code`.
    redirect_uri: String,
    /// The CLI's PKCE S256 challenge.
    code_challenge: Option<String>,
}

/// Sends the person to GitHub to sign in.
#[utoipa::path(
    get,
    path = "/auth/github/login",
    tag = "auth",
    params(LoginQuery),
    responses(
        (status = 302, description = "To GitHub's authorization page"),
        (status = 400, description = "`redirect_uri` not allowed, or a CLI login without a valid `code_challenge`", body = Message)
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> ApiResult<Response> {
    let destination = destination(&state.settings, &query.redirect_uri).ok_or_else(|| {
        ApiError::bad_request("redirect_uri must be a configured frontend or a local CLI address")
    })?;
    let challenge = query.code_challenge.filter(|c| !c.is_empty());
    match (&challenge, destination) {
        (Some(c), _) if !is_s256_challenge(c) => {
            return Err(ApiError::bad_request(
                "code_challenge must be an S256 PKCE challenge (43 base64url characters)",
            ));
        }
        (None, Destination::Cli) => {
            return Err(ApiError::bad_request(
                "a CLI login needs a code_challenge (PKCE, S256)",
            ));
        }
        _ => {}
    }
    let state_token = Token::generate("");
    let now = state.now();
    state
        .store
        .create_oauth_state(&OAuthState {
            state_hash: state_token.hash(),
            redirect_uri: query.redirect_uri,
            code_challenge: challenge,
            expires_at: Timestamp::from_secs(now.secs_since_epoch + STATE_LIFETIME_SECS),
        })
        .await?;
    let url = state
        .github
        .authorize_url(state_token.expose(), &callback_url(&state.settings));
    redirect(url.as_str())
}

/// GitHub's redirect back.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The OAuth authorization code.
    code: Option<String>,
    /// The `state` this server sent.
    state: Option<String>,
    /// Set when the person declined (`access_denied`).
    error: Option<String>,
    /// GitHub's explanation of `error`.
    error_description: Option<String>,
}

/// Completes a login: checks and burns `state`, trades the code, records the user and their
/// tenants, and sends them back with a session (a cookie, or a one-time code for the CLI).
#[utoipa::path(
    get,
    path = "/auth/github/callback",
    tag = "auth",
    params(CallbackQuery),
    responses(
        (status = 302, description = "Back to `redirect_uri`, signed in (or with `error=access_denied`)"),
        (status = 400, description = "Unknown, used or expired `state`, or GitHub refused the code", body = Message),
        (status = 502, description = "GitHub did not answer as expected", body = Message)
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    Query(query): Query<CallbackQuery>,
) -> ApiResult<Response> {
    let expired = || {
        ApiError::bad_request(
            "This sign-in has expired or was already used; start again from the sign-in page",
        )
    };
    let state_param = query.state.ok_or_else(expired)?;
    let pending = state
        .store
        .take_oauth_state(hash_token(&state_param), state.now())
        .await?
        .ok_or_else(expired)?;
    if let Some(error) = query.error {
        let description = query
            .error_description
            .unwrap_or_else(|| "The sign-in was not completed on GitHub".into());
        return redirect(&with_query(
            &pending.redirect_uri,
            &[("error", &error), ("error_description", &description)],
        )?);
    }
    let code = query
        .code
        .ok_or_else(|| ApiError::bad_request("GitHub's redirect carried no code"))?;
    let token = state
        .github
        .exchange_code(&code, &callback_url(&state.settings))
        .await
        .map_err(|error| match error {
            GitHubError::OAuth { .. } => ApiError::bad_request(error.to_string()),
            other => {
                tracing::warn!(error = %other, "code exchange failed");
                ApiError::Status(
                    StatusCode::BAD_GATEWAY,
                    "GitHub did not answer as expected; try again shortly".into(),
                )
            }
        })?;
    let user = accounts::sign_in(&state, &token).await?;
    let now = state.now();
    if let Some(challenge) = pending.code_challenge {
        let code = Token::generate("");
        let expires_at = Timestamp::from_secs(now.secs_since_epoch + LOGIN_CODE_LIFETIME_SECS);
        state
            .store
            .create_login_code(code.hash(), user.id, &challenge, expires_at)
            .await?;
        return redirect(&with_query(
            &pending.redirect_uri,
            &[("code", code.expose())],
        )?);
    }
    let session = start_session(state.store.as_ref(), user.id, now).await?;
    let cookie = HeaderValue::try_from(session_cookie(&session, &state.settings))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = redirect(&pending.redirect_uri)?;
    response.headers_mut().insert(SET_COOKIE, cookie);
    Ok(response)
}

/// Trades a CLI login's one-time code and PKCE verifier for a session token.
#[utoipa::path(
    post,
    path = "/auth/token",
    tag = "auth",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A session", body = TokenResponse),
        (status = 400, description = "Unknown, used or expired code, or the verifier does not match", body = Message)
    )
)]
pub async fn token(
    State(state): State<AppState>,
    Json(request): Json<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let refused = || {
        ApiError::bad_request("The login code is invalid, expired or already used; log in again")
    };
    // Taking the code burns it, so a wrong verifier cannot be retried against it.
    let (user_id, challenge) = state
        .store
        .take_login_code(hash_token(&request.code), state.now())
        .await?
        .ok_or_else(refused)?;
    if !pkce_matches(&request.code_verifier, &challenge) {
        return Err(refused());
    }
    let user = state.store.user(user_id).await?.ok_or_else(refused)?;
    let session = start_session(state.store.as_ref(), user.id, state.now()).await?;
    Ok(Json(TokenResponse {
        token: session.expose().to_owned(),
        user,
    }))
}

/// The one-time code to show.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CodeQuery {
    /// The one-time login code.
    code: String,
}

/// Shows a headless CLI's one-time code, for the person to paste into `builtiful login --no-browser`.
#[utoipa::path(
    get,
    path = "/auth/cli/code",
    tag = "auth",
    params(CodeQuery),
    responses(
        (status = 200, description = "An HTML page showing the code", content_type = "text/html"),
        (status = 400, description = "Not a login code", body = Message)
    )
)]
pub async fn cli_code(Query(query): Query<CodeQuery>) -> ApiResult<Html<String>> {
    // Only base64url characters: nothing here needs escaping, and nothing else is echoed.
    let code = query.code;
    if code.is_empty()
        || code.len() > 100
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request("That is not a login code"));
    }
    Ok(Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Builtiful login code</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}\
         code{{display:block;font-size:1.4rem;padding:1rem;background:#f3f3f3;word-break:break-all}}</style></head>\
         <body><h1>Almost there</h1><p>Paste this code into the terminal where <b>builtiful login</b> is waiting:</p>\
         <code>{code}</code><p>It works once, within five minutes. You can close this page afterwards.</p></body></html>"
    )))
}

/// Where GitHub sends a person after they install the App.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SetupQuery {
    /// The installation (absent when a member only requested the App).
    installation_id: Option<i64>,
    /// `install`, `update` or `request`.
    setup_action: Option<String>,
}

/// After an App install: checks that the signed-in person really reaches the installation
/// (the id in the URL can be forged), then opens the tenant in the frontend.
#[utoipa::path(
    get,
    path = "/auth/github/setup",
    tag = "auth",
    params(SetupQuery),
    responses(
        (status = 200, description = "Installed (no frontend configured to open)", body = Message),
        (status = 302, description = "To the frontend's page of the tenant, or to sign in first"),
        (status = 404, description = "The installation is not one this person reaches", body = Message),
        (status = 502, description = "GitHub did not answer as expected", body = Message)
    )
)]
pub async fn setup(
    State(state): State<AppState>,
    MaybeSession(session): MaybeSession,
    Query(query): Query<SetupQuery>,
) -> ApiResult<Response> {
    let frontend = state.settings.frontend_origins.first().cloned();
    let Some(installation_id) = query.installation_id else {
        // `request`: a member asked an owner to install; nothing to open yet.
        let message =
            "The installation was requested; an owner of the organisation must approve it";
        return match frontend {
            Some(frontend) => redirect(frontend.as_str()),
            None => Ok(Json(Message::new(message)).into_response()),
        };
    };
    let user = match session {
        Some(hash) => state.store.session_user(hash, state.now()).await?,
        None => None,
    };
    let Some(user) = user else {
        // Sign in first, then come back here.
        let mut back = state.settings.public("/auth/github/setup");
        back.query_pairs_mut()
            .append_pair("installation_id", &installation_id.to_string())
            .append_pair(
                "setup_action",
                query.setup_action.as_deref().unwrap_or("install"),
            );
        let mut login = state.settings.public("/auth/github/login");
        login
            .query_pairs_mut()
            .append_pair("redirect_uri", back.as_str());
        return redirect(login.as_str());
    };
    let installations = accounts::installations_now(&state, &user)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "cannot verify an installation");
            ApiError::Status(
                StatusCode::BAD_GATEWAY,
                "GitHub did not answer as expected; try again shortly".into(),
            )
        })?
        .unwrap_or_default();
    if !installations
        .iter()
        .any(|i| i.github_installation_id == installation_id)
    {
        return Err(ApiError::not_found(format!(
            "Installation {installation_id} is not one you can reach on GitHub"
        )));
    }
    accounts::sync_memberships(&state, &user, &installations, state.now()).await?;
    let tenant = state
        .store
        .tenant_by_installation(installation_id)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("tenant missing right after its upsert"))
        })?;
    match frontend {
        Some(mut frontend) => {
            frontend.set_path(&format!("/tenants/{}", tenant.id));
            redirect(frontend.as_str())
        }
        None => Ok(Json(Message::new(format!(
            "Builtiful is installed on {}",
            tenant.github_login
        )))
        .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            public_url: Url::parse("https://api.builtiful.test").unwrap(),
            frontend_origins: vec![Url::parse("https://app.builtiful.test").unwrap()],
            organization_runners: false,
        }
    }

    #[test]
    fn login_destinations() {
        let s = settings();
        assert_eq!(
            destination(&s, "https://app.builtiful.test/after"),
            Some(Destination::Frontend)
        );
        assert_eq!(
            destination(&s, "http://127.0.0.1:4711/callback"),
            Some(Destination::Cli)
        );
        assert_eq!(
            destination(&s, "http://localhost:4711/"),
            Some(Destination::Cli)
        );
        assert_eq!(
            destination(&s, "https://api.builtiful.test/auth/cli/code"),
            Some(Destination::Cli)
        );
        assert_eq!(
            destination(&s, "https://api.builtiful.test/tenants"),
            Some(Destination::Frontend)
        );
        for refused in [
            "https://evil.example/",
            "http://127.0.0.1/no-port",
            "https://127.0.0.1:4711/",
            "http://127.0.0.1.evil.example:4711/",
            "http://user@127.0.0.1:4711/",
            "//evil.example",
            "not a url",
        ] {
            assert_eq!(destination(&s, refused), None, "{refused}");
        }
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(!is_s256_challenge("plain-challenge"));
    }
}
