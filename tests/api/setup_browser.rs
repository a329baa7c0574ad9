//! The setup pages in a real browser (Debian's Chromium over WebDriver, see
//! `browser.rs`): the customer's IT admin opens the link an Admin sent,
//! adds and verifies a domain against the test DNS server, creates a SCIM
//! token (shown once) and watches a request arrive in the live SCIM log; a
//! revoked link's page; saving an OpenID connection by following the Okta
//! guide and running a test sign-in through the real test provider. Each
//! test saves screenshots of its pages.

use crate::browser::Browser;
use crate::dns_server::TestDns;
use crate::helpers::*;
use crate::oidc_provider::{OidcProvider, ProviderClient, ProviderConfig};
use reqwest::StatusCode;
use roster::clock::SystemClock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Creates a setup link through the admin API; the 201 body.
async fn create_link(app: &TestApp, key: &str, scopes: &[&str]) -> Value {
    let (status, link) = app.post("/api/v1/setup-links", key, json!({ "scopes": scopes })).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    link
}

/// Waits up to `secs` seconds for an element matching `css` (the page may reload meanwhile).
async fn wait_for(browser: &Browser, css: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if browser.client.find_all(fantoccini::Locator::Css(css)).await.is_ok_and(|found| !found.is_empty()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn checklist_done(browser: &Browser, check: &str) {
    let css = format!("#checklist li[data-check='{check}'][data-done='true']");
    assert!(wait_for(browser, &css, 10).await, "{check} is not done: {}", browser.page_source().await);
}

#[tokio::test]
async fn an_it_admin_verifies_a_domain_creates_a_scim_token_and_watches_the_log() {
    let dns = TestDns::start().await;
    let app = TestApp::spawn_with_dns(dns.addr, Arc::new(SystemClock)).await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;
    let link = create_link(&app, key, &["sso", "scim", "domains"]).await;
    let link_id = link["id"].as_str().unwrap().to_string();

    // The link opens the organization's setup, with nothing done yet.
    let browser = Browser::start().await;
    browser.goto(link["url"].as_str().unwrap()).await;
    browser.wait_for_text("#page-title", "Set up Acme").await;
    assert_eq!(browser.current_url().await.path(), "/setup");
    for check in ["domain_verified", "sso_tested", "scim_received", "user_provisioned"] {
        let css = format!("#checklist li[data-check='{check}'][data-done='false']");
        assert!(!browser.find_all(&css).await.is_empty(), "{check} is not done yet");
    }
    for step in ["#step-sso", "#step-scim", "#step-domains"] {
        browser.find(step).await;
    }
    browser.screenshot("setup-home").await;

    // A domain: added, not verified while DNS does not show the record, verified once it does.
    browser.click("a#step-domains").await;
    browser.fill("#add-domain-form input[name=name]", "acme-corp.example").await;
    browser.click("#add-domain-form button, #add-domain-form input[type=submit]").await;
    let section = "section.domain[data-domain='acme-corp.example']";
    browser.find(&format!("{section} span.status[data-status='pending']")).await;
    browser.click(&format!("{section} button.verify")).await;
    assert!(
        wait_for(&browser, &format!("{section} span.status[data-status='failed']"), 10).await,
        "not published yet: {}",
        browser.page_source().await
    );
    let shown = browser.text(&format!("{section} .last-result")).await;
    assert!(!shown.trim().is_empty(), "what DNS showed is said");
    let name = browser.text(&format!("{section} code.record-name")).await;
    let value = browser.text(&format!("{section} code.record-value")).await;
    assert_eq!(name, "_roster-challenge.acme-corp.example");
    assert!(value.starts_with("roster-domain-verification="), "{value}");
    dns.set_txt(&name, &[&[value.as_str()]]);
    browser.click(&format!("{section} button.verify")).await;
    assert!(
        wait_for(&browser, &format!("{section} span.status[data-status='verified']"), 10).await,
        "verified once published: {}",
        browser.page_source().await
    );
    browser.screenshot("setup-domains").await;
    let (_, domains) = app.get("/api/v1/domains", key).await;
    assert_eq!(domains[0]["status"], "verified", "{domains}");
    let (_, audit) = app.get("/api/v1/audit-log?action=domain.verified", key).await;
    assert_eq!(audit["items"][0]["actor_kind"], "setup_link", "{audit}");
    assert_eq!(audit["items"][0]["actor_id"], link_id.as_str(), "{audit}");
    browser.goto(&app.url("/setup")).await;
    checklist_done(&browser, "domain_verified").await;

    // A SCIM token for Okta, shown once.
    browser.click("a#step-scim").await;
    browser.click("a.provider[data-provider='okta']").await;
    assert_eq!(browser.text("code#scim-base-url").await, app.url("/scim/v2"));
    browser.click("#create-token").await;
    let token = browser.text("code#scim-token").await;
    assert!(token.starts_with("roster_scim_"), "{token}");
    browser.screenshot("setup-scim-token").await;
    let (_, tokens) = app.get("/api/v1/scim-tokens", key).await;
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
    browser.goto(&app.url("/setup/scim/okta")).await;
    browser.find("#token-form").await;
    assert!(browser.find_all("code#scim-token").await.is_empty(), "shown once");
    assert!(!browser.page_source().await.contains(&token), "shown once");

    // The live log: empty, then the identity provider's first request appears by itself.
    browser.click("a#scim-log").await;
    browser.wait_for_text("main", "refreshes").await;
    assert_eq!(browser.current_url().await.path(), "/setup/scim/log");
    assert!(browser.find_all("tr.scim-request").await.is_empty(), "nothing sent yet");
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "grace@acme-corp.example",
        "name": {"givenName": "Grace", "familyName": "Hopper"},
        "emails": [{"value": "grace.hopper@home.example", "primary": true, "type": "work"}],
        "password": "s3cret-from-okta",
        "active": true,
    });
    let res = app
        .client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(&token)
        .header("user-agent", "Okta SCIM Client 1.0.0")
        .header("content-type", "application/scim+json")
        .body(user.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    let row = "tr.scim-request[data-status='201']";
    assert!(
        wait_for(&browser, row, 20).await,
        "the request did not appear in the log by itself: {}",
        browser.page_source().await
    );
    browser.find(&format!("table#scim-log {row}")).await;
    // (`td.method` and `td.path` are checked in setup.rs; here what the person reads.)
    assert_eq!(browser.text(&format!("{row} .method")).await, "POST");
    assert!(browser.text(&format!("{row} .path")).await.contains("/Users"));
    assert_eq!(browser.text(&format!("{row} td.status")).await, "201");
    assert!(!browser.text(&format!("{row} td.latency")).await.is_empty());
    // The body may sit folded away: unfold it as a person would.
    if !browser.find_all(&format!("{row} details summary")).await.is_empty() {
        browser.click(&format!("{row} details summary")).await;
    }
    let body = browser.text(&format!("{row} pre.body")).await;
    assert!(body.contains("grace@acme-corp.example"), "the userName is shown: {body}");
    let source = browser.page_source().await;
    for hidden in [token.as_str(), "s3cret-from-okta", "Hopper", "grace.hopper@home.example"] {
        assert!(!source.contains(hidden), "{hidden} is on the page: {source}");
    }
    browser.screenshot("setup-scim-log").await;

    // The checklist follows.
    browser.goto(&app.url("/setup")).await;
    checklist_done(&browser, "scim_received").await;
    checklist_done(&browser, "user_provisioned").await;
    checklist_done(&browser, "domain_verified").await;
    browser.screenshot("setup-home-done").await;
    browser.close().await;
}

#[tokio::test]
async fn a_revoked_link_says_so_and_shows_nothing_else() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let link = create_link(&app, &org.owner_key, &["sso", "scim", "domains"]).await;
    let browser = Browser::start().await;
    browser.goto(link["url"].as_str().unwrap()).await;
    browser.wait_for_text("#page-title", "Set up Acme").await;

    let path = format!("/api/v1/setup-links/{}", link["id"].as_str().unwrap());
    let (status, _) = app.call(reqwest::Method::DELETE, &path, Some(&org.owner_key), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    browser.goto(&app.url("/setup/domains")).await;
    browser.wait_for_text("#page-title", "This setup link was revoked").await;
    assert!(browser.find_all("#add-domain-form").await.is_empty());
    browser.goto(link["url"].as_str().unwrap()).await;
    browser.wait_for_text("#page-title", "This setup link was revoked").await;
    assert!(browser.find_all("#checklist").await.is_empty() && browser.find_all("a#step-sso").await.is_empty());
    browser.screenshot("setup-link-revoked").await;
    browser.close().await;
}

#[tokio::test]
async fn an_it_admin_connects_single_sign_on_and_runs_a_test_sign_in() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/sso/callback", listener.local_addr().unwrap());
    let config = ProviderConfig::new()
        .client(ProviderClient::new("acme-it", "acme-it-secret", &callback))
        .account("owner", json!({"email": "owner@acme.example.com", "email_verified": true, "name": "Olive Owner"}));
    let idp = OidcProvider::start(&config).await;
    let app =
        TestApp::spawn_listening(TestDb::new().await, listener, |c| c.sso_dev_mode = true, Arc::new(SystemClock)).await;
    let org = app.org("Acme", 10).await;
    let key = &org.owner_key;
    let link = create_link(&app, key, &["sso"]).await;
    let members_before = app.get("/api/v1/members", key).await.1["total"].clone();

    let browser = Browser::start().await;
    browser.goto(link["url"].as_str().unwrap()).await;
    browser.wait_for_text("#page-title", "Set up Acme").await;
    browser.click("#step-sso").await;
    browser.click("a.provider[data-provider='okta']").await;
    browser.wait_for_text("#page-title", "Single sign-on with Okta").await;
    assert_eq!(browser.text("#redirect-uri").await, callback, "the redirect URI to paste");
    browser.fill("#issuer", &idp.issuer).await;
    browser.fill("#client_id", "acme-it").await;
    browser.fill("#client_secret", "acme-it-secret").await;
    browser.click("#save-connection").await;
    browser.wait_for_text("#notice", "Saved").await;
    browser.screenshot("setup-sso").await;

    // The test sign-in: to the provider's own sign-in form and back.
    browser.click("#test-sign-in").await;
    assert!(wait_for(&browser, "input[name='login']", 20).await, "{}", browser.page_source().await);
    browser.fill("input[name='login']", "owner").await;
    browser.fill("input[name='password']", "any").await;
    browser.submit("form").await;
    browser.wait_for_text("#decision-outcome", "as an existing member").await;
    assert_eq!(browser.current_url().await.path(), "/setup/sso/test");
    assert_eq!(browser.attr("#test-result", "data-outcome").await.as_deref(), Some("ok"));
    assert_eq!(browser.text("tr[data-claim='email'] td.value").await, "owner@acme.example.com");
    assert_eq!(browser.text("#decision-organization").await, "Acme");
    assert_eq!(browser.text("#decision-email-verified").await, "yes");
    assert_eq!(browser.text("#decision-role").await, "owner");
    browser.screenshot("setup-test-sign-in").await;

    // Nobody joined and nobody is signed in: the browser holds no Roster session.
    assert_eq!(app.get("/api/v1/members", key).await.1["total"], members_before);
    assert!(browser.cookie("roster_session").await.is_none(), "a test sign-in opens no session");
    browser.goto(&app.url("/setup")).await;
    assert!(wait_for(&browser, "#checklist li[data-check='sso_tested'][data-done='true']", 10).await);
    browser.close().await;
}
