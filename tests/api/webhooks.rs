//! Webhooks over real HTTP: every event of the feed reaches a real receiver
//! in feed order, signed as Standard Webhooks says (checked with the
//! independent `standardwebhooks` verifier); an outage or a failing answer
//! delays events without losing, reordering or (among answered deliveries)
//! repeating them; secrets rotate with an overlap; private addresses and
//! bad input are refused; endpoints hear only the events they chose;
//! deliveries replay on request; and two `roster serve` processes on one
//! PostgreSQL deliver 1,000 events exactly once, in order.

use crate::cli::{roster, run_json, Server};
use crate::helpers::*;
use crate::scim::user;
use crate::webhook_receiver::{Received, WebhookReceiver};
use base64::Engine;
use reqwest::{Method, StatusCode};
use roster::clock::{Clock, SystemClock};
use roster::model::Role;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How long a test waits for deliveries before it gives up: only bounds how
/// long a broken build hangs.
const DEADLINE: Duration = Duration::from_secs(60);

/// An app whose webhooks may go to loopback over plain HTTP, retrying after 50 ms.
async fn webhook_app() -> TestApp {
    TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.sso_dev_mode = true;
            c.webhooks.allow_private_addresses = true;
            c.webhooks.first_retry = Duration::from_millis(50);
        },
        Arc::new(SystemClock),
    )
    .await
}

/// Creates an endpoint; returns it and its secret.
async fn create_endpoint(app: &TestApp, org: &TestOrg, url: &str, events: Option<Value>) -> (Value, String) {
    let mut body = json!({"url": url, "description": "test receiver"});
    if let Some(events) = events {
        body["events"] = events;
    }
    let (status, created) = app.post("/api/v1/webhooks", &org.owner_key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let endpoint = created["endpoint"].clone();
    assert_eq!(endpoint["url"], url, "{created}");
    assert_eq!(endpoint["organization_id"], org.id.to_string(), "{created}");
    assert_eq!(endpoint["enabled"], true, "{created}");
    assert!(endpoint["disabled_reason"].is_null(), "{created}");
    let secret = created["secret"].as_str().unwrap_or_else(|| panic!("no secret in {created}")).to_string();
    assert_secret(&secret);
    (endpoint, secret)
}

/// `whsec_` and the base64 of 32 bytes.
fn assert_secret(secret: &str) {
    let raw = secret.strip_prefix("whsec_").unwrap_or_else(|| panic!("{secret} lacks whsec_"));
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).unwrap_or_else(|e| panic!("{secret}: {e}"));
    assert_eq!(bytes.len(), 32, "{secret}");
}

/// A secret no endpoint has.
fn stranger_secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
}

/// The organization's whole feed, oldest first.
async fn feed(app: &TestApp, key: &str) -> Vec<Value> {
    feed_at(&app.client, &format!("http://{}", app.addr), key).await
}

async fn feed_at(http: &reqwest::Client, base: &str, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/api/v1/events?after={after}&limit=1000");
        let (status, body) = api(http, base, Method::GET, &path, key, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = body["events"].as_array().unwrap_or_else(|| panic!("no events in {body}")).clone();
        if events.is_empty() {
            return all;
        }
        after = body["next_after"].as_i64().unwrap();
        all.extend(events);
    }
}

/// The position of the feed's last event (0 when empty).
async fn last_seq(app: &TestApp, key: &str) -> i64 {
    feed(app, key).await.last().map_or(0, |e| e["seq"].as_i64().unwrap())
}

/// Every logged delivery attempt of an endpoint, oldest first.
async fn deliveries(app: &TestApp, key: &str, endpoint: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/webhooks/{endpoint}/deliveries?limit=50&cursor={c}"),
            None => format!("/api/v1/webhooks/{endpoint}/deliveries?limit=50"),
        };
        let (status, body) = app.get(&path, key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        all.extend(body["items"].as_array().unwrap_or_else(|| panic!("no items in {body}")).iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    // Listed newest first.
    all.reverse();
    all
}

/// Runs dispatcher rounds until `done` holds (bounded by [`DEADLINE`]).
async fn deliver_until(app: &TestApp, what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        app.deliver_webhooks().await;
        if done() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A few more rounds after the expected deliveries, for anything extra to show.
async fn settle(app: &TestApp) {
    for _ in 0..3 {
        app.deliver_webhooks().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seqs(received: &[Received]) -> Vec<i64> {
    received.iter().map(Received::event_seq).collect()
}

/// Checks one request against the feed's event: headers, signature and body.
fn assert_delivery_of(r: &Received, event: &Value, org: &TestOrg, secret: &str) {
    assert_eq!(r.method, Method::POST, "{event}");
    assert_eq!(r.path, "/hook");
    assert!(r.header("content-type").starts_with("application/json"), "{:?}", r.headers);
    assert_eq!(r.webhook_id(), event["id"].as_str().unwrap(), "webhook-id is the event id: {event}");
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap_or_else(|_| panic!("{:?}", r.headers));
    assert!(ts > 1_700_000_000, "unix seconds: {ts}");
    if let Err(e) = r.verify(secret) {
        panic!("signature of {event} does not verify: {e}; headers {:?}", r.headers);
    }
    assert!(r.verify(&stranger_secret()).is_err(), "another secret verifies too: {:?}", r.headers);
    let body = r.json();
    assert_eq!(body["type"], event["type"], "{body} for {event}");
    assert_eq!(body["data"]["event_seq"], event["seq"], "{body} for {event}");
    assert_eq!(body["data"]["subject"], event["subject"], "{body} for {event}");
    assert_eq!(body["data"]["organization_id"], org.id.to_string(), "{body}");
    assert!(body["data"].as_object().unwrap().contains_key("object"), "{body}");
    let object = &body["data"]["object"];
    if let Some(id) = object.get("id") {
        assert_eq!(id, &event["subject"], "the object is the subject: {body}");
    }
    let sent: chrono::DateTime<chrono::Utc> =
        body["timestamp"].as_str().unwrap_or("").parse().unwrap_or_else(|e| panic!("timestamp of {body}: {e}"));
    let at: chrono::DateTime<chrono::Utc> = event["at"].as_str().unwrap().parse().unwrap();
    assert!((sent - at).num_milliseconds().abs() < 1000, "the body's timestamp is the event's time: {body} {event}");
}

/// Adds a member through the admin API; returns its id.
async fn add_member(app: &TestApp, org: &TestOrg, email: &str) -> String {
    let (status, m) = app.post("/api/v1/members", &org.owner_key, json!({"email": email, "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    id_of(&m)
}

/// Makes a change of every kind the admin API, SCIM and the accept page can make.
async fn every_kind_of_change(app: &TestApp, org: &TestOrg) {
    let key = &org.owner_key;
    let ok = |status: StatusCode, body: &Value, expected: StatusCode| assert_eq!(status, expected, "{body}");
    let (s, m) = app.post("/api/v1/members", key, json!({"email": "m@hooks.example.com", "role": "write"})).await;
    ok(s, &m, StatusCode::CREATED);
    let member = id_of(&m);
    let (s, b) =
        app.call(Method::PATCH, &format!("/api/v1/members/{member}"), Some(key), Some(json!({"role": "admin"}))).await;
    ok(s, &b, StatusCode::OK);
    let (s, b) = app.post(&format!("/api/v1/members/{member}/suspend"), key, json!({})).await;
    ok(s, &b, StatusCode::OK);
    let (s, b) = app.post(&format!("/api/v1/members/{member}/reactivate"), key, json!({})).await;
    ok(s, &b, StatusCode::OK);
    let (s, b) = app.call(Method::DELETE, &format!("/api/v1/members/{member}"), Some(key), None).await;
    ok(s, &b, StatusCode::OK);
    let (s, inv) = app.post("/api/v1/invitations", key, json!({"email": "i@hooks.example.com", "role": "read"})).await;
    ok(s, &inv, StatusCode::CREATED);
    let invitation = id_of(&inv);
    let (s, b) = app.post(&format!("/api/v1/invitations/{invitation}/resend"), key, json!({})).await;
    ok(s, &b, StatusCode::OK);
    let (s, b) = app.call(Method::DELETE, &format!("/api/v1/invitations/{invitation}"), Some(key), None).await;
    ok(s, &b, StatusCode::OK);
    let (s, b) = app.set_seats(org, json!({"purchased": 25})).await;
    ok(s, &b, StatusCode::OK);
    let (s, d) = app.post("/api/v1/domains", key, json!({"name": "hooks.example.com"})).await;
    ok(s, &d, StatusCode::CREATED);
    let (s, b) = app.call(Method::DELETE, &format!("/api/v1/domains/{}", id_of(&d)), Some(key), None).await;
    ok(s, &b, StatusCode::NO_CONTENT);
    // An invitation accepted on its page: the invitation is accepted and the member added.
    let (s, inv) = app.post("/api/v1/invitations", key, json!({"email": "a@hooks.example.com", "role": "read"})).await;
    ok(s, &inv, StatusCode::CREATED);
    let token = inv["token"].as_str().unwrap();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = browser
        .post(app.url("/invitations/accept"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "accepting the invitation");
    // A member provisioned through SCIM.
    let token = scim_token(app, org).await;
    let res = app
        .client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(user("s@hooks.example.com").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn every_event_arrives_signed_once_and_in_feed_order() {
    let app = webhook_app().await;
    let org = app.org("Hooks", 20).await;
    let receiver = WebhookReceiver::start_new().await;
    let key = &org.owner_key;
    let before = last_seq(&app, key).await;
    let (endpoint, secret) = create_endpoint(&app, &org, &receiver.url(), None).await;
    let endpoint_id = id_of(&endpoint);
    every_kind_of_change(&app, &org).await;

    // Only events created after the endpoint are delivered.
    let events: Vec<Value> =
        feed(&app, key).await.into_iter().filter(|e| e["seq"].as_i64().unwrap() > before).collect();
    let types: HashSet<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in [
        "member.added",
        "member.role_changed",
        "member.suspended",
        "member.reactivated",
        "member.removed",
        "invitation.created",
        "invitation.revoked",
        "invitation.resent",
        "invitation.accepted",
        "seats.updated",
        "domain.added",
        "domain.removed",
    ] {
        assert!(types.contains(expected), "{expected} is not in the feed: {types:?}");
    }
    let n = events.len();
    deliver_until(&app, "every event", || receiver.count() >= n).await;
    settle(&app).await;

    let got = receiver.received();
    assert_eq!(got.len(), n, "each event once: {:?}", got.iter().map(Received::event_type).collect::<Vec<_>>());
    let last = before + n as i64;
    assert_eq!(seqs(&got), (before + 1..=last).collect::<Vec<_>>(), "feed order, without gaps");
    for (r, event) in got.iter().zip(&events) {
        assert_eq!(r.answered, StatusCode::OK);
        assert_delivery_of(r, event, &org, &secret);
    }
    // A role change carries the member as it is after the change.
    let changed = got.iter().find(|r| r.event_type() == "member.role_changed").unwrap();
    assert_eq!(changed.json()["data"]["object"]["role"], "admin", "{}", changed.json());

    // The log has one delivered first attempt per event.
    let log = deliveries(&app, key, &endpoint_id).await;
    assert_eq!(log.len(), n, "{log:?}");
    for (entry, event) in log.iter().zip(&events) {
        assert_eq!(entry["event_id"], event["id"], "{entry}");
        assert_eq!(entry["event_seq"], event["seq"], "{entry}");
        assert_eq!(entry["event_type"], event["type"], "{entry}");
        assert_eq!(entry["endpoint_id"], endpoint_id.as_str(), "{entry}");
        assert_eq!(entry["organization_id"], org.id.to_string(), "{entry}");
        assert_eq!((entry["outcome"].as_str(), entry["status_code"].as_i64()), (Some("delivered"), Some(200)));
        assert_eq!((entry["attempt"].as_i64(), entry["replay"].as_bool()), (Some(1), Some(false)), "{entry}");
        assert!(entry["latency_ms"].as_i64().is_some_and(|l| l >= 0), "{entry}");
    }
}

#[tokio::test]
async fn an_outage_delays_events_but_loses_none() {
    let app = webhook_app().await;
    let org = app.org("Outage", 20).await;
    let key = &org.owner_key;
    let mut receiver = WebhookReceiver::start_new().await;
    let before = last_seq(&app, key).await;
    let (endpoint, secret) = create_endpoint(&app, &org, &receiver.url(), None).await;
    let endpoint_id = id_of(&endpoint);

    receiver.stop().await;
    for i in 0..5 {
        add_member(&app, &org, &format!("m{i}@outage.example.com")).await;
    }
    let (s, b) = app.set_seats(&org, json!({"purchased": 30})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for _ in 0..3 {
        app.deliver_webhooks().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(receiver.count(), 0);
    // Only the oldest event was tried: it holds the later ones.
    let failed = deliveries(&app, key, &endpoint_id).await;
    assert!(!failed.is_empty() && failed.len() <= 3, "one attempt per round at most: {failed:?}");
    for (i, entry) in failed.iter().enumerate() {
        assert_eq!(entry["outcome"], "failed", "{entry}");
        assert_eq!(entry["event_seq"].as_i64(), Some(before + 1), "{entry}");
        assert_eq!(entry["attempt"].as_i64(), Some(i as i64 + 1), "{entry}");
        assert!(entry["status_code"].is_null(), "no answer, no status: {entry}");
        assert!(entry["response"].as_str().is_some_and(|r| !r.is_empty()), "the error is logged: {entry}");
    }

    receiver.start().await;
    let events: Vec<Value> =
        feed(&app, key).await.into_iter().filter(|e| e["seq"].as_i64().unwrap() > before).collect();
    assert_eq!(events.len(), 6);
    deliver_until(&app, "the events after the outage", || receiver.delivered().len() >= events.len()).await;
    settle(&app).await;

    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), events.len(), "none lost, none twice");
    assert_eq!(seqs(&delivered), (before + 1..=before + 6).collect::<Vec<_>>(), "in feed order");
    let ids: HashSet<&str> = delivered.iter().map(Received::webhook_id).collect();
    assert_eq!(ids.len(), events.len(), "each webhook-id once");
    for (r, event) in delivered.iter().zip(&events) {
        assert_delivery_of(r, event, &org, &secret);
    }
    let log = deliveries(&app, key, &endpoint_id).await;
    let ok: Vec<&Value> = log.iter().filter(|e| e["outcome"] == "delivered").collect();
    assert_eq!(ok.len(), events.len(), "{log:?}");
    assert_eq!(ok[0]["event_seq"].as_i64(), Some(before + 1));
    assert_eq!(ok[0]["attempt"].as_i64(), Some(failed.len() as i64 + 1), "the held event's next attempt: {log:?}");
}

#[tokio::test]
async fn a_failed_answer_is_retried_with_the_same_webhook_id() {
    let app = webhook_app().await;
    let org = app.org("Retry", 5).await;
    let key = &org.owner_key;
    let receiver = WebhookReceiver::start_new().await;
    let (endpoint, secret) = create_endpoint(&app, &org, &receiver.url(), None).await;
    let endpoint_id = id_of(&endpoint);
    receiver.answer_next(1, StatusCode::INTERNAL_SERVER_ERROR);
    let member = add_member(&app, &org, "r@retry.example.com").await;

    deliver_until(&app, "the retry", || receiver.count() >= 2).await;
    settle(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "one failure, one success");
    assert_eq!((got[0].answered, got[1].answered), (StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK));
    assert_eq!(got[0].webhook_id(), got[1].webhook_id(), "the same event id on the retry");
    for r in &got {
        assert_eq!(r.event_type(), "member.added");
        assert_eq!(r.json()["data"]["subject"], member.as_str());
        r.verify(&secret).unwrap();
    }
    assert_eq!(got[0].event_seq(), got[1].event_seq());

    let log = deliveries(&app, key, &endpoint_id).await;
    assert_eq!(log.len(), 2, "{log:?}");
    let (first, second) = (&log[0], &log[1]);
    assert_eq!((first["attempt"].as_i64(), first["outcome"].as_str()), (Some(1), Some("failed")), "{first}");
    assert_eq!(first["status_code"].as_i64(), Some(500), "{first}");
    assert!(first["response"].as_str().unwrap_or("").contains("receiver answered 500"), "the body's excerpt: {first}");
    assert_eq!((second["attempt"].as_i64(), second["outcome"].as_str()), (Some(2), Some("delivered")), "{second}");
    assert_eq!(second["status_code"].as_i64(), Some(200), "{second}");
    for entry in &log {
        assert_eq!(entry["event_id"], got[0].webhook_id(), "{entry}");
        assert_eq!(entry["replay"], false, "{entry}");
    }
}

#[tokio::test]
async fn an_endpoint_failing_past_the_retry_window_is_disabled_and_its_admins_are_told() {
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.sso_dev_mode = true;
            c.webhooks.allow_private_addresses = true;
            c.webhooks.first_retry = Duration::from_millis(50);
            c.webhooks.retry_for = Duration::from_millis(600);
        },
        Arc::new(SystemClock),
    )
    .await;
    let org = app.org("Failing", 5).await;
    let key = &org.owner_key;
    let receiver = WebhookReceiver::start_new().await;
    let (endpoint, _) = create_endpoint(&app, &org, &receiver.url(), None).await;
    let endpoint_id = id_of(&endpoint);
    receiver.answer_all(Some(StatusCode::SERVICE_UNAVAILABLE));
    add_member(&app, &org, "held@failing.example.com").await;

    let path = format!("/api/v1/webhooks/{endpoint_id}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let disabled = loop {
        app.deliver_webhooks().await;
        let (status, now) = app.get(&path, key).await;
        assert_eq!(status, StatusCode::OK, "{now}");
        if now["enabled"] == false {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "the endpoint was never disabled: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap_or_else(|| panic!("no reason: {disabled}"));
    assert!(reason.contains("503"), "the last answer is in the reason: {reason}");
    let failures = receiver.count();
    assert!(failures >= 2, "retried before giving up: {failures}");
    let log = deliveries(&app, key, &endpoint_id).await;
    assert_eq!(log.len(), failures, "every attempt is logged: {log:?}");
    assert!(log.iter().all(|d| d["outcome"] == "failed" && d["status_code"] == 503), "{log:?}");

    // Disabled: no more attempts, whatever happens.
    add_member(&app, &org, "later@failing.example.com").await;
    settle(&app).await;
    assert_eq!(receiver.count(), failures, "a disabled endpoint is not called");
    let audit = app.audit(key).await;
    assert!(
        audit.iter().any(|a| a["action"] == "webhook.disabled" && a["target"] == endpoint_id.as_str()),
        "{audit:?}"
    );
    app.deliver_mail().await;
    let mail = app.mail_files();
    let notice = mail
        .iter()
        .find(|m| m.contains("webhook deliveries to") && m.contains("owner@failing.example.com"))
        .unwrap_or_else(|| panic!("no notice to the Owner among {} messages", mail.len()));
    assert!(notice.contains(&receiver.url()), "the notice names the endpoint: {notice}");

    // Enabled again once the receiver answers: the held events arrive, in order.
    receiver.answer_all(None);
    let (status, enabled) = app.call(Method::PATCH, &path, Some(key), Some(json!({"enabled": true}))).await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert!(enabled["disabled_reason"].is_null(), "{enabled}");
    deliver_until(&app, "the held events", || receiver.delivered().len() >= 2).await;
    settle(&app).await;
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 2, "each held event once");
    assert_eq!(delivered[1].event_seq(), delivered[0].event_seq() + 1, "in feed order");
    assert_eq!(delivered[0].webhook_id(), receiver.received()[0].webhook_id(), "the held event first");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_during_the_overlap() {
    let app = webhook_app().await;
    let org = app.org("Rotate", 10).await;
    let key = &org.owner_key;
    let receiver = WebhookReceiver::start_new().await;
    let (endpoint, first_secret) = create_endpoint(&app, &org, &receiver.url(), None).await;
    let id = id_of(&endpoint);
    assert!(endpoint["previous_secret_expires_at"].is_null(), "{endpoint}");

    add_member(&app, &org, "a@rotate.example.com").await;
    deliver_until(&app, "the first event", || receiver.count() >= 1).await;
    let r = &receiver.received()[0];
    assert_eq!(r.signatures().len(), 1, "{:?}", r.headers);
    assert!(r.signatures()[0].starts_with("v1,"), "{:?}", r.headers);
    r.verify(&first_secret).unwrap();

    // Out of range overlaps are refused.
    for bad in [json!({"overlap_hours": 169}), json!({"overlap_hours": -1})] {
        let (status, body) = app.post(&format!("/api/v1/webhooks/{id}/rotate"), key, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }

    let (status, rotated) = app.post(&format!("/api/v1/webhooks/{id}/rotate"), key, json!({"overlap_hours": 24})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_secret(&second_secret);
    assert_ne!(second_secret, first_secret);
    let expires: chrono::DateTime<chrono::Utc> =
        rotated["endpoint"]["previous_secret_expires_at"].as_str().unwrap_or("").parse().expect("an expiry");
    let in_a_day = SystemClock.now() + chrono::Duration::hours(24);
    assert!((expires - in_a_day).num_minutes().abs() < 60, "{rotated}");

    add_member(&app, &org, "b@rotate.example.com").await;
    deliver_until(&app, "the event after the rotation", || receiver.count() >= 2).await;
    let r = &receiver.received()[1];
    let sigs = r.signatures();
    assert_eq!(sigs.len(), 2, "new and old: {:?}", r.headers);
    assert!(sigs.iter().all(|s| s.starts_with("v1,")), "{sigs:?}");
    assert_ne!(sigs[0], sigs[1]);
    r.verify(&second_secret).expect("the new secret verifies");
    r.verify(&first_secret).expect("the old secret verifies during the overlap");
    assert!(r.verify(&stranger_secret()).is_err());

    let (status, rotated) = app.post(&format!("/api/v1/webhooks/{id}/rotate"), key, json!({"overlap_hours": 0})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let third_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_secret(&third_secret);
    assert!(third_secret != second_secret && third_secret != first_secret);

    add_member(&app, &org, "c@rotate.example.com").await;
    deliver_until(&app, "the event after the second rotation", || receiver.count() >= 3).await;
    settle(&app).await;
    assert_eq!(receiver.count(), 3);
    let r = &receiver.received()[2];
    assert_eq!(r.signatures().len(), 1, "no overlap, one signature: {:?}", r.headers);
    r.verify(&third_secret).expect("the newest secret verifies");
    assert!(r.verify(&second_secret).is_err(), "the replaced secret no longer verifies");
    assert!(r.verify(&first_secret).is_err());
    let got = seqs(&receiver.received());
    assert_eq!(got, [got[0], got[0] + 1, got[0] + 2], "one after another in feed order");
}

#[tokio::test]
async fn private_addresses_plain_http_bad_events_and_weak_keys_are_refused() {
    // Plain HTTP allowed (development mode) but not private addresses.
    let app = TestApp::spawn_with(TestDb::new().await, |c| c.sso_dev_mode = true, Arc::new(SystemClock)).await;
    let org = app.org("Guard", 5).await;
    let key = &org.owner_key;
    let receiver = WebhookReceiver::start_new().await;
    for url in [
        receiver.url(),
        "http://localhost/".to_string(),
        "http://localhost:8080/hook".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.10/hook".to_string(),
        "http://169.254.169.254/".to_string(),
        "http://[::1]/".to_string(),
        "http://0.0.0.0/".to_string(),
        "https://127.0.0.1/hook".to_string(),
    ] {
        let (status, body) = app.post("/api/v1/webhooks", key, json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{url}: {body}");
    }
    let (status, list) = app.get("/api/v1/webhooks", key).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])), "nothing was created");

    // Private addresses allowed, but not plain HTTP (no development mode).
    let app =
        TestApp::spawn_with(TestDb::new().await, |c| c.webhooks.allow_private_addresses = true, Arc::new(SystemClock))
            .await;
    let org = app.org("Plain", 5).await;
    let key = &org.owner_key;
    let (status, body) = app.post("/api/v1/webhooks", key, json!({"url": "http://127.0.0.1:9/hook"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, list) = app.get("/api/v1/webhooks", key).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])), "nothing was created");
    // The same address over HTTPS is fine here.
    let (status, body) = app.post("/api/v1/webhooks", key, json!({"url": "https://127.0.0.1:9/hook"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Both allowed: what is wrong is the rest of the request, or the key.
    let app = webhook_app().await;
    let org = app.org("Input", 5).await;
    let key = &org.owner_key;
    let url = "http://127.0.0.1:9/hook";
    for body in [
        json!({"url": url, "events": ["member.joined"]}),
        json!({"url": url, "events": ["members.*"]}),
        json!({"url": url, "events": ["member.added", "nope"]}),
        json!({"url": url, "events": [""]}),
        json!({"url": "ftp://127.0.0.1:9/hook"}),
        json!({"url": "http://user:pass@127.0.0.1:9/hook"}),
        json!({"url": "http://127.0.0.1:9/hook#frag"}),
        json!({"url": "not a url"}),
    ] {
        let (status, problem) = app.post("/api/v1/webhooks", key, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {problem}");
    }
    for role in [Role::Read, Role::Write] {
        let weak = app.key(&org, role).await;
        let (status, body) = app.post("/api/v1/webhooks", &weak, json!({"url": url})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
        let (status, body) = app.get("/api/v1/webhooks", &weak).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
    }
    let (status, list) = app.get("/api/v1/webhooks", key).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])), "nothing was created");
    // The same request with good input and an Admin key is accepted.
    let admin = app.key(&org, Role::Admin).await;
    let (status, body) =
        app.post("/api/v1/webhooks", &admin, json!({"url": url, "events": ["member.*", "seats.updated"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["endpoint"]["events"], json!(["member.*", "seats.updated"]), "{body}");
    let (status, list) = app.get("/api/v1/webhooks", key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn an_endpoint_hears_only_the_events_it_chose() {
    let app = webhook_app().await;
    let org = app.org("Filter", 10).await;
    let key = &org.owner_key;
    let seats_only = WebhookReceiver::start_new().await;
    let everything = WebhookReceiver::start_new().await;
    let (endpoint, secret) = create_endpoint(&app, &org, &seats_only.url(), Some(json!(["seats.*"]))).await;
    assert_eq!(endpoint["events"], json!(["seats.*"]), "{endpoint}");
    let (status, shown) = app.get(&format!("/api/v1/webhooks/{}", id_of(&endpoint)), key).await;
    assert_eq!((status, shown["events"].clone()), (StatusCode::OK, json!(["seats.*"])), "{shown}");
    create_endpoint(&app, &org, &everything.url(), None).await;

    add_member(&app, &org, "a@filter.example.com").await;
    let (s, b) = app.set_seats(&org, json!({"purchased": 12})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    add_member(&app, &org, "b@filter.example.com").await;

    // The endpoint that hears everything got all three: the filtered one had its chance at them.
    deliver_until(&app, "both endpoints' events", || everything.count() >= 3 && seats_only.count() >= 1).await;
    settle(&app).await;
    let all_types: Vec<String> = everything.received().iter().map(Received::event_type).collect();
    assert_eq!(all_types, ["member.added", "seats.updated", "member.added"]);
    let got = seats_only.received();
    assert_eq!(got.iter().map(Received::event_type).collect::<Vec<_>>(), ["seats.updated"]);
    got[0].verify(&secret).unwrap();
    let seats_event = feed(&app, key).await.into_iter().find(|e| e["type"] == "seats.updated").unwrap();
    assert_delivery_of(&got[0], &seats_event, &org, &secret);
    assert_eq!(
        got[0].json()["data"]["event_seq"],
        seats_event["seq"],
        "the feed's position, not a count of deliveries"
    );
}

#[tokio::test]
async fn a_delivery_or_a_stretch_of_the_feed_replays_on_request() {
    let app = webhook_app().await;
    let org = app.org("Replay", 10).await;
    let key = &org.owner_key;
    let receiver = WebhookReceiver::start_new().await;
    let (endpoint, secret) = create_endpoint(&app, &org, &receiver.url(), None).await;
    let id = id_of(&endpoint);
    for i in 0..4 {
        add_member(&app, &org, &format!("m{i}@replay.example.com")).await;
    }
    deliver_until(&app, "the four events", || receiver.count() >= 4).await;
    settle(&app).await;
    let first_round = receiver.received();
    assert_eq!(first_round.len(), 4);

    // One delivery again.
    let log = deliveries(&app, key, &id).await;
    assert_eq!(log.len(), 4, "{log:?}");
    let second = &log[1];
    let path = format!("/api/v1/webhooks/{id}/deliveries/{}/replay", id_of(second));
    let (status, body) = app.post(&path, key, json!({})).await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"queued": 1})));
    deliver_until(&app, "the replayed delivery", || receiver.count() >= 5).await;
    settle(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 5, "replayed once");
    assert_eq!(got[4].webhook_id(), first_round[1].webhook_id(), "the same event id");
    assert_eq!(got[4].webhook_id(), second["event_id"].as_str().unwrap());
    assert_eq!(got[4].event_seq(), first_round[1].event_seq());
    assert_eq!(got[4].event_type(), "member.added");
    got[4].verify(&secret).unwrap();
    let log = deliveries(&app, key, &id).await;
    let replays: Vec<&Value> = log.iter().filter(|e| e["replay"] == true).collect();
    assert_eq!(replays.len(), 1, "{log:?}");
    assert_eq!(replays[0]["event_id"], second["event_id"], "{log:?}");
    assert_eq!(replays[0]["outcome"], "delivered", "{log:?}");

    // Everything from the third event on again, in order.
    let since = first_round[2].event_seq();
    let (status, body) = app.post(&format!("/api/v1/webhooks/{id}/replay"), key, json!({"since_seq": since})).await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"queued": 2})));
    deliver_until(&app, "the replayed stretch", || receiver.count() >= 7).await;
    settle(&app).await;
    let got = receiver.received();
    assert_eq!(got.len(), 7, "the stretch once");
    assert_eq!(seqs(&got[5..]), [since, since + 1]);
    assert_eq!(
        got[5..].iter().map(Received::webhook_id).collect::<Vec<_>>(),
        first_round[2..].iter().map(Received::webhook_id).collect::<Vec<_>>()
    );
    for r in &got[5..] {
        r.verify(&secret).unwrap();
    }
    let log = deliveries(&app, key, &id).await;
    assert_eq!(log.len(), 7, "{log:?}");
    let tail: Vec<(i64, &str)> =
        log[5..].iter().map(|e| (e["event_seq"].as_i64().unwrap(), e["outcome"].as_str().unwrap())).collect();
    assert_eq!(tail, [(since, "delivered"), (since + 1, "delivered")], "{log:?}");
}

/// Two `roster serve` processes with the dispatcher on one PostgreSQL, an
/// endpoint added with the CLI, and 1,000 events made through both: each
/// arrives exactly once, in feed order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deliver_a_thousand_events_once_each_in_order() {
    const MEMBERS: usize = 500;
    const INVITATIONS: usize = 500;
    let db = TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("two_processes_deliver_a_thousand_events_once_each_in_order: needs DATABASE_URL=postgres://…; covered by the PostgreSQL run");
        return;
    }
    let receiver = WebhookReceiver::start_new().await;
    let created = run_json(
        &db.url,
        &["org", "create", "--name", "Busy", "--seats", "1100", "--owner-email", "owner@busy.example.com"],
    );
    let org = created["organization"]["id"].as_str().unwrap().to_string();
    let key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let env = [
        ("ROSTER_WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("ROSTER_SSO_DEV_MODE", "true"),
        ("ROSTER_WEBHOOK_POLL_INTERVAL_MS", "100"),
    ];
    let out = roster(&db.url)
        .envs(env)
        .args(["webhook", "add", "--url", &receiver.url(), "--org", &org, "--json"])
        .output()
        .expect("run roster webhook add");
    assert!(out.status.success(), "webhook add: {}", String::from_utf8_lossy(&out.stderr));
    let added: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(added["endpoint"]["url"], receiver.url(), "{added}");
    assert_eq!(added["endpoint"]["organization_id"], org.as_str(), "{added}");
    let secret = added["secret"].as_str().unwrap().to_string();
    assert_secret(&secret);

    let mut server_env = vec![("ROSTER_LISTEN", "127.0.0.1:0"), ("ROSTER_BACKGROUND_JOBS", "true")];
    server_env.extend(env);
    let (a, b) = (Server::start_with(&db.url, &server_env), Server::start_with(&db.url, &server_env));
    let bases = [a.base.clone(), b.base.clone()];
    let http = reqwest::Client::new();
    let before = feed_at(&http, &a.base, &key).await.last().map_or(0, |e| e["seq"].as_i64().unwrap());

    // Members one by one through both processes, a few at a time, and
    // invitations in CSV uploads to each, while both dispatchers run.
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (http, key, bases) = (http.clone(), key.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            for i in (worker..MEMBERS).step_by(4) {
                let body = json!({"email": format!("m{i}@busy.example.com"), "role": "read"});
                let (s, m) = api(&http, &bases[i % 2], Method::POST, "/api/v1/members", &key, Some(body)).await;
                assert_eq!(s, StatusCode::CREATED, "{m}");
            }
        }));
    }
    for (upload, base) in bases.iter().enumerate() {
        let (http, key, base) = (http.clone(), key.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let per = INVITATIONS / 2;
            let csv: String = (0..per).map(|i| format!("i{}@busy.example.com,read\n", upload * per + i)).collect();
            let res = http
                .post(format!("{base}/api/v1/invitations/bulk"))
                .bearer_auth(&key)
                .header("content-type", "text/csv")
                .body(csv)
                .send()
                .await
                .expect("request");
            let (s, body) = read(res).await;
            assert_eq!(s, StatusCode::CREATED, "{body}");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let total = MEMBERS + INVITATIONS;
    let events: Vec<Value> =
        feed_at(&http, &b.base, &key).await.into_iter().filter(|e| e["seq"].as_i64().unwrap() > before).collect();
    assert_eq!(events.len(), total, "the changes made {total} events");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while receiver.count() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {} of {total} events arrived",
            receiver.count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several poll intervals more, for any repeat to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    let delivered = receiver.delivered();
    assert_eq!((got.len(), delivered.len()), (total, total), "every request answered 200, none repeated");
    let ids: HashSet<&str> = delivered.iter().map(Received::webhook_id).collect();
    assert_eq!(ids.len(), total, "distinct webhook-ids");
    let first = delivered[0].event_seq();
    assert_eq!(first, before + 1, "delivery starts at the endpoint's first event");
    assert_eq!(seqs(&delivered), (first..first + total as i64).collect::<Vec<_>>(), "feed order");
    for (r, event) in delivered.iter().zip(&events) {
        assert_eq!(r.webhook_id(), event["id"].as_str().unwrap(), "{event}");
        assert_eq!(r.event_type(), event["type"].as_str().unwrap(), "{event}");
        if let Err(e) = r.verify(&secret) {
            panic!("seq {}: {e}", r.event_seq());
        }
    }
    let count = |kind: &str| delivered.iter().filter(|r| r.event_type() == kind).count();
    assert_eq!((count("member.added"), count("invitation.created")), (MEMBERS, INVITATIONS));
    assert!(a.terminate() && b.terminate(), "both processes exit cleanly");
}
