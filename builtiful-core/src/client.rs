//! `Client`: a typed async client for every endpoint of the Builtiful REST API.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;
use uuid::Uuid;

use crate::{
    ClaimRequest, ClaimResponse, EmailChange, HealthResponse, HeartbeatResponse, JobList, Message,
    NewJob, PageRequest, RunnerEvent, TenantList, TokenRequest, TokenResponse, User, UserResponse,
};

/// The `User-Agent` the client sends: `builtiful/<version>`.
pub const USER_AGENT: &str = concat!("builtiful/", env!("CARGO_PKG_VERSION"));

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-2xx status; `message` is its `{"message"}` when it sent one.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The server's message, or the status's reason when the body held none.
        message: String,
    },
    /// The request never got an answer: connection refused, timeout, TLS failure…
    #[error("could not reach the Builtiful server at {url}: {source}")]
    Transport {
        /// The URL that was requested.
        url: Url,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 2xx with a body that is not what the API documents.
    #[error("unexpected response from {url}: {source}")]
    Decode {
        /// The URL that was requested.
        url: Url,
        /// What did not parse.
        #[source]
        source: reqwest::Error,
    },
    /// The base URL cannot be used.
    #[error("invalid server URL `{0}`: it must be an absolute http or https URL")]
    InvalidBaseUrl(String),
    /// The HTTP client could not be built (no TLS roots, for example).
    #[error("could not set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
}

impl Error {
    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server refused the credentials (401): the caller must log in again.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(StatusCode::UNAUTHORIZED)
    }

    /// Whether retrying later may succeed: the server was unreachable, timed out, or answered
    /// 429 or 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// Builds a [`Client`] with non-default settings.
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// Authenticates with this token (`bfs_…` for people, `bfp_…` for provisioners).
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The longest a request may take, long-polls excepted (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest connecting may take (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, Error> {
        let mut base = Url::parse(&self.base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| Error::InvalidBaseUrl(self.base_url.clone()))?;
        // Paths are joined onto the base, so it must end with a slash to keep its own path.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(Error::Setup)?;
        Ok(Client {
            http,
            base,
            token: self.token,
            timeout: self.timeout,
        })
    }
}

/// A typed async client for the Builtiful REST API.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `base_url`, without credentials.
    pub fn new(base_url: &str) -> Result<Self, Error> {
        Self::builder(base_url).build()
    }

    /// A builder for a client of the server at `base_url`.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            token: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The same client, authenticated with `token`.
    #[must_use]
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// `GET /health`: the process is up.
    pub async fn health(&self) -> Result<HealthResponse, Error> {
        self.send(self.request(Method::GET, "health")).await
    }

    /// `GET /ready`: the process is up and its database answers.
    pub async fn ready(&self) -> Result<HealthResponse, Error> {
        self.send(self.request(Method::GET, "ready")).await
    }

    /// The URL that starts a GitHub login (`GET /auth/github/login`), for a browser to open.
    ///
    /// `redirect_uri` must be on the server's allowlist; a CLI passes its loopback URL and the
    /// S256 `code_challenge` of a PKCE verifier it keeps.
    pub fn login_url(&self, redirect_uri: &str, code_challenge: Option<&str>) -> Url {
        let mut url = self.url("auth/github/login");
        url.query_pairs_mut()
            .append_pair("redirect_uri", redirect_uri);
        if let Some(challenge) = code_challenge {
            url.query_pairs_mut()
                .append_pair("code_challenge", challenge);
        }
        url
    }

    /// `POST /auth/token`: trades a login's one-time code and PKCE verifier for a session.
    pub async fn exchange_code(
        &self,
        code: &str,
        code_verifier: &str,
    ) -> Result<TokenResponse, Error> {
        let body = TokenRequest {
            code: code.to_owned(),
            code_verifier: code_verifier.to_owned(),
        };
        self.send(self.request(Method::POST, "auth/token").json(&body))
            .await
    }

    /// `POST /auth/logout`: ends the session on the server.
    pub async fn logout(&self) -> Result<Message, Error> {
        self.send(self.request(Method::POST, "auth/logout")).await
    }

    /// `GET /me`: the signed-in user.
    pub async fn me(&self) -> Result<User, Error> {
        let response: UserResponse = self.send(self.request(Method::GET, "me")).await?;
        Ok(response.user)
    }

    /// `GET /tenants`: the tenants the signed-in user can reach.
    pub async fn tenants(&self) -> Result<TenantList, Error> {
        self.send(self.request(Method::GET, "tenants")).await
    }

    /// `GET /tenants/{tenant_id}/jobs`: one page of a tenant's jobs, newest first.
    pub async fn jobs(&self, tenant_id: Uuid, page: &PageRequest) -> Result<JobList, Error> {
        let path = format!("tenants/{tenant_id}/jobs");
        self.send(self.request(Method::GET, &path).query(page))
            .await
    }

    /// `POST /tenants/{tenant_id}/email`: mails a confirmation link to a new address.
    pub async fn request_email_change(
        &self,
        tenant_id: Uuid,
        email: &str,
    ) -> Result<EmailChange, Error> {
        let path = format!("tenants/{tenant_id}/email");
        let body = EmailChange {
            email: email.to_owned(),
        };
        self.send(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// `POST /tenants/{tenant_id}/email/confirm`: confirms an address with the mailed token.
    pub async fn confirm_email_change(&self, tenant_id: Uuid, jwt: &str) -> Result<Message, Error> {
        let path = format!("tenants/{tenant_id}/email/confirm");
        self.send(self.request(Method::POST, &path).query(&[("jwt", jwt)]))
            .await
    }

    /// `GET /provisioner/jobs`: claims at most one job that fits the host.
    ///
    /// With `wait` set, the server holds the request until a job fits or the wait ends; the
    /// request's timeout is stretched accordingly.
    pub async fn claim_job(&self, request: &ClaimRequest) -> Result<Option<NewJob>, Error> {
        let wait = u64::try_from(request.wait.unwrap_or(0)).unwrap_or(0);
        let builder = self
            .request(Method::GET, "provisioner/jobs")
            .query(request)
            .timeout(self.timeout + Duration::from_secs(wait));
        let response: ClaimResponse = self.send(builder).await?;
        Ok(response.new_job)
    }

    /// `POST /provisioner/jobs/{job_id}/heartbeat`: renews the lease; says whether to cancel.
    pub async fn heartbeat(&self, job_id: Uuid) -> Result<HeartbeatResponse, Error> {
        let path = format!("provisioner/jobs/{job_id}/heartbeat");
        self.send(self.request(Method::POST, &path)).await
    }

    /// `POST /provisioner/jobs/{job_id}/events`: reports a fact about the job's runner.
    pub async fn report_event(&self, job_id: Uuid, event: &RunnerEvent) -> Result<(), Error> {
        let path = format!("provisioner/jobs/{job_id}/events");
        let builder = self.request(Method::POST, &path).json(event);
        self.send::<serde::de::IgnoredAny>(builder).await?;
        Ok(())
    }

    fn url(&self, path: &str) -> Url {
        // Every path is a fixed relative path of this module, so joining cannot fail.
        self.base
            .join(path)
            .unwrap_or_else(|_| unreachable!("relative API path `{path}`"))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T, Error> {
        let (client, request) = builder.build_split();
        let request = request.map_err(Error::Setup)?;
        let url = request.url().clone();
        let response = client
            .execute(request)
            .await
            .map_err(|source| Error::Transport {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|source| Error::Decode { url, source });
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<Message>(&body).map_or_else(
            |_| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_owned()
            },
            |m| m.message,
        );
        Err(Error::Api { status, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode as AxumStatus};
    use axum::routing::get;

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}/api")
    }

    #[tokio::test]
    async fn sends_token_and_user_agent_and_maps_errors() {
        let router = Router::new()
            .route(
                "/api/me",
                get(|headers: HeaderMap| async move {
                    let auth = headers["authorization"].to_str().unwrap().to_owned();
                    let agent = headers["user-agent"].to_str().unwrap().to_owned();
                    (
                        AxumStatus::UNAUTHORIZED,
                        axum::Json(serde_json::json!({"message": format!("{auth} {agent}")})),
                    )
                }),
            )
            .route(
                "/api/tenants",
                get(|| async { (AxumStatus::BAD_GATEWAY, "<html>oops</html>") }),
            );
        let base = serve(router).await;
        let client = Client::builder(&base).token("bfs_x").build().unwrap();

        let err = client.me().await.unwrap_err();
        assert!(err.is_unauthorized());
        assert_eq!(
            err.to_string(),
            format!("Bearer bfs_x {USER_AGENT} (HTTP 401 Unauthorized)")
        );

        let err = client.tenants().await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY));
        assert!(err.is_transient());
        assert_eq!(err.to_string(), "Bad Gateway (HTTP 502 Bad Gateway)");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = Client::new(&base).unwrap().health().await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err}");
        assert!(err.is_transient());
    }

    #[test]
    fn base_urls_are_checked_and_keep_their_path() {
        assert!(matches!(
            Client::new("localhost:8080"),
            Err(Error::InvalidBaseUrl(_))
        ));
        assert!(matches!(
            Client::new("ftp://x"),
            Err(Error::InvalidBaseUrl(_))
        ));
        let client = Client::new("https://example.com/builtiful").unwrap();
        let url = client.login_url("http://127.0.0.1:9/cb", Some("abc"));
        assert_eq!(
            url.as_str(),
            "https://example.com/builtiful/auth/github/login?redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code_challenge=abc"
        );
        assert!(!format!("{:?}", client.with_token("bfs_secret")).contains("bfs_secret"));
    }
}
