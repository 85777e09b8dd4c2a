//! The shared state of the server: one `App` behind an `Arc`, handed to every handler.

use std::ops::Deref;
use std::sync::Arc;

use builtiful_core::Timestamp;
use url::Url;

use crate::clock::Clock;
use crate::crypto::Sealer;
use crate::dispatch::Dispatcher;
use crate::dispatch::reconciler::Redeliveries;
use crate::github::GitHub;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::sandbox::github::SimulatedGitHub;
use crate::secret::Secret;
use crate::store::Store;

/// What the server knows about where it is reachable and whom it serves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The URL people and GitHub reach the server at (links in mail, OAuth callbacks).
    pub public_url: Url,
    /// Origins of web frontends: CORS is allowed for them and redirects may go to them.
    pub frontend_origins: Vec<Url>,
    /// Register JIT runners at the organisation rather than the repository (GitHub needs the
    /// App's "Self-hosted runners" permission for that; org runner groups refuse public
    /// repositories by default).
    pub organization_runners: bool,
}

impl Settings {
    /// Whether the session cookie gets `Secure` (everywhere but plain-http deployments).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() != "http"
    }

    /// A URL on the server's own origin.
    pub fn public(&self, path: &str) -> Url {
        let mut url = self.public_url.clone();
        url.set_path(path);
        url
    }

    /// Whether a `redirect_uri` points at one of the frontends (same scheme, host and port),
    /// so that redirects can never send a person, or their session, anywhere else.
    pub fn is_frontend_url(&self, uri: &str) -> bool {
        let Ok(url) = Url::parse(uri) else {
            return false;
        };
        self.frontend_origins
            .iter()
            .chain(std::iter::once(&self.public_url))
            .any(|origin| origin.origin() == url.origin())
    }
}

/// The webhook secret. `Debug` redacts it.
#[derive(Clone)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Everything a request handler can reach. Outside services are trait objects so tests and
/// the sandbox can swap them.
#[derive(Debug)]
pub struct App {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Public URL and frontends.
    pub settings: Settings,
    /// Outgoing mail.
    pub mailer: Arc<dyn Mailer>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Signs confirmation links.
    pub secret: Secret,
    /// Encrypts users' GitHub tokens at rest.
    pub sealer: Sealer,
    /// GitHub (or the sandbox's simulation of it).
    pub github: Arc<dyn GitHub>,
    /// The secret GitHub signs webhooks with.
    pub webhook_secret: WebhookSecret,
    /// The simulated GitHub, when this is a sandbox server.
    pub sandbox: Option<Arc<SimulatedGitHub>>,
    /// Long-poll wake-ups and host bookkeeping.
    pub dispatcher: Dispatcher,
    /// Failed webhook deliveries already asked for again.
    pub redeliveries: Redeliveries,
    /// How often the reconciler runs; `None` runs it never (tests drive it by hand).
    pub reconcile_every: Option<std::time::Duration>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
}

impl App {
    /// Now, by the server's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// The state of the router: a cheap handle on the one `App`.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_only_to_frontends_or_ourselves() {
        let settings = Settings {
            public_url: Url::parse("https://api.builtiful.io").unwrap(),
            frontend_origins: vec![Url::parse("https://app.builtiful.io").unwrap()],
            organization_runners: false,
        };
        assert!(settings.is_frontend_url("https://app.builtiful.io/tenants"));
        assert!(settings.is_frontend_url("https://api.builtiful.io/auth/cli/code"));
        for evil in [
            "https://evil.example/",
            "//evil.example/",
            "https://app.builtiful.io.evil.example/",
            "https://app.builtiful.io@evil.example/",
            "http://app.builtiful.io/",
            "https://app.builtiful.io:8443/",
            "javascript:alert(1)",
            "/relative",
        ] {
            assert!(!settings.is_frontend_url(evil), "{evil}");
        }
        assert!(settings.secure_cookies());
    }
}
