//! The Actions side of the simulated GitHub: workflow jobs wait in the queue until an idle,
//! online runner whose labels match takes them, exactly as GitHub routes them: any matching
//! runner of the same repository (repository runners) or organisation (organisation
//! runners), oldest job first. A runner made for job A may take job B. Every transition
//! emits a `workflow_job` webhook.

use builtiful_core::Timestamp;
use serde::Deserialize;

use super::secrets;
use super::time::plus_secs;
use super::world::{DEFAULT_RUNNER_GROUP_ID, Job, JobStatus, RunnerRef, Scope, World};

/// How long a runner has to start a job it was handed before the job goes back to the
/// queue (GitHub's rule).
pub const ASSIGNMENT_TIMEOUT_SECS: u64 = 60;
/// A runner that has not polled for this long, holding no job, is marked offline.
pub const RUNNER_SILENCE_SECS: u64 = 90;
/// The conclusions GitHub knows.
pub const CONCLUSIONS: [&str; 7] = [
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
];

/// A request to queue workflow jobs (`POST /_sandbox/jobs`).
#[derive(Debug, Clone, Deserialize)]
pub struct QueueJobs {
    /// `owner/name`.
    pub repository: String,
    /// The jobs' `runs-on` labels (at least one).
    pub labels: Vec<String>,
    /// How many jobs (1 to 100, default 1), all in one workflow run.
    #[serde(default = "one")]
    pub count: u32,
    /// How long a runner works on each, in seconds (default 0).
    #[serde(default)]
    pub duration_secs: u64,
    /// The conclusion the runner reports (default `success`).
    #[serde(default = "success")]
    pub conclusion: String,
    /// The job's name (default `build`).
    pub name: Option<String>,
    /// The workflow's name (default `CI`).
    pub workflow_name: Option<String>,
    /// The branch (default `main`).
    pub head_branch: Option<String>,
}

fn one() -> u32 {
    1
}

fn success() -> String {
    "success".to_owned()
}

/// Why a job or runner operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    /// No such repository.
    #[error("no repository `{0}`; the sandbox has {1}")]
    UnknownRepository(String, String),
    /// Malformed request.
    #[error("{0}")]
    Invalid(String),
    /// No such job.
    #[error("no workflow job {0}")]
    UnknownJob(u64),
    /// No such runner, or wrong secret (the two are indistinguishable on purpose).
    #[error("unknown runner or wrong runner secret")]
    UnknownRunner,
    /// The operation does not fit the job's or runner's state.
    #[error("{0}")]
    Conflict(String),
}

/// A runner matches a job when it serves the job's repository and has every label the job
/// asks for (case-insensitively).
fn matches(world: &World, scope: Scope, runner_labels: &[String], job: &Job) -> bool {
    let serves = match scope {
        Scope::Repo(repo) => repo == job.repo,
        Scope::Org(org) => world.repos[job.repo].org == org,
    };
    serves
        && job.labels.iter().all(|wanted| {
            runner_labels
                .iter()
                .any(|have| have.eq_ignore_ascii_case(wanted))
        })
}

impl World {
    /// Queues jobs and emits their `queued` webhooks. Returns their ids.
    pub fn queue_jobs(
        &mut self,
        request: &QueueJobs,
        now: Timestamp,
    ) -> Result<Vec<u64>, ActionError> {
        let repo = request
            .repository
            .split_once('/')
            .and_then(|(owner, name)| self.repo_by_name(owner, name))
            .ok_or_else(|| {
                let known: Vec<_> = self
                    .repos
                    .iter()
                    .map(|r| format!("{}/{}", self.orgs[r.org].login, r.name))
                    .collect();
                ActionError::UnknownRepository(request.repository.clone(), known.join(", "))
            })?;
        let labels: Vec<String> = request
            .labels
            .iter()
            .map(|label| label.trim().to_owned())
            .filter(|label| !label.is_empty())
            .collect();
        if labels.is_empty() || labels.len() > 100 {
            return Err(ActionError::Invalid("give 1 to 100 labels".into()));
        }
        if !(1..=100).contains(&request.count) {
            return Err(ActionError::Invalid("count must be 1 to 100".into()));
        }
        if !CONCLUSIONS.contains(&request.conclusion.as_str()) {
            return Err(ActionError::Invalid(format!(
                "conclusion must be one of {}",
                CONCLUSIONS.join(", ")
            )));
        }
        let run_id = self.run_id();
        let head_sha = secrets::hex(40);
        let name = request.name.clone().unwrap_or_else(|| "build".to_owned());
        let sender = self.member_of(self.repos[repo].org);
        let mut ids = Vec::new();
        for n in 1..=request.count {
            let id = self.job_id();
            let job = Job {
                id,
                run_id,
                run_attempt: 1,
                repo,
                sender,
                labels: labels.clone(),
                name: if request.count > 1 {
                    format!("{name} ({n})")
                } else {
                    name.clone()
                },
                workflow_name: request.workflow_name.clone().unwrap_or_else(|| "CI".into()),
                head_branch: request.head_branch.clone().unwrap_or_else(|| "main".into()),
                head_sha: head_sha.clone(),
                duration_secs: request.duration_secs,
                outcome: request.conclusion.clone(),
                status: JobStatus::Queued,
                conclusion: None,
                created_at: now,
                started_at: None,
                completed_at: None,
                runner: None,
                assigned: None,
            };
            self.jobs.insert(id, job);
            self.wake_runners = true;
            self.emit_workflow_job(id, "queued");
            ids.push(id);
        }
        Ok(ids)
    }

    /// Checks a runner's id and secret (constant time) and notes that it was heard from.
    pub fn authenticate_runner(
        &mut self,
        id: u64,
        secret: &str,
        now: Timestamp,
    ) -> Result<(), ActionError> {
        use subtle::ConstantTimeEq;
        let runner = self
            .runners
            .get_mut(&id)
            .ok_or(ActionError::UnknownRunner)?;
        if !bool::from(runner.secret.ct_eq(&secrets::hash(secret))) {
            return Err(ActionError::UnknownRunner);
        }
        runner.last_seen = now;
        Ok(())
    }

    /// A runner process connected (`online`) or disconnected.
    pub fn set_online(&mut self, runner_id: u64, online: bool) -> Result<(), ActionError> {
        let runner = self
            .runners
            .get_mut(&runner_id)
            .ok_or(ActionError::UnknownRunner)?;
        runner.online = online;
        Ok(())
    }

    /// Hands the oldest queued job that `runner_id` can run to it, if there is one. The
    /// runner must start it within [`ASSIGNMENT_TIMEOUT_SECS`].
    pub fn acquire(&mut self, runner_id: u64, now: Timestamp) -> Result<Option<u64>, ActionError> {
        let runner = self
            .runners
            .get(&runner_id)
            .ok_or(ActionError::UnknownRunner)?;
        if !runner.online {
            return Err(ActionError::Conflict(
                "the runner is offline: open a session first".into(),
            ));
        }
        if let Some(job) = runner.job {
            // Asked again (a retried poll): the same job, never a second one.
            return Ok(Some(job));
        }
        let scope = runner.scope;
        let labels: Vec<String> = runner.labels.iter().map(|l| l.name.clone()).collect();
        let Some(job_id) = self
            .jobs
            .values()
            .find(|job| {
                job.status == JobStatus::Queued
                    && job.assigned.is_none()
                    && matches(self, scope, &labels, job)
            })
            .map(|job| job.id)
        else {
            return Ok(None);
        };
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.assigned = Some((runner_id, plus_secs(now, ASSIGNMENT_TIMEOUT_SECS)));
        }
        if let Some(runner) = self.runners.get_mut(&runner_id) {
            runner.job = Some(job_id);
        }
        Ok(Some(job_id))
    }

    /// The runner starts the job it was handed: `in_progress`.
    pub fn start(
        &mut self,
        runner_id: u64,
        job_id: u64,
        now: Timestamp,
    ) -> Result<(), ActionError> {
        let runner = self
            .runners
            .get(&runner_id)
            .ok_or(ActionError::UnknownRunner)?;
        let reference = RunnerRef {
            id: runner.id,
            name: runner.name.clone(),
            group_id: runner.group_id,
        };
        let job = self
            .jobs
            .get_mut(&job_id)
            .ok_or(ActionError::UnknownJob(job_id))?;
        match job.status {
            JobStatus::Queued if job.assigned.map(|(r, _)| r) == Some(runner_id) => {}
            JobStatus::InProgress if job.runner.as_ref().map(|r| r.id) == Some(runner_id) => {
                return Ok(()); // a retried start
            }
            JobStatus::Completed => {
                return Err(ActionError::Conflict(format!(
                    "job {job_id} is already completed ({})",
                    job.conclusion.as_deref().unwrap_or("no conclusion")
                )));
            }
            _ => {
                return Err(ActionError::Conflict(format!(
                    "job {job_id} is not assigned to this runner"
                )));
            }
        }
        job.status = JobStatus::InProgress;
        job.started_at = Some(now);
        job.runner = Some(reference);
        job.assigned = None;
        self.emit_workflow_job(job_id, "in_progress");
        Ok(())
    }

    /// The runner finished its job: `completed` with `conclusion`. The JIT runner is then
    /// removed, as GitHub removes it after its one job.
    pub fn complete(
        &mut self,
        runner_id: u64,
        job_id: u64,
        conclusion: &str,
        now: Timestamp,
    ) -> Result<(), ActionError> {
        if !CONCLUSIONS.contains(&conclusion) {
            return Err(ActionError::Invalid(format!(
                "conclusion must be one of {}",
                CONCLUSIONS.join(", ")
            )));
        }
        let runner = self
            .runners
            .get(&runner_id)
            .ok_or(ActionError::UnknownRunner)?;
        if runner.job != Some(job_id) {
            return Err(ActionError::Conflict(format!(
                "job {job_id} is not this runner's"
            )));
        }
        let job = self
            .jobs
            .get_mut(&job_id)
            .ok_or(ActionError::UnknownJob(job_id))?;
        match job.status {
            JobStatus::InProgress => {
                job.status = JobStatus::Completed;
                job.conclusion = Some(conclusion.to_owned());
                job.completed_at = Some(now);
                self.emit_workflow_job(job_id, "completed");
            }
            // Cancelled while the runner worked: the `completed` event went out then.
            JobStatus::Completed => {}
            JobStatus::Queued => {
                return Err(ActionError::Conflict(format!(
                    "job {job_id} was never started"
                )));
            }
        }
        self.runners.remove(&runner_id);
        Ok(())
    }

    /// Cancels a job (the workflow run was cancelled). A job no runner took completes with
    /// `cancelled` and null runner fields; a running one completes with `cancelled` and keeps
    /// its runner, which finds out when it reports.
    pub fn cancel(&mut self, job_id: u64, now: Timestamp) -> Result<(), ActionError> {
        let job = self
            .jobs
            .get_mut(&job_id)
            .ok_or(ActionError::UnknownJob(job_id))?;
        if job.status == JobStatus::Completed {
            return Err(ActionError::Conflict(format!(
                "job {job_id} is already completed"
            )));
        }
        if let Some((runner_id, _)) = job.assigned.take()
            && let Some(runner) = self.runners.get_mut(&runner_id)
        {
            runner.job = None;
        }
        job.status = JobStatus::Completed;
        job.conclusion = Some("cancelled".to_owned());
        job.completed_at = Some(now);
        self.emit_workflow_job(job_id, "completed");
        Ok(())
    }

    /// Periodic upkeep: jobs handed to a runner that did not start them in time go back to
    /// the queue (the runner is free again); idle runners that stopped polling go offline;
    /// expired credentials are forgotten.
    pub fn housekeeping(&mut self, now: Timestamp) {
        for job in self.jobs.values_mut() {
            if let Some((runner_id, deadline)) = job.assigned
                && job.status == JobStatus::Queued
                && deadline <= now
            {
                job.assigned = None;
                self.wake_runners = true;
                if let Some(runner) = self.runners.get_mut(&runner_id) {
                    runner.job = None;
                }
            }
        }
        for runner in self.runners.values_mut() {
            if runner.online
                && runner.job.is_none()
                && plus_secs(runner.last_seen, RUNNER_SILENCE_SECS) <= now
            {
                runner.online = false;
            }
        }
        self.purge_expired(now);
    }

    /// The runner group a new runner lands in, checked.
    pub fn runner_group(id: u64) -> Result<u64, ActionError> {
        if id == DEFAULT_RUNNER_GROUP_ID {
            Ok(id)
        } else {
            Err(ActionError::Invalid(format!("no runner group {id}")))
        }
    }
}
