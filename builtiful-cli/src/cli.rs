//! The command line's grammar: commands, flags and their environment variables.

use clap::{Args, Parser, Subcommand};

/// Run GitHub Actions jobs on right-sized, ephemeral runners.
///
/// Log in with `builtiful login`, then list your tenants and their jobs.
#[derive(Debug, Parser)]
#[command(name = "builtiful", version, propagate_version = true)]
pub struct Cli {
    /// The Builtiful server [default: `server` in the config file, else http://127.0.0.1:8080]
    #[arg(long, global = true, env = "BUILTIFUL_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in with GitHub, in the browser
    Login(LoginArgs),
    /// End the session on the server and forget its token here
    Logout,
    /// Show who is logged in, to which server, and where the token is kept
    Status,
    /// List the tenants (GitHub organisations and accounts) you can reach
    Tenants(TenantsArgs),
    /// List a tenant's jobs, newest first
    Jobs(JobsArgs),
    /// Manage a tenant
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
}

/// `builtiful login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read a session token from standard input instead of opening a browser
    #[arg(long, conflicts_with = "no_browser")]
    pub with_token: bool,
    /// Print the login URL instead of opening a browser, then read the code the page shows
    /// (for SSH sessions and machines without a browser)
    #[arg(long)]
    pub no_browser: bool,
}

/// `builtiful tenants`.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    /// Print the tenants as the API's JSON objects
    #[arg(long)]
    pub json: bool,
}

/// `builtiful jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The tenant, by GitHub login or id [default: your only tenant]
    #[arg(long, short, value_name = "LOGIN|ID")]
    pub tenant: Option<String>,
    /// How many jobs a page shows (1 to 100)
    #[arg(long, short = 'L', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Start with the jobs older than this job id (the full id, as --json shows it)
    #[arg(long, value_name = "JOB_ID", conflicts_with = "before")]
    pub after: Option<uuid::Uuid>,
    /// Start with the jobs newer than this job id
    #[arg(long, value_name = "JOB_ID")]
    pub before: Option<uuid::Uuid>,
    /// Print one page as the API's JSON objects
    #[arg(long)]
    pub json: bool,
}

/// `builtiful tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// The tenant's billing and notification address
    #[command(subcommand)]
    Email(EmailCommand),
}

/// `builtiful tenant email …`.
#[derive(Debug, Subcommand)]
pub enum EmailCommand {
    /// Ask to change the address: a confirmation link is mailed to it
    Set(EmailSetArgs),
}

/// `builtiful tenant email set`.
#[derive(Debug, Args)]
pub struct EmailSetArgs {
    /// The new address
    pub address: String,
    /// The tenant, by GitHub login or id [default: your only tenant]
    #[arg(long, short, value_name = "LOGIN|ID")]
    pub tenant: Option<String>,
}

/// `builtiful completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn limit_is_bounded_and_cursors_exclude_each_other() {
        assert!(Cli::try_parse_from(["builtiful", "jobs", "--limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["builtiful", "jobs", "--limit", "101"]).is_err());
        let id = uuid::Uuid::now_v7().to_string();
        assert!(
            Cli::try_parse_from(["builtiful", "jobs", "--after", &id, "--before", &id]).is_err()
        );
        assert!(Cli::try_parse_from(["builtiful", "jobs", "--after", "abc"]).is_err());
        let cli = Cli::try_parse_from(["builtiful", "jobs", "-t", "octo-org"]).unwrap();
        let Command::Jobs(jobs) = cli.command else {
            panic!("not jobs")
        };
        assert_eq!(jobs.limit, 20);
        assert_eq!(jobs.tenant.as_deref(), Some("octo-org"));
    }
}
