//! `builtiful tenants`: the tenants the person can reach.

use std::io::Write as _;

use comfy_table::Color;

use crate::Context;
use crate::cli::TenantsArgs;
use crate::format::{cell, render, table};

/// Lists the tenants: a table, tab-separated lines, or JSON.
pub async fn run(ctx: &mut Context, args: &TenantsArgs) -> anyhow::Result<()> {
    let session = ctx.session()?;
    let tenants = session.client.tenants().await?.tenants;
    let io = &mut ctx.io;
    if args.json {
        serde_json::to_writer_pretty(&mut io.stdout, &tenants)?;
        writeln!(io.stdout)?;
        return Ok(());
    }
    if tenants.is_empty() {
        writeln!(
            io.stderr,
            "You can reach no tenants yet: install the Builtiful GitHub App on an organisation or account"
        )?;
        return Ok(());
    }
    if !io.stdout_tty {
        for t in &tenants {
            let state = if t.github_installation_suspended {
                "suspended"
            } else {
                "active"
            };
            writeln!(
                io.stdout,
                "{}\t{}\t{}\t{state}",
                t.github_login,
                t.id,
                t.email.as_deref().unwrap_or("")
            )?;
        }
        return Ok(());
    }
    let mut t = table(&["TENANT", "ID", "EMAIL", "APP"], io.width, io.color);
    for tenant in &tenants {
        let (state, color) = if tenant.github_installation_suspended {
            ("suspended", Color::Red)
        } else {
            ("installed", Color::Green)
        };
        t.add_row(vec![
            cell(&tenant.github_login, None, io.color),
            cell(tenant.id.to_string(), None, io.color),
            cell(tenant.email.as_deref().unwrap_or("-"), None, io.color),
            cell(state, Some(color), io.color),
        ]);
    }
    io.stdout.write_all(render(t).as_bytes())?;
    Ok(())
}
