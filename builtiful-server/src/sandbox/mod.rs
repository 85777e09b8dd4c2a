//! The sandbox: a simulated GitHub so the whole system runs on one machine without
//! credentials. This module seeds the organisations, users and provisioner token that
//! DESIGN.md promises; [`github`] is the simulated GitHub itself.

pub mod command;
pub mod github;
mod queue;
mod runner;

use builtiful_core::{Tenant, Timestamp, User};

use crate::auth::{PROVISIONER_PREFIX, Token};
use crate::store::{Installation, Result, Store, UserProfile};

/// Where the simulated GitHub is mounted on a sandbox server.
pub const MOUNT_PATH: &str = "/sandbox/github";

/// The name of the provisioner token the sandbox creates at every start.
pub const PROVISIONER_TOKEN_NAME: &str = "sandbox";

/// An organisation of the simulated GitHub, with its repositories.
#[derive(Debug, Clone, Copy)]
pub struct SeedOrg {
    /// Its login.
    pub login: &'static str,
    /// Its account id.
    pub github_id: i64,
    /// The App installation's id.
    pub installation_id: i64,
    /// Its repositories.
    pub repositories: &'static [&'static str],
}

/// A person of the simulated GitHub.
#[derive(Debug, Clone, Copy)]
pub struct SeedUser {
    /// Their login.
    pub login: &'static str,
    /// Their id.
    pub github_id: i64,
    /// Their display name.
    pub name: &'static str,
    /// Their primary email.
    pub email: &'static str,
    /// The organisations they reach.
    pub orgs: &'static [&'static str],
}

/// The seeded organisations.
pub const ORGS: [SeedOrg; 2] = [
    SeedOrg {
        login: "octo-org",
        github_id: 6_811_672,
        installation_id: 4_410_001,
        repositories: &["app", "api"],
    },
    SeedOrg {
        login: "mona-org",
        github_id: 9_919_001,
        installation_id: 4_410_002,
        repositories: &["site"],
    },
];

/// The seeded users.
pub const USERS: [SeedUser; 2] = [
    SeedUser {
        login: "octocat",
        github_id: 583_231,
        name: "The Octocat",
        email: "octocat@github.example",
        orgs: &["octo-org"],
    },
    SeedUser {
        login: "monalisa",
        github_id: 2_918_581,
        name: "Mona Lisa Octocat",
        email: "monalisa@github.example",
        orgs: &["mona-org"],
    },
];

/// What seeding made.
#[derive(Debug)]
pub struct Seeded {
    /// The tenants, one per organisation.
    pub tenants: Vec<Tenant>,
    /// The users.
    pub users: Vec<User>,
    /// A new provisioner token (the previous sandbox token is revoked).
    pub provisioner_token: Token,
}

/// Creates (or refreshes) the sandbox's tenants, users and memberships, and a fresh
/// provisioner token.
pub async fn seed(store: &dyn Store, now: Timestamp) -> Result<Seeded> {
    let mut tenants = Vec::new();
    for org in ORGS {
        let installation = Installation {
            github_installation_id: org.installation_id,
            github_id: org.github_id,
            github_login: org.login.to_owned(),
            suspended: false,
        };
        tenants.push(store.upsert_tenant(&installation, now).await?);
    }
    let mut users = Vec::new();
    for seed in USERS {
        let profile = UserProfile {
            github_id: seed.github_id,
            github_login: seed.login.to_owned(),
            github_name: Some(seed.name.to_owned()),
            email: Some(seed.email.to_owned()),
        };
        let user = store.upsert_user(&profile, now).await?;
        let memberships: Vec<_> = tenants
            .iter()
            .filter(|t| seed.orgs.contains(&t.github_login.as_str()))
            .map(|t| t.id)
            .collect();
        store.set_memberships(user.id, &memberships).await?;
        users.push(user);
    }
    store
        .revoke_provisioner_token(PROVISIONER_TOKEN_NAME)
        .await?;
    let provisioner_token = Token::generate(PROVISIONER_PREFIX);
    store
        .create_provisioner_token(PROVISIONER_TOKEN_NAME, provisioner_token.hash(), now)
        .await?;
    Ok(Seeded {
        tenants,
        users,
        provisioner_token,
    })
}
