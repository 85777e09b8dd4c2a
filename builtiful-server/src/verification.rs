//! Email confirmation links: a one-time HS256 JWT, valid 24 hours, bound to a tenant and an
//! address. One-time use is enforced by recording each `jti` when the link is used.

use builtiful_core::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secret::Secret;

/// How long a confirmation link stays valid.
pub const LINK_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// The audience that keeps these tokens from being accepted anywhere else.
const AUDIENCE: &str = "builtiful:tenant-email";

/// What a confirmation link proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailClaims {
    /// The tenant.
    pub sub: Uuid,
    /// The address being confirmed.
    pub email: String,
    /// The link's id, recorded when used.
    pub jti: Uuid,
    /// When the link was made (seconds since the epoch).
    pub iat: u64,
    /// When it stops working (seconds since the epoch).
    pub exp: u64,
    /// Always [`AUDIENCE`].
    pub aud: String,
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token we signed, or damaged.
    #[error("This confirmation link is invalid; request a new one")]
    Invalid,
    /// Past its 24 hours.
    #[error("This confirmation link has expired; request a new one")]
    Expired,
    /// Signed for another tenant.
    #[error("This confirmation link belongs to another tenant")]
    WrongTenant,
}

/// Signs a link token for `email` on `tenant_id`.
pub fn sign(
    secret: &Secret,
    tenant_id: Uuid,
    email: &str,
    now: Timestamp,
) -> jsonwebtoken::errors::Result<String> {
    let claims = EmailClaims {
        sub: tenant_id,
        email: email.to_owned(),
        jti: Uuid::now_v7(),
        iat: now.secs_since_epoch,
        exp: now.secs_since_epoch + LINK_LIFETIME_SECS,
        aud: AUDIENCE.to_owned(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.bytes())?,
    )
}

/// Checks a link token's signature, audience, expiry (against `now`) and tenant.
pub fn verify(
    secret: &Secret,
    token: &str,
    tenant_id: Uuid,
    now: Timestamp,
) -> Result<EmailClaims, LinkError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    // Expiry is checked below against the server's clock, which tests can move.
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let key = DecodingKey::from_secret(secret.bytes()).map_err(|_| LinkError::Invalid)?;
    let claims = jsonwebtoken::decode::<EmailClaims>(token, &key, &validation)
        .map_err(|_| LinkError::Invalid)?
        .claims;
    if now.secs_since_epoch >= claims.exp {
        return Err(LinkError::Expired);
    }
    if claims.sub != tenant_id {
        return Err(LinkError::WrongTenant);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> Secret {
        Secret::from_bytes(vec![byte; 32])
    }

    #[test]
    fn round_trip_and_refusals() {
        let tenant = Uuid::now_v7();
        let now = Timestamp::from_secs(1_000_000);
        let token = sign(&secret(1), tenant, "ops@example.com", now).unwrap();

        let claims = verify(&secret(1), &token, tenant, now).unwrap();
        assert_eq!(claims.email, "ops@example.com");
        assert_eq!(claims.exp, 1_000_000 + LINK_LIFETIME_SECS);

        assert_eq!(
            verify(&secret(2), &token, tenant, now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            verify(&secret(1), &token, Uuid::now_v7(), now),
            Err(LinkError::WrongTenant)
        );
        let later = Timestamp::from_secs(1_000_000 + LINK_LIFETIME_SECS);
        assert_eq!(
            verify(&secret(1), &token, tenant, later),
            Err(LinkError::Expired)
        );
        assert_eq!(
            verify(&secret(1), "not.a.jwt", tenant, now),
            Err(LinkError::Invalid)
        );
        let mut tampered = token.clone();
        tampered.pop();
        assert_eq!(
            verify(&secret(1), &tampered, tenant, now),
            Err(LinkError::Invalid)
        );
    }
}
