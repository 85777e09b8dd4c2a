//! [`HttpGitHub`]: the [`GitHub`] trait over GitHub's REST API and OAuth endpoints.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use builtiful_core::Timestamp;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, RedirectUrl,
    RefreshToken, RequestTokenError, TokenResponse, TokenUrl,
};
use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use url::Url;

use super::app_auth::{AppAuth, InstallationToken};
use super::rate_limit::RateLimit;
use super::wire;
use super::{
    Delivery, GitHub, GitHubError, GitHubUser, JitConfig, Result, Runner, RunnerScope, UserToken,
};
use crate::store::Installation;

/// How to reach and authenticate with GitHub. `Debug` redacts the secrets.
#[derive(Clone)]
pub struct GitHubConfig {
    /// The REST API (`https://api.github.com`, `https://ghe.example/api/v3`, or the sandbox's).
    pub api_url: Url,
    /// Where people sign in (`https://github.com`); `login/oauth/…` lives there.
    pub web_url: Url,
    /// The App's numeric id.
    pub app_id: u64,
    /// The App's OAuth client id.
    pub client_id: String,
    /// The App's OAuth client secret.
    pub client_secret: String,
    /// The App's private key (PEM).
    pub private_key_pem: Vec<u8>,
}

impl fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url.as_str())
            .field("web_url", &self.web_url.as_str())
            .field("app_id", &self.app_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl GitHubConfig {
    /// The sign-in site that goes with an API URL: `api.github.com` → `github.com`,
    /// `https://ghe.example/api/v3` → `https://ghe.example`, `…/api` → `…`.
    pub fn web_url_for(api_url: &Url) -> Url {
        let mut web = api_url.clone();
        let path = api_url.path().trim_end_matches('/');
        if let Some(base) = path
            .strip_suffix("/api/v3")
            .or_else(|| path.strip_suffix("/api"))
        {
            web.set_path(base);
        } else if let Some(host) = api_url.host_str().and_then(|h| h.strip_prefix("api.")) {
            let _ = web.set_host(Some(host));
        }
        web
    }
}

/// The GitHub client: REST calls with GitHub's headers, App and installation auth, the OAuth
/// web flow through the `oauth2` crate, and rate limits respected.
pub struct HttpGitHub {
    http: reqwest::Client,
    api: Url,
    web: Url,
    client_id: String,
    client_secret: String,
    app: AppAuth,
    limit: RateLimit,
}

impl fmt::Debug for HttpGitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpGitHub")
            .field("api", &self.api.as_str())
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// The credentials of a REST call.
enum Auth<'a> {
    /// The App's JWT.
    App,
    /// An installation token.
    Installation(i64),
    /// A user's token.
    User(&'a str),
}

fn with_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

impl HttpGitHub {
    /// A client for the GitHub `config` describes.
    pub fn new(config: &GitHubConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("Builtiful/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            // OAuth responses must not be followed anywhere (oauth2's own advice).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let app = AppAuth::new(config.app_id, &config.private_key_pem).map_err(|e| {
            anyhow::anyhow!("the GitHub App private key is not a valid RSA PEM key: {e}")
        })?;
        Ok(Self {
            http,
            api: with_slash(config.api_url.clone()),
            web: with_slash(config.web_url.clone()),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            app,
            limit: RateLimit::default(),
        })
    }

    fn oauth(
        &self,
        callback: &Url,
    ) -> oauth2::Client<
        oauth2::basic::BasicErrorResponse,
        oauth2::basic::BasicTokenResponse,
        oauth2::basic::BasicTokenIntrospectionResponse,
        oauth2::StandardRevocableToken,
        oauth2::basic::BasicRevocationErrorResponse,
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    > {
        let join = |path: &str| {
            self.web
                .join(path)
                .unwrap_or_else(|e| unreachable!("a fixed relative path joins: {e}"))
        };
        BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            // GitHub documents the client credentials as form parameters.
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(AuthUrl::from_url(join("login/oauth/authorize")))
            .set_token_uri(TokenUrl::from_url(join("login/oauth/access_token")))
            .set_redirect_uri(RedirectUrl::from_url(callback.clone()))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = self
            .api
            .join(path)
            .unwrap_or_else(|e| unreachable!("API paths are relative: {e}"));
        self.http
            .request(method, url)
            .header(ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
    }

    async fn authorise(&self, builder: RequestBuilder, auth: &Auth<'_>) -> Result<RequestBuilder> {
        Ok(match auth {
            Auth::App => builder.bearer_auth(self.app.jwt(Timestamp::now())?),
            Auth::User(token) => builder.bearer_auth(token),
            Auth::Installation(id) => builder.bearer_auth(self.installation_token(*id).await?),
        })
    }

    /// Sends a request with its credentials, respecting rate limits.
    async fn send(&self, builder: RequestBuilder, auth: &Auth<'_>) -> Result<reqwest::Response> {
        let builder = self.authorise(builder, auth).await?;
        let result = self.execute(builder).await;
        if let (Err(GitHubError::Status { status: 401, .. }), Auth::Installation(id)) =
            (&result, auth)
        {
            // The cached token was revoked or the installation changed: mint anew next time.
            self.app.forget(*id);
        }
        result
    }

    /// Sends an authorised request and returns the successful response.
    async fn execute(&self, builder: RequestBuilder) -> Result<reqwest::Response> {
        self.limit.check(Timestamp::now())?;
        let response = builder.send().await.map_err(GitHubError::Transport)?;
        let status = response.status();
        if let Some(until) = self
            .limit
            .observe(status, response.headers(), Timestamp::now())
            && !status.is_success()
        {
            return Err(GitHubError::RateLimited { until });
        }
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<wire::ErrorBody>(&body).map_or_else(
            |_| status.canonical_reason().unwrap_or("error").to_owned(),
            |e| e.message,
        );
        Err(GitHubError::Status {
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
        auth: &Auth<'_>,
    ) -> Result<T> {
        let response = self.send(builder, auth).await?;
        response
            .json()
            .await
            .map_err(|e| GitHubError::Decode(e.to_string()))
    }

    async fn installation_token(&self, installation_id: i64) -> Result<String> {
        self.app
            .installation_token(installation_id, Timestamp::now(), || async {
                let path = format!("app/installations/{installation_id}/access_tokens");
                let jwt = self.app.jwt(Timestamp::now())?;
                let response = self
                    .execute(self.request(Method::POST, &path).bearer_auth(jwt))
                    .await?;
                let token: wire::AccessToken = response
                    .json()
                    .await
                    .map_err(|e| GitHubError::Decode(e.to_string()))?;
                Ok(InstallationToken {
                    expires_at: wire::parse_time(&token.expires_at)?,
                    token: token.token,
                })
            })
            .await
    }
}

/// Our HTTP client, lent to `oauth2` for the token endpoint.
struct OAuthHttp<'a>(&'a reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp<'_> {
    type Error = OAuthHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn Future<Output = std::result::Result<oauth2::HttpResponse, OAuthHttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send_oauth(self.0, request))
    }
}

type TokenResult = std::result::Result<
    oauth2::basic::BasicTokenResponse,
    RequestTokenError<OAuthHttpError, oauth2::basic::BasicErrorResponse>,
>;

/// Reads the outcome of a token request, including GitHub's errors sent with HTTP 200.
fn user_token(result: TokenResult, now: Timestamp) -> Result<UserToken> {
    match result {
        Ok(token) => Ok(UserToken {
            access_token: token.access_token().secret().clone(),
            refresh_token: token.refresh_token().map(|t| t.secret().clone()),
            expires_at: token
                .expires_in()
                .map(|d| Timestamp::from_secs(now.secs_since_epoch + d.as_secs())),
        }),
        Err(RequestTokenError::ServerResponse(error)) => Err(GitHubError::OAuth {
            error: match error.error() {
                BasicErrorResponseType::Extension(code) => code.clone(),
                other => other.to_string(),
            },
            description: error.error_description().cloned().unwrap_or_default(),
        }),
        Err(RequestTokenError::Parse(_, body)) => Err(oauth_error_in(&body)),
        Err(RequestTokenError::Request(OAuthHttpError(error))) => {
            Err(GitHubError::Transport(error))
        }
        Err(RequestTokenError::Other(other)) => Err(GitHubError::Decode(other)),
    }
}

/// A transport failure of an OAuth request.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OAuthHttpError(reqwest::Error);

async fn send_oauth(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> std::result::Result<oauth2::HttpResponse, OAuthHttpError> {
    let request = reqwest::Request::try_from(request).map_err(OAuthHttpError)?;
    let response = http.execute(request).await.map_err(OAuthHttpError)?;
    let mut builder = axum::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await.map_err(OAuthHttpError)?;
    Ok(builder
        .body(body.to_vec())
        .unwrap_or_else(|e| unreachable!("a copied response rebuilds: {e}")))
}

/// GitHub's token endpoint answers errors with HTTP 200 and `{"error", "error_description"}`;
/// oauth2 then fails to read a token. Read the error instead.
fn oauth_error_in(body: &[u8]) -> GitHubError {
    #[derive(serde::Deserialize)]
    struct OAuthErrorBody {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<OAuthErrorBody>(body) {
        Ok(e) => GitHubError::OAuth {
            description: e.error_description.unwrap_or_else(|| e.error.clone()),
            error: e.error,
        },
        Err(_) => {
            GitHubError::Decode("the token endpoint answered neither a token nor an error".into())
        }
    }
}

#[async_trait]
impl GitHub for HttpGitHub {
    fn authorize_url(&self, state: &str, callback: &Url) -> Url {
        let state = state.to_owned();
        let (url, _) = self
            .oauth(callback)
            .authorize_url(|| CsrfToken::new(state))
            .url();
        url
    }

    async fn exchange_code(&self, code: &str, callback: &Url) -> Result<UserToken> {
        self.limit.check(Timestamp::now())?;
        let result = self
            .oauth(callback)
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .request_async(&OAuthHttp(&self.http))
            .await;
        user_token(result, Timestamp::now())
    }

    async fn refresh_user_token(&self, refresh_token: &str) -> Result<UserToken> {
        self.limit.check(Timestamp::now())?;
        let result = self
            .oauth(&self.web)
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
            .request_async(&OAuthHttp(&self.http))
            .await;
        user_token(result, Timestamp::now())
    }

    async fn user(&self, token: &str) -> Result<GitHubUser> {
        let user: wire::User = self
            .json(self.request(Method::GET, "user"), &Auth::User(token))
            .await?;
        Ok(user.into())
    }

    async fn primary_email(&self, token: &str) -> Result<Option<String>> {
        let emails: Vec<wire::Email> = self
            .json(self.request(Method::GET, "user/emails"), &Auth::User(token))
            .await?;
        Ok(emails
            .into_iter()
            .find(|e| e.primary && e.verified)
            .map(|e| e.email))
    }

    async fn user_installations(&self, token: &str) -> Result<Vec<Installation>> {
        const PER_PAGE: usize = 100;
        let mut installations = Vec::new();
        for page in 1.. {
            let builder = self
                .request(Method::GET, "user/installations")
                .query(&[("per_page", PER_PAGE), ("page", page)]);
            let list: wire::Installations = self.json(builder, &Auth::User(token)).await?;
            let count = list.installations.len();
            installations.extend(
                list.installations
                    .into_iter()
                    .filter_map(wire::WireInstallation::into_installation),
            );
            let total = usize::try_from(list.total_count).unwrap_or(usize::MAX);
            if count < PER_PAGE || page * PER_PAGE >= total {
                break;
            }
        }
        Ok(installations)
    }

    async fn generate_jitconfig(
        &self,
        installation_id: i64,
        scope: &RunnerScope,
        name: &str,
        labels: &[String],
    ) -> Result<JitConfig> {
        let path = format!("{}/generate-jitconfig", scope.runners_path());
        let body = serde_json::json!({
            "name": name,
            // The default runner group, which every repository and organisation has.
            "runner_group_id": 1,
            "labels": labels,
        });
        let jit: wire::Jit = self
            .json(
                self.request(Method::POST, &path).json(&body),
                &Auth::Installation(installation_id),
            )
            .await?;
        Ok(JitConfig {
            runner: jit.runner.into(),
            encoded_jit_config: jit.encoded_jit_config,
        })
    }

    async fn runners(
        &self,
        installation_id: i64,
        scope: &RunnerScope,
        name: Option<&str>,
    ) -> Result<Vec<Runner>> {
        let mut builder = self
            .request(Method::GET, &scope.runners_path())
            .query(&[("per_page", "100")]);
        if let Some(name) = name {
            builder = builder.query(&[("name", name)]);
        }
        let runners: wire::Runners = self
            .json(builder, &Auth::Installation(installation_id))
            .await?;
        Ok(runners.runners.into_iter().map(Into::into).collect())
    }

    async fn delete_runner(
        &self,
        installation_id: i64,
        scope: &RunnerScope,
        id: i64,
    ) -> Result<()> {
        let path = format!("{}/{id}", scope.runners_path());
        self.send(
            self.request(Method::DELETE, &path),
            &Auth::Installation(installation_id),
        )
        .await?;
        Ok(())
    }

    async fn deliveries(&self) -> Result<Vec<Delivery>> {
        let builder = self
            .request(Method::GET, "app/hook/deliveries")
            .query(&[("per_page", "100")]);
        let deliveries: Vec<wire::WireDelivery> = self.json(builder, &Auth::App).await?;
        Ok(deliveries.into_iter().map(Into::into).collect())
    }

    async fn redeliver(&self, delivery_id: i64) -> Result<()> {
        let path = format!("app/hook/deliveries/{delivery_id}/attempts");
        self.send(self.request(Method::POST, &path), &Auth::App)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_urls_follow_the_api() {
        let web = |api: &str| GitHubConfig::web_url_for(&Url::parse(api).unwrap()).to_string();
        assert_eq!(web("https://api.github.com"), "https://github.com/");
        assert_eq!(web("https://ghe.example/api/v3"), "https://ghe.example/");
        assert_eq!(
            web("http://127.0.0.1:8080/sandbox/github/api"),
            "http://127.0.0.1:8080/sandbox/github"
        );
    }

    #[test]
    fn oauth_errors_sent_with_200_are_read() {
        let body = br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired.","error_uri":"https://docs.github.com"}"#;
        match oauth_error_in(body) {
            GitHubError::OAuth { error, description } => {
                assert_eq!(error, "bad_verification_code");
                assert_eq!(description, "The code passed is incorrect or expired.");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let config = GitHubConfig {
            api_url: Url::parse("https://api.github.com").unwrap(),
            web_url: Url::parse("https://github.com").unwrap(),
            app_id: 1,
            client_id: "Iv1.x".into(),
            client_secret: "hunter2".into(),
            private_key_pem: b"-----BEGIN RSA PRIVATE KEY-----".to_vec(),
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("PRIVATE"),
            "{debug}"
        );
    }
}
