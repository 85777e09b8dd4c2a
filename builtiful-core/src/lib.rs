//! The Builtiful domain, its wire format, and a typed client for its REST API.
//!
//! Builtiful runs GitHub Actions jobs on ephemeral, right-sized runners on bare-metal hosts.
//! This crate is what the server, the CLI, the provisioner and any other Rust program share:
//!
//! - the resources ([`User`], [`Tenant`], [`Job`], [`NewJob`]) and the bodies around them
//!   ([`api`]), serialising exactly as the API's reference shows;
//! - the enumerations ([`JobStatus`], [`FailureReason`], …) and [`Timestamp`];
//! - the [`label`] grammar `builtiful(<os>[,<n>cpu][,<arch>])`;
//! - the [`page`] rules of cursor pagination;
//! - [`Client`], an async HTTP client for every endpoint (feature `client`, on by default).
//!
//! The crate carries no web framework and no database driver. With `default-features = false`
//! it carries no HTTP stack either, for programs that only need the types.
//!
//! # Example: list a tenant's jobs
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn example() -> Result<(), builtiful_core::client::Error> {
//! use builtiful_core::{Client, PageRequest};
//!
//! let client = Client::builder("http://127.0.0.1:8080")
//!     .token(std::env::var("BUILTIFUL_TOKEN").unwrap_or_default())
//!     .build()?;
//! let tenants = client.tenants().await?;
//! let tenant = &tenants.tenants[0];
//! let page = client.jobs(tenant.id, &PageRequest::first(20)).await?;
//! println!("{} has {} jobs", tenant.github_login, page.total_count);
//! for job in &page.jobs {
//!     println!("{} {} {} {}", job.id, job.repository, job.label, job.status);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod api;
#[cfg(feature = "client")]
pub mod client;
mod enums;
pub mod label;
mod model;
pub mod page;
mod time;

pub use api::{
    Claim, ClaimError, ClaimRequest, ClaimResponse, EmailChange, HealthResponse, HeartbeatResponse,
    JobList, Message, RunnerEvent, TenantList, TenantRef, TokenRequest, TokenResponse,
    UserResponse,
};
#[cfg(feature = "client")]
pub use client::Client;
pub use enums::{CpuArchitecture, FailureReason, JobStatus, Os, RunnerEventKind, UnknownVariant};
pub use label::{JobSpec, LabelError};
pub use model::{Job, NewJob, Tenant, User};
pub use page::{Cursor, Page, PageError, PageRequest};
pub use time::Timestamp;
