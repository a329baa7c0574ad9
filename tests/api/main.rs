//! Integration tests over real HTTP, on SQLite by default and on PostgreSQL
//! when `DATABASE_URL` names a PostgreSQL server.

// Test code states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used)]

mod helpers;

mod bad_input;
mod browser;
mod cli;
mod dns_server;
mod domains;
mod events;
mod fuzz;
mod hardening;
mod invitations;
mod mail;
mod members;
mod notices;
mod oidc_provider;
mod openapi;
mod operator;
mod permissions;
mod portal;
mod portal_browser;
mod reconcile;
mod reconcile_property;
mod scim;
mod scim_fixtures;
mod seats;
mod setup;
mod setup_browser;
mod signin;
mod smtp_server;
mod sso;
mod topology;
mod webhook_receiver;
mod webhooks;
