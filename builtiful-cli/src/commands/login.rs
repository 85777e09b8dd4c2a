//! `builtiful login`: signs in with GitHub through the server and stores the session token.
//!
//! - In the browser (the default): a listener on `127.0.0.1:0` receives the redirect that
//!   carries a one-time code; PKCE binds the code to this process, and a random `state` in the
//!   redirect URI tells our redirect apart from stray requests, which are answered and ignored.
//! - `--no-browser`: the server's own page shows the code, to paste here; for SSH sessions and
//!   machines whose browser cannot reach this one's loopback address.
//! - `--with-token`: a token read from standard input, for automation.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use builtiful_core::{Client, TokenResponse, User};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::Context;
use crate::cli::LoginArgs;
use crate::error::Exit;
use crate::format::html_escape;

/// How long the person has to finish logging in.
pub const LOGIN_TIMEOUT: Duration = Duration::from_mins(5);

/// How long one request to the loopback listener may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request the loopback listener reads.
const MAX_REQUEST: usize = 16 * 1024;

/// A PKCE (RFC 7636, S256) verifier and its challenge.
#[derive(Clone)]
pub struct Pkce {
    /// The secret sent only with the code exchange: 43 base64url characters (32 random bytes).
    pub verifier: String,
    /// `BASE64URL(SHA256(verifier))`, sent when the login starts.
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl Pkce {
    /// A fresh verifier and its challenge.
    pub fn generate() -> Self {
        let verifier = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

/// 32 random bytes as 43 base64url characters.
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Logs in and stores the token; says who is logged in.
pub async fn run(ctx: &mut Context, args: &LoginArgs) -> anyhow::Result<()> {
    if ctx.env_token.is_some() {
        anyhow::bail!(
            "BUILTIFUL_TOKEN is set, and it is used instead of any stored token; unset it to log in"
        );
    }
    let client = ctx.client()?;
    let TokenResponse { token, user } = if args.with_token {
        with_token(ctx, &client).await?
    } else if args.no_browser {
        headless(ctx, &client).await?
    } else {
        browser(ctx, &client).await?
    };
    let source = ctx
        .tokens
        .set(ctx.server.as_str(), &token, &mut ctx.io.stderr)?;
    let server = ctx.server_name();
    writeln!(
        ctx.io.stderr,
        "Logged in to {server} as {} (token in {source})",
        who(&user)
    )?;
    Ok(())
}

fn who(user: &User) -> String {
    match &user.github_name {
        Some(name) if !name.is_empty() => format!("{} ({name})", user.github_login),
        _ => user.github_login.clone(),
    }
}

/// `--with-token`: the token comes from standard input; `GET /me` checks it before it is kept.
async fn with_token(ctx: &mut Context, client: &Client) -> anyhow::Result<TokenResponse> {
    if ctx.io.stdin_tty {
        anyhow::bail!(
            "--with-token reads the token from standard input: builtiful login --with-token < token.txt"
        );
    }
    let mut input = String::new();
    ctx.io
        .stdin
        .read_to_string(&mut input)
        .context("cannot read the token from standard input")?;
    let token = input.trim().to_owned();
    if token.is_empty() {
        anyhow::bail!("No token on standard input");
    }
    match client.with_token(token.clone()).me().await {
        Ok(user) => Ok(TokenResponse { token, user }),
        Err(error) if error.is_unauthorized() => Err(Exit::AuthRequired(format!(
            "{} refused that token (it is invalid, expired or logged out)",
            ctx.server_name()
        ))
        .into()),
        Err(error) => Err(error.into()),
    }
}

/// The browser flow over a loopback listener.
async fn browser(ctx: &mut Context, client: &Client) -> anyhow::Result<TokenResponse> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on 127.0.0.1 for the login's redirect")?;
    let port = listener.local_addr()?.port();
    let pkce = Pkce::generate();
    let state = random_token();
    let redirect = format!("http://127.0.0.1:{port}/callback?state={state}");
    let url = client.login_url(&redirect, Some(&pkce.challenge));
    writeln!(
        ctx.io.stderr,
        "To log in with GitHub, open this URL in your browser:\n\n    {url}\n"
    )?;
    ctx.io.stderr.flush()?;
    match open_browser(ctx.browser.as_deref(), url.as_str()) {
        Ok(()) => writeln!(
            ctx.io.stderr,
            "Opened it in your browser. Waiting for you to finish there (Ctrl-C cancels)…"
        )?,
        Err(error) => writeln!(
            ctx.io.stderr,
            "Could not open a browser ({error}). Open the URL yourself; where no browser can reach this machine, use `builtiful login --no-browser`. Waiting…"
        )?,
    }
    ctx.io.stderr.flush()?;
    let server = ctx.server_name();
    tokio::select! {
        result = wait_for_redirect(&listener, &state, client, &pkce.verifier, &server) => result,
        () = tokio::time::sleep(LOGIN_TIMEOUT) => {
            anyhow::bail!("The login timed out after 5 minutes; run `builtiful login` again")
        }
        _ = tokio::signal::ctrl_c() => Err(Exit::Cancelled("Login cancelled".into()).into()),
    }
}

/// Opens `url` with `BROWSER` when set (`%s` in it stands for the URL, else the URL is the last
/// argument), else with the system's default browser.
fn open_browser(browser: Option<&str>, url: &str) -> anyhow::Result<()> {
    let Some(browser) = browser else {
        return open::that_detached(url).map_err(Into::into);
    };
    let mut words = browser.split_whitespace();
    let program = words.next().context("BROWSER is empty")?;
    let mut args: Vec<String> = words.map(str::to_owned).collect();
    if args.iter().any(|a| a.contains("%s")) {
        for arg in &mut args {
            *arg = arg.replace("%s", url);
        }
    } else {
        args.push(url.to_owned());
    }
    let mut child = std::process::Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run BROWSER `{program}`"))?;
    // Reap it whenever it ends; a browser may outlive the login.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Answers requests to the listener until our redirect arrives, then trades its code.
async fn wait_for_redirect(
    listener: &TcpListener,
    state: &str,
    client: &Client,
    verifier: &str,
    server: &str,
) -> anyhow::Result<TokenResponse> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let Ok(Ok(target)) = tokio::time::timeout(REQUEST_TIMEOUT, read_target(&mut stream)).await
        else {
            continue;
        };
        let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
            respond(
                &mut stream,
                400,
                "Bad request",
                "That is not a valid request.",
            )
            .await;
            continue;
        };
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let ours = url.path() == "/callback" && query("state").as_deref() == Some(state);
        if !ours {
            // A stray request (a favicon, a scanner, an old tab): answer it, keep waiting.
            respond(
                &mut stream,
                404,
                "Not found",
                "This is not the login builtiful is waiting for.",
            )
            .await;
            continue;
        }
        if let Some(error) = query("error") {
            let description = query("error_description").unwrap_or(error);
            respond(
                &mut stream,
                200,
                "Login not completed",
                &format!(
                    "{}. You may close this page.",
                    description.trim_end_matches('.')
                ),
            )
            .await;
            return Err(Exit::Cancelled(format!("Login not completed: {description}")).into());
        }
        let Some(code) = query("code") else {
            respond(
                &mut stream,
                400,
                "Bad request",
                "The redirect carried no code.",
            )
            .await;
            continue;
        };
        return match client.exchange_code(&code, verifier).await {
            Ok(response) => {
                let body = format!(
                    "builtiful is logged in to {server} as {}. You may close this page and return to the terminal.",
                    response.user.github_login
                );
                respond(&mut stream, 200, "You are logged in", &body).await;
                Ok(response)
            }
            Err(error) => {
                respond(
                    &mut stream,
                    200,
                    "Login failed",
                    &format!("{error}. You may close this page; the terminal says more."),
                )
                .await;
                Err(error.into())
            }
        };
    }
}

/// Reads an HTTP request's head and returns its target (`/callback?…`).
async fn read_target(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") && buffer.len() < MAX_REQUEST {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&buffer);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(_method), Some(target)) if target.starts_with('/') => Ok(target.to_owned()),
        _ => Err(std::io::ErrorKind::InvalidData.into()),
    }
}

/// Answers with a small HTML page; a failure to answer is no reason to fail the login.
async fn respond(stream: &mut TcpStream, status: u16, title: &str, text: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Builtiful: {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}</style>\
         </head><body><h1>{title}</h1><p>{}</p></body></html>",
        html_escape(text)
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `--no-browser`: the server's page shows the code; the person pastes it here.
async fn headless(ctx: &mut Context, client: &Client) -> anyhow::Result<TokenResponse> {
    let pkce = Pkce::generate();
    let code_page = client
        .base_url()
        .join("auth/cli/code")
        .context("cannot build the code page's URL")?;
    let url = client.login_url(code_page.as_str(), Some(&pkce.challenge));
    write!(
        ctx.io.stderr,
        "Open this URL in a browser on any device and log in with GitHub:\n\n    {url}\n\n\
         The page then shows a one-time code. Paste it here: "
    )?;
    ctx.io.stderr.flush()?;
    let line = read_line(ctx).await?;
    let code = line.trim();
    if code.is_empty() {
        return Err(Exit::Cancelled("Login cancelled: no code was pasted".into()).into());
    }
    Ok(client.exchange_code(code, &pkce.verifier).await?)
}

/// Reads one line of standard input, giving up on Ctrl-C and after [`LOGIN_TIMEOUT`].
async fn read_line(ctx: &mut Context) -> anyhow::Result<String> {
    let mut stdin = std::mem::replace(&mut ctx.io.stdin, Box::new(std::io::empty()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let result = stdin.read_line(&mut line).map(|_| line);
        let _ = tx.send((stdin, result));
    });
    tokio::select! {
        received = rx => {
            let (stdin, result) = received.context("standard input was lost")?;
            ctx.io.stdin = stdin;
            Ok(result.context("cannot read standard input")?)
        }
        () = tokio::time::sleep(LOGIN_TIMEOUT) => {
            anyhow::bail!("The login timed out after 5 minutes; run `builtiful login` again")
        }
        _ = tokio::signal::ctrl_c() => Err(Exit::Cancelled("Login cancelled".into()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_is_rfc_7636_s256() {
        let pkce = Pkce::generate();
        assert_eq!(pkce.verifier.len(), 43);
        assert_eq!(pkce.challenge.len(), 43);
        assert_eq!(
            pkce.challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(pkce.verifier.as_bytes()))
        );
        assert_ne!(Pkce::generate().verifier, pkce.verifier);
        assert!(!format!("{pkce:?}").contains(&pkce.verifier));
    }

    #[tokio::test]
    async fn stray_requests_are_answered_and_ignored() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let waiting =
            tokio::spawn(
                async move { wait_for_redirect(&listener, "right", &client, "v", "s").await },
            );
        let get = |path: &'static str| async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        assert!(get("/favicon.ico").await.starts_with("HTTP/1.1 404"));
        assert!(
            get("/callback?state=wrong&code=x")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(!waiting.is_finished());
        let declined = get(
            "/callback?state=right&error=access_denied&error_description=You%20said%20%3Cno%3E",
        )
        .await;
        assert!(declined.starts_with("HTTP/1.1 200"), "{declined}");
        assert!(declined.contains("You said &lt;no&gt;"), "{declined}");
        let error = waiting.await.unwrap().unwrap_err();
        assert!(matches!(
            error.downcast_ref::<Exit>(),
            Some(Exit::Cancelled(_))
        ));
    }

    #[test]
    fn browser_command_gets_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("url");
        let script = dir.path().join("browser.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$1\" > {}\n", out.display()),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            open_browser(Some(script.to_str().unwrap()), "http://x/?a=b&c").unwrap();
            for _ in 0..100 {
                if out.exists() && !std::fs::read_to_string(&out).unwrap().is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(std::fs::read_to_string(&out).unwrap(), "http://x/?a=b&c\n");
        }
        assert!(open_browser(Some("/nonexistent/browser"), "http://x/").is_err());
    }
}
