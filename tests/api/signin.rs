//! Sign-in by emailed link, driven as a browser would: the product sends
//! the browser to `/signin`, the person gives an email, Roster emails a link
//! that works once, for 15 minutes, in that browser only, and ends as an
//! SSO login does: a session, and a code the product redeems for the profile.

use crate::helpers::*;
use reqwest::StatusCode;
use roster::clock::{Clock, ManualClock};
use roster::model::Name;
use roster::service::{Actor, NewSsoClient};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// A browser: its own cookies, redirects not followed (the test reads them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

struct World {
    app: TestApp,
    clock: ManualClock,
    org: TestOrg,
    client_id: String,
    client_secret: String,
}

async fn world(adjust: impl FnOnce(&mut roster::config::Config)) -> World {
    let clock = ManualClock::new(roster::clock::SystemClock.now());
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.sso_dev_mode = true;
            adjust(c);
        },
        Arc::new(clock.clone()),
    )
    .await;
    let org = app.org("Acme", 10).await;
    let created = app
        .roster
        .create_sso_client(
            &Actor::cli(org.id),
            NewSsoClient { name: Name::parse("app").unwrap(), redirect_uris: vec![REDIRECT.into()] },
        )
        .await
        .unwrap();
    World {
        app,
        clock,
        org,
        client_id: created.client.id.to_string(),
        client_secret: created.secret.expose().to_string(),
    }
}

impl World {
    /// Asks for a sign-in link as `email` from `browser`; returns status and page.
    async fn ask(&self, browser: &reqwest::Client, email: &str) -> (StatusCode, String) {
        let form = browser
            .get(self.app.url("/signin"))
            .query(&[("redirect_uri", REDIRECT), ("state", "st-1")])
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), StatusCode::OK);
        let page = form.text().await.unwrap();
        assert!(page.contains(r#"name="email""#), "{page}");
        let res = browser
            .post(self.app.url("/signin"))
            .form(&[("email", email), ("redirect_uri", REDIRECT), ("state", "st-1")])
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// Delivers mail until `n` messages are in the folder (the link is queued after the answer).
    async fn messages(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            self.app.deliver_mail().await;
            let files = self.app.mail_files();
            if files.len() >= n {
                return files;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} messages, have {}", self.app.mail_files().len());
    }

    /// Posts the link's form from `browser`.
    async fn use_link(&self, browser: &reqwest::Client, link: &str) -> reqwest::Response {
        let token = link.split("token=").nth(1).unwrap();
        browser.post(self.app.url("/signin/link")).form(&[("token", token)]).send().await.unwrap()
    }

    async fn redeem(&self, code: &str) -> (StatusCode, Value) {
        let res = self
            .app
            .client
            .post(self.app.url("/sso/token"))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("grant_type", "authorization_code"), ("code", code)])
            .send()
            .await
            .unwrap();
        read(res).await
    }
}

fn link_in(message: &str) -> String {
    let start = message.find("http://").expect("a link");
    let link: String = message[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    assert!(link.contains("/signin/link?token=roster_link_"), "{link}");
    link
}

fn reason(res: &reqwest::Response) -> Option<String> {
    res.headers().get("x-roster-error").map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn a_link_signs_a_member_in_once_in_the_browser_that_asked() {
    let w = world(|_| {}).await;
    let me = browser();
    let owner = "owner@acme.example.com";
    let (status, page) = w.ask(&me, owner).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Check your email"), "{page}");
    // An unknown address gets the same page, and no message.
    let (status_unknown, page_unknown) = w.ask(&browser(), "nobody@elsewhere.example").await;
    assert_eq!((status_unknown, &page_unknown), (status, &page));

    let files = w.messages(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.app.deliver_mail().await;
    assert_eq!(w.app.mail_files().len(), 1, "nothing for the unknown address");
    assert!(files[0].contains(&format!("To: {owner}")), "{}", files[0]);
    assert!(files[0].contains("Subject: Sign in to Acme"), "{}", files[0]);
    let link = link_in(&files[0]);

    // Another browser can neither see nor use it.
    let other = browser();
    let res = other.get(&link).send().await.unwrap();
    assert_eq!((res.status(), reason(&res).as_deref()), (StatusCode::FORBIDDEN, Some("browser_mismatch")));
    let res = w.use_link(&other, &link).await;
    assert_eq!((res.status(), reason(&res).as_deref()), (StatusCode::FORBIDDEN, Some("browser_mismatch")));

    // The browser that asked: a page (nothing used yet), then the post signs in.
    let res = me.get(&link).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Sign in to Acme"));
    let res = w.use_link(&me, &link).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{REDIRECT}?code=")), "{location}");
    assert!(location.ends_with("&state=st-1"), "{location}");
    let set_session = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("roster_session=roster_sess_"));
    assert!(set_session, "Roster's session is set");
    let code = url::Url::parse(&location).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let (status, profile) = w.redeem(&code).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["method"], "email_link", "{profile}");
    assert_eq!(profile["email"], owner, "{profile}");
    assert_eq!(profile["role"], "owner", "{profile}");
    assert_eq!(profile["organization_id"], json!(w.org.id), "{profile}");
    assert!(profile.get("connection").is_none(), "{profile}");
    let session: Value = me.get(w.app.url("/sso/session")).send().await.unwrap().json().await.unwrap();
    assert_eq!(session["email"], owner, "{session}");

    // Once only.
    let res = w.use_link(&me, &link).await;
    assert_eq!((res.status(), reason(&res).as_deref()), (StatusCode::GONE, Some("link_used")));
    let audit = w.app.audit(&w.org.owner_key).await;
    assert!(audit.iter().any(|a| a["action"] == "sign_in.email_link"), "audited");
}

#[tokio::test]
async fn a_link_dies_after_fifteen_minutes_and_an_invitee_joins_by_one() {
    let w = world(|_| {}).await;
    let (status, _) =
        w.app.post("/api/v1/invitations", &w.org.owner_key, json!({"email": "new@example.com", "role": "write"})).await;
    assert_eq!(status, StatusCode::CREATED);
    w.app.deliver_mail().await;
    let me = browser();
    w.ask(&me, "new@example.com").await;
    let files = w.messages(2).await;
    let link = link_in(files.iter().find(|f| f.contains("Subject: Sign in to Acme")).unwrap());
    w.clock.advance(chrono::Duration::minutes(16));
    let res = w.use_link(&me, &link).await;
    assert_eq!((res.status(), reason(&res).as_deref()), (StatusCode::GONE, Some("link_expired")));

    // A fresh link: the pending invitation admits the invitee, with the invited role.
    w.ask(&me, "new@example.com").await;
    let files = w.messages(3).await;
    let link = link_in(&files[2]);
    let res = w.use_link(&me, &link).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let code = url::Url::parse(&location).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let (_, profile) = w.redeem(&code).await;
    assert_eq!((profile["role"].as_str(), profile["member_status"].as_str()), (Some("write"), Some("active")));
    let (_, invitations) = w.app.get("/api/v1/invitations", &w.org.owner_key).await;
    assert_eq!(invitations["items"][0]["status"], "accepted", "{invitations}");
}

#[tokio::test]
async fn an_organization_that_enforces_sso_never_gets_a_link() {
    let tenant = tenant_connection_nobody_answers();
    let w = world(|c| c.tenant_connection = Some(tenant)).await;
    let (status, body) = w
        .app
        .call(
            reqwest::Method::PATCH,
            "/api/v1/organization/sso",
            Some(&w.org.owner_key),
            Some(json!({"tenant_id": "T1acme", "enforce": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, page) = w.ask(&browser(), "owner@acme.example.com").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Check your email"), "the same answer: {page}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.app.deliver_mail().await;
    assert!(w.app.mail_files().is_empty(), "no link for an organization that enforces SSO");
}

#[tokio::test]
async fn bad_requests_get_pages_that_say_why() {
    let w = world(|_| {}).await;
    let b = browser();
    let res = b.get(w.app.url("/signin")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let res = b
        .post(w.app.url("/signin"))
        .form(&[("email", "not an email"), ("redirect_uri", REDIRECT)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains(r#"id="problem""#));
    let res = b.get(w.app.url("/signin/link?token=roster_link_nope")).send().await.unwrap();
    assert_eq!((res.status(), reason(&res).as_deref()), (StatusCode::NOT_FOUND, Some("link_unknown")));
    let res = b
        .post(w.app.url("/signin"))
        .header("origin", "https://attacker.example")
        .form(&[("email", "owner@acme.example.com"), ("redirect_uri", REDIRECT)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}
