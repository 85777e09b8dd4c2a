//! Where session tokens are kept: the OS keyring, or, where there is none (headless Linux, CI,
//! containers), a file only the user can read. `BUILTIFUL_TOKEN` overrides both; that is
//! decided by the caller.
//!
//! Tokens are keyed by server URL, so one machine can be logged in to several servers.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The keyring's service name.
pub const KEYRING_SERVICE: &str = "builtiful";

/// How long the keyring may take to answer before the file is used instead.
pub const KEYRING_TIMEOUT: Duration = Duration::from_secs(3);

/// The token file's name inside the config directory.
pub const TOKEN_FILE: &str = "tokens.json";

/// Where a token came from, or went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The `BUILTIFUL_TOKEN` environment variable.
    Env,
    /// The OS keyring.
    Keyring,
    /// The token file.
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => f.write_str("the BUILTIFUL_TOKEN environment variable"),
            Self::Keyring => f.write_str("the OS keyring"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why the keyring could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// There is no keyring here (no Secret Service on a headless machine, say): the file is
    /// the place for tokens, and reading finds nothing without a word.
    #[error("{0}")]
    Unavailable(String),
    /// There is a keyring, but it failed or did not answer in time.
    #[error("{0}")]
    Failed(String),
}

/// A secret store that may be missing, slow or broken: the OS keyring, or a test's stand-in.
pub trait Keyring: Send + Sync {
    /// The secret of `account`, `None` when there is none.
    fn get(&self, account: &str) -> Result<Option<String>, KeyringError>;
    /// Stores the secret of `account`.
    fn set(&self, account: &str, secret: &str) -> Result<(), KeyringError>;
    /// Deletes the secret of `account`; `false` when there was none.
    fn delete(&self, account: &str) -> Result<bool, KeyringError>;
}

/// The OS keyring: Keychain on macOS, Credential Manager on Windows, the Secret Service on
/// Linux and the BSDs.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsKeyring;

impl OsKeyring {
    fn entry(account: &str) -> Result<keyring::Entry, KeyringError> {
        keyring::Entry::new(KEYRING_SERVICE, account).map_err(Self::error)
    }

    fn error(error: keyring::Error) -> KeyringError {
        match error {
            keyring::Error::NoDefaultStore
            | keyring::Error::PlatformFailure(_)
            | keyring::Error::NoStorageAccess(_) => KeyringError::Unavailable(error.to_string()),
            other => KeyringError::Failed(other.to_string()),
        }
    }
}

impl Keyring for OsKeyring {
    fn get(&self, account: &str) -> Result<Option<String>, KeyringError> {
        match Self::entry(account)?.get_password() {
            Ok(secret) => Ok(Some(secret)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(error) => Err(Self::error(error)),
        }
    }

    fn set(&self, account: &str, secret: &str) -> Result<(), KeyringError> {
        Self::entry(account)?
            .set_password(secret)
            .map_err(Self::error)
    }

    fn delete(&self, account: &str) -> Result<bool, KeyringError> {
        match Self::entry(account)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(error) => Err(Self::error(error)),
        }
    }
}

/// Runs a keyring call on its own thread and gives up after `timeout`: a keyring that hangs
/// (a locked Secret Service nobody answers) must not hang the CLI. The thread is left behind;
/// the process ends soon anyway.
fn with_timeout<T: Send + 'static>(
    keyring: &Arc<dyn Keyring>,
    timeout: Duration,
    call: impl FnOnce(&dyn Keyring) -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    let (tx, rx) = mpsc::channel();
    let keyring = Arc::clone(keyring);
    std::thread::Builder::new()
        .name("keyring".into())
        .spawn(move || {
            let _ = tx.send(call(keyring.as_ref()));
        })
        .map_err(|e| KeyringError::Failed(e.to_string()))?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(KeyringError::Failed(format!(
            "it did not answer within {} s",
            timeout.as_secs_f32()
        )))
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    /// Session tokens by server URL.
    tokens: BTreeMap<String, String>,
}

/// The token store: keyring first, file as the fallback.
#[derive(Clone)]
pub struct TokenStore {
    keyring: Option<Arc<dyn Keyring>>,
    file: PathBuf,
    timeout: Duration,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("keyring", &self.keyring.is_some())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl TokenStore {
    /// A store over `keyring` (none: file only) with its file in `config_dir`.
    pub fn new(keyring: Option<Arc<dyn Keyring>>, config_dir: &Path) -> Self {
        Self {
            keyring,
            file: config_dir.join(TOKEN_FILE),
            timeout: KEYRING_TIMEOUT,
        }
    }

    /// The same store, waiting at most `timeout` for the keyring.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The token file's path.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The token for `server`, and where it was found. The file is read first: it holds a
    /// token only when the keyring failed at login, and reading it costs no keyring round trip.
    pub fn get(
        &self,
        server: &str,
        warnings: &mut dyn Write,
    ) -> anyhow::Result<Option<(String, TokenSource)>> {
        if let Some(token) = self.read_file()?.tokens.remove(server) {
            return Ok(Some((token, TokenSource::File(self.file.clone()))));
        }
        let Some(keyring) = &self.keyring else {
            return Ok(None);
        };
        let account = server.to_owned();
        match with_timeout(keyring, self.timeout, move |k| k.get(&account)) {
            Ok(token) => Ok(token.map(|t| (t, TokenSource::Keyring))),
            // No keyring (headless Linux, CI) is the normal case the file covers.
            Err(KeyringError::Unavailable(_)) => Ok(None),
            Err(KeyringError::Failed(reason)) => {
                writeln!(warnings, "warning: cannot read the OS keyring: {reason}")?;
                Ok(None)
            }
        }
    }

    /// Stores the token for `server`: in the keyring when there is one that answers, else in
    /// the file (with a one-line warning). Returns where it went.
    pub fn set(
        &self,
        server: &str,
        token: &str,
        warnings: &mut dyn Write,
    ) -> anyhow::Result<TokenSource> {
        let reason = match &self.keyring {
            None => "it is turned off by BUILTIFUL_NO_KEYRING".to_owned(),
            Some(keyring) => {
                let (account, secret) = (server.to_owned(), token.to_owned());
                match with_timeout(keyring, self.timeout, move |k| k.set(&account, &secret)) {
                    Ok(()) => {
                        // An older token of this server in the file would shadow the new one.
                        self.remove_from_file(server)?;
                        return Ok(TokenSource::Keyring);
                    }
                    Err(reason) => reason.to_string(),
                }
            }
        };
        let mut file = self.read_file()?;
        file.tokens.insert(server.to_owned(), token.to_owned());
        self.write_file(&file)?;
        writeln!(
            warnings,
            "warning: no OS keyring ({reason}); the token is stored in {} (readable only by you)",
            self.file.display()
        )?;
        Ok(TokenSource::File(self.file.clone()))
    }

    /// Forgets the token of `server` everywhere; `false` when none was stored.
    pub fn delete(&self, server: &str, warnings: &mut dyn Write) -> anyhow::Result<bool> {
        let mut found = self.remove_from_file(server)?;
        if let Some(keyring) = &self.keyring {
            let account = server.to_owned();
            match with_timeout(keyring, self.timeout, move |k| k.delete(&account)) {
                Ok(deleted) => found |= deleted,
                Err(KeyringError::Unavailable(_)) => {}
                Err(KeyringError::Failed(reason)) => {
                    writeln!(warnings, "warning: cannot reach the OS keyring: {reason}")?;
                }
            }
        }
        Ok(found)
    }

    fn remove_from_file(&self, server: &str) -> anyhow::Result<bool> {
        let mut file = self.read_file()?;
        if file.tokens.remove(server).is_none() {
            return Ok(false);
        }
        self.write_file(&file)?;
        Ok(true)
    }

    fn read_file(&self) -> anyhow::Result<TokenFile> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid token file", self.file.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(error) => {
                Err(error).with_context(|| format!("cannot read {}", self.file.display()))
            }
        }
    }

    /// Writes the file atomically: a new 0600 file beside it, synced, then renamed over it, so
    /// a crash leaves the old file or the new one, never half of one or a readable one.
    fn write_file(&self, contents: &TokenFile) -> anyhow::Result<()> {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let json = serde_json::to_vec_pretty(contents)?;
        let suffix: u64 = rand::random();
        let temp = dir.join(format!(".{TOKEN_FILE}.{suffix:016x}.tmp"));
        let result = (|| {
            let mut file = private_file(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.file)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.with_context(|| format!("cannot write {}", self.file.display()))
    }
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const SERVER: &str = "http://127.0.0.1:8080/";

    /// A keyring in memory, or one that fails or hangs like a broken Secret Service.
    #[derive(Default)]
    struct FakeKeyring {
        secrets: Mutex<BTreeMap<String, String>>,
        broken: bool,
        hang: bool,
    }

    impl Keyring for FakeKeyring {
        fn get(&self, account: &str) -> Result<Option<String>, KeyringError> {
            self.misbehave()?;
            Ok(self.secrets.lock().unwrap().get(account).cloned())
        }
        fn set(&self, account: &str, secret: &str) -> Result<(), KeyringError> {
            self.misbehave()?;
            self.secrets
                .lock()
                .unwrap()
                .insert(account.into(), secret.into());
            Ok(())
        }
        fn delete(&self, account: &str) -> Result<bool, KeyringError> {
            self.misbehave()?;
            Ok(self.secrets.lock().unwrap().remove(account).is_some())
        }
    }

    impl FakeKeyring {
        fn misbehave(&self) -> Result<(), KeyringError> {
            if self.hang {
                std::thread::sleep(Duration::from_mins(1));
            }
            if self.broken {
                return Err(KeyringError::Unavailable("no secret service".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn keyring_when_it_works_and_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(Some(Arc::new(FakeKeyring::default())), dir.path());
        let mut warnings = Vec::new();
        assert_eq!(
            store.set(SERVER, "bfs_a", &mut warnings).unwrap(),
            TokenSource::Keyring
        );
        assert!(warnings.is_empty());
        assert!(!store.file().exists());
        assert_eq!(
            store.get(SERVER, &mut warnings).unwrap(),
            Some(("bfs_a".into(), TokenSource::Keyring))
        );
        assert_eq!(store.get("http://other/", &mut warnings).unwrap(), None);
        assert!(store.delete(SERVER, &mut warnings).unwrap());
        assert_eq!(store.get(SERVER, &mut warnings).unwrap(), None);
        assert!(!store.delete(SERVER, &mut warnings).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn broken_keyring_falls_back_to_a_private_file_with_one_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let keyring = FakeKeyring {
            broken: true,
            ..FakeKeyring::default()
        };
        let store = TokenStore::new(Some(Arc::new(keyring)), &config);
        let mut warnings = Vec::new();
        let source = store.set(SERVER, "bfs_b", &mut warnings).unwrap();
        assert_eq!(source, TokenSource::File(config.join(TOKEN_FILE)));
        let warnings = String::from_utf8(warnings).unwrap();
        assert_eq!(warnings.lines().count(), 1, "{warnings}");
        assert!(
            warnings.starts_with("warning: no OS keyring (no secret service)"),
            "{warnings}"
        );
        assert!(!warnings.contains("bfs_b"));
        let mode = std::fs::metadata(store.file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(&config).unwrap().count(), 1);

        // A second server joins the same file; each is found and forgotten on its own.
        let mut sink = Vec::new();
        store.set("http://other/", "bfs_c", &mut sink).unwrap();
        assert_eq!(
            store.get(SERVER, &mut sink).unwrap().unwrap().0,
            "bfs_b".to_owned()
        );
        assert!(store.delete(SERVER, &mut sink).unwrap());
        assert_eq!(store.get(SERVER, &mut sink).unwrap(), None);
        assert_eq!(
            store.get("http://other/", &mut sink).unwrap().unwrap().0,
            "bfs_c".to_owned()
        );
    }

    #[test]
    fn a_hanging_keyring_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = FakeKeyring {
            hang: true,
            ..FakeKeyring::default()
        };
        let store = TokenStore::new(Some(Arc::new(keyring)), dir.path())
            .with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let mut warnings = Vec::new();
        let source = store.set(SERVER, "bfs_d", &mut warnings).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(source, TokenSource::File(_)));
        assert!(
            String::from_utf8(warnings)
                .unwrap()
                .contains("did not answer within 0.2 s")
        );
        let mut warnings = Vec::new();
        assert_eq!(
            store.get(SERVER, &mut warnings).unwrap().unwrap().0,
            "bfs_d".to_owned()
        );
    }

    #[test]
    fn a_keyring_login_replaces_an_older_file_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = Vec::new();
        TokenStore::new(None, dir.path())
            .set(SERVER, "bfs_old", &mut sink)
            .unwrap();
        let store = TokenStore::new(Some(Arc::new(FakeKeyring::default())), dir.path());
        store.set(SERVER, "bfs_new", &mut sink).unwrap();
        assert_eq!(
            store.get(SERVER, &mut sink).unwrap(),
            Some(("bfs_new".into(), TokenSource::Keyring))
        );
    }
}
