//! The `builtiful-server` binary as an operator uses it: its commands, its refusal to start
//! half-configured, its JSON logs, and its graceful exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_builtiful-server");

fn server(dir: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env(
            "BUILTIFUL_DATABASE_URL",
            format!("sqlite://{}", dir.join("db.sqlite").display()),
        );
    command
}

fn run(command: &mut Command) -> (bool, String, String) {
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn refuses_to_serve_without_github_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(server(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--github-app-id", "1"])
        .env("BUILTIFUL_GITHUB_CLIENT_ID", "Iv1.abc"));
    assert!(!ok);
    assert!(
        stderr.contains(
            "GitHub App settings are missing: --github-client-secret, --github-private-key, --github-webhook-secret"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--sandbox"), "{stderr}");
}

#[test]
fn provisioner_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(server(dir.path()).arg("migrate"));
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) =
        run(server(dir.path()).args(["provisioner-token", "create", "--name", "amd64-01"]));
    assert!(ok, "{stderr}");
    let token = stdout.trim_end();
    assert_eq!(
        stdout.lines().count(),
        1,
        "the token alone on stdout: {stdout:?}"
    );
    assert!(token.starts_with("bfp_") && token.len() == 47, "{token}");

    let (ok, _, stderr) =
        run(server(dir.path()).args(["provisioner-token", "create", "--name", "amd64-01"]));
    assert!(!ok);
    assert!(stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) =
        run(server(dir.path()).args(["provisioner-token", "create", "--name", "no spaces"]));
    assert!(!ok);
    assert!(stderr.contains("invalid token name"), "{stderr}");

    let (ok, stdout, _) = run(server(dir.path()).args(["provisioner-token", "list"]));
    assert!(ok);
    assert!(
        stdout.lines().nth(1).unwrap().starts_with("amd64-01\t"),
        "{stdout}"
    );
    assert!(stdout.contains("never"), "{stdout}");
    assert!(!stdout.contains(token), "the list never shows tokens");

    let (ok, _, _) = run(server(dir.path()).args(["provisioner-token", "revoke", "amd64-01"]));
    assert!(ok);
    let (ok, _, stderr) = run(server(dir.path()).args(["provisioner-token", "revoke", "amd64-01"]));
    assert!(!ok);
    assert!(
        stderr.contains("no provisioner token is named `amd64-01`"),
        "{stderr}"
    );
}

#[test]
fn tenant_limits_need_a_known_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) =
        run(server(dir.path()).args(["tenant", "limits", "nobody-org", "--vcpu-quota", "16"]));
    assert!(!ok);
    assert!(
        stderr.contains("no tenant has the login `nobody-org`"),
        "{stderr}"
    );
    let (ok, _, stderr) =
        run(server(dir.path()).args(["tenant", "limits", "x", "--max-run-time", "5"]));
    assert!(!ok, "under a minute is refused");
    assert!(stderr.contains("max-run-time"), "{stderr}");
}

#[test]
fn migrate_reports_a_bad_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) =
        run(server(dir.path()).args(["migrate", "--database-url", "mysql://u:hunter2@db/x"]));
    assert!(!ok);
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "passwords never reach messages: {stderr}"
    );
}

#[test]
fn sandbox_serves_json_logs_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = server(dir.path())
        .args(["serve", "--sandbox", "--listen", "127.0.0.1:0"])
        .env("BUILTIFUL_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut address = None;
    let mut banner = String::new();
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while address.is_none() && Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with('{') {
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            assert!(
                event["timestamp"].is_string() && event["level"].is_string(),
                "{event}"
            );
            if event["message"] == "serving" {
                address = event["listen"].as_str().map(str::to_owned);
            }
        } else {
            banner.push_str(&line);
        }
    }
    let address = address.expect("the server logged where it listens");
    assert!(banner.contains("octo-org (app, api)"), "{banner}");
    assert!(banner.contains("octocat (reaches octo-org)"), "{banner}");
    assert!(banner.contains("BUILTIFUL_TOKEN=bfp_"), "{banner}");
    assert!(
        banner.contains(&format!("http://{address}/docs")),
        "{banner}"
    );

    let health = reqwest::blocking_get(&format!("http://{address}/health"));
    assert_eq!(health, 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

mod reqwest {
    /// A GET's status, on a throwaway runtime (this test is synchronous).
    pub fn blocking_get(url: &str) -> u16 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { ::reqwest::get(url).await.unwrap().status().as_u16() })
    }
}
