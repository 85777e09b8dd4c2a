//! The agent loop: offer the free vCPUs, claim a job, reserve its vCPUs, launch its runner,
//! keep its lease, report on it, release its vCPUs on every path out.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use builtiful_core::client::Error as ClientError;
use builtiful_core::{ClaimRequest, Client, NewJob, RunnerEvent, RunnerEventKind};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{Config, ExecutorKind};
use crate::executor::{CommandExecutor, Executor, Exit, Runner, job_files};
use crate::metrics::Metrics;
use crate::state::{JobRecord, StateDir};

/// The two stages of shutdown: `drain` (no new claims; running jobs finish) and `stop`
/// (running jobs are stopped). Stopping implies draining.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Cancelled by the first signal.
    pub drain: CancellationToken,
    /// Cancelled by the second signal.
    pub stop: CancellationToken,
}

impl Default for Shutdown {
    fn default() -> Self {
        let stop = CancellationToken::new();
        Self {
            drain: stop.child_token(),
            stop,
        }
    }
}

impl Shutdown {
    /// Cancels `drain` on the first SIGTERM or SIGINT and `stop` on the second.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            for stage in 0..2 {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if stage == 0 {
                    tracing::info!(
                        "draining: no new jobs; running jobs finish (signal again to stop them)"
                    );
                    this.drain.cancel();
                } else {
                    tracing::warn!("stopping: running jobs are stopped");
                    this.stop.cancel();
                }
            }
        });
        Ok(())
    }
}

/// Why the agent stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server refused the token.
    #[error(
        "the server refused the provisioner token (HTTP 401): it is wrong or was revoked; \
         check BUILTIFUL_TOKEN or --token-file"
    )]
    Unauthorized,
    /// The server refused the claim for another reason than a passing one.
    #[error("the server refused to hand out jobs: {0}")]
    Refused(#[source] ClientError),
    /// The client could not be set up.
    #[error(transparent)]
    Client(ClientError),
    /// The state directory cannot be used.
    #[error("cannot use the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics listener could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The longest poll while some vCPUs are busy, in seconds.
const BUSY_POLL_WAIT_SECS: u32 = 2;

/// vCPUs not reserved. A claim reserves every free vCPU while it asks (so nothing else can
/// promise them), then keeps the job's and gives the rest back.
#[derive(Debug)]
struct Capacity {
    total: u32,
    state: Mutex<Counts>,
    released: Notify,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Counts {
    /// Not reserved at all.
    free: u32,
    /// Reserved by jobs (as opposed to a claim in flight).
    jobs: u32,
}

impl Capacity {
    fn new(total: u32, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.vcpus_total.set(i64::from(total));
        metrics.vcpus_free.set(i64::from(total));
        Arc::new(Self {
            total,
            state: Mutex::new(Counts {
                free: total,
                jobs: 0,
            }),
            released: Notify::new(),
            metrics,
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, counts: &Counts) {
        self.metrics
            .vcpus_free
            .set(i64::from(self.total.saturating_sub(counts.jobs)));
    }

    /// Reserves every free vCPU for a claim, or `None` when none is free.
    fn reserve_all(self: &Arc<Self>) -> Option<Reservation> {
        let mut counts = self.counts();
        if counts.free == 0 {
            return None;
        }
        let vcpus = std::mem::take(&mut counts.free);
        Some(Reservation {
            capacity: self.clone(),
            vcpus,
            job: false,
        })
    }

    /// Reserves `vcpus` for an adopted job, whether or not they are free (it uses them).
    fn reserve_adopted(self: &Arc<Self>, vcpus: u32) -> Reservation {
        let mut counts = self.counts();
        counts.free = counts.free.saturating_sub(vcpus);
        counts.jobs += vcpus;
        self.publish(&counts);
        Reservation {
            capacity: self.clone(),
            vcpus,
            job: true,
        }
    }

    fn release(&self, vcpus: u32, job: bool) {
        let mut counts = self.counts();
        counts.free = (counts.free + vcpus).min(self.total);
        if job {
            counts.jobs = counts.jobs.saturating_sub(vcpus);
        }
        self.publish(&counts);
        drop(counts);
        self.released.notify_one();
    }
}

/// vCPUs held for a claim or a job; given back when dropped, whatever the path out.
#[derive(Debug)]
struct Reservation {
    capacity: Arc<Capacity>,
    vcpus: u32,
    job: bool,
}

impl Reservation {
    /// Keeps `vcpus` of a claim's reservation for its job and gives the rest back.
    fn keep(mut self, vcpus: u32) -> Self {
        let kept = vcpus.min(self.vcpus);
        {
            let mut counts = self.capacity.counts();
            counts.jobs += kept;
            self.capacity.publish(&counts);
        }
        self.capacity.release(self.vcpus - kept, false);
        self.vcpus = kept;
        self.job = true;
        self
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.capacity.release(self.vcpus, self.job);
    }
}

/// What a job task needs.
#[derive(Debug)]
struct Context {
    client: Client,
    config: Config,
    executor: Arc<dyn Executor>,
    state: StateDir,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    /// Launchers that failed to start in a row: claims pause while it is not zero, so a
    /// broken launcher does not burn through the queue.
    launch_failures: AtomicU32,
}

fn backoff(max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        // The jitter is added on top of the delay: keep the cap a cap.
        .map(move |delay| delay.min(max))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the agent until it has drained after `shutdown`, or a fatal error.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), AgentError> {
    run_with_metrics(config, shutdown, Arc::new(Metrics::default())).await
}

/// [`run`], with the metrics registry given.
pub async fn run_with_metrics(
    config: Config,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> Result<(), AgentError> {
    // Short enough that a hung server does not hold up a heartbeat's select loop for long;
    // long-polls stretch it by their wait.
    let client = Client::builder(&config.server)
        .token(config.token.expose())
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(AgentError::Client)?;
    let state = StateDir::open(&config.state_dir).map_err(|source| AgentError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let executor: Arc<dyn Executor> = match &config.executor {
        ExecutorKind::Command { launcher } => Arc::new(CommandExecutor::new(launcher.clone())),
    };
    let metrics_server = match config.metrics_listen {
        Some(addr) => Some(
            crate::metrics::serve(addr, metrics.clone(), shutdown.stop.clone())
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let capacity = Capacity::new(config.offered_vcpus(), metrics.clone());
    tracing::info!(
        server = %config.server,
        host = %config.host,
        vcpus = config.vcpus,
        offered_vcpus = config.offered_vcpus(),
        cpu_architecture = %config.cpu_architecture,
        state_dir = %config.state_dir.display(),
        "provisioner started"
    );
    let ctx = Arc::new(Context {
        client,
        config,
        executor,
        state,
        metrics,
        shutdown: shutdown.clone(),
        launch_failures: AtomicU32::new(0),
    });
    let tracker = TaskTracker::new();
    adopt(&ctx, &capacity, &tracker);

    let result = claim_loop(&ctx, &capacity, &tracker).await;
    if result.is_err() {
        shutdown.stop.cancel();
    }
    tracker.close();
    if !tracker.is_empty() {
        tracing::info!(jobs = tracker.len(), "waiting for running jobs to finish");
    }
    tracker.wait().await;
    shutdown.stop.cancel();
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    tracing::info!("provisioner stopped");
    result
}

/// Takes over the jobs an earlier run recorded: watches the launchers still alive, reports
/// those that died.
fn adopt(ctx: &Arc<Context>, capacity: &Arc<Capacity>, tracker: &TaskTracker) {
    let records = match ctx.state.records() {
        Ok(records) => records,
        Err(error) => {
            tracing::error!(%error, "cannot read the recorded jobs");
            return;
        }
    };
    for record in records {
        let reservation = capacity.reserve_adopted(record.vcpus);
        if let Some(runner) = ctx.executor.adopt(record.pid, record.start_ticks) {
            tracing::info!(job.id = %record.job_id, pid = record.pid, "adopted a running launcher");
            ctx.metrics.jobs_running.inc();
            tracker.spawn(supervise(ctx.clone(), record, runner, reservation, false));
        } else {
            tracing::warn!(job.id = %record.job_id, "the launcher died while the provisioner was down");
            let ctx = ctx.clone();
            tracker.spawn(async move {
                drop(reservation);
                let event = RunnerEvent {
                    event: RunnerEventKind::RunnerExited,
                    exit_code: None,
                    message: Some(
                        "the launcher ended while the provisioner was not running".to_owned(),
                    ),
                };
                finish(&ctx, record.job_id, event).await;
            });
        }
    }
}

async fn claim_loop(
    ctx: &Arc<Context>,
    capacity: &Arc<Capacity>,
    tracker: &TaskTracker,
) -> Result<(), AgentError> {
    let drain = &ctx.shutdown.drain;
    let mut delays = backoff(ctx.config.max_backoff);
    let mut launch_delays = backoff(ctx.config.max_backoff);
    loop {
        if drain.is_cancelled() {
            return Ok(());
        }
        if ctx.launch_failures.load(Ordering::Relaxed) > 0 {
            let delay = launch_delays.next().unwrap_or(ctx.config.max_backoff);
            tracing::warn!(
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "the last launcher failed to start; pausing claims"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = drain.cancelled() => return Ok(()),
            }
        } else {
            launch_delays = backoff(ctx.config.max_backoff);
        }
        let Some(reservation) = capacity.reserve_all() else {
            tokio::select! {
                () = capacity.released.notified() => continue,
                () = drain.cancelled() => return Ok(()),
            }
        };
        // While jobs hold some vCPUs, poll briefly: vCPUs a job gives back mid-poll can only
        // be offered by the next poll (abandoning a poll could lose a claim the server just
        // made), so a larger job would wait for the poll's end.
        let wait = if reservation.vcpus < capacity.total {
            ctx.config.poll_wait.min(BUSY_POLL_WAIT_SECS)
        } else {
            ctx.config.poll_wait
        };
        let request = ClaimRequest {
            available_vcpus: i64::from(reservation.vcpus),
            cpu_architecture: ctx.config.cpu_architecture,
            host: ctx.config.host.clone(),
            wait: Some(i64::from(wait)),
        };
        // A drain abandons the long-poll: should the server have just claimed a job for us,
        // its lease runs out and the server offers it again.
        let result = tokio::select! {
            result = ctx.client.claim_job(&request) => result,
            () = drain.cancelled() => return Ok(()),
        };
        match result {
            Ok(Some(job)) => {
                delays = backoff(ctx.config.max_backoff);
                ctx.metrics.claims.inc();
                tracing::info!(job.id = %job.id, vcpus = job.vcpus, label = %job.label, repository = %job.repository, "claimed a job");
                if job.vcpus > reservation.vcpus {
                    tracing::error!(job.id = %job.id, vcpus = job.vcpus, offered = reservation.vcpus, "the server handed out a job larger than offered; refusing it");
                    drop(reservation);
                    let ctx = ctx.clone();
                    tracker.spawn(async move {
                        let event = RunnerEvent {
                            event: RunnerEventKind::RunnerExited,
                            exit_code: None,
                            message: Some(
                                "refused: the job needs more vCPUs than were offered".to_owned(),
                            ),
                        };
                        finish(&ctx, job.id, event).await;
                    });
                    continue;
                }
                let reservation = reservation.keep(job.vcpus);
                tracker.spawn(run_job(ctx.clone(), job, reservation));
            }
            Ok(None) => {
                delays = backoff(ctx.config.max_backoff);
            }
            Err(error) if error.is_unauthorized() => return Err(AgentError::Unauthorized),
            Err(error) if error.is_transient() => {
                drop(reservation);
                ctx.metrics.server_errors.inc();
                let delay = delays.next().unwrap_or(ctx.config.max_backoff);
                tracing::warn!(%error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "cannot claim jobs; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = drain.cancelled() => return Ok(()),
                }
            }
            Err(error) => return Err(AgentError::Refused(error)),
        }
    }
}

/// Launches a claimed job's runner and supervises it.
async fn run_job(ctx: Arc<Context>, job: NewJob, reservation: Reservation) {
    let files = job_files(ctx.state.root(), job.id);
    let launched = match StateDir::write_secret(&files.jit_config, &job.jit_config) {
        Ok(()) => ctx
            .executor
            .launch(&job, &files)
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(format!("cannot write the JIT config file: {error}")),
    };
    let runner = match launched {
        Ok(runner) => runner,
        Err(message) => {
            ctx.metrics.launcher_failures.inc();
            ctx.launch_failures.fetch_add(1, Ordering::Relaxed);
            let _ = std::fs::remove_file(&files.jit_config);
            tracing::error!(job.id = %job.id, error = %message, "the runner could not start");
            drop(reservation);
            let event = RunnerEvent {
                event: RunnerEventKind::RunnerExited,
                exit_code: None,
                message: Some(message),
            };
            finish(&ctx, job.id, event).await;
            return;
        }
    };
    let record = JobRecord {
        job_id: job.id,
        vcpus: job.vcpus,
        max_run_time: job.max_run_time,
        started_at: unix_now(),
        pid: runner.pid(),
        start_ticks: runner.start_ticks(),
    };
    if let Err(error) = ctx.state.save(&record) {
        tracing::warn!(job.id = %job.id, %error, "cannot record the job; a restart would not adopt it");
    }
    ctx.launch_failures.store(0, Ordering::Relaxed);
    tracing::info!(job.id = %job.id, pid = runner.pid(), "launcher started");
    ctx.metrics.jobs_running.inc();
    supervise(ctx, record, runner, reservation, true).await;
}

/// Why a launcher was stopped.
enum Outcome {
    Exited(Exit),
    Stop(String),
}

/// Keeps a job's lease while its launcher runs, stops the launcher when it must, then
/// releases the vCPUs and reports the exit.
async fn supervise(
    ctx: Arc<Context>,
    record: JobRecord,
    mut runner: Box<dyn Runner>,
    reservation: Reservation,
    report_started: bool,
) {
    let id = record.job_id;
    let elapsed = unix_now().saturating_sub(record.started_at);
    let deadline =
        Instant::now() + Duration::from_secs(record.max_run_time.saturating_sub(elapsed));
    let every = ctx.config.heartbeat_interval;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = async {
        if report_started {
            let event = RunnerEvent {
                event: RunnerEventKind::RunnerStarted,
                exit_code: None,
                message: None,
            };
            report(&ctx, id, &event).await;
        }
    };
    tokio::pin!(started);
    let mut started_done = false;
    let mut held = true;

    let outcome = loop {
        tokio::select! {
            exit = runner.wait() => break Outcome::Exited(exit),
            () = &mut started, if !started_done => started_done = true,
            _ = heartbeat.tick(), if held => match ctx.client.heartbeat(id).await {
                Ok(answer) if answer.cancel => {
                    break Outcome::Stop("the job was cancelled or has ended".to_owned());
                }
                Ok(_) => {}
                Err(error) if error.status().map(|s| s.as_u16()) == Some(404) => {
                    // GitHub may have given this job's runner another queued job of the
                    // repository, whose lease the server then passed to that job under
                    // another id; or the lease ran out and the server removed the runner's
                    // registration. Either way the runner ends by itself (after that one
                    // job, or for want of a registration): stopping it could kill a job
                    // that is working. max_run_time still bounds it.
                    tracing::warn!(job.id = %id, "the server no longer holds the job for this host; the runner goes on until it exits");
                    held = false;
                }
                Err(error) => {
                    ctx.metrics.server_errors.inc();
                    tracing::warn!(job.id = %id, %error, "heartbeat failed; the lease lasts 120 s");
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                break Outcome::Stop(format!("max_run_time of {} s exceeded", record.max_run_time));
            }
            () = ctx.shutdown.stop.cancelled() => {
                break Outcome::Stop("the provisioner was stopped".to_owned());
            }
        }
    };
    let (exit, why) = match outcome {
        Outcome::Exited(exit) => (exit, None),
        Outcome::Stop(why) => {
            tracing::info!(job.id = %id, reason = %why, "stopping the launcher");
            (runner.stop(ctx.config.stop_grace).await, Some(why))
        }
    };
    // The runner is gone: its vCPUs are free again.
    drop(reservation);
    ctx.metrics.jobs_running.dec();
    tracing::info!(job.id = %id, exit = %exit, "launcher exited");
    if !started_done {
        started.await;
    }
    let message = match why {
        Some(why) => format!("launcher stopped ({exit}): {why}"),
        None => format!("launcher exited ({exit})"),
    };
    let event = RunnerEvent {
        event: RunnerEventKind::RunnerExited,
        exit_code: exit.code,
        message: Some(message),
    };
    finish(&ctx, id, event).await;
}

/// Reports the job's end and forgets it; the record stays for the next run when the report
/// could not be made before a stop.
async fn finish(ctx: &Context, id: Uuid, event: RunnerEvent) {
    if report(ctx, id, &event).await {
        ctx.state.remove(id);
    } else {
        tracing::warn!(job.id = %id, "the runner's exit is not reported; the next start reports it");
    }
}

/// Reports an event, retrying passing failures until it is told or the provisioner stops.
/// `false` when it could not be told (the record must stay).
async fn report(ctx: &Context, id: Uuid, event: &RunnerEvent) -> bool {
    let mut delays = backoff(ctx.config.max_backoff);
    loop {
        match ctx.client.report_event(id, event).await {
            Ok(()) => return true,
            Err(error) if error.is_transient() && !ctx.shutdown.stop.is_cancelled() => {
                ctx.metrics.server_errors.inc();
                let delay = delays.next().unwrap_or(ctx.config.max_backoff);
                tracing::warn!(job.id = %id, event = %event.event, %error, "cannot report; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = ctx.shutdown.stop.cancelled() => {}
                }
            }
            Err(error) if error.is_transient() => return false,
            Err(error) => {
                // 404: the job is no longer this host's (it ended, or its lease was lost).
                tracing::warn!(job.id = %id, event = %event.event, %error, "the server refused the report");
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_come_back_on_every_path() {
        let metrics = Arc::new(Metrics::default());
        let capacity = Capacity::new(8, metrics.clone());
        let claim = capacity.reserve_all().unwrap();
        assert_eq!(claim.vcpus, 8);
        assert!(
            capacity.reserve_all().is_none(),
            "a claim in flight holds everything"
        );
        let job = claim.keep(2);
        assert_eq!(metrics.vcpus_free.get(), 6);
        let other = capacity.reserve_all().unwrap();
        assert_eq!(other.vcpus, 6);
        drop(other);
        drop(job);
        assert_eq!(capacity.reserve_all().unwrap().vcpus, 8);
        assert_eq!(metrics.vcpus_free.get(), 8);
        let adopted = capacity.reserve_adopted(4);
        assert_eq!(capacity.reserve_all().unwrap().vcpus, 4);
        drop(adopted);
        assert_eq!(capacity.counts().free, 8);
    }
}
