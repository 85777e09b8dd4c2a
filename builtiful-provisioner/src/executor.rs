//! Executors start a runner for a job and stop it. The `command` executor runs a launcher
//! program (see `launchers/`) in its own process group.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use builtiful_core::NewJob;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How a launcher ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exit {
    /// Its exit code, when it exited by itself and we saw it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => f.write_str("exit status unknown"),
        }
    }
}

/// The files a job's launcher is given.
#[derive(Debug, Clone)]
pub struct JobFiles {
    /// The JIT config, mode 0600.
    pub jit_config: PathBuf,
    /// Where the launcher's stdout and stderr go.
    pub log: PathBuf,
}

/// Why a runner could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The launcher could not be spawned.
    #[error("cannot start the launcher {launcher}: {source}")]
    Spawn {
        /// The program.
        launcher: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be opened.
    #[error("cannot open the job log {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Starts runners.
#[async_trait]
pub trait Executor: Send + Sync + fmt::Debug {
    /// Starts a runner for `job`.
    async fn launch(&self, job: &NewJob, files: &JobFiles) -> Result<Box<dyn Runner>, LaunchError>;

    /// Takes over a runner an earlier run of the provisioner started, if it still lives.
    fn adopt(&self, pid: u32, start_ticks: u64) -> Option<Box<dyn Runner>>;
}

/// A started runner.
#[async_trait]
pub trait Runner: Send + fmt::Debug {
    /// The launcher's process id (also its process group's id).
    fn pid(&self) -> u32;

    /// When the process started, in clock ticks since boot (tells a reused pid apart).
    fn start_ticks(&self) -> u64;

    /// Waits for the launcher to end. Cancel-safe: may be called again after being dropped.
    async fn wait(&mut self) -> Exit;

    /// Stops the launcher: SIGTERM to its process group, SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) -> Exit;
}

/// Runs `--launcher PROGRAM` for each job, in its own process group, with the job described
/// by `BUILTIFUL_*` variables and its output in the job's log.
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    launcher: PathBuf,
}

impl CommandExecutor {
    /// An executor running `launcher`.
    pub fn new(launcher: PathBuf) -> Self {
        Self { launcher }
    }
}

/// Variables of the provisioner's own environment that a launcher must not inherit: the
/// token is a secret, and an inherited JIT config would shadow the job's file.
const WITHHELD_ENV: &[&str] = &[
    "BUILTIFUL_TOKEN",
    "BUILTIFUL_TOKEN_FILE",
    "BUILTIFUL_JIT_CONFIG",
];

#[async_trait]
impl Executor for CommandExecutor {
    async fn launch(&self, job: &NewJob, files: &JobFiles) -> Result<Box<dyn Runner>, LaunchError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.log)
            .map_err(|source| LaunchError::Log {
                path: files.log.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| LaunchError::Log {
            path: files.log.clone(),
            source,
        })?;
        let mut command = tokio::process::Command::new(&self.launcher);
        for name in WITHHELD_ENV {
            command.env_remove(name);
        }
        command
            .env("BUILTIFUL_JOB_ID", job.id.to_string())
            .env("BUILTIFUL_JIT_CONFIG_FILE", &files.jit_config)
            .env("BUILTIFUL_VCPUS", job.vcpus.to_string())
            .env("BUILTIFUL_CPU_ARCHITECTURE", job.cpu_architecture.as_str())
            .env("BUILTIFUL_OS", job.os.as_str())
            .env("BUILTIFUL_LABEL", &job.label)
            .env("BUILTIFUL_MAX_RUN_TIME", job.max_run_time.to_string())
            .env("BUILTIFUL_ORGANIZATION", &job.organization)
            .env("BUILTIFUL_REPOSITORY", &job.repository)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            // The launcher outlives a provisioner killed with SIGKILL; a restarted one adopts it.
            .kill_on_drop(false);
        let child = command.spawn().map_err(|source| LaunchError::Spawn {
            launcher: self.launcher.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        Ok(Box::new(ChildRunner {
            child,
            pid,
            start_ticks: process_start_ticks(pid).unwrap_or_default(),
            exit: None,
        }))
    }

    fn adopt(&self, pid: u32, start_ticks: u64) -> Option<Box<dyn Runner>> {
        (process_start_ticks(pid) == Some(start_ticks))
            .then(|| Box::new(AdoptedRunner { pid, start_ticks }) as Box<dyn Runner>)
    }
}

/// The start time of a process in clock ticks since boot (`/proc/PID/stat`, field 22), or
/// `None` when no such process lives (zombies count as dead).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it are
    // counted from its last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); the start time is field 22.
    rest.split(' ').nth(19)?.parse().ok()
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // ESRCH (the group is gone) is the expected end.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    Exit {
        code: status.code(),
        signal: status.signal(),
    }
}

/// A launcher this provisioner spawned.
#[derive(Debug)]
struct ChildRunner {
    child: tokio::process::Child,
    pid: u32,
    start_ticks: u64,
    exit: Option<Exit>,
}

#[async_trait]
impl Runner for ChildRunner {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    async fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = self
            .child
            .wait()
            .await
            .map_or_else(|_| Exit::default(), exit_of);
        // Whatever the launcher left in its group goes with it: no runner is left behind.
        signal_group(self.pid, Signal::SIGKILL);
        self.exit = Some(exit);
        exit
    }

    async fn stop(&mut self, grace: Duration) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        signal_group(self.pid, Signal::SIGTERM);
        if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
            return exit;
        }
        signal_group(self.pid, Signal::SIGKILL);
        self.wait().await
    }
}

/// A launcher an earlier run of the provisioner spawned. It is not our child, so its exit
/// code cannot be known; it is watched through `/proc`.
#[derive(Debug)]
struct AdoptedRunner {
    pid: u32,
    start_ticks: u64,
}

impl AdoptedRunner {
    fn alive(&self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }
}

#[async_trait]
impl Runner for AdoptedRunner {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    async fn wait(&mut self) -> Exit {
        while self.alive() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        signal_group(self.pid, Signal::SIGKILL);
        Exit::default()
    }

    async fn stop(&mut self, grace: Duration) -> Exit {
        if self.alive() {
            signal_group(self.pid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            signal_group(self.pid, Signal::SIGKILL);
        }
        self.wait().await
    }
}

/// The job's files under the state directory.
pub fn job_files(state_dir: &Path, job_id: uuid::Uuid) -> JobFiles {
    JobFiles {
        jit_config: state_dir.join("jobs").join(format!("{job_id}.jit")),
        log: state_dir.join("logs").join(format!("{job_id}.log")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_identify_a_live_process() {
        let me = std::process::id();
        let ticks = process_start_ticks(me).unwrap();
        assert!(ticks > 0);
        assert_eq!(process_start_ticks(me), Some(ticks));
        assert_eq!(process_start_ticks(u32::MAX), None);
    }
}
