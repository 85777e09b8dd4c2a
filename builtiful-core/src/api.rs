//! Request and response bodies of the REST API: the envelopes around the resources, and the
//! small bodies of the auth, email and provisioner endpoints.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CpuArchitecture, Job, NewJob, RunnerEventKind, Tenant, User};

/// The body of every error response, and of responses that only say what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// A sentence for a person.
    pub message: String,
}

impl Message {
    /// The sentence of every 500 response; the cause is logged, never sent.
    pub const INTERNAL_ERROR: &'static str = "Something went wrong during request processing, this issue has been logged and reported to our team";

    /// A message with this text.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// `GET /me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserResponse {
    /// The signed-in user.
    pub user: User,
}

/// `GET /tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantList {
    /// The tenants the user can reach.
    pub tenants: Vec<Tenant>,
    /// How many tenants there are.
    pub total_count: u64,
}

/// `GET /tenants/{tenant_id}/jobs`: one page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    /// The page, newest first.
    pub jobs: Vec<Job>,
    /// How many jobs the tenant has in all.
    pub total_count: u64,
}

/// `POST /tenants/{tenant_id}/email`: the address to verify, and the 202 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailChange {
    /// The new address, to which a confirmation link is mailed.
    pub email: String,
}

/// `POST /auth/token`: the CLI trades the one-time code of a login for a session token.
///
/// `Debug` redacts both values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    /// The one-time code the login redirect carried.
    pub code: String,
    /// The PKCE verifier whose S256 challenge started the login.
    pub code_verifier: String,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest").finish_non_exhaustive()
    }
}

/// The answer to [`TokenRequest`]. `Debug` redacts the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// A `bfs_` session token, sent as `Authorization: Bearer`.
    pub token: String,
    /// Who the session belongs to.
    pub user: User,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"<redacted>")
            .field("user", &self.user)
            .finish()
    }
}

/// `GET /provisioner/jobs`: the job claimed for the provisioner, if one fitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// The claimed job, or `null` when none fits.
    pub new_job: Option<NewJob>,
}

/// `POST /provisioner/jobs/{job_id}/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// `true` once the workflow was cancelled: stop the runner.
    pub cancel: bool,
}

/// `POST /provisioner/jobs/{job_id}/events`: a host-side fact about a job's runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunnerEvent {
    /// What happened.
    pub event: RunnerEventKind,
    /// The launcher's exit code, for `RunnerExited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Detail for a person, such as the launcher's last words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `ok`, or what is wrong.
    pub status: String,
}

/// The query of `GET /provisioner/jobs`, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ClaimRequest {
    /// vCPUs free on the host now (≥ 1); no larger job is handed out.
    pub available_vcpus: i64,
    /// The host's architecture; only jobs of this architecture are handed out.
    pub cpu_architecture: CpuArchitecture,
    /// The host's name (1 to 255 bytes).
    pub host: String,
    /// Seconds to wait for a fitting job before answering `null` (0 to 60, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<i64>,
}

/// A [`ClaimRequest`] that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// vCPUs free on the host.
    pub available_vcpus: u32,
    /// The host's architecture.
    pub cpu_architecture: CpuArchitecture,
    /// The host's name.
    pub host: String,
    /// Seconds to long-poll.
    pub wait_secs: u32,
}

/// Why a [`ClaimRequest`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// `available_vcpus` below 1 or absurdly large.
    #[error("available_vcpus must be between 1 and {max}, got {0}", max = ClaimRequest::MAX_VCPUS)]
    Vcpus(i64),
    /// `host` empty or too long.
    #[error("host must be between 1 and 255 bytes long")]
    Host,
    /// `wait` outside 0..=60.
    #[error("wait must be between 0 and {max} seconds, got {0}", max = ClaimRequest::MAX_WAIT_SECS)]
    Wait(i64),
}

impl ClaimRequest {
    /// The longest long-poll a provisioner may ask for, in seconds.
    pub const MAX_WAIT_SECS: u32 = 60;
    /// The most vCPUs a host may offer (far above any machine, below overflow).
    pub const MAX_VCPUS: u32 = 65_536;

    /// Checks the parameters as the API does.
    pub fn validate(&self) -> Result<Claim, ClaimError> {
        let available_vcpus = u32::try_from(self.available_vcpus)
            .ok()
            .filter(|n| (1..=Self::MAX_VCPUS).contains(n))
            .ok_or(ClaimError::Vcpus(self.available_vcpus))?;
        let host = self.host.trim();
        if host.is_empty() || host.len() > 255 {
            return Err(ClaimError::Host);
        }
        let wait = self.wait.unwrap_or(0);
        let wait_secs = u32::try_from(wait)
            .ok()
            .filter(|n| *n <= Self::MAX_WAIT_SECS)
            .ok_or(ClaimError::Wait(wait))?;
        Ok(Claim {
            available_vcpus,
            cpu_architecture: self.cpu_architecture,
            host: host.to_owned(),
            wait_secs,
        })
    }
}

/// The identifier of a tenant in commands: its UUID or its GitHub login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    /// A tenant id.
    Id(Uuid),
    /// A GitHub login, compared case-insensitively as GitHub does.
    Login(String),
}

impl TenantRef {
    /// Reads an id when the text is a UUID, else a login.
    pub fn parse(text: &str) -> Self {
        Uuid::parse_str(text.trim()).map_or_else(|_| Self::Login(text.trim().to_owned()), Self::Id)
    }

    /// Whether `tenant` is the one referred to.
    pub fn matches(&self, tenant: &Tenant) -> bool {
        match self {
            Self::Id(id) => tenant.id == *id,
            Self::Login(login) => tenant.github_login.eq_ignore_ascii_case(login),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(vcpus: i64, host: &str, wait: Option<i64>) -> ClaimRequest {
        ClaimRequest {
            available_vcpus: vcpus,
            cpu_architecture: CpuArchitecture::Arm64,
            host: host.into(),
            wait,
        }
    }

    #[test]
    fn claim_parameters_are_checked() {
        let ok = request(16, " amd64-01 ", Some(30)).validate().unwrap();
        assert_eq!(
            (ok.available_vcpus, ok.host.as_str(), ok.wait_secs),
            (16, "amd64-01", 30)
        );
        assert_eq!(request(8, "h", None).validate().unwrap().wait_secs, 0);
        assert_eq!(request(0, "h", None).validate(), Err(ClaimError::Vcpus(0)));
        assert_eq!(
            request(-3, "h", None).validate(),
            Err(ClaimError::Vcpus(-3))
        );
        assert_eq!(request(2, "  ", None).validate(), Err(ClaimError::Host));
        assert_eq!(
            request(2, &"h".repeat(256), None).validate(),
            Err(ClaimError::Host)
        );
        assert_eq!(
            request(2, "h", Some(61)).validate(),
            Err(ClaimError::Wait(61))
        );
        assert_eq!(
            request(2, "h", Some(-1)).validate(),
            Err(ClaimError::Wait(-1))
        );
        assert_eq!(
            request(0, "h", None).validate().unwrap_err().to_string(),
            "available_vcpus must be between 1 and 65536, got 0"
        );
    }

    #[test]
    fn tenant_refs_match_by_id_or_login() {
        let tenant = Tenant {
            id: Uuid::now_v7(),
            email: None,
            github_id: 1,
            github_installation_id: 2,
            github_installation_suspended: false,
            github_login: "Octo-Org".into(),
        };
        assert!(TenantRef::parse("octo-org").matches(&tenant));
        assert!(TenantRef::parse(&tenant.id.to_string()).matches(&tenant));
        assert!(!TenantRef::parse("mona-org").matches(&tenant));
    }
}
