//! The query plans of the hot paths, whatever the planner's statistics say.
//!
//! A customer's first provisioning run lands on a fresh database: statistics
//! gathered while the tables were empty must not turn the look-ups that run
//! on every request into table scans once the tables fill. This test drives
//! the SCIM and admin hot paths over real HTTP, records every statement
//! Roster sends to the database (sqlx logs each one), and asks the database
//! for each statement's plan (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` of a
//! generic plan on PostgreSQL): no statement may scan a table that grows
//! with the organizations' members.
//!
//! It runs as a binary of its own because recording needs a process-wide
//! tracing subscriber (SQLite statements are logged on the driver's
//! worker threads).

#![allow(clippy::unwrap_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::{scim_token, TestApp, TestDb, TestOrg};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// The tables that grow with members, SCIM resources and activity, which
/// the test fills to a large organization's size. A scan of any of them is
/// a plan that gets slower with every user provisioned. (On SQLite, whose
/// plans come from statistics alone, a scan of any table fails.)
const GROWING: &[&str] = &[
    "users",
    "members",
    "invitations",
    "credentials",
    "audit_log",
    "events",
    "scim_users",
    "scim_user_emails",
    "scim_groups",
    "scim_group_members",
];

/// How many rows of each growing table stand for a large organization.
const LARGE: i64 = 4_000;
/// ... and for a small one.
const SMALL: i64 = 20;

/// Statements recorded while `Some`.
static RECORDED: Mutex<Option<Vec<String>>> = Mutex::new(None);

struct Recorder;

#[derive(Default)]
struct StatementVisitor {
    summary: String,
    statement: String,
}

impl tracing::field::Visit for StatementVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.statement = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // Strings arrive through `record_str`; nothing else is needed.
        let _ = (field, value);
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut visitor = StatementVisitor::default();
        event.record(&mut visitor);
        // sqlx puts a short statement whole in `summary` and leaves
        // `db.statement` empty; a longer one is in `db.statement`.
        let sql = if visitor.statement.trim().is_empty() { visitor.summary } else { visitor.statement };
        if let Some(recorded) = RECORDED.lock().unwrap().as_mut() {
            recorded.push(sql.trim().to_string());
        }
    }
}

fn install_recorder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::DEBUG);
        let subscriber = tracing_subscriber::registry().with(Recorder.with_filter(filter));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// Runs `work` and returns the distinct statements it sent, each split into
/// its single statements (SQLite receives several in one string).
async fn record<F: std::future::Future<Output = ()>>(work: F) -> BTreeSet<String> {
    *RECORDED.lock().unwrap() = Some(Vec::new());
    work.await;
    let recorded = RECORDED.lock().unwrap().take().unwrap();
    recorded.iter().flat_map(|s| split_statements(s)).collect()
}

/// Splits a string of statements at the semicolons outside quotes.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Statements whose plan says nothing about reading tables.
fn is_plannable(sql: &str) -> bool {
    let head = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    matches!(head.as_str(), "SELECT" | "UPDATE" | "DELETE" | "INSERT" | "WITH")
        && !sql.to_ascii_uppercase().contains("EXPLAIN")
}

/// Runs the same code on whichever connection `conn` is.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match &mut $conn {
            Conn::Sqlite($c) => drop($body),
            Conn::Postgres($c) => drop($body),
        }
    };
}

/// Fills the growing tables of `org` to `rows` rows each, with data shaped
/// like an identity provider's: one member and SCIM User per person, an
/// email each, one big group, audit records and finished invitations.
async fn fill(db: &TestDb, org: &TestOrg, from: i64, rows: i64) {
    if rows <= from {
        return;
    }
    let now = roster::clock::Clock::now(&roster::clock::SystemClock);
    let org_id = org.id.to_string();
    let pad = if db.is_postgres() { "lpad(CAST(i AS TEXT), 12, '0')" } else { "printf('%012d', i)" };
    let id = |kind: &str| format!("'00000000-0000-4000-{kind}-' || {pad}");
    let (user, member, scim, invitation, credential, audit, group_id) =
        (id("8001"), id("8002"), id("8003"), id("8004"), id("8005"), id("8006"), id("8007"));
    let group = seeded(0x8007, 0);
    let series = format!(
        "WITH RECURSIVE c(i) AS (SELECT CAST({from} AS BIGINT) + 1 UNION ALL SELECT i + 1 FROM c WHERE i < {rows})"
    );
    let statements = [
        format!(
            "INSERT INTO users (id, email, email_normalized, created_at) {series} SELECT {user}, \
             'p' || i || '@big.example', 'p' || i || '@big.example', $2 FROM c"
        ),
        format!(
            "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at) {series} \
             SELECT {member}, $1, {user}, 'read', 'active', 'scim', $2, $2 FROM c"
        ),
        format!(
            "INSERT INTO scim_users (id, org_id, member_id, user_name, user_name_lc, external_id, display_name, \
             display_name_lc, active, resource, version, created_at, updated_at) {series} SELECT {scim}, $1, \
             {member}, 'p' || i || '@big.example', 'p' || i || '@big.example', 'ext-' || i, 'P ' || i, \
             'p ' || i, TRUE, '{{}}', 1, $2, $2 FROM c"
        ),
        format!(
            "INSERT INTO scim_user_emails (user_id, org_id, value_lc) {series} \
             SELECT {scim}, $1, 'p' || i || '@big.example' FROM c"
        ),
        format!(
            "INSERT INTO scim_group_members (group_id, user_id, org_id) {series} SELECT '{group}', {scim}, $1 FROM c"
        ),
        format!(
            "INSERT INTO invitations (id, org_id, email, email_normalized, role, token_hash, status, expires_at, \
             invited_by, created_at, updated_at) {series} SELECT {invitation}, $1, 'i' || i || '@big.example', \
             'i' || i || '@big.example', 'read', 'hash-' || i, 'revoked', $2, 'cli', $2, $2 FROM c"
        ),
        format!(
            "INSERT INTO credentials (id, org_id, kind, name, role, token_hash, created_by, created_at) {series} \
             SELECT {credential}, $1, 'api_key', 'key', 'read', 'credential-hash-' || i, 'cli', $2 FROM c"
        ),
        format!(
            "INSERT INTO scim_groups (id, org_id, display_name, display_name_lc, external_id, resource, version, \
             created_at, updated_at) {series} SELECT {group_id}, $1, 'Team ' || i, 'team ' || i, 'team-' || i, '{{}}', \
             1, $2, $2 FROM c"
        ),
        // Numbered below the organization's own events, which count up from 1.
        format!(
            "INSERT INTO events (org_id, seq, id, kind, subject, at) {series} \
             SELECT $1, -i, {audit}, 'member.added', {member}, $2 FROM c"
        ),
        format!(
            "INSERT INTO audit_log (id, org_id, actor_kind, actor_id, action, target, at) {series} \
             SELECT {audit}, $1, 'cli', 'cli', 'member.added', {member}, $2 FROM c"
        ),
    ];
    let mut conn = connect(db).await;
    if from == 0 {
        let group = format!(
            "INSERT INTO scim_groups (id, org_id, display_name, display_name_lc, resource, version, created_at, \
             updated_at) VALUES ('{group}', $1, 'everyone', 'everyone', '{{}}', 1, $2, $2)"
        );
        on_conn!(conn, |c| sqlx::query(&group).bind(&org_id).bind(now).execute(c).await.unwrap());
    }
    for sql in &statements {
        on_conn!(conn, |c| sqlx::query(sql)
            .bind(&org_id)
            .bind(now)
            .execute(c)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}")));
    }
}

enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

async fn connect(db: &TestDb) -> Conn {
    if db.is_postgres() {
        Conn::Postgres(sqlx::PgConnection::connect(&db.url).await.unwrap())
    } else {
        Conn::Sqlite(sqlx::SqliteConnection::connect(&db.url).await.unwrap())
    }
}

/// The plan of one statement, a line per step.
async fn plan(conn: &mut Conn, sql: &str) -> Vec<String> {
    match conn {
        // Parameters left unbound are NULL; the plan does not depend on them.
        Conn::Sqlite(c) => sqlx::query_as::<_, (i64, i64, i64, String)>(&format!("EXPLAIN QUERY PLAN {sql}"))
            .fetch_all(c)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"))
            .into_iter()
            .map(|row| row.3)
            .collect(),
        // The plan PostgreSQL keeps for a prepared statement whatever its
        // parameters, as it would after a few executions.
        Conn::Postgres(c) => {
            // PostgreSQL infers each parameter's type from the statement; one
            // it cannot (`$2 IS NULL`) is text, as Roster binds it.
            let count = parameter_count(sql);
            let mut types = vec!["unknown"; count];
            loop {
                let declared = if count == 0 { String::new() } else { format!("({})", types.join(", ")) };
                let nulls = if count == 0 { String::new() } else { format!("({})", vec!["NULL"; count].join(", ")) };
                let explain = format!(
                    "SET plan_cache_mode = force_generic_plan; PREPARE hot{declared} AS {sql}; \
                     EXPLAIN EXECUTE hot{nulls}; DEALLOCATE hot"
                );
                match sqlx::raw_sql(&explain).fetch_all(&mut *c).await {
                    Ok(rows) => return rows.iter().map(|row| sqlx::Row::get::<String, _>(row, 0)).collect(),
                    Err(e) => {
                        let message = e.to_string();
                        let unknown = message
                            .split("could not determine data type of parameter $")
                            .nth(1)
                            .and_then(|rest| rest.split(|ch: char| !ch.is_ascii_digit()).next())
                            .and_then(|n| n.parse::<usize>().ok());
                        match unknown {
                            Some(n) if types[n - 1] == "unknown" => types[n - 1] = "text",
                            _ => panic!("{message}: {sql}"),
                        }
                    }
                }
            }
        }
    }
}

/// The highest `$n` in a statement.
fn parameter_count(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut max = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'$' {
            let digits: String = sql[i + 1..].chars().take_while(|c| c.is_ascii_digit()).collect();
            max = max.max(digits.parse().unwrap_or(0));
        }
    }
    max
}

/// The steps of a plan that read a whole growing table.
fn scans(plan: &[String]) -> Vec<&str> {
    // SQLite names a subquery's result `CO-ROUTINE x` or `MATERIALIZE x`;
    // reading it whole is `SCAN x`, which reads no table.
    let results: Vec<&str> = plan
        .iter()
        .filter_map(|step| step.strip_prefix("CO-ROUTINE ").or_else(|| step.strip_prefix("MATERIALIZE ")))
        .collect();
    plan.iter()
        .map(String::as_str)
        .filter(|step| {
            let step = step.trim_start_matches([' ', '-', '>']);
            // SQLite: `SCAN <table or alias> [USING ... INDEX]`; a constant
            // row, the rows of a multi-row `VALUES` (`SCAN 30-ROW VALUES
            // CLAUSE`), a JSON function or a subquery's result is not a table.
            let sqlite = step.strip_prefix("SCAN ").is_some_and(|rest| {
                !(rest.starts_with("CONSTANT ROW")
                    || rest.ends_with("-ROW VALUES CLAUSE")
                    || rest.starts_with("json_")
                    || rest.starts_with("(subquery")
                    || results.contains(&rest))
            });
            // PostgreSQL: `Seq Scan on <table> [alias]`.
            let postgres = step
                .strip_prefix("Seq Scan on ")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|table| GROWING.contains(&table));
            sqlite || postgres
        })
        .collect()
}

/// The steps of a PostgreSQL plan that read all of an organization's rows
/// of a growing table through an index: an index condition on `org_id`
/// alone. Here one organization holds most of each table, so such a step
/// reads nearly as much as a scan. Two are bounded all the same: a page
/// (under a `Limit`, every entry read returned: no `Filter`), and a count
/// of the organization's rows (under an `Aggregate`), which reads them all
/// by its nature.
fn org_wide_reads(plan: &[String]) -> Vec<String> {
    let depth = |line: &str| line.len() - line.trim_start().len();
    let node = |line: &str| line.trim_start().trim_start_matches("->").trim_start().to_string();
    // Plan nodes carry their cost; the lines below a node, deeper than it
    // and up to the next node, are its details (`Index Cond: …`).
    let is_node = |line: &str| line.contains("(cost=");
    let mut found = Vec::new();
    for (i, step) in plan.iter().enumerate() {
        let n = node(step);
        let table = if n.starts_with("Bitmap Index Scan on ") {
            // The table is its Bitmap Heap Scan's, the nearest above.
            plan[..i].iter().rev().find_map(|l| node(l).strip_prefix("Bitmap Heap Scan on ").map(str::to_string))
        } else if n.starts_with("Index Scan") || n.starts_with("Index Only Scan") {
            n.split(" on ").nth(1).map(str::to_string)
        } else {
            None
        };
        let Some(table) = table.and_then(|t| t.split_whitespace().next().map(str::to_string)) else { continue };
        if !GROWING.contains(&table.as_str()) {
            continue;
        }
        let details: Vec<String> = plan[i + 1..]
            .iter()
            .take_while(|l| depth(l) > depth(step) && !is_node(l))
            .map(|l| l.trim().to_string())
            .collect();
        let Some(cond) = details.iter().find_map(|l| l.strip_prefix("Index Cond: ")) else { continue };
        let bare = cond.trim_matches(['(', ')']);
        let mut sides = bare.split(" = ");
        let column = sides.next().unwrap_or("");
        let org_only = !bare.contains(" AND ")
            && (column == "org_id" || column.ends_with(".org_id"))
            && sides.next().is_some_and(|value| value.starts_with('$'));
        if !org_only {
            continue;
        }
        let filtered = details.iter().any(|l| l.starts_with("Filter: "));
        // The node's ancestors: going up, each node less deep than the last.
        let mut ancestors = Vec::new();
        let mut at = depth(step);
        for above in plan[..i].iter().rev() {
            if is_node(above) && depth(above) < at {
                at = depth(above);
                ancestors.push(node(above));
            }
        }
        let bounded = ancestors.iter().any(|a| (a.starts_with("Limit") && !filtered) || a.starts_with("Aggregate"));
        if !bounded {
            found.push(format!("{} [{cond}]", n.trim()));
        }
    }
    found
}

/// Fails with every hot statement whose plan reads a whole growing table.
async fn assert_indexed(db: &TestDb, statements: &BTreeSet<String>, when: &str) {
    let mut conn = connect(db).await;
    let mut bad = Vec::new();
    let mut checked = 0;
    for sql in statements.iter().filter(|s| is_plannable(s)) {
        // A count of an organization's members or Users reads every one of
        // them, and here one organization holds most of each table: reading
        // the table is then PostgreSQL's right choice. (SQLite must still
        // count through the organization's index.)
        if matches!(conn, Conn::Postgres(_)) && sql.starts_with("SELECT COUNT(*) FROM") {
            continue;
        }
        let steps = plan(&mut conn, sql).await;
        checked += 1;
        let mut scanned: Vec<String> = scans(&steps).into_iter().map(str::to_string).collect();
        if matches!(conn, Conn::Postgres(_)) {
            scanned.extend(org_wide_reads(&steps));
        }
        if !scanned.is_empty() {
            bad.push(format!("{sql}\n    plan: {steps:?}"));
        }
    }
    assert!(checked >= 20, "{when}: only {checked} statements were recorded: {statements:?}");
    if !bad.is_empty() {
        if let Conn::Sqlite(c) = &mut conn {
            let stats: Vec<(String, Option<String>, String)> =
                sqlx::query_as("SELECT tbl, idx, stat FROM sqlite_stat1").fetch_all(c).await.unwrap_or_default();
            eprintln!("statistics: {stats:?}");
        }
    }
    assert!(bad.is_empty(), "{when}: {} of {checked} hot statements scan a table:\n{}", bad.len(), bad.join("\n"));
}

/// A SCIM call that must answer `expected`.
async fn scim(app: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>, expected: u16) -> Value {
    let mut req = app.client.request(method.clone(), app.url(&format!("/scim/v2{path}"))).bearer_auth(token);
    if let Some(body) = body {
        req = req.header("content-type", "application/scim+json").body(body.to_string());
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status.as_u16(), expected, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The seeded rows' ids are UUIDs of this form, numbered from 1.
fn seeded(kind: u16, i: i64) -> String {
    format!("00000000-0000-4000-{kind:04x}-{i:012}")
}

/// What an identity provider and an admin do most: provision, look up,
/// page, group, deactivate, update and delete.
async fn exercise(app: &TestApp, org: &TestOrg, token: &str, tag: &str) {
    let user = |name: &str, active: bool| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "externalId": format!("ext-{name}"),
            "name": {"givenName": "New", "familyName": "Person"},
            "emails": [{"value": name, "type": "work", "primary": true}],
            "active": active,
        })
    };
    let name = format!("new-{tag}@big.example");
    let other = format!("other-{tag}@big.example");
    let created = scim(app, token, Method::POST, "/Users", Some(user(&name, true)), 201).await;
    let id = created["id"].as_str().unwrap().to_string();
    let created = scim(app, token, Method::POST, "/Users", Some(user(&other, true)), 201).await;
    let other_id = created["id"].as_str().unwrap().to_string();
    let query = |attr: &str, value: &str| format!("/Users?filter={attr}%20eq%20%22{}%22", value.replace('@', "%40"));
    let found = scim(app, token, Method::GET, &query("userName", &name), None, 200).await;
    assert_eq!(found["totalResults"], 1, "{found}");
    scim(app, token, Method::GET, &query("externalId", &format!("ext-{name}")), None, 200).await;
    scim(app, token, Method::GET, &query("emails.value", &name), None, 200).await;
    scim(app, token, Method::GET, &format!("/Users/{id}"), None, 200).await;
    scim(app, token, Method::GET, "/Users?startIndex=1&count=100", None, 200).await;

    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": format!("group-{tag}"),
        "members": [{"value": id}],
    });
    let group = scim(app, token, Method::POST, "/Groups", Some(group), 201).await;
    let gid = group["id"].as_str().unwrap().to_string();
    let patch = |op: &str, path: String, value: Value| {
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": op, "path": path, "value": value}],
        })
    };
    let add = patch("add", "members".into(), json!([{"value": other_id}]));
    scim(app, token, Method::PATCH, &format!("/Groups/{gid}?excludedAttributes=members"), Some(add), 200).await;
    let remove = patch("remove", format!("members[value eq \"{id}\"]"), Value::Null);
    scim(app, token, Method::PATCH, &format!("/Groups/{gid}?excludedAttributes=members"), Some(remove), 200).await;
    scim(app, token, Method::GET, &format!("/Groups/{gid}"), None, 200).await;

    let deactivate = patch("replace", "active".into(), json!(false));
    scim(app, token, Method::PATCH, &format!("/Users/{id}"), Some(deactivate), 200).await;
    scim(app, token, Method::PUT, &format!("/Users/{id}"), Some(user(&name, true)), 200).await;
    scim(app, token, Method::DELETE, &format!("/Users/{id}"), None, 204).await;
    scim(app, token, Method::DELETE, &format!("/Users/{other_id}"), None, 204).await;

    let (status, _) = app.get("/api/v1/members?limit=50", &org.owner_key).await;
    assert_eq!(status, StatusCode::OK);
    let invite = json!({"email": format!("invitee-{tag}@big.example"), "role": "read"});
    let (status, body) = app.post("/api/v1/invitations", &org.owner_key, invite).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app.get("/api/v1/seats", &org.owner_key).await;
    assert_eq!(status, StatusCode::OK);

    // Sign-in by link: a seeded member, and an address nobody has.
    for email in ["p7@big.example".to_string(), format!("nobody-{tag}@big.example")] {
        let req = roster::service::LinkRequest {
            email: roster::model::Email::parse(&email).unwrap(),
            redirect_uri: "https://app.big.example/callback".into(),
            state: None,
            client_id: None,
            browser: roster::secrets::Secret::new(format!("rb_{tag}")),
        };
        app.roster.send_sign_in_link(req).await.unwrap();
    }
}

/// Planner statistics as the deployment gathers them: Roster's own refresh
/// on SQLite; on PostgreSQL, what autovacuum's ANALYZE does.
async fn gather_statistics(app: &TestApp, db: &TestDb) {
    if db.is_postgres() {
        let mut conn = connect(db).await;
        on_conn!(conn, |c| sqlx::query("ANALYZE").execute(c).await.unwrap());
    } else {
        app.roster.store().optimize().await.unwrap();
    }
}

/// Statistics gathered on empty, small and large tables; then the tables
/// grow to a large organization's size before the next gathering (a
/// customer's first provisioning run). Every hot statement keeps its index
/// throughout.
#[tokio::test]
async fn hot_statements_use_their_indexes_whatever_the_statistics() {
    install_recorder();
    for (label, rows) in [("no", -1), ("empty", 0), ("small", SMALL), ("large", LARGE)] {
        let db = TestDb::new().await;
        let url = db.url.clone();
        let handle = TestDb::existing(&url);
        let app = TestApp::spawn_on(db).await;
        let org = app.org("Plans", 1_000_000).await;
        let token = scim_token(&app, &org).await;
        // `rows` below zero: no statistics gathered at all, as on a
        // database whose first provisioning run starts right after
        // migration, before autovacuum ever looked at it.
        fill(&handle, &org, 0, rows.max(0)).await;
        if rows >= 0 {
            gather_statistics(&app, &handle).await;
        }
        // PostgreSQL rightly reads a table of a page or two whole: its
        // plans are judged on large tables only.
        if !handle.is_postgres() && rows < LARGE {
            let statements = record(exercise(&app, &org, &token, &format!("{label}-at-size"))).await;
            assert_indexed(&handle, &statements, &format!("statistics on {label} tables, {label} tables")).await;
        }
        fill(&handle, &org, rows.max(0), LARGE).await;
        let statements = record(exercise(&app, &org, &token, label)).await;
        assert_indexed(&handle, &statements, &format!("statistics on {label} tables, then {LARGE} rows")).await;
    }
}
