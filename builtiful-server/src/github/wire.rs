//! GitHub's JSON, as far as we read it. Deserialisation is lenient: unknown fields are
//! ignored, and fields GitHub documents as nullable are `Option`.

use builtiful_core::Timestamp;
use serde::Deserialize;

use super::{Delivery, GitHubError, GitHubUser, Runner};
use crate::store::Installation;

/// `{"message": …}`, GitHub's error body.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub id: i64,
    pub login: String,
    pub name: Option<String>,
}

impl From<User> for GitHubUser {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            login: user.login,
            name: user.name.filter(|n| !n.is_empty()),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Email {
    pub email: String,
    pub primary: bool,
    pub verified: bool,
}

#[derive(Debug, Deserialize)]
pub struct Account {
    pub id: i64,
    /// Users and organisations have a login; enterprises a slug.
    pub login: Option<String>,
    pub slug: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireInstallation {
    pub id: i64,
    pub account: Option<Account>,
    pub suspended_at: Option<serde_json::Value>,
}

impl WireInstallation {
    /// The installation as the store keeps it; `None` for one without an account.
    pub fn into_installation(self) -> Option<Installation> {
        let account = self.account?;
        Some(Installation {
            github_installation_id: self.id,
            github_id: account.id,
            github_login: account.login.or(account.slug)?,
            suspended: self.suspended_at.is_some_and(|at| !at.is_null()),
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct Installations {
    pub total_count: u64,
    pub installations: Vec<WireInstallation>,
}

#[derive(Debug, Deserialize)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: String,
}

#[derive(Debug, Deserialize)]
pub struct WireRunner {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub busy: bool,
}

impl From<WireRunner> for Runner {
    fn from(runner: WireRunner) -> Self {
        Self {
            id: runner.id,
            name: runner.name,
            status: runner.status,
            busy: runner.busy,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Runners {
    pub runners: Vec<WireRunner>,
}

#[derive(Debug, Deserialize)]
pub struct Jit {
    pub runner: WireRunner,
    pub encoded_jit_config: String,
}

#[derive(Debug, Deserialize)]
pub struct WireDelivery {
    pub id: i64,
    pub guid: String,
    pub status_code: Option<i64>,
    pub event: String,
}

impl From<WireDelivery> for Delivery {
    fn from(delivery: WireDelivery) -> Self {
        Self {
            id: delivery.id,
            guid: delivery.guid,
            delivered: delivery
                .status_code
                .is_some_and(|code| (200..300).contains(&code)),
            event: delivery.event,
        }
    }
}

/// Reads an ISO 8601 / RFC 3339 time as GitHub writes them.
pub fn parse_time(text: &str) -> Result<Timestamp, GitHubError> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| GitHubError::Decode(format!("bad time `{text}`: {e}")))?;
    let nanos = time.unix_timestamp_nanos();
    let micros = i64::try_from(nanos / 1_000).unwrap_or(0);
    Ok(Timestamp::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installations_read_users_orgs_and_suspension() {
        let json = serde_json::json!({
            "id": 1, "account": {"id": 2, "login": "octo-org", "type": "Organization"},
            "suspended_at": "2021-04-29T02:32:50Z"
        });
        let installation: WireInstallation = serde_json::from_value(json).unwrap();
        let installation = installation.into_installation().unwrap();
        assert_eq!(installation.github_login, "octo-org");
        assert!(installation.suspended);
        let json = serde_json::json!({"id": 1, "account": {"id": 2, "slug": "acme"}, "suspended_at": null});
        let installation: WireInstallation = serde_json::from_value(json).unwrap();
        let installation = installation.into_installation().unwrap();
        assert_eq!(installation.github_login, "acme");
        assert!(!installation.suspended);
    }

    #[test]
    fn times_in_every_form_github_writes() {
        assert_eq!(
            parse_time("2019-08-08T22:29:48Z").unwrap().secs_since_epoch,
            1_565_303_388
        );
        assert_eq!(
            parse_time("2021-04-28T22:32:21.000-04:00")
                .unwrap()
                .secs_since_epoch,
            1_619_663_541
        );
        assert!(parse_time("yesterday").is_err());
    }
}
