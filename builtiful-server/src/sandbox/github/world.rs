//! The simulated GitHub's memory: accounts, repositories, installations, credentials,
//! runners, workflow jobs and webhook deliveries. Everything lives behind one mutex in
//! [`super::SimulatedGitHub`]; nothing here awaits, so the lock is never held across I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};

use builtiful_core::Timestamp;
use url::Url;

use super::secrets::Hash;
use crate::sandbox::{ORGS, USERS};

/// The time every seeded account, repository and installation was "created".
pub const SEED_TIME: Timestamp = Timestamp::from_secs(1_704_067_200); // 2024-01-01T00:00:00Z

/// The id of the only runner group, GitHub's "Default" group.
pub const DEFAULT_RUNNER_GROUP_ID: u64 = 1;
/// The name of the only runner group.
pub const DEFAULT_RUNNER_GROUP_NAME: &str = "Default";

/// The URLs objects point at: the simulator's own web and API roots, so links in payloads
/// lead back to it rather than to github.com.
#[derive(Debug, Clone)]
pub struct Links {
    /// The web root (`base_url` without a trailing slash), like `https://github.com`.
    pub web: String,
    /// The REST root, like `https://api.github.com`.
    pub api: String,
}

impl Links {
    /// The links of a simulator mounted at `base`.
    pub fn new(base: &Url) -> Self {
        let web = base.as_str().trim_end_matches('/').to_owned();
        Self {
            api: format!("{web}/api"),
            web,
        }
    }
}

/// An organisation.
#[derive(Debug, Clone)]
pub struct Org {
    /// Its login.
    pub login: String,
    /// Its account id.
    pub id: u64,
}

/// A person.
#[derive(Debug, Clone)]
pub struct Person {
    /// Their login.
    pub login: String,
    /// Their id.
    pub id: u64,
    /// Their display name.
    pub name: String,
    /// Their primary (and public) email.
    pub email: String,
    /// Indexes into [`World::orgs`] of the organisations they belong to.
    pub orgs: Vec<usize>,
}

/// A repository.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Its id, stable across runs.
    pub id: u64,
    /// Index of its owner in [`World::orgs`].
    pub org: usize,
    /// Its name (without the owner).
    pub name: String,
}

/// The App's installation on an organisation.
#[derive(Debug, Clone)]
pub struct Installation {
    /// Its id.
    pub id: u64,
    /// Index of the account in [`World::orgs`].
    pub org: usize,
    /// When it was suspended, if it is.
    pub suspended_at: Option<Timestamp>,
    /// Who suspended it (index into [`World::users`]).
    pub suspended_by: Option<usize>,
}

/// A one-time OAuth authorization code.
#[derive(Debug, Clone)]
pub struct AuthCode {
    /// Whom it logs in (index into [`World::users`]).
    pub user: usize,
    /// The `redirect_uri` of the authorize request, which the token request must repeat.
    pub redirect_uri: Option<String>,
    /// The PKCE `code_challenge` (S256), if the authorize request had one.
    pub code_challenge: Option<String>,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// A credential that ends, and what it stands for.
#[derive(Debug, Clone, Copy)]
pub struct Expiring<T> {
    /// What the credential grants access to.
    pub subject: T,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// Where a self-hosted runner is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On one repository (index into [`World::repos`]).
    Repo(usize),
    /// On an organisation (index into [`World::orgs`]): serves all its repositories.
    Org(usize),
}

/// A runner label with the id GitHub gives it.
#[derive(Debug, Clone)]
pub struct Label {
    /// Its id (the same for the same name).
    pub id: u64,
    /// Its name.
    pub name: String,
}

/// A registered (JIT) runner.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Its id.
    pub id: u64,
    /// Its name, unique in its scope.
    pub name: String,
    /// Where it is registered.
    pub scope: Scope,
    /// Its runner group.
    pub group_id: u64,
    /// Its labels.
    pub labels: Vec<Label>,
    /// Its work folder.
    pub work_folder: String,
    /// SHA-256 of the secret in its JIT config.
    pub secret: Hash,
    /// Whether a runner process is connected.
    pub online: bool,
    /// The job it holds (assigned or running). A JIT runner is removed once its job is done.
    pub job: Option<u64>,
    /// When its process was last heard from.
    pub last_seen: Timestamp,
}

/// Where a workflow job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for a runner.
    Queued,
    /// A runner is running it.
    InProgress,
    /// Finished, with a conclusion.
    Completed,
}

impl JobStatus {
    /// GitHub's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }
}

/// The runner that took a job, as the job remembers it (the runner itself is gone once its
/// one job is done).
#[derive(Debug, Clone)]
pub struct RunnerRef {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its group's id.
    pub group_id: u64,
}

/// A workflow job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id (above 2³¹, like GitHub's).
    pub id: u64,
    /// Its workflow run's id.
    pub run_id: u64,
    /// The run attempt.
    pub run_attempt: u32,
    /// Index of its repository in [`World::repos`].
    pub repo: usize,
    /// Who triggered it (index into [`World::users`]).
    pub sender: usize,
    /// Its `runs-on` labels.
    pub labels: Vec<String>,
    /// The job's name.
    pub name: String,
    /// The workflow's name.
    pub workflow_name: String,
    /// The branch.
    pub head_branch: String,
    /// The commit.
    pub head_sha: String,
    /// How long a runner works on it.
    pub duration_secs: u64,
    /// The conclusion a runner reports when it finishes normally.
    pub outcome: String,
    /// Where it is.
    pub status: JobStatus,
    /// How it ended.
    pub conclusion: Option<String>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When a runner started it.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
    /// The runner that took it.
    pub runner: Option<RunnerRef>,
    /// A runner it was handed to that has not started it yet, and until when it may.
    pub assigned: Option<(u64, Timestamp)>,
}

/// One webhook delivery (GitHub lists every attempt as its own delivery; a redelivery has a
/// new id and the same GUID).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its id.
    pub id: u64,
    /// The `X-GitHub-Delivery` GUID.
    pub guid: String,
    /// The `X-GitHub-Event`.
    pub event: &'static str,
    /// The payload's `action`.
    pub action: Option<String>,
    /// The installation it concerns.
    pub installation_id: Option<u64>,
    /// The repository it concerns.
    pub repository_id: Option<u64>,
    /// The exact bytes that were (or will be) sent and signed.
    pub body: std::sync::Arc<[u8]>,
    /// Whether this is a redelivery.
    pub redelivery: bool,
    /// What happened when it was sent; `None` while it waits in the outbox.
    pub attempt: Option<Attempt>,
}

/// The outcome of sending a delivery.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it was sent.
    pub delivered_at: Timestamp,
    /// How long the receiver took, in seconds.
    pub duration: f64,
    /// `OK`, or what went wrong.
    pub status: String,
    /// The receiver's HTTP status, 0 when there was none.
    pub status_code: u16,
}

/// Everything the simulator knows.
#[derive(Debug)]
pub struct World {
    /// Where links point.
    pub links: Links,
    /// The App's id.
    pub app_id: u64,
    /// The App's OAuth client id.
    pub client_id: String,
    /// Organisations.
    pub orgs: Vec<Org>,
    /// People.
    pub users: Vec<Person>,
    /// Repositories.
    pub repos: Vec<Repo>,
    /// The App's installations.
    pub installations: Vec<Installation>,
    /// OAuth codes by hash.
    pub codes: HashMap<Hash, AuthCode>,
    /// User access tokens (`ghu_`) by hash → user index.
    pub user_tokens: HashMap<Hash, Expiring<usize>>,
    /// Refresh tokens (`ghr_`) by hash → user index.
    pub refresh_tokens: HashMap<Hash, Expiring<usize>>,
    /// Installation tokens (`ghs_`) by hash → installation id.
    pub installation_tokens: HashMap<Hash, Expiring<u64>>,
    /// Registered runners by id.
    pub runners: BTreeMap<u64, Runner>,
    /// Workflow jobs by id; id order is queue order.
    pub jobs: BTreeMap<u64, Job>,
    /// Webhook deliveries by id.
    pub deliveries: BTreeMap<u64, Delivery>,
    /// Ids of deliveries waiting to be sent, in order.
    pub outbox: VecDeque<u64>,
    /// Set when a job became available to runners (queued, or back in the queue), so
    /// long-polling runners look again.
    pub wake_runners: bool,
    label_ids: HashMap<String, u64>,
    next_runner_id: u64,
    next_job_id: u64,
    next_run_id: u64,
    next_delivery_id: u64,
}

impl World {
    /// The seeded world of [`crate::sandbox::ORGS`] and [`crate::sandbox::USERS`].
    pub fn seeded(links: Links, app_id: u64, client_id: String) -> Self {
        let mut orgs = Vec::new();
        let mut repos = Vec::new();
        let mut installations = Vec::new();
        for (index, seed) in ORGS.iter().enumerate() {
            let id = seed.github_id.unsigned_abs();
            orgs.push(Org {
                login: seed.login.to_owned(),
                id,
            });
            for (n, name) in (1..).zip(seed.repositories) {
                // Stable ids: the owner's id and the repository's position.
                repos.push(Repo {
                    id: id * 100 + n,
                    org: index,
                    name: (*name).to_owned(),
                });
            }
            installations.push(Installation {
                id: seed.installation_id.unsigned_abs(),
                org: index,
                suspended_at: None,
                suspended_by: None,
            });
        }
        let users = USERS
            .iter()
            .map(|seed| Person {
                login: seed.login.to_owned(),
                id: seed.github_id.unsigned_abs(),
                name: seed.name.to_owned(),
                email: seed.email.to_owned(),
                orgs: orgs
                    .iter()
                    .enumerate()
                    .filter(|(_, org)| seed.orgs.contains(&org.login.as_str()))
                    .map(|(index, _)| index)
                    .collect(),
            })
            .collect();
        Self {
            links,
            app_id,
            client_id,
            orgs,
            users,
            repos,
            installations,
            codes: HashMap::new(),
            user_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            installation_tokens: HashMap::new(),
            runners: BTreeMap::new(),
            jobs: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            outbox: VecDeque::new(),
            wake_runners: false,
            label_ids: HashMap::new(),
            next_runner_id: 1,
            // GitHub's job and run ids long passed 2³¹; clients must not squeeze them into i32.
            next_job_id: 30_000_000_001,
            next_run_id: 11_000_000_001,
            next_delivery_id: 90_000_000_001,
        }
    }

    /// A new runner id.
    pub fn runner_id(&mut self) -> u64 {
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        id
    }

    /// A new workflow job id.
    pub fn job_id(&mut self) -> u64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        id
    }

    /// A new workflow run id.
    pub fn run_id(&mut self) -> u64 {
        let id = self.next_run_id;
        self.next_run_id += 1;
        id
    }

    /// A new delivery id.
    pub fn delivery_id(&mut self) -> u64 {
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        id
    }

    /// The label named `name`, with the same id every time (case-insensitively, like GitHub).
    pub fn label(&mut self, name: &str) -> Label {
        let next = 1 + self.label_ids.len() as u64;
        let id = *self
            .label_ids
            .entry(name.to_ascii_lowercase())
            .or_insert(next);
        Label {
            id,
            name: name.to_owned(),
        }
    }

    /// The organisation with this login (case-insensitive).
    pub fn org_by_login(&self, login: &str) -> Option<usize> {
        self.orgs
            .iter()
            .position(|org| org.login.eq_ignore_ascii_case(login))
    }

    /// The repository `owner/name` (case-insensitive).
    pub fn repo_by_name(&self, owner: &str, name: &str) -> Option<usize> {
        let org = self.org_by_login(owner)?;
        self.repos
            .iter()
            .position(|repo| repo.org == org && repo.name.eq_ignore_ascii_case(name))
    }

    /// The installation with this id.
    pub fn installation(&self, id: u64) -> Option<&Installation> {
        self.installations.iter().find(|i| i.id == id)
    }

    /// The installation on organisation `org`.
    pub fn installation_of(&self, org: usize) -> Option<&Installation> {
        self.installations.iter().find(|i| i.org == org)
    }

    /// The organisation a runner scope belongs to.
    pub fn scope_org(&self, scope: Scope) -> usize {
        match scope {
            Scope::Repo(repo) => self.repos[repo].org,
            Scope::Org(org) => org,
        }
    }

    /// The person who triggers workflows in `org`: its first member.
    pub fn member_of(&self, org: usize) -> usize {
        self.users
            .iter()
            .position(|user| user.orgs.contains(&org))
            .unwrap_or(0)
    }

    /// Drops credentials and codes that have expired, so memory stays bounded.
    pub fn purge_expired(&mut self, now: Timestamp) {
        self.codes.retain(|_, code| code.expires_at > now);
        self.user_tokens.retain(|_, token| token.expires_at > now);
        self.refresh_tokens
            .retain(|_, token| token.expires_at > now);
        self.installation_tokens
            .retain(|_, token| token.expires_at > now);
    }
}
