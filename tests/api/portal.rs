//! The portal over HTTP: signing in with an operator's link, sessions and
//! their timeouts, the organization switcher, CSRF, who may open what,
//! previews before a change, and escaping of every name on every page.
//! (`portal_browser.rs` drives the same pages in Chromium.)

use crate::helpers::*;
use chrono::{Duration, TimeZone, Utc};
use reqwest::StatusCode;
use roster::clock::ManualClock;
use roster::model::Email;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

/// A client that shows redirects instead of following them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `roster_session` a response sets.
fn session_set_by(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("roster_session="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
}

/// Uses an operator's sign-in link as a browser does (open it, press the
/// button); returns the portal session cookie.
pub async fn use_link(app: &TestApp, link: &str) -> String {
    let client = no_redirects();
    let page = client.get(link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("<form"), "a button to sign in");
    let token = link.split("token=").nth(1).unwrap();
    let res = client
        .post(app.url("/signin/link"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&app.url("/portal/callback")), "{location}");
    session_set_by(&res).expect("a session cookie")
}

/// A portal session for `email` in `org` (the operator's `roster portal link`).
pub async fn sign_in(app: &TestApp, org: Uuid, email: &str) -> String {
    let link = app.roster.portal_link(org, &Email::parse(email).unwrap(), "cli:test").await.unwrap();
    use_link(app, &link).await
}

/// GET a portal page with a session; the status and the HTML.
pub async fn page(app: &TestApp, cookie: &str, path: &str) -> (StatusCode, String) {
    let res =
        no_redirects().get(app.url(path)).header("cookie", format!("roster_session={cookie}")).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The CSRF token the page's forms carry.
pub fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + r#"name="csrf" value=""#.len();
    html[at..].split('"').next().unwrap().to_string()
}

/// POST a form; the status and the HTML.
pub async fn submit(app: &TestApp, cookie: &str, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let res = no_redirects()
        .post(app.url(path))
        .header("cookie", format!("roster_session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

fn owner_email(name: &str) -> String {
    format!("owner@{}.example.com", name.to_lowercase())
}

async fn member(app: &TestApp, key: &str, email: &str, role: &str) -> Value {
    let (s, m) = app.post("/api/v1/members", key, json!({"email": email, "role": role})).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    m
}

#[tokio::test]
async fn an_operator_link_signs_in_once_and_lands_on_home() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let link = app.roster.portal_link(org.id, &Email::parse(&owner_email("Acme")).unwrap(), "cli:test").await.unwrap();
    let cookie = use_link(&app, &link).await;

    let (status, html) = page(&app, &cookie, "/portal").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Sign in to the product with <strong id=\"setup-email\">owner@acme.example.com</strong>"));
    assert!(html.contains(r#"<span id="seats-used">1</span> / <span id="seats-purchased">10</span>"#), "{html}");
    assert!(html.contains(r#"id="nav-billing""#), "an Owner sees Billing");

    // The link worked once.
    let token = link.split("token=").nth(1).unwrap();
    let again = no_redirects()
        .post(app.url("/signin/link"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
    assert_eq!(again.headers()["x-roster-error"], "link_used");

    // A link that names nothing is refused.
    let res = no_redirects().get(link.replace(token, "x")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Without a session: to sign in, as the portal's own client.
    let res = no_redirects().get(app.url("/portal/members")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = no_redirects().get(app.url("/portal/signin")).send().await.unwrap();
    let to = res.headers()["location"].to_str().unwrap();
    assert!(to.starts_with("/signin?redirect_uri="), "{to}");

    // Pages carry a policy without inline script, and no framing.
    let res = no_redirects()
        .get(app.url("/portal"))
        .header("cookie", format!("roster_session={cookie}"))
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

#[tokio::test]
async fn the_session_cookie_is_http_only_lax_and_secure_outside_development() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let link = app.roster.portal_link(org.id, &Email::parse(&owner_email("Acme")).unwrap(), "cli:test").await.unwrap();
    let token = link.split("token=").nth(1).unwrap();
    let res = no_redirects()
        .post(app.url("/signin/link"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    let set = res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    let session = set.iter().find(|c| c.starts_with("roster_session=")).expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Secure"),
        "{session}"
    );
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let cookie = sign_in(&app, org.id, &owner_email("Acme")).await;
    let (_, html) = page(&app, &cookie, "/portal/members").await;
    let csrf = csrf_of(&html);
    let invite = [("email0", "ada@example.com"), ("role0", "write")];

    let (status, body) = submit(&app, &cookie, "/portal/members/invite", &invite).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let mut wrong = invite.to_vec();
    wrong.push(("csrf", "not-the-token"));
    let (status, _) = submit(&app, &cookie, "/portal/members/invite", &wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Another session's token is no better.
    let other = sign_in(&app, org.id, &owner_email("Acme")).await;
    let (_, other_html) = page(&app, &other, "/portal/members").await;
    let mut foreign = invite.to_vec();
    let other_csrf = csrf_of(&other_html);
    foreign.push(("csrf", &other_csrf));
    let (status, _) = submit(&app, &cookie, "/portal/members/invite", &foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = app.get("/api/v1/invitations", &org.owner_key).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing was invited: {list}");
    // Sign-out is a form too.
    let (status, _) = submit(&app, &cookie, "/portal/signout", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::OK, "still signed in");

    // With its token the same form works.
    let mut good = invite.to_vec();
    good.push(("csrf", &csrf));
    let (status, body) = submit(&app, &cookie, "/portal/members/invite", &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Invited ada@example.com"), "{body}");
    let (_, list) = app.get("/api/v1/invitations", &org.owner_key).await;
    assert_eq!(list["items"][0]["email"], "ada@example.com");
    // The audit log names the person who acted.
    let (_, audit) = app.get("/api/v1/audit-log?action=invitation.created", &org.owner_key).await;
    assert_eq!(audit["items"][0]["actor_kind"], "portal");
    assert_eq!(audit["items"][0]["actor_id"], owner_email("Acme"));

    // Signing out ends the session.
    let (status, _) = submit(&app, &cookie, "/portal/signout", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn read_and_write_members_see_home_and_members_only() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    member(&app, &org.owner_key, "reader@example.com", "read").await;
    member(&app, &org.owner_key, "writer@example.com", "write").await;
    for email in ["reader@example.com", "writer@example.com"] {
        let cookie = sign_in(&app, org.id, email).await;
        let (status, home) = page(&app, &cookie, "/portal").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!home.contains("nav-billing") && !home.contains("nav-settings") && !home.contains("nav-audit"));
        let (status, members) = page(&app, &cookie, "/portal/members").await;
        assert_eq!(status, StatusCode::OK);
        assert!(members.contains("reader@example.com") && !members.contains("Invite people"), "read-only list");
        for path in [
            "/portal/billing",
            "/portal/settings",
            "/portal/settings/domains",
            "/portal/settings/sso",
            "/portal/settings/scim",
            "/portal/audit",
            "/portal/audit.csv",
        ] {
            assert_eq!(page(&app, &cookie, path).await.0, StatusCode::FORBIDDEN, "{email} {path}");
        }
        let csrf = csrf_of(&home);
        let (status, _) =
            submit(&app, &cookie, "/portal/billing/seats", &[("csrf", &csrf), ("purchased", "500")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) =
            submit(&app, &cookie, "/portal/members/invite", &[("csrf", &csrf), ("email0", "x@example.com")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (_, seats) = app.get("/api/v1/seats", &org.owner_key).await;
    assert_eq!(seats["purchased"], 10);
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_the_session() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap());
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.portal_idle_timeout_secs = 600;
            c.sso_session_ttl_secs = 1500;
        },
        Arc::new(clock.clone()),
    )
    .await;
    let org = app.org("Acme", 10).await;
    let email = owner_email("Acme");

    // Idle: used after 9 minutes it lives on; left 10 minutes, it ends.
    let cookie = sign_in(&app, org.id, &email).await;
    clock.advance(Duration::minutes(9));
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::OK);
    clock.advance(Duration::minutes(10));
    let res = no_redirects()
        .get(app.url("/portal"))
        .header("cookie", format!("roster_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/portal/signin?expired=1");
    let (_, audit) = app.get("/api/v1/audit-log?action=portal.session_ended", &org.owner_key).await;
    assert_eq!(audit["items"][0]["after"]["reason"], "idle", "{audit}");

    // Absolute: however busy, it ends after sso_session_ttl_secs.
    let cookie = sign_in(&app, org.id, &email).await;
    for _ in 0..2 {
        clock.advance(Duration::minutes(9));
        assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::OK);
    }
    clock.advance(Duration::minutes(8));
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::SEE_OTHER, "26 minutes > 25");
}

#[tokio::test]
async fn a_person_in_two_organizations_switches_between_them() {
    let app = TestApp::spawn().await;
    let acme = app.org("Acme", 10).await;
    let globex = app.org("Globex", 10).await;
    let umbrella = app.org("Umbrella", 10).await;
    member(&app, &globex.owner_key, &owner_email("Acme"), "admin").await;
    let cookie = sign_in(&app, acme.id, &owner_email("Acme")).await;
    let (_, home) = page(&app, &cookie, "/portal").await;
    assert!(home.contains("Acme (Owner)") && home.contains("Globex (Admin)"), "the switcher lists both");
    assert!(!home.contains("Umbrella"), "not an organization of this person");
    let csrf = csrf_of(&home);

    // Not a member of Umbrella: refused, still in Acme.
    let (status, _) =
        submit(&app, &cookie, "/portal/switch", &[("csrf", &csrf), ("organization", &umbrella.id.to_string())]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::OK);

    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("csrf", csrf.as_str()), ("organization", &globex.id.to_string())])
        .finish();
    let res = no_redirects()
        .post(app.url("/portal/switch"))
        .header("cookie", format!("roster_session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let switched = session_set_by(&res).expect("a session in Globex");
    let (_, home) = page(&app, &switched, "/portal").await;
    assert!(home.contains("<title>Home · Globex · Roster</title>"), "{home}");
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::SEE_OTHER, "the Acme session ended");
}

#[tokio::test]
async fn lowering_seats_below_use_shows_the_plan_and_applies_it_only_when_confirmed() {
    let app = TestApp::spawn_self_serve().await;
    let org = app.org("Acme", 5).await;
    for (email, role) in [("a@example.com", "admin"), ("r1@example.com", "read"), ("r2@example.com", "read")] {
        member(&app, &org.owner_key, email, role).await;
    }
    let cookie = sign_in(&app, org.id, &owner_email("Acme")).await;
    let (_, billing) = page(&app, &cookie, "/portal/billing").await;
    let csrf = csrf_of(&billing);

    let (status, plan) = submit(&app, &cookie, "/portal/billing/seats", &[("csrf", &csrf), ("purchased", "2")]).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert!(plan.contains("Suspend r2@example.com (Read)") && plan.contains("Suspend r1@example.com (Read)"), "{plan}");
    assert!(!plan.contains("Suspend a@example.com"), "an Admin after the Read members: {plan}");
    let (_, seats) = app.get("/api/v1/seats", &org.owner_key).await;
    assert_eq!(seats["purchased"], 5, "nothing changed before confirming");

    // A plan that no longer holds is refused.
    let fingerprint =
        plan.split(r#"name="fingerprint" value=""#).nth(1).unwrap().split('"').next().unwrap().to_string();
    member(&app, &org.owner_key, "late@example.com", "read").await;
    let (status, body) = submit(
        &app,
        &cookie,
        "/portal/billing/seats/apply",
        &[("csrf", &csrf), ("purchased", "2"), ("fingerprint", &fingerprint)],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.get("/api/v1/seats", &org.owner_key).await.1["purchased"], 5);

    let (_, plan) = submit(&app, &cookie, "/portal/billing/seats", &[("csrf", &csrf), ("purchased", "2")]).await;
    let fingerprint =
        plan.split(r#"name="fingerprint" value=""#).nth(1).unwrap().split('"').next().unwrap().to_string();
    let (status, body) = submit(
        &app,
        &cookie,
        "/portal/billing/seats/apply",
        &[("csrf", &csrf), ("purchased", "2"), ("fingerprint", &fingerprint)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("The organization now has 2 seats; 3 change(s) applied."), "{body}");
    let (_, seats) = app.get("/api/v1/seats", &org.owner_key).await;
    assert_eq!((seats["purchased"].as_i64(), seats["used"].as_i64()), (Some(2), Some(2)), "{seats}");
}

#[tokio::test]
async fn an_upload_is_previewed_and_sends_nothing_when_a_line_is_bad_or_seats_are_short() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 3).await;
    let cookie = sign_in(&app, org.id, &owner_email("Acme")).await;
    let (_, html) = page(&app, &cookie, "/portal/members").await;
    let csrf = csrf_of(&html);
    let upload = |csv: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf.clone())
            .part("file", reqwest::multipart::Part::bytes(csv.as_bytes()).file_name("people.csv"));
        no_redirects()
            .post(app.url("/portal/members/upload"))
            .header("cookie", format!("roster_session={cookie}"))
            .multipart(form)
            .send()
    };
    let res = upload("email,role\nada@example.com,write\nnot-an-email,read\nada@example.com,read\n").await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("<td>3</td><td>`not-an-email` is not a valid email address"), "{html}");
    assert!(html.contains("ada@example.com is already on line 2"), "{html}");
    assert!(html.contains(r#"id="nothing-sent""#) && !html.contains("send-upload"), "{html}");

    let res = upload("a@example.com,read\nb@example.com,read\nc@example.com,read\n").await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<strong class="bad" id="seats-short">1 short</strong>"#), "{html}");
    assert_eq!(app.get("/api/v1/invitations", &org.owner_key).await.1["items"].as_array().unwrap().len(), 0);
    assert!(app.mail_files().is_empty() && app.deliver_mail().await == 0, "nothing sent");

    let res = upload("a@example.com,read\nb@example.com,admin\n").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    let csv = html
        .split(r#"<textarea name="csv" hidden aria-hidden="true">"#)
        .nth(1)
        .unwrap()
        .split("</textarea>")
        .next()
        .unwrap();
    let (status, body) = submit(&app, &cookie, "/portal/members/upload/send", &[("csrf", &csrf), ("csv", csv)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Sent 2 invitations."), "{body}");
    assert_eq!(app.deliver_mail().await, 2);
}

#[tokio::test]
async fn names_show_as_text_on_every_page() {
    const HOSTILE: &str = "<img src=x onerror=alert(1)>";
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let (s, _) = app
        .call(reqwest::Method::PATCH, "/api/v1/organization", Some(&org.owner_key), Some(json!({"name": HOSTILE})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post("/api/v1/role-mappings", &org.owner_key, json!({"source": "group", "value": HOSTILE, "role": "admin"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            "/api/v1/sso/clients",
            &org.owner_key,
            json!({"name": HOSTILE, "redirect_uris": ["https://app.example/cb"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let cookie = sign_in(&app, org.id, &owner_email("Acme")).await;
    let (_, home) = page(&app, &cookie, "/portal").await;
    let csrf = csrf_of(&home);
    let owner = org.owner_member.to_string();
    let mut bodies = Vec::new();
    for path in [
        "/portal",
        "/portal/members",
        &format!("/portal/members/{owner}"),
        "/portal/billing",
        "/portal/settings",
        "/portal/settings/domains",
        "/portal/settings/sso",
        "/portal/settings/scim",
        "/portal/audit",
    ] {
        let (status, html) = page(&app, &cookie, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        bodies.push((path.to_string(), html));
    }
    // What a person types comes back on the page too.
    for (path, fields) in [
        ("/portal/settings/domains", vec![("name", HOSTILE)]),
        ("/portal/members/invite", vec![("email0", HOSTILE), ("role0", "read")]),
        ("/portal/settings/scim/tokens", vec![("name", HOSTILE)]),
    ] {
        let mut fields = fields;
        fields.push(("csrf", &csrf));
        let (_, html) = submit(&app, &cookie, path, &fields).await;
        bodies.push((path.to_string(), html));
    }
    for (path, html) in &bodies {
        assert!(!html.contains("<img"), "{path} shows markup: {html}");
        assert!(
            html.contains("&#60;img src=x onerror=alert(1)&#62;")
                || html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}: {html}"
        );
    }
}

#[tokio::test]
async fn the_operator_link_needs_an_active_member_and_a_session_ends_with_its_membership() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let outsider = Email::parse("nobody@example.com").unwrap();
    assert!(app.roster.portal_link(org.id, &outsider, "cli:test").await.is_err());
    let m = member(&app, &org.owner_key, "gone@example.com", "read").await;
    let (s, _) =
        app.post(&format!("/api/v1/members/{}/suspend", m["id"].as_str().unwrap()), &org.owner_key, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(app.roster.portal_link(org.id, &Email::parse("gone@example.com").unwrap(), "cli:test").await.is_err());
    // A session ends when its member is suspended.
    let m = member(&app, &org.owner_key, "soon@example.com", "read").await;
    let cookie = sign_in(&app, org.id, "soon@example.com").await;
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::OK);
    let (s, _) =
        app.post(&format!("/api/v1/members/{}/suspend", m["id"].as_str().unwrap()), &org.owner_key, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page(&app, &cookie, "/portal").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_nul_character_in_a_form_or_a_search_is_refused() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let cookie = sign_in(&app, org.id, &owner_email("Acme")).await;
    let (_, html) = page(&app, &cookie, "/portal/settings").await;
    let csrf = csrf_of(&html);
    let (status, _) =
        submit(&app, &cookie, "/portal/settings", &[("csrf", &csrf), ("name", "Ac\0me"), ("contact_email", "")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get("/api/v1/organization", &org.owner_key).await.1["name"], "Acme");
    // An encoded NUL in any query string is refused before routing; other control characters by the services.
    assert_eq!(page(&app, &cookie, "/portal/members?q=a%00b").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(page(&app, &cookie, "/portal/members?q=a%01b").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(page(&app, &cookie, "/portal/audit?actor=a%01b").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get("/api/v1/members?q=a%01b", &org.owner_key).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get("/api/v1/audit-log?action=a%01b", &org.owner_key).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    // A search finds members by part of their email, in any case.
    member(&app, &org.owner_key, "Grace.Hopper@example.com", "write").await;
    let (status, html) = page(&app, &cookie, "/portal/members?q=HOPPER").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Grace.Hopper@example.com") && !html.contains(">owner@acme.example.com</a>"), "{html}");
    let (_, list) = app.get("/api/v1/members?q=hop&source=admin", &org.owner_key).await;
    assert_eq!(list["total"], 1, "{list}");
    let (_, list) = app.get("/api/v1/members?q=50%25", &org.owner_key).await;
    assert_eq!(list["total"], 0, "a % is a character, not a wildcard: {list}");
}

#[tokio::test]
async fn billing_changes_are_requests_the_page_follows_until_answered() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 5).await;
    let cookie = sign_in(&app, org.id, &owner_email("Acme")).await;
    let (_, billing) = page(&app, &cookie, "/portal/billing").await;
    assert!(billing.contains("Request seats") && !billing.contains("id=\"billing-requests\""), "{billing}");
    let csrf = csrf_of(&billing);

    let (status, body) = submit(&app, &cookie, "/portal/billing/seats", &[("csrf", &csrf), ("purchased", "50")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Requested 50 seats. They take effect once the request is approved."), "{body}");
    assert!(body.contains("Waiting for approval"), "the pending request is listed: {body}");
    assert_eq!(app.get("/api/v1/seats", &org.owner_key).await.1["purchased"], 5, "nothing granted");
    // A plan asked for next joins the seats in one request.
    let (_, body) =
        submit(&app, &cookie, "/portal/billing/plan", &[("csrf", &csrf), ("plan", "enterprise_seat_monthly")]).await;
    assert!(body.contains("Requested the Enterprise Seat Monthly plan."), "{body}");
    assert!(body.contains("50 seats, plan Enterprise Seat Monthly"), "{body}");

    let op = app.operator_key().await;
    let (_, requests) = app.get("/api/v1/billing/requests", &org.owner_key).await;
    let newest = id_of(&requests[0]);
    let (status, b) = app
        .post(
            &format!("/api/v1/operator/billing/requests/{newest}/reject"),
            &op,
            json!({"reason": "Plans change at renewal."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let (_, billing) = page(&app, &cookie, "/portal/billing").await;
    assert!(billing.contains("Rejected") && billing.contains("Plans change at renewal."), "{billing}");
    assert!(billing.contains("Withdrawn"), "the seats-only request was superseded: {billing}");

    // A pending request can be withdrawn from the page.
    let (_, body) = submit(&app, &cookie, "/portal/billing/seats", &[("csrf", &csrf), ("purchased", "7")]).await;
    let (_, requests) = app.get("/api/v1/billing/requests", &org.owner_key).await;
    let pending = id_of(&requests[0]);
    assert!(body.contains(&format!("/portal/billing/requests/{pending}/withdraw")), "{body}");
    let path = format!("/portal/billing/requests/{pending}/withdraw");
    let (status, body) = submit(&app, &cookie, &path, &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Withdrew the request.") && !body.contains("Waiting for approval"), "{body}");
    let (status, _) = submit(&app, &cookie, &path, &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "withdrawn already");
    assert_eq!(app.get("/api/v1/seats", &org.owner_key).await.1["purchased"], 5);
}
