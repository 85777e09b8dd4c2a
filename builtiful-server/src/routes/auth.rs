//! Signing out. (Signing in with GitHub lives with the GitHub integration.)

use axum::extract::State;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use builtiful_core::Message;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::auth::{MaybeSession, cleared_session_cookie};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};

/// Where to go after signing out.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutQuery {
    /// Full URI to redirect to after logging out; must be one of the configured frontends.
    redirect_uri: Option<String>,
}

/// Ends the session server-side, clears the cookie, and redirects when asked.
#[utoipa::path(
    method(get, post),
    path = "/auth/logout",
    tag = "auth",
    params(LogoutQuery),
    responses(
        (status = 200, description = "Logged out", body = Message),
        (status = 302, description = "Logged out; redirecting to `redirect_uri`"),
        (status = 400, description = "`redirect_uri` is not an allowed frontend", body = Message)
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    MaybeSession(session): MaybeSession,
    Query(query): Query<LogoutQuery>,
) -> ApiResult<Response> {
    if let Some(uri) = &query.redirect_uri
        && !state.settings.is_frontend_url(uri)
    {
        return Err(ApiError::bad_request(
            "redirect_uri must be a URL of a configured frontend",
        ));
    }
    if let Some(session) = session {
        state.store.delete_session(session).await?;
    }
    let cookie = HeaderValue::try_from(cleared_session_cookie(&state.settings))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = match query.redirect_uri {
        Some(uri) => {
            let location = HeaderValue::try_from(uri).map_err(|e| ApiError::Internal(e.into()))?;
            (StatusCode::FOUND, [(LOCATION, location)]).into_response()
        }
        None => Json(Message::new("Successfully logged out")).into_response(),
    };
    response.headers_mut().insert(SET_COOKIE, cookie);
    Ok(response)
}
