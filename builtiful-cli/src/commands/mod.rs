//! One module per command.

pub mod completions;
pub mod jobs;
pub mod login;
pub mod logout;
pub mod status;
pub mod tenant_email;
pub mod tenants;

use builtiful_core::{Client, Tenant};
use uuid::Uuid;

/// Which tenant a command is about.
///
/// An id is taken as it is (the server answers 404 for a tenant the person cannot see); a login
/// is looked up among the person's tenants; with neither, the only tenant is used, and several
/// are an error that lists them.
pub async fn resolve_tenant(client: &Client, wanted: Option<&str>) -> anyhow::Result<TenantRef> {
    if let Some(id) = wanted.and_then(|w| Uuid::parse_str(w.trim()).ok()) {
        return Ok(TenantRef {
            id,
            name: id.to_string(),
        });
    }
    let tenants = client.tenants().await?.tenants;
    let logins = |tenants: &[Tenant]| {
        tenants
            .iter()
            .map(|t| t.github_login.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match wanted {
        Some(login) => tenants
            .iter()
            .find(|t| t.github_login.eq_ignore_ascii_case(login.trim()))
            .ok_or_else(|| {
                if tenants.is_empty() {
                    anyhow::anyhow!("No tenant `{login}`: you can reach no tenants")
                } else {
                    anyhow::anyhow!(
                        "No tenant `{login}` among yours; pick one with --tenant: {}",
                        logins(&tenants)
                    )
                }
            })?,
        None => match tenants.as_slice() {
            [only] => only,
            [] => anyhow::bail!(
                "You can reach no tenants yet: install the Builtiful GitHub App on an organisation or account"
            ),
            several => anyhow::bail!(
                "You can reach {} tenants; pick one with --tenant: {}",
                several.len(),
                logins(several)
            ),
        },
    };
    Ok(TenantRef {
        id: chosen.id,
        name: chosen.github_login.clone(),
    })
}

/// A tenant picked for a command: its id, and the name to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRef {
    /// The tenant's id.
    pub id: Uuid,
    /// Its GitHub login, or the id when it was given as one.
    pub name: String,
}
