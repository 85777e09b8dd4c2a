//! `builtiful jobs`: a tenant's jobs, newest first, a page at a time.
//!
//! Pages follow the API's rule: ask for one job more than the page shows, and the extra one
//! says whether another page exists. On a terminal the page is a table and, when there are
//! more pages, `n`/`p`/`q` move through them in place.

use std::io::Write as _;

use builtiful_core::{Client, Job, JobStatus, PageRequest, Timestamp};
use uuid::Uuid;

use super::{TenantRef, resolve_tenant};
use crate::Context;
use crate::cli::JobsArgs;
use crate::error::Exit;
use crate::format::{self, cell, render, table};
use crate::io::Key;

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The newest jobs.
    Newest,
    /// The jobs older than this one.
    After(Uuid),
    /// The jobs newer than this one.
    Before(Uuid),
}

/// One page of jobs, and whether there are pages on either side of it.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs shown, newest first.
    pub jobs: Vec<Job>,
    /// How many jobs the tenant has in all.
    pub total: u64,
    /// Whether older jobs exist (a next page).
    pub has_older: bool,
    /// Whether newer jobs exist (a previous page).
    pub has_newer: bool,
}

/// Fetches the page of `limit` jobs at `start`, asking for `limit + 1` to learn whether more
/// exist. The API caps `limit` at 100, so a page of 100 asks for one more job separately.
pub async fn fetch(
    client: &Client,
    tenant: Uuid,
    limit: u32,
    start: Start,
) -> Result<JobPage, builtiful_core::client::Error> {
    let want = usize::try_from(limit).unwrap_or(usize::MAX);
    let ask = (limit + 1).min(PageRequest::MAX_LIMIT);
    let request = |cursor: Start, limit: u32| PageRequest {
        limit: Some(limit.into()),
        starting_after: match cursor {
            Start::After(id) => Some(id),
            _ => None,
        },
        ending_before: match cursor {
            Start::Before(id) => Some(id),
            _ => None,
        },
    };
    let list = client.jobs(tenant, &request(start, ask)).await?;
    let total = list.total_count;
    let mut jobs = list.jobs;
    let mut more = jobs.len() > want;
    match start {
        Start::Newest | Start::After(_) => {
            jobs.truncate(want);
            if !more
                && jobs.len() == want
                && ask == limit
                && let Some(last) = jobs.last()
            {
                more = !client
                    .jobs(tenant, &request(Start::After(last.id), 1))
                    .await?
                    .jobs
                    .is_empty();
            }
            Ok(JobPage {
                jobs,
                total,
                has_older: more,
                has_newer: start != Start::Newest,
            })
        }
        Start::Before(_) => {
            // The jobs just newer than the cursor, newest first: the extra one is the first.
            if more {
                jobs.drain(..jobs.len() - want);
            } else if jobs.len() == want
                && ask == limit
                && let Some(first) = jobs.first()
            {
                more = !client
                    .jobs(tenant, &request(Start::Before(first.id), 1))
                    .await?
                    .jobs
                    .is_empty();
            }
            Ok(JobPage {
                jobs,
                total,
                has_older: true,
                has_newer: more,
            })
        }
    }
}

/// Lists the jobs: JSON, tab-separated lines, a table, or the interactive pager.
pub async fn run(ctx: &mut Context, args: &JobsArgs) -> anyhow::Result<()> {
    let session = ctx.session()?;
    let client = session.client;
    let tenant = resolve_tenant(&client, args.tenant.as_deref()).await?;
    let start = match (args.after, args.before) {
        (Some(id), _) => Start::After(id),
        (None, Some(id)) => Start::Before(id),
        (None, None) => Start::Newest,
    };
    let page = fetch(&client, tenant.id, args.limit, start).await?;
    let io = &mut ctx.io;

    if args.json {
        serde_json::to_writer_pretty(&mut io.stdout, &page.jobs)?;
        writeln!(io.stdout)?;
        return Ok(());
    }
    if page.jobs.is_empty() {
        let what = match start {
            Start::Newest => "no jobs yet",
            Start::After(_) => "no jobs older than that one",
            Start::Before(_) => "no jobs newer than that one",
        };
        writeln!(io.stderr, "{} has {what}", tenant.name)?;
        return Ok(());
    }
    if !io.stdout_tty {
        for job in &page.jobs {
            writeln!(io.stdout, "{}", tsv_line(job))?;
        }
        if io.stderr_tty {
            more_hint(ctx, &tenant, &page)?;
        }
        return Ok(());
    }
    if io.keys.is_none() || !(page.has_older || page.has_newer) {
        let block = page_block(ctx, &tenant, &page, None);
        ctx.io.stdout.write_all(block.as_bytes())?;
        return more_hint(ctx, &tenant, &page);
    }
    let offset = (start == Start::Newest).then_some(0);
    pager(ctx, &client, &tenant, args.limit, page, offset).await
}

/// Prints, on a terminal, the command that shows the next page.
fn more_hint(ctx: &mut Context, tenant: &TenantRef, page: &JobPage) -> anyhow::Result<()> {
    if let (true, Some(last)) = (page.has_older, page.jobs.last()) {
        writeln!(
            ctx.io.stderr,
            "More jobs: builtiful jobs --tenant {} --after {}",
            tenant.name, last.id
        )?;
    }
    Ok(())
}

/// Shows pages in place until `q`: `n` the older page, `p` the newer one.
async fn pager(
    ctx: &mut Context,
    client: &Client,
    tenant: &TenantRef,
    limit: u32,
    mut page: JobPage,
    mut offset: Option<u64>,
) -> anyhow::Result<()> {
    use crossterm::{cursor, queue, terminal};
    loop {
        let block = page_block(ctx, tenant, &page, offset);
        ctx.io.stdout.write_all(block.as_bytes())?;
        ctx.io.stdout.flush()?;
        let mut choices = Vec::new();
        if page.has_older {
            choices.push("n next");
        }
        if page.has_newer {
            choices.push("p previous");
        }
        choices.push("q quit");
        let prompt = choices.join(" · ");
        if ctx.io.color {
            write!(ctx.io.stderr, "\x1b[2m{prompt}\x1b[0m")?;
        } else {
            write!(ctx.io.stderr, "{prompt}")?;
        }
        ctx.io.stderr.flush()?;

        let next = loop {
            let key = ctx
                .io
                .keys
                .as_mut()
                .map_or(Ok(Key::Quit), |keys| keys.read_key())?;
            match key {
                Key::Next if page.has_older => break Some(Key::Next),
                Key::Previous if page.has_newer => break Some(Key::Previous),
                Key::Quit => break None,
                Key::Interrupt => {
                    queue!(
                        ctx.io.stderr,
                        cursor::MoveToColumn(0),
                        terminal::Clear(terminal::ClearType::CurrentLine)
                    )?;
                    ctx.io.stderr.flush()?;
                    return Err(Exit::Cancelled("cancelled".into()).into());
                }
                _ => {}
            }
        };
        // Rub out the prompt; when moving, the page too, to draw the next one in its place.
        queue!(
            ctx.io.stderr,
            cursor::MoveToColumn(0),
            terminal::Clear(terminal::ClearType::CurrentLine)
        )?;
        let Some(direction) = next else {
            ctx.io.stderr.flush()?;
            return Ok(());
        };
        let lines = u16::try_from(block.lines().count()).unwrap_or(u16::MAX);
        queue!(
            ctx.io.stderr,
            cursor::MoveUp(lines),
            terminal::Clear(terminal::ClearType::FromCursorDown)
        )?;
        ctx.io.stderr.flush()?;
        let shown = page.jobs.len() as u64;
        page = if direction == Key::Next {
            let last = page.jobs.last().map(|j| j.id).unwrap_or_default();
            let older = fetch(client, tenant.id, limit, Start::After(last)).await?;
            offset = offset.map(|o| o + shown);
            older
        } else {
            let first = page.jobs.first().map(|j| j.id).unwrap_or_default();
            let newer = fetch(client, tenant.id, limit, Start::Before(first)).await?;
            if newer.jobs.len() as u64 == u64::from(limit) {
                offset = if newer.has_newer {
                    offset.map(|o| o.saturating_sub(newer.jobs.len() as u64))
                } else {
                    Some(0)
                };
                newer
            } else {
                // Back at the top, maybe with fewer jobs than a page: show a full first page.
                offset = Some(0);
                fetch(client, tenant.id, limit, Start::Newest).await?
            }
        };
    }
}

/// The header line and the table of a page, as shown on a terminal.
fn page_block(ctx: &Context, tenant: &TenantRef, page: &JobPage, offset: Option<u64>) -> String {
    let io = &ctx.io;
    let count = page.jobs.len() as u64;
    let position = match offset {
        Some(o) => format!("{}–{} of {}", o + 1, o + count, page.total),
        None => format!("{count} of {}", page.total),
    };
    let mut text = format!("Jobs of {} · {position}\n", tenant.name);
    let now = Timestamp::now();
    let mut t = table(
        &[
            "ID",
            "REPOSITORY",
            "LABEL",
            "STATUS",
            "REASON",
            "QUEUED",
            "STARTED",
            "DURATION",
        ],
        io.width,
        io.color,
    );
    for job in &page.jobs {
        let duration = match (job.duration, job.started_at) {
            (Some(secs), _) => format::duration(secs),
            (None, Some(started)) if job.status == JobStatus::Running => {
                format::duration(now.whole_secs_since(started))
            }
            _ => "-".to_owned(),
        };
        t.add_row(vec![
            cell(format::short_id(job.id), None, io.color),
            cell(&job.repository, None, io.color),
            cell(&job.label, None, io.color),
            cell(
                job.status.as_str(),
                Some(format::status_color(job.status)),
                io.color,
            ),
            cell(
                job.failure_reason.map_or("-", |r| r.as_str()),
                job.failure_reason.map(|_| comfy_table::Color::Red),
                io.color,
            ),
            cell(format::ago(job.created_at, now), None, io.color),
            cell(
                job.started_at
                    .map_or_else(|| "-".to_owned(), |t| format::ago(t, now)),
                None,
                io.color,
            ),
            cell(duration, None, io.color),
        ]);
    }
    text.push_str(&render(t));
    text
}

/// A job as one tab-separated line: id, repository, label, status, failure reason, queued at,
/// started at (RFC 3339), duration in seconds; empty fields for what is unknown.
pub fn tsv_line(job: &Job) -> String {
    [
        job.id.to_string(),
        job.repository.clone(),
        job.label.clone(),
        job.status.to_string(),
        job.failure_reason
            .map(|r| r.to_string())
            .unwrap_or_default(),
        format::rfc3339(job.created_at),
        job.started_at.map(format::rfc3339).unwrap_or_default(),
        job.duration.map(|d| d.to_string()).unwrap_or_default(),
    ]
    .join("\t")
}
