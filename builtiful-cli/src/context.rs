//! What every command receives: the streams, the server, the token store and the environment.

use std::io::Write as _;

use builtiful_core::Client;
use url::Url;

use crate::config::display_server;
use crate::error::Exit;
use crate::io::Io;
use crate::token_store::{TokenSource, TokenStore};

/// A command's world. Tests build one around buffers, a test server and a temporary store.
#[derive(Debug)]
pub struct Context {
    /// The streams.
    pub io: Io,
    /// The server.
    pub server: Url,
    /// Where tokens are kept.
    pub tokens: TokenStore,
    /// `BUILTIFUL_TOKEN`, which overrides the store.
    pub env_token: Option<String>,
    /// `BROWSER`: the program that opens the login URL (else the system's default browser).
    pub browser: Option<String>,
}

/// A client authenticated with the token in use, and where that token came from.
#[derive(Debug)]
pub struct Session {
    /// The authenticated client.
    pub client: Client,
    /// Where the token came from.
    pub source: TokenSource,
}

impl Context {
    /// The server as people write it.
    pub fn server_name(&self) -> String {
        display_server(&self.server)
    }

    /// The key tokens are stored under: the normalised server URL.
    pub fn server_key(&self) -> &str {
        self.server.as_str()
    }

    /// A client without credentials.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.server.as_str())?)
    }

    /// The token in use: `BUILTIFUL_TOKEN`, else the stored one; `None` when logged out.
    pub fn token(&mut self) -> anyhow::Result<Option<(String, TokenSource)>> {
        if let Some(token) = self.env_token.clone() {
            return Ok(Some((token, TokenSource::Env)));
        }
        self.tokens.get(self.server.as_str(), &mut self.io.stderr)
    }

    /// A client with the token in use, or exit 4 with a hint when there is none.
    pub fn session(&mut self) -> anyhow::Result<Session> {
        let Some((token, source)) = self.token()? else {
            return Err(Exit::AuthRequired(format!(
                "You are not logged in to {}; run `builtiful login`",
                self.server_name()
            ))
            .into());
        };
        let client = Client::builder(self.server.as_str()).token(token).build()?;
        Ok(Session { client, source })
    }

    /// Writes a line to standard error.
    pub fn note(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.io.stderr, "{line}")
    }
}
