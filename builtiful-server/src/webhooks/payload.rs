//! The parts of GitHub's webhook payloads we read. Everything is lenient: GitHub adds fields,
//! sends unknown actions, and leaves fields out of some events; none of that may fail a
//! delivery.

use serde::Deserialize;

use crate::github::wire::WireInstallation;
use crate::store::Installation;

/// A GitHub account (user or organisation) as webhooks show it.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub id: i64,
    pub login: String,
}

/// `installation` as most events carry it: often only the id.
#[derive(Debug, Clone, Deserialize)]
pub struct InstallationRef {
    pub id: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: String,
    pub owner: Account,
}

/// What every event may carry.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    #[serde(default)]
    pub sender: Option<Account>,
}

/// `installation` and `installation_repositories` events, whose `installation` is complete.
#[derive(Debug, Deserialize)]
pub struct InstallationEvent {
    pub installation: WireInstallation,
}

impl InstallationEvent {
    /// The installation as the store keeps it.
    pub fn installation(self) -> Option<Installation> {
        self.installation.into_installation()
    }
}

/// The `workflow_job` object.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJob {
    pub id: i64,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub runner_name: Option<String>,
}

/// A `workflow_job` event.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJobEvent {
    pub action: String,
    pub workflow_job: WorkflowJob,
    pub repository: Repository,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    #[serde(default)]
    pub sender: Option<Account>,
}
