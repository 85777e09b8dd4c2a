//! The resources of the API: users, tenants, jobs, and the job a provisioner is handed.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CpuArchitecture, FailureReason, JobStatus, Os, Timestamp};

/// A person who signed in with GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Builtiful's id for the user (UUIDv7).
    pub id: Uuid,
    /// The primary verified email address on GitHub, if GitHub shared one.
    pub email: Option<String>,
    /// GitHub's numeric user id; stable when the login changes.
    pub github_id: i64,
    /// The GitHub login, as of the last sign-in.
    pub github_login: String,
    /// The display name on GitHub, if set.
    pub github_name: Option<String>,
    /// When the user first signed in.
    pub created_at: Timestamp,
    /// When the user's record last changed.
    pub updated_at: Timestamp,
}

/// An organisation or account that installed the Builtiful GitHub App.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// Builtiful's id for the tenant (UUIDv7).
    pub id: Uuid,
    /// The billing and notification address, once confirmed.
    pub email: Option<String>,
    /// GitHub's numeric id of the organisation or account.
    pub github_id: i64,
    /// The id of the App installation on GitHub.
    pub github_installation_id: i64,
    /// Whether the installation is suspended on GitHub (no jobs run while it is).
    pub github_installation_suspended: bool,
    /// The organisation's or account's login on GitHub.
    pub github_login: String,
}

/// A GitHub Actions job that asked for a Builtiful runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Builtiful's id for the job (UUIDv7, so id order is creation order).
    pub id: Uuid,
    /// The tenant the job belongs to.
    pub tenant_id: Uuid,
    /// GitHub's id of the workflow job.
    pub workflow_job_id: i64,
    /// The repository the workflow runs in.
    pub repository: String,
    /// The GitHub login of who triggered the workflow.
    pub initiator: String,
    /// The GitHub id of who triggered the workflow.
    pub initiator_github_id: i64,
    /// The CPU architecture the job asked for.
    pub cpu_architecture: CpuArchitecture,
    /// The operating system the job asked for.
    pub os: Os,
    /// The `builtiful(…)` label exactly as the workflow wrote it.
    pub label: String,
    /// The number of vCPUs the job asked for.
    pub vcpus: u32,
    /// The longest the job may run, in seconds.
    pub max_run_time: u64,
    /// `duration` rounded up to a whole minute, in seconds; `null` until the job ends.
    pub billable_duration: Option<u64>,
    /// Seconds from start to completion; `null` until the job ends.
    pub duration: Option<u64>,
    /// Why the job failed, when its status is `Failed`.
    pub failure_reason: Option<FailureReason>,
    /// Where the job is in its lifecycle.
    pub status: JobStatus,
    /// When the job was queued.
    pub created_at: Timestamp,
    /// When the job last changed.
    pub updated_at: Timestamp,
    /// When the job ended.
    pub completed_at: Option<Timestamp>,
    /// When a runner started executing the job.
    pub started_at: Option<Timestamp>,
    /// When a provisioner claimed the job.
    pub provisioner_picked_up_at: Option<Timestamp>,
    /// The raw `workflow_job` object of the latest webhook applied to the job.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub workflow_job: serde_json::Value,
}

/// A job handed to a provisioner, with what it needs to start a runner for it.
///
/// `Debug` redacts `jit_config`: it registers a runner on GitHub and must never reach a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewJob {
    /// Builtiful's id for the job.
    pub id: Uuid,
    /// The id of the App installation the job belongs to.
    pub github_installation_id: i64,
    /// The repository's name (without its owner).
    pub repository: String,
    /// The tenant the job belongs to.
    pub tenant_id: Uuid,
    /// The number of vCPUs to give the runner.
    pub vcpus: u32,
    /// The longest the runner may run, in seconds.
    pub max_run_time: u64,
    /// GitHub's just-in-time runner configuration (`./run.sh --jitconfig <this>`).
    pub jit_config: String,
    /// The CPU architecture to run on.
    pub cpu_architecture: CpuArchitecture,
    /// The operating system image to boot.
    pub os: Os,
    /// The repository's owner on GitHub.
    pub organization: String,
    /// The label the runner registers with.
    pub label: String,
}

impl fmt::Debug for NewJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewJob")
            .field("id", &self.id)
            .field("github_installation_id", &self.github_installation_id)
            .field("repository", &self.repository)
            .field("tenant_id", &self.tenant_id)
            .field("vcpus", &self.vcpus)
            .field("max_run_time", &self.max_run_time)
            .field("jit_config", &"<redacted>")
            .field("cpu_architecture", &self.cpu_architecture)
            .field("os", &self.os)
            .field("organization", &self.organization)
            .field("label", &self.label)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_job_debug_never_shows_the_jit_config() {
        let job = NewJob {
            id: Uuid::nil(),
            github_installation_id: 1,
            repository: "app".into(),
            tenant_id: Uuid::nil(),
            vcpus: 2,
            max_run_time: 60,
            jit_config: "c2VjcmV0".into(),
            cpu_architecture: CpuArchitecture::Amd64,
            os: Os::Ubuntu2404,
            organization: "octo-org".into(),
            label: "builtiful(ubuntu)".into(),
        };
        let debug = format!("{job:?}");
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }
}
