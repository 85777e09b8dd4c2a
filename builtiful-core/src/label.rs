//! The label grammar: `builtiful(<os>[,<n>cpu][,<arch>])`.
//!
//! Case and whitespace do not matter. `os` is `ubuntu` (Ubuntu 24.04), `ubuntu-24.04` or
//! `ubuntu-22.04`; `n` is one of 2, 4, 8, 16, 32, 64 (default 2); `arch` is `amd64`/`x64`
//! (default) or `arm64`/`aarch64`. The vCPU and architecture parts may come in either order.
//!
//! ```
//! use builtiful_core::{label, CpuArchitecture, Os};
//!
//! let spec = label::parse("builtiful(ubuntu, 8cpu, arm64)").unwrap();
//! assert_eq!((spec.os, spec.vcpus, spec.architecture), (Os::Ubuntu2404, 8, CpuArchitecture::Arm64));
//! assert_eq!(spec.to_string(), "builtiful(ubuntu-24.04,8cpu,arm64)");
//! ```

use std::fmt;
use std::str::FromStr;

use crate::{CpuArchitecture, FailureReason, Os};

/// The vCPU counts a job may ask for.
pub const VCPU_CHOICES: [u32; 6] = [2, 4, 8, 16, 32, 64];
/// The vCPU count of a label that names none.
pub const DEFAULT_VCPUS: u32 = 2;
/// Labels longer than this are refused unread: GitHub's own limit is far lower.
pub const MAX_LABEL_LEN: usize = 256;

const PREFIX: &str = "builtiful(";

/// What a job asks for: the machine its runner needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobSpec {
    /// The operating system image.
    pub os: Os,
    /// The number of vCPUs, one of [`VCPU_CHOICES`].
    pub vcpus: u32,
    /// The CPU architecture.
    pub architecture: CpuArchitecture,
}

impl JobSpec {
    /// The canonical label of this spec: every part explicit, lower case, no spaces.
    pub fn canonical_label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = match self.os {
            Os::Ubuntu2204 => "ubuntu-22.04",
            Os::Ubuntu2404 => "ubuntu-24.04",
        };
        let arch = match self.architecture {
            CpuArchitecture::Amd64 => "amd64",
            CpuArchitecture::Arm64 => "arm64",
        };
        write!(f, "{PREFIX}{os},{}cpu,{arch})", self.vcpus)
    }
}

impl FromStr for JobSpec {
    type Err = LabelError;

    fn from_str(label: &str) -> Result<Self, Self::Err> {
        parse(label)
    }
}

/// Why a `builtiful(…)` label was refused. [`LabelError::failure_reason`] is what the job's
/// `failure_reason` becomes; the message tells the person how to fix the workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The label does not follow `builtiful(<os>[,<n>cpu][,<arch>])`.
    #[error(
        "malformed label: {0}; expected builtiful(<os>[,<n>cpu][,<arch>]), e.g. builtiful(ubuntu,8cpu)"
    )]
    Malformed(&'static str),
    /// The operating system is not one we offer.
    #[error("unsupported operating system `{0}`; use ubuntu, ubuntu-24.04 or ubuntu-22.04")]
    UnsupportedOs(String),
    /// The vCPU count is not one we offer.
    #[error("invalid vCPU count `{0}`; use 2cpu, 4cpu, 8cpu, 16cpu, 32cpu or 64cpu")]
    InvalidVcpus(String),
    /// The architecture is unknown.
    #[error("invalid architecture `{0}`; use amd64 (or x64) or arm64 (or aarch64)")]
    InvalidArchitecture(String),
}

impl LabelError {
    /// The `FailureReason` a job with this label fails with.
    pub const fn failure_reason(&self) -> FailureReason {
        match self {
            Self::Malformed(_) => FailureReason::InvalidLabel,
            Self::UnsupportedOs(_) => FailureReason::UnsupportedOs,
            Self::InvalidVcpus(_) => FailureReason::InvalidVcpus,
            Self::InvalidArchitecture(_) => FailureReason::InvalidArchitecture,
        }
    }
}

/// Whether a runs-on label is addressed to Builtiful (it starts with `builtiful(`, in any case
/// and spacing). Only such labels are parsed; jobs with none are not ours.
pub fn is_builtiful_label(label: &str) -> bool {
    let mut chars = label.chars().filter(|c| !c.is_whitespace());
    PREFIX.chars().all(|expected| {
        chars
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(&expected))
    })
}

/// Finds the Builtiful label among a job's labels and parses it.
///
/// `None` when no label is ours. More than one `builtiful(` label is malformed: a runner has
/// exactly one, so such a job could never be matched.
pub fn find<'a, I>(labels: I) -> Option<(&'a str, Result<JobSpec, LabelError>)>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut ours = labels.into_iter().filter(|label| is_builtiful_label(label));
    let first = ours.next()?;
    if ours.next().is_some() {
        return Some((
            first,
            Err(LabelError::Malformed("more than one builtiful(…) label")),
        ));
    }
    Some((first, parse(first)))
}

/// Parses a `builtiful(…)` label into what the job asks for.
pub fn parse(label: &str) -> Result<JobSpec, LabelError> {
    if label.len() > MAX_LABEL_LEN {
        return Err(LabelError::Malformed("label longer than 256 bytes"));
    }
    let normalised: String = label
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    let inner = normalised
        .strip_prefix(PREFIX)
        .ok_or(LabelError::Malformed("it must start with builtiful("))?
        .strip_suffix(')')
        .ok_or(LabelError::Malformed("it must end with )"))?;
    if inner.contains(['(', ')']) {
        return Err(LabelError::Malformed("unbalanced parentheses"));
    }

    let mut parts = inner.split(',');
    let os = parse_os(parts.next().unwrap_or_default())?;
    let mut vcpus = None;
    let mut architecture = None;
    for part in parts {
        if part.is_empty() {
            return Err(LabelError::Malformed("empty part between commas"));
        }
        if vcpus.is_some() && architecture.is_some() {
            return Err(LabelError::Malformed("too many parts"));
        }
        if looks_like_vcpus(part) {
            if vcpus.replace(parse_vcpus(part)?).is_some() {
                return Err(LabelError::Malformed("vCPU count given twice"));
            }
        } else if architecture.replace(parse_architecture(part)?).is_some() {
            return Err(LabelError::Malformed("architecture given twice"));
        }
    }
    Ok(JobSpec {
        os,
        vcpus: vcpus.unwrap_or(DEFAULT_VCPUS),
        architecture: architecture.unwrap_or(CpuArchitecture::Amd64),
    })
}

fn parse_os(part: &str) -> Result<Os, LabelError> {
    match part {
        "" => Err(LabelError::Malformed("the operating system is missing")),
        "ubuntu" | "ubuntu-24.04" => Ok(Os::Ubuntu2404),
        "ubuntu-22.04" => Ok(Os::Ubuntu2204),
        other => Err(LabelError::UnsupportedOs(other.to_owned())),
    }
}

/// A part meant as a vCPU count: `<digits>cpu`, a bare number, or anything ending in `cpu`.
fn looks_like_vcpus(part: &str) -> bool {
    part.ends_with("cpu") || part.bytes().all(|b| b.is_ascii_digit())
}

fn parse_vcpus(part: &str) -> Result<u32, LabelError> {
    part.strip_suffix("cpu")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| VCPU_CHOICES.contains(n))
        .ok_or_else(|| LabelError::InvalidVcpus(part.to_owned()))
}

fn parse_architecture(part: &str) -> Result<CpuArchitecture, LabelError> {
    match part {
        "amd64" | "x64" => Ok(CpuArchitecture::Amd64),
        "arm64" | "aarch64" => Ok(CpuArchitecture::Arm64),
        other => Err(LabelError::InvalidArchitecture(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuArchitecture::{Amd64, Arm64};
    use Os::{Ubuntu2204, Ubuntu2404};
    use proptest::prelude::*;

    fn spec(os: Os, vcpus: u32, architecture: CpuArchitecture) -> JobSpec {
        JobSpec {
            os,
            vcpus,
            architecture,
        }
    }

    #[test]
    fn valid_labels() {
        let cases = [
            ("builtiful(ubuntu)", spec(Ubuntu2404, 2, Amd64)),
            ("builtiful(ubuntu,8cpu)", spec(Ubuntu2404, 8, Amd64)),
            ("builtiful(ubuntu-24.04)", spec(Ubuntu2404, 2, Amd64)),
            ("builtiful(ubuntu-22.04)", spec(Ubuntu2204, 2, Amd64)),
            ("builtiful(ubuntu,2cpu)", spec(Ubuntu2404, 2, Amd64)),
            ("builtiful(ubuntu,4cpu)", spec(Ubuntu2404, 4, Amd64)),
            ("builtiful(ubuntu,16cpu)", spec(Ubuntu2404, 16, Amd64)),
            ("builtiful(ubuntu,32cpu)", spec(Ubuntu2404, 32, Amd64)),
            ("builtiful(ubuntu,64cpu)", spec(Ubuntu2404, 64, Amd64)),
            ("builtiful(ubuntu,amd64)", spec(Ubuntu2404, 2, Amd64)),
            ("builtiful(ubuntu,x64)", spec(Ubuntu2404, 2, Amd64)),
            ("builtiful(ubuntu,arm64)", spec(Ubuntu2404, 2, Arm64)),
            ("builtiful(ubuntu,aarch64)", spec(Ubuntu2404, 2, Arm64)),
            (
                "builtiful(ubuntu-22.04,8cpu,arm64)",
                spec(Ubuntu2204, 8, Arm64),
            ),
            ("builtiful(ubuntu,arm64,8cpu)", spec(Ubuntu2404, 8, Arm64)),
            ("BUILTIFUL(Ubuntu,8CPU,ARM64)", spec(Ubuntu2404, 8, Arm64)),
            (
                "Builtiful( ubuntu-24.04 , 16 cpu , x64 )",
                spec(Ubuntu2404, 16, Amd64),
            ),
            (" builtiful (ubuntu,\t4cpu) ", spec(Ubuntu2404, 4, Amd64)),
        ];
        for (label, expected) in cases {
            assert_eq!(parse(label), Ok(expected), "{label}");
        }
    }

    #[test]
    fn malformed_labels_say_why() {
        use FailureReason::{InvalidArchitecture, InvalidLabel, InvalidVcpus, UnsupportedOs};
        let cases = [
            ("builtiful", InvalidLabel),
            ("builtiful(", InvalidLabel),
            ("builtiful()", InvalidLabel),
            ("builtiful(ubuntu", InvalidLabel),
            ("builtiful ubuntu)", InvalidLabel),
            ("builtiful(ubuntu))", InvalidLabel),
            ("builtiful((ubuntu)", InvalidLabel),
            ("builtiful(ubuntu)x", InvalidLabel),
            ("builtiful(ubuntu,)", InvalidLabel),
            ("builtiful(ubuntu,,8cpu)", InvalidLabel),
            ("builtiful(,8cpu)", InvalidLabel),
            ("builtiful(ubuntu,8cpu,arm64,extra)", InvalidLabel),
            ("builtiful(ubuntu,8cpu,4cpu)", InvalidLabel),
            ("builtiful(ubuntu,arm64,x64)", InvalidLabel),
            ("builtiful(windows)", UnsupportedOs),
            ("builtiful(ubuntu-20.04,8cpu)", UnsupportedOs),
            ("builtiful(macos,arm64)", UnsupportedOs),
            ("builtiful(8cpu)", UnsupportedOs),
            ("builtiful(ubuntu,3cpu)", InvalidVcpus),
            ("builtiful(ubuntu,0cpu)", InvalidVcpus),
            ("builtiful(ubuntu,128cpu)", InvalidVcpus),
            ("builtiful(ubuntu,cpu)", InvalidVcpus),
            ("builtiful(ubuntu,8)", InvalidVcpus),
            ("builtiful(ubuntu,-8cpu)", InvalidVcpus),
            ("builtiful(ubuntu,99999999999cpu)", InvalidVcpus),
            ("builtiful(ubuntu,sparc)", InvalidArchitecture),
            ("builtiful(ubuntu,8cpu,riscv64)", InvalidArchitecture),
            ("builtiful(ubuntu,8cpu,arm)", InvalidArchitecture),
        ];
        for (label, reason) in cases {
            let err = parse(label).expect_err(label);
            assert_eq!(err.failure_reason(), reason, "{label}: {err}");
        }
        let too_long = format!("builtiful(ubuntu,{})", "x".repeat(300));
        assert_eq!(parse(&too_long).unwrap_err().failure_reason(), InvalidLabel);
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            parse("builtiful(ubuntu,3cpu)").unwrap_err().to_string(),
            "invalid vCPU count `3cpu`; use 2cpu, 4cpu, 8cpu, 16cpu, 32cpu or 64cpu"
        );
        assert_eq!(
            parse("builtiful(ubuntu").unwrap_err().to_string(),
            "malformed label: it must end with ); expected builtiful(<os>[,<n>cpu][,<arch>]), e.g. builtiful(ubuntu,8cpu)"
        );
    }

    #[test]
    fn finds_our_label_among_others() {
        let labels = ["self-hosted", "Builtiful(ubuntu,4cpu)"];
        let (label, spec) = find(labels).unwrap();
        assert_eq!(label, "Builtiful(ubuntu,4cpu)");
        assert_eq!(spec.unwrap().vcpus, 4);
        assert!(find(["ubuntu-latest", "self-hosted", "builtiful"]).is_none());
        assert!(find(std::iter::empty()).is_none());
        let (_, twice) = find(["builtiful(ubuntu)", "builtiful(ubuntu,8cpu)"]).unwrap();
        assert_eq!(
            twice.unwrap_err().failure_reason(),
            FailureReason::InvalidLabel
        );
        // A malformed label that is still addressed to us is found, so the job can fail visibly.
        let (_, bad) = find(["BUILTIFUL (windows)"]).unwrap();
        assert_eq!(
            bad.unwrap_err().failure_reason(),
            FailureReason::UnsupportedOs
        );
    }

    #[test]
    fn canonical_form() {
        assert_eq!(
            parse("builtiful(ubuntu)").unwrap().canonical_label(),
            "builtiful(ubuntu-24.04,2cpu,amd64)"
        );
        assert_eq!(
            parse("BUILTIFUL(ubuntu-22.04, aarch64, 64cpu)")
                .unwrap()
                .to_string(),
            "builtiful(ubuntu-22.04,64cpu,arm64)"
        );
    }

    fn any_spec() -> impl Strategy<Value = JobSpec> {
        (
            prop::sample::select(vec![Ubuntu2204, Ubuntu2404]),
            prop::sample::select(VCPU_CHOICES.to_vec()),
            prop::sample::select(vec![Amd64, Arm64]),
        )
            .prop_map(|(os, vcpus, architecture)| spec(os, vcpus, architecture))
    }

    proptest! {
        #[test]
        fn parsing_never_panics(label in any::<String>()) {
            let _ = parse(&label);
            let _ = is_builtiful_label(&label);
        }

        #[test]
        fn parsing_never_panics_on_near_misses(label in "(?i)builtiful\\([a-z0-9., ()-]{0,40}\\)?") {
            let _ = parse(&label);
        }

        #[test]
        fn canonical_forms_round_trip(spec in any_spec()) {
            let canonical = spec.canonical_label();
            prop_assert!(is_builtiful_label(&canonical));
            prop_assert_eq!(parse(&canonical), Ok(spec));
        }

        #[test]
        fn accepted_labels_canonicalise_stably(
            label in "(?i)builtiful\\( ?(ubuntu|ubuntu-22\\.04|ubuntu-24\\.04)( ?, ?(2|4|8|16|32|64|3) ?cpu)?( ?, ?(amd64|x64|arm64|aarch64))? ?\\)"
        ) {
            if let Ok(spec) = parse(&label) {
                prop_assert_eq!(parse(&spec.canonical_label()), Ok(spec));
            }
        }
    }
}
