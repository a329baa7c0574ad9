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

    async fn optimize(&self) -> StoreResult<()> {
        // 0x10002: analyze every table whose statistics are missing or far
        // off (not only those this connection queried), each within the limit.
        let mut conn = self.writer.acquire().await?;
        sqlx::query("PRAGMA analysis_limit = 1000").execute(&mut *conn).await?;
        sqlx::query("PRAGMA optimize = 0x10002").execute(&mut *conn).await?;
        Ok(())
    }

    fn dialect(&self) -> crate::scim::filter::Dialect {
        crate::scim::filter::Dialect::Sqlite
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scim::filter;
    use crate::scim::schema::ResourceKind;

    /// Once statistics exist, an `emails.value` filter is answered from the
    /// `(org_id, value_lc)` index, not by probing every user of the organization.
    #[tokio::test]
    async fn email_filters_are_driven_by_the_email_index_once_analyzed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("plan.db").display());
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let seed = [
            "INSERT INTO organizations (id, name, plan, purchased_seats, seat_policy, created_at, updated_at) \
             VALUES ('o', 'o', 'enterprise_seat_yearly', 1, 'strict', '2026-01-01', '2026-01-01')",
            "INSERT INTO users (id, email, email_normalized, created_at) VALUES ('u', 'u@x.com', 'u@x.com', '2026-01-01')",
            "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at) \
             VALUES ('m', 'o', 'u', 'read', 'active', 'scim', '2026-01-01', '2026-01-01')",
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) \
             INSERT INTO scim_users (id, org_id, member_id, user_name, user_name_lc, active, resource, version, \
             created_at, updated_at) SELECT 'u' || i, 'o', 'm', 'n' || i, 'n' || i, TRUE, '{}', 1, '2026-01-01', \
             '2026-01-01' FROM c",
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) \
             INSERT INTO scim_user_emails (user_id, org_id, value_lc) SELECT 'u' || i, 'o', 'e' || i || '@x.com' FROM c",
        ];
        let mut conn = store.writer.acquire().await.unwrap();
        // One member row stands behind every user of this fixture.
        sqlx::query("DROP INDEX scim_users_member").execute(&mut *conn).await.unwrap();
        for sql in seed {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
        drop(conn);
        store.optimize().await.unwrap();
        let parsed = filter::parse(r#"emails.value eq "e42@x.com""#).unwrap();
        let frag = filter::to_sql(&parsed, ResourceKind::User, filter::Dialect::Sqlite, 2).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN SELECT r.id FROM scim_users r WHERE r.org_id = $1 AND {}", frag.sql);
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&sql).bind("o").bind("e42@x.com").fetch_all(&store.reader).await.unwrap();
        let steps: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
        assert!(steps.iter().any(|s| s.contains("scim_user_emails_value")), "{steps:?}");
        assert!(!steps.iter().any(|s| s.contains("scim_users_active")), "the users were scanned: {steps:?}");
    }
}
