//! Roster: an identity provisioning gateway. It owns a SaaS product's
//! organization model and puts an admin API, SCIM and SSO in front of it.

pub mod allocator;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domains;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod model;
pub mod roles;
pub mod scim;
pub mod secrets;
pub mod service;
pub mod sso;
pub mod store;
pub mod telemetry;
pub mod webhooks;
