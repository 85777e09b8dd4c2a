//! `builtiful tenant email set ADDRESS`: asks to change a tenant's address.

use std::io::Write as _;

use crate::Context;
use crate::cli::EmailSetArgs;

/// Mails a confirmation link to the new address; the change happens when it is followed.
pub async fn set(ctx: &mut Context, args: &EmailSetArgs) -> anyhow::Result<()> {
    let session = ctx.session()?;
    let tenant = super::resolve_tenant(&session.client, args.tenant.as_deref()).await?;
    let change = session
        .client
        .request_email_change(tenant.id, &args.address)
        .await?;
    writeln!(
        ctx.io.stderr,
        "A confirmation link was mailed to {}; the address of {} changes when it is followed (within 24 hours).",
        change.email, tenant.name
    )?;
    Ok(())
}
