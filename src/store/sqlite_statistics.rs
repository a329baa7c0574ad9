//! SQLite's planner statistics: seeded, then refreshed only as tables grow.
//!
//! SQLite plans each statement from `sqlite_stat1`, which `ANALYZE` fills
//! with what the tables hold at that moment. Gathered on a fresh database —
//! one organization, its Owner, a few keys — they tell the planner every
//! table has a row or two, and it then reads whole tables where an index
//! would do: a customer's first provisioning run got slower with every user
//! it created (about 30 creates/s instead of 1,500). Without statistics SQLite
//! assumes large tables, which suits Roster's look-ups, except where it must
//! choose between two indexes of the same table (an `emails.value` filter).
//!
//! So statistics are never taken from small tables. [`SEED`] describes a
//! large deployment (a hundred thousand members in organizations of ten
//! thousand, a million audit records); it is written for every table whose
//! statistics are missing or describe fewer rows than the seed, at migration
//! and at each refresh. A table is analyzed only once it holds twice the rows its
//! statistics describe, so real statistics replace the seed only when they
//! come from a table larger than it. Every plan on a small database is then
//! the plan of a large one, which is cheap on small tables too.
//!
//! Each connection loads the statistics when it opens, and the writer again
//! after each change: readers opened before a refresh keep planning with the
//! statistics they loaded (the seed, or larger) until the pool replaces them.

use sqlx::SqliteConnection;
use std::collections::BTreeMap;

/// Statistics of a large deployment, as `sqlite_stat1` rows: table, index
/// (`None` for the table's own row count) and `stat` (the rows, then the
/// average rows per distinct value of each leading column prefix). A test
/// checks that every index of the schema has a row here.
pub(super) const SEED: &[(&str, Option<&str>, &str)] = &[
    ("organizations", None, "1000"),
    ("organizations", Some("sqlite_autoindex_organizations_1"), "1000 1"),
    ("organizations", Some("organizations_sso_tenant_id"), "1000 1"),
    ("users", None, "100000"),
    ("users", Some("sqlite_autoindex_users_1"), "100000 1"),
    ("users", Some("users_email_normalized"), "100000 1"),
    ("members", None, "100000"),
    ("members", Some("sqlite_autoindex_members_1"), "100000 1"),
    ("members", Some("members_org_user"), "100000 10000 1"),
    ("members", Some("members_org_status"), "100000 10000 5000"),
    ("members", Some("members_org_id"), "100000 10000 1"),
    ("members", Some("members_user"), "100000 1"),
    ("invitations", None, "10000"),
    ("invitations", Some("sqlite_autoindex_invitations_1"), "10000 1"),
    ("invitations", Some("invitations_token_hash"), "10000 1"),
    ("invitations", Some("invitations_one_pending"), "1000 100 1"),
    ("invitations", Some("invitations_org_status"), "10000 1000 300 1"),
    ("invitations", Some("invitations_org_id"), "10000 1000 1"),
    ("invitations", Some("invitations_pending_email"), "1000 1"),
    ("domains", None, "2000"),
    ("domains", Some("sqlite_autoindex_domains_1"), "2000 1"),
    ("domains", Some("domains_org_name"), "2000 2 1"),
    ("domains", Some("domains_one_verified"), "1000 1"),
    ("domains", Some("domains_due"), "2000 1"),
    ("domains", Some("domains_name"), "2000 1 1"),
    ("credentials", None, "5000"),
    ("credentials", Some("sqlite_autoindex_credentials_1"), "5000 1"),
    ("credentials", Some("credentials_token_hash"), "5000 1"),
    ("credentials", Some("credentials_org_kind"), "5000 5 3"),
    ("audit_log", None, "1000000"),
    ("audit_log", Some("audit_log_org_seq"), "1000000 100000 1"),
    ("events", None, "1000000"),
    ("events", Some("sqlite_autoindex_events_1"), "1000000 100000 1"),
    ("leases", None, "10"),
    ("leases", Some("sqlite_autoindex_leases_1"), "10 1"),
    ("job_runs", None, "100000"),
    ("job_runs", Some("sqlite_autoindex_job_runs_1"), "100000 1"),
    ("job_runs", Some("job_runs_job"), "100000 50000 1"),
    ("scim_users", None, "100000"),
    ("scim_users", Some("sqlite_autoindex_scim_users_1"), "100000 1"),
    ("scim_users", Some("scim_users_member"), "100000 1"),
    ("scim_users", Some("scim_users_user_name"), "100000 10000 1"),
    ("scim_users", Some("scim_users_external_id"), "100000 10000 1"),
    ("scim_users", Some("scim_users_display_name"), "100000 10000 2"),
    ("scim_users", Some("scim_users_active"), "100000 10000 5000"),
    ("scim_users", Some("scim_users_updated"), "100000 10000 2"),
    ("scim_users", Some("scim_users_org_id"), "100000 10000 1"),
    ("scim_user_emails", None, "100000"),
    ("scim_user_emails", Some("sqlite_autoindex_scim_user_emails_1"), "100000 1 1"),
    ("scim_user_emails", Some("scim_user_emails_value"), "100000 10000 1"),
    ("scim_groups", None, "10000"),
    ("scim_groups", Some("sqlite_autoindex_scim_groups_1"), "10000 1"),
    ("scim_groups", Some("scim_groups_display_name"), "10000 100 1"),
    ("scim_groups", Some("scim_groups_external_id"), "10000 100 1"),
    ("scim_groups", Some("scim_groups_updated"), "10000 100 2"),
    ("scim_groups", Some("scim_groups_org_id"), "10000 100 1"),
    ("scim_group_members", None, "500000"),
    ("scim_group_members", Some("sqlite_autoindex_scim_group_members_1"), "500000 500 1"),
    ("scim_group_members", Some("scim_group_members_user"), "500000 5"),
    ("role_mappings", None, "10000"),
    ("role_mappings", Some("sqlite_autoindex_role_mappings_1"), "10000 1"),
    ("role_mappings", Some("role_mappings_value"), "10000 10 5 1"),
    ("sso_connections", None, "1000"),
    ("sso_connections", Some("sqlite_autoindex_sso_connections_1"), "1000 1"),
    ("sso_clients", None, "1000"),
    ("sso_clients", Some("sqlite_autoindex_sso_clients_1"), "1000 1"),
    ("sso_clients", Some("sso_clients_org"), "1000 1"),
    ("sso_attempts", None, "10000"),
    ("sso_attempts", Some("sqlite_autoindex_sso_attempts_1"), "10000 1"),
    ("sso_attempts", Some("sso_attempts_state"), "10000 1"),
    ("sso_attempts", Some("sso_attempts_expiry"), "10000 1"),
    ("sso_codes", None, "10000"),
    ("sso_codes", Some("sqlite_autoindex_sso_codes_1"), "10000 1"),
    ("sso_codes", Some("sso_codes_expiry"), "10000 1"),
    ("sso_sessions", None, "100000"),
    ("sso_sessions", Some("sqlite_autoindex_sso_sessions_1"), "100000 1"),
    ("sso_sessions", Some("sso_sessions_token"), "100000 1"),
    ("sso_sessions", Some("sso_sessions_member"), "100000 2 1"),
    ("sso_sessions", Some("sso_sessions_live"), "100000 10000 10"),
    ("mail_outbox", None, "100000"),
    ("mail_outbox", Some("sqlite_autoindex_mail_outbox_1"), "100000 1"),
    ("mail_outbox", Some("mail_outbox_due"), "1000 1"),
    ("mail_outbox", Some("mail_outbox_subject"), "100000 2 1"),
    ("mail_outbox", Some("mail_outbox_org_kind"), "100000 100 20 1"),
    ("credentials", Some("credentials_expiry"), "5000 1"),
    ("sign_in_links", None, "10000"),
    ("sign_in_links", Some("sqlite_autoindex_sign_in_links_1"), "10000 1"),
    ("sign_in_links", Some("sign_in_links_expiry"), "10000 1"),
    ("webhook_endpoints", None, "2000"),
    ("webhook_endpoints", Some("sqlite_autoindex_webhook_endpoints_1"), "2000 1"),
    ("webhook_endpoints", Some("webhook_endpoints_org"), "2000 2"),
    ("webhook_queues", None, "5000"),
    ("webhook_queues", Some("sqlite_autoindex_webhook_queues_1"), "5000 3 1"),
    ("webhook_queues", Some("webhook_queues_due"), "5000 1"),
    ("webhook_queues", Some("webhook_queues_org"), "5000 5"),
    ("webhook_replays", None, "100"),
    ("webhook_replays", Some("sqlite_autoindex_webhook_replays_1"), "100 2 2 1"),
    ("webhook_deliveries", None, "1000000"),
    ("webhook_deliveries", Some("sqlite_autoindex_webhook_deliveries_1"), "1000000 1"),
    ("webhook_deliveries", Some("webhook_deliveries_endpoint"), "1000000 500 1"),
    ("webhook_deliveries", Some("webhook_deliveries_at"), "1000000 1"),
    ("webhook_deliveries", Some("webhook_deliveries_org"), "1000000 1000"),
    ("operator_keys", None, "100"),
    ("operator_keys", Some("sqlite_autoindex_operator_keys_1"), "100 1"),
    ("operator_keys", Some("operator_keys_token_hash"), "100 1"),
    ("billing_requests", None, "100000"),
    ("billing_requests", Some("sqlite_autoindex_billing_requests_1"), "100000 1"),
    ("billing_requests", Some("billing_requests_org"), "100000 10 1"),
    ("billing_requests", Some("billing_requests_one_pending"), "1000 1"),
    ("billing_requests", Some("billing_requests_pending"), "1000 1"),
    ("setup_links", None, "10000"),
    ("setup_links", Some("sqlite_autoindex_setup_links_1"), "10000 1"),
    ("setup_links", Some("setup_links_token_hash"), "10000 1"),
    ("setup_links", Some("setup_links_org"), "10000 10 1"),
    ("scim_requests", None, "200000"),
    ("scim_requests", Some("scim_requests_org_seq"), "200000 200 1"),
    ("sso_tests", None, "10000"),
    ("sso_tests", Some("sqlite_autoindex_sso_tests_1"), "10000 1"),
    ("sso_tests", Some("sso_tests_org_at"), "10000 10 1"),
];

/// A table is analyzed once it holds this many times the rows its
/// statistics describe.
const GROWTH: i64 = 2;

/// What a refresh does, table by table.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Refresh {
    /// Tables whose statistics are missing or smaller than the seed.
    pub seed: Vec<&'static str>,
    /// Tables that outgrew their statistics, to analyze.
    pub analyze: Vec<&'static str>,
}

impl Refresh {
    pub fn is_empty(&self) -> bool {
        self.seed.is_empty() && self.analyze.is_empty()
    }
}

/// The rows each table's statistics describe: the largest count of its rows.
async fn described(conn: &mut SqliteConnection) -> sqlx::Result<BTreeMap<String, i64>> {
    let exists: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_schema WHERE name = 'sqlite_stat1'").fetch_optional(&mut *conn).await?;
    if exists.is_none() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT tbl, stat FROM sqlite_stat1").fetch_all(conn).await?;
    let mut described = BTreeMap::new();
    for (table, stat) in rows {
        let n = stat.as_deref().and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
        let entry = described.entry(table).or_insert(0);
        *entry = n.max(*entry);
    }
    Ok(described)
}

/// The seed's row count of `table`.
fn seeded_rows(table: &str) -> i64 {
    SEED.iter().find(|(t, idx, _)| *t == table && idx.is_none()).and_then(|(_, _, s)| s.parse().ok()).unwrap_or(0)
}

fn seeded_tables() -> impl Iterator<Item = &'static str> {
    SEED.iter().filter(|(_, idx, _)| idx.is_none()).map(|(t, _, _)| *t)
}

/// What a refresh would do, read on any connection (a reader's, so that
/// the writer is not held while tables are counted).
pub(super) async fn plan(conn: &mut SqliteConnection) -> sqlx::Result<Refresh> {
    let described = described(&mut *conn).await?;
    let mut refresh = Refresh::default();
    for table in seeded_tables() {
        let described_rows = described.get(table).copied().unwrap_or(0);
        if described_rows < seeded_rows(table) {
            refresh.seed.push(table);
            continue;
        }
        let threshold = described_rows.saturating_mul(GROWTH);
        // The largest rowid bounds the rows from above in one index step;
        // only a table that may have grown enough is counted.
        let (most,): (Option<i64>,) =
            sqlx::query_as(&format!("SELECT MAX(rowid) FROM \"{table}\"")).fetch_one(&mut *conn).await?;
        if most.unwrap_or(0) < threshold {
            continue;
        }
        let (rows,): (i64,) =
            sqlx::query_as(&format!("SELECT COUNT(*) FROM \"{table}\"")).fetch_one(&mut *conn).await?;
        if rows >= threshold {
            refresh.analyze.push(table);
        }
    }
    Ok(refresh)
}

/// Carries out `refresh` in one transaction on the writer, and loads the
/// result into it. Readers load it when they open.
pub(super) async fn apply(conn: &mut SqliteConnection, refresh: &Refresh, analysis_limit: u32) -> sqlx::Result<()> {
    if refresh.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!("PRAGMA analysis_limit = {analysis_limit}")).execute(&mut *conn).await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // Creates `sqlite_stat1` on a database that has none, and analyzes nothing.
    sqlx::query("ANALYZE sqlite_schema").execute(&mut *tx).await?;
    for table in &refresh.analyze {
        sqlx::query(&format!("ANALYZE \"{table}\"")).execute(&mut *tx).await?;
    }
    // A table analyzed above with fewer rows than the seed (rows deleted
    // since it was counted) gets the seed as well.
    let described = described(&mut tx).await?;
    for table in seeded_tables() {
        if refresh.seed.contains(&table) || described.get(table).copied().unwrap_or(0) < seeded_rows(table) {
            seed(&mut tx, table).await?;
        }
    }
    tx.commit().await?;
    sqlx::query("ANALYZE sqlite_schema").execute(&mut *conn).await?;
    Ok(())
}

/// Replaces `table`'s statistics with the seed's.
async fn seed(conn: &mut SqliteConnection, table: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sqlite_stat1 WHERE tbl = $1").bind(table).execute(&mut *conn).await?;
    // Samples of a small table (SQLite built with STAT4) would contradict the seed.
    let has_stat4: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_schema WHERE name = 'sqlite_stat4'").fetch_optional(&mut *conn).await?;
    if has_stat4.is_some() {
        sqlx::query("DELETE FROM sqlite_stat4 WHERE tbl = $1").bind(table).execute(&mut *conn).await?;
    }
    for (_, idx, stat) in SEED.iter().filter(|(t, _, _)| *t == table) {
        sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ($1, $2, $3)")
            .bind(table)
            .bind(idx)
            .bind(stat)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sqlx::Connection;

    async fn migrated() -> (tempfile::TempDir, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("roster.db").display());
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/sqlite").run_direct(&mut conn).await.unwrap();
        (dir, conn)
    }

    /// The statistics of Roster's tables (not of the migrations' own).
    async fn stats(conn: &mut SqliteConnection) -> Vec<(String, Option<String>, String)> {
        sqlx::query_as("SELECT tbl, idx, stat FROM sqlite_stat1 WHERE tbl <> '_sqlx_migrations' ORDER BY tbl, idx")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    /// A new index without a seed row would be planned from SQLite's
    /// defaults; a seed row for a dropped one would be dead weight.
    #[tokio::test]
    async fn the_seed_names_every_table_and_index_of_the_schema_and_nothing_else() {
        let (_dir, mut conn) = migrated().await;
        let schema: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT tbl_name, CASE type WHEN 'index' THEN name END FROM sqlite_schema \
             WHERE type IN ('table', 'index') AND tbl_name NOT LIKE 'sqlite_%' AND tbl_name <> '_sqlx_migrations' \
             ORDER BY 1, 2",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut seed: Vec<(String, Option<String>)> =
            SEED.iter().map(|(t, i, _)| (t.to_string(), i.map(str::to_string))).collect();
        seed.sort();
        assert_eq!(seed, schema);
        for (table, idx, stat) in SEED {
            let numbers: Vec<i64> = stat.split_whitespace().map(|n| n.parse().unwrap()).collect();
            assert!(numbers[0] > 0 && numbers.windows(2).all(|w| w[0] >= w[1]), "{table} {idx:?}: {stat}");
        }
    }

    /// Statistics gathered on small tables are replaced by the seed; the
    /// seed stays until a table holds twice its rows, and then real
    /// statistics (of a table larger than the seed) replace it.
    #[tokio::test]
    async fn small_statistics_give_way_to_the_seed_and_the_seed_to_large_ones() {
        let (_dir, mut conn) = migrated().await;
        sqlx::query("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'h', '2026-01-01')")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
        assert!(stats(&mut conn).await.iter().any(|(t, _, s)| t == "leases" && s.starts_with("1 ")));

        let refresh = plan(&mut conn).await.unwrap();
        assert!(refresh.seed.contains(&"leases") && refresh.seed.contains(&"users"), "{refresh:?}");
        assert!(refresh.analyze.is_empty(), "{refresh:?}");
        apply(&mut conn, &refresh, 1000).await.unwrap();
        let seeded: Vec<_> =
            SEED.iter().map(|(t, i, s)| (t.to_string(), i.map(str::to_string), s.to_string())).collect();
        let mut expected = seeded.clone();
        expected.sort();
        assert_eq!(stats(&mut conn).await, expected);
        assert_eq!(plan(&mut conn).await.unwrap(), Refresh::default(), "a refresh settles");

        // `leases` is seeded at ten rows: at twenty it is analyzed.
        sqlx::query(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 25) \
             INSERT INTO leases (name, holder, expires_at) SELECT 'l' || i, 'h', '2026-01-01' FROM c",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let refresh = plan(&mut conn).await.unwrap();
        assert_eq!(refresh, Refresh { seed: vec![], analyze: vec!["leases"] });
        apply(&mut conn, &refresh, 1000).await.unwrap();
        let leases: Vec<_> = stats(&mut conn).await.into_iter().filter(|(t, _, _)| t == "leases").collect();
        assert_eq!(leases, [("leases".into(), Some("sqlite_autoindex_leases_1".into()), "26 1".into())]);
        assert_eq!(plan(&mut conn).await.unwrap(), Refresh::default(), "a refresh settles");
    }
}
