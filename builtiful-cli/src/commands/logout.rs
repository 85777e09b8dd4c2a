//! `builtiful logout`: ends the session on the server, then forgets the token here.

use std::io::Write as _;

use anyhow::Context as _;

use crate::Context;
use crate::token_store::TokenSource;

/// Logs out of the current server.
pub async fn run(ctx: &mut Context) -> anyhow::Result<()> {
    let server = ctx.server_name();
    let Some((token, source)) = ctx.token()? else {
        anyhow::bail!("You are not logged in to {server}");
    };
    if source == TokenSource::Env {
        anyhow::bail!(
            "The token comes from BUILTIFUL_TOKEN, which builtiful cannot forget; unset it instead"
        );
    }
    match ctx.client()?.with_token(token).logout().await {
        Ok(_) => {}
        // Already over on the server (expired or logged out elsewhere): only forget it here.
        Err(error) if error.is_unauthorized() => {}
        Err(error) => {
            return Err(error).context(
                "the session could not be ended on the server, so the token was kept; try again",
            );
        }
    }
    ctx.tokens
        .delete(ctx.server.as_str(), &mut ctx.io.stderr)
        .context("the session ended on the server, but the token could not be removed here")?;
    writeln!(ctx.io.stderr, "Logged out of {server}")?;
    Ok(())
}
