//! JIT runner configs: `encoded_jit_config` is base64 of a JSON map of file name → base64
//! file content (`.runner`, `.credentials`, `.credentials_rsaparams`), like GitHub's. The
//! sandbox runner (`builtiful-server sandbox runner`) decodes it with [`decode`].
//!
//! - `.runner` says where the runner belongs: `agentId`, `agentName`, `poolId`, `poolName`,
//!   `serverUrl` (the simulator's `base_url`, where the runner protocol lives under
//!   `/_sandbox/runners/{agentId}`), `gitHubUrl` (the repository's or organisation's page),
//!   `workFolder`, `labels`, `ephemeral`.
//! - `.credentials` holds the runner's secret: `{"scheme": "RunnerSecret", "data":
//!   {"clientId", "secret"}}`.
//! - `.credentials_rsaparams`: GitHub puts the RSA key the runner signs its token requests
//!   with here. The simulated runner protocol authenticates with the secret alone, so this
//!   file only says so; it exists so that tools unpacking configs see GitHub's three files.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use url::Url;

use super::world::{DEFAULT_RUNNER_GROUP_NAME, Runner, Scope, World};

/// The `.runner` file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerFile {
    /// The runner's id.
    pub agent_id: u64,
    /// The runner's name.
    pub agent_name: String,
    /// The runner group's id.
    pub pool_id: u64,
    /// The runner group's name.
    pub pool_name: String,
    /// The simulated GitHub's base URL: the runner protocol is under it.
    pub server_url: String,
    /// The repository's or organisation's page.
    pub git_hub_url: String,
    /// The work folder.
    pub work_folder: String,
    /// The runner's labels.
    pub labels: Vec<String>,
    /// JIT runners run one job.
    pub ephemeral: bool,
}

#[derive(Serialize, Deserialize)]
struct CredentialsFile {
    scheme: String,
    data: CredentialsData,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsData {
    client_id: String,
    secret: String,
}

/// A decoded JIT config: where to connect and how to authenticate. `Debug` redacts the
/// secret.
#[derive(Clone)]
pub struct JitConfig {
    /// The `.runner` file.
    pub runner: RunnerFile,
    /// The runner's secret from `.credentials`.
    pub secret: String,
}

impl fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitConfig")
            .field("runner", &self.runner)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a JIT config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JitConfigError {
    /// Not base64.
    #[error("it is not base64")]
    Base64,
    /// Not a JSON map of file names to base64 contents.
    #[error("it is not a JSON map of file names to base64 contents")]
    Map,
    /// A file is missing or malformed.
    #[error("its {0} file is missing or malformed")]
    File(&'static str),
    /// The server URL is not a URL.
    #[error("its serverUrl is not a URL")]
    ServerUrl,
}

/// `encoded_jit_config` for `runner`, authenticated by `secret`.
pub fn encode(world: &World, runner: &Runner, base_url: &Url, secret: &str) -> String {
    let git_hub_url = match runner.scope {
        Scope::Repo(repo) => {
            let repo = &world.repos[repo];
            format!(
                "{}/{}/{}",
                world.links.web, world.orgs[repo.org].login, repo.name
            )
        }
        Scope::Org(org) => format!("{}/{}", world.links.web, world.orgs[org].login),
    };
    let runner_file = RunnerFile {
        agent_id: runner.id,
        agent_name: runner.name.clone(),
        pool_id: runner.group_id,
        pool_name: DEFAULT_RUNNER_GROUP_NAME.to_owned(),
        server_url: base_url.as_str().trim_end_matches('/').to_owned(),
        git_hub_url,
        work_folder: runner.work_folder.clone(),
        labels: runner.labels.iter().map(|l| l.name.clone()).collect(),
        ephemeral: true,
    };
    let credentials = CredentialsFile {
        scheme: "RunnerSecret".to_owned(),
        data: CredentialsData {
            client_id: runner.id.to_string(),
            secret: secret.to_owned(),
        },
    };
    let rsaparams = serde_json::json!({
        "note": "the simulated GitHub authenticates runners with the secret in .credentials; it issues no RSA key",
    });
    let files: BTreeMap<&str, String> = [
        (".runner", serde_json::to_vec(&runner_file)),
        (".credentials", serde_json::to_vec(&credentials)),
        (".credentials_rsaparams", serde_json::to_vec(&rsaparams)),
    ]
    .into_iter()
    .map(|(name, json)| {
        (
            name,
            STANDARD.encode(json.expect("plain structs serialize")),
        )
    })
    .collect();
    STANDARD.encode(serde_json::to_vec(&files).expect("a string map serializes"))
}

/// The files of an encoded config, decoded from base64 (name → content).
pub fn files(encoded: &str) -> Result<BTreeMap<String, Vec<u8>>, JitConfigError> {
    let json = STANDARD
        .decode(encoded.trim())
        .map_err(|_| JitConfigError::Base64)?;
    let map: BTreeMap<String, String> =
        serde_json::from_slice(&json).map_err(|_| JitConfigError::Map)?;
    map.into_iter()
        .map(|(name, content)| {
            STANDARD
                .decode(content)
                .map(|bytes| (name, bytes))
                .map_err(|_| JitConfigError::Map)
        })
        .collect()
}

/// Decodes an `encoded_jit_config`.
pub fn decode(encoded: &str) -> Result<JitConfig, JitConfigError> {
    let files = files(encoded)?;
    let runner: RunnerFile = files
        .get(".runner")
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .ok_or(JitConfigError::File(".runner"))?;
    let credentials: CredentialsFile = files
        .get(".credentials")
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .ok_or(JitConfigError::File(".credentials"))?;
    if credentials.data.client_id != runner.agent_id.to_string() {
        return Err(JitConfigError::File(".credentials"));
    }
    Url::parse(&runner.server_url).map_err(|_| JitConfigError::ServerUrl)?;
    Ok(JitConfig {
        runner,
        secret: credentials.data.secret,
    })
}
