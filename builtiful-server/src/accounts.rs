//! People and their tenants, as GitHub knows them: signing a user in from a GitHub token, and
//! re-reading which installations they can reach, at most every ten minutes, so someone removed
//! from an organisation loses access within that window.

use builtiful_core::{Timestamp, User};

use crate::app::AppState;
use crate::error::ApiError;
use crate::github::{GitHubError, UserToken};
use crate::store::{Installation, SealedGitHubToken, UserProfile};

/// How long memberships read from GitHub are trusted before they are read again.
pub const MEMBERSHIP_TTL_SECS: u64 = 10 * 60;

/// Renew a user token this long before it expires.
const TOKEN_RENEW_MARGIN_SECS: u64 = 60;

fn github_unavailable(error: &GitHubError) -> ApiError {
    tracing::warn!(error = %error, "GitHub call failed");
    ApiError::Status(
        axum::http::StatusCode::BAD_GATEWAY,
        "GitHub did not answer as expected; try again shortly".into(),
    )
}

/// Signs a person in with the token GitHub gave: reads who they are and which installations
/// they reach, records both, and keeps the token (sealed) for later membership checks.
pub async fn sign_in(state: &AppState, token: &UserToken) -> Result<User, ApiError> {
    let github = &state.github;
    let person = github
        .user(&token.access_token)
        .await
        .map_err(|e| github_unavailable(&e))?;
    // The App may lack "Email addresses: read": an unknown address is not a failed sign-in.
    let email = github
        .primary_email(&token.access_token)
        .await
        .unwrap_or_else(|error| {
            tracing::info!(error = %error, "no email address from GitHub");
            None
        });
    let installations = github
        .user_installations(&token.access_token)
        .await
        .map_err(|e| github_unavailable(&e))?;
    let now = state.now();
    let profile = UserProfile {
        github_id: person.id,
        github_login: person.login,
        github_name: person.name,
        email,
    };
    let user = state.store.upsert_user(&profile, now).await?;
    keep_token(state, &user, token).await?;
    sync_memberships(state, &user, &installations, now).await?;
    tracing::info!(user.id = %user.id, tenants = installations.len(), "signed in with GitHub");
    Ok(user)
}

async fn keep_token(state: &AppState, user: &User, token: &UserToken) -> Result<(), ApiError> {
    let sealed = SealedGitHubToken {
        access_token: state.sealer.seal(token.access_token.as_bytes()),
        refresh_token: token
            .refresh_token
            .as_ref()
            .map(|r| state.sealer.seal(r.as_bytes())),
        expires_at: token.expires_at,
    };
    state.store.set_github_token(user.id, &sealed).await?;
    Ok(())
}

/// Makes the user a member of exactly these installations' tenants.
pub async fn sync_memberships(
    state: &AppState,
    user: &User,
    installations: &[Installation],
    now: Timestamp,
) -> Result<(), ApiError> {
    let mut tenant_ids = Vec::with_capacity(installations.len());
    for installation in installations {
        tenant_ids.push(state.store.upsert_tenant(installation, now).await?.id);
    }
    state.store.set_memberships(user.id, &tenant_ids).await?;
    state.store.mark_memberships_checked(user.id, now).await?;
    Ok(())
}

/// The installations the user reaches now, straight from GitHub (renewing their token when
/// it is about to expire). `Ok(None)` when we hold no token for them.
pub async fn installations_now(
    state: &AppState,
    user: &User,
) -> Result<Option<Vec<Installation>>, GitHubError> {
    let Some(sealed) = state.store.github_token(user.id).await.ok().flatten() else {
        return Ok(None);
    };
    let open = |bytes: &[u8]| {
        state
            .sealer
            .open(bytes)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let Some(mut access) = open(&sealed.access_token) else {
        return Ok(None);
    };
    let now = state.now();
    let expiring = sealed
        .expires_at
        .is_some_and(|at| at.secs_since_epoch <= now.secs_since_epoch + TOKEN_RENEW_MARGIN_SECS);
    if expiring && let Some(refresh) = sealed.refresh_token.as_deref().and_then(open) {
        let renewed = state.github.refresh_user_token(&refresh).await?;
        if let Err(error) = keep_token(state, user, &renewed).await {
            tracing::warn!(error = %error, "could not store a renewed GitHub token");
        }
        access = renewed.access_token;
    }
    state.github.user_installations(&access).await.map(Some)
}

/// Re-reads the user's memberships from GitHub when they are older than ten minutes.
///
/// If GitHub says the user's authorization is gone, their memberships and sessions end and
/// the request is refused; if GitHub is merely unreachable, the memberships we have stand.
pub async fn refresh_memberships(state: &AppState, user: &User) -> Result<(), ApiError> {
    let now = state.now();
    let checked = state.store.memberships_checked_at(user.id).await?;
    if checked.is_some_and(|at| now.whole_secs_since(at) < MEMBERSHIP_TTL_SECS) {
        return Ok(());
    }
    match installations_now(state, user).await {
        Ok(Some(installations)) => sync_memberships(state, user, &installations, now).await,
        Ok(None) => Ok(()),
        Err(error @ (GitHubError::OAuth { .. } | GitHubError::Status { status: 401, .. })) => {
            tracing::info!(user.id = %user.id, error = %error, "GitHub authorization gone: signing out");
            state.store.set_memberships(user.id, &[]).await?;
            state.store.delete_user_sessions(user.id).await?;
            Err(ApiError::Unauthorized(
                "Your GitHub authorization has expired or was revoked; sign in again".into(),
            ))
        }
        Err(error) => {
            tracing::warn!(user.id = %user.id, error = %error, "cannot re-check memberships; keeping the last known");
            Ok(())
        }
    }
}
