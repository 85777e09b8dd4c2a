//! `CurrentUser` and `Provisioner`: who is calling, read from the bearer token or the cookie.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;
use builtiful_core::User;

use super::SESSION_COOKIE;
use super::token::{PROVISIONER_PREFIX, SESSION_PREFIX, hash_token};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::{ProvisionerToken, TokenHash};

/// The signed-in user of a request, from `Authorization: Bearer bfs_…` or the session cookie.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user.
    pub user: User,
    /// Their session, so it can be ended.
    pub session: TokenHash,
}

/// The session token a request carries, valid or not (for logout, which works either way).
#[derive(Debug, Clone, Copy)]
pub struct MaybeSession(pub Option<TokenHash>);

/// The provisioner making a request, from `Authorization: Bearer bfp_…`.
#[derive(Debug, Clone)]
pub struct Provisioner(pub ProvisionerToken);

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn session_token(parts: &Parts) -> Option<String> {
    if let Some(token) = bearer(parts).filter(|t| t.starts_with(SESSION_PREFIX)) {
        return Some(token.to_owned());
    }
    CookieJar::from_headers(&parts.headers)
        .get(SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|token| token.starts_with(SESSION_PREFIX))
}

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Self(session_token(parts).map(|token| hash_token(&token))))
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError::Unauthorized(
                "Authentication required: sign in, or send a session token as `Authorization: Bearer bfs_…`".into(),
            )
        };
        let session = session_token(parts)
            .map(|token| hash_token(&token))
            .ok_or_else(unauthorized)?;
        let user = state
            .store
            .session_user(session, state.now())
            .await?
            .ok_or_else(unauthorized)?;
        Ok(Self { user, session })
    }
}

impl FromRequestParts<AppState> for Provisioner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError::Unauthorized(
                "A valid provisioner token is required as `Authorization: Bearer bfp_…`".into(),
            )
        };
        let token = bearer(parts)
            .filter(|t| t.starts_with(PROVISIONER_PREFIX))
            .ok_or_else(unauthorized)?;
        let provisioner = state
            .store
            .authenticate_provisioner(hash_token(token), state.now())
            .await?
            .ok_or_else(unauthorized)?;
        Ok(Self(provisioner))
    }
}
