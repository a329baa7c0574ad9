//! Setup links over HTTP: an organization's Owner or Admin sends its IT
//! admin a link to `/setup`, limited to the link's scopes (`sso`, `scim`,
//! `domains`). Creating, listing and revoking links (admin API and CLI),
//! what a link reaches and what it does not, expired and revoked links, the
//! SCIM request log (the Okta and Entra fixtures replayed through it, with
//! secrets and personal attributes masked), and a test sign-in through the
//! real OpenID provider that creates nobody. (`setup_browser.rs` drives the
//! same pages in Chromium.)

use crate::cli::{roster, run_json};
use crate::dns_server::TestDns;
use crate::helpers::*;
use crate::oidc_provider::{unescape_html, Browser as IdpBrowser, OidcProvider, ProviderClient, ProviderConfig};
use crate::portal::no_redirects;
use crate::scim_fixtures::{load, render, replay_steps, Loaded};
use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode};
use roster::clock::{Clock, ManualClock, SystemClock};
use roster::model::Role;
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

const ALL: [&str; 3] = ["sso", "scim", "domains"];
/// What every masked value of a logged SCIM body reads.
const MASK: &str = "•••";
/// The User-Agent Okta's provisioning sends.
const OKTA_AGENT: &str = "Okta SCIM Client 1.0.0";

// ---------------------------------------------------------------------------
// Helpers

/// Creates a setup link through the admin API; the 201 body.
async fn create_link(app: &TestApp, key: &str, scopes: &[&str], hours: Option<i64>) -> Value {
    let mut body = json!({ "scopes": scopes });
    if let Some(hours) = hours {
        body["expires_in_hours"] = json!(hours);
    }
    let (status, link) = app.post("/api/v1/setup-links", key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    link
}

/// The organization's setup links, as the admin API lists them.
async fn links(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/setup-links", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap_or_else(|| panic!("no items in {body}")).clone()
}

fn listed<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items.iter().find(|l| l["id"] == id).unwrap_or_else(|| panic!("link {id} is not listed: {items:?}"))
}

/// The path of a link's URL: `/setup/rsl_…`.
fn link_path(link: &Value) -> String {
    let url = link["url"].as_str().unwrap_or_else(|| panic!("no url in {link}"));
    let at = url.find("/setup/rsl_").unwrap_or_else(|| panic!("not a setup link URL: {url}"));
    url[at..].to_string()
}

/// The link's token, `rsl_…`.
fn link_token(link: &Value) -> String {
    link_path(link).trim_start_matches("/setup/").to_string()
}

fn scopes_of(link: &Value) -> BTreeSet<String> {
    link["scopes"]
        .as_array()
        .unwrap_or_else(|| panic!("no scopes in {link}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")).parse().unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// Whether two instants are within a second of each other.
fn near(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).num_milliseconds().abs() <= 1000
}

/// What Roster answered for a setup page.
struct Page {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    html: String,
}

async fn into_page(res: reqwest::Response) -> Page {
    let status = res.status();
    let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_string());
    let set_cookies =
        res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    let html = res.text().await.unwrap();
    Page { status, location, set_cookies, html }
}

/// GET a page, with the `roster_setup` cookie when given; redirects are not followed.
async fn get(app: &TestApp, cookie: Option<&str>, path: &str) -> Page {
    let mut req = no_redirects().get(app.url(path));
    if let Some(cookie) = cookie {
        req = req.header("cookie", format!("roster_setup={cookie}"));
    }
    into_page(req.send().await.unwrap()).await
}

/// POST a form, with the `roster_setup` cookie when given.
async fn post(app: &TestApp, cookie: Option<&str>, path: &str, fields: &[(&str, &str)]) -> Page {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let mut req =
        no_redirects().post(app.url(path)).header("content-type", "application/x-www-form-urlencoded").body(body);
    if let Some(cookie) = cookie {
        req = req.header("cookie", format!("roster_setup={cookie}"));
    }
    into_page(req.send().await.unwrap()).await
}

/// The page a form's answer leads to: itself, or where its 303 points.
async fn settle(app: &TestApp, cookie: &str, page: Page) -> Page {
    if page.status == StatusCode::SEE_OTHER {
        let to = page.location.clone().expect("a 303 with a Location");
        let path = to.strip_prefix(&app.url("")).unwrap_or(&to).to_string();
        get(app, Some(cookie), &path).await
    } else {
        page
    }
}

/// The value a response gives the `roster_setup` cookie.
fn setup_cookie(page: &Page) -> Option<String> {
    page.set_cookies
        .iter()
        .find_map(|c| c.strip_prefix("roster_setup="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
}

/// Opens a link as a browser does: a 303 to `/setup` that sets the cookie; returns the cookie.
async fn open(app: &TestApp, link: &Value) -> String {
    let page = get(app, None, &link_path(link)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
    let to = page.location.clone().unwrap_or_default();
    assert!(to == "/setup" || to == app.url("/setup"), "to {to}");
    setup_cookie(&page).unwrap_or_else(|| panic!("no roster_setup cookie in {:?}", page.set_cookies))
}

/// Every opening tag `<name …>` in `html`.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}");
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = html[at..].find(&open) {
        let start = at + i;
        let after = start + open.len();
        match html.as_bytes().get(after) {
            Some(b) if b.is_ascii_whitespace() || *b == b'>' || *b == b'/' => {
                let end = html[start..].find('>').map_or(html.len(), |e| start + e + 1);
                found.push(&html[start..end]);
                at = end;
            }
            _ => at = after,
        }
    }
    found
}

/// The value of attribute `name` in an opening tag (double-quoted, entities resolved).
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let mut at = 0;
    while let Some(i) = tag[at..].find(&key) {
        let start = at + i;
        let boundary = start > 0 && tag.as_bytes()[start - 1].is_ascii_whitespace();
        let value_start = start + key.len();
        if boundary {
            let end = tag[value_start..].find('"').map_or(tag.len(), |e| value_start + e);
            return Some(unescape_html(&tag[value_start..end]));
        }
        at = value_start;
    }
    None
}

fn has_class(tag: &str, class: &str) -> bool {
    attr(tag, "class").is_some_and(|c| c.split_whitespace().any(|c| c == class))
}

/// The text of the element whose opening tag starts at `open_at`: its content up to its
/// closing tag, other tags removed, entities resolved, whitespace collapsed.
fn element_text(html: &str, open_at: usize) -> Option<String> {
    let name: String =
        html[open_at + 1..].chars().take_while(|c| !c.is_ascii_whitespace() && *c != '>' && *c != '/').collect();
    let open_end = open_at + html[open_at..].find('>')? + 1;
    let close = open_end + html[open_end..].find(&format!("</{name}"))?;
    let mut text = String::new();
    let mut in_tag = false;
    for c in html[open_end..close].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(unescape_html(&text).split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The text of the element with this id.
fn by_id(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    element_text(html, html[..at].rfind('<')?)
}

/// The opening tag of the element with this id.
fn tag_by_id(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')? + 1;
    Some(html[start..end].to_string())
}

fn has_id(html: &str, id: &str) -> bool {
    html.contains(&format!("id=\"{id}\""))
}

/// The page's `<h1 id="page-title">`.
fn title(page: &Page) -> String {
    by_id(&page.html, "page-title").unwrap_or_else(|| panic!("no #page-title ({}): {}", page.status, page.html))
}

/// The CSRF token of the page's forms.
fn csrf(html: &str) -> String {
    tags(html, "input")
        .into_iter()
        .find(|t| attr(t, "name").as_deref() == Some("csrf"))
        .and_then(|t| attr(t, "value"))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("no form with a csrf field: {html}"))
}

/// Whether the checklist item `check` is done (`li[data-check=…][data-done=…]`).
fn done(html: &str, check: &str) -> bool {
    let item = tags(html, "li")
        .into_iter()
        .find(|t| attr(t, "data-check").as_deref() == Some(check))
        .unwrap_or_else(|| panic!("no checklist item {check}: {html}"));
    match attr(item, "data-done").as_deref() {
        Some("true") => true,
        Some("false") => false,
        other => panic!("data-done of {check} is {other:?}: {item}"),
    }
}

/// The `a.provider[data-provider]` names a page lists.
fn providers(html: &str) -> BTreeSet<String> {
    tags(html, "a").into_iter().filter(|t| has_class(t, "provider")).filter_map(|t| attr(t, "data-provider")).collect()
}

/// The value cell of the claims row `tr[data-claim=name]`.
fn claim(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("data-claim=\"{name}\""))?;
    let row_end = at + html[at..].find("</tr>")?;
    let row = &html[at..row_end];
    let mut offset = 0;
    while let Some(i) = row[offset..].find("<td") {
        let start = offset + i;
        let tag_end = start + row[start..].find('>')? + 1;
        if has_class(&row[start..tag_end], "value") {
            return element_text(row, start);
        }
        offset = tag_end;
    }
    None
}

fn owner_email(name: &str) -> String {
    format!("owner@{}.example.com", name.to_lowercase())
}

/// The organization's SCIM tokens, as the admin API lists them.
async fn scim_tokens(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/scim-tokens", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap_or_else(|| panic!("not a list: {body}")).clone()
}

async fn domains(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/domains", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap_or_else(|| panic!("not a list: {body}")).clone()
}

/// A SCIM request with a bearer token; the status and the body.
async fn scim(app: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token).header("user-agent", OKTA_AGENT);
    if let Some(body) = body {
        req = req.header("content-type", "application/scim+json").body(body.to_string());
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The organization's SCIM request log, newest first, once it holds at least
/// `expected` requests (the log is written in the background) or 5 s have passed.
async fn scim_log(app: &TestApp, key: &str, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, body) = app.get("/api/v1/scim/requests", key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["items"].as_array().unwrap_or_else(|| panic!("no items in {body}")).clone();
        if items.len() >= expected || Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A logged request body as JSON (the API may give it as a JSON value or as its text).
fn logged_body(item: &Value) -> Value {
    match &item["body"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        other => other.clone(),
    }
}

/// Runs `sql` (one `$1` parameter, one count) against the app's database.
async fn count(app: &TestApp, sql: &str, param: &str) -> i64 {
    let (n,): (i64,) = if app.db_url().starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(app.db_url()).await.expect("connect");
        sqlx::query_as(sql).bind(param).fetch_one(&mut conn).await.expect("count")
    } else {
        let mut conn = sqlx::SqliteConnection::connect(app.db_url()).await.expect("connect");
        sqlx::query_as(sql).bind(param).fetch_one(&mut conn).await.expect("count")
    };
    n
}

/// Every page a link holder may open, by scope.
const PAGES: [&str; 7] = [
    "/setup",
    "/setup/sso",
    "/setup/sso/generic",
    "/setup/scim",
    "/setup/scim/okta",
    "/setup/scim/log",
    "/setup/domains",
];

// ---------------------------------------------------------------------------
// 1. The admin API

#[tokio::test]
async fn admins_create_list_and_revoke_links_and_bad_requests_create_nothing() {
    let clock = ManualClock::new(SystemClock.now());
    let app = TestApp::spawn_with(TestDb::new().await, |_| {}, Arc::new(clock.clone())).await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;
    let now = clock.now();

    // The default: 24 hours.
    let link = create_link(&app, key, &ALL, None).await;
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&app.url("/setup/rsl_")), "{url}");
    assert!(link_token(&link).len() > "rsl_".len() + 20, "a long random token: {url}");
    assert_eq!(scopes_of(&link), set(&ALL));
    assert_eq!(link["status"], "active", "{link}");
    assert_eq!(link["revoked_at"], Value::Null, "{link}");
    assert!(!link["created_by"].is_null(), "{link}");
    assert!(near(time(&link["created_at"]), now), "{link}");
    assert!(near(time(&link["expires_at"]), now + Duration::hours(24)), "{link}");
    let id = id_of(&link);
    Uuid::parse_str(&id).unwrap_or_else(|e| panic!("the id is a UUID: {id}: {e}"));

    // 1 and 168 hours are the bounds.
    let short = create_link(&app, key, &["sso"], Some(1)).await;
    assert!(near(time(&short["expires_at"]), now + Duration::hours(1)), "{short}");
    assert_eq!(scopes_of(&short), set(&["sso"]));
    let week = create_link(&app, key, &["scim", "domains"], Some(168)).await;
    assert!(near(time(&week["expires_at"]), now + Duration::hours(168)), "{week}");
    assert_ne!(link_token(&short), link_token(&week));

    // The token is stored hashed: no row holds it.
    let like = format!("%{}%", link_token(&link).trim_start_matches("rsl_"));
    let stored = count(&app, "SELECT COUNT(*) FROM setup_links WHERE token_hash LIKE $1", &like).await;
    assert_eq!(stored, 0, "the token itself is not what is stored");
    let rows = count(&app, "SELECT COUNT(*) FROM setup_links WHERE org_id = $1", &org.id.to_string()).await;
    assert_eq!(rows, 3);

    // Bad scopes or hours: 422 problems, nothing created.
    for bad in [
        json!({"scopes": ALL, "expires_in_hours": 0}),
        json!({"scopes": ALL, "expires_in_hours": 169}),
        json!({"scopes": ALL, "expires_in_hours": -1}),
        json!({"scopes": []}),
        json!({"scopes": ["members"]}),
        json!({"scopes": ["sso", "members"]}),
        json!({"scopes": "sso"}),
        json!({"expires_in_hours": 24}),
    ] {
        let (status, body) = app.post("/api/v1/setup-links", key, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["status"], 422, "{bad}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{bad}: {body}");
    }
    assert_eq!(links(&app, key).await.len(), 3, "the bad requests created nothing");

    // Write and Read keys may neither create, list nor revoke.
    for role in [Role::Write, Role::Read] {
        let other = app.key(&org, role).await;
        let (status, body) = app.post("/api/v1/setup-links", &other, json!({"scopes": ["sso"]})).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        let (status, body) = app.get("/api/v1/setup-links", &other).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        let (status, body) = app.call(Method::DELETE, &format!("/api/v1/setup-links/{id}"), Some(&other), None).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(links(&app, key).await.len(), 3);

    // The list: status, no URL, no token.
    let items = links(&app, key).await;
    for item in &items {
        assert_eq!(item["status"], "active", "{item}");
        assert!(item.get("url").is_none(), "the URL is shown only at creation: {item}");
    }
    let text = serde_json::to_string(&items).unwrap();
    for l in [&link, &short, &week] {
        assert!(!text.contains(&link_token(l)), "a token in the list: {text}");
    }
    assert_eq!(scopes_of(listed(&items, &id_of(&week))), set(&["scim", "domains"]));

    // Another organization cannot revoke it.
    let other = app.org("Globex", 5).await;
    let (status, body) =
        app.call(Method::DELETE, &format!("/api/v1/setup-links/{id}"), Some(&other.owner_key), None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    assert!(links(&app, &other.owner_key).await.is_empty());
    assert_eq!(listed(&links(&app, key).await, &id)["status"], "active", "still active");

    // Revoked at once.
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/setup-links/{id}"), Some(key), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let items = links(&app, key).await;
    let revoked = listed(&items, &id);
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    assert!(near(time(&revoked["revoked_at"]), now), "{revoked}");
    assert_eq!(listed(&items, &id_of(&short))["status"], "active");
    let (status, body) =
        app.call(Method::DELETE, &format!("/api/v1/setup-links/{}", Uuid::new_v4()), Some(key), None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");

    // Audited by the Admin's key, without the token.
    let audit = app.audit(key).await;
    let created: Vec<&Value> = audit.iter().filter(|a| a["action"] == "setup_link.created").collect();
    assert_eq!(created.len(), 3, "{audit:?}");
    assert!(created.iter().all(|a| a["actor_kind"] == "api_key"), "{created:?}");
    let revocations: Vec<&Value> = audit.iter().filter(|a| a["action"] == "setup_link.revoked").collect();
    assert_eq!(revocations.len(), 1, "{audit:?}");
    assert_eq!(revocations[0]["target"], id.as_str());
    assert_eq!(revocations[0]["actor_kind"], "api_key");
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(&link_token(&link)), "a token in the audit log");
}

// ---------------------------------------------------------------------------
// 2. The command line

#[tokio::test]
async fn the_command_line_creates_lists_and_revokes_links() {
    let db = TestDb::new().await;
    let created =
        run_json(&db.url, &["org", "create", "--name", "Acme", "--seats", "5", "--owner-email", "ada@acme.com"]);
    let org = created["organization"]["id"].as_str().expect("org id").to_string();

    let link =
        run_json(&db.url, &["setup-link", "create", "--org", &org, "--scope", "sso,scim", "--expires-in-hours", "2"]);
    assert!(link["url"].as_str().is_some_and(|u| u.contains("/setup/rsl_")), "{link}");
    assert_eq!(scopes_of(&link), set(&["sso", "scim"]));
    assert_eq!(link["status"], "active");
    assert_eq!(time(&link["expires_at"]) - time(&link["created_at"]), Duration::hours(2), "{link}");
    let id = id_of(&link);

    // Bad input: exit code 2 and a message, nothing created.
    for bad in [
        vec!["setup-link", "create", "--org", &org, "--scope", "sso,members"],
        vec!["setup-link", "create", "--org", &org, "--scope", "sso", "--expires-in-hours", "169"],
        vec!["setup-link", "create", "--org", &org, "--scope", "sso", "--expires-in-hours", "0"],
    ] {
        let out = roster(&db.url).args(&bad).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "), "{bad:?}");
    }

    let list = run_json(&db.url, &["setup-link", "list", "--org", &org]);
    let items = list.get("items").unwrap_or(&list).as_array().unwrap_or_else(|| panic!("{list}")).clone();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!((items[0]["id"].as_str(), items[0]["status"].as_str()), (Some(id.as_str()), Some("active")));
    assert!(items[0].get("url").is_none() && !list.to_string().contains(&link_token(&link)), "{list}");

    // The link works on a server over the same database, until it is revoked.
    let app = TestApp::spawn_on(TestDb::existing(&db.url)).await;
    let page = get(&app, None, &link_path(&link)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
    let out = roster(&db.url).args(["setup-link", "revoke", "--org", &org, "--id", &id]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = run_json(&db.url, &["setup-link", "list", "--org", &org]);
    let items = list.get("items").unwrap_or(&list).as_array().unwrap().clone();
    assert_eq!(items[0]["status"], "revoked", "{list}");
    assert!(!items[0]["revoked_at"].is_null(), "{list}");
    let page = get(&app, None, &link_path(&link)).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert_eq!(title(&page), "This setup link was revoked");
}

// ---------------------------------------------------------------------------
// 3. Scopes

#[tokio::test]
async fn a_link_reaches_only_the_steps_of_its_scopes() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;

    // SSO only.
    let sso = create_link(&app, key, &["sso"], None).await;
    let cookie = open(&app, &sso).await;
    let home = get(&app, Some(&cookie), "/setup").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.html);
    assert_eq!(title(&home), "Set up Acme");
    assert!(has_id(&home.html, "checklist"), "{}", home.html);
    for check in ["domain_verified", "sso_tested", "scim_received", "user_provisioned"] {
        assert!(!done(&home.html, check), "{check} is not done yet");
    }
    assert!(has_id(&home.html, "step-sso"), "{}", home.html);
    assert!(!has_id(&home.html, "step-scim") && !has_id(&home.html, "step-domains"), "{}", home.html);
    let page = get(&app, Some(&cookie), "/setup/sso").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(providers(&page.html), set(&["okta", "entra", "google", "jumpcloud", "onelogin", "generic"]));
    let page = get(&app, Some(&cookie), "/setup/sso/generic").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(by_id(&page.html, "redirect-uri").as_deref(), Some(app.url("/sso/callback").as_str()));
    assert!(has_id(&page.html, "connection-form") && has_id(&page.html, "save-connection"), "{}", page.html);
    let token = csrf(&page.html);
    for path in ["/setup/scim", "/setup/scim/okta", "/setup/scim/log", "/setup/domains"] {
        let page = get(&app, Some(&cookie), path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.html);
        assert!(page.html.contains("This setup link does not cover"), "{path}: {}", page.html);
    }
    let page = post(&app, Some(&cookie), "/setup/scim/token", &[("csrf", &token)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
    assert!(!page.html.contains("roster_scim_"), "{}", page.html);
    assert!(scim_tokens(&app, key).await.is_empty(), "no SCIM token was created");
    let page = post(&app, Some(&cookie), "/setup/domains", &[("csrf", &token), ("name", "acme.example")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
    assert!(domains(&app, key).await.is_empty(), "no domain was added");

    // SCIM only: the other way round.
    let scim_link = create_link(&app, key, &["scim"], None).await;
    let cookie = open(&app, &scim_link).await;
    let home = get(&app, Some(&cookie), "/setup").await;
    assert!(has_id(&home.html, "step-scim"), "{}", home.html);
    assert!(!has_id(&home.html, "step-sso") && !has_id(&home.html, "step-domains"), "{}", home.html);
    for path in ["/setup/sso", "/setup/sso/generic", "/setup/sso/test", "/setup/domains"] {
        let page = get(&app, Some(&cookie), path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.html);
    }
    let page = get(&app, Some(&cookie), "/setup/scim").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(providers(&page.html).is_superset(&set(&["okta", "entra"])), "{}", page.html);
    let page = get(&app, Some(&cookie), "/setup/scim/okta").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(by_id(&page.html, "scim-base-url").as_deref(), Some(app.url("/scim/v2").as_str()));
    assert!(has_id(&page.html, "token-form") && has_id(&page.html, "scim-log"), "{}", page.html);
    let token = csrf(&page.html);
    let fields =
        [("csrf", token.as_str()), ("issuer", "http://127.0.0.1:9"), ("client_id", "x"), ("client_secret", "y")];
    let page = post(&app, Some(&cookie), "/setup/sso/generic", &fields).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
    let (status, body) = app.get("/api/v1/sso/connection", key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no connection was set: {body}");

    // What the scope allows works: a SCIM token, shown once, usable at once.
    let page = post(&app, Some(&cookie), "/setup/scim/token", &[("csrf", &token)]).await;
    let page = settle(&app, &cookie, page).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let secret = by_id(&page.html, "scim-token").unwrap_or_else(|| panic!("no #scim-token: {}", page.html));
    assert!(secret.starts_with("roster_scim_"), "{secret}");
    let (status, body) = scim(&app, &secret, Method::GET, "/scim/v2/Users", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(scim_tokens(&app, key).await.len(), 1);
    let again = get(&app, Some(&cookie), "/setup/scim/okta").await;
    assert!(!has_id(&again.html, "scim-token") && !again.html.contains(&secret), "shown once: {}", again.html);
    let audit = app.audit(key).await;
    let made = audit.iter().find(|a| a["action"] == "scim_token.created").expect("the token is audited");
    assert_eq!(
        (made["actor_kind"].as_str(), made["actor_id"].as_str()),
        (Some("setup_link"), Some(id_of(&scim_link).as_str()))
    );

    // Domains only.
    let domains_link = create_link(&app, key, &["domains"], None).await;
    let cookie = open(&app, &domains_link).await;
    let home = get(&app, Some(&cookie), "/setup").await;
    assert!(has_id(&home.html, "step-domains"), "{}", home.html);
    assert!(!has_id(&home.html, "step-sso") && !has_id(&home.html, "step-scim"), "{}", home.html);
    for path in ["/setup/sso", "/setup/scim", "/setup/scim/log"] {
        assert_eq!(get(&app, Some(&cookie), path).await.status, StatusCode::FORBIDDEN, "{path}");
    }
}

// ---------------------------------------------------------------------------
// 4. Expired, revoked and unknown links

#[tokio::test]
async fn an_expired_link_and_its_cookie_stop_working() {
    let clock = ManualClock::new(SystemClock.now());
    let app = TestApp::spawn_with(TestDb::new().await, |_| {}, Arc::new(clock.clone())).await;
    let org = app.org("Acme", 10).await;
    let link = create_link(&app, &org.owner_key, &ALL, Some(1)).await;
    let cookie = open(&app, &link).await;
    clock.advance(Duration::minutes(59));
    for path in PAGES {
        let page = get(&app, Some(&cookie), path).await;
        assert_eq!(page.status, StatusCode::OK, "{path} within the hour: {}", page.html);
    }
    let csrf_token = csrf(&get(&app, Some(&cookie), "/setup/domains").await.html);

    clock.advance(Duration::minutes(2));
    let page = get(&app, None, &link_path(&link)).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert_eq!(title(&page), "This setup link has expired");
    assert!(page.set_cookies.is_empty(), "no cookie: {:?}", page.set_cookies);
    assert!(!page.html.contains("id=\"step-"), "nothing else reachable: {}", page.html);
    for path in PAGES.iter().chain(&["/setup/sso/test"]) {
        let page = get(&app, Some(&cookie), path).await;
        assert_eq!(page.status, StatusCode::GONE, "{path}: {}", page.html);
        assert_eq!(title(&page), "This setup link has expired", "{path}");
        assert!(!has_id(&page.html, "checklist") && !page.html.contains("id=\"step-"), "{path}: {}", page.html);
    }
    let page = post(&app, Some(&cookie), "/setup/domains", &[("csrf", &csrf_token), ("name", "acme.example")]).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert!(domains(&app, &org.owner_key).await.is_empty(), "nothing was added");
    let items = links(&app, &org.owner_key).await;
    assert_eq!(listed(&items, &id_of(&link))["status"], "expired");
}

#[tokio::test]
async fn a_revoked_link_and_every_cookie_it_gave_stop_at_once() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;
    let link = create_link(&app, key, &ALL, None).await;
    let cookie = open(&app, &link).await;
    let second = open(&app, &link).await;
    for path in PAGES {
        let page = get(&app, Some(&cookie), path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.html);
    }
    let csrf_token = csrf(&get(&app, Some(&cookie), "/setup/scim/okta").await.html);

    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/setup-links/{}", id_of(&link)), Some(key), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let page = get(&app, None, &link_path(&link)).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert_eq!(title(&page), "This setup link was revoked");
    assert!(page.set_cookies.is_empty(), "no cookie: {:?}", page.set_cookies);
    assert!(!page.html.contains("id=\"step-"), "nothing else reachable: {}", page.html);
    for c in [&cookie, &second] {
        for path in PAGES.iter().chain(&["/setup/sso/test"]) {
            let page = get(&app, Some(c), path).await;
            assert_eq!(page.status, StatusCode::GONE, "{path}: {}", page.html);
            assert_eq!(title(&page), "This setup link was revoked", "{path}");
            assert!(!has_id(&page.html, "checklist") && !page.html.contains("id=\"step-"), "{path}: {}", page.html);
        }
    }
    let page = post(&app, Some(&cookie), "/setup/scim/token", &[("csrf", &csrf_token)]).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert!(!page.html.contains("roster_scim_"));
    let page = post(&app, Some(&cookie), "/setup/domains", &[("csrf", &csrf_token), ("name", "acme.example")]).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.html);
    assert!(scim_tokens(&app, key).await.is_empty() && domains(&app, key).await.is_empty(), "nothing was made");
}

#[tokio::test]
async fn unknown_links_and_missing_cookies_get_clear_pages() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let link = create_link(&app, &org.owner_key, &ALL, None).await;

    let page = get(&app, None, "/setup/rsl_nothing-of-the-kind").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.html);
    assert_eq!(title(&page), "This setup link does not work");
    assert!(page.set_cookies.is_empty(), "{:?}", page.set_cookies);
    // One character off is unknown too.
    let path = link_path(&link);
    let mut wrong = path.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    let page = get(&app, None, &wrong).await;
    assert_eq!((page.status, title(&page).as_str()), (StatusCode::NOT_FOUND, "This setup link does not work"));

    for path in PAGES {
        let page = get(&app, None, path).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}: {}", page.html);
        assert_eq!(title(&page), "Open your setup link", "{path}");
        assert!(!page.html.contains("id=\"step-") && !has_id(&page.html, "checklist"), "{path}: {}", page.html);
        // A cookie Roster never gave opens nothing either.
        let page = get(&app, Some("forged"), path).await;
        assert!(matches!(page.status.as_u16(), 401 | 404 | 410), "{path}: {}", page.status);
        assert!(!has_id(&page.html, "checklist"), "{path}");
    }

    // The cookie the link sets: HttpOnly, SameSite=Lax, for /setup only.
    let page = get(&app, None, &path).await;
    let set = page.set_cookies.iter().find(|c| c.starts_with("roster_setup=")).expect("a setup cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Lax"), "{set}");
    assert!(set.contains("Path=/setup"), "{set}");
}

// ---------------------------------------------------------------------------
// 5. What a link does not reach

#[tokio::test]
async fn a_link_reaches_nothing_but_its_own_setup_pages() {
    let dns = TestDns::start().await;
    let app = TestApp::spawn_with_dns(dns.addr, Arc::new(SystemClock)).await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;
    let (status, body) =
        app.post("/api/v1/members", key, json!({"email": "ada@acme.example.com", "role": "write"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let link = create_link(&app, key, &ALL, None).await;
    let cookie = open(&app, &link).await;

    // Not the portal.
    for path in ["/portal", "/portal/members", "/portal/billing", "/portal/audit"] {
        for header in [format!("roster_setup={cookie}"), format!("roster_setup={cookie}; roster_session={cookie}")] {
            let res = no_redirects().get(app.url(path)).header("cookie", header).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
            let to = res.headers()["location"].to_str().unwrap().to_string();
            assert!(to.contains("signin"), "{path} → {to}");
            let body = res.text().await.unwrap();
            assert!(!body.contains("ada@acme.example.com") && !body.contains(&owner_email("Acme")), "{path}: {body}");
        }
    }

    // Neither the token nor the cookie is a credential of the APIs.
    for secret in [link_token(&link), cookie.clone()] {
        let (status, body) = app.get("/api/v1/members", &secret).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = app.get("/api/v1/setup-links", &secret).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = scim(&app, &secret, Method::GET, "/scim/v2/Users", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    // A form without its CSRF token, or with another cookie's, is refused.
    let page = get(&app, Some(&cookie), "/setup/domains").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(has_id(&page.html, "add-domain-form"), "{}", page.html);
    let token = csrf(&page.html);
    let other_cookie = open(&app, &create_link(&app, key, &ALL, None).await).await;
    let other_token = csrf(&get(&app, Some(&other_cookie), "/setup/domains").await.html);
    assert_ne!(token, other_token, "the CSRF token comes from the cookie");
    for fields in [
        vec![("name", "acme-corp.example")],
        vec![("name", "acme-corp.example"), ("csrf", "not-the-token")],
        vec![("name", "acme-corp.example"), ("csrf", other_token.as_str())],
    ] {
        let page = post(&app, Some(&cookie), "/setup/domains", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{fields:?}: {}", page.html);
    }
    let page = post(&app, Some(&cookie), "/setup/scim/token", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
    assert!(domains(&app, key).await.is_empty() && scim_tokens(&app, key).await.is_empty(), "nothing changed");

    // With it, the domain is added and verified, in the link's name.
    let page = post(&app, Some(&cookie), "/setup/domains", &[("csrf", &token), ("name", "acme-corp.example")]).await;
    let page = settle(&app, &cookie, page).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let section = tags(&page.html, "section")
        .into_iter()
        .find(|t| attr(t, "data-domain").as_deref() == Some("acme-corp.example"))
        .unwrap_or_else(|| panic!("no section for the domain: {}", page.html));
    assert!(has_class(section, "domain"), "{section}");
    let added = domains(&app, key).await;
    assert_eq!(added.len(), 1);
    let id = id_of(&added[0]);
    dns.set_txt(added[0]["record"]["name"].as_str().unwrap(), &[&[added[0]["record"]["value"].as_str().unwrap()]]);
    let page = post(&app, Some(&cookie), &format!("/setup/domains/{id}/verify"), &[("csrf", &token)]).await;
    let page = settle(&app, &cookie, page).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(domains(&app, key).await[0]["status"], "verified");
    assert!(done(&get(&app, Some(&cookie), "/setup").await.html, "domain_verified"));
    let audit = app.audit(key).await;
    for action in ["domain.added", "domain.verified"] {
        let record = audit.iter().find(|a| a["action"] == action).unwrap_or_else(|| panic!("no {action}"));
        assert_eq!(record["actor_kind"], "setup_link", "{record}");
        assert_eq!(record["actor_id"], id_of(&link).as_str(), "{record}");
    }

    // Another organization's domain is not found, and stays as it was.
    let globex = app.org("Globex", 5).await;
    let (status, theirs) = app.post("/api/v1/domains", &globex.owner_key, json!({"name": "globex.example"})).await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    dns.set_txt("_roster-challenge.globex.example", &[&[theirs["record"]["value"].as_str().unwrap()]]);
    for target in [id_of(&theirs), Uuid::new_v4().to_string()] {
        let page = post(&app, Some(&cookie), &format!("/setup/domains/{target}/verify"), &[("csrf", &token)]).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.html);
    }
    assert_eq!(domains(&app, &globex.owner_key).await[0]["status"], "pending");
    assert!(app.audit(&globex.owner_key).await.iter().all(|a| a["actor_kind"] != "setup_link"));
}

// ---------------------------------------------------------------------------
// 6. The SCIM request log

/// Values of the fixtures' bodies that are secrets or personal attributes
/// other than userName: none may show in the log, as JSON or as a page.
const PERSONAL: [&str; 13] = [
    "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com",
    "Test_User_33dd33dd-ee44-ff55-aa66-77bb77bb77bb@testuser.com",
    "updatedEmail@microsoft.com",
    "updatedFamilyName",
    "TestBcwqnm@test.microsoft.com",
    "TestMhvaes@test.microsoft.com",
    "Gtfd",
    "Pkqf",
    "Babs",
    "Barbara",
    "Jensen",
    "Tour Operations",
    "Another User",
];

/// Every `password` value in the fixture's request bodies.
fn passwords(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k.eq_ignore_ascii_case("password") => {
                        out.insert(s.clone());
                    }
                    other => passwords(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| passwords(v, out)),
        _ => {}
    }
}

/// The quoted literals in a step's `filter` query parameter that the log must
/// mask: all but those compared with `userName` (shown as in bodies), and but
/// those that are also attribute names in it (`displayName eq "displayName"`).
fn filter_literals(path: &str) -> Vec<String> {
    let Some((_, query)) = path.split_once('?') else { return Vec::new() };
    let query = query.replace(' ', "%20").replace('"', "%22");
    let mut literals = Vec::new();
    for (_, filter) in url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "filter") {
        let parts: Vec<&str> = filter.split('"').collect();
        let unquoted: Vec<&str> = parts.iter().step_by(2).copied().collect();
        for (i, literal) in parts.iter().enumerate().skip(1).step_by(2) {
            let attribute = parts[i - 1].split_whitespace().rev().nth(1).unwrap_or("");
            let user_name = attribute.trim_start_matches(['(', '[']).eq_ignore_ascii_case("userName");
            if !literal.is_empty() && !user_name && !unquoted.iter().any(|u| u.contains(literal)) {
                literals.push(literal.to_string());
            }
        }
    }
    literals
}

struct Replayed<'a> {
    loaded: &'a Loaded,
    org: TestOrg,
    token: String,
    vars: BTreeMap<String, String>,
}

#[tokio::test]
async fn the_scim_log_lists_what_okta_and_entra_sent_masked_newest_first() {
    let app = TestApp::spawn().await;
    let mut fixtures = load("okta");
    fixtures.extend(load("entra"));
    let mut secrets = BTreeSet::new();

    // Each file against an organization of its own, as its provider would.
    let mut replayed = Vec::new();
    for (n, loaded) in fixtures.iter().enumerate() {
        let org = app.org(&format!("Replay{n}"), loaded.fixture.seats).await;
        let token = scim_token(&app, &org).await;
        let vars = replay_steps(&app, &token, loaded).await.unwrap_or_else(|(_, failure)| panic!("{failure}"));
        for step in &loaded.fixture.steps {
            if let Some(body) = &step.body {
                passwords(body, &mut secrets);
            }
        }
        secrets.insert(token.clone());
        replayed.push(Replayed { loaded, org, token, vars });
    }
    assert!(secrets.len() >= 3, "the tokens and Okta's passwords: {secrets:?}");
    let mut pages = Vec::new();

    for r in &replayed {
        let label = r.loaded.label();
        let steps = &r.loaded.fixture.steps;
        let items = scim_log(&app, &r.org.owner_key, steps.len()).await;
        assert_eq!(items.len(), steps.len(), "{label}: one entry per request: {items:#?}");
        let okta = r.loaded.fixture.provider == "okta";

        // Newest first: reversed, they are the steps in order.
        let ids: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap_or_else(|| panic!("{i}"))).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{label}: newest first: {ids:?}");
        for (i, (item, step)) in items.iter().rev().zip(steps).enumerate() {
            let at = format!("{label} step {} {:?}", i + 1, step.name);
            assert_eq!(item["method"], step.method.as_str(), "{at}: {item}");
            assert_eq!(item["status"], step.expect.status, "{at}: {item}");
            let sent = render(&step.path, &r.vars).unwrap();
            let sent_path = sent.split('?').next().unwrap();
            let logged = item["path"].as_str().unwrap_or_else(|| panic!("{at}: {item}"));
            assert!(logged.split('?').next().unwrap().ends_with(sent_path), "{at}: {logged} for {sent}");
            for literal in filter_literals(&sent) {
                let encoded: String = url::form_urlencoded::byte_serialize(literal.as_bytes()).collect();
                assert!(
                    !logged.contains(&literal)
                        && !logged.contains(&encoded)
                        && !logged.contains(&literal.replace('@', "%40")),
                    "{at}: the query is masked: {logged}"
                );
            }
            assert!(item["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{at}: {item}");
            assert!(item["at"].as_str().is_some(), "{at}: {item}");
            if okta {
                assert!(item["client"].as_str().is_some_and(|c| c.contains("Okta")), "{at}: {item}");
            }
            if step.expect.status >= 400 {
                assert!(item["detail"].as_str().is_some_and(|d| !d.is_empty()), "{at}: {item}");
                assert!(item["explanation"].as_str().is_some_and(|e| !e.is_empty()), "{at}: {item}");
                if let Some(kind) = step.expect.body.as_ref().and_then(|b| b.get("scimType")) {
                    assert_eq!(&item["scim_type"], kind, "{at}: {item}");
                }
            }

            // The body: every value masked but the structural ones.
            let Some(sent_body) = &step.body else { continue };
            let body = logged_body(item);
            assert_eq!(body["schemas"], sent_body["schemas"], "{at}: {body}");
            if let Some(user_name) = sent_body.get("userName") {
                assert_eq!(&body["userName"], user_name, "{at}: {body}");
            }
            if let Some(active) = sent_body.get("active") {
                assert_eq!(&body["active"], active, "{at}: {body}");
            }
            if sent_body.pointer("/name/givenName").is_some() {
                assert_eq!(body.pointer("/name/givenName"), Some(&json!(MASK)), "{at}: {body}");
            }
            if sent_body.pointer("/emails/0/value").is_some() {
                assert_eq!(body.pointer("/emails/0/value"), Some(&json!(MASK)), "{at}: {body}");
            }
            if sent_body.get("password").is_some() {
                assert!(matches!(body.get("password"), None | Some(Value::String(_))), "{at}: {body}");
                assert!(body.get("password").is_none_or(|p| p == MASK), "{at}: {body}");
            }
            for (n, op) in sent_body["Operations"].as_array().into_iter().flatten().enumerate() {
                let logged_op = &body["Operations"][n];
                assert_eq!(logged_op["op"], op["op"], "{at}: {body}");
                if let Some(path) = op.get("path") {
                    let path = render(path.as_str().unwrap(), &r.vars).unwrap();
                    assert_eq!(logged_op["path"], path.as_str(), "{at}: {body}");
                }
                if op["path"] == "members" {
                    for (m, member) in op["value"].as_array().unwrap().iter().enumerate() {
                        let id = render(member["value"].as_str().unwrap(), &r.vars).unwrap();
                        assert_eq!(logged_op["value"][m]["value"], id.as_str(), "{at}: group members stay: {body}");
                        if member.get("display").is_some() {
                            assert_eq!(logged_op["value"][m]["display"], MASK, "{at}: {body}");
                        }
                    }
                }
            }
        }

        // No secret and no personal attribute, in the JSON or on the page.
        let text = serde_json::to_string(&items).unwrap();
        let link = create_link(&app, &r.org.owner_key, &["scim"], None).await;
        let cookie = open(&app, &link).await;
        let page = get(&app, Some(&cookie), "/setup/scim/log").await;
        assert_eq!(page.status, StatusCode::OK, "{label}: {}", page.html);
        assert!(has_id(&page.html, "scim-log"), "{}", page.html);
        for (shown, what) in [(&text, "the API"), (&page.html, "the page")] {
            for secret in &secrets {
                assert!(!shown.contains(secret.as_str()), "{label}: {what} shows a secret {secret}");
            }
            for value in PERSONAL {
                assert!(!shown.contains(value), "{label}: {what} shows {value:?}: {shown}");
            }
        }
        assert!(!page.html.contains(&r.token));
        // The page's rows: the same requests, newest first, with the explanation of errors.
        let mut rows: Vec<String> = tags(&page.html, "tr")
            .into_iter()
            .filter(|t| has_class(t, "scim-request"))
            .map(|t| attr(t, "data-status").unwrap_or_default())
            .collect();
        let mut expected: Vec<String> = steps.iter().map(|s| s.expect.status.to_string()).collect();
        rows.sort();
        expected.sort();
        assert_eq!(rows, expected, "{label}: the page's rows");
        assert!(tags(&page.html, "pre").iter().any(|t| has_class(t, "body")), "{label}: no pre.body");

        // The database keeps no secret either.
        for secret in &secrets {
            let like = format!("%{secret}%");
            let sql = "SELECT COUNT(*) FROM scim_requests WHERE body LIKE $1 OR path LIKE $1 OR detail LIKE $1";
            assert_eq!(count(&app, sql, &like).await, 0, "{label}: {secret} is stored");
        }
        pages.push((label, page.html));
    }

    // Each row's cells, as the page's contract names them.
    for (label, html) in &pages {
        let cells = tags(html, "td");
        for class in ["method", "path", "status", "latency", "explanation"] {
            assert!(cells.iter().any(|t| has_class(t, class)), "{label}: no td.{class}: {html}");
        }
    }
}

#[tokio::test]
async fn the_scim_log_keeps_the_last_200_requests_of_each_organization_for_admins() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;
    let other = app.org("Globex", 10).await;
    let token = scim_token(&app, &org).await;

    // A request with a wrong token is no organization's.
    let (status, _) = scim(&app, "roster_scim_wrong", Method::GET, "/scim/v2/Users", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for _ in 0..205 {
        let (status, body) = scim(&app, &token, Method::GET, "/scim/v2/Users?count=1", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = scim(&app, &token, Method::GET, "/scim/v2/Groups", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The newest 200, the last request first.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let items = loop {
        let items = scim_log(&app, key, 200).await;
        let last_in = items.first().and_then(|i| i["path"].as_str()).is_some_and(|p| p.contains("/Groups"));
        if last_in || Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(items.len(), 200);
    assert!(items[0]["path"].as_str().unwrap().contains("/Groups"), "{}", items[0]);
    assert!(items[1..].iter().all(|i| i["path"].as_str().unwrap().contains("/Users")), "the oldest went");
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let sql = "SELECT COUNT(*) FROM scim_requests WHERE org_id = $1";
    while count(&app, sql, &org.id.to_string()).await > 200 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(count(&app, sql, &org.id.to_string()).await, 200, "at most 200 are kept");

    let (status, body) = app.get("/api/v1/scim/requests?limit=5", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let five = body["items"].as_array().unwrap();
    assert_eq!(five.len(), 5);
    assert_eq!(five[0]["id"], items[0]["id"]);
    for bad in ["0", "201", "x"] {
        let (status, body) = app.get(&format!("/api/v1/scim/requests?limit={bad}"), key).await;
        assert!(matches!(status.as_u16(), 400 | 422), "limit={bad}: {status} {body}");
    }

    // Each organization sees its own; only its Owners and Admins.
    assert!(scim_log(&app, &other.owner_key, 1).await.is_empty(), "another organization's log is empty");
    for role in [Role::Write, Role::Read] {
        let k = app.key(&org, role).await;
        let (status, body) = app.get("/api/v1/scim/requests", &k).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    let admin = app.key(&org, Role::Admin).await;
    let (status, _) = app.get("/api/v1/scim/requests?limit=1", &admin).await;
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------------------
// 7. A test sign-in through the organization's own connection

/// Roster in development mode (http:// providers) on a listener bound first,
/// and a real OpenID provider with a client for the organization's own
/// connection whose redirect URI is Roster's callback.
async fn with_provider(accounts: &[(&str, Value)]) -> (TestApp, OidcProvider) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/sso/callback", listener.local_addr().unwrap());
    let mut config = ProviderConfig::new().client(ProviderClient::new("acme-it", "acme-it-secret", &callback));
    for (login, claims) in accounts {
        config = config.account(login, claims.clone());
    }
    let idp = OidcProvider::start(&config).await;
    let app =
        TestApp::spawn_listening(TestDb::new().await, listener, |c| c.sso_dev_mode = true, Arc::new(SystemClock)).await;
    (app, idp)
}

/// Opens the link in a new cookie-keeping browser.
async fn browser_with_link(app: &TestApp, link: &Value) -> IdpBrowser {
    let browser = IdpBrowser::new();
    let res = browser.get(&app.url(&link_path(link))).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = browser.get(&app.url("/setup")).await;
    assert_eq!(res.status(), StatusCode::OK, "the cookie was kept");
    browser
}

async fn browser_page(browser: &IdpBrowser, url: &str) -> (StatusCode, String) {
    let res = browser.get(url).await;
    (res.status(), res.text().await.unwrap())
}

/// Starts a test sign-in from `/setup/sso/test` and signs in as `login` at the
/// provider; the result page.
async fn test_sign_in(app: &TestApp, browser: &IdpBrowser, login: &str) -> (StatusCode, String) {
    let (status, html) = browser_page(browser, &app.url("/setup/sso/generic")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(has_id(&html, "test-form") && has_id(&html, "test-sign-in"), "{html}");
    let res = browser.client.post(app.url("/setup/sso/test")).form(&[("csrf", csrf(&html))]).send().await.unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let to = url::Url::parse(&app.url("/setup/sso/test"))
        .unwrap()
        .join(res.headers()["location"].to_str().unwrap())
        .unwrap()
        .to_string();
    let back = browser.follow(&to, login, &app.url("/setup/sso/test")).await.unwrap_or_else(|e| {
        panic!("the test sign-in stopped at {} ({}): {}", e.url, e.status, e.body);
    });
    browser_page(browser, &back).await
}

#[tokio::test]
async fn a_test_sign_in_shows_claims_and_decision_and_creates_nobody() {
    let (app, idp) = with_provider(&[
        ("owner", json!({"email": owner_email("Acme"), "email_verified": true, "name": "Olive Owner"})),
        ("carol", json!({"email": "carol@elsewhere.test", "email_verified": true, "name": "Carol"})),
    ])
    .await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;
    let link = create_link(&app, key, &["sso"], None).await;
    let browser = browser_with_link(&app, &link).await;

    // The connection, saved through the link.
    let (_, html) = browser_page(&browser, &app.url("/setup/sso/generic")).await;
    assert!(!has_id(&html, "test-form"), "nothing to test before a connection is saved");
    let fields = [
        ("csrf", csrf(&html)),
        ("issuer", idp.issuer.clone()),
        ("client_id", "acme-it".to_string()),
        ("client_secret", "acme-it-secret".to_string()),
    ];
    let res = browser.client.post(app.url("/setup/sso/generic")).form(&fields).send().await.unwrap();
    assert!(matches!(res.status().as_u16(), 200 | 303), "{}", res.status());
    let (status, connection) = app.get("/api/v1/sso/connection", key).await;
    assert_eq!(status, StatusCode::OK, "{connection}");
    assert_eq!(connection["issuer"].as_str().map(|i| i.trim_end_matches('/')), Some(idp.issuer.trim_end_matches('/')));
    assert_eq!(connection["client_id"], "acme-it");
    let audit = app.audit(key).await;
    let saved = audit.iter().find(|a| a["action"] == "sso_connection.set").expect("the connection is audited");
    assert_eq!(saved["actor_kind"], "setup_link", "{saved}");
    assert_eq!(saved["actor_id"], id_of(&link).as_str(), "{saved}");
    assert!(!serde_json::to_string(&audit).unwrap().contains("acme-it-secret"), "no secret in the audit log");
    assert!(!done(&browser_page(&browser, &app.url("/setup")).await.1, "sso_tested"));

    // A member: what would happen, and nothing happens.
    let (_, members_before) = app.get("/api/v1/members", key).await;
    let audit_before = app.audit(key).await.len();
    let (status, html) = test_sign_in(&app, &browser, "owner").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let result = tag_by_id(&html, "test-result").unwrap_or_else(|| panic!("no #test-result: {html}"));
    assert_eq!(attr(&result, "data-outcome").as_deref(), Some("ok"), "{html}");
    assert_eq!(claim(&html, "email").as_deref(), Some(owner_email("Acme").as_str()), "{html}");
    assert_eq!(by_id(&html, "decision-organization").as_deref(), Some("Acme"), "{html}");
    assert_eq!(by_id(&html, "decision-role").map(|r| r.to_lowercase()).as_deref(), Some("owner"), "{html}");
    assert!(by_id(&html, "decision-role-source").is_some_and(|s| !s.is_empty()), "{html}");
    // An existing member keeps the seat they hold (the spec names "available" and "none free" only).
    let seat = by_id(&html, "decision-seat");
    assert!(seat.as_deref().is_some_and(|s| s.starts_with("available") || s == "already holds one"), "{html}");
    assert_eq!(by_id(&html, "decision-email-verified").as_deref(), Some("yes"), "{html}");
    assert!(by_id(&html, "decision-outcome").is_some_and(|o| !o.is_empty()), "{html}");
    let (_, members_after) = app.get("/api/v1/members", key).await;
    assert_eq!(members_after["total"], members_before["total"], "no member was added");
    let audit = app.audit(key).await;
    assert_eq!(audit.len(), audit_before + 1, "one record: {:?}", &audit[..audit.len().saturating_sub(audit_before)]);
    assert_eq!(audit[0]["action"], "sso.tested", "{}", audit[0]);
    // No session either.
    assert_eq!(browser.get(&app.url("/sso/session")).await.status(), StatusCode::UNAUTHORIZED);
    assert!(done(&browser_page(&browser, &app.url("/setup")).await.1, "sso_tested"));
    // Admins see the same checklist at the portal's Home.
    let session = crate::portal::sign_in(&app, org.id, &owner_email("Acme")).await;
    let (status, home) = crate::portal::page(&app, &session, "/portal").await;
    assert_eq!(status, StatusCode::OK);
    assert!(has_id(&home, "setup-checklist"), "{home}");
    assert!(done(&home, "sso_tested") && !done(&home, "domain_verified"), "{home}");

    // Someone at an unverified domain, with no invitation: refused, and why.
    let audit_before = app.audit(key).await.len();
    let browser = browser_with_link(&app, &link).await;
    let (status, html) = test_sign_in(&app, &browser, "carol").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let result = tag_by_id(&html, "test-result").unwrap_or_else(|| panic!("no #test-result: {html}"));
    assert_eq!(attr(&result, "data-outcome").as_deref(), Some("refused"), "{html}");
    assert_eq!(claim(&html, "email").as_deref(), Some("carol@elsewhere.test"), "{html}");
    let seat = by_id(&html, "decision-seat");
    let why = by_id(&html, "decision-outcome").unwrap_or_else(|| panic!("no #decision-outcome: {html}"));
    let lower = why.to_lowercase();
    assert!(lower.contains("member") || lower.contains("invit") || lower.contains("domain"), "{why}");
    assert_eq!(app.get("/api/v1/members", key).await.1["total"], members_before["total"]);
    let (_, invitations) = app.get("/api/v1/invitations", key).await;
    assert_eq!(invitations["items"].as_array().unwrap().len(), 0);
    let audit = app.audit(key).await;
    assert_eq!(audit.len(), audit_before + 1, "one record: {:?}", &audit[..audit.len().saturating_sub(audit_before)]);
    assert_eq!(audit[0]["action"], "sso.tested");
    // A seat for someone new is "available" (with how many are free) or "none free".
    assert_eq!(seat.as_deref(), Some("available (9 free)"), "10 seats, 1 in use: {html}");
}

#[tokio::test]
async fn an_admin_sends_and_revokes_a_link_from_the_portal() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let session = crate::portal::sign_in(&app, org.id, &owner_email("Acme")).await;
    let (status, html) = crate::portal::page(&app, &session, "/portal/settings/setup-links").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(has_id(&html, "setup-checklist") && !done(&html, "domain_verified"), "{html}");
    let csrf = crate::portal::csrf_of(&html);

    // Domains and SCIM only, for 48 hours: the URL once, on this page alone.
    let fields = [("csrf", csrf.as_str()), ("scope_scim", "on"), ("scope_domains", "on"), ("expires_in_hours", "48")];
    let (status, html) = crate::portal::submit(&app, &session, "/portal/settings/setup-links", &fields).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let url = by_id(&html, "setup-link-url").unwrap_or_else(|| panic!("no #setup-link-url: {html}"));
    assert!(url.starts_with(&app.url("/setup/rsl_")), "{url}");
    let listed = links(&app, &org.owner_key).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(scopes_of(&listed[0]), set(&["scim", "domains"]));
    assert!(near(time(&listed[0]["expires_at"]), time(&listed[0]["created_at"]) + chrono::Duration::hours(48)));
    let audit = app.audit(&org.owner_key).await;
    assert_eq!(audit[0]["action"], "setup_link.created", "{}", audit[0]);
    assert_eq!(audit[0]["actor_kind"], "portal", "{}", audit[0]);
    let (status, again) = crate::portal::page(&app, &session, "/portal/settings/setup-links").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!again.contains(&url) && !has_id(&again, "setup-link-url"), "the URL is shown once");

    // The link opens its pages; no scope, or too long a life, is refused and creates nothing.
    let token = url.rsplit('/').next().unwrap().to_string();
    let opened = get(&app, None, &format!("/setup/{token}")).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER);
    for bad in [vec![("expires_in_hours", "24")], vec![("scope_sso", "on"), ("expires_in_hours", "169")]] {
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(bad);
        let (status, html) = crate::portal::submit(&app, &session, "/portal/settings/setup-links", &fields).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
        assert!(has_id(&html, "problem") && !has_id(&html, "setup-link-url"), "{html}");
    }
    assert_eq!(links(&app, &org.owner_key).await.len(), 1);

    // Revoked from the portal: the link stops at once.
    let id = listed[0]["id"].as_str().unwrap();
    let (status, html) =
        crate::portal::submit(&app, &session, &format!("/portal/settings/setup-links/{id}/revoke"), &[("csrf", &csrf)])
            .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(listed_status(&app, &org.owner_key, id).await, "revoked");
    let refused = get(&app, None, &format!("/setup/{token}")).await;
    assert_eq!(refused.status, StatusCode::GONE);

    // A Write member has no such page.
    let (status, _) =
        app.post("/api/v1/members", &org.owner_key, json!({"email": "walt@acme.example.com", "role": "write"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let walt = crate::portal::sign_in(&app, org.id, "walt@acme.example.com").await;
    let (status, _) = crate::portal::page(&app, &walt, "/portal/settings/setup-links").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, walt_home) = crate::portal::page(&app, &walt, "/portal").await;
    let walt_csrf = crate::portal::csrf_of(&walt_home);
    let fields = [("csrf", walt_csrf.as_str()), ("scope_sso", "on")];
    let (status, _) = crate::portal::submit(&app, &walt, "/portal/settings/setup-links", &fields).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(links(&app, &org.owner_key).await.len(), 1);
}

async fn listed_status(app: &TestApp, key: &str, id: &str) -> String {
    listed(&links(app, key).await, id)["status"].as_str().unwrap().to_string()
}
