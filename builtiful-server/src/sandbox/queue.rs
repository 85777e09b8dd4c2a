//! `sandbox queue` and `sandbox cancel`: a person pushing commits, as far as the simulated
//! GitHub's Actions are concerned.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::command::{CancelArgs, QueueArgs, simulator_url};

/// Queues the jobs and prints their ids on stdout.
pub async fn queue(args: &QueueArgs) -> anyhow::Result<()> {
    let url = format!("{}/_sandbox/jobs", simulator_url(&args.server));
    let body = json!({
        "repository": args.repo,
        "labels": args.label,
        "count": args.count,
        "duration_secs": args.duration,
        "conclusion": args.conclusion,
    });
    let response = post(&url, &body).await?;
    let jobs = response["jobs"]
        .as_array()
        .context("the simulator answered without `jobs`")?;
    for job in jobs {
        println!("{}", job["id"]);
    }
    eprintln!(
        "queued {} job(s) in {} with labels {}",
        jobs.len(),
        args.repo,
        args.label.join(", ")
    );
    Ok(())
}

/// Cancels a job.
pub async fn cancel(args: &CancelArgs) -> anyhow::Result<()> {
    let url = format!(
        "{}/_sandbox/jobs/{}/cancel",
        simulator_url(&args.server),
        args.job_id
    );
    post(&url, &json!({})).await?;
    eprintln!("cancelled job {}", args.job_id);
    Ok(())
}

/// POSTs `body` to a control endpoint; a refusal becomes an error with the simulator's
/// message.
async fn post(url: &str, body: &Value) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the simulated GitHub at {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = value["message"].as_str().unwrap_or(text.as_str());
        bail!("the simulated GitHub refused ({status}): {message}");
    }
    Ok(value)
}
