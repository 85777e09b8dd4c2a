//! Authenticating as the App: RS256 JWTs, and installation tokens minted with them, cached
//! per installation and renewed before they expire, one mint at a time per installation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use builtiful_core::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::GitHubError;

/// Installation tokens live an hour; renew five minutes early so none expires mid-request.
const RENEW_BEFORE_SECS: u64 = 5 * 60;

#[derive(Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

/// An installation token and when it stops working.
#[derive(Clone)]
pub struct InstallationToken {
    pub token: String,
    pub expires_at: Timestamp,
}

type Slot = Arc<tokio::sync::Mutex<Option<InstallationToken>>>;

/// The App's identity and its cache of installation tokens.
pub struct AppAuth {
    app_id: u64,
    key: EncodingKey,
    tokens: Mutex<HashMap<i64, Slot>>,
}

impl fmt::Debug for AppAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppAuth")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl AppAuth {
    /// The App's identity from its id and PEM private key (PKCS#1 or PKCS#8).
    pub fn new(app_id: u64, private_key_pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            app_id,
            key: EncodingKey::from_rsa_pem(private_key_pem)?,
            tokens: Mutex::default(),
        })
    }

    /// A JWT for App endpoints: issued a minute in the past (GitHub's clock may lag ours) and
    /// valid nine minutes, under GitHub's ten-minute cap.
    pub fn jwt(&self, now: Timestamp) -> Result<String, GitHubError> {
        let claims = Claims {
            iat: now.secs_since_epoch.saturating_sub(60),
            exp: now.secs_since_epoch + 9 * 60,
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| GitHubError::Decode(format!("cannot sign the App JWT: {e}")))
    }

    /// A live token for the installation, minted with `mint` when the cache has none. Callers
    /// for the same installation wait for one mint instead of each minting their own.
    pub async fn installation_token<F, Fut>(
        &self,
        installation_id: i64,
        now: Timestamp,
        mint: F,
    ) -> Result<String, GitHubError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<InstallationToken, GitHubError>>,
    {
        let slot = {
            let mut tokens = self
                .tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tokens.entry(installation_id).or_default().clone()
        };
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref()
            && now.secs_since_epoch + RENEW_BEFORE_SECS < token.expires_at.secs_since_epoch
        {
            return Ok(token.token.clone());
        }
        let fresh = mint().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets an installation's token (after GitHub refused it).
    pub fn forget(&self, installation_id: i64) {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&installation_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const KEY: &[u8] = include_bytes!("../sandbox/keys/app-private-key.pem");
    const PUBLIC: &[u8] = include_bytes!("../sandbox/keys/app-public-key.pem");

    #[test]
    fn jwt_claims_follow_githubs_rules() {
        let auth = AppAuth::new(42, KEY).unwrap();
        let now = Timestamp::from_secs(2_000_000_000);
        let jwt = auth.jwt(now).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_issuer(&["42"]);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC).unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["iat"], 2_000_000_000 - 60);
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert!(lifetime <= 600, "{lifetime}");
    }

    #[tokio::test]
    async fn tokens_are_cached_renewed_early_and_minted_once() {
        let auth = Arc::new(AppAuth::new(42, KEY).unwrap());
        let mints = Arc::new(AtomicUsize::new(0));
        let now = Timestamp::from_secs(1_000_000);
        let mint = |mints: Arc<AtomicUsize>| async move {
            let n = mints.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(InstallationToken {
                token: format!("ghs_{n}"),
                expires_at: Timestamp::from_secs(1_000_000 + 3600),
            })
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (auth, mints) = (auth.clone(), mints.clone());
            tasks.spawn(async move {
                auth.installation_token(7, now, || mint(mints))
                    .await
                    .unwrap()
            });
        }
        while let Some(token) = tasks.join_next().await {
            assert_eq!(token.unwrap(), "ghs_0");
        }
        assert_eq!(
            mints.load(Ordering::SeqCst),
            1,
            "one mint for concurrent callers"
        );
        let later = Timestamp::from_secs(1_000_000 + 3600 - 4 * 60);
        let renewed = auth
            .installation_token(7, later, || mint(mints.clone()))
            .await
            .unwrap();
        assert_eq!(renewed, "ghs_1", "renewed within five minutes of expiry");
    }
}
