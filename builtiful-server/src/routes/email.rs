//! Changing a tenant's email address: a confirmation link is mailed, and the change happens
//! when it is followed.

use std::str::FromStr;

use axum::extract::State;
use axum::http::StatusCode;
use builtiful_core::{EmailChange, Message};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::tenants::member_tenant;
use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::mail::Mail;
use crate::verification;

/// The longest address SMTP can carry (RFC 5321: a 256-octet path minus the brackets).
const MAX_EMAIL_LEN: usize = 254;

fn parse_address(email: &str) -> ApiResult<String> {
    let email = email.trim();
    let valid = email.len() <= MAX_EMAIL_LEN
        && lettre::Address::from_str(email).is_ok_and(|address| address.domain().contains('.'));
    if valid {
        Ok(email.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "`{email}` is not a valid email address"
        )))
    }
}

/// Mails a confirmation link to a new address for the tenant.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/email",
    tag = "tenants",
    security(("session_cookie" = []), ("bearer" = [])),
    params(("tenant_id" = Uuid, Path, description = "UUID of the tenant")),
    request_body = EmailChange,
    responses(
        (status = 202, description = "The confirmation link was sent", body = EmailChange),
        (status = 400, description = "Not a valid address", body = Message),
        (status = 401, description = "Not signed in", body = Message),
        (status = 404, description = "No such tenant for this user", body = Message),
        (status = 415, description = "The body is not JSON", body = Message),
        (status = 503, description = "The mail could not be sent", body = Message)
    )
)]
pub async fn request_email_change(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(tenant_id): Path<Uuid>,
    Json(body): Json<EmailChange>,
) -> ApiResult<(StatusCode, Json<EmailChange>)> {
    let tenant = member_tenant(&state, &current, tenant_id).await?;
    let email = parse_address(&body.email)?;
    let jwt = verification::sign(&state.secret, tenant.id, &email, state.now())
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut link = state
        .settings
        .public(&format!("/tenants/{}/email/confirm", tenant.id));
    link.query_pairs_mut().append_pair("jwt", &jwt);
    let mail = Mail {
        to: email.clone(),
        subject: format!(
            "Confirm the email address of {} on Builtiful",
            tenant.github_login
        ),
        body: format!(
            "{} asked to use this address for {} on Builtiful.\n\n\
             Confirm it within 24 hours by opening:\n\n{link}\n\n\
             If you did not expect this message, ignore it: nothing changes.\n",
            current.user.github_login, tenant.github_login
        ),
        link: Some(link.to_string()),
    };
    state.mailer.send(mail).await.map_err(|error| {
        tracing::error!(error = ?error, tenant.id = %tenant.id, "could not send the confirmation mail");
        ApiError::Unavailable("The confirmation email could not be sent; try again later".into())
    })?;
    tracing::info!(tenant.id = %tenant.id, user.id = %current.user.id, "email confirmation sent");
    Ok((StatusCode::ACCEPTED, Json(EmailChange { email })))
}

/// The token of a confirmation link.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfirmQuery {
    /// JWT token received in the verification email.
    jwt: String,
}

/// Confirms the tenant's new address with the token from the mailed link.
#[utoipa::path(
    method(get, post),
    path = "/tenants/{tenant_id}/email/confirm",
    tag = "tenants",
    params(("tenant_id" = Uuid, Path, description = "UUID of the tenant"), ConfirmQuery),
    responses(
        (status = 200, description = "The address is set", body = Message),
        (status = 400, description = "The link is invalid, expired, used, or for another tenant", body = Message),
        (status = 404, description = "No such tenant", body = Message)
    )
)]
pub async fn confirm_email_change(
    State(state): State<AppState>,
    Path(tenant_id): Path<Uuid>,
    Query(query): Query<ConfirmQuery>,
) -> ApiResult<Json<Message>> {
    let claims = verification::verify(&state.secret, &query.jwt, tenant_id, state.now())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tenant = state
        .store
        .tenant(tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Tenant {tenant_id} not found")))?;
    let expires_at = builtiful_core::Timestamp::from_secs(claims.exp);
    if !state
        .store
        .consume_email_verification(claims.jti, tenant.id, expires_at)
        .await?
    {
        return Err(ApiError::bad_request(
            "This confirmation link was already used",
        ));
    }
    state
        .store
        .set_tenant_email(tenant.id, &claims.email, state.now())
        .await?;
    tracing::info!(tenant.id = %tenant.id, "tenant email confirmed");
    Ok(Json(Message::new(format!(
        "The email address of {} is now {}",
        tenant.github_login, claims.email
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            parse_address(" ops@example.com ").unwrap(),
            "ops@example.com"
        );
        for bad in [
            "",
            "ops",
            "ops@",
            "@example.com",
            "ops@localhost",
            "a b@example.com",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(parse_address(&long).is_err());
    }
}
