//! `builtiful` against a real `builtiful-server serve --sandbox`: logging in (token, loopback
//! browser flow, pasted code), status, tenants, jobs in every output form and paging, errors
//! and exit codes, logging out.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;

use support::{Machine, Run, Sandbox, eventually, get, query};

fn assert_ok(run: &Run) {
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn token_login_status_tenants_jobs_and_logout() {
    let sandbox = Sandbox::start();
    let octo = sandbox.tenant("octo-org");
    let mona = sandbox.tenant("mona-org");
    let jobs = sandbox.jobs(&octo, 25);
    let me = Machine::new(&sandbox.base);

    // Not logged in yet: exit 4 with a hint.
    let run = me.run(&["status"], "");
    assert_eq!(run.code, 4, "{run:#?}");
    assert_eq!(
        run.stderr,
        format!(
            "You are not logged in to {}; run `builtiful login`\n",
            sandbox.base
        )
    );
    assert_eq!(me.run(&["jobs"], "").code, 4);

    // A refused token is not stored.
    let run = me.run(&["login", "--with-token"], "bfs_not-a-session\n");
    assert_eq!(run.code, 4, "{run:#?}");
    assert!(run.stderr.contains("refused that token"), "{run:#?}");
    assert!(!me.token_file().exists());

    // --with-token; no D-Bus here, so the token goes to the 0600 file with one warning.
    let token = sandbox.session("octocat");
    let run = me.run(&["login", "--with-token"], &format!("{token}\n"));
    assert_ok(&run);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:#?}");
    assert!(lines[0].starts_with("warning: no OS keyring ("), "{run:#?}");
    assert!(
        lines[0].ends_with(&format!(
            "the token is stored in {} (readable only by you)",
            me.token_file().display()
        )),
        "{run:#?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "Logged in to {} as octocat (The Octocat) (token in {})",
            sandbox.base,
            me.token_file().display()
        )
    );
    assert!(!run.stderr.contains(&token) && !run.stdout.contains(&token));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(me.token_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let run = me.run(&["status"], "");
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        format!(
            "Server  {}\nUser    octocat (The Octocat)\nToken   {}\n",
            sandbox.base,
            me.token_file().display()
        )
    );

    // Tenants: only the one octocat reaches; piped means tab-separated, no header.
    let run = me.run(&["tenants"], "");
    assert_ok(&run);
    assert_eq!(run.stdout, format!("octo-org\t{}\t\tactive\n", octo.id));
    let run = me.run(&["tenants", "--json"], "");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json[0]["github_login"], "octo-org");
    assert_eq!(json.as_array().unwrap().len(), 1);

    // Jobs piped: the only tenant, newest first, one tab-separated line each, no colour.
    let run = me.run(&["jobs", "--limit", "10"], "");
    assert_ok(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 10, "{run:#?}");
    assert!(!run.stdout.contains('\x1b'));
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 8, "{lines:?}");
    assert_eq!(fields[0], jobs[0].id.to_string());
    assert_eq!(fields[1], "octo-org/app");
    assert_eq!(fields[2], "builtiful(ubuntu,4cpu)");
    assert_eq!(fields[3], "Queued");
    assert_eq!(fields[4], "");
    assert!(
        fields[5].ends_with('Z') && fields[5].len() == 20,
        "{fields:?}"
    );
    // Failed jobs carry their reason.
    let failed = lines.iter().find(|l| l.contains("\tFailed\t")).unwrap();
    assert!(failed.contains("\tInvalidVcpus\t"), "{failed}");
    let ids = |run: &Run| -> Vec<String> {
        run.stdout
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_owned())
            .collect()
    };
    let expected = |range: std::ops::Range<usize>| -> Vec<String> {
        jobs[range].iter().map(|j| j.id.to_string()).collect()
    };
    assert_eq!(ids(&run), expected(0..10));

    // Paging forward and back by cursor, by login and by id.
    let page2 = me.run(
        &[
            "jobs",
            "--tenant",
            "octo-org",
            "--limit",
            "10",
            "--after",
            &jobs[9].id.to_string(),
        ],
        "",
    );
    assert_eq!(ids(&page2), expected(10..20));
    let page3 = me.run(
        &[
            "jobs",
            "--tenant",
            &octo.id.to_string(),
            "--limit",
            "10",
            "--after",
            &jobs[19].id.to_string(),
        ],
        "",
    );
    assert_eq!(ids(&page3), expected(20..25));
    let back = me.run(
        &[
            "jobs",
            "-t",
            "OCTO-ORG",
            "--limit",
            "10",
            "--before",
            &jobs[10].id.to_string(),
        ],
        "",
    );
    assert_eq!(ids(&back), expected(0..10));
    let back = me.run(
        &["jobs", "--limit", "3", "--before", &jobs[20].id.to_string()],
        "",
    );
    assert_eq!(ids(&back), expected(17..20));

    // --json: the API's objects.
    let run = me.run(&["jobs", "--limit", "2", "--json"], "");
    assert_ok(&run);
    let json: Vec<builtiful_core::Job> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json, jobs[..2].to_vec());

    // A tenant octocat cannot see: by login (listed choices) and by id (the server's 404).
    let run = me.run(&["jobs", "--tenant", "mona-org"], "");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stderr,
        "No tenant `mona-org` among yours; pick one with --tenant: octo-org\n"
    );
    let run = me.run(&["jobs", "--tenant", &mona.id.to_string()], "");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stderr, format!("Tenant {} not found\n", mona.id));
    // An unknown cursor: the server's message, one line.
    let run = me.run(&["jobs", "--after", &uuid::Uuid::now_v7().to_string()], "");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");

    // Email change: the server mails a link.
    let run = me.run(&["tenant", "email", "set", "ops@example.com"], "");
    assert_ok(&run);
    assert!(
        run.stderr.starts_with(
            "A confirmation link was mailed to ops@example.com; the address of octo-org changes"
        ),
        "{run:#?}"
    );
    let run = me.run(&["tenant", "email", "set", "not-an-address"], "");
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "`not-an-address` is not a valid email address\n"
    );

    // BUILTIFUL_TOKEN overrides the stored token.
    let other = sandbox.session("monalisa");
    let mut command = me.command(&["status"]);
    command.env("BUILTIFUL_TOKEN", &other);
    let run = support::run_with(command, "");
    assert_ok(&run);
    assert!(
        run.stdout.contains("User    monalisa (Mona Lisa Octocat)"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("Token   the BUILTIFUL_TOKEN environment variable"),
        "{run:#?}"
    );

    // Logout ends the session on the server, then forgets it here.
    let run = me.run(&["logout"], "");
    assert_ok(&run);
    assert_eq!(run.stderr, format!("Logged out of {}\n", sandbox.base));
    let refused = sandbox
        .runtime
        .block_on(sandbox.client(&token).me())
        .unwrap_err();
    assert!(refused.is_unauthorized(), "{refused}");
    assert!(
        !std::fs::read_to_string(me.token_file())
            .unwrap()
            .contains(&token)
    );
    let run = me.run(&["status"], "");
    assert_eq!(run.code, 4, "{run:#?}");
    assert_eq!(me.run(&["logout"], "").code, 1);
}

#[test]
fn several_tenants_need_a_choice() {
    let sandbox = Sandbox::start();
    let user = sandbox.user("octocat");
    let (octo, mona) = (sandbox.tenant("octo-org"), sandbox.tenant("mona-org"));
    sandbox
        .runtime
        .block_on(
            sandbox
                .store()
                .set_memberships(user.id, &[octo.id, mona.id]),
        )
        .unwrap();
    sandbox.jobs(&mona, 1);
    let me = Machine::new(&sandbox.base);
    let token = sandbox.session("octocat");
    assert_ok(&me.run(&["login", "--with-token"], &token));
    let run = me.run(&["jobs"], "");
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("You can reach 2 tenants; pick one with --tenant: "),
        "{run:#?}"
    );
    assert!(run.stderr.contains("octo-org") && run.stderr.contains("mona-org"));
    let run = me.run(&["jobs", "--tenant", "mona-org"], "");
    assert_ok(&run);
    assert_eq!(run.stdout.lines().count(), 1);
    assert!(run.stdout.contains("mona-org/app"));
    let run = me.run(&["jobs", "--tenant", "octo-org"], "");
    assert_ok(&run);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "octo-org has no jobs yet\n");
}

/// A `BROWSER` that records the URL it was asked to open.
fn recording_browser(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let out = dir.join("opened-url");
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > '{0}.tmp' && mv '{0}.tmp' '{0}'\n",
            out.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (script.display().to_string(), out)
}

#[test]
fn browser_login_over_the_loopback_listener() {
    let sandbox = Sandbox::start();
    let me = Machine::new(&sandbox.base);
    let (browser, opened) = recording_browser(me.config_dir());
    let mut command = me.command(&["login"]);
    command.env("BROWSER", &browser);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let url = eventually(20, || std::fs::read_to_string(&opened).ok());
    assert!(
        url.starts_with(&format!("{}/auth/github/login?", sandbox.base)),
        "{url}"
    );
    let challenge = query(&url, "code_challenge").unwrap();
    assert_eq!(challenge.len(), 43);
    let redirect = query(&url, "redirect_uri").unwrap();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    assert!(query(&redirect, "state").unwrap().len() >= 43, "{redirect}");
    // The real server accepts that login and sends the browser on to GitHub.
    let (status, _) = get(&url);
    assert_eq!(status, 302);

    // Stray requests are answered and ignored.
    let loopback = url::Url::parse(&redirect).unwrap();
    let origin = loopback.origin().ascii_serialization();
    assert_eq!(get(&format!("{origin}/favicon.ico")).0, 404);
    assert_eq!(
        get(&format!("{origin}/callback?state=forged&code=abc")).0,
        404
    );

    // GitHub approved: the server redirects back with a one-time code bound to the challenge.
    let code = sandbox.login_code("octocat", &challenge);
    let (status, page) = get(&format!("{redirect}&code={code}"));
    assert_eq!(status, 200);
    assert!(page.contains("You may close this page"), "{page}");
    assert!(page.contains("as octocat"), "{page}");

    let run: Run = child.wait_with_output().unwrap().into();
    assert_ok(&run);
    assert!(run.stderr.contains(&url), "the URL is printed: {run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "Logged in to {} as octocat (The Octocat)",
            sandbox.base
        )),
        "{run:#?}"
    );
    let run = me.run(&["status"], "");
    assert_ok(&run);
    assert!(run.stdout.contains("User    octocat"), "{run:#?}");
    // The code was one-time.
    let replay = sandbox.runtime.block_on(
        sandbox
            .client("")
            .exchange_code(&code, "x".repeat(43).as_str()),
    );
    assert!(replay.is_err());
}

#[test]
fn declining_on_github_cancels_with_exit_2() {
    let sandbox = Sandbox::start();
    let me = Machine::new(&sandbox.base);
    let (browser, opened) = recording_browser(me.config_dir());
    let mut command = me.command(&["login"]);
    command.env("BROWSER", &browser);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = eventually(20, || std::fs::read_to_string(&opened).ok());
    let redirect = query(&url, "redirect_uri").unwrap();
    let (status, page) = get(&format!(
        "{redirect}&error=access_denied&error_description=The+user+has+denied+your+application+access."
    ));
    assert_eq!(status, 200);
    assert!(page.contains("You may close this page"), "{page}");
    let run: Run = child.wait_with_output().unwrap().into();
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .ends_with("Login not completed: The user has denied your application access.\n")
    );
    assert!(!me.token_file().exists());
}

#[test]
fn no_browser_login_reads_the_code_the_server_shows() {
    let sandbox = Sandbox::start();
    let me = Machine::new(&sandbox.base);
    let mut child = me
        .command(&["login", "--no-browser"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
        if let Some(start) = line.find("http") {
            break line[start..].trim().to_owned();
        }
    };
    let redirect = query(&url, "redirect_uri").unwrap();
    assert_eq!(redirect, format!("{}/auth/cli/code", sandbox.base));
    let challenge = query(&url, "code_challenge").unwrap();

    // The person logs in on another device; the server's page shows them the code.
    let code = sandbox.login_code("monalisa", &challenge);
    let (status, page) = get(&format!("{redirect}?code={code}"));
    assert_eq!(status, 200);
    let shown = page
        .split("<code>")
        .nth(1)
        .unwrap()
        .split("</code>")
        .next()
        .unwrap();
    assert_eq!(shown, code);

    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "  {shown}  ").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}{rest}");
    assert!(rest.contains("Logged in to"), "{rest}");
    assert!(rest.contains("as monalisa (Mona Lisa Octocat)"), "{rest}");
    let run = me.run(&["tenants"], "");
    assert!(run.stdout.starts_with("mona-org\t"), "{run:#?}");

    // An empty answer (closed input) cancels.
    let run = me.run(&["login", "--no-browser"], "");
    assert_eq!(run.code, 2, "{run:#?}");
}

/// The whole way through the simulated GitHub: the `BROWSER` follows the server's redirect to
/// GitHub's authorize page, approves as a seeded user, and follows the redirects back to the
/// CLI's loopback listener; jobs come from workflow runs the simulator queues and delivers as
/// signed webhooks.
#[test]
fn login_through_the_simulated_github_then_jobs_from_webhooks() {
    let sandbox = Sandbox::start();
    let me = Machine::new(&sandbox.base);
    let page = me.config_dir().join("page.html");
    let browser = me.config_dir().join("browser.sh");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\nloc=$(curl -s -o /dev/null -w '%{{redirect_url}}' \"$1\")\ncurl -sL \"$loc&login=octocat\" > '{}'\n",
            page.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut command = me.command(&["login"]);
    command.env("BROWSER", &browser);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(60, || child.try_wait().unwrap());
    let run: Run = child.wait_with_output().unwrap().into();
    assert_ok(&run);
    assert!(
        run.stderr.contains(&format!(
            "Logged in to {} as octocat (The Octocat)",
            sandbox.base
        )),
        "{run:#?}"
    );
    let shown = std::fs::read_to_string(&page).unwrap();
    assert!(
        shown.contains("You may close this page and return to the terminal"),
        "{shown}"
    );
    let run = me.run(&["tenants"], "");
    assert!(run.stdout.starts_with("octo-org\t"), "{run:#?}");

    // Three jobs queued on the simulated GitHub reach the server as webhooks.
    let queue = std::process::Command::new(support::SERVER)
        .env_clear()
        .args([
            "sandbox",
            "queue",
            "--server",
            &sandbox.base,
            "--repo",
            "octo-org/app",
            "--label",
            "builtiful(ubuntu)",
            "--count",
            "3",
        ])
        .output()
        .unwrap();
    assert!(queue.status.success(), "{queue:?}");
    let run = eventually(30, || {
        let run = me.run(&["jobs"], "");
        (run.stdout.lines().count() == 3).then_some(run)
    });
    for line in run.stdout.lines() {
        assert!(
            line.contains("\tocto-org/app\tbuiltiful(ubuntu)\tQueued\t"),
            "{line}"
        );
    }

    // Headless: monalisa logs in on "another device" and pastes the code the server shows.
    let other = Machine::new(&sandbox.base);
    let mut child = other
        .command(&["login", "--no-browser"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0);
        if let Some(start) = line.find("http") {
            break line[start..].trim().to_owned();
        }
    };
    let (status, to_github) = support::runtime().block_on(async {
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.headers()["location"].to_str().unwrap().to_owned(),
        )
    });
    assert_eq!(status, 302);
    let code_page = support::runtime().block_on(async {
        reqwest::get(format!("{to_github}&login=monalisa"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let code = code_page
        .split("<code>")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .unwrap_or_else(|| panic!("no code on the page: {code_page}"));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{code}").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("as monalisa (Mona Lisa Octocat)"), "{rest}");
    let run = other.run(&["jobs"], "");
    assert_ok(&run);
    assert_eq!(run.stderr, "mona-org has no jobs yet\n");

    // Logging out ends only that machine's session.
    assert_ok(&me.run(&["logout"], ""));
    assert_eq!(me.run(&["status"], "").code, 4);
    assert_ok(&other.run(&["status"], ""));
}
