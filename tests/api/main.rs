//! Integration tests over real HTTP, on SQLite by default and on PostgreSQL
//! when `DATABASE_URL` names a PostgreSQL server.

mod helpers;

mod cli;
mod invitations;
mod members;
mod seats;
