//! The interactive job pager: in a real terminal (tmux, driven with send-keys and read with
//! capture-pane), and in-process with scripted keys against the same real server.

mod support;

use std::collections::VecDeque;
use std::process::Command;

use builtiful_cli::io::{Io, Key, ScriptedKeys};
use support::{Machine, Sandbox, eventually};

fn short(id: uuid::Uuid) -> String {
    builtiful_cli::format::short_id(id)
}

/// A tmux server of its own, removed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "pager"])
    }

    /// Waits until the screen shows `text`, and returns it.
    fn wait_for(&self, text: &str) -> String {
        let mut last = String::new();
        eventually(20, || {
            last = self.screen();
            last.contains(text).then(|| last.clone())
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn pages_forward_and_back_in_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed, so the terminal pager test does not run");
        return;
    }
    let sandbox = Sandbox::start();
    let jobs = sandbox.jobs(&sandbox.tenant("octo-org"), 12);
    let me = Machine::new(&sandbox.base);
    let token = sandbox.session("octocat");
    assert_eq!(me.run(&["login", "--with-token"], &token).code, 0);

    let tmux = Tmux {
        socket: format!("builtiful-test-{}", uuid::Uuid::new_v4().simple()),
    };
    let command = format!(
        "env BUILTIFUL_CONFIG_DIR='{}' BUILTIFUL_SERVER='{}' '{}' jobs --limit 5; echo \"EXIT=$?\"; sleep 60",
        me.config_dir().display(),
        sandbox.base,
        support::CLI
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "pager",
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);

    let screen = tmux.wait_for("n next · q quit");
    assert!(screen.contains("Jobs of octo-org · 1–5 of 12"), "{screen}");
    assert!(screen.contains("ID"), "{screen}");
    assert!(screen.contains("STATUS"), "{screen}");
    assert!(screen.contains(&short(jobs[0].id)), "{screen}");
    assert!(screen.contains(&short(jobs[4].id)), "{screen}");
    assert!(!screen.contains(&short(jobs[5].id)), "{screen}");
    assert!(screen.contains("InvalidVcpus"), "{screen}");
    assert!(screen.contains("just now"), "{screen}");

    tmux.run(&["send-keys", "-t", "pager", "n"]);
    let screen = tmux.wait_for("6–10 of 12");
    assert!(screen.contains("n next · p previous · q quit"), "{screen}");
    // Drawn in place of the first page, not below it.
    assert!(!screen.contains("1–5 of 12"), "{screen}");
    assert!(!screen.contains(&short(jobs[0].id)), "{screen}");
    assert!(screen.contains(&short(jobs[5].id)), "{screen}");

    tmux.run(&["send-keys", "-t", "pager", "n"]);
    let screen = tmux.wait_for("11–12 of 12");
    assert!(screen.contains("p previous · q quit"), "{screen}");
    assert!(!screen.contains("n next"), "{screen}");
    assert!(screen.contains(&short(jobs[11].id)), "{screen}");

    // `n` on the last page does nothing; `p` goes back.
    tmux.run(&["send-keys", "-t", "pager", "n", "p"]);
    let screen = tmux.wait_for("6–10 of 12");
    assert!(screen.contains(&short(jobs[9].id)), "{screen}");

    tmux.run(&["send-keys", "-t", "pager", "q"]);
    let screen = tmux.wait_for("EXIT=0");
    assert!(
        screen.contains("6–10 of 12"),
        "the last page stays: {screen}"
    );
    assert!(!screen.contains("q quit"), "the prompt goes: {screen}");
}

#[test]
fn pager_with_scripted_keys() {
    let sandbox = Sandbox::start();
    let jobs = sandbox.jobs(&sandbox.tenant("octo-org"), 7);
    let token = sandbox.session("octocat");
    let dir = tempfile::tempdir().unwrap();

    let (mut io, out, err) = Io::captured("");
    io.stdout_tty = true;
    io.width = Some(150);
    io.keys = Some(Box::new(ScriptedKeys(VecDeque::from([
        Key::Other,
        Key::Next,
        Key::Next,
        Key::Next, // nothing older: ignored
        Key::Previous,
        Key::Quit,
    ]))));
    let mut ctx = builtiful_cli::Context {
        io,
        server: url::Url::parse(&sandbox.base).unwrap(),
        tokens: builtiful_cli::token_store::TokenStore::new(None, dir.path()),
        env_token: Some(token),
        browser: None,
    };
    let cli =
        <builtiful_cli::Cli as clap::Parser>::try_parse_from(["builtiful", "jobs", "--limit", "3"])
            .unwrap();
    builtiful_cli::execute(cli, &mut ctx).unwrap();

    let out = out.text();
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with("Jobs of")).collect();
    assert_eq!(
        headers,
        [
            "Jobs of octo-org · 1–3 of 7",
            "Jobs of octo-org · 4–6 of 7",
            "Jobs of octo-org · 7–7 of 7",
            "Jobs of octo-org · 4–6 of 7",
        ]
    );
    let pages: Vec<&str> = out.split("Jobs of").skip(1).collect();
    assert!(pages[0].contains(&short(jobs[2].id)) && !pages[0].contains(&short(jobs[3].id)));
    assert!(pages[2].contains(&short(jobs[6].id)));
    assert!(pages[3].contains(&short(jobs[3].id)) && pages[3].contains(&short(jobs[5].id)));
    let err = err.text();
    assert!(err.contains("n next · q quit"), "{err:?}");
    assert!(err.contains("p previous · q quit"), "{err:?}");
    // Each redraw moves up over the page it replaces and clears from there down.
    assert_eq!(err.matches("\x1b[J").count(), 3, "{err:?}");
    assert!(!out.contains('\x1b'), "no colour when it is off");
}

#[test]
fn ctrl_c_in_the_pager_cancels() {
    let sandbox = Sandbox::start();
    sandbox.jobs(&sandbox.tenant("octo-org"), 3);
    let dir = tempfile::tempdir().unwrap();
    let (mut io, _out, _err) = Io::captured("");
    io.stdout_tty = true;
    io.keys = Some(Box::new(ScriptedKeys(VecDeque::from([Key::Interrupt]))));
    let mut ctx = builtiful_cli::Context {
        io,
        server: url::Url::parse(&sandbox.base).unwrap(),
        tokens: builtiful_cli::token_store::TokenStore::new(None, dir.path()),
        env_token: Some(sandbox.session("octocat")),
        browser: None,
    };
    let cli =
        <builtiful_cli::Cli as clap::Parser>::try_parse_from(["builtiful", "jobs", "--limit", "2"])
            .unwrap();
    let error = builtiful_cli::execute(cli, &mut ctx).unwrap_err();
    assert_eq!(builtiful_cli::error::report(&error).unwrap().1, 2);
}
