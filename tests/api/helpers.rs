//! The test harness: a fresh database per test (SQLite file, or a new
//! PostgreSQL database when `DATABASE_URL` names a PostgreSQL server),
//! Roster served over real HTTP on a random loopback port, and helpers to
//! create organizations and keys.

use reqwest::{Method, StatusCode};
use roster::clock::{Clock, SystemClock};
use roster::config::Config;
use roster::http::AppState;
use roster::model::{CredentialKind, Email, Name, Plan, Role};
use roster::service::{Actor, NewCredential, NewOrganization, Operator, Roster};
use serde_json::Value;
use sqlx::Connection;
use std::net::SocketAddr;
use std::sync::Arc;
use uuid::Uuid;

/// A database for one test, dropped with it.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// The server URL and database name to drop, for PostgreSQL.
    drop_pg: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, name)) = self.drop_pg.take() else { return };
        // Drop runs inside the test's runtime, so the clean-up gets a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&base).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                }
            });
        })
        .join();
    }
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(base) if base.starts_with("postgres") => {
                let name = format!("roster_test_{}", Uuid::new_v4().simple());
                let mut admin =
                    sqlx::PgConnection::connect(&base).await.expect("connect to the PostgreSQL in DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
                url.set_path(&name);
                TestDb { url: url.to_string(), _dir: None, drop_pg: Some((base, name)) }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("roster.db").display());
                TestDb { url, _dir: Some(dir), drop_pg: None }
            }
        }
    }

    /// Another handle on a database a test already made (dropped by its owner only).
    pub fn existing(url: &str) -> Self {
        TestDb { url: url.to_string(), _dir: None, drop_pg: None }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }
}

/// Roster running on a random port, with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub roster: Roster,
    pub client: reqwest::Client,
    /// Where the app's email goes (the folder of `.eml` files unless the test chose SMTP).
    pub mailer: Arc<roster::mail::Mailer>,
    /// What sends the app's webhooks (run a round with [`TestApp::deliver_webhooks`]).
    pub webhooks: Arc<roster::webhooks::Dispatcher>,
    /// The folder of `.eml` files, unless the test configured SMTP.
    pub mail_dir: std::path::PathBuf,
    /// Lives as long as the app, and is dropped with it.
    _db: TestDb,
    _mail: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub fn config_for(db_url: &str) -> Config {
    let mut config = Config::defaults();
    config.database_url = roster::secrets::Secret::new(db_url);
    config.request_body_limit_bytes = 64 * 1024;
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        let db = TestDb::new().await;
        Self::spawn_on(db).await
    }

    /// A deployment whose organizations change their own seats and plan
    /// (`billing.self_serve_seats`) instead of asking the operator.
    pub async fn spawn_self_serve() -> Self {
        Self::spawn_with(TestDb::new().await, |c| c.billing.self_serve_seats = true, Arc::new(SystemClock)).await
    }

    pub async fn spawn_on(db: TestDb) -> Self {
        Self::spawn_with(db, |_| {}, Arc::new(SystemClock)).await
    }

    /// Spawns with a configuration adjusted by `adjust`, on `clock`.
    pub async fn spawn_with(db: TestDb, adjust: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::spawn_listening(db, listener, adjust, clock).await
    }

    /// Spawns with its DNS look-ups sent to `dns` (the test DNS server), each
    /// answered within a second or given up.
    pub async fn spawn_with_dns(dns: SocketAddr, clock: Arc<dyn Clock>) -> Self {
        let adjust = move |c: &mut Config| {
            c.dns_name_servers = vec![dns];
            c.dns_timeout_ms = 1000;
            c.dns_attempts = 1;
        };
        Self::spawn_with(TestDb::new().await, adjust, clock).await
    }

    /// Spawns on a listener bound beforehand (when the configuration must know the address).
    pub async fn spawn_listening(
        db: TestDb,
        listener: tokio::net::TcpListener,
        adjust: impl FnOnce(&mut Config),
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut config = config_for(&db.url);
        config.listen = listener.local_addr().expect("addr");
        config.public_base_url = roster::config::base_url_for(config.listen);
        // Email goes to a folder of the test's own (the default would be the working directory on PostgreSQL).
        let mail = tempfile::tempdir().expect("mail dir");
        config.mail.transport = roster::config::MailTransport::Folder(mail.path().to_path_buf());
        adjust(&mut config);
        let state = AppState::with_clock(config, clock).await.expect("app state");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let roster = state.roster.clone();
        let mailer = state.mailer.clone();
        let webhooks = state.webhooks.clone();
        tokio::spawn(roster::http::serve(listener, state, async {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            roster,
            client: reqwest::Client::new(),
            mailer,
            webhooks,
            mail_dir: mail.path().to_path_buf(),
            _db: db,
            _mail: mail,
            _shutdown: tx,
        }
    }

    /// Runs one round of the email sender, as a replica's sender does:
    /// delivers what is due now; returns how many attempts it made.
    pub async fn deliver_mail(&self) -> usize {
        roster::mail::deliver_due(&self.roster, &self.mailer, "test-sender").await.expect("deliver mail")
    }

    /// Runs one round of the webhook dispatcher, as a replica's does:
    /// delivers what is due now; returns how many attempts it made.
    pub async fn deliver_webhooks(&self) -> usize {
        roster::webhooks::deliver_due(&self.roster, &self.webhooks, "test-dispatcher").await.expect("deliver webhooks")
    }

    /// The `.eml` files written to the mail folder, oldest first.
    pub fn mail_files(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(&self.mail_dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files.iter().map(|p| std::fs::read_to_string(p).expect("read .eml")).collect()
    }

    pub fn db_url(&self) -> &str {
        &self._db.url
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Creates an organization with `seats` purchased seats; returns it with its Owner key.
    pub async fn org(&self, name: &str, seats: i64) -> TestOrg {
        let created = self
            .roster
            .create_organization(
                NewOrganization {
                    name: Name::parse(name).unwrap(),
                    seats,
                    owner_email: Email::parse(&format!("owner@{}.example.com", name.to_lowercase())).unwrap(),
                    plan: Plan::EnterpriseSeatYearly,
                    contact_email: None,
                },
                &Operator::cli_as("cli:test"),
            )
            .await
            .expect("create organization");
        TestOrg {
            id: created.organization.id,
            owner_member: created.owner.id,
            owner_key: created.api_key_secret.expose().to_string(),
        }
    }

    /// A new API key of `org` with `role`.
    pub async fn key(&self, org: &TestOrg, role: Role) -> String {
        let new = NewCredential {
            kind: CredentialKind::ApiKey,
            name: Name::parse(&format!("{role} key")).unwrap(),
            role: Some(role),
            expires_in_days: None,
        };
        self.roster.create_credential(&Actor::cli(org.id), new).await.expect("create key").secret.expose().to_string()
    }

    /// Sends a request with an optional bearer key and JSON body; returns status and JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        read(res).await
    }

    /// A new operator key's secret.
    pub async fn operator_key(&self) -> String {
        let name = Name::parse("test back office").unwrap();
        let created = self.roster.create_operator_key(&Operator::cli_as("cli:test"), &name, None).await;
        created.expect("operator key").secret.expose().to_string()
    }

    /// Sends a request with an operator key acting on `org_id` (the `Roster-Organization` header).
    pub async fn call_for(
        &self,
        method: Method,
        path: &str,
        operator_key: &str,
        org_id: Uuid,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(operator_key)
            .header("roster-organization", org_id.to_string());
        if let Some(body) = body {
            req = req.json(&body);
        }
        read(req.send().await.expect("request")).await
    }

    /// Sets `org`'s seats as the deployment's billing does: `PUT /api/v1/seats` with an operator key.
    pub async fn set_seats(&self, org: &TestOrg, body: Value) -> (StatusCode, Value) {
        let key = self.operator_key().await;
        self.call_for(Method::PUT, "/api/v1/seats", &key, org.id, Some(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// Posts a CSV body to the bulk invitation route.
    pub async fn post_csv(&self, key: &str, csv: &str) -> (StatusCode, Value) {
        let res = self
            .client
            .post(self.url("/api/v1/invitations/bulk"))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .expect("request");
        read(res).await
    }

    /// Every audit record of the organization, newest first.
    pub async fn audit(&self, key: &str) -> Vec<Value> {
        audit_log(&self.client, &format!("http://{}", self.addr), key).await
    }

    /// The seats view of the organization.
    pub async fn seats(&self, key: &str) -> Value {
        let (status, body) = self.get("/api/v1/seats", key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Status and JSON body of a response; a problem response must say so in its content type.
pub async fn read(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = res.text().await.expect("body");
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(content_type, "application/problem+json", "error {status} without a problem body: {text}");
    }
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}

/// An organization made for a test.
pub struct TestOrg {
    pub id: Uuid,
    pub owner_member: Uuid,
    pub owner_key: String,
}

/// The `id` of a JSON resource.
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// A problem response of `expected` status and `kind` (`urn:roster:problem:<kind>`), with a detail.
pub fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, kind: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["type"], format!("urn:roster:problem:{kind}"), "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
}

/// An admin-API call to the Roster at `base`: status and JSON body.
pub async fn api(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, format!("{base}{path}")).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    read(req.send().await.expect("request")).await
}

/// Every audit record of the key's organization, newest first.
pub async fn audit_log(http: &reqwest::Client, base: &str, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit-log?limit=200&cursor={c}"),
            None => "/api/v1/audit-log?limit=200".to_string(),
        };
        let (status, body) = api(http, base, Method::GET, &path, key, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        all.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

/// A new SCIM token of `org`.
pub async fn scim_token(app: &TestApp, org: &TestOrg) -> String {
    let new = NewCredential {
        kind: CredentialKind::ScimToken,
        name: Name::parse("idp").unwrap(),
        role: None,
        expires_in_days: None,
    };
    app.roster.create_credential(&Actor::cli(org.id), new).await.unwrap().secret.expose().to_string()
}

/// A tenant connection whose provider never answers (port 9): enough for
/// settings that need one to exist (a tenant ID, SSO enforcement).
pub fn tenant_connection_nobody_answers() -> roster::config::TenantConnection {
    roster::config::TenantConnection {
        issuer: "http://127.0.0.1:9/".into(),
        client_id: "roster".into(),
        client_secret: roster::secrets::Secret::new("secret"),
        scopes: vec!["openid".into(), "email".into()],
        tenant_param: "tenant".into(),
        tenant_claim: "tenants".into(),
        require_email_verified: true,
    }
}
