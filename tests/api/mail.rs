//! Email: invitations queue their message with the change, the sender
//! delivers it (here into the test's folder of `.eml` files, or to a real
//! SMTP server process), and the link in it accepts the invitation in a
//! browser-like client.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use roster::clock::{Clock, ManualClock};
use roster::model::{Email, Name, Plan};
use roster::secrets::Secret;
use roster::service::NewOrganization;
use serde_json::{json, Value};
use std::sync::Arc;

/// The accept link in a message, as a person would follow it.
pub fn accept_link(message: &str) -> String {
    let start = message.find("http://").expect("a link in the message");
    let link: String = message[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<').collect();
    assert!(link.contains("/invitations/accept?token=roster_inv_"), "{link}");
    link.replace("&amp;", "&")
}

/// The `Set-Cookie` value of `roster_session`, if the response set one.
fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("roster_session=").map(|rest| rest.split(';').next().unwrap_or("").to_string()))
        .filter(|v| !v.is_empty())
}

/// Follows an accept link: the page, then the form's post. Returns the
/// post's status, its reason header and the session cookie it set.
async fn accept(app: &TestApp, link: &str) -> (StatusCode, Option<String>, Option<String>) {
    let token = link.split("token=").nth(1).expect("token").to_string();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = browser
        .post(app.url("/invitations/accept"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let reason = res.headers().get("x-roster-error").map(|v| v.to_str().unwrap().to_string());
    let cookie = session_cookie(&res);
    if status == StatusCode::SEE_OTHER {
        // Accepted: signed in, on to the portal's Home.
        assert_eq!(res.headers()["location"], "/portal");
        return (StatusCode::OK, reason, cookie);
    }
    let body = res.text().await.unwrap();
    assert!(body.contains("<h1>"), "a page for a person: {body}");
    (status, reason, cookie)
}

async fn invitations(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/invitations?limit=200", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_invitation_email_arrives_and_its_link_makes_the_member_and_signs_in() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 5).await;
    let (status, created) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "bob@example.com", "role": "write"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["email_delivery"]["status"], "queued", "{created}");
    // Committed with the invitation, delivered by the sender's next round.
    assert!(app.mail_files().is_empty());
    assert_eq!(app.deliver_mail().await, 1);
    assert_eq!(app.deliver_mail().await, 0, "a sent message is not sent again");
    let files = app.mail_files();
    assert_eq!(files.len(), 1);
    let eml = &files[0];
    assert!(eml.contains("To: bob@example.com"), "{eml}");
    assert!(eml.contains("Subject: Join Acme as Write"), "{eml}");
    assert!(eml.contains("invited you to join Acme as Write"), "{eml}");
    assert!(eml.contains("Content-Type: text/html"), "{eml}");
    let link = accept_link(eml);
    let token = created["token"].as_str().unwrap();
    assert!(link.ends_with(&format!("token={token}")), "the link carries the invitation's token: {link}");

    // The invitation says its email went out, with what the transport answered.
    let listed = invitations(&app, &org.owner_key).await;
    let delivery = &listed[0]["email_delivery"];
    assert_eq!(delivery["status"], "sent", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert!(delivery["reply"].as_str().unwrap().starts_with("written to "), "{delivery}");

    // Opening the link shows the offer and changes nothing.
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("script-src"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<dd id="organization">Acme</dd>"#), "{html}");
    assert!(html.contains(r#"<dd id="role">Write</dd>"#), "{html}");
    assert!(html.contains(r#"<dd id="email">bob@example.com</dd>"#), "{html}");
    assert_eq!(invitations(&app, &org.owner_key).await[0]["status"], "pending");

    // Accepting makes the member and signs the browser in.
    let (status, _, cookie) = accept(&app, &link).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie.expect("a session cookie");
    let session: Value = app
        .client
        .get(app.url("/sso/session"))
        .header("cookie", format!("roster_session={cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["email"], "bob@example.com", "{session}");
    assert_eq!(session["role"], "write", "{session}");
    assert_eq!(session["organization_name"], "Acme", "{session}");
    let (_, members) = app.get("/api/v1/members?status=active", &org.owner_key).await;
    let bob = members["items"].as_array().unwrap().iter().find(|m| m["email"] == "bob@example.com").cloned();
    let bob = bob.expect("bob is a member");
    assert_eq!((bob["role"].clone(), bob["source"].clone()), (json!("write"), json!("invite")), "{bob}");
    assert_eq!(invitations(&app, &org.owner_key).await[0]["status"], "accepted");
    let audit = app.audit(&org.owner_key).await;
    let actions: Vec<&str> = audit.iter().filter_map(|a| a["action"].as_str()).collect();
    for expected in ["mail.sent", "invitation.accepted", "member.added", "sign_in.email_link"] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let sent = audit.iter().find(|a| a["action"] == "mail.sent").unwrap();
    assert_eq!(sent["target"], created["id"], "{sent}");
    assert_eq!(sent["after"]["to"], "bob@example.com", "{sent}");

    // The link works once.
    let (status, reason, cookie) = accept(&app, &link).await;
    assert_eq!((status, reason.as_deref()), (StatusCode::GONE, Some("invitation_used")));
    assert!(cookie.is_none());
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
}

#[tokio::test]
async fn a_resent_invitation_kills_the_old_link_and_a_revoked_one_its_own() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 5).await;
    let (_, created) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "cy@example.com", "role": "read"})).await;
    let id = id_of(&created);
    app.deliver_mail().await;
    let (status, resent) = app.post(&format!("/api/v1/invitations/{id}/resend"), &org.owner_key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resent}");
    app.deliver_mail().await;
    let files = app.mail_files();
    assert_eq!(files.len(), 2);
    assert!(files[1].contains("whose link no longer works"), "{}", files[1]);
    let (old, new) = (accept_link(&files[0]), accept_link(&files[1]));
    assert_ne!(old, new);
    let (status, reason, _) = accept(&app, &old).await;
    assert_eq!((status, reason.as_deref()), (StatusCode::NOT_FOUND, Some("invitation_unknown")));
    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/invitations/{id}"), Some(&org.owner_key), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, reason, cookie) = accept(&app, &new).await;
    assert_eq!((status, reason.as_deref()), (StatusCode::GONE, Some("invitation_revoked")));
    assert!(cookie.is_none());
    let (_, members) = app.get("/api/v1/members", &org.owner_key).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 1, "only the Owner: {members}");
}

#[tokio::test]
async fn an_expired_link_is_refused() {
    let clock = ManualClock::new(roster::clock::SystemClock.now());
    let app = TestApp::spawn_with(TestDb::new().await, |_| {}, Arc::new(clock.clone())).await;
    let org = app.org("Acme", 5).await;
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "dee@example.com", "role": "read"})).await;
    app.deliver_mail().await;
    let link = accept_link(&app.mail_files()[0]);
    clock.advance(chrono::Duration::days(15));
    let (status, reason, cookie) = accept(&app, &link).await;
    assert_eq!((status, reason.as_deref()), (StatusCode::GONE, Some("invitation_expired")));
    assert!(cookie.is_none());
}

#[tokio::test]
async fn an_organization_that_enforces_sso_accepts_only_through_its_sso() {
    let tenant = tenant_connection_nobody_answers();
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.sso_dev_mode = true;
            c.tenant_connection = Some(tenant);
        },
        Arc::new(roster::clock::SystemClock),
    )
    .await;
    let org = app.org("Acme", 5).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            "/api/v1/organization/sso",
            Some(&org.owner_key),
            Some(json!({"tenant_id": "T1acme", "enforce": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "eve@example.com", "role": "write"})).await;
    app.deliver_mail().await;
    let eml = &app.mail_files()[0];
    assert!(eml.contains("signs in through its single sign-on"), "{eml}");
    let link = accept_link(eml);
    let html = app.client.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("signs in only through its single sign-on"), "{html}");
    assert!(!html.contains("<form"), "no way to accept without SSO: {html}");
    // No product client registered yet: the SSO login signs in to the portal, and accepts the invitation.
    let portal = format!(
        r#"id="sso" href="/sso/authorize?organization={}&#38;redirect_uri={}&#38;client_id={}""#,
        org.id,
        url::form_urlencoded::byte_serialize(app.url("/portal/callback").as_bytes()).collect::<String>(),
        roster::service::PORTAL_CLIENT_ID
    );
    assert!(html.contains(&portal), "{portal} in {html}");
    // With a product client, the page starts the organization's SSO login through it.
    let client = app
        .roster
        .create_sso_client(
            &roster::service::Actor::cli(org.id),
            roster::service::NewSsoClient {
                name: Name::parse("app").unwrap(),
                redirect_uris: vec!["http://127.0.0.1:9/cb".into()],
            },
        )
        .await
        .unwrap();
    let html = app.client.get(&link).send().await.unwrap().text().await.unwrap();
    let expected = format!(
        r#"id="sso" href="/sso/authorize?organization={}&#38;redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&#38;client_id={}""#,
        org.id, client.client.id
    );
    assert!(html.contains(&expected) || html.contains(&expected.replace("&#38;", "&amp;")), "{html}");
    let (status, reason, cookie) = accept(&app, &link).await;
    assert_eq!((status, reason.as_deref()), (StatusCode::FORBIDDEN, Some("sso_required")));
    assert!(cookie.is_none());
    assert_eq!(invitations(&app, &org.owner_key).await[0]["status"], "pending");
}

#[tokio::test]
async fn a_csv_of_fifty_invitations_sends_fifty_messages() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let clock = now_clock();
    let app = app_sending_to(&server, None, &clock).await;
    let org = app.org("Acme", 60).await;
    let csv: String = std::iter::once("email,role\n".to_string())
        .chain((0..50u32).map(|i| format!("p{i}@example.com,{}\n", if i.is_multiple_of(2) { "read" } else { "write" })))
        .collect();
    let (status, body) = app.post_csv(&org.owner_key, &csv).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut attempts = 0;
    loop {
        let n = app.deliver_mail().await;
        if n == 0 {
            break;
        }
        attempts += n;
    }
    assert_eq!(attempts, 50);
    let got = server.wait_for_messages(50, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 50);
    let mut to: Vec<String> = got.iter().map(|m| m.rcpt_tos[0].clone()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 50, "one message per invitee");
    // Each message names its own role and carries its own link.
    let mut links: Vec<String> = got
        .iter()
        .map(|m| {
            let i: usize = m.rcpt_tos[0].trim_start_matches('p').split('@').next().unwrap().parse().unwrap();
            let role = if i.is_multiple_of(2) { "Read" } else { "Write" };
            assert_eq!(m.header("Subject").as_deref(), Some(format!("Join Acme as {role}").as_str()));
            accept_link(&m.text().unwrap())
        })
        .collect();
    links.sort();
    links.dedup();
    assert_eq!(links.len(), 50);
    assert!(invitations(&app, &org.owner_key).await.iter().all(|i| i["email_delivery"]["status"] == "sent"));
}

#[tokio::test]
async fn names_are_text_in_every_page_and_message() {
    let app = TestApp::spawn().await;
    let created = app
        .roster
        .create_organization(
            NewOrganization {
                name: Name::parse("<script>alert(1)</script>").unwrap(),
                seats: 5,
                owner_email: Email::parse("owner@example.com").unwrap(),
                plan: Plan::EnterpriseSeatYearly,
                contact_email: None,
            },
            &roster::service::Operator::cli_as("cli:test"),
        )
        .await
        .unwrap();
    let key = created.api_key_secret.expose().to_string();
    let (status, _) = app.post("/api/v1/invitations", &key, json!({"email": "fay@example.com", "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED);
    app.deliver_mail().await;
    let eml = &app.mail_files()[0];
    let html_part = &eml[eml.find("Content-Type: text/html").expect("an HTML part")..];
    assert!(!html_part.contains("<script>"), "{html_part}");
    assert!(html_part.contains("&#60;script&#62;") || html_part.contains("&lt;script&gt;"), "{html_part}");
    let page = app.client.get(accept_link(eml)).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("<script>"), "{page}");
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 5).await;
    let (_, created) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "gus@example.com", "role": "read"})).await;
    let res = app
        .client
        .post(app.url("/invitations/accept"))
        .header("origin", "https://attacker.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", created["token"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(session_cookie(&res).is_none());
    assert_eq!(invitations(&app, &org.owner_key).await[0]["status"], "pending");
    // Without a token, or with a malformed one: a page, not a problem document.
    for body in ["", "token=", "token=%00"] {
        let res = app
            .client
            .post(app.url("/invitations/accept"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }
}

// ---- A real SMTP server --------------------------------------------------

use crate::smtp_server::{SmtpOptions, SmtpServer, SmtpTls};
use roster::config::{MailTransport, SmtpSecurity, SmtpSettings};
use std::time::Duration;

/// Roster's SMTP settings for the test server.
fn smtp_settings(server: &SmtpServer, auth: Option<(&str, &str)>) -> SmtpSettings {
    let security = match server.url() {
        u if u.starts_with("smtps://") => SmtpSecurity::ImplicitTls,
        u if u.ends_with("?tls=none") => SmtpSecurity::None,
        _ => SmtpSecurity::StartTls,
    };
    SmtpSettings {
        host: "127.0.0.1".into(),
        port: server.port(),
        security,
        username: auth.map(|(u, _)| u.to_string()),
        password: auth.map(|(_, p)| Secret::new(p)),
        ca_pem: server.ca_pem_path().map(|p| std::fs::read(p).expect("the server's CA")),
        timeout: Duration::from_secs(10),
    }
}

async fn app_sending_to(server: &SmtpServer, auth: Option<(&str, &str)>, clock: &ManualClock) -> TestApp {
    let smtp = smtp_settings(server, auth);
    TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.mail.transport = MailTransport::Smtp(smtp);
            c.mail.from = "Acme via Roster <roster@example.com>".into();
        },
        Arc::new(clock.clone()),
    )
    .await
}

fn now_clock() -> ManualClock {
    ManualClock::new(roster::clock::SystemClock.now())
}

#[tokio::test]
async fn an_invitation_goes_out_over_starttls_with_authentication() {
    let server =
        SmtpServer::start(SmtpOptions { tls: SmtpTls::StartTls, auth: Some(("roster".into(), "s3cret".into())) }).await;
    let clock = now_clock();
    let app = app_sending_to(&server, Some(("roster", "s3cret")), &clock).await;
    let org = app.org("Acme", 5).await;
    let (status, created) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "bob@example.com", "role": "write"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(app.deliver_mail().await, 1);
    let got = server.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let mail = &got[0];
    assert_eq!(mail.rcpt_tos, vec!["bob@example.com".to_string()]);
    assert_eq!(mail.mail_from, "roster@example.com");
    assert_eq!((mail.tls, mail.auth_user.as_deref()), (true, Some("roster")));
    assert_eq!(mail.header("Subject").as_deref(), Some("Join Acme as Write"));
    let text = mail.text().expect("a text part");
    let html = mail.html().expect("an HTML part");
    assert!(text.contains("invited you to join Acme as Write"), "{text}");
    assert!(html.contains("<strong>Acme</strong>"), "{html}");
    let link = accept_link(&text);
    assert!(link.ends_with(&format!("token={}", created["token"].as_str().unwrap())), "{link}");
    let delivery = &invitations(&app, &org.owner_key).await[0]["email_delivery"];
    assert_eq!(delivery["status"], "sent", "{delivery}");
    assert!(delivery["reply"].as_str().unwrap().starts_with("250"), "the relay's reply: {delivery}");
    let (status, _, cookie) = accept(&app, &link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cookie.is_some());
}

#[tokio::test]
async fn implicit_tls_delivers_and_a_wrong_password_keeps_the_message_queued() {
    let server =
        SmtpServer::start(SmtpOptions { tls: SmtpTls::Implicit, auth: Some(("roster".into(), "right".into())) }).await;
    let clock = now_clock();
    let app = app_sending_to(&server, Some(("roster", "wrong")), &clock).await;
    let org = app.org("Acme", 5).await;
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "cy@example.com", "role": "read"})).await;
    assert_eq!(app.deliver_mail().await, 1);
    let delivery = invitations(&app, &org.owner_key).await[0]["email_delivery"].clone();
    // 535 is a permanent reply, but to the deployment's credentials, not to the message: it is retried.
    assert_eq!(delivery["status"], "queued", "{delivery}");
    assert!(delivery["reply"].as_str().unwrap().contains("535"), "{delivery}");
    assert!(server.messages().is_empty());

    let right = TestApp::spawn_with(
        TestDb::new().await,
        |c| c.mail.transport = MailTransport::Smtp(smtp_settings(&server, Some(("roster", "right")))),
        Arc::new(clock.clone()),
    )
    .await;
    let org = right.org("Acme", 5).await;
    right.post("/api/v1/invitations", &org.owner_key, json!({"email": "dee@example.com", "role": "read"})).await;
    assert_eq!(right.deliver_mail().await, 1);
    let got = server.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!((got[0].tls, got[0].rcpt_tos[0].as_str()), (true, "dee@example.com"));
}

#[tokio::test]
async fn a_relay_that_is_down_keeps_messages_queued_and_they_go_out_once_when_it_returns() {
    let mut server = SmtpServer::start(SmtpOptions::default()).await;
    let clock = now_clock();
    let app = app_sending_to(&server, None, &clock).await;
    let org = app.org("Acme", 10).await;
    server.stop().await;
    for name in ["a", "b", "c"] {
        let (status, _) = app
            .post(
                "/api/v1/invitations",
                &org.owner_key,
                json!({"email": format!("{name}@example.com"), "role": "read"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    assert_eq!(app.deliver_mail().await, 3);
    for inv in invitations(&app, &org.owner_key).await {
        let d = &inv["email_delivery"];
        assert_eq!((d["status"].as_str(), d["attempts"].as_i64()), (Some("queued"), Some(1)), "{d}");
        assert!(d["reply"].as_str().is_some_and(|r| !r.is_empty()), "the connection error is shown: {d}");
        assert!(d["next_attempt_at"].is_string(), "{d}");
    }
    // Not due again before the backoff has passed.
    assert_eq!(app.deliver_mail().await, 0);
    clock.advance(chrono::Duration::seconds(40));
    assert_eq!(app.deliver_mail().await, 3, "the second attempt, still refused");
    assert!(server.messages().is_empty());

    server.start_again().await;
    // The third attempt is due after about a minute (±20%).
    assert_eq!(app.deliver_mail().await, 0);
    clock.advance(chrono::Duration::seconds(80));
    assert_eq!(app.deliver_mail().await, 3);
    let got = server.wait_for_messages(3, Duration::from_secs(10)).await;
    let mut to: Vec<&str> = got.iter().map(|m| m.rcpt_tos[0].as_str()).collect();
    to.sort();
    assert_eq!(to, ["a@example.com", "b@example.com", "c@example.com"], "each once");
    clock.advance(chrono::Duration::hours(3));
    assert_eq!(app.deliver_mail().await, 0, "nothing is sent twice");
    assert_eq!(server.messages().len(), 3);
    for inv in invitations(&app, &org.owner_key).await {
        assert_eq!(inv["email_delivery"]["status"], "sent", "{inv}");
        assert_eq!(inv["email_delivery"]["attempts"], 3, "{inv}");
    }
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_message_and_the_invitation_says_so() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let clock = now_clock();
    let app = app_sending_to(&server, None, &clock).await;
    let org = app.org("Acme", 10).await;
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "reject-me@example.com", "role": "read"})).await;
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "tempfail-me@example.com", "role": "read"})).await;
    assert_eq!(app.deliver_mail().await, 2);
    let listed = invitations(&app, &org.owner_key).await;
    let by_email = |e: &str| listed.iter().find(|i| i["email"] == e).unwrap()["email_delivery"].clone();
    let rejected = by_email("reject-me@example.com");
    assert_eq!(rejected["status"], "failed", "{rejected}");
    assert!(rejected["reply"].as_str().unwrap().contains("550"), "{rejected}");
    let deferred = by_email("tempfail-me@example.com");
    assert_eq!(deferred["status"], "queued", "{deferred}");
    assert!(deferred["reply"].as_str().unwrap().contains("451"), "{deferred}");
    let audit = app.audit(&org.owner_key).await;
    let failed = audit.iter().find(|a| a["action"] == "mail.failed").expect("mail.failed is audited");
    assert_eq!(failed["after"]["to"], "reject-me@example.com", "{failed}");
    assert!(failed["after"]["reply"].as_str().unwrap().contains("550"), "{failed}");

    // A message still deferred when its retry window (48 hours) closes fails too.
    for _ in 0..12 {
        clock.advance(chrono::Duration::hours(4));
        app.deliver_mail().await;
    }
    let deferred = invitations(&app, &org.owner_key).await;
    let deferred = deferred.iter().find(|i| i["email"] == "tempfail-me@example.com").unwrap();
    assert_eq!(deferred["email_delivery"]["status"], "failed", "{deferred}");
    assert!(deferred["email_delivery"]["reply"].as_str().unwrap().contains("no more retries"), "{deferred}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn two_serve_processes_deliver_each_of_200_queued_messages_once() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let db = TestDb::new().await;
    let db_url = db.url.clone();
    // The messages are queued before any sender runs.
    let app = TestApp::spawn_on(db).await;
    let org = app.org("Acme", 250).await;
    let csv: String = std::iter::once("email,role\n".to_string())
        .chain((0..200).map(|i| format!("person{i}@example.com,read\n")))
        .collect();
    let (status, body) = app.post_csv(&org.owner_key, &csv).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = server.url();
    let env =
        [("ROSTER_LISTEN", "127.0.0.1:0"), ("ROSTER_SMTP_URL", url.as_str()), ("ROSTER_MAIL_POLL_INTERVAL_MS", "20")];
    let one = crate::cli::Server::start_with(&db_url, &env);
    let two = crate::cli::Server::start_with(&db_url, &env);
    let got = server.wait_for_messages(200, Duration::from_secs(120)).await;
    // Both senders keep polling; anything sent twice would arrive by the time every invitation says sent.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = invitations_all(&app, &org.owner_key).await;
        if all.iter().all(|i| i["email_delivery"]["status"] == "sent") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not every invitation says sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(one.terminate() && two.terminate());
    let got_after = server.messages();
    assert_eq!(got_after.len(), 200, "each message once (got {} then {})", got.len(), got_after.len());
    let mut to: Vec<String> = got_after.iter().map(|m| m.rcpt_tos[0].clone()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 200);
}

/// Every invitation of the key's organization, page by page.
async fn invitations_all(app: &TestApp, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/invitations?limit=200&cursor={c}"),
            None => "/api/v1/invitations?limit=200".to_string(),
        };
        let (status, body) = app.get(&path, key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        all.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}
