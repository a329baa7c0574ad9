//! The `roster` binary as an operator uses it: org and credential verbs,
//! `serve` with graceful shutdown, two `serve` processes sharing one
//! PostgreSQL racing for the last seats, and a single sign-on login that
//! one process starts and the other finishes.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn roster(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROSTER_DATABASE_URL", db_url)
        .env("RUST_LOG", "warn");
    cmd
}

fn run_json(db_url: &str, args: &[&str]) -> Value {
    let out = roster(db_url).args(args).arg("--json").output().expect("run roster");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// A `roster serve` process on a random port.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db_url: &str) -> Self {
        Self::start_with(db_url, &[("ROSTER_LISTEN", "127.0.0.1:0")])
    }

    /// Starts with more `ROSTER_*` settings.
    fn start_with(db_url: &str, env: &[(&str, &str)]) -> Self {
        let mut child = roster(db_url)
            .arg("serve")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn roster serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("roster listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, base }
    }

    /// Sends SIGTERM and waits; true when the process exited cleanly.
    fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success();
        sent && self.child.wait().expect("wait").success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn operator_verbs_print_json_and_refuse_bad_input() {
    let db = TestDb::new().await;
    let created =
        run_json(&db.url, &["org", "create", "--name", "Acme", "--seats", "5", "--owner-email", "ada@acme.com"]);
    let org_id = created["organization"]["id"].as_str().expect("org id").to_string();
    assert!(created["api_key"]["secret"].as_str().unwrap().starts_with("roster_ak_"));
    assert_eq!(created["owner"]["role"], "owner");
    let list = run_json(&db.url, &["org", "list"]);
    assert_eq!(list[0]["name"], "Acme");
    let key = run_json(&db.url, &["api-key", "create", "--org", &org_id, "--name", "ci", "--role", "read"]);
    assert_eq!(key["credential"]["role"], "read");
    let token = run_json(&db.url, &["scim-token", "create", "--org", &org_id, "--name", "okta"]);
    assert!(token["secret"].as_str().unwrap().starts_with("roster_scim_"));

    for bad in [
        vec!["org", "create", "--name", "X", "--seats", "5", "--owner-email", "not-an-email"],
        vec!["org", "create", "--name", "X", "--seats", "0", "--owner-email", "a@x.com"],
        vec!["org", "create", "--name", "X", "--seats", "5", "--owner-email", "a@x.com", "--plan", "free"],
        vec!["api-key", "create", "--org", &org_id, "--name", "k", "--role", "boss"],
        vec!["api-key", "create", "--org", "nope", "--name", "k", "--role", "read"],
    ] {
        let out = roster(&db.url).args(&bad).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{bad:?}: {err}");
    }
    assert_eq!(run_json(&db.url, &["org", "list"]).as_array().unwrap().len(), 1, "bad input created nothing");

    let out = roster(&db.url).env("ROSTER_REQUEST_TIMEOUT_SECS", "soon").args(["org", "list"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("request_timeout_secs"));
}

#[tokio::test]
async fn serve_answers_health_readiness_metrics_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let created = run_json(&db.url, &["org", "create", "--name", "Ops", "--seats", "2", "--owner-email", "o@ops.com"]);
    let key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let server = Server::start(&db.url);
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let res = client.get(format!("{}{path}", server.base)).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let res = client.get(format!("{}/api/v1/seats", server.base)).bearer_auth(&key).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("x-request-id"));
    let metrics =
        client.get(format!("{}/metrics", server.base)).send().await.expect("request").text().await.expect("text");
    assert!(
        metrics.contains("roster_http_requests_total{method=\"GET\",route=\"/api/v1/seats\",status=\"200\"} 1"),
        "{metrics}"
    );
    let openapi: Value = client
        .get(format!("{}/api/v1/openapi.json", server.base))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(openapi["paths"]["/api/v1/members/{id}/suspend"]["post"].is_object());
    assert!(server.terminate(), "roster exits cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_postgres_never_exceed_the_seats() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("two_processes_on_one_postgres_never_exceed_the_seats: needs DATABASE_URL=postgres://…; covered by the PostgreSQL run");
        return;
    }
    let created =
        run_json(&db.url, &["org", "create", "--name", "Shared", "--seats", "6", "--owner-email", "o@shared.com"]);
    let key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let (a, b) = (Server::start(&db.url), Server::start(&db.url));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let (client, key) = (client.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(format!("{base}/api/v1/invitations"))
                .bearer_auth(key)
                .json(&json!({"email": format!("p{i}@shared.com"), "role": "read"}))
                .send()
                .await
                .expect("request");
            res.status()
        }));
    }
    let mut created_count = 0;
    for t in tasks {
        match t.await.expect("task") {
            StatusCode::CREATED => created_count += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created_count, 5);
    let seats: Value = client
        .get(format!("{}/api/v1/seats", a.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(seats["used"], 6);
}

// Multi-threaded: the DNS server must answer while this thread waits for the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_admin_verifies_a_domain_from_the_command_line() {
    let db = TestDb::new().await;
    let dns = crate::dns_server::TestDns::start().await;
    let created =
        run_json(&db.url, &["org", "create", "--name", "Acme", "--seats", "5", "--owner-email", "ada@acme.com"]);
    let org = created["organization"]["id"].as_str().unwrap().to_string();
    let with_dns = |args: &[&str]| {
        roster(&db.url).env("ROSTER_DNS_NAME_SERVERS", format!("[\"{}\"]", dns.addr)).args(args).output().expect("run")
    };

    // The instructions name the exact record to publish.
    let out = with_dns(&["domain", "add", "--org", &org, "Acme.com"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("name:  _roster-challenge.acme.com"), "{text}");
    assert!(text.contains("type:  TXT"), "{text}");
    let value = text.lines().find_map(|l| l.trim().strip_prefix("value: ")).expect("value line").to_string();
    assert!(value.starts_with("roster-domain-verification="));

    // A wrong record: verify fails and says what it saw.
    dns.set_txt("_roster-challenge.acme.com", &[&["roster-domain-verification=typo"]]);
    let out = with_dns(&["domain", "verify", "--org", &org, "acme.com"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("\"roster-domain-verification=typo\""), "{text}");
    assert!(text.contains(&value), "the expected value is repeated: {text}");

    dns.set_txt("_roster-challenge.acme.com", &[&[&value]]);
    let out = with_dns(&["domain", "verify", "--org", &org, "acme.com"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme.com: verified"));
    let list = with_dns(&["domain", "list", "--org", &org, "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(list[0]["status"], "verified");
    let out = with_dns(&["domain", "remove", "--org", &org, "acme.com"]);
    assert!(out.status.success());
    let out = with_dns(&["domain", "verify", "--org", &org, "acme.com"]);
    assert_eq!(out.status.code(), Some(2), "a removed domain is gone");
}

/// Two `roster serve` processes on one PostgreSQL behind one public URL:
/// a login started on one finishes on the other, through the real provider.
#[tokio::test]
async fn a_login_started_on_one_process_finishes_on_another() {
    use crate::oidc_provider::{query_param, Browser, OidcProvider, ProviderClient, ProviderConfig};
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("a_login_started_on_one_process_finishes_on_another: needs DATABASE_URL=postgres://…; covered by the PostgreSQL run");
        return;
    }
    // The public URL is the first process's address, chosen up front so the provider can know the callback.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let public = format!("http://127.0.0.1:{port}");
    let callback = format!("{public}/sso/callback");
    let product = "http://127.0.0.1:9/app/callback";
    let idp = OidcProvider::start(
        &ProviderConfig::new().client(ProviderClient::new("roster", "roster-secret", &callback)).account(
            "ada",
            json!({"email": "ada@shared.com", "email_verified": true, "tenants": {"T-shared": {"roles": ["admin"]}}}),
        ),
    )
    .await;
    let created =
        run_json(&db.url, &["org", "create", "--name", "Shared", "--seats", "5", "--owner-email", "ada@shared.com"]);
    let key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let org = created["organization"]["id"].as_str().unwrap().to_string();
    let client =
        run_json(&db.url, &["sso-client", "create", "--org", &org, "--name", "App", "--redirect-uri", product]);
    let (client_id, secret) =
        (client["client"]["id"].as_str().unwrap().to_string(), client["client_secret"].as_str().unwrap().to_string());

    let listen_a = format!("127.0.0.1:{port}");
    let sso = [
        ("ROSTER_SSO_DEV_MODE", "true"),
        ("ROSTER_BACKGROUND_JOBS", "false"),
        ("ROSTER_PUBLIC_BASE_URL", public.as_str()),
        ("ROSTER_TENANT_CONNECTION__ISSUER", idp.issuer.as_str()),
        ("ROSTER_TENANT_CONNECTION__CLIENT_ID", "roster"),
        ("ROSTER_TENANT_CONNECTION__CLIENT_SECRET", "roster-secret"),
    ];
    let a = Server::start_with(&db.url, &[&sso[..], &[("ROSTER_LISTEN", listen_a.as_str())]].concat());
    let b = Server::start_with(&db.url, &[&sso[..], &[("ROSTER_LISTEN", "127.0.0.1:0")]].concat());
    assert_eq!(a.base, public);

    let http = reqwest::Client::new();
    let res = http
        .put(format!("{}/api/v1/organization/sso", a.base))
        .bearer_auth(&key)
        .json(&json!({"tenant_id": "T-shared", "enforce": true, "auto_assign": false, "default_role": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let browser = Browser::new();
    let start = format!("{}/sso/authorize?tenant=T-shared&redirect_uri={product}&state=xyz", a.base);
    let at_callback = browser.follow(&start, "ada", &callback).await.unwrap();
    // The load balancer sends the provider's redirect to the other process.
    let res = browser.get(&at_callback.replacen(&a.base, &b.base, 1)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(query_param(&back, "state").as_deref(), Some("xyz"));
    let res = http
        .post(format!("{}/sso/token", b.base))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("code", query_param(&back, "code").unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let profile: Value = res.json().await.unwrap();
    assert_eq!((profile["email"].as_str(), profile["role"].as_str()), (Some("ada@shared.com"), Some("owner")));
    assert_eq!(profile["organization_id"], org);
}
