//! The server's signing secret (email confirmation links, encrypted tokens): read from
//! `--secret-file`, or generated once and kept beside the database.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};

/// At least this many bytes of secret are required.
const MIN_SECRET_LEN: usize = 32;

/// Secret key material. `Debug` redacts it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A secret from bytes (tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads the secret at `path` (surrounding whitespace ignored).
pub fn read(path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    let secret = text.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_LEN {
        bail!(
            "the secret file {} holds {} bytes; it needs at least {MIN_SECRET_LEN}",
            path.display(),
            secret.len()
        );
    }
    Ok(Secret(secret))
}

/// Reads the secret at `path`, first creating it (mode 0600) with 256 random bits if missing.
pub fn read_or_create(path: &Path) -> anyhow::Result<Secret> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let bytes: [u8; 32] = rand::random();
        // Written to a temporary name and renamed, so a crash never leaves a short secret;
        // `create_new` on the final name would race with a second server starting.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        writeln!(file, "{}", hex::encode(bytes))?;
        file.sync_all()?;
        if let Err(error) = std::fs::hard_link(&tmp, path) {
            // Another process made it first: keep theirs.
            if error.kind() != std::io::ErrorKind::AlreadyExists {
                let _ = std::fs::remove_file(&tmp);
                return Err(error).with_context(|| format!("cannot create {}", path.display()));
            }
        }
        let _ = std::fs::remove_file(&tmp);
        tracing::info!(path = %path.display(), "generated a new signing secret");
    }
    read(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/secret");
        let first = read_or_create(&path).unwrap();
        let second = read_or_create(&path).unwrap();
        assert_eq!(first.bytes(), second.bytes());
        assert_eq!(first.bytes().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(format!("{first:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "too short\n").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("needs at least 32"), "{error}");
    }
}
