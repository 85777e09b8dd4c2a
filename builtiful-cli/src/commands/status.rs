//! `builtiful status`: who is logged in, to which server, and where the token lives.

use std::io::Write as _;

use crate::Context;
use crate::error::Exit;

/// Shows the login; exit 4 when there is none or the server refuses the token.
pub async fn run(ctx: &mut Context) -> anyhow::Result<()> {
    let server = ctx.server_name();
    let session = ctx.session()?;
    let user = match session.client.me().await {
        Ok(user) => user,
        Err(error) if error.is_unauthorized() => {
            return Err(Exit::AuthRequired(format!(
                "The token in {} is no longer valid for {server} (it expired or was logged out); run `builtiful login`",
                session.source
            ))
            .into());
        }
        Err(error) => return Err(error.into()),
    };
    let name = user
        .github_name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let out = &mut ctx.io.stdout;
    writeln!(out, "Server  {server}")?;
    writeln!(out, "User    {}{name}", user.github_login)?;
    writeln!(out, "Token   {}", session.source)?;
    Ok(())
}
