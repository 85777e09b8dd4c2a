//! GitHub's JSON objects (users, organisations, repositories, installations, runners, jobs),
//! built from the world with every field GitHub's schemas require, so clients see exactly
//! what api.github.com would send.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::time::iso8601;
use super::world::{
    DEFAULT_RUNNER_GROUP_NAME, Installation, Job, JobStatus, Links, Runner, SEED_TIME, World,
};

/// The App's slug.
pub const APP_SLUG: &str = "builtiful-sandbox";

/// The permissions the sandbox App holds on each installation.
pub fn app_permissions() -> Value {
    json!({
        "actions": "read",
        "administration": "write",
        "metadata": "read",
        "organization_self_hosted_runners": "write",
    })
}

/// The events the sandbox App subscribes to.
pub const APP_EVENTS: [&str; 1] = ["workflow_job"];

/// A legacy global node id, `base64("<len>:<Type><id>")`, the form GitHub still accepts.
pub fn node_id(kind: &str, id: u64) -> String {
    STANDARD.encode(format!("{:02}:{kind}{id}", kind.len()))
}

/// A "Simple User": the account object inside owners, senders and installations.
pub fn simple_user(links: &Links, login: &str, id: u64, kind: &str) -> Value {
    let api = &links.api;
    let web = &links.web;
    json!({
        "login": login,
        "id": id,
        "node_id": node_id(kind, id),
        "avatar_url": format!("{web}/avatars/u/{id}?v=4"),
        "gravatar_id": "",
        "url": format!("{api}/users/{login}"),
        "html_url": format!("{web}/{login}"),
        "followers_url": format!("{api}/users/{login}/followers"),
        "following_url": format!("{api}/users/{login}/following{{/other_user}}"),
        "gists_url": format!("{api}/users/{login}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/users/{login}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/users/{login}/subscriptions"),
        "organizations_url": format!("{api}/users/{login}/orgs"),
        "repos_url": format!("{api}/users/{login}/repos"),
        "events_url": format!("{api}/users/{login}/events{{/privacy}}"),
        "received_events_url": format!("{api}/users/{login}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// A person as a Simple User.
pub fn person(world: &World, user: usize) -> Value {
    let user = &world.users[user];
    simple_user(&world.links, &user.login, user.id, "User")
}

/// An organisation as a Simple User (installation accounts, repository owners).
pub fn org_account(world: &World, org: usize) -> Value {
    let org = &world.orgs[org];
    simple_user(&world.links, &org.login, org.id, "Organization")
}

/// `GET /user`: the signed-in person, "Private User" form.
pub fn private_user(world: &World, user: usize) -> Value {
    let mut value = person(world, user);
    let person = &world.users[user];
    let fields = json!({
        "name": person.name,
        "company": null,
        "blog": "",
        "location": null,
        "email": person.email,
        "hireable": null,
        "bio": null,
        "twitter_username": null,
        "notification_email": person.email,
        "public_repos": 0,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "created_at": iso8601(SEED_TIME),
        "updated_at": iso8601(SEED_TIME),
        "private_gists": 0,
        "total_private_repos": 0,
        "owned_private_repos": 0,
        "disk_usage": 0,
        "collaborators": 0,
        "two_factor_authentication": true,
        "plan": {"name": "free", "space": 976_562_499, "collaborators": 0, "private_repos": 10_000},
    });
    merge(&mut value, fields);
    value
}

/// The `organization` object of webhook payloads.
pub fn organization(world: &World, org: usize) -> Value {
    let api = &world.links.api;
    let web = &world.links.web;
    let org = &world.orgs[org];
    let login = &org.login;
    json!({
        "login": login,
        "id": org.id,
        "node_id": node_id("Organization", org.id),
        "url": format!("{api}/orgs/{login}"),
        "repos_url": format!("{api}/orgs/{login}/repos"),
        "events_url": format!("{api}/orgs/{login}/events"),
        "hooks_url": format!("{api}/orgs/{login}/hooks"),
        "issues_url": format!("{api}/orgs/{login}/issues"),
        "members_url": format!("{api}/orgs/{login}/members{{/member}}"),
        "public_members_url": format!("{api}/orgs/{login}/public_members{{/member}}"),
        "avatar_url": format!("{web}/avatars/u/{}?v=4", org.id),
        "description": login,
    })
}

/// The `repository` object of webhook payloads.
pub fn repository(world: &World, repo: usize) -> Value {
    let api = &world.links.api;
    let web = &world.links.web;
    let repo = &world.repos[repo];
    let owner = &world.orgs[repo.org].login;
    let full = format!("{owner}/{}", repo.name);
    let host = url::Url::parse(web)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned());
    let r = format!("{api}/repos/{full}");
    let seeded = iso8601(SEED_TIME);
    let mut value = json!({
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": full,
        "private": true,
        "owner": org_account(world, repo.org),
        "html_url": format!("{web}/{full}"),
        "description": null,
        "fork": false,
        "url": r,
    });
    // The API links of a repository: its URL and a suffix each.
    for (key, suffix) in [
        ("forks_url", "/forks"),
        ("keys_url", "/keys{/key_id}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("teams_url", "/teams"),
        ("hooks_url", "/hooks"),
        ("issue_events_url", "/issues/events{/number}"),
        ("events_url", "/events"),
        ("assignees_url", "/assignees{/user}"),
        ("branches_url", "/branches{/branch}"),
        ("tags_url", "/tags"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("trees_url", "/git/trees{/sha}"),
        ("statuses_url", "/statuses/{sha}"),
        ("languages_url", "/languages"),
        ("stargazers_url", "/stargazers"),
        ("contributors_url", "/contributors"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("commits_url", "/commits{/sha}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("comments_url", "/comments{/number}"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("contents_url", "/contents/{+path}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("merges_url", "/merges"),
        ("archive_url", "/{archive_format}{/ref}"),
        ("downloads_url", "/downloads"),
        ("issues_url", "/issues{/number}"),
        ("pulls_url", "/pulls{/number}"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("labels_url", "/labels{/name}"),
        ("releases_url", "/releases{/id}"),
        ("deployments_url", "/deployments"),
    ] {
        value[key] = Value::String(format!("{r}{suffix}"));
    }
    let facts = json!({
        "created_at": seeded,
        "updated_at": seeded,
        "pushed_at": seeded,
        "git_url": format!("git://{host}/{full}.git"),
        "ssh_url": format!("git@{host}:{full}.git"),
        "clone_url": format!("{web}/{full}.git"),
        "svn_url": format!("{web}/{full}"),
        "homepage": null,
        "size": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": null,
        "has_issues": true,
        "has_projects": true,
        "has_downloads": true,
        "has_wiki": true,
        "has_pages": false,
        "has_discussions": false,
        "forks_count": 0,
        "mirror_url": null,
        "archived": false,
        "disabled": false,
        "open_issues_count": 0,
        "license": null,
        "allow_forking": false,
        "is_template": false,
        "web_commit_signoff_required": false,
        "topics": [],
        "custom_properties": {},
        "visibility": "private",
        "forks": 0,
        "open_issues": 0,
        "watchers": 0,
        "default_branch": "main",
    });
    merge(&mut value, facts);
    value
}

/// An installation (REST form; webhooks carry the same object).
pub fn installation(world: &World, installation: &Installation) -> Value {
    let api = &world.links.api;
    let web = &world.links.web;
    let org = &world.orgs[installation.org];
    let id = installation.id;
    json!({
        "id": id,
        "client_id": world.client_id,
        "account": org_account(world, installation.org),
        "repository_selection": "all",
        "access_tokens_url": format!("{api}/app/installations/{id}/access_tokens"),
        "repositories_url": format!("{api}/installation/repositories"),
        "html_url": format!("{web}/organizations/{}/settings/installations/{id}", org.login),
        "app_id": world.app_id,
        "app_slug": APP_SLUG,
        "target_id": org.id,
        "target_type": "Organization",
        "permissions": app_permissions(),
        "events": APP_EVENTS,
        "created_at": iso8601(SEED_TIME),
        "updated_at": iso8601(installation.suspended_at.unwrap_or(SEED_TIME)),
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": installation.suspended_by.map(|user| person(world, user)),
        "suspended_at": installation.suspended_at.map(iso8601),
    })
}

/// A self-hosted runner.
pub fn runner(runner: &Runner) -> Value {
    json!({
        "id": runner.id,
        "name": runner.name,
        "os": "linux",
        "status": if runner.online { "online" } else { "offline" },
        "busy": runner.job.is_some(),
        "ephemeral": true,
        "runner_group_id": runner.group_id,
        "labels": runner
            .labels
            .iter()
            .map(|label| json!({"id": label.id, "name": label.name, "type": "custom"}))
            .collect::<Vec<_>>(),
    })
}

/// A workflow job (REST form; the `workflow_job` of webhooks is the same object).
pub fn job(world: &World, job: &Job) -> Value {
    let api = &world.links.api;
    let web = &world.links.web;
    let repo = &world.repos[job.repo];
    let full = format!("{}/{}", world.orgs[repo.org].login, repo.name);
    let runner = job.runner.as_ref();
    // GitHub reports `started_at` = `created_at` until a runner starts the job.
    let started = job.started_at.unwrap_or(job.created_at);
    json!({
        "id": job.id,
        "run_id": job.run_id,
        "workflow_name": job.workflow_name,
        "head_branch": job.head_branch,
        "run_url": format!("{api}/repos/{full}/actions/runs/{}", job.run_id),
        "run_attempt": job.run_attempt,
        "node_id": node_id("CheckRun", job.id),
        "head_sha": job.head_sha,
        "url": format!("{api}/repos/{full}/actions/jobs/{}", job.id),
        "html_url": format!("{web}/{full}/actions/runs/{}/job/{}", job.run_id, job.id),
        "status": job.status.as_str(),
        "conclusion": job.conclusion,
        "created_at": iso8601(job.created_at),
        "started_at": iso8601(started),
        "completed_at": job.completed_at.map(iso8601),
        "name": job.name,
        "steps": steps(job),
        "check_run_url": format!("{api}/repos/{full}/check-runs/{}", job.id),
        "labels": job.labels,
        "runner_id": runner.map(|r| r.id),
        "runner_name": runner.map(|r| r.name.clone()),
        "runner_group_id": runner.map(|r| r.group_id),
        "runner_group_name": runner.map(|_| DEFAULT_RUNNER_GROUP_NAME),
    })
}

/// The steps of a job: one "Run" step between GitHub's set-up and completion steps, once a
/// runner has started it.
fn steps(job: &Job) -> Value {
    let Some(started) = job.started_at else {
        return json!([]);
    };
    let done = job.status == JobStatus::Completed;
    let end = job.completed_at.map(iso8601);
    let step = |number: u32, name: &str| {
        json!({
            "name": name,
            "status": if done { "completed" } else { "in_progress" },
            "conclusion": if done { job.conclusion.clone() } else { None },
            "number": number,
            "started_at": iso8601(started),
            "completed_at": end,
        })
    };
    json!([
        step(1, "Set up job"),
        step(2, "Run sandbox job"),
        step(3, "Complete job")
    ])
}

/// Adds `extra`'s fields to the object `value`.
fn merge(value: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (value, extra) {
        target.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_have_the_legacy_form() {
        assert_eq!(node_id("User", 1), "MDQ6VXNlcjE=");
    }
}
