//! Where the CLI keeps its settings, and which server it talks to.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use url::Url;

/// The server when neither `--server`, `BUILTIFUL_SERVER` nor the config file names one: a
/// server started locally with `builtiful-server serve`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The config file's name inside the config directory.
pub const CONFIG_FILE: &str = "config.toml";

/// The settings read from `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server to talk to, e.g. `server = "https://api.builtiful.io"`.
    pub server: Option<String>,
}

impl Config {
    /// Reads `config.toml` from `dir`; a missing file is an empty config.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// The CLI's config directory: `BUILTIFUL_CONFIG_DIR`, else `$XDG_CONFIG_HOME/builtiful`,
/// else `~/.config/builtiful` (the platform's config directory on Windows).
pub fn config_dir(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = var("BUILTIFUL_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CONFIG_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Ok(Path::new(&dir).join("builtiful"));
    }
    let base = directories::BaseDirs::new()
        .context("cannot find your home directory; set BUILTIFUL_CONFIG_DIR")?;
    if cfg!(windows) {
        Ok(base.config_dir().join("builtiful"))
    } else {
        Ok(base.home_dir().join(".config").join("builtiful"))
    }
}

/// The server URL: the flag or `BUILTIFUL_SERVER` first, then the config file, then
/// [`DEFAULT_SERVER`]. Checked here so a typo is one clear line, not a failed request.
pub fn server_url(flag: Option<&str>, config: &Config) -> anyhow::Result<Url> {
    let raw = flag
        .or(config.server.as_deref())
        .unwrap_or(DEFAULT_SERVER)
        .trim();
    let url = Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .with_context(|| {
            format!("invalid server URL `{raw}`: use an http or https URL such as {DEFAULT_SERVER}")
        })?;
    Ok(url)
}

/// A server URL as people write it: without the trailing slash of an empty path.
pub fn display_server(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_precedence_and_checks() {
        let config = Config {
            server: Some("https://from-config.example".into()),
        };
        assert_eq!(
            server_url(Some("http://127.0.0.1:9"), &config)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/"
        );
        assert_eq!(
            display_server(&server_url(None, &config).unwrap()),
            "https://from-config.example"
        );
        assert_eq!(
            server_url(None, &Config::default()).unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        let err = server_url(Some("localhost:8080"), &config).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid server URL `localhost:8080`"),
            "{err}"
        );
    }

    #[test]
    fn config_file_is_optional_and_strict() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), Config::default());
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "server = \"https://x.example\"\n",
        )
        .unwrap();
        assert_eq!(
            Config::load(dir.path()).unwrap().server.as_deref(),
            Some("https://x.example")
        );
        std::fs::write(dir.path().join(CONFIG_FILE), "sever = \"typo\"\n").unwrap();
        let err = format!("{:#}", Config::load(dir.path()).unwrap_err());
        assert!(err.contains("invalid config file"), "{err}");
        assert!(err.contains("sever"), "{err}");
    }

    #[test]
    fn config_dir_follows_xdg() {
        let vars = |pairs: Vec<(&'static str, String)>| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        assert_eq!(
            config_dir(vars(vec![("BUILTIFUL_CONFIG_DIR", "/tmp/b".into())])).unwrap(),
            PathBuf::from("/tmp/b")
        );
        assert_eq!(
            config_dir(vars(vec![("XDG_CONFIG_HOME", "/tmp/x".into())])).unwrap(),
            PathBuf::from("/tmp/x/builtiful")
        );
    }
}
