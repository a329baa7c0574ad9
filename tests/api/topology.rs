//! The documented production topology on one machine, without containers:
//! PostgreSQL, two `roster serve` replicas (default configuration, so both
//! run the background jobs) and nginx in front, as `compose.yaml` and the
//! Kubernetes manifests lay it out. An identity provider's SCIM load and
//! people's single sign-on logins go through the proxy while one replica
//! is stopped (SIGTERM, as a rolling upgrade or a node drain does) and
//! started again: nothing fails but requests in flight on the stopping
//! replica, and their retries succeed.
//!
//! Runs on PostgreSQL only (`DATABASE_URL=postgres://…`): replicas share
//! nothing but the database, and SQLite is a single process's store.

use crate::cli::{roster, run_json, Server};
use crate::helpers::*;
use crate::oidc_provider::{query_param, Browser, OidcProvider, ProviderClient, ProviderConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the product's browser lands after sign-in; never requested.
const PRODUCT: &str = "http://127.0.0.1:9/app/callback";
const TENANT: &str = "T-acme";
/// SCIM clients pushing at once (an identity provider's parallel workers).
const SCIM_WORKERS: usize = 3;
/// People signing in at once.
const SSO_WORKERS: usize = 1;
/// Operations each worker completes in every phase (both up, one stopped,
/// both up again) before the next phase starts.
const PER_PHASE: usize = 12;
/// Attempts of one operation: the first, then retries after a gateway error.
const ATTEMPTS: usize = 5;

/// A port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nginx as a child process with a configuration of its own; stopped when dropped.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(listen: u16, upstreams: &[u16]) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is not installed: scripts/test.sh installs Debian's nginx");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let servers: String =
            upstreams.iter().map(|p| format!("server 127.0.0.1:{p} max_fails=1 fail_timeout=2s; ")).collect();
        // As deploy/ documents: round robin over the replicas with kept-alive
        // connections; a replica that refuses a connection is skipped and
        // the request goes to the next.
        let conf = format!(
            "worker_processes 1;\n\
             error_log {d}/error.log warn;\n\
             pid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               upstream roster {{ {servers} keepalive 16; }}\n\
               server {{\n\
                 listen 127.0.0.1:{listen};\n\
                 location / {{\n\
                   proxy_pass http://roster;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_set_header Host $http_host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                   proxy_set_header X-Forwarded-Proto $scheme;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(binary)
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c", &format!("{d}/nginx.conf")])
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run nginx");
        Nginx { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-QUIT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// The outcome of one operation, however many attempts it took.
#[derive(Debug, Clone)]
struct Outcome {
    what: String,
    /// The statuses of the attempts that failed with a gateway error.
    retried: Vec<u16>,
    /// Why it failed for good, if it did.
    failure: Option<String>,
}

/// A gateway's answer for an upstream that failed: the request may be retried.
fn is_gateway_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// What the load saw, shared by the workers.
#[derive(Default)]
struct Tally {
    outcomes: Mutex<Vec<Outcome>>,
    /// SCIM cycles done.
    scim: AtomicUsize,
    /// SSO logins done.
    sso: AtomicUsize,
}

/// How many of each kind of operation were done at one moment.
#[derive(Debug, Clone, Copy)]
struct Done {
    scim: usize,
    sso: usize,
}

impl Tally {
    fn record(&self, outcome: Outcome) {
        let counter = if outcome.what == "SSO login" { &self.sso } else { &self.scim };
        self.outcomes.lock().unwrap().push(outcome);
        counter.fetch_add(1, Ordering::SeqCst);
    }

    fn done(&self) -> Done {
        Done { scim: self.scim.load(Ordering::SeqCst), sso: self.sso.load(Ordering::SeqCst) }
    }

    /// Waits until, since `from`, every SCIM worker and every person signing
    /// in has done `PER_PHASE` operations on average: a phase holds both kinds
    /// of load, however much slower one is than the other.
    async fn wait_for_phase(&self, from: Done) {
        let enough = |now: Done| {
            now.scim >= from.scim + PER_PHASE * SCIM_WORKERS && now.sso >= from.sso + PER_PHASE * SSO_WORKERS
        };
        for _ in 0..6000 {
            if enough(self.done()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the load stalled: {:?} done since {from:?}", self.done());
    }
}

/// One SCIM request through the proxy, retried on a gateway error.
async fn scim_call(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    retried: &mut Vec<u16>,
) -> Result<(StatusCode, Value), String> {
    for _ in 0..ATTEMPTS {
        let mut req = client.request(method.clone(), format!("{base}/scim/v2{path}")).bearer_auth(token);
        if let Some(body) = body {
            req = req.header("content-type", "application/scim+json").body(body.to_string());
        }
        let res = req.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| format!("{method} {path}: {e}"))?;
        if is_gateway_error(status) {
            retried.push(status.as_u16());
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        return Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
    }
    Err(format!("{method} {path}: still a gateway error after {ATTEMPTS} attempts"))
}

/// An identity provider's cycle: create a User, look it up by `userName`,
/// read a page of Users. A create retried after its first attempt landed
/// meets the User it made (409 uniqueness), as Okta and Entra then do: it
/// finds it by `userName`.
async fn scim_cycle(client: &reqwest::Client, base: &str, token: &str, name: &str) -> Outcome {
    let mut retried = Vec::new();
    let result: Result<(), String> = async {
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "name": {"givenName": "Load", "familyName": "Test"},
            "emails": [{"value": name, "type": "work", "primary": true}],
            "active": true,
        });
        let (status, body) = scim_call(client, base, token, Method::POST, "/Users", Some(&user), &mut retried).await?;
        let created_earlier = status == StatusCode::CONFLICT && !retried.is_empty();
        if status != StatusCode::CREATED && !created_earlier {
            return Err(format!("create {name}: {status} {body}"));
        }
        let filter = format!("/Users?filter=userName%20eq%20%22{}%22", name.replace('@', "%40"));
        let (status, found) = scim_call(client, base, token, Method::GET, &filter, None, &mut retried).await?;
        if status != StatusCode::OK || found["totalResults"] != 1 {
            return Err(format!("look-up of {name}: {status} {found}"));
        }
        let (status, page) =
            scim_call(client, base, token, Method::GET, "/Users?startIndex=1&count=50", None, &mut retried).await?;
        if status != StatusCode::OK || page["Resources"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!("list page: {status} {page}"));
        }
        Ok(())
    }
    .await;
    Outcome { what: format!("SCIM {name}"), retried, failure: result.err() }
}

/// A person signing in through the proxy from a fresh browser, and the
/// product redeeming the code. A login stopped by a gateway error is
/// started again from the product's link, as a person clicks again.
/// A browser whose requests reach the proxy from `address` (a person on
/// the Internet: the proxy adds the address it saw to what the header says;
/// Roster trusts the proxy, so rate limits key on the person).
fn browser_from(address: &str) -> Browser {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", address.parse().unwrap());
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Browser { client }
}

async fn sso_login(base: &str, client_id: &str, client_secret: &str, n: usize) -> Outcome {
    let redirect: String = url::form_urlencoded::byte_serialize(PRODUCT.as_bytes()).collect();
    let start = format!("{base}/sso/authorize?tenant={TENANT}&redirect_uri={redirect}&state=product-state");
    let mut retried = Vec::new();
    let mut failure = Some(format!("still a gateway error after {ATTEMPTS} attempts"));
    for attempt in 0..ATTEMPTS {
        let browser = browser_from(&format!("198.51.{}.{}", attempt, n % 250 + 1));
        let back = match browser.follow(&start, "ada", PRODUCT).await {
            Ok(back) => back,
            Err(stopped) if is_gateway_error(stopped.status) => {
                retried.push(stopped.status.as_u16());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(stopped) => {
                failure = Some(format!("login stopped at {}: {} {}", stopped.url, stopped.status, stopped.body));
                break;
            }
        };
        let Some(code) = query_param(&back, "code") else {
            failure = Some(format!("no code in {back}"));
            break;
        };
        let res = browser
            .client
            .post(format!("{base}/sso/token"))
            .basic_auth(client_id, Some(client_secret))
            .form(&[("grant_type", "authorization_code"), ("code", code.as_str())])
            .send()
            .await;
        let (status, profile) = match res {
            Ok(res) => (res.status(), res.json::<Value>().await.unwrap_or(Value::Null)),
            Err(e) => {
                failure = Some(format!("redeem: {e}"));
                break;
            }
        };
        if is_gateway_error(status) {
            retried.push(status.as_u16());
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        failure = match (status, profile["email"].as_str()) {
            (StatusCode::OK, Some("ada@acme.example.com")) => None,
            _ => Some(format!("redeem: {status} {profile}")),
        };
        break;
    }
    Outcome { what: "SSO login".into(), retried, failure }
}

/// The requests a replica served on `route` so far, from its `/metrics`.
async fn served(client: &reqwest::Client, replica: &str, route: &str) -> f64 {
    let text = client.get(format!("{replica}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("roster_http_requests_total{") && l.contains(&format!("route=\"{route}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn scim_and_sso_through_a_proxy_survive_a_replica_restart() {
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("the topology test runs on PostgreSQL (DATABASE_URL=postgres://…); skipped on SQLite");
        return;
    }
    let (proxy_port, ports) = (free_port(), [free_port(), free_port()]);
    let base = format!("http://127.0.0.1:{proxy_port}");
    let idp = OidcProvider::start(
        &ProviderConfig::new()
            .client(ProviderClient::new("roster", "roster-secret", &format!("{base}/sso/callback")))
            .account(
                "ada",
                json!({"email": "ada@acme.example.com", "email_verified": true, "tenants": {TENANT: {"roles": ["write"]}}}),
            ),
    )
    .await;

    // The migration Job, then the back office's organization.
    let migrated = roster(&db.url).arg("migrate").output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let org = run_json(
        &db.url,
        &["org", "create", "--name", "Acme", "--seats", "1000", "--owner-email", "owner@acme.example.com"],
    );
    let org_id = org["organization"]["id"].as_str().unwrap().to_string();
    let owner_key = org["api_key"]["secret"].as_str().unwrap().to_string();
    let token = run_json(&db.url, &["scim-token", "create", "--org", &org_id, "--name", "idp"])["secret"]
        .as_str()
        .unwrap()
        .to_string();

    let listen: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let start_replica = |listen: &str| {
        Server::start_with(
            &db.url,
            &[
                ("ROSTER_LISTEN", listen),
                ("ROSTER_PUBLIC_BASE_URL", &base),
                ("ROSTER_SSO_DEV_MODE", "true"),
                ("ROSTER_TENANT_CONNECTION__ISSUER", &idp.issuer),
                ("ROSTER_TENANT_CONNECTION__CLIENT_ID", "roster"),
                ("ROSTER_TENANT_CONNECTION__CLIENT_SECRET", "roster-secret"),
                ("ROSTER_TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
            ],
        )
    };
    let mut first = Some(start_replica(&listen[0]));
    let second = start_replica(&listen[1]);
    let _nginx = Nginx::start(proxy_port, &ports);
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "nginx did not pass /readyz through");

    // The organization's Admin, through the proxy: SSO by tenant ID and the
    // product's client; the identity provider provisions Ada.
    let call = |method: Method, path: &str, body: Value| {
        client.request(method, format!("{base}{path}")).bearer_auth(&owner_key).json(&body).send()
    };
    let sso = json!({"tenant_id": TENANT, "enforce": false, "auto_assign": false, "default_role": "read"});
    let res = call(Method::PUT, "/api/v1/organization/sso", sso).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    let res = call(Method::POST, "/api/v1/sso/clients", json!({"name": "Product", "redirect_uris": [PRODUCT]}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let product: Value = res.json().await.unwrap();
    let (client_id, client_secret) =
        (product["id"].as_str().unwrap().to_string(), product["client_secret"].as_str().unwrap().to_string());
    let ada = scim_cycle(&client, &base, &token, "ada@acme.example.com").await;
    assert!(ada.failure.is_none() && ada.retried.is_empty(), "{ada:?}");

    // The load, until told to stop.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..SCIM_WORKERS {
        let (client, base, token, tally, stop) =
            (client.clone(), base.clone(), token.clone(), tally.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                tally.record(scim_cycle(&client, &base, &token, &format!("w{w}-{i}@acme.example.com")).await);
            }
        }));
    }
    for _ in 0..SSO_WORKERS {
        let (base, id, secret, tally, stop) =
            (base.clone(), client_id.clone(), client_secret.clone(), tally.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                tally.record(sso_login(&base, &id, &secret, n).await);
            }
        }));
    }
    // Both replicas serving.
    tally.wait_for_phase(Done { scim: 0, sso: 0 }).await;
    // A rolling restart: the first replica is told to stop, finishes what it
    // has in flight and exits; the load goes on through the other.
    let stopping = tally.done();
    let clean = first.take().unwrap().terminate();
    assert!(clean, "the stopped replica did not exit cleanly");
    tally.wait_for_phase(stopping).await;
    // Started again on its address: the proxy sends it requests again.
    let restarted = start_replica(&listen[0]);
    let direct = format!("http://{}", listen[0]);
    let before = served(&client, &direct, "/scim/v2/Users").await;
    let back = tally.done();
    tally.wait_for_phase(back).await;
    let mut rejoined = served(&client, &direct, "/scim/v2/Users").await - before;
    for _ in 0..200 {
        if rejoined > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        rejoined = served(&client, &direct, "/scim/v2/Users").await - before;
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let outcomes = tally.outcomes.lock().unwrap().clone();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    assert!(failed.is_empty(), "{} of {} operations failed: {failed:#?}", failed.len(), outcomes.len());
    // Only requests in flight on the stopping replica may fail, each once:
    // at most one per worker.
    let retried: Vec<&Outcome> = outcomes.iter().filter(|o| !o.retried.is_empty()).collect();
    let attempts: usize = retried.iter().map(|o| o.retried.len()).sum();
    assert!(
        attempts <= SCIM_WORKERS + SSO_WORKERS,
        "{attempts} failed attempts for {} workers: {retried:#?}",
        SCIM_WORKERS + SSO_WORKERS
    );
    assert!(rejoined > 0.0, "the restarted replica served no SCIM request through the proxy");
    let sso_logins = outcomes.iter().filter(|o| o.what == "SSO login").count();
    assert!(sso_logins >= 3 * PER_PHASE, "{sso_logins} SSO logins");

    // Every User provisioned exactly once, whichever replica took it.
    let scim_users = outcomes.iter().filter(|o| o.what.starts_with("SCIM")).count() + 1;
    let (status, list) =
        scim_call(&client, &base, &token, Method::GET, "/Users?startIndex=1&count=1", None, &mut Vec::new())
            .await
            .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["totalResults"], scim_users, "{list}");
    eprintln!(
        "topology: {} operations ({sso_logins} SSO logins), {} retried after a gateway error",
        outcomes.len(),
        retried.len()
    );
    assert!(second.terminate() && restarted.terminate(), "a replica did not exit cleanly");
}
