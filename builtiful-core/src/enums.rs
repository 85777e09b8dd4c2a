//! The enumerations of the API, spelt as the seed spells them (PascalCase strings).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Generates `as_str`, `Display`, `FromStr` and `ALL` for a fieldless enum whose wire names
/// are its variant names, so the database, the query string and JSON all agree on one spelling.
macro_rules! wire_enum {
    ($name:ident { $($variant:ident),+ $(,)? }) => {
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name, as in JSON and the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $(stringify!($variant) => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        kind: stringify!($name),
                        value: s.to_owned(),
                        expected: &[$(stringify!($variant)),+],
                    }),
                }
            }
        }
    };
}

/// A string that names no variant of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind}; expected one of: {}", expected.join(", "))]
pub struct UnknownVariant {
    kind: &'static str,
    value: String,
    expected: &'static [&'static str],
}

/// The CPU architecture of a job and of the host that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CpuArchitecture {
    /// x86-64 (`amd64`, `x64` in labels).
    Amd64,
    /// 64-bit ARM (`arm64`, `aarch64` in labels).
    Arm64,
}
wire_enum!(CpuArchitecture { Amd64, Arm64 });

/// The operating system image a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Os {
    /// Ubuntu 22.04 LTS (`ubuntu-22.04` in labels).
    Ubuntu2204,
    /// Ubuntu 24.04 LTS (`ubuntu` or `ubuntu-24.04` in labels).
    Ubuntu2404,
}
wire_enum!(Os {
    Ubuntu2204,
    Ubuntu2404
});

/// Where a job is in its lifecycle.
///
/// `Queued → Provisioning → Running → Completed | Failed`, plus `Queued → Cancelled` and
/// `Provisioning → Queued` when a lease expires before the runner started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobStatus {
    /// Waiting for a provisioner with enough free vCPUs.
    Queued,
    /// Claimed by a provisioner that is starting its runner.
    Provisioning,
    /// A runner is executing the job.
    Running,
    /// The job finished on GitHub (whatever its conclusion).
    Completed,
    /// The job could not run; `failure_reason` says why.
    Failed,
    /// The workflow was cancelled before a runner took the job.
    Cancelled,
}
wire_enum!(JobStatus {
    Queued,
    Provisioning,
    Running,
    Completed,
    Failed,
    Cancelled
});

impl JobStatus {
    /// Whether the job has reached an end state it never leaves.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Why a job ended `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FailureReason {
    /// The `builtiful(…)` label is malformed.
    InvalidLabel,
    /// The label asks for a vCPU count that is not offered.
    InvalidVcpus,
    /// The label asks for an unknown CPU architecture.
    InvalidArchitecture,
    /// The label asks for an operating system that is not offered.
    UnsupportedOs,
    /// No provisioner took the job within 24 hours.
    QueueTimeout,
    /// Runners were provisioned but never started, three times.
    ProvisioningTimeout,
    /// The host running the job stopped reporting.
    RunnerLost,
    /// The job ran longer than its `max_run_time`.
    MaxRunTimeExceeded,
    /// GitHub refused to register a runner for the job.
    GitHubError,
    /// The GitHub App installation is suspended.
    TenantSuspended,
}
wire_enum!(FailureReason {
    InvalidLabel,
    InvalidVcpus,
    InvalidArchitecture,
    UnsupportedOs,
    QueueTimeout,
    ProvisioningTimeout,
    RunnerLost,
    MaxRunTimeExceeded,
    GitHubError,
    TenantSuspended
});

/// A fact the provisioner reports about the runner of a job it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunnerEventKind {
    /// The launcher process started.
    RunnerStarted,
    /// The launcher process exited.
    RunnerExited,
}
wire_enum!(RunnerEventKind {
    RunnerStarted,
    RunnerExited
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_from_str_and_serde_agree() {
        for status in JobStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, serde_json::Value::String(status.to_string()));
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), *status);
        }
        for reason in FailureReason::ALL {
            assert_eq!(reason.as_str().parse::<FailureReason>().unwrap(), *reason);
        }
    }

    #[test]
    fn unknown_variant_names_the_choices() {
        let err = "Sparc".parse::<CpuArchitecture>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`Sparc` is not a valid CpuArchitecture; expected one of: Amd64, Arm64"
        );
    }
}
