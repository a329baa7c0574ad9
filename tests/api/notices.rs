//! Notices to an organization's Owners and Admins: a member refused for
//! lack of seats (at most one a day), a SCIM token or API key about to
//! expire (once each). The domain-lapse notice is checked in `domains`.

use crate::helpers::*;
use reqwest::StatusCode;
use roster::clock::{Clock, ManualClock};
use roster::model::{CredentialKind, Name, Role};
use roster::service::{Actor, NewCredential};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn app(clock: &ManualClock) -> TestApp {
    TestApp::spawn_with(TestDb::new().await, |_| {}, Arc::new(clock.clone())).await
}

async fn scim_create(app: &TestApp, token: &str, user_name: &str) -> StatusCode {
    app.client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .json(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn admins_hear_of_a_seat_refusal_at_most_once_a_day() {
    let clock = ManualClock::new(roster::clock::SystemClock.now());
    let app = app(&clock).await;
    let org = app.org("Acme", 3).await;
    // A second admin, who hears too; a Write member, who does not.
    for (email, role) in [("admin@acme.example.com", "admin"), ("writer@acme.example.com", "write")] {
        let (status, body) = app.post("/api/v1/members", &org.owner_key, json!({"email": email, "role": role})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let token = scim_token(&app, &org).await;
    assert_eq!(scim_create(&app, &token, "one@acme.example.com").await, StatusCode::FORBIDDEN);
    assert_eq!(scim_create(&app, &token, "two@acme.example.com").await, StatusCode::FORBIDDEN);
    assert_eq!(app.deliver_mail().await, 2, "one notice, to each of the two admins");
    let files = app.mail_files();
    let mut to: Vec<&str> = files.iter().map(|f| f.lines().find_map(|l| l.strip_prefix("To: ")).unwrap()).collect();
    to.sort();
    assert_eq!(to, ["admin@acme.example.com", "owner@acme.example.com"]);
    assert!(files[0].contains("one@acme.example.com could not join Acme through SCIM provisioning"), "{}", files[0]);
    assert!(files[0].contains("3 of 3 seats are in use"), "{}", files[0]);

    clock.advance(chrono::Duration::hours(25));
    assert_eq!(scim_create(&app, &token, "three@acme.example.com").await, StatusCode::FORBIDDEN);
    assert_eq!(app.deliver_mail().await, 2, "a day later, a new notice");
    assert_eq!(app.mail_files().len(), 4);
}

#[tokio::test]
async fn an_expiring_credential_is_announced_once() {
    let clock = ManualClock::new(roster::clock::SystemClock.now());
    let app = app(&clock).await;
    let org = app.org("Acme", 5).await;
    let actor = Actor::cli(org.id);
    let new = |name: &str, kind, role, days| NewCredential {
        kind,
        name: Name::parse(name).unwrap(),
        role,
        expires_in_days: Some(days),
    };
    app.roster.create_credential(&actor, new("okta", CredentialKind::ScimToken, None, 10)).await.unwrap();
    app.roster.create_credential(&actor, new("ci", CredentialKind::ApiKey, Some(Role::Read), 30)).await.unwrap();
    let lease = Duration::from_secs(60);
    let tick = || roster::jobs::credential_notices_tick(&app.roster, "replica-a", lease);
    assert_eq!(tick().await.unwrap(), Some(0), "nothing expires within a week yet");

    clock.advance(chrono::Duration::days(4));
    assert_eq!(tick().await.unwrap(), Some(1));
    assert_eq!(tick().await.unwrap(), Some(0), "announced once");
    // Another replica waits for the lease.
    assert_eq!(roster::jobs::credential_notices_tick(&app.roster, "replica-b", lease).await.unwrap(), None);
    assert_eq!(app.deliver_mail().await, 1);
    let notice = &app.mail_files()[0];
    assert!(notice.contains("To: owner@acme.example.com"), "{notice}");
    assert!(notice.contains("SCIM token \u{201c}okta\u{201d} of Acme expires on"), "{notice}");
    assert!(notice.contains("provisioning requests are refused"), "{notice}");

    clock.advance(chrono::Duration::days(20));
    assert_eq!(tick().await.unwrap(), Some(1), "the API key, in its last week");
    assert_eq!(app.deliver_mail().await, 1);
    assert!(app.mail_files()[1].contains("API key \u{201c}ci\u{201d}"), "{}", app.mail_files()[1]);
}
