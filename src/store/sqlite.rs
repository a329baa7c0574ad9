//! SQLite, the embedded default: one file, WAL journal, foreign keys on.
//!
//! SQLite allows one writer at a time. Rather than let concurrent write
//! transactions collide (`SQLITE_BUSY` when a reader upgrades to a writer),
//! writes go through a pool of exactly one connection, so they queue in
//! Roster, and reads use a separate pool of read-only connections, which WAL
//! lets run beside the writer.

use super::sql::{impl_tx, SqlTx, *};
use super::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

impl_tx!(Sqlite);

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("invalid SQLite URL: {e}")))?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal))
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(options.read_only(true));
        Ok(Self { writer, reader })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(SqlTx(self.writer.begin().await?)))
    }

    async fn read(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(SqlTx(self.reader.begin().await?)))
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite").run(&self.writer).await.map_err(|e| StoreError::Other(e.into()))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn dialect(&self) -> crate::scim::filter::Dialect {
        crate::scim::filter::Dialect::Sqlite
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
