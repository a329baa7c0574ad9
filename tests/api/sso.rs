//! Single sign-on against a real OpenID provider (`oidc-provider` as a
//! Node.js process): every membership path, and every way a login must be
//! refused — replayed state or code, another browser, expiry, a wrong
//! client secret, a token from the wrong issuer or for the wrong audience,
//! forged algorithms, unverified email, the wrong tenant, unverified
//! domains, no free seat, suspended members, invitations for another email,
//! unregistered redirect URIs and provider errors.

use crate::dns_server::TestDns;
use crate::helpers::*;
use crate::oidc_provider::{query_param, tenant_connection, Browser, OidcProvider, ProviderClient, ProviderConfig};
use reqwest::{Method, StatusCode};
use roster::clock::{Clock, ManualClock, SystemClock};
use roster::model::Role;
use serde_json::{json, Value};
use std::sync::Arc;

/// The product's callback: Roster redirects there, the test never requests it.
const PRODUCT: &str = "http://127.0.0.1:9/app/callback";
const TENANT: &str = "T-acme";
const DOMAIN: &str = "acme.example.com";

/// Roster with a tenant connection to a real provider, an organization
/// "Acme" on tenant `T-acme` with its domain verified over real DNS, and a
/// product client.
struct World {
    app: TestApp,
    idp: OidcProvider,
    org: TestOrg,
    client_id: String,
    client_secret: String,
    _dns: TestDns,
}

fn accounts(config: ProviderConfig) -> ProviderConfig {
    let tenant = |roles: Value| json!({ TENANT: { "roles": roles } });
    config
        .account("owner", json!({"email": format!("owner@{DOMAIN}"), "email_verified": true, "name": "Olive Owner", "tenants": tenant(json!([]))}))
        .account("ada", json!({"email": format!("Ada@{DOMAIN}"), "email_verified": true, "name": "Ada", "tenants": tenant(json!(["Tenant Admin"]))}))
        .account("dan", json!({"email": format!("dan@{DOMAIN}"), "email_verified": true, "tenants": tenant(json!(["viewer"]))}))
        .account("bob", json!({"email": "bob@elsewhere.test", "email_verified": true, "tenants": tenant(json!(["write"]))}))
        .account("carol", json!({"email": "carol@elsewhere.test", "email_verified": true, "tenants": tenant(json!([]))}))
        .account("eve", json!({"email": format!("eve@{DOMAIN}"), "email_verified": false, "tenants": tenant(json!([]))}))
        .account("sam", json!({"email": format!("sam@{DOMAIN}"), "email_verified": true, "tenants": {"T-other": {"roles": ["admin"]}}}))
}

impl World {
    async fn start(seats: i64, clock: Arc<dyn Clock>) -> World {
        Self::start_with(seats, clock, |c, _| c).await
    }

    /// `extra` adds provider clients; it gets Roster's callback URL.
    async fn start_with(
        seats: i64,
        clock: Arc<dyn Clock>,
        extra: impl FnOnce(ProviderConfig, &str) -> ProviderConfig,
    ) -> World {
        Self::start_configured(seats, clock, extra, |_| {}).await
    }

    /// As [`World::start_with`], with Roster's configuration adjusted by `adjust`.
    async fn start_configured(
        seats: i64,
        clock: Arc<dyn Clock>,
        extra: impl FnOnce(ProviderConfig, &str) -> ProviderConfig,
        adjust: impl FnOnce(&mut roster::config::Config) + Send + 'static,
    ) -> World {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callback = format!("http://{}/sso/callback", listener.local_addr().unwrap());
        let config = ProviderConfig::new()
            .client(ProviderClient::new("roster", "roster-secret", &callback).post_logout_redirect_uri(PRODUCT));
        let idp = OidcProvider::start(&extra(accounts(config), &callback)).await;
        let dns = TestDns::start().await;
        let issuer = idp.issuer.clone();
        let dns_addr = dns.addr;
        let app = TestApp::spawn_listening(
            TestDb::new().await,
            listener,
            move |c| {
                c.sso_dev_mode = true;
                c.dns_name_servers = vec![dns_addr];
                c.dns_timeout_ms = 1000;
                c.tenant_connection = Some(tenant_connection(issuer));
                adjust(c);
            },
            clock,
        )
        .await;
        let org = app.org("Acme", seats).await;
        set_sso(&app, &org, Some(TENANT), true).await;
        verify_domain(&app, &dns, &org, DOMAIN).await;
        let (client_id, client_secret) = product_client(&app, &org).await;
        World { app, idp, org, client_id, client_secret, _dns: dns }
    }

    fn authorize(&self, query: &str) -> String {
        format!(
            "{}&redirect_uri={}&state=product-state",
            self.app.url(&format!("/sso/authorize?{query}")),
            enc(PRODUCT)
        )
    }

    /// Signs `login` in from `authorize?…`, all the way to the product's redirect.
    async fn login(
        &self,
        browser: &Browser,
        query: &str,
        login: &str,
    ) -> Result<String, crate::oidc_provider::Stopped> {
        browser.follow(&self.authorize(query), login, PRODUCT).await
    }

    /// Redeems a code as the product's backend.
    async fn redeem(&self, code: &str, secret: &str) -> (StatusCode, Value) {
        let res = self
            .app
            .client
            .post(self.app.url("/sso/token"))
            .basic_auth(&self.client_id, Some(secret))
            .form(&[("grant_type", "authorization_code"), ("code", code)])
            .send()
            .await
            .unwrap();
        read(res).await
    }

    /// Signs `login` in and redeems the code: the profile the product gets.
    async fn sign_in(&self, login: &str) -> Value {
        let browser = Browser::new();
        let back = self.login(&browser, &format!("tenant={TENANT}"), login).await.unwrap_or_else(|e| {
            panic!("{login} was not signed in: {} {}", e.status, e.body);
        });
        assert_eq!(query_param(&back, "state").as_deref(), Some("product-state"));
        let code = query_param(&back, "code").expect("a code");
        let (status, profile) = self.redeem(&code, &self.client_secret).await;
        assert_eq!(status, StatusCode::OK, "{profile}");
        profile
    }

    /// The refusal page `login` ends on: its status and machine-readable reason.
    async fn refused(&self, query: &str, login: &str) -> (StatusCode, String, String) {
        let stopped = self.login(&Browser::new(), query, login).await.expect_err("the login must be refused");
        (stopped.status, reason(&stopped.body), stopped.body)
    }
}

/// Sets the organization's own OpenID connection through the admin API.
async fn put_connection(app: &TestApp, key: &str, issuer: &str, client_id: &str, secret: &str) -> (StatusCode, Value) {
    let body = json!({"issuer": issuer, "client_id": client_id, "client_secret": secret});
    app.call(Method::PUT, "/api/v1/sso/connection", Some(key), Some(body)).await
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The reason code on a Roster sign-in error page.
fn reason(body: &str) -> String {
    body.split("<code id=\"reason\">").nth(1).and_then(|r| r.split('<').next()).unwrap_or("").to_string()
}

async fn set_sso(app: &TestApp, org: &TestOrg, tenant: Option<&str>, auto_assign: bool) {
    let body = json!({"tenant_id": tenant, "enforce": true, "auto_assign": auto_assign, "default_role": "write"});
    let (s, b) = app.call(Method::PUT, "/api/v1/organization/sso", Some(&org.owner_key), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn verify_domain(app: &TestApp, dns: &TestDns, org: &TestOrg, name: &str) {
    let (s, added) = app.post("/api/v1/domains", &org.owner_key, json!({ "name": name })).await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    dns.set_txt(&format!("_roster-challenge.{name}"), &[&[added["record"]["value"].as_str().unwrap()]]);
    let id = added["id"].as_str().unwrap();
    let (s, checked) = app.post(&format!("/api/v1/domains/{id}/verify"), &org.owner_key, json!({})).await;
    assert_eq!((s, checked["domain"]["status"].as_str()), (StatusCode::OK, Some("verified")), "{checked}");
}

async fn product_client(app: &TestApp, org: &TestOrg) -> (String, String) {
    let (s, created) =
        app.post("/api/v1/sso/clients", &org.owner_key, json!({"name": "Product", "redirect_uris": [PRODUCT]})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    (created["id"].as_str().unwrap().to_string(), created["client_secret"].as_str().unwrap().to_string())
}

async fn member_by_email(app: &TestApp, org: &TestOrg, email: &str) -> Option<Value> {
    let (_, members) = app.get("/api/v1/members?limit=200", &org.owner_key).await;
    members["items"].as_array().unwrap().iter().find(|m| m["email"].as_str() == Some(email)).cloned()
}

async fn refusals(app: &TestApp, org: &TestOrg) -> Vec<String> {
    app.audit(&org.owner_key)
        .await
        .into_iter()
        .filter(|a| a["action"] == "sso.login_refused")
        .map(|a| a["after"]["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn members_invitations_and_verified_domains_sign_in() {
    let w = World::start(10, Arc::new(SystemClock)).await;

    // An active member: the Owner.
    let owner = w.sign_in("owner").await;
    assert_eq!(owner["email"], format!("owner@{DOMAIN}"));
    assert_eq!(owner["role"], "owner");
    assert_eq!(owner["member_status"], "active");
    assert_eq!(owner["organization_id"], w.org.id.to_string());
    assert_eq!(owner["organization_name"], "Acme");
    assert_eq!(owner["connection"], "tenant");
    assert_eq!(owner["issuer"], w.idp.issuer);
    assert_eq!(owner["idp_subject"], "owner");
    assert_eq!(owner["name"], "Olive Owner");
    assert_eq!(owner["sso_enforced"], true);

    // A pending invitation for exactly this email (any case) is accepted, with its role and seat.
    let (s, inv) = w
        .app
        .post("/api/v1/invitations", &w.org.owner_key, json!({"email": "BOB@elsewhere.test", "role": "admin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    let seats_before = w.app.seats(&w.org.owner_key).await;
    let bob = w.sign_in("bob").await;
    // The member's email is the one the identity provider vouched for.
    assert_eq!((bob["email"].as_str(), bob["role"].as_str()), (Some("bob@elsewhere.test"), Some("admin")));
    let seats_after = w.app.seats(&w.org.owner_key).await;
    assert_eq!(seats_after["used"], seats_before["used"], "the invitation's seat becomes the member's");
    assert_eq!(seats_after["pending_invitations"], 0);
    let (_, invs) = w.app.get("/api/v1/invitations", &w.org.owner_key).await;
    assert_eq!(invs["items"][0]["status"], "accepted");

    // A new user of a verified domain joins, with the role the tenant claim maps to ...
    let ada = w.sign_in("ada").await;
    assert_eq!((ada["email"].as_str(), ada["role"].as_str()), (Some("Ada@acme.example.com"), Some("admin")));
    let member = member_by_email(&w.app, &w.org, "Ada@acme.example.com").await.expect("ada is a member");
    assert_eq!((member["source"].as_str(), member["status"].as_str()), (Some("sso"), Some("active")));
    // ... or the organization's default role when no role maps.
    let dan = w.sign_in("dan").await;
    assert_eq!(dan["role"], "write");

    // The second sign-in of a member changes nothing.
    let again = w.sign_in("ada").await;
    assert_eq!(again["member_id"], ada["member_id"]);

    let actions: Vec<String> =
        w.app.audit(&w.org.owner_key).await.iter().map(|a| a["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions.iter().filter(|a| *a == "sso.login").count(), 5);
    assert!(actions.contains(&"invitation.accepted".to_string()));
    assert_eq!(
        actions.iter().filter(|a| *a == "member.added").count(),
        4,
        "the Owner at creation, then bob, ada and dan"
    );
}

/// The tenant claim's roles are a role source at every login, not only the first.
#[tokio::test]
async fn each_login_re_derives_the_role_from_the_tenant_roles() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    let key = &w.org.owner_key;
    let dan = w.sign_in("dan").await;
    assert_eq!(dan["role"], "write", "`viewer` maps to nothing: the default role");
    let member = member_by_email(&w.app, &w.org, &format!("dan@{DOMAIN}")).await.unwrap();
    assert_eq!(member["sso_roles"], json!(["viewer"]));
    assert_eq!(member["role_reason"], "Write, the organization's default role");

    // A mapping changes nobody until a login (or a reconcile) re-derives.
    let (s, m) = w
        .app
        .post("/api/v1/role-mappings", key, json!({"source": "idp_role", "value": "Viewer", "role": "read"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let again = w.sign_in("dan").await;
    assert_eq!((again["member_id"].clone(), again["role"].as_str()), (dan["member_id"].clone(), Some("read")));
    let member = member_by_email(&w.app, &w.org, &format!("dan@{DOMAIN}")).await.unwrap();
    assert_eq!(member["role_source"], json!({"kind": "sso_role", "value": "viewer"}));
    assert_eq!(member["role_reason"], "Read, from SSO tenant role viewer");
    let audit = w.app.audit(key).await;
    let changed: Vec<&Value> = audit.iter().filter(|a| a["action"] == "member.role_changed").collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(
        (changed[0]["before"]["role"].as_str(), changed[0]["after"]["role"].as_str()),
        (Some("write"), Some("read"))
    );

    // A pinned manual role holds whatever the tenant claim says.
    let id = member["id"].as_str().unwrap();
    let (s, pinned) =
        w.app.call(Method::PATCH, &format!("/api/v1/members/{id}"), Some(key), Some(json!({"role": "admin"}))).await;
    assert_eq!(s, StatusCode::OK, "{pinned}");
    assert_eq!(w.sign_in("dan").await["role"], "admin");
    let (s, plan) = w.app.get("/api/v1/reconcile/plan", key).await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["changes"], json!([]), "every role is what its sources give");
}

#[tokio::test]
async fn refusals_say_why_and_are_audited() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    let tenant = format!("tenant={TENANT}");

    // email_verified=false.
    let (status, why, body) = w.refused(&tenant, "eve").await;
    assert_eq!((status, why.as_str()), (StatusCode::FORBIDDEN, "email_not_verified"), "{body}");
    // The tenant claim does not list the organization's tenant.
    let (status, why, body) = w.refused(&tenant, "sam").await;
    assert_eq!((status, why.as_str()), (StatusCode::FORBIDDEN, "tenant_mismatch"), "{body}");
    // Not a member, no invitation, and not of a verified domain.
    let (status, why, body) = w.refused(&tenant, "carol").await;
    assert_eq!((status, why.as_str()), (StatusCode::FORBIDDEN, "not_a_member"), "{body}");
    assert!(body.contains("carol@elsewhere.test is not a member of Acme"), "{body}");

    // An invitation is accepted only by the invited email.
    let (s, _) = w
        .app
        .post("/api/v1/invitations", &w.org.owner_key, json!({"email": "bob@elsewhere.test", "role": "read"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, why, _) = w.refused(&tenant, "carol").await;
    assert_eq!(why, "not_a_member");
    assert!(member_by_email(&w.app, &w.org, "carol@elsewhere.test").await.is_none());
    let (_, invs) = w.app.get("/api/v1/invitations", &w.org.owner_key).await;
    assert_eq!(invs["items"][0]["status"], "pending", "carol did not take bob's invitation");

    // A suspended member is refused.
    let dan = w.sign_in("dan").await;
    let (s, _) = w
        .app
        .post(&format!("/api/v1/members/{}/suspend", dan["member_id"].as_str().unwrap()), &w.org.owner_key, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (status, why, body) = w.refused(&tenant, "dan").await;
    assert_eq!((status, why.as_str()), (StatusCode::FORBIDDEN, "member_suspended"), "{body}");

    // Auto-assignment off: a verified-domain stranger is not let in.
    set_sso(&w.app, &w.org, Some(TENANT), false).await;
    let (_, why, _) = w.refused(&tenant, "ada").await;
    assert_eq!(why, "not_a_member");

    let audited = refusals(&w.app, &w.org).await;
    for expected in ["email_not_verified", "tenant_mismatch", "not_a_member", "member_suspended"] {
        assert!(audited.iter().any(|r| r == expected), "{expected} not audited: {audited:?}");
    }
}

#[tokio::test]
async fn no_free_seat_refuses_auto_assignment_and_changes_nothing() {
    // One seat, taken by the Owner.
    let w = World::start(1, Arc::new(SystemClock)).await;
    let (status, why, body) = w.refused(&format!("tenant={TENANT}"), "ada").await;
    assert_eq!((status, why.as_str()), (StatusCode::FORBIDDEN, "no_free_seat"), "{body}");
    assert!(body.contains("1 of 1 in use"), "{body}");
    assert!(member_by_email(&w.app, &w.org, "Ada@acme.example.com").await.is_none());
    assert_eq!(w.app.seats(&w.org.owner_key).await["used"], 1);
    assert!(refusals(&w.app, &w.org).await.contains(&"no_free_seat".to_string()));
}

#[tokio::test]
async fn home_realm_discovery_reads_only_verified_domains() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    // The email's verified domain finds the organization, and login_hint carries the email.
    let browser = Browser::new();
    let res = browser.get(&w.authorize(&format!("email=ada%40{DOMAIN}"))).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = res.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with(&w.idp.issuer), "{to}");
    assert_eq!(query_param(&to, "login_hint").as_deref(), Some("ada@acme.example.com"));
    assert_eq!(query_param(&to, "tenant").as_deref(), Some(TENANT));
    assert_eq!(query_param(&to, "code_challenge_method").as_deref(), Some("S256"));
    assert!(query_param(&to, "nonce").is_some());
    let back = w.login(&Browser::new(), &format!("email=ada%40{DOMAIN}"), "ada").await.unwrap();
    assert!(query_param(&back, "code").is_some());

    // An unverified domain routes nobody.
    let (status, why, _) = w.refused("email=x%40unverified.example.org", "ada").await;
    assert_eq!((status, why.as_str()), (StatusCode::NOT_FOUND, "domain_not_verified"));
    // Neither does a domain once removed.
    let (_, domains) = w.app.get("/api/v1/domains", &w.org.owner_key).await;
    let id = domains[0]["id"].as_str().unwrap();
    let (s, _) = w.app.call(Method::DELETE, &format!("/api/v1/domains/{id}"), Some(&w.org.owner_key), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, why, _) = w.refused(&format!("email=ada%40{DOMAIN}"), "ada").await;
    assert_eq!(why, "domain_not_verified");
    // And without the verified domain, auto-assignment stops too.
    let (_, why, _) = w.refused(&format!("organization={}", w.org.id), "dan").await;
    assert_eq!(why, "not_a_member");
}

#[tokio::test]
async fn state_code_and_browser_are_single_use_and_bound() {
    // Starts at the real time: the provider stamps its tokens with it.
    let clock = ManualClock::new(SystemClock.now());
    let w = World::start(10, Arc::new(clock.clone())).await;
    let tenant = format!("tenant={TENANT}");
    let callback = w.app.url("/sso/callback");

    // Stop at Roster's callback, then deliver it ourselves.
    let browser = Browser::new();
    let at_callback = browser.follow(&w.authorize(&tenant), "owner", &callback).await.unwrap();

    // Another browser (no attempt cookie) cannot finish it.
    let other = Browser::new();
    let res = other.get(&at_callback).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reason(&res.text().await.unwrap()), "browser_mismatch");
    // Nor a browser with a cookie of its own attempt.
    let _ = other.follow(&w.authorize(&tenant), "owner", &callback).await.unwrap();
    let res = other.get(&at_callback).await;
    assert_eq!(reason(&res.text().await.unwrap()), "browser_mismatch");

    // The right browser finishes it once.
    let res = browser.get(&at_callback).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = res.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(PRODUCT));
    // A replayed state is refused.
    let res = browser.get(&at_callback).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reason(&res.text().await.unwrap()), "login_already_used");
    // A state Roster never issued.
    let res = browser.get(&format!("{callback}?state=forged&code=x")).await;
    assert_eq!(reason(&res.text().await.unwrap()), "unknown_login");

    // The code: a wrong secret is refused and does not burn it ...
    let code = query_param(&back, "code").unwrap();
    let (s, body) = w.redeem(&code, "roster_cs_wrong").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // ... the right one redeems it once.
    let (s, body) = w.redeem(&code, &w.client_secret).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = w.redeem(&code, &w.client_secret).await;
    assert_eq!((s, body["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:roster:problem:invalid-grant")));

    // An expired code is refused.
    let back = w.login(&Browser::new(), &tenant, "owner").await.unwrap();
    clock.advance(chrono::Duration::seconds(61));
    let (s, body) = w.redeem(&query_param(&back, "code").unwrap(), &w.client_secret).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");

    // An attempt older than ten minutes is refused at the callback.
    let browser = Browser::new();
    let at_callback = browser.follow(&w.authorize(&tenant), "owner", &callback).await.unwrap();
    clock.advance(chrono::Duration::minutes(11));
    let res = browser.get(&at_callback).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reason(&res.text().await.unwrap()), "login_expired");

    // Each refusal of a known attempt is in the organization's audit log.
    let audited = refusals(&w.app, &w.org).await;
    for expected in ["browser_mismatch", "login_already_used", "login_expired"] {
        assert!(audited.iter().any(|r| r == expected), "{expected} not audited: {audited:?}");
    }
}

#[tokio::test]
async fn provider_errors_and_bad_authorize_requests_end_on_clear_pages() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    // The provider answers with an error (the user cancelled): a page, not a 500.
    let browser = Browser::new();
    let res = browser.get(&w.authorize(&format!("tenant={TENANT}"))).await;
    let to = res.headers()["location"].to_str().unwrap().to_string();
    let state = query_param(&to, "state").unwrap();
    let res = browser
        .get(&format!(
            "{}?state={}&error=access_denied&error_description=End-User+aborted",
            w.app.url("/sso/callback"),
            enc(&state)
        ))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"].to_str().unwrap(), "text/html; charset=utf-8");
    let body = res.text().await.unwrap();
    assert_eq!(reason(&body), "provider_error");
    assert!(body.contains("access_denied: End-User aborted"), "{body}");
    assert!(refusals(&w.app, &w.org).await.contains(&"provider_error".to_string()));

    // An unregistered redirect_uri never gets a redirect.
    for bad in ["http://127.0.0.1:9/app/callback/", "https://evil.example/cb"] {
        let url = w.app.url(&format!("/sso/authorize?tenant={TENANT}&redirect_uri={}", enc(bad)));
        let res = browser.get(&url).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(res.headers().get("location").is_none());
        assert_eq!(reason(&res.text().await.unwrap()), "redirect_uri_not_registered");
    }
    for (query, expected) in [
        ("tenant=T-nobody", "unknown_tenant"),
        ("organization=not-a-uuid", "invalid_request"),
        ("email=not-an-email", "invalid_request"),
        (&format!("tenant={TENANT}&email=a%40b.example"), "invalid_request"),
    ] {
        let url = format!("{}&redirect_uri={}", w.app.url(&format!("/sso/authorize?{query}")), enc(PRODUCT));
        let res = browser.get(&url).await;
        assert!(res.status().is_client_error(), "{query}: {}", res.status());
        assert_eq!(reason(&res.text().await.unwrap()), expected, "{query}");
    }
    // The token endpoint: bad bodies are problems.
    let res = w.app.client.post(w.app.url("/sso/token")).json(&json!({"code": "x"})).send().await.unwrap();
    let (s, _) = read(res).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let res = w
        .app
        .client
        .post(w.app.url("/sso/token"))
        .json(&json!({"code": "nope", "client_id": w.client_id, "client_secret": w.client_secret}))
        .send()
        .await
        .unwrap();
    let (s, body) = read(res).await;
    assert_eq!((s, body["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:roster:problem:invalid-grant")));
}

/// An organization with a direct connection to `client_id` at `issuer`.
async fn direct_org(w: &World, name: &str, issuer: &str, client_id: &str, secret: &str) -> (TestOrg, String, String) {
    let org = w.app.org(name, 5).await;
    let (s, body) = put_connection(&w.app, &org.owner_key, issuer, client_id, secret).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.get("client_secret").is_none(), "the secret is write-only");
    // Its Owner is someone the provider knows.
    let (s, inv) = w
        .app
        .post("/api/v1/invitations", &org.owner_key, json!({"email": format!("owner@{DOMAIN}"), "role": "read"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    let (id, secret) = product_client(&w.app, &org).await;
    (org, id, secret)
}

#[tokio::test]
async fn direct_connections_sign_in_and_forged_tokens_are_refused() {
    let w = World::start_with(10, Arc::new(SystemClock), |c, callback| {
        c.client(ProviderClient::new("globex", "globex-secret", callback))
            .client(ProviderClient::new("wrong-aud", "s1", callback).tamper("audience"))
            .client(ProviderClient::new("wrong-iss", "s2", callback).tamper("issuer"))
            .client(ProviderClient::new("hmac", "s3-a-long-enough-shared-secret-value", callback).tamper("hs256"))
            .client(ProviderClient::new("unsigned", "s4", callback).tamper("none"))
            .client(ProviderClient::new("stale", "s5", callback).tamper("expired"))
    })
    .await;
    let issuer = w.idp.issuer.clone();

    // A direct connection: the organization's own OpenID app.
    let (globex, _, _) = direct_org(&w, "Globex", &issuer, "globex", "globex-secret").await;
    let back = w.login(&Browser::new(), &format!("organization={}", globex.id), "owner").await.unwrap();
    assert!(query_param(&back, "code").is_some());
    assert!(
        member_by_email(&w.app, &globex, &format!("owner@{DOMAIN}")).await.is_some(),
        "the invitation was accepted"
    );

    for (client, secret, expected) in [
        ("wrong-aud", "s1", "invalid_id_token"),
        ("wrong-iss", "s2", "invalid_id_token"),
        ("hmac", "s3-a-long-enough-shared-secret-value", "invalid_id_token"),
        ("unsigned", "s4", "invalid_id_token"),
        ("stale", "s5", "invalid_id_token"),
    ] {
        let (org, _, _) = direct_org(&w, &format!("Org{}", client.replace('-', "")), &issuer, client, secret).await;
        let (status, why, body) = w.refused(&format!("organization={}", org.id), "owner").await;
        assert_eq!((status, why.as_str()), (StatusCode::FORBIDDEN, expected), "{client}: {body}");
        assert!(member_by_email(&w.app, &org, &format!("owner@{DOMAIN}")).await.is_none(), "{client}");
        assert_eq!(refusals(&w.app, &org).await, vec![expected.to_string()], "{client}");
    }

    // A connection whose discovery does not answer is refused when it is set.
    let org = w.app.org("Nowhere", 2).await;
    let (s, body) = put_connection(&w.app, &org.owner_key, "http://127.0.0.1:9", "x", "y").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn a_provider_whose_tokens_carry_another_issuer_is_refused() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    let callback = w.app.url("/sso/callback");
    // A second provider instance: its discovery document claims http://127.0.0.1:<port>,
    // its tokens say http://localhost:<port>.
    let rogue = OidcProvider::start(
        &accounts(ProviderConfig::new().issuer_host("localhost").advertise_issuer_host("127.0.0.1"))
            .client(ProviderClient::new("roster", "roster-secret", &callback)),
    )
    .await;
    let advertised = format!("http://127.0.0.1:{}", rogue.port);
    assert_ne!(advertised, rogue.issuer);
    let (org, _, _) = direct_org(&w, "Initech", &advertised, "roster", "roster-secret").await;
    let (status, why, body) = w.refused(&format!("organization={}", org.id), "owner").await;
    assert_eq!((status, why.as_str()), (StatusCode::FORBIDDEN, "invalid_id_token"), "{body}");
    assert!(body.to_lowercase().contains("issuer"), "{body}");
}

#[tokio::test]
async fn sessions_show_who_is_signed_in_and_end_on_logout_or_suspension() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    let browser = Browser::new();
    let _ = w.login(&browser, &format!("tenant={TENANT}"), "ada").await.unwrap();
    let res = browser.get(&w.app.url("/sso/session")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let who: Value = res.json().await.unwrap();
    assert_eq!((who["email"].as_str(), who["role"].as_str()), (Some("Ada@acme.example.com"), Some("admin")));

    // Suspending the member ends the session.
    let (s, _) = w
        .app
        .post(&format!("/api/v1/members/{}/suspend", who["member_id"].as_str().unwrap()), &w.org.owner_key, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(browser.get(&w.app.url("/sso/session")).await.status(), StatusCode::UNAUTHORIZED);

    // Logout ends the session and sends the browser to the provider's end_session_endpoint.
    let browser = Browser::new();
    let _ = w.login(&browser, &format!("tenant={TENANT}"), "owner").await.unwrap();
    assert_eq!(browser.get(&w.app.url("/sso/session")).await.status(), StatusCode::OK);
    let res = browser.client.post(w.app.url("/sso/logout")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = res.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with(&format!("{}/session/end", w.idp.issuer)), "{to}");
    assert!(query_param(&to, "id_token_hint").is_some());
    assert_eq!(browser.get(&w.app.url("/sso/session")).await.status(), StatusCode::UNAUTHORIZED);
    // Without a session there is nothing to end.
    let res = Browser::new().client.post(w.app.url("/sso/logout")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn discovery_and_keys_are_fetched_once_for_many_logins() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    let _ = w.sign_in("owner").await;
    let first = w.idp.stats().await;
    for _ in 0..3 {
        let _ = w.sign_in("owner").await;
    }
    let after = w.idp.stats().await;
    assert_eq!(after["jwks_fetches"], first["jwks_fetches"], "no JWKS fetch per login: {first} → {after}");
    assert_eq!(after["discovery_fetches"], first["discovery_fetches"]);
    assert_eq!(after["token_requests"].as_u64().unwrap(), first["token_requests"].as_u64().unwrap() + 3);
}

#[tokio::test]
async fn a_login_started_on_one_replica_finishes_on_another() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    // A second replica on the same database, behind the same public URL.
    let public = w.app.url("/");
    let issuer = w.idp.issuer.clone();
    let db_url = w.app.db_url().to_string();
    let replica = TestApp::spawn_with(
        TestDb::existing(&db_url),
        move |c| {
            c.sso_dev_mode = true;
            c.public_base_url = url::Url::parse(&public).unwrap();
            c.tenant_connection = Some(tenant_connection(issuer));
        },
        Arc::new(SystemClock),
    )
    .await;
    let browser = Browser::new();
    let callback = w.app.url("/sso/callback");
    let at_callback = browser.follow(&w.authorize(&format!("tenant={TENANT}")), "ada", &callback).await.unwrap();
    // The load balancer sends the callback to the other replica.
    let on_replica = at_callback.replace(&w.app.url(""), &replica.url(""));
    let res = browser.get(&on_replica).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{:?}", res.text().await);
    let back = res.headers()["location"].to_str().unwrap().to_string();
    let (s, profile) = w.redeem(&query_param(&back, "code").unwrap(), &w.client_secret).await;
    assert_eq!((s, profile["role"].as_str()), (StatusCode::OK, Some("admin")), "{profile}");
}

#[tokio::test]
async fn clients_are_managed_by_admins_and_revocation_stops_codes() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    let read_key = w.app.key(&w.org, Role::Read).await;
    let (s, _) = w.app.post("/api/v1/sso/clients", &read_key, json!({"name": "x", "redirect_uris": [PRODUCT]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for bad in [
        json!({"name": "x", "redirect_uris": []}),
        json!({"name": "x", "redirect_uris": ["ftp://x/cb"]}),
        json!({"name": "x", "redirect_uris": ["https://app.example/cb#frag"]}),
    ] {
        let (s, body) = w.app.post("/api/v1/sso/clients", &w.org.owner_key, bad.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let (_, list) = w.app.get("/api/v1/sso/clients", &read_key).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("client_secret").is_none() && list[0].get("secret_hash").is_none());

    let back = w.login(&Browser::new(), &format!("tenant={TENANT}"), "owner").await.unwrap();
    let (s, _) =
        w.app.call(Method::DELETE, &format!("/api/v1/sso/clients/{}", w.client_id), Some(&w.org.owner_key), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = w.redeem(&query_param(&back, "code").unwrap(), &w.client_secret).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a revoked client redeems nothing");
    let (_, why, _) = w.refused(&format!("tenant={TENANT}"), "owner").await;
    assert_eq!(why, "redirect_uri_not_registered");

    // Another organization's key cannot revoke this organization's client.
    let other = w.app.org("Other", 2).await;
    let (id, _) = product_client(&w.app, &w.org).await;
    let (s, _) = w.app.call(Method::DELETE, &format!("/api/v1/sso/clients/{id}"), Some(&other.owner_key), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Runs the `roster` binary on `db_url` with `env`; answers the exit code, stdout and stderr.
fn roster_cli(db_url: &str, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROSTER_DATABASE_URL", db_url)
        .env("ROSTER_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run roster");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test]
async fn organizations_client_secrets_are_sealed_at_rest_and_keys_rotate() {
    let keys = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let line = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
        let path = keys.path().join(name);
        (path, line)
    };
    let ((first_path, first), (both_path, second)) = (key("first"), key("both"));
    std::fs::write(&first_path, format!("{first}\n")).unwrap();
    std::fs::write(&both_path, format!("# the new key seals; the old one still opens\n{second}\n{first}\n")).unwrap();
    let sealing = roster::secrets::SealingKeys::from_file(&first_path).unwrap();
    let w = World::start_configured(
        10,
        Arc::new(SystemClock),
        |c, callback| c.client(ProviderClient::new("globex", "globex-secret", callback)),
        move |c| c.sealing_keys = sealing,
    )
    .await;
    let issuer = w.idp.issuer.clone();
    let (globex, _, _) = direct_org(&w, "Globex", &issuer, "globex", "globex-secret").await;
    // The provider takes the secret Roster opened: the login completes.
    let back = w.login(&Browser::new(), &format!("organization={}", globex.id), "owner").await.unwrap();
    assert!(query_param(&back, "code").is_some());
    let report = w.app.roster.check_sealed_secrets().await.unwrap();
    assert_eq!((report.current, report.stale, report.clear), (1, 0, 0));

    let db = w.app.db_url().to_string();
    let first_file = first_path.to_str().unwrap();
    let both_file = both_path.to_str().unwrap();
    let dev = ("ROSTER_SSO_DEV_MODE", "true");
    // Without the key, Roster does not start: that organization could not sign in.
    let (code, _, err) = roster_cli(&db, &[dev], &["serve"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("secrets_key_file") && err.contains(&globex.id.to_string()), "{err}");

    // Rotation: a new key first, the old one kept; everything is resealed.
    let (code, out, err) =
        roster_cli(&db, &[dev, ("ROSTER_SECRETS_KEY_FILE", both_file)], &["secrets", "rotate", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report, json!({"current": 1, "stale": 0, "clear": 0}));
    // Now the old key alone opens nothing.
    let (code, _, err) = roster_cli(&db, &[dev, ("ROSTER_SECRETS_KEY_FILE", first_file)], &["secrets", "status"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not configured"), "{err}");
    let (new_only_path, _) = key("new-only");
    std::fs::write(&new_only_path, format!("{second}\n")).unwrap();
    let (code, out, err) = roster_cli(
        &db,
        &[dev, ("ROSTER_SECRETS_KEY_FILE", new_only_path.to_str().unwrap())],
        &["secrets", "status", "--json"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap(), json!({"current": 1, "stale": 0, "clear": 0}));
}

#[tokio::test]
async fn the_portal_signs_in_through_the_organizations_sso() {
    let w = World::start(10, Arc::new(SystemClock)).await;
    let browser = Browser::new();
    // Signed out, the portal sends the browser to sign in with the portal as the client.
    let res = browser.get(&w.app.url("/portal/signin")).await;
    let signin = w.app.url(res.headers()["location"].to_str().unwrap());
    assert!(signin.contains(&roster::service::PORTAL_CLIENT_ID.to_string()), "{signin}");
    // An email of the verified domain goes on to the organization's SSO.
    let res = browser
        .client
        .post(w.app.url("/signin"))
        .form(&[
            ("email", format!("owner@{DOMAIN}")),
            ("redirect_uri", w.app.url("/portal/callback")),
            ("client_id", roster::service::PORTAL_CLIENT_ID.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let authorize = w.app.url(res.headers()["location"].to_str().unwrap());
    assert!(authorize.contains("/sso/authorize?"), "{authorize}");
    let back = browser.follow(&authorize, "owner", &w.app.url("/portal/callback")).await.unwrap();
    let res = browser.get(&back).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/portal");
    let res = browser.get(&w.app.url("/portal")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let home = res.text().await.unwrap();
    assert!(
        home.contains(
            r#"Sign in to the product with <strong id="setup-email">owner@acme.example.com</strong>, through Acme's single sign-on."#
        ),
        "{home}"
    );
    assert!(home.contains("Acme (Owner)"), "{home}");
    assert!(home.contains(r#"<strong id="sso-state">on, enforced</strong>"#), "{home}");
}
