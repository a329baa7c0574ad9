//! The `roster` binary as an operator uses it: org and credential verbs,
//! `serve` with graceful shutdown, two `serve` processes sharing one
//! PostgreSQL racing for the last seats (through SCIM, the admin API and
//! single sign-on at once), a single sign-on login that one process starts
//! and the other finishes, and the background reconciler running once per
//! interval across both processes.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub fn roster(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROSTER_DATABASE_URL", db_url)
        // On PostgreSQL the mail folder would default to the working directory.
        .env("ROSTER_MAIL_DIR", concat!(env!("CARGO_TARGET_TMPDIR"), "/cli-mail"))
        .env("RUST_LOG", "warn");
    cmd
}

pub fn run_json(db_url: &str, args: &[&str]) -> Value {
    let out = roster(db_url).args(args).arg("--json").output().expect("run roster");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// A `roster serve` process on a random port.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    pub fn start(db_url: &str) -> Self {
        Self::start_with(db_url, &[("ROSTER_LISTEN", "127.0.0.1:0")])
    }

    /// Starts with more `ROSTER_*` settings.
    pub fn start_with(db_url: &str, env: &[(&str, &str)]) -> Self {
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
    pub fn terminate(mut self) -> bool {
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

/// The reason code on a Roster sign-in error page.
fn page_reason(body: &str) -> String {
    body.split("<code id=\"reason\">").nth(1).and_then(|r| r.split('<').next()).unwrap_or("").to_string()
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
async fn sso_settings_change_from_the_command_line_one_at_a_time() {
    let db = TestDb::new().await;
    let created =
        run_json(&db.url, &["org", "create", "--name", "Acme", "--seats", "5", "--owner-email", "ada@acme.com"]);
    let org = created["organization"]["id"].as_str().expect("org id").to_string();
    let shown = run_json(&db.url, &["org", "sso", "show", "--org", &org]);
    assert_eq!(shown, json!({"tenant_id": null, "enforce": false, "auto_assign": false, "default_role": "read"}));
    let set = run_json(&db.url, &["org", "sso", "set", "--org", &org, "--auto-assign", "true"]);
    assert_eq!(set["auto_assign"], true);
    let set = run_json(&db.url, &["org", "sso", "set", "--org", &org, "--default-role", "write"]);
    assert_eq!((set["auto_assign"].clone(), set["default_role"].clone()), (json!(true), json!("write")));

    // With the deployment's tenant connection, a tenant ID; then enforcement.
    let tenant = [
        ("ROSTER_TENANT_CONNECTION__ISSUER", "https://idp.example.com"),
        ("ROSTER_TENANT_CONNECTION__CLIENT_ID", "012345"),
        ("ROSTER_TENANT_CONNECTION__CLIENT_SECRET", "s3cret"),
    ];
    let with_tenant = |args: &[&str]| {
        let out = roster(&db.url).envs(tenant).args(args).arg("--json").output().expect("run roster");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON output")
    };
    let set = with_tenant(&["org", "sso", "set", "--org", &org, "--tenant-id", "T2acme", "--enforce", "true"]);
    assert_eq!((set["tenant_id"].clone(), set["enforce"].clone()), (json!("T2acme"), json!(true)));

    for (bad, words) in [
        // No tenant connection here: a tenant ID would sign no one in.
        (vec!["org", "sso", "set", "--org", &org, "--tenant-id", "T2other"], "no tenant connection"),
        // Clearing the only connection while SSO is enforced locks everyone out.
        (vec!["org", "sso", "set", "--org", &org, "--clear-tenant-id"], "enforces SSO"),
        (vec!["org", "sso", "set", "--org", &org, "--default-role", "owner"], "Owners"),
        (vec!["org", "sso", "set", "--org", "acme", "--enforce", "false"], "UUID"),
        (vec!["org", "sso", "set", "--org", &org, "--enforce", "maybe"], "maybe"),
    ] {
        let out = roster(&db.url).args(&bad).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{bad:?}: {err}");
    }
    let shown = run_json(&db.url, &["org", "sso", "show", "--org", &org]);
    assert_eq!(shown, json!({"tenant_id": "T2acme", "enforce": true, "auto_assign": true, "default_role": "write"}));
    let off = with_tenant(&["org", "sso", "set", "--org", &org, "--enforce", "false", "--clear-tenant-id"]);
    assert_eq!((off["tenant_id"].clone(), off["enforce"].clone()), (Value::Null, json!(false)));
}

#[tokio::test]
async fn mistakes_get_messages_that_say_what_to_do() {
    let db = TestDb::new().await;
    let created =
        run_json(&db.url, &["org", "create", "--name", "Acme", "--seats", "5", "--owner-email", "ada@acme.com"]);
    let org = created["organization"]["id"].as_str().expect("org id").to_string();
    let fails = |args: &[&str], code: i32, words: &[&str]| {
        let out = roster(&db.url).args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
        }
    };
    fails(&["domain", "list", "--org", "acme"], 2, &["--org: `acme` is not an organization id", "roster org list"]);
    fails(&["domain", "add", "--org", &org, "acme..com"], 2, &["domain `acme..com`"]);
    // 240 characters: a valid name, but `_roster-challenge.` in front exceeds 253.
    let long = format!("{}.{}.{}.{}.acme.com", "a".repeat(60), "b".repeat(60), "c".repeat(60), "d".repeat(48));
    assert_eq!(long.len(), 240);
    fails(&["domain", "add", "--org", &org, &long], 2, &["challenge record", "at most 235"]);

    let out = roster(&db.url).args(["domain", "add", "--org", &org, "acme.com"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("then run: roster domain verify --org {org} acme.com")), "{text}");

    // A database that is not there: the message names where it was looked for, at once.
    let started = std::time::Instant::now();
    let out = roster("postgres://roster@127.0.0.1:9/roster").args(["org", "list"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PostgreSQL at 127.0.0.1:9 (database roster, user roster)"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

/// The environment a running process started with, as `NAME=value` entries.
fn environment_of(child: &Child) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{}/environ", child.id())).expect("/proc/PID/environ");
    raw.split(|b| *b == 0).map(|e| String::from_utf8_lossy(e).into_owned()).collect()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn serve_limits_mallocs_arenas_unless_the_environment_tunes_them() {
    let db = TestDb::new().await;
    let server = Server::start(&db.url);
    let env = environment_of(&server.child);
    let ours = format!("MALLOC_ARENA_MAX={}", roster::allocator::arena_max());
    assert!(env.contains(&ours), "{env:?}");
    // The process the test started is the one serving: it replaced itself.
    let res = reqwest::get(format!("{}/healthz", server.base)).await.expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    drop(server);
    // An operator's own setting stands.
    let server = Server::start_with(&db.url, &[("ROSTER_LISTEN", "127.0.0.1:0"), ("MALLOC_ARENA_MAX", "1")]);
    let arenas: Vec<String> =
        environment_of(&server.child).into_iter().filter(|e| e.starts_with("MALLOC_ARENA_MAX=")).collect();
    assert_eq!(arenas, ["MALLOC_ARENA_MAX=1"]);
    drop(server);
    let tunables = [("ROSTER_LISTEN", "127.0.0.1:0"), ("GLIBC_TUNABLES", "glibc.malloc.arena_max=3")];
    let server = Server::start_with(&db.url, &tunables);
    let env = environment_of(&server.child);
    assert!(env.contains(&"GLIBC_TUNABLES=glibc.malloc.arena_max=3".to_string()), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("MALLOC_ARENA_MAX=")), "{env:?}");
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
    // Latency as a histogram (buckets add up across replicas), the process, the database's connections.
    let seats = "method=\"GET\",route=\"/api/v1/seats\",status=\"200\"";
    for line in [
        format!("roster_http_request_duration_seconds_bucket{{{seats},le=\"+Inf\"}} 1"),
        format!("roster_http_request_duration_seconds_count{{{seats}}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(metrics.contains("le=\"0.005\""), "{metrics}");
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_threads"] {
        assert!(metrics.lines().any(|l| l.starts_with(name)), "{name} in {metrics}");
    }
    let backend = if db.is_postgres() { "postgres" } else { "sqlite" };
    assert!(metrics.contains(&format!("roster_db_connections{{backend=\"{backend}\",state=\"idle\"}}")), "{metrics}");
    assert!(metrics.contains(&format!("roster_db_connections_max{{backend=\"{backend}\"}} 10")), "{metrics}");
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

#[tokio::test]
async fn metrics_on_a_listen_address_of_their_own_are_not_on_the_public_one() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let at = format!("127.0.0.1:{port}");
    let server = Server::start_with(&db.url, &[("ROSTER_LISTEN", "127.0.0.1:0"), ("ROSTER_METRICS_LISTEN", &at)]);
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/readyz", server.base)).send().await.unwrap().status(), StatusCode::OK);
    let public = client.get(format!("{}/metrics", server.base)).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let metrics = client.get(format!("http://{at}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("roster_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"), "{text}");
    assert_eq!(client.get(format!("http://{at}/readyz")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
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

#[tokio::test]
async fn serve_refuses_a_tenant_connection_whose_provider_names_another_issuer() {
    use crate::oidc_provider::{OidcProvider, ProviderClient, ProviderConfig};
    let db = TestDb::new().await;
    let idp = OidcProvider::start(&ProviderConfig::new().client(ProviderClient::new(
        "roster",
        "roster-secret",
        "http://127.0.0.1:9/sso/callback",
    )))
    .await;
    // The same provider, spelt with a trailing slash more or less.
    let misspelt = match idp.issuer.strip_suffix('/') {
        Some(bare) => bare.to_string(),
        None => format!("{}/", idp.issuer),
    };
    let tenant = |issuer: &str| {
        [
            ("ROSTER_SSO_DEV_MODE", "true".to_string()),
            ("ROSTER_LISTEN", "127.0.0.1:0".to_string()),
            ("ROSTER_TENANT_CONNECTION__ISSUER", issuer.to_string()),
            ("ROSTER_TENANT_CONNECTION__CLIENT_ID", "roster".to_string()),
            ("ROSTER_TENANT_CONNECTION__CLIENT_SECRET", "roster-secret".to_string()),
        ]
    };
    let out = roster(&db.url).envs(tenant(&misspelt)).arg("serve").output().expect("run roster serve");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tenant_connection.issuer"), "{err}");
    assert!(err.contains(&format!("`{}`", idp.issuer)), "the message names the issuer to write: {err}");

    let env = tenant(&idp.issuer);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(&db.url, &env);
    assert!(server.terminate(), "serve with the exact issuer started and stopped cleanly");
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

/// What one contender for a seat got.
#[derive(Debug)]
enum Outcome {
    /// SCIM `POST /Users`: the status and SCIM body.
    Scim(StatusCode, Value),
    /// `POST /api/v1/invitations`: the status and JSON (or problem) body.
    Invitation(StatusCode, Value),
    /// An SSO callback: the status, the redirect (on success) and the page body.
    Sso { login: usize, status: StatusCode, location: Option<String>, body: String },
}

/// The last free seats of one organization, raced for through all three
/// doors at once — SCIM provisioning, admin-API invitations and single
/// sign-on auto-assignment at a verified domain (through the real provider)
/// — spread over two `roster serve` processes on one PostgreSQL: exactly the
/// free seats are taken, and every refusal is the documented one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scim_invitations_and_sso_race_for_the_last_seats_across_two_processes() {
    use crate::oidc_provider::{query_param, Browser, OidcProvider, ProviderClient, ProviderConfig};
    const TENANT: &str = "T-race";
    const DOMAIN: &str = "race.example.com";
    const PRODUCT: &str = "http://127.0.0.1:9/app/callback";
    const SCIM_USERS: usize = 8;
    const INVITATIONS: usize = 8;
    const SSO_USERS: usize = 4;
    // Five purchased, the Owner holds one.
    const PURCHASED: i64 = 5;
    const FREE: usize = 4;
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("scim_invitations_and_sso_race_for_the_last_seats_across_two_processes: needs DATABASE_URL=postgres://…; covered by the PostgreSQL run");
        return;
    }

    // The public URL is the first process's address, chosen up front so the provider can know the callback.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let public = format!("http://127.0.0.1:{port}");
    let callback = format!("{public}/sso/callback");
    let mut provider = ProviderConfig::new().client(ProviderClient::new("roster", "roster-secret", &callback)).account(
        "owner",
        json!({"email": format!("owner@{DOMAIN}"), "email_verified": true, "tenants": { TENANT: {"roles": []} }}),
    );
    for i in 0..SSO_USERS {
        provider = provider.account(
            &format!("sso{i}"),
            json!({"email": format!("sso{i}@{DOMAIN}"), "email_verified": true, "tenants": { TENANT: {"roles": []} }}),
        );
    }
    let idp = OidcProvider::start(&provider).await;

    let seats = PURCHASED.to_string();
    let owner = format!("owner@{DOMAIN}");
    let created = run_json(&db.url, &["org", "create", "--name", "Race", "--seats", &seats, "--owner-email", &owner]);
    let key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let org = created["organization"]["id"].as_str().unwrap().to_string();
    let scim_token = run_json(&db.url, &["scim-token", "create", "--org", &org, "--name", "okta"])["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let client =
        run_json(&db.url, &["sso-client", "create", "--org", &org, "--name", "App", "--redirect-uri", PRODUCT]);
    let (client_id, client_secret) =
        (client["client"]["id"].as_str().unwrap().to_string(), client["client_secret"].as_str().unwrap().to_string());

    // The domain is verified from the command line over real DNS.
    let dns = crate::dns_server::TestDns::start().await;
    let added = run_json(&db.url, &["domain", "add", "--org", &org, DOMAIN]);
    dns.set_txt(&format!("_roster-challenge.{DOMAIN}"), &[&[added["record"]["value"].as_str().unwrap()]]);
    let out = roster(&db.url)
        .env("ROSTER_DNS_NAME_SERVERS", format!("[\"{}\"]", dns.addr))
        .args(["domain", "verify", "--org", &org, DOMAIN])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let listen_a = format!("127.0.0.1:{port}");
    let env = [
        ("ROSTER_SSO_DEV_MODE", "true"),
        // No background job may change seats during the race.
        ("ROSTER_BACKGROUND_JOBS", "false"),
        // A slow provider on a busy machine is not what this test is about.
        ("ROSTER_SSO_HTTP_TIMEOUT_MS", "30000"),
        ("ROSTER_PUBLIC_BASE_URL", public.as_str()),
        ("ROSTER_TENANT_CONNECTION__ISSUER", idp.issuer.as_str()),
        ("ROSTER_TENANT_CONNECTION__CLIENT_ID", "roster"),
        ("ROSTER_TENANT_CONNECTION__CLIENT_SECRET", "roster-secret"),
    ];
    let a = Server::start_with(&db.url, &[&env[..], &[("ROSTER_LISTEN", listen_a.as_str())]].concat());
    let b = Server::start_with(&db.url, &[&env[..], &[("ROSTER_LISTEN", "127.0.0.1:0")]].concat());
    assert_eq!(a.base, public);
    let bases = [a.base.clone(), b.base.clone()];

    let http = reqwest::Client::new();
    let sso = json!({"tenant_id": TENANT, "enforce": true, "auto_assign": true, "default_role": "read"});
    let (s, body) = api(&http, &b.base, Method::PUT, "/api/v1/organization/sso", &key, Some(sso)).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // A login reaches the seat lock only after Roster redeemed the provider's
    // code and checked its ID token, so the SSO contenders would always come
    // last. The Owner (a member: no seat) signs in once on each process, which
    // also caches the provider's keys there; how long its callback took sets
    // how far the other doors are held back, so that all three meet.
    let product: String = url::form_urlencoded::byte_serialize(PRODUCT.as_bytes()).collect();
    let mut head_start = std::time::Duration::ZERO;
    for base in &bases {
        let browser = Browser::new();
        let start = format!("{base}/sso/authorize?tenant={TENANT}&redirect_uri={product}&state=owner");
        let at_callback = browser.follow(&start, "owner", &callback).await.unwrap();
        let clock = std::time::Instant::now();
        let res = browser.get(&at_callback.replacen(&public, base, 1)).await;
        head_start = head_start.max(clock.elapsed());
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "the Owner signs in: {:?}", res.text().await);
        assert!(res.headers()["location"].to_str().unwrap().starts_with(PRODUCT));
    }

    // Each new user signs in at the provider first, which takes no seat: the
    // seat is taken when Roster gets the provider's answer at its callback.
    // The logins start on alternating processes and finish on the other one.
    let mut signing_in = Vec::new();
    for i in 0..SSO_USERS {
        let start = format!("{}/sso/authorize?tenant={TENANT}&redirect_uri={product}&state=s{i}", bases[i % 2]);
        let (callback, finish_on) = (callback.clone(), bases[(i + 1) % 2].clone());
        let public = public.clone();
        signing_in.push(tokio::spawn(async move {
            let browser = Browser::new();
            let at_callback = browser.follow(&start, &format!("sso{i}"), &callback).await.unwrap_or_else(|e| {
                panic!("sso{i} did not get back to the callback: {} {}", e.status, e.body);
            });
            (browser, at_callback.replacen(&public, &finish_on, 1))
        }));
    }
    let mut at_callbacks = Vec::new();
    for t in signing_in {
        at_callbacks.push(t.await.expect("sign-in task"));
    }

    // The race: every contender waits at the barrier, then all go at once.
    let contenders = SCIM_USERS + INVITATIONS + SSO_USERS;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(contenders));
    let mut tasks = Vec::new();
    let mut browsers = at_callbacks.into_iter();
    // The SCIM and invitation requests go between half and all of the SSO
    // callback's time after the callbacks, spread so that some land before
    // the logins, some with them.
    let hold_back = |i: usize| 0.5 + (i % 4) as f64 / 6.0;
    for i in 0..SCIM_USERS.max(INVITATIONS).max(SSO_USERS) {
        if i < SCIM_USERS {
            let (http, url, token, barrier) =
                (http.clone(), format!("{}/scim/v2/Users", bases[i % 2]), scim_token.clone(), barrier.clone());
            let hold = head_start.mul_f64(hold_back(i));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep(hold).await;
                let res = http
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/scim+json")
                    .body(crate::scim::user(&format!("scim{i}@{DOMAIN}")).to_string())
                    .send()
                    .await
                    .expect("request");
                let status = res.status();
                if status.is_client_error() || status.is_server_error() {
                    assert_eq!(res.headers()["content-type"], "application/scim+json", "{status}");
                }
                let body = res.json::<Value>().await.unwrap_or(Value::Null);
                Outcome::Scim(status, body)
            }));
        }
        if i < INVITATIONS {
            let (http, base, key, barrier) = (http.clone(), bases[(i + 1) % 2].clone(), key.clone(), barrier.clone());
            let hold = head_start.mul_f64(hold_back(i + 1));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                tokio::time::sleep(hold).await;
                let body = json!({"email": format!("inv{i}@{DOMAIN}"), "role": "read"});
                let (status, body) = api(&http, &base, Method::POST, "/api/v1/invitations", &key, Some(body)).await;
                Outcome::Invitation(status, body)
            }));
        }
        if let Some((browser, at_callback)) = browsers.next() {
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let res = browser.get(&at_callback).await;
                let status = res.status();
                let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_string());
                let body = res.text().await.unwrap_or_default();
                Outcome::Sso { login: i, status, location, body }
            }));
        }
    }
    assert_eq!(tasks.len(), contenders);

    let (mut scim_ok, mut invited, mut sso_ok) = (0, 0, Vec::new());
    let (mut scim_refused, mut invitations_refused, mut sso_refused) = (0, 0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Outcome::Scim(StatusCode::CREATED, _) => scim_ok += 1,
            Outcome::Scim(StatusCode::FORBIDDEN, body) => {
                assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{body}");
                assert_eq!(body["status"], "403", "{body}");
                let detail = body["detail"].as_str().unwrap_or("");
                assert!(
                    detail.contains("seat limit reached")
                        && detail.contains(&format!("{PURCHASED} seats and {PURCHASED} are in use")),
                    "{body}"
                );
                scim_refused += 1;
            }
            Outcome::Invitation(StatusCode::CREATED, _) => invited += 1,
            Outcome::Invitation(StatusCode::CONFLICT, body) => {
                assert_eq!(body["type"], "urn:roster:problem:seat-limit-reached", "{body}");
                assert_eq!(
                    (body["purchased_seats"].as_i64(), body["used_seats"].as_i64()),
                    (Some(PURCHASED), Some(PURCHASED)),
                    "{body}"
                );
                invitations_refused += 1;
            }
            Outcome::Sso { login, status: StatusCode::SEE_OTHER, location: Some(location), body } => {
                assert!(location.starts_with(PRODUCT), "sso{login}: {location} {body}");
                assert_eq!(query_param(&location, "state").as_deref(), Some(format!("s{login}").as_str()));
                sso_ok.push((login, query_param(&location, "code").expect("a code")));
            }
            Outcome::Sso { login, status: StatusCode::FORBIDDEN, body, .. } => {
                assert_eq!(page_reason(&body), "no_free_seat", "sso{login}: {body}");
                assert!(body.contains(&format!("({PURCHASED} of {PURCHASED} in use)")), "sso{login}: {body}");
                sso_refused += 1;
            }
            other => panic!("not a documented outcome (a 5xx or an unexpected refusal): {other:?}"),
        }
    }
    eprintln!(
        "seats taken: {scim_ok} by SCIM, {invited} by invitations, {} by SSO; refused: {scim_refused}, {invitations_refused}, {sso_refused}",
        sso_ok.len()
    );
    let taken = scim_ok + invited + sso_ok.len();
    assert_eq!(
        taken,
        FREE,
        "exactly the free seats are taken: {scim_ok} by SCIM, {invited} by invitations, {} by SSO",
        sso_ok.len()
    );
    assert_eq!(scim_ok + scim_refused, SCIM_USERS);
    assert_eq!(invited + invitations_refused, INVITATIONS);
    assert_eq!(sso_ok.len() + sso_refused, SSO_USERS);

    for base in &bases {
        let (s, seats) = api(&http, base, Method::GET, "/api/v1/seats", &key, None).await;
        assert_eq!(s, StatusCode::OK, "{seats}");
        assert_eq!(
            (seats["used"].as_i64(), seats["purchased"].as_i64()),
            (Some(PURCHASED), Some(PURCHASED)),
            "{seats}"
        );
        assert_eq!((seats["available"].as_i64(), seats["overage"].as_i64()), (Some(0), Some(0)), "{seats}");
        assert_eq!(seats["active_members"].as_u64(), Some((1 + scim_ok + sso_ok.len()) as u64), "{seats}");
        assert_eq!(seats["pending_invitations"].as_u64(), Some(invited as u64), "{seats}");
    }

    // Who got in is who the doors said got in.
    let (s, members) = api(&http, &a.base, Method::GET, "/api/v1/members?limit=200", &key, None).await;
    assert_eq!(s, StatusCode::OK, "{members}");
    let members = members["items"].as_array().unwrap().clone();
    let by_source = |source: &str| members.iter().filter(|m| m["source"] == source).count();
    assert_eq!((by_source("scim"), by_source("sso")), (scim_ok, sso_ok.len()), "{members:?}");
    // An auto-assigned member's code is good on either process and names the new member.
    for (login, code) in &sso_ok {
        let res = http
            .post(format!("{}/sso/token", bases[*login % 2]))
            .basic_auth(&client_id, Some(&client_secret))
            .form(&[("grant_type", "authorization_code"), ("code", code.as_str())])
            .send()
            .await
            .unwrap();
        let (s, profile) = read(res).await;
        assert_eq!(s, StatusCode::OK, "{profile}");
        assert_eq!(profile["email"], format!("sso{login}@{DOMAIN}"));
        assert_eq!((profile["role"].as_str(), profile["member_status"].as_str()), (Some("read"), Some("active")));
        assert!(members.iter().any(|m| m["email"] == profile["email"] && m["source"] == "sso"), "{profile}");
    }

    // Each refusal is audited once, as what it was.
    let audit = audit_log(&http, &b.base, &key).await;
    let count = |action: &str| audit.iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("scim.user.refused_seat_limit"), scim_refused);
    let no_seat =
        audit.iter().filter(|r| r["action"] == "sso.login_refused" && r["after"]["reason"] == "no_free_seat").count();
    assert_eq!((count("sso.login_refused"), no_seat), (sso_refused, sso_refused));
    assert_eq!(count("sso.login"), bases.len() + sso_ok.len(), "the Owner's logins and the new members'");
    assert_eq!(count("invitation.created"), invited);
}

/// The background reconciler's runs, oldest first: holder, start and summary.
async fn reconcile_runs(db: &mut sqlx::PgConnection) -> Vec<(String, chrono::DateTime<chrono::Utc>, Value)> {
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>, Option<sqlx::types::Json<Value>>)> = sqlx::query_as(
        "SELECT holder, started_at, summary FROM job_runs WHERE job = 'reconcile' ORDER BY started_at, id",
    )
    .fetch_all(db)
    .await
    .expect("read job_runs");
    rows.into_iter().map(|(holder, at, summary)| (holder, at, summary.map_or(Value::Null, |s| s.0))).collect()
}

/// Two `roster serve` processes with background jobs on one PostgreSQL,
/// ticking every second with a reconcile interval of four: the reconciler
/// runs once per interval across both (not once per tick per process), and
/// a seat overage under automatic enforcement is cut once — the one made
/// before the processes started and the one made while they ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_reconcile_runs_once_per_interval_across_two_processes() {
    use roster::clock::{Clock, SystemClock};
    use sqlx::Connection;
    const INTERVAL_SECS: i64 = 4;
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("background_reconcile_runs_once_per_interval_across_two_processes: needs DATABASE_URL=postgres://…; covered by the PostgreSQL run");
        return;
    }
    let created = run_json(
        &db.url,
        &["org", "create", "--name", "Cut", "--seats", "10", "--owner-email", "owner@cut.example.com"],
    );
    let key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();

    // Six members joined in this order, then the seats are lowered to four
    // (seven in use) under automatic enforcement: an overage of three, with
    // no background job running yet.
    let setup = Server::start_with(&db.url, &[("ROSTER_LISTEN", "127.0.0.1:0"), ("ROSTER_BACKGROUND_JOBS", "false")]);
    let mut ids = std::collections::BTreeMap::new();
    for (name, role) in
        [("a1", "admin"), ("r1", "read"), ("w1", "write"), ("a2", "admin"), ("r2", "read"), ("r3", "read")]
    {
        let body = json!({"email": format!("{name}@cut.example.com"), "role": role});
        let (s, member) = api(&http, &setup.base, Method::POST, "/api/v1/members", &key, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{member}");
        ids.insert(name, member["id"].as_str().unwrap().to_string());
    }
    let name_of = |id: &str| *ids.iter().find(|(_, v)| v.as_str() == id).unwrap_or_else(|| panic!("{id}")).0;
    // The seats are sold: the deployment's billing lowers them with its operator key.
    let operator = run_json(&db.url, &["operator-key", "create", "--name", "billing"]);
    let sell = |base: &str, body: Value| {
        http.put(format!("{base}/api/v1/seats"))
            .bearer_auth(operator["secret"].as_str().unwrap())
            .header("roster-organization", created["organization"]["id"].as_str().unwrap())
            .json(&body)
            .send()
    };
    let change = json!({"purchased": 4, "enforcement": "automatic"});
    let (s, seats) = read(sell(&setup.base, change).await.expect("request")).await;
    assert_eq!(s, StatusCode::OK, "{seats}");
    assert_eq!((seats["used"].as_i64(), seats["overage"].as_i64()), (Some(7), Some(3)), "{seats}");
    assert_eq!((seats["policy"].as_str(), seats["enforcement"].as_str()), (Some("strict"), Some("automatic")));
    // The plan cuts the three most recently joined non-Admins.
    let (s, plan) = api(&http, &setup.base, Method::GET, "/api/v1/reconcile/plan", &key, None).await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    let mut planned: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["action"], "suspend_member", "{plan}");
            name_of(c["member"].as_str().unwrap())
        })
        .collect();
    planned.sort_unstable();
    assert_eq!(planned, ["r2", "r3", "w1"], "{plan}");
    assert!(setup.terminate());

    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    assert!(reconcile_runs(&mut conn).await.is_empty(), "nothing ran while background jobs were off");

    let started = SystemClock.now();
    let interval = INTERVAL_SECS.to_string();
    let jobs = [
        ("ROSTER_LISTEN", "127.0.0.1:0"),
        ("ROSTER_BACKGROUND_JOBS", "true"),
        ("ROSTER_JOB_TICK_SECS", "1"),
        ("ROSTER_RECONCILE_INTERVAL_SECS", interval.as_str()),
    ];
    let a = Server::start_with(&db.url, &jobs);
    let b = Server::start_with(&db.url, &jobs);
    let status_of = |id: String| {
        let (http, base, key) = (http.clone(), a.base.clone(), key.clone());
        async move {
            let (s, m) = api(&http, &base, Method::GET, &format!("/api/v1/members/{id}"), &key, None).await;
            assert_eq!(s, StatusCode::OK, "{m}");
            m["status"].as_str().unwrap().to_string()
        }
    };
    // Generous deadlines: they only bound how long a broken build hangs.
    let deadline = started + chrono::Duration::seconds(120);
    let applied = |runs: &[(String, chrono::DateTime<chrono::Utc>, Value)]| {
        runs.iter().map(|(_, _, s)| s["applied"].as_u64().unwrap_or(0)).sum::<u64>()
    };

    // The first run cuts the overage made before the processes started ...
    loop {
        let mut suspended = 0;
        for name in ["r3", "r2", "w1"] {
            suspended += usize::from(status_of(ids[name].clone()).await == "suspended");
        }
        if suspended == 3 {
            break;
        }
        assert!(SystemClock.now() < deadline, "the overage was not cut: {:?}", reconcile_runs(&mut conn).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // ... and a later run the one made while they run.
    let (s, seats) = read(sell(&b.base, json!({"purchased": 3})).await.expect("request")).await;
    assert_eq!((s, seats["overage"].as_i64()), (StatusCode::OK, Some(1)), "{seats}");
    // Until both cuts are in the job_runs summaries, at least three runs are
    // recorded, and the processes have run for more than three intervals.
    loop {
        let runs = reconcile_runs(&mut conn).await;
        let ran_for = SystemClock.now() - started;
        if applied(&runs) >= 4 && runs.len() >= 3 && ran_for > chrono::Duration::seconds(3 * INTERVAL_SECS + 1) {
            break;
        }
        assert!(SystemClock.now() < deadline, "the reconciler did not run three times and cut twice: {runs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(a.terminate() && b.terminate(), "both processes exit cleanly");
    let ended = SystemClock.now();

    let runs = reconcile_runs(&mut conn).await;
    let elapsed = ended - started;
    for (holder, at, summary) in &runs {
        eprintln!("reconcile run at +{} ms by {holder}: {summary}", (*at - started).num_milliseconds());
    }
    let interval = chrono::Duration::seconds(INTERVAL_SECS);
    // Both processes read the same system clock; timestamps are kept to the microsecond.
    let tolerance = chrono::Duration::milliseconds(50);
    for (_, at, summary) in &runs {
        assert!(*at >= started - tolerance && *at <= ended + tolerance, "{at} outside {started}..{ended}");
        assert!(summary.get("error").is_none(), "{summary}");
        assert_eq!(summary["left_for_admins"], 0, "automatic enforcement leaves nothing: {summary}");
    }
    for pair in runs.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= interval - tolerance, "two runs {gap} apart, less than the interval: {runs:?}");
    }
    // Once per interval: at most one run at the start and one per interval
    // after it (every tick of each process would be about two a second). The
    // lower bound is the three runs waited for above: a bound on elapsed time
    // would only measure how busy the machine is.
    let at_most = elapsed.num_milliseconds() / interval.num_milliseconds() + 1;
    assert!(
        runs.len() >= 3 && runs.len() as i64 <= at_most,
        "{} runs in {elapsed} with an interval of {interval} (at most {at_most}): {runs:?}",
        runs.len()
    );
    // Which process ran each is free, but only these two ran them.
    let holders: std::collections::BTreeSet<&str> = runs.iter().map(|(h, _, _)| h.as_str()).collect();
    assert!(holders.len() <= 2 && holders.iter().all(|h| h.starts_with("replica-")), "{holders:?}");
    // Each cut was applied by exactly one run.
    let cutting: Vec<u64> = runs.iter().filter_map(|(_, _, s)| s["applied"].as_u64().filter(|n| *n > 0)).collect();
    assert_eq!(cutting, [3, 1], "{runs:?}");

    // The audit log has each cut once, with the reconciler's reason.
    let check = Server::start_with(&db.url, &[("ROSTER_LISTEN", "127.0.0.1:0"), ("ROSTER_BACKGROUND_JOBS", "false")]);
    let audit = audit_log(&http, &check.base, &key).await;
    let suspended: Vec<&Value> = audit.iter().filter(|r| r["action"] == "member.suspended").collect();
    let mut cut: Vec<&str> = suspended.iter().map(|r| name_of(r["target"].as_str().unwrap())).collect();
    cut.sort_unstable();
    assert_eq!(cut, ["r1", "r2", "r3", "w1"], "each cut once, not once per process: {suspended:?}");
    for r in &suspended {
        assert!(r["after"]["reconcile_reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        assert!(r["actor_id"].as_str().unwrap().starts_with("reconciler:replica-"), "{r}");
    }
    assert_eq!(audit.iter().filter(|r| r["action"] == "reconcile.applied").count(), 2);
    let (_, seats) = api(&http, &check.base, Method::GET, "/api/v1/seats", &key, None).await;
    assert_eq!(
        (seats["purchased"].as_i64(), seats["used"].as_i64(), seats["active_members"].as_i64()),
        (Some(3), Some(3), Some(3)),
        "{seats}"
    );
    for name in ["a1", "a2"] {
        let (_, m) = api(&http, &check.base, Method::GET, &format!("/api/v1/members/{}", ids[name]), &key, None).await;
        assert_eq!(m["status"], "active", "Admins are cut last: {m}");
    }
}

/// The members' emails an organization's API key lists (the first page of 200).
async fn member_emails(http: &reqwest::Client, base: &str, key: &str) -> std::collections::BTreeSet<String> {
    let (status, page) = api(http, base, Method::GET, "/api/v1/members?limit=200", key, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().expect("items").iter().map(|m| m["email"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_the_data_it_held() {
    let db = TestDb::new().await;
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("roster-backup.db");
    let backup_arg = backup.to_str().unwrap().to_string();
    if db.is_postgres() {
        let out = roster(&db.url).args(["backup", "--to", &backup_arg]).output().expect("run");
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"), "points to PostgreSQL's tools");
        return;
    }
    let created = run_json(
        &db.url,
        &["org", "create", "--name", "Kept", "--seats", "100", "--owner-email", "o@kept.example.com"],
    );
    let key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let server = Server::start(&db.url);
    let http = reqwest::Client::new();
    // Members join one after another while the backup is taken.
    let writer = {
        let (http, base, key) = (http.clone(), server.base.clone(), key.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                let body = json!({"email": format!("m{i:02}@kept.example.com"), "role": "read"});
                let (s, b) = api(&http, &base, Method::POST, "/api/v1/members", &key, Some(body)).await;
                assert_eq!(s, StatusCode::CREATED, "{b}");
            }
        })
    };
    while member_emails(&http, &server.base, &key).await.len() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let url = db.url.clone();
    let arg = backup_arg.clone();
    let report = tokio::task::spawn_blocking(move || run_json(&url, &["backup", "--to", &arg])).await.unwrap();
    writer.await.unwrap();
    assert!(report["bytes"].as_u64().unwrap() > 0 && report["migration"].as_i64().unwrap() > 0, "{report}");
    let all = member_emails(&http, &server.base, &key).await;
    assert_eq!(all.len(), 41);

    // Refused: an existing file as the target, a restore while the server runs, a file that is no backup.
    let refused = |args: &[&str]| {
        let out = roster(&db.url).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(refused(&["backup", "--to", &backup_arg]).contains("exists already"));
    assert!(refused(&["restore", "--from", &backup_arg]).contains("in use by a running roster process"));
    let junk = work.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all").unwrap();
    assert!(refused(&["restore", "--from", junk.to_str().unwrap()]).contains("junk.db"));
    assert_eq!(member_emails(&http, &server.base, &key).await, all, "the refusals changed nothing");

    // Stopped, restored, started: exactly the members of the backup's moment,
    // the first ones to join (a consistent snapshot, not a torn copy).
    assert!(server.terminate());
    let restored = run_json(&db.url, &["restore", "--from", &backup_arg]);
    assert!(restored["previous"].as_str().unwrap().ends_with(".before-restore"), "{restored}");
    let server = Server::start(&db.url);
    let kept = member_emails(&http, &server.base, &key).await;
    assert!((10..=41).contains(&kept.len()), "{} members in the backup", kept.len());
    let joined = kept.len() - 1;
    let expected: std::collections::BTreeSet<String> = std::iter::once("o@kept.example.com".to_string())
        .chain((0..joined).map(|i| format!("m{i:02}@kept.example.com")))
        .collect();
    assert_eq!(kept, expected);
    // Writes go on after the restore.
    let body = json!({"email": "after@kept.example.com", "role": "read"});
    assert_eq!(
        api(&http, &server.base, Method::POST, "/api/v1/members", &key, Some(body)).await.0,
        StatusCode::CREATED
    );
}
