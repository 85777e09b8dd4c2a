//! Exit codes, and the one line of stderr an error becomes.

use builtiful_core::client::Error as ApiError;

/// Errors that end the CLI with a code other than 1.
#[derive(Debug, thiserror::Error)]
pub enum Exit {
    /// Exit 4: the person must log in (again).
    #[error("{0}")]
    AuthRequired(String),
    /// Exit 2: the person cancelled (Ctrl-C, declined, closed the input).
    #[error("{0}")]
    Cancelled(String),
}

/// The exit codes, as `gh` uses them.
pub mod code {
    /// Success.
    pub const OK: u8 = 0;
    /// Any error.
    pub const ERROR: u8 = 1;
    /// Cancelled by the person.
    pub const CANCELLED: u8 = 2;
    /// Authentication needed.
    pub const AUTH: u8 = 4;
}

/// What the CLI says and returns for an error: one line, and its exit code. `None` for a
/// closed standard output (`builtiful jobs | head -1`), which is not an error.
pub fn report(error: &anyhow::Error) -> Option<(String, u8)> {
    for cause in error.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return None;
        }
    }
    if let Some(exit) = error.downcast_ref::<Exit>() {
        let code = match exit {
            Exit::AuthRequired(_) => code::AUTH,
            Exit::Cancelled(_) => code::CANCELLED,
        };
        return Some((exit.to_string(), code));
    }
    if let Some(api) = error.chain().find_map(|c| c.downcast_ref::<ApiError>()) {
        return Some(match api {
            e if e.is_unauthorized() => (
                "Your session is no longer valid (it expired or was logged out); run `builtiful login`".to_owned(),
                code::AUTH,
            ),
            // The server's own sentence, as it wrote it.
            ApiError::Api { message, .. } => (message.clone(), code::ERROR),
            ApiError::Transport { url, source } => {
                let mut root: &dyn std::error::Error = source;
                while let Some(next) = root.source() {
                    root = next;
                }
                let server = url.origin().ascii_serialization();
                (
                    format!("cannot reach the Builtiful server at {server}: {root}"),
                    code::ERROR,
                )
            }
            other => (one_line(&format!("{other}")), code::ERROR),
        });
    }
    Some((one_line(&format!("{error:#}")), code::ERROR))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_lines() {
        let auth = anyhow::Error::from(Exit::AuthRequired("log in".into()));
        assert_eq!(report(&auth), Some(("log in".into(), 4)));
        let cancelled = anyhow::Error::from(Exit::Cancelled("cancelled".into()));
        assert_eq!(report(&cancelled), Some(("cancelled".into(), 2)));
        let other = anyhow::anyhow!("first\nsecond").context("outer");
        assert_eq!(report(&other), Some(("outer: first second".into(), 1)));
        let pipe = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(report(&pipe), None);
    }
}
