//! The Builtiful server: the REST API that the CLI, the web frontend and the provisioners
//! talk to, its storage, sessions and mail.
//!
//! `serve(listener, app, shutdown)` runs it; tests bind `127.0.0.1:0` and call it in-process.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod github;
pub mod mail;
pub mod metrics;
pub mod routes;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod verification;
pub mod webhooks;

pub use app::{App, AppState, Settings};
pub use server::{router, serve};
