//! The portal in a real browser (Debian's Chromium over WebDriver, see
//! `browser.rs`) against Roster on a random port: signing in by emailed
//! link, inviting and uploading, a seat-limit refusal, verifying a domain
//! against the test DNS server, changing a role, lowering seats through
//! their plan, what a Read member may reach, and a form without its CSRF
//! token. Each test saves a screenshot of its page.

use crate::browser::Browser;
use crate::dns_server::TestDns;
use crate::helpers::*;
use roster::clock::SystemClock;
use roster::model::Email;
use serde_json::json;
use std::sync::Arc;

/// Signs the browser in as `email` with an operator's one-time link.
async fn sign_in(app: &TestApp, browser: &Browser, org: uuid::Uuid, email: &str) {
    let link = app.roster.portal_link(org, &Email::parse(email).unwrap(), "cli:test").await.unwrap();
    browser.goto(&link).await;
    browser.click("#sign-in").await;
    browser.wait_for_text("#page-title", "Home").await;
}

fn owner(name: &str) -> String {
    format!("owner@{}.example.com", name.to_lowercase())
}

async fn invitations(app: &TestApp, key: &str) -> Vec<serde_json::Value> {
    app.get("/api/v1/invitations?status=pending", key).await.1["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_member_signs_in_by_emailed_link_and_lands_on_home() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 25).await;
    let browser = Browser::start().await;

    browser.goto(&app.url("/portal")).await;
    assert_eq!(browser.current_url().await.path(), "/signin", "signed out: to the sign-in page");
    browser.fill("#email", &owner("Acme")).await;
    browser.click("#continue").await;
    browser.wait_for_text("h1", "Check your email").await;

    // The link arrives by email; opening it in this browser signs in.
    let mut link = None;
    for _ in 0..100 {
        app.deliver_mail().await;
        link = app
            .mail_files()
            .iter()
            .find_map(|eml| eml.lines().find(|l| l.contains("/signin/link?token=")).map(|l| l.trim().to_string()));
        if link.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let link = link.expect("a sign-in email");
    let link = &link[link.find("http").unwrap()..];
    browser.goto(link).await;
    browser.click("#sign-in").await;
    browser.wait_for_text("#page-title", "Home").await;
    assert_eq!(browser.current_url().await.path(), "/portal");
    assert_eq!(browser.text("#setup-email").await, owner("Acme"));
    assert_eq!(browser.text("#seats-purchased").await, "25");
    assert_eq!(browser.text("#signed-in-as").await, owner("Acme"));
    let (_, audit) = app.get("/api/v1/audit-log?action=sign_in.email_link", &org.owner_key).await;
    assert_eq!(audit["items"][0]["after"]["client_id"], roster::service::PORTAL_CLIENT_ID.to_string(), "{audit}");
    browser.screenshot("portal-home").await;

    // Signing out ends it.
    browser.click("#signout").await;
    browser.wait_for_text("#page-title", "Signed out").await;
    browser.goto(&app.url("/portal/members")).await;
    assert_eq!(browser.current_url().await.path(), "/signin");
    browser.close().await;
}

#[tokio::test]
async fn inviting_three_people_and_an_upload_with_a_bad_line() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 25).await;
    let browser = Browser::start().await;
    sign_in(&app, &browser, org.id, &owner("Acme")).await;
    browser.click("a[href='/portal/members']").await;
    browser.wait_for_text("#page-title", "Members").await;

    for (i, (email, role)) in
        [("ada@example.com", "admin"), ("bob@example.com", "write"), ("cy@example.com", "read")].into_iter().enumerate()
    {
        browser.fill(&format!("#email{i}"), email).await;
        browser.select_option(&format!("#role{i}"), role).await;
    }
    browser.click("#send-invitations").await;
    let notice = browser.wait_for_text("#notice", "Invited").await;
    assert!(notice.contains("ada@example.com, bob@example.com, cy@example.com"), "{notice}");
    assert_eq!(browser.find_all("#invitations tbody tr[data-invitation]").await.len(), 3);
    assert_eq!(invitations(&app, &org.owner_key).await.len(), 3);

    // An upload with a bad line: every problem shown, nothing sent.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "email,role\ndee@example.com,read\nnot-an-address,read\neve@example.com,superuser\n").unwrap();
    browser.upload_file("#csv-file", &csv).await;
    browser.click("#upload").await;
    browser.wait_for_text("#page-title", "Upload invitations").await;
    let bad = browser.text("#bad-lines").await;
    assert!(bad.contains("not-an-address") && bad.contains("superuser"), "{bad}");
    let problem = browser.text("#problem").await;
    assert!(problem.starts_with("2 lines cannot be accepted") && problem.contains("Nothing was sent"), "{problem}");
    assert!(browser.find_all("#send-upload").await.is_empty(), "no way to send a bad upload");
    browser.screenshot("portal-upload-refused").await;
    assert_eq!(invitations(&app, &org.owner_key).await.len(), 3, "nothing was invited");

    // A good upload is previewed, then sent.
    std::fs::write(&csv, "email,role\ndee@example.com,read\nfay@example.com,write\n").unwrap();
    browser.goto(&app.url("/portal/members")).await;
    browser.upload_file("#csv-file", &csv).await;
    browser.click("#upload").await;
    browser.click("#send-upload").await;
    browser.wait_for_text("#notice", "Sent 2 invitations").await;
    assert_eq!(invitations(&app, &org.owner_key).await.len(), 5);
    browser.screenshot("portal-members").await;
    browser.close().await;
}

#[tokio::test]
async fn a_seat_limit_refusal_is_shown_as_a_message() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 2).await;
    let browser = Browser::start().await;
    sign_in(&app, &browser, org.id, &owner("Acme")).await;
    browser.goto(&app.url("/portal/members")).await;
    browser.fill("#email0", "ada@example.com").await;
    browser.fill("#email1", "bob@example.com").await;
    browser.click("#send-invitations").await;
    let problem = browser.wait_for_text("#problem", "Not enough seats").await;
    assert!(problem.contains("2 purchased and 1 in use") && problem.contains("needs 2 more"), "{problem}");
    assert_eq!(browser.value("#email1").await, "bob@example.com", "the form keeps what was typed");
    browser.screenshot("portal-seat-limit").await;
    assert!(invitations(&app, &org.owner_key).await.is_empty());
    browser.close().await;
}

#[tokio::test]
async fn a_domain_is_verified_once_its_record_is_published() {
    let dns = TestDns::start().await;
    let app = TestApp::spawn_with_dns(dns.addr, Arc::new(SystemClock)).await;
    let org = app.org("Acme", 10).await;
    let browser = Browser::start().await;
    sign_in(&app, &browser, org.id, &owner("Acme")).await;
    browser.click("#nav-settings").await;
    browser.click("a[href='/portal/settings/domains']").await;
    browser.fill("#domain-name", "acme-corp.example").await;
    browser.click("#add-domain-button").await;
    browser.wait_for_text("#notice", "Added acme-corp.example").await;

    // Not published yet: what DNS showed.
    browser.click("section[data-domain='acme-corp.example'] button.verify").await;
    let problem = browser.wait_for_text("#problem", "not verified yet").await;
    assert!(!problem.is_empty());
    let name = browser.text("section[data-domain='acme-corp.example'] .record-name").await;
    let value = browser.text("section[data-domain='acme-corp.example'] .record-value").await;
    dns.set_txt(&name, &[&[value.as_str()]]);
    browser.click("section[data-domain='acme-corp.example'] button.verify").await;
    browser.wait_for_text("#notice", "acme-corp.example is verified").await;
    assert_eq!(browser.text("section[data-domain='acme-corp.example'] .status").await, "verified");
    browser.screenshot("portal-settings-domains").await;
    let (_, domains) = app.get("/api/v1/domains", &org.owner_key).await;
    assert_eq!(domains[0]["status"], "verified");

    browser.click("a[href='/portal/settings']").await;
    browser.wait_for_text("#page-title", "Settings").await;
    browser.screenshot("portal-settings").await;
    browser.close().await;
}

#[tokio::test]
async fn an_admin_changes_a_role_and_lowers_seats_through_their_plan() {
    // A self-serve deployment: the Admin sets the seats (by request, the operator would).
    let app = TestApp::spawn_self_serve().await;
    let org = app.org("Acme", 5).await;
    let mut ids = Vec::new();
    for (email, role) in [("ada@example.com", "read"), ("bob@example.com", "read"), ("cy@example.com", "write")] {
        let (_, m) = app.post("/api/v1/members", &org.owner_key, json!({"email": email, "role": role})).await;
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let browser = Browser::start().await;
    sign_in(&app, &browser, org.id, &owner("Acme")).await;

    // A role, from the member's page.
    browser.goto(&app.url("/portal/members")).await;
    browser.click(&format!("tr[data-member='{}'] a", ids[0])).await;
    browser.select_option("#role", "admin").await;
    browser.click("#change-role").await;
    browser.wait_for_text("#notice", "is now Admin").await;
    assert_eq!(browser.text("#member-role").await, "Admin");
    let (_, m) = app.get(&format!("/api/v1/members/{}", ids[0]), &org.owner_key).await;
    assert_eq!(m["role"], "admin");

    // The last Owner cannot go: the rule in words.
    browser.goto(&app.url(&format!("/portal/members/{}", org.owner_member))).await;
    browser.click("#suspend").await;
    browser.wait_for_text("#problem", "at least one active Owner").await;

    // Fewer seats than in use: the plan first, then the change on confirmation.
    browser.click("#nav-billing").await;
    browser.fill("#purchased", "2").await;
    browser.click("#change-seats").await;
    browser.wait_for_text("#page-title", "Review the seat change").await;
    let plan = browser.text("#planned-changes").await;
    assert!(
        plan.contains("Suspend bob@example.com (Read)") && plan.contains("Suspend cy@example.com (Write)"),
        "{plan}"
    );
    assert!(!plan.contains("ada@example.com"), "the Admin keeps the seat: {plan}");
    browser.screenshot("portal-seat-plan").await;
    assert_eq!(app.get("/api/v1/seats", &org.owner_key).await.1["purchased"], 5, "nothing yet");
    browser.click("#apply-seats").await;
    browser.wait_for_text("#notice", "now has 2 seats").await;
    assert_eq!(browser.text("#billing-purchased").await, "2");
    let (_, seats) = app.get("/api/v1/seats", &org.owner_key).await;
    assert_eq!((seats["purchased"].as_i64(), seats["used"].as_i64()), (Some(2), Some(2)));
    browser.screenshot("portal-billing").await;
    browser.close().await;
}

#[tokio::test]
async fn an_owner_requests_seats_sees_the_answer_and_withdraws_the_next_request() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 5).await;
    let browser = Browser::start().await;
    sign_in(&app, &browser, org.id, &owner("Acme")).await;
    browser.click("#nav-billing").await;
    browser.fill("#purchased", "40").await;
    browser.click("#change-seats").await;
    browser.wait_for_text("#notice", "Requested 40 seats").await;
    assert!(browser.text("#billing-requests").await.contains("Waiting for approval"));
    assert_eq!(browser.text("#billing-purchased").await, "5", "nothing granted yet");

    // The product's billing approves it through the operator API.
    let op = app.operator_key().await;
    let (_, requests) = app.get("/api/v1/operator/billing/requests?status=pending", &op).await;
    let (status, b) =
        app.post(&format!("/api/v1/operator/billing/requests/{}/approve", id_of(&requests[0])), &op, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{b}");
    browser.click("#nav-billing").await;
    browser.wait_for_text("#billing-purchased", "40").await;
    assert!(browser.text("#billing-requests").await.contains("Approved"));

    browser.fill("#purchased", "45").await;
    browser.click("#change-seats").await;
    browser.wait_for_text("#notice", "Requested 45 seats").await;
    browser.screenshot("portal-billing-request").await;
    browser.click("#withdraw-request").await;
    browser.wait_for_text("#notice", "Withdrew the request.").await;
    assert!(!browser.text("#billing-requests").await.contains("Waiting for approval"));
    browser.close().await;
}

#[tokio::test]
async fn a_read_member_cannot_reach_billing_and_a_form_without_its_token_is_refused() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    app.post("/api/v1/members", &org.owner_key, json!({"email": "reader@example.com", "role": "read"})).await;
    let browser = Browser::start().await;
    sign_in(&app, &browser, org.id, "reader@example.com").await;
    assert!(browser.find_all("#nav-billing").await.is_empty(), "no Billing in the sidebar");
    browser.goto(&app.url("/portal/billing")).await;
    assert_eq!(browser.text("#page-title").await, "Not allowed");
    browser.screenshot("portal-read-member-billing").await;
    browser.close().await;

    // An Owner's invite form, its CSRF token taken out before it is sent.
    let browser = Browser::start().await;
    sign_in(&app, &browser, org.id, &owner("Acme")).await;
    browser.goto(&app.url("/portal/members")).await;
    browser.fill("#email0", "mallory@example.com").await;
    browser
        .client
        .execute("document.querySelector('#invite-form input[name=csrf]').remove(); return null;", vec![])
        .await
        .unwrap();
    browser.click("#send-invitations").await;
    browser.wait_for_text("#page-title", "This form cannot be accepted").await;
    browser.screenshot("portal-csrf-refused").await;
    assert!(invitations(&app, &org.owner_key).await.is_empty(), "nothing was invited");
    browser.close().await;
}

/// A product's callback on loopback that answers every request with a page.
async fn product_callback() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = "<!doctype html><title>Product</title><h1>Product</h1>";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/callback")
}

#[tokio::test]
async fn an_emailed_sign_in_link_returns_the_browser_to_the_product() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 10).await;
    let callback = product_callback().await;
    let (status, _) = app
        .post("/api/v1/sso/clients", &org.owner_key, json!({"name": "Product", "redirect_uris": [callback.clone()]}))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let browser = Browser::start().await;
    let start = format!(
        "/signin?redirect_uri={}&state=s1",
        url::form_urlencoded::byte_serialize(callback.as_bytes()).collect::<String>()
    );
    browser.goto(&app.url(&start)).await;
    browser.fill("#email", &owner("Acme")).await;
    browser.click("#continue").await;
    browser.wait_for_text("h1", "Check your email").await;
    let mut link = None;
    for _ in 0..100 {
        app.deliver_mail().await;
        link = app.mail_files().iter().find_map(|eml| {
            eml.lines()
                .find(|l| l.contains("/signin/link?token="))
                .map(|l| l[l.find("http").unwrap()..].trim().to_string())
        });
        if link.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    browser.goto(&link.expect("a sign-in email")).await;
    browser.click("#sign-in").await;
    // The form's answer leaves for the product's origin, with a code and the state.
    browser.wait_for_text("h1", "Product").await;
    let at = browser.current_url().await;
    assert_eq!(at.as_str().split('?').next().unwrap(), callback);
    assert!(at.query_pairs().any(|(k, _)| k == "code"), "{at}");
    assert!(at.query_pairs().any(|(k, v)| k == "state" && v == "s1"), "{at}");
    browser.close().await;
}
