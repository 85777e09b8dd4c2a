//! Configuration: flags, `BUILTIFUL_<FLAG_NAME>` environment variables and a TOML file, in
//! that order of precedence, over what is detected on the host.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use builtiful_core::CpuArchitecture;
use clap::Parser;
use serde::Deserialize;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/builtiful/provisioner.toml";
/// Where running jobs are recorded when `--state-dir` is not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/builtiful-provisioner";

/// Claims Builtiful jobs that fit this host's free vCPUs and runs each in an isolated runner.
///
/// Every flag is also an environment variable `BUILTIFUL_<FLAG_NAME>` and a key of the TOML
/// file (`snake_case`); a flag wins over the environment, which wins over the file.
#[derive(Debug, Default, Parser)]
#[command(name = "builtiful-provisioner", version, args_override_self = true)]
pub struct Cli {
    /// The TOML configuration file [default: /etc/builtiful/provisioner.toml, if it exists].
    #[arg(long, env = "BUILTIFUL_CONFIG")]
    pub config: Option<PathBuf>,
    /// The Builtiful server's URL.
    #[arg(long, env = "BUILTIFUL_SERVER")]
    pub server: Option<String>,
    /// The provisioner token (`bfp_…`). Prefer `--token-file` or the environment: flags show
    /// in `ps`.
    #[arg(long, env = "BUILTIFUL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the provisioner token.
    #[arg(long, env = "BUILTIFUL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The host's name as the server records it [default: the system's host name].
    #[arg(long, env = "BUILTIFUL_HOST")]
    pub host: Option<String>,
    /// The host's vCPUs [default: the CPUs this process may use].
    #[arg(long, env = "BUILTIFUL_VCPUS")]
    pub vcpus: Option<u32>,
    /// vCPUs kept for the host itself, never offered to jobs [default: 0].
    #[arg(long, env = "BUILTIFUL_RESERVE_VCPUS")]
    pub reserve_vcpus: Option<u32>,
    /// The host's CPU architecture, `amd64` or `arm64` [default: the one this binary runs on].
    #[arg(long, env = "BUILTIFUL_CPU_ARCHITECTURE", value_parser = parse_architecture)]
    pub cpu_architecture: Option<CpuArchitecture>,
    /// How runners are started; only `command` exists [default: command].
    #[arg(long, env = "BUILTIFUL_EXECUTOR")]
    pub executor: Option<String>,
    /// The program the `command` executor runs for each job.
    #[arg(long, env = "BUILTIFUL_LAUNCHER")]
    pub launcher: Option<PathBuf>,
    /// Where running jobs and their logs are recorded [default: /var/lib/builtiful-provisioner].
    #[arg(long, env = "BUILTIFUL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    #[arg(long, env = "BUILTIFUL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds between heartbeats of a running job [default: 40, a third of the 120 s lease].
    #[arg(long, env = "BUILTIFUL_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<u64>,
    /// Seconds a launcher gets between SIGTERM and SIGKILL [default: 30].
    #[arg(long, env = "BUILTIFUL_STOP_GRACE")]
    pub stop_grace: Option<u64>,
    /// Seconds one claim request long-polls, 0 to 60 [default: 30].
    #[arg(long, env = "BUILTIFUL_POLL_WAIT")]
    pub poll_wait: Option<u32>,
    /// The longest pause between retries while the server is unreachable, in seconds [default: 30].
    #[arg(long, env = "BUILTIFUL_MAX_BACKOFF")]
    pub max_backoff: Option<u64>,
}

fn parse_architecture(text: &str) -> Result<CpuArchitecture, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "amd64" | "x64" | "x86_64" => Ok(CpuArchitecture::Amd64),
        "arm64" | "aarch64" => Ok(CpuArchitecture::Arm64),
        other => Err(format!(
            "unknown CPU architecture `{other}`: use amd64 or arm64"
        )),
    }
}

/// The TOML file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    host: Option<String>,
    vcpus: Option<u32>,
    reserve_vcpus: Option<u32>,
    cpu_architecture: Option<String>,
    executor: Option<String>,
    launcher: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    heartbeat_interval: Option<u64>,
    stop_grace: Option<u64>,
    poll_wait: Option<u32>,
    max_backoff: Option<u64>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is missing or out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The provisioner token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How runners are started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Run a launcher program per job ([`crate::executor::CommandExecutor`]).
    Command {
        /// The launcher.
        launcher: PathBuf,
    },
}

/// The settled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's base URL.
    pub server: String,
    /// The provisioner token.
    pub token: Token,
    /// The host name sent with claims.
    pub host: String,
    /// All the host's vCPUs.
    pub vcpus: u32,
    /// vCPUs kept for the host.
    pub reserve_vcpus: u32,
    /// The host's architecture.
    pub cpu_architecture: CpuArchitecture,
    /// How runners start.
    pub executor: ExecutorKind,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Where to serve metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Between heartbeats.
    pub heartbeat_interval: Duration,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Long-poll length of a claim, in seconds.
    pub poll_wait: u32,
    /// Cap of the retry backoff.
    pub max_backoff: Duration,
}

impl Config {
    /// The vCPUs jobs may use: all of them less the reserve.
    pub fn offered_vcpus(&self) -> u32 {
        self.vcpus - self.reserve_vcpus
    }

    /// Settles the configuration from the parsed command line (flags and environment), the
    /// file it names, and what the host says about itself.
    pub fn load(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileConfig::default(),
        };
        let invalid = |m: &str| ConfigError::Invalid(m.to_owned());

        let server = cli
            .server
            .or(file.server)
            .ok_or_else(|| invalid("no server: pass --server URL or set BUILTIFUL_SERVER"))?;
        // The flag or environment first, then the file's token_file, then its token.
        let token = match (cli.token, cli.token_file.or(file.token_file), file.token) {
            (Some(token), ..) | (None, None, Some(token)) => token,
            (None, Some(path), _) => read_token(&path)?,
            (None, None, None) => {
                return Err(invalid(
                    "no provisioner token: set BUILTIFUL_TOKEN or pass --token-file FILE",
                ));
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err(invalid("the provisioner token is empty"));
        }
        let host = match cli.host.or(file.host) {
            Some(host) => host,
            None => detect_host()?,
        };
        let host = host.trim().to_owned();
        if host.is_empty() || host.len() > 255 {
            return Err(invalid("the host name must be 1 to 255 bytes long"));
        }
        let vcpus = match cli.vcpus.or(file.vcpus) {
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        };
        let reserve_vcpus = cli.reserve_vcpus.or(file.reserve_vcpus).unwrap_or(0);
        if reserve_vcpus >= vcpus {
            return Err(ConfigError::Invalid(format!(
                "--reserve-vcpus ({reserve_vcpus}) must be below the host's vCPUs ({vcpus})"
            )));
        }
        let cpu_architecture = match (cli.cpu_architecture, file.cpu_architecture) {
            (Some(arch), _) => arch,
            (None, Some(text)) => parse_architecture(&text).map_err(ConfigError::Invalid)?,
            (None, None) => detect_architecture()?,
        };
        let executor = match cli.executor.or(file.executor).as_deref() {
            None | Some("command") => ExecutorKind::Command {
                launcher: cli.launcher.or(file.launcher).ok_or_else(|| {
                    invalid("the command executor needs --launcher PROGRAM (or BUILTIFUL_LAUNCHER)")
                })?,
            },
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "unknown executor `{other}`: the only executor is `command`"
                )));
            }
        };
        let poll_wait = cli.poll_wait.or(file.poll_wait).unwrap_or(30);
        if poll_wait > builtiful_core::ClaimRequest::MAX_WAIT_SECS {
            return Err(invalid("--poll-wait must be between 0 and 60 seconds"));
        }
        let heartbeat_interval = cli
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(40);
        if heartbeat_interval == 0 || heartbeat_interval >= 120 {
            return Err(invalid(
                "--heartbeat-interval must be between 1 and 119 seconds (the lease is 120 s)",
            ));
        }
        Ok(Self {
            server,
            token: Token(token),
            host,
            vcpus,
            reserve_vcpus,
            cpu_architecture,
            executor,
            state_dir: cli
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            metrics_listen: cli.metrics_listen.or(file.metrics_listen),
            heartbeat_interval: Duration::from_secs(heartbeat_interval),
            stop_grace: Duration::from_secs(cli.stop_grace.or(file.stop_grace).unwrap_or(30)),
            poll_wait,
            max_backoff: Duration::from_secs(
                cli.max_backoff.or(file.max_backoff).unwrap_or(30).max(1),
            ),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

fn read_token(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Invalid(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })
}

fn detect_host() -> Result<String, ConfigError> {
    nix::unistd::gethostname()
        .map_err(|e| ConfigError::Invalid(format!("cannot read the host name ({e}): pass --host")))?
        .into_string()
        .map_err(|_| ConfigError::Invalid("the host name is not UTF-8: pass --host".to_owned()))
}

fn detect_architecture() -> Result<CpuArchitecture, ConfigError> {
    parse_architecture(std::env::consts::ARCH).map_err(|_| {
        ConfigError::Invalid(format!(
            "this host's architecture `{}` is not one Builtiful runs: pass --cpu-architecture",
            std::env::consts::ARCH
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["builtiful-provisioner"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_detection() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "bfp_from_file\n").unwrap();
        std::fs::write(
            &file,
            format!(
                "server = \"http://file\"\nvcpus = 8\nreserve_vcpus = 2\nhost = \"h-file\"\n\
                 token_file = \"{}\"\nlauncher = \"/bin/true\"\ncpu_architecture = \"arm64\"\n",
                token_file.display()
            ),
        )
        .unwrap();
        let config = Config::load(cli(&[
            "--config",
            file.to_str().unwrap(),
            "--host",
            "h-flag",
        ]))
        .unwrap();
        assert_eq!(config.server, "http://file");
        assert_eq!(config.host, "h-flag");
        assert_eq!(config.offered_vcpus(), 6);
        assert_eq!(config.cpu_architecture, CpuArchitecture::Arm64);
        assert_eq!(config.token.expose(), "bfp_from_file");
        assert!(!format!("{config:?}").contains("bfp_from_file"));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(40));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let file: FileConfig = toml::from_str(include_str!("../dist/provisioner.toml")).unwrap();
        assert_eq!(file.reserve_vcpus, Some(2));
        assert_eq!(file.executor.as_deref(), Some("command"));
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "sever = \"typo\"\n").unwrap();
        let err = Config::load(cli(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("unknown field `sever`"), "{err}");

        let base = [
            "--server",
            "http://s",
            "--token",
            "bfp_x",
            "--launcher",
            "/bin/true",
        ];
        let err = Config::load(cli(
            &[&base[..], &["--vcpus", "4", "--reserve-vcpus", "4"]].concat()
        ))
        .unwrap_err();
        assert!(err.to_string().contains("must be below"), "{err}");
        let err = Config::load(cli(&["--server", "http://s", "--launcher", "/x"])).unwrap_err();
        assert!(err.to_string().contains("no provisioner token"), "{err}");
        let err =
            Config::load(cli(&[&base[..], &["--executor", "firecracker"]].concat())).unwrap_err();
        assert!(err.to_string().contains("unknown executor"), "{err}");
    }
}
