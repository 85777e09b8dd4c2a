//! Authentication: bearer tokens, sessions, and the extractors handlers use to know who calls.

mod extract;
mod token;

pub use extract::{CurrentUser, MaybeSession, Provisioner};
pub use token::{PROVISIONER_PREFIX, SESSION_PREFIX, Token, hash_token};

use builtiful_core::Timestamp;
use cookie::time::Duration as CookieDuration;
use cookie::{Cookie, CookieBuilder, SameSite};
use uuid::Uuid;

use crate::app::Settings;
use crate::store::{Result, Store};

/// The name of the browser's session cookie.
pub const SESSION_COOKIE: &str = "builtiful_session";

/// How long a session lives.
pub const SESSION_LIFETIME_SECS: u64 = 30 * 24 * 60 * 60;

/// Starts a session for a user and returns its `bfs_` token (the only copy: only the hash is kept).
pub async fn start_session(store: &dyn Store, user_id: Uuid, now: Timestamp) -> Result<Token> {
    let token = Token::generate(SESSION_PREFIX);
    let expires_at = Timestamp::from_secs(now.secs_since_epoch + SESSION_LIFETIME_SECS);
    store
        .create_session(token.hash(), user_id, now, expires_at)
        .await?;
    Ok(token)
}

fn cookie_base(value: String, settings: &Settings) -> CookieBuilder<'static> {
    Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.secure_cookies())
}

/// The `Set-Cookie` value that gives a browser its session.
pub fn session_cookie(token: &Token, settings: &Settings) -> String {
    let max_age = i64::try_from(SESSION_LIFETIME_SECS).unwrap_or(i64::MAX);
    cookie_base(token.expose().to_owned(), settings)
        .max_age(CookieDuration::seconds(max_age))
        .build()
        .to_string()
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_session_cookie(settings: &Settings) -> String {
    cookie_base(String::new(), settings)
        .max_age(CookieDuration::ZERO)
        .build()
        .to_string()
}
