//! PostgreSQL, for several stateless `roster` replicas sharing one database.
//!
//! Transactions run at READ COMMITTED; per-organization changes serialize on
//! the organization row's lock ([`Tx::lock_org`]), so a statement after the
//! lock sees everything the previous holder committed.

use super::sql::{impl_tx, SqlTx, *};
use super::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;

impl_tx!(Postgres);

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("invalid PostgreSQL URL: {e}")))?
            .application_name("roster");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(SqlTx(self.pool.begin().await?)))
    }

    async fn read(&self) -> StoreResult<Box<dyn Tx>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *tx).await?;
        Ok(Box::new(SqlTx(tx)))
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await.map_err(|e| StoreError::Other(e.into()))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn dialect(&self) -> crate::scim::filter::Dialect {
        crate::scim::filter::Dialect::Postgres
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
