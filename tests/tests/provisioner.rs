//! The provisioner as an operator runs it: the real `builtiful-provisioner` binary against a
//! real sandbox server (`builtiful-server serve --sandbox`), launching the sandbox's
//! simulated actions runner through `launchers/sandbox.sh`. Job states are read through the
//! server's store (`list_jobs`, what `GET /tenants/{id}/jobs` serves); the host-side facts
//! (`RunnerStarted`, `RunnerExited`) from the jobs table.

use std::path::Path;
use std::time::{Duration, Instant};

use builtiful_core::{Job, JobStatus};
use builtiful_tests::{
    Provisioner, ProvisionerOptions, Sandbox, free_port, ledger_launcher, signal, wait_for,
};
use nix::sys::signal::Signal;

fn count(jobs: &[Job], status: JobStatus) -> usize {
    jobs.iter().filter(|j| j.status == status).count()
}

/// Waits until `n` jobs are in `status`.
fn wait_status(sandbox: &Sandbox, status: JobStatus, n: usize, timeout: Duration) -> Vec<Job> {
    wait_for(&format!("{n} jobs {status}"), timeout, || {
        let jobs = sandbox.jobs();
        (count(&jobs, status) >= n).then_some(jobs)
    })
}

/// The most vCPUs the ledger shows running at once, and how many runners it shows.
fn peak_vcpus(ledger: &Path) -> (u32, usize) {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    let mut events: Vec<(u128, i64)> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let vcpus: i64 = fields[2].parse().unwrap();
            let at: u128 = fields[1].parse().unwrap();
            // Ends sort before starts at the same instant only if they really came first.
            (at, if fields[0] == "start" { vcpus } else { -vcpus })
        })
        .collect();
    events.sort_by_key(|&(at, delta)| (at, delta));
    let (mut now, mut peak) = (0_i64, 0_i64);
    for (_, delta) in &events {
        now += delta;
        peak = peak.max(now);
    }
    let runners = text.lines().filter(|l| l.starts_with("start")).count();
    (u32::try_from(peak).unwrap(), runners)
}

fn metrics(port: u16) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

#[test]
fn two_hosts_run_thirty_mixed_jobs_within_their_vcpus() {
    let sandbox = Sandbox::start();
    let mut hosts = Vec::new();
    let metrics_port = free_port();
    for (host, vcpus) in [("host-a", 8), ("host-b", 4)] {
        let (launcher, ledger) = ledger_launcher(sandbox.dir.path(), host);
        let mut options = ProvisionerOptions::new(host, vcpus);
        options.launcher = launcher;
        if host == "host-a" {
            options.args = vec![
                "--metrics-listen".into(),
                format!("127.0.0.1:{metrics_port}"),
            ];
        }
        let token = sandbox.provisioner_token(host);
        hosts.push((
            Provisioner::start(&sandbox, &token, &options),
            ledger,
            vcpus,
        ));
    }
    sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 8, 2);
    sandbox.queue("mona-org/site", "builtiful(ubuntu,2cpu)", 4, 2);
    sandbox.queue("octo-org/api", "builtiful(ubuntu,4cpu)", 8, 2);
    sandbox.queue("mona-org/site", "builtiful(ubuntu,4cpu)", 4, 2);
    sandbox.queue("octo-org/app", "builtiful(ubuntu,8cpu)", 6, 2);

    let started = Instant::now();
    let mut last = String::new();
    let jobs = wait_for("30 jobs completed", Duration::from_secs(100), || {
        let jobs = sandbox.jobs();
        let summary = format!(
            "{}s: {:?}",
            started.elapsed().as_secs(),
            JobStatus::ALL
                .iter()
                .map(|s| (s, count(&jobs, *s)))
                .collect::<Vec<_>>()
        );
        if summary != last {
            eprintln!("{summary}");
            last = summary;
        }
        (jobs.len() == 30 && jobs.iter().all(|j| j.status == JobStatus::Completed)).then_some(jobs)
    });
    eprintln!("30 jobs completed in {:?}", started.elapsed());
    for job in &jobs {
        assert!(job.duration.is_some_and(|d| d >= 2), "{job:?}");
        assert_eq!(job.billable_duration, Some(60), "{job:?}");
        assert!(job.provisioner_picked_up_at.is_some());
    }
    let reported = sandbox.sql(
        "SELECT COUNT(*) FROM jobs WHERE runner_started_at IS NOT NULL \
         AND runner_exited_at IS NOT NULL",
    );
    // RunnerStarted and RunnerExited reached the server for every job, except where the server
    // answered 404 because GitHub's routing (a runner takes any queued job of its repository
    // and label) moved the job's lease elsewhere; the provisioner logs those.
    let reported: usize = reported[0][0].as_deref().unwrap().parse().unwrap();
    let refused: usize = hosts
        .iter()
        .map(|(p, _, _)| p.log().matches("the server refused the report").count())
        .sum();
    assert!(
        reported + refused >= 30,
        "{reported} reported, {refused} refused"
    );

    let mut runners = 0;
    for (provisioner, ledger, vcpus) in &hosts {
        let log = provisioner.log();
        assert!(
            !log.contains("stopping the launcher"),
            "no runner is stopped: {log}"
        );
        let (peak, ran) = peak_vcpus(ledger);
        assert!(
            peak <= *vcpus,
            "{} ran {peak} vCPUs at once, offered {vcpus}",
            provisioner.log.display()
        );
        assert!(ran > 0, "both hosts get work");
        runners += ran;
    }
    assert!(runners >= 30, "a runner per job at least");
    // host-a alone fits 8-vCPU jobs, and it is saturated by them at times.
    assert_eq!(peak_vcpus(&hosts[0].1).0, 8);

    // Every vCPU came back.
    let text = wait_for("all vCPUs free", Duration::from_secs(10), || {
        let text = metrics(metrics_port);
        text.contains("builtiful_provisioner_vcpus_free 8\n")
            .then_some(text)
    });
    assert!(
        text.contains("builtiful_provisioner_vcpus_total 8\n"),
        "{text}"
    );
    assert!(
        text.contains("builtiful_provisioner_jobs_running 0\n"),
        "{text}"
    );
    assert!(
        !text.contains("builtiful_provisioner_claims_total 0\n"),
        "{text}"
    );
    assert!(
        text.contains("builtiful_provisioner_launcher_failures_total 0\n"),
        "{text}"
    );

    // Idle hosts drain at once on SIGTERM.
    for (provisioner, _, _) in &mut hosts {
        signal(provisioner.child.id(), Signal::SIGTERM);
        assert_eq!(provisioner.wait_exit(Duration::from_secs(10)), Some(0));
        assert_eq!(provisioner.recorded_jobs(), 0);
    }
}

#[test]
fn a_runner_past_max_run_time_is_stopped() {
    let sandbox = Sandbox::start();
    sandbox.sql("UPDATE tenants SET max_run_time = 3");
    let token = sandbox.provisioner_token("host");
    let provisioner = Provisioner::start(&sandbox, &token, &ProvisionerOptions::new("host", 4));
    let started = Instant::now();
    sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 1, 120);

    let jobs = wait_status(&sandbox, JobStatus::Completed, 1, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(jobs[0].max_run_time, 3);
    assert!(jobs[0].duration.is_some_and(|d| d < 20), "{:?}", jobs[0]);
    let exited = sandbox.sql("SELECT runner_exit_code, runner_message FROM jobs");
    assert_eq!(
        exited[0][0].as_deref(),
        Some("1"),
        "the runner was stopped: {exited:?}"
    );
    assert!(
        exited[0][1]
            .as_deref()
            .unwrap()
            .contains("max_run_time of 3 s exceeded"),
        "{exited:?}"
    );
    wait_for("the record to go", Duration::from_secs(5), || {
        (provisioner.recorded_jobs() == 0).then_some(())
    });
}

#[test]
fn a_cancelled_job_is_stopped_through_the_heartbeat() {
    let sandbox = Sandbox::start();
    let token = sandbox.provisioner_token("host");
    let provisioner = Provisioner::start(&sandbox, &token, &ProvisionerOptions::new("host", 2));
    let ids = sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 1, 120);
    wait_status(&sandbox, JobStatus::Running, 1, Duration::from_secs(20));

    sandbox.cancel(ids[0]);
    wait_for(
        "the launcher to be stopped",
        Duration::from_secs(20),
        || {
            provisioner
                .log()
                .contains("the job was cancelled or has ended")
                .then_some(())
        },
    );
    let exited = wait_for("RunnerExited", Duration::from_secs(10), || {
        let rows =
            sandbox.sql("SELECT runner_message FROM jobs WHERE runner_exited_at IS NOT NULL");
        (!rows.is_empty()).then_some(rows)
    });
    assert!(
        exited[0][0].as_deref().unwrap().contains("cancelled"),
        "{exited:?}"
    );

    // Its 2 vCPUs are free again: the next job runs.
    sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 1, 0);
    let jobs = wait_for("the next job to complete", Duration::from_secs(20), || {
        let jobs = sandbox.jobs();
        (count(&jobs, JobStatus::Completed) == 2).then_some(jobs)
    });
    assert!(jobs.iter().all(|j| j.duration.is_some()));
}

#[test]
fn sigterm_drains_and_a_second_signal_stops_the_jobs() {
    let sandbox = Sandbox::start();
    let token = sandbox.provisioner_token("host");
    let mut first = Provisioner::start(&sandbox, &token, &ProvisionerOptions::new("host", 4));
    sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 2, 4);
    wait_status(&sandbox, JobStatus::Running, 2, Duration::from_secs(20));

    signal(first.child.id(), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    sandbox.queue("octo-org/api", "builtiful(ubuntu,2cpu)", 1, 120);
    assert_eq!(first.wait_exit(Duration::from_secs(30)), Some(0));
    let jobs = wait_status(&sandbox, JobStatus::Completed, 2, Duration::from_secs(5));
    assert_eq!(
        count(&jobs, JobStatus::Queued),
        1,
        "no new claim while draining: {jobs:?}"
    );
    assert_eq!(first.recorded_jobs(), 0);

    // Another run takes the queued job; two signals stop it within the grace.
    let mut second = Provisioner::start(&sandbox, &token, &ProvisionerOptions::new("host", 4));
    wait_status(&sandbox, JobStatus::Running, 1, Duration::from_secs(20));
    signal(second.child.id(), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    signal(second.child.id(), Signal::SIGINT);
    assert_eq!(second.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(stopping.elapsed() < Duration::from_secs(10));
    assert_eq!(second.recorded_jobs(), 0);
    let rows = sandbox.sql(
        "SELECT runner_message FROM jobs WHERE repository = 'octo-org/api' AND runner_exited_at IS NOT NULL",
    );
    assert!(
        rows[0][0]
            .as_deref()
            .unwrap()
            .contains("the provisioner was stopped"),
        "{rows:?}"
    );
    // The runner, stopped, reported its job cancelled: it ends at once, not after 120 s.
    let jobs = wait_status(&sandbox, JobStatus::Completed, 3, Duration::from_secs(10));
    assert!(
        jobs.iter().all(|j| j.duration.is_some_and(|d| d < 60)),
        "{jobs:?}"
    );
}

fn launcher_pid(provisioner: &Provisioner) -> u32 {
    let dir = provisioner.state_dir.join("jobs");
    let record = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    u32::try_from(record["pid"].as_u64().unwrap()).unwrap()
}

/// Whether a process lives (zombies do not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'))
}

#[test]
fn a_restarted_provisioner_adopts_live_launchers_and_reports_dead_ones() {
    let sandbox = Sandbox::start();
    let token = sandbox.provisioner_token("host");
    let options = ProvisionerOptions::new("host", 4);
    let mut provisioner = Provisioner::start(&sandbox, &token, &options);
    sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 1, 8);
    wait_status(&sandbox, JobStatus::Running, 1, Duration::from_secs(20));
    let pid = wait_for("the job record", Duration::from_secs(5), || {
        (provisioner.recorded_jobs() == 1).then(|| launcher_pid(&provisioner))
    });

    // kill -9 mid-job: the launcher lives on, and the next run adopts it.
    let _ = provisioner.child.kill();
    let _ = provisioner.child.wait();
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "the launcher outlives the provisioner");
    let provisioner = Provisioner::start(&sandbox, &token, &options);
    wait_for("the adoption", Duration::from_secs(10), || {
        provisioner
            .log()
            .contains("adopted a running launcher")
            .then_some(())
    });
    let jobs = wait_status(&sandbox, JobStatus::Completed, 1, Duration::from_secs(30));
    assert!(jobs[0].duration.is_some_and(|d| d >= 8), "{jobs:?}");
    wait_for("the record to go", Duration::from_secs(5), || {
        (provisioner.recorded_jobs() == 0).then_some(())
    });
    let rows = sandbox.sql("SELECT runner_message FROM jobs WHERE runner_exited_at IS NOT NULL");
    assert_eq!(rows.len(), 1, "the adopted launcher's exit is reported");

    // kill -9 again, and the launcher dies too while no provisioner runs: the next run
    // reports it, and its vCPUs are not held.
    let mut provisioner = provisioner;
    sandbox.queue("octo-org/api", "builtiful(ubuntu,4cpu)", 1, 120);
    wait_status(&sandbox, JobStatus::Running, 1, Duration::from_secs(20));
    let pid = wait_for("the job record", Duration::from_secs(5), || {
        (provisioner.recorded_jobs() == 1).then(|| launcher_pid(&provisioner))
    });
    let _ = provisioner.child.kill();
    let _ = provisioner.child.wait();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        Signal::SIGKILL,
    );
    wait_for("the launcher to die", Duration::from_secs(5), || {
        (!alive(pid)).then_some(())
    });
    let provisioner = Provisioner::start(&sandbox, &token, &options);
    let rows = wait_for(
        "the dead launcher reported",
        Duration::from_secs(10),
        || {
            let rows = sandbox.sql(
            "SELECT runner_message FROM jobs WHERE repository = 'octo-org/api' AND runner_exited_at IS NOT NULL",
        );
            (!rows.is_empty()).then_some(rows)
        },
    );
    assert!(
        rows[0][0]
            .as_deref()
            .unwrap()
            .contains("while the provisioner was not running"),
        "{rows:?}"
    );
    wait_for("the record to go", Duration::from_secs(5), || {
        (provisioner.recorded_jobs() == 0).then_some(())
    });
    // All 4 vCPUs are offered again: a 4-vCPU job runs.
    sandbox.queue("octo-org/app", "builtiful(ubuntu,4cpu)", 1, 0);
    wait_status(&sandbox, JobStatus::Completed, 2, Duration::from_secs(20));
}

#[test]
fn the_server_down_for_30_seconds_and_back() {
    let mut sandbox = Sandbox::start();
    let token = sandbox.provisioner_token("host");
    let mut provisioner = Provisioner::start(&sandbox, &token, &ProvisionerOptions::new("host", 4));
    wait_for("the first poll", Duration::from_secs(10), || {
        provisioner
            .log()
            .contains("provisioner started")
            .then_some(())
    });
    sandbox.kill();
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        provisioner.child.try_wait().unwrap().is_none(),
        "still running"
    );
    let log = provisioner.log();
    let retries = log.matches("cannot claim jobs; retrying").count();
    // The backoff is capped at 2 s (--max-backoff 2): it keeps trying, but not in a hot loop.
    assert!(
        (5..=60).contains(&retries),
        "{retries} retries in 30 s:\n{log}"
    );

    sandbox.restart();
    let back = Instant::now();
    sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 2, 1);
    let jobs = wait_status(&sandbox, JobStatus::Completed, 2, Duration::from_secs(20));
    assert!(back.elapsed() < Duration::from_secs(20));
    assert!(jobs.iter().all(|j| j.duration.is_some()));
    signal(provisioner.child.id(), Signal::SIGTERM);
    assert_eq!(provisioner.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_refused_token_stops_the_provisioner_with_a_clear_message() {
    let sandbox = Sandbox::start();
    let secret = "bfp_this_token_does_not_exist_0000000000000000";
    let mut provisioner = Provisioner::start(&sandbox, secret, &ProvisionerOptions::new("host", 2));
    assert_eq!(provisioner.wait_exit(Duration::from_secs(10)), Some(4));
    let log = provisioner.log();
    assert!(
        log.contains("the server refused the provisioner token (HTTP 401)"),
        "{log}"
    );
    assert!(!log.contains(secret), "the token never reaches the log");
}

#[test]
fn counts_are_per_host() {
    // The helper that checks capacity must itself see overlaps.
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l");
    std::fs::write(
        &ledger,
        "start 1 4 a\nstart 2 4 b\nend 3 4 a\nstart 4 8 c\nend 5 4 b\nend 6 8 c\n",
    )
    .unwrap();
    assert_eq!(peak_vcpus(&ledger), (12, 3));
}

#[test]
fn a_launcher_that_cannot_start_is_reported_and_pauses_claims() {
    let sandbox = Sandbox::start();
    let token = sandbox.provisioner_token("host");
    let port = free_port();
    let mut options = ProvisionerOptions::new("host", 4);
    options.launcher = sandbox.dir.path().join("no-such-launcher");
    options.args = vec!["--metrics-listen".into(), format!("127.0.0.1:{port}")];
    let provisioner = Provisioner::start(&sandbox, &token, &options);
    sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 3, 0);

    let rows = wait_for("the failure reported", Duration::from_secs(20), || {
        let rows =
            sandbox.sql("SELECT runner_message FROM jobs WHERE runner_exited_at IS NOT NULL");
        (!rows.is_empty()).then_some(rows)
    });
    assert!(
        rows[0][0]
            .as_deref()
            .unwrap()
            .contains("cannot start the launcher"),
        "{rows:?}"
    );
    let text = metrics(port);
    let failures: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("builtiful_provisioner_launcher_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&failures), "{text}");
    assert!(
        text.contains("builtiful_provisioner_vcpus_free 4\n"),
        "{text}"
    );
    // Claims pause after a failure, and nothing is left behind in the state directory.
    wait_for("a pause", Duration::from_secs(10), || {
        provisioner.log().contains("pausing claims").then_some(())
    });
    wait_for("no JIT config left", Duration::from_secs(10), || {
        (std::fs::read_dir(provisioner.state_dir.join("jobs"))
            .unwrap()
            .count()
            == 0)
            .then_some(())
    });
}
