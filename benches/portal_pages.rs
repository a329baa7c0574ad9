//! How fast the portal's pages render for an organization of 10,000
//! members: `roster serve` as a user runs it (default configuration,
//! background jobs on, a fresh SQLite database), the organization filled
//! through the admin API, then each page requested in turn by a signed-in
//! Owner over loopback.
//!
//! `cargo bench --bench portal_pages [-- MEMBERS [REQUESTS]]` prints p50 and
//! p99 per page (defaults: 10,000 members, 300 requests a page). Under
//! `cargo test` it does nothing.

use futures::StreamExt;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("portal_pages: a benchmark; run it with `cargo bench --bench portal_pages`");
        return;
    }
    let numbers: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let members = numbers.first().copied().unwrap_or(10_000);
    let requests = numbers.get(1).copied().unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(members, requests));
}

fn roster(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.env("ROSTER_DATABASE_URL", db_url).env("ROSTER_LOG_FORMAT", "json");
    cmd
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(members: usize, requests: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("roster.db").display());
    let created = roster(&db_url)
        .args(["--json", "org", "create", "--name", "Acme", "--owner-email", "owner@acme.example.com", "--seats"])
        .arg((members + 100).to_string())
        .output()
        .expect("roster org create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).expect("org create --json");
    let org = created["organization"]["id"].as_str().expect("organization id").to_string();
    let key = created["api_key"]["secret"].as_str().expect("api key").to_string();

    let mut child = roster(&db_url)
        .arg("serve")
        .env("ROSTER_LISTEN", "127.0.0.1:0")
        .env("ROSTER_MAIL_DIR", dir.path().join("mail"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("roster serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let _served = Served(child);
    let base = line.trim().strip_prefix("roster listening on ").expect("listening line").to_string();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    let started = Instant::now();
    let added = futures::stream::iter(0..members)
        .map(|i| {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            async move {
                let role = ["read", "write", "read", "admin"][i % 4];
                let res = http
                    .post(format!("{base}/api/v1/members"))
                    .bearer_auth(&key)
                    .json(&json!({"email": format!("user{i:05}@acme.example.com"), "role": role}))
                    .send()
                    .await
                    .expect("add member");
                assert_eq!(res.status(), reqwest::StatusCode::CREATED);
            }
        })
        .buffer_unordered(8)
        .count()
        .await;
    println!("portal_pages: {added} members added in {:.1?}", started.elapsed());

    let link = roster(&db_url)
        .args(["portal", "link", "--org", &org, "--email", "owner@acme.example.com"])
        .output()
        .expect("roster portal link");
    assert!(link.status.success(), "{}", String::from_utf8_lossy(&link.stderr));
    let link = String::from_utf8_lossy(&link.stdout).trim().to_string();
    let token = link.split("token=").nth(1).expect("token");
    let res = http
        .post(format!("{base}/signin/link"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("sign in");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("roster_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();

    let (_, page) = get(&http, &format!("{base}/portal/members"), &cookie).await;
    let member = page.split("href=\"/portal/members/").nth(1).and_then(|s| s.split('"').next()).expect("a member");
    let pages = [
        ("Home", "/portal".to_string()),
        ("Members, first page", "/portal/members".to_string()),
        ("Members, search", "/portal/members?q=user0777".to_string()),
        ("Members, Admins only", "/portal/members?role=admin".to_string()),
        ("Member", format!("/portal/members/{member}")),
        ("Billing", "/portal/billing".to_string()),
        ("Settings: domains", "/portal/settings/domains".to_string()),
        ("Audit log", "/portal/audit".to_string()),
    ];
    println!("portal_pages: {requests} requests a page, one at a time, {members} members, `roster serve` defaults");
    for (name, path) in pages {
        let url = format!("{base}{path}");
        let mut took = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            let (status, _) = get(&http, &url, &cookie).await;
            took.push(started.elapsed());
            assert_eq!(status, reqwest::StatusCode::OK, "{path}");
        }
        println!("  {name:<22} p50 {:>8.2?}  p99 {:>8.2?}", pct(&mut took, 50), pct(&mut took, 99));
    }
}

async fn get(http: &reqwest::Client, url: &str, cookie: &str) -> (reqwest::StatusCode, String) {
    let res = http.get(url).header("cookie", cookie).send().await.expect("page");
    let status = res.status();
    (status, res.text().await.expect("body"))
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[((v.len() * p).div_ceil(100)).saturating_sub(1).min(v.len() - 1)]
}
