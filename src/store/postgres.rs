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
    events: Arc<tokio::sync::Notify>,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("invalid PostgreSQL URL: {e}")))?
            .application_name("roster");
        // One connection first, to report why the server cannot be reached
        // (and where it was looked for) rather than a pool timeout.
        let target = format!(
            "{}:{} (database {}, user {})",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("-"),
            options.get_username()
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, <sqlx::PgConnection as sqlx::Connection>::connect_with(&options))
            .await
        {
            Err(_) => {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "cannot reach PostgreSQL at {target}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "cannot connect to PostgreSQL at {target}: {}",
                    crate::telemetry::with_causes(&e)
                )))
            }
            Ok(Ok(conn)) => {
                sqlx::Connection::close(conn).await.ok();
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Self { pool, events: Arc::default() })
    }
}

/// How long the first connection may take before the server is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Statements for Postgres {
    const INSERT_AUDIT_AND_EVENT: &'static str = "WITH audit AS (INSERT INTO audit_log (id, org_id, actor_kind, \
        actor_id, action, target, before_json, after_json, request_id, at, client_address) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)), \
        seq AS (UPDATE organizations SET event_seq = event_seq + 1 WHERE id = $2 RETURNING event_seq) \
        INSERT INTO events (org_id, seq, id, kind, subject, data, at) \
        SELECT $2, seq.event_seq, $12, $5, $6, COALESCE($8, $7), $10 FROM seq";
    // Each group by its primary key, whatever the statistics: joined, the
    // planner with statistics of empty tables hashes every group of the
    // deployment for each user. `OFFSET 0` keeps the lateral subquery from
    // being merged into a join, so it runs per membership, on the key.
    const USER_GROUPS: &'static str = "(SELECT COALESCE(json_agg(json_build_array(g.id, g.display_name) \
        ORDER BY g.display_name_lc, g.id), '[]') FROM scim_group_members gm CROSS JOIN LATERAL \
        (SELECT id, display_name, display_name_lc FROM scim_groups WHERE id = gm.group_id OFFSET 0) g \
        WHERE gm.user_id = r.id)";
    const SENDS_STATEMENTS_TOGETHER: bool = false;
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn id_among(subquery: &str) -> String {
        format!("r.id = ANY(ARRAY({subquery}))")
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::tx(self.pool.begin().await?).telling(&self.events)))
    }

    fn events_committed(&self) -> Arc<tokio::sync::Notify> {
        self.events.clone()
    }

    async fn read(&self) -> StoreResult<Box<dyn Tx>> {
        let mut tx = self.pool.begin().await?;
        // REPEATABLE READ: every statement sees the snapshot of the first, so
        // a read of several statements (a group and its member pages) is
        // one state. A read-only transaction never fails to serialize.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        Ok(Box::new(SqlTx::tx(tx)))
    }

    async fn lookup(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::autocommit(self.pool.acquire().await?)))
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

    fn connections(&self) -> Connections {
        let (size, idle) = (self.pool.size() as f64, self.pool.num_idle() as f64);
        Connections { in_use: size - idle, idle, max: self.pool.options().get_max_connections() as f64 }
    }
}
