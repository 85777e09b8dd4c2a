//! Figures for BENCHMARKS.md, not assertions: the provisioner's idle memory and the time from
//! a job being queued to its launcher starting. Ignored by default; run with
//!
//! ```sh
//! cargo build --release -p builtiful-provisioner
//! BUILTIFUL_TESTS_PROVISIONER_BIN=target/release/builtiful-provisioner \
//!   cargo test -p builtiful-tests --test provisioner_bench -- --ignored --nocapture
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use builtiful_core::JobStatus;
use builtiful_tests::{Provisioner, ProvisionerOptions, Sandbox, ledger_launcher, wait_for};

const JOBS: usize = 100;

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Nearest rank.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn queue_to_launcher_latency_and_idle_memory() {
    let sandbox = Sandbox::start();
    let token = sandbox.provisioner_token("bench");
    let (launcher, ledger) = ledger_launcher(sandbox.dir.path(), "bench");
    let mut options = ProvisionerOptions::new("bench", 16);
    options.launcher = launcher;
    // The default long-poll, as deployed.
    options.args = vec!["--poll-wait".into(), "30".into()];
    let provisioner = Provisioner::start(&sandbox, &token, &options);
    let pid = provisioner.child.id();

    std::thread::sleep(Duration::from_secs(5));
    let idle_rss = rss_kib(pid, "VmRSS:");

    let mut from_trigger = Vec::new();
    for n in 1..=JOBS {
        let triggered = now_nanos();
        sandbox.queue("octo-org/app", "builtiful(ubuntu,2cpu)", 1, 0);
        let started: u128 = wait_for("the launcher", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&ledger).unwrap_or_default();
            let starts: Vec<u128> = text
                .lines()
                .filter(|l| l.starts_with("start "))
                .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
                .collect();
            (starts.len() >= n).then(|| starts[n - 1])
        });
        #[allow(clippy::cast_precision_loss)]
        from_trigger.push((started - triggered) as f64 / 1e6);
    }
    // From the job's creation on the server (the webhook's arrival) to its launcher.
    let jobs = wait_for("every job done", Duration::from_mins(1), || {
        let jobs = sandbox.jobs();
        jobs.iter()
            .all(|j| j.status == JobStatus::Completed)
            .then_some(jobs)
    });
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut from_created = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("start ")) {
        let fields: Vec<&str> = line.split(' ').collect();
        let at: u128 = fields[1].parse().unwrap();
        let job = jobs.iter().find(|j| j.id.to_string() == fields[3]).unwrap();
        let created = u128::from(job.created_at.secs_since_epoch) * 1_000_000_000
            + u128::from(job.created_at.nanos_since_epoch);
        #[allow(clippy::cast_precision_loss)]
        from_created.push((at - created) as f64 / 1e6);
    }
    let busy_rss = rss_kib(pid, "VmHWM:");
    from_trigger.sort_by(f64::total_cmp);
    from_created.sort_by(f64::total_cmp);
    println!(
        "jobs: {JOBS}\n\
         idle RSS: {:.1} MiB; peak RSS over the run: {:.1} MiB\n\
         trigger → launcher start: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
         job created on the server → launcher start: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        f64::from(u32::try_from(idle_rss).unwrap()) / 1024.0,
        f64::from(u32::try_from(busy_rss).unwrap()) / 1024.0,
        percentile(&from_trigger, 50.0),
        percentile(&from_trigger, 99.0),
        from_trigger[from_trigger.len() - 1],
        percentile(&from_created, 50.0),
        percentile(&from_created, 99.0),
        from_created[from_created.len() - 1],
    );
}
