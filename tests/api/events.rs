//! The events outbox over real HTTP: every membership, invitation and seat
//! change numbered per organization without gaps, read in order and resumed
//! from the last position, under concurrent changes too, and never shown to
//! another organization.

use crate::helpers::*;
use crate::scim::{scim_token, user};
use reqwest::{Method, StatusCode};
use roster::clock::{Clock, ManualClock, SystemClock};
use roster::model::Role;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// One page of the feed.
async fn page(app: &TestApp, key: &str, query: &str) -> (Vec<Value>, i64) {
    let (status, body) = app.get(&format!("/api/v1/events{query}"), key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap_or_else(|| panic!("no events in {body}")).clone();
    (events, body["next_after"].as_i64().unwrap_or_else(|| panic!("no next_after in {body}")))
}

/// The whole feed, read `limit` at a time from the start.
async fn feed(app: &TestApp, key: &str, limit: i64) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (events, next) = page(app, key, &format!("?after={after}&limit={limit}")).await;
        if events.is_empty() {
            assert_eq!(next, after, "an empty page moved the position");
            return all;
        }
        assert!(events.len() as i64 <= limit);
        assert_eq!(next, events.last().unwrap()["seq"].as_i64().unwrap());
        all.extend(events);
        after = next;
    }
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

fn is_event(action: &str) -> bool {
    action.starts_with("member.") || action.starts_with("invitation.") || action == "seats.updated"
}

/// The organization's event-type audit records as (action, target), oldest first.
async fn audited_events(app: &TestApp, key: &str) -> Vec<(String, String)> {
    let mut records: Vec<(String, String)> = app
        .audit(key)
        .await
        .iter()
        .filter(|e| is_event(e["action"].as_str().unwrap()))
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["target"].as_str().unwrap().to_string()))
        .collect();
    records.reverse();
    records
}

fn as_records(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["subject"].as_str().unwrap().to_string()))
        .collect()
}

/// A sequence of changes of every kind, with changes between them that are not events.
/// Returns the member's and the invitation's ids.
async fn changes(app: &TestApp, org: &TestOrg, tag: &str) -> (String, String) {
    let key = &org.owner_key;
    let (status, m) =
        app.post("/api/v1/members", key, json!({"email": format!("m@{tag}.example.com"), "role": "write"})).await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let member = id_of(&m);
    let (status, inv) =
        app.post("/api/v1/invitations", key, json!({"email": format!("i@{tag}.example.com"), "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    let invitation = id_of(&inv);
    let (status, body) =
        app.call(Method::PATCH, &format!("/api/v1/members/{member}"), Some(key), Some(json!({"role": "admin"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Not membership, invitation or seat changes: no events.
    let (status, body) =
        app.post("/api/v1/role-mappings", key, json!({"source": "group", "value": "eng", "role": "admin"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.post("/api/v1/api-keys", key, json!({"name": "CI", "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.set_seats(org, json!({"purchased": 12})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/invitations/{invitation}"), Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.post(&format!("/api/v1/members/{member}/suspend"), key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (member, invitation)
}

#[tokio::test]
async fn every_change_is_an_event_numbered_from_one_without_gaps() {
    let app = TestApp::spawn().await;
    let org = app.org("Feed", 10).await;
    let (member, invitation) = changes(&app, &org, "feed").await;
    // Events are readable with a Read key.
    let reader = app.key(&org, Role::Read).await;
    let (events, next_after) = page(&app, &reader, "").await;
    assert_eq!(seqs(&events), (1..=7).collect::<Vec<_>>());
    assert_eq!(next_after, 7);
    assert_eq!(
        kinds(&events),
        [
            "member.added",
            "member.added",
            "invitation.created",
            "member.role_changed",
            "seats.updated",
            "invitation.revoked",
            "member.suspended"
        ]
    );
    let org_id = org.id.to_string();
    let owner = org.owner_member.to_string();
    let subjects: Vec<&str> = events.iter().map(|e| e["subject"].as_str().unwrap()).collect();
    assert_eq!(
        subjects,
        [&owner, &member, &invitation, &member, &org_id, &invitation, &member].map(String::as_str),
        "{events:?}"
    );
    // Each carries the subject after the change.
    assert_eq!(events[1]["data"]["email"], "m@feed.example.com");
    assert_eq!(events[3]["data"]["role"], "admin");
    assert_eq!(events[4]["data"]["purchased"], 12);
    assert_eq!(events[5]["data"]["status"], "revoked");
    assert_eq!(events[6]["data"]["status"], "suspended");
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids repeat");
    for e in &events {
        let at: Result<chrono::DateTime<chrono::Utc>, _> = e["at"].as_str().unwrap_or("").parse();
        assert!(at.is_ok(), "{e}");
    }
    // The feed is exactly the event-type audit trail.
    assert_eq!(as_records(&events), audited_events(&app, &org.owner_key).await);
}

#[tokio::test]
async fn paging_resumes_where_it_stopped_without_repeats() {
    let app = TestApp::spawn().await;
    let org = app.org("Pages", 10).await;
    changes(&app, &org, "pages").await;
    let key = &org.owner_key;
    let (all, _) = page(&app, key, "?limit=1000").await;
    assert_eq!(all.len(), 7);

    let (first, next) = page(&app, key, "?limit=3").await;
    assert_eq!((seqs(&first), next), (vec![1, 2, 3], 3));
    let (second, next) = page(&app, key, &format!("?after={next}&limit=3")).await;
    assert_eq!((seqs(&second), next), (vec![4, 5, 6], 6));
    let (third, next) = page(&app, key, &format!("?limit=3&after={next}")).await;
    assert_eq!((seqs(&third), next), (vec![7], 7));
    let (empty, still) = page(&app, key, &format!("?after={next}")).await;
    assert_eq!((empty.len(), still), (0, 7));
    let resumed: Vec<Value> = first.into_iter().chain(second).chain(third).collect();
    assert_eq!(resumed, all);

    // A new change shows at the position a reader resumes from.
    let (status, body) =
        app.post("/api/v1/invitations", key, json!({"email": "late@pages.example.com", "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (late, next) = page(&app, key, "?after=7").await;
    assert_eq!((seqs(&late), kinds(&late), next), (vec![8], vec!["invitation.created".to_string()], 8));
    assert_eq!(late[0]["subject"], id_of(&body).as_str());

    // Beyond the end: nothing, and the position stays.
    let (beyond, next) = page(&app, key, "?after=100&limit=5").await;
    assert_eq!((beyond.len(), next), (0, 100));
    // Every page size reads the same feed.
    let whole = feed(&app, key, 1).await;
    assert_eq!(seqs(&whole), (1..=8).collect::<Vec<_>>());
    assert_eq!(feed(&app, key, 5).await, whole);
}

#[tokio::test]
async fn bad_positions_and_page_sizes_are_refused() {
    let app = TestApp::spawn().await;
    let org = app.org("BadFeed", 10).await;
    let key = &org.owner_key;
    for (query, field) in [
        ("?after=-1", "after"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=-3", "limit"),
        ("?after=-5&limit=10", "after"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/events{query}"), key).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    // What is not a number at all, or not a parameter, is a bad request like on every listing.
    for query in ["?after=abc", "?limit=ten", "?after=1.5", "?cursor=3"] {
        let (status, body) = app.get(&format!("/api/v1/events{query}"), key).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-request");
    }
    let (events, next) = page(&app, key, "?limit=1000").await;
    assert_eq!((seqs(&events), next), (vec![1], 1));
}

#[tokio::test]
async fn another_organization_never_sees_these_events() {
    let app = TestApp::spawn().await;
    let first = app.org("First", 10).await;
    let other = app.org("Other", 10).await;
    changes(&app, &first, "first").await;
    let (status, body) =
        app.post("/api/v1/members", &other.owner_key, json!({"email": "x@other.example.com", "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mine = feed(&app, &first.owner_key, 200).await;
    let theirs = feed(&app, &other.owner_key, 200).await;
    assert_eq!(seqs(&mine), (1..=7).collect::<Vec<_>>());
    // Each organization numbers its own feed from 1.
    assert_eq!(seqs(&theirs), vec![1, 2]);
    assert_eq!(kinds(&theirs), ["member.added", "member.added"]);
    let text = serde_json::to_string(&theirs).unwrap();
    assert!(!text.contains(&first.id.to_string()), "{text}");
    assert!(!text.contains("first.example.com"), "{text}");
    for e in &mine {
        assert!(!text.contains(e["id"].as_str().unwrap()), "{text}");
        assert!(!text.contains(e["subject"].as_str().unwrap()), "{text}");
    }
    for e in &theirs {
        assert_eq!(e["data"]["org_id"], other.id.to_string(), "{e}");
    }
    // Resuming at the other's positions shows nothing of the first either.
    let (rest, _) = page(&app, &other.owner_key, "?after=2").await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_get_every_position_exactly_once() {
    let app = TestApp::spawn().await;
    let org = app.org("Busy", 100).await;
    let token = scim_token(&app, &org).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = app.client.clone();
        let (url, body, bearer, scim) = match i % 3 {
            0 => (
                app.url("/api/v1/members"),
                json!({"email": format!("m{i}@busy.example.com"), "role": "read"}),
                org.owner_key.clone(),
                false,
            ),
            1 => (
                app.url("/api/v1/invitations"),
                json!({"email": format!("i{i}@busy.example.com"), "role": "write"}),
                org.owner_key.clone(),
                false,
            ),
            _ => (app.url("/scim/v2/Users"), user(&format!("s{i}@busy.example.com")), token.clone(), true),
        };
        tasks.push(tokio::spawn(async move {
            let req = client.post(url).bearer_auth(bearer);
            let req = if scim {
                req.header("content-type", "application/scim+json").body(body.to_string())
            } else {
                req.json(&body)
            };
            let res = req.send().await.expect("request");
            let status = res.status();
            (status, res.text().await.expect("body"))
        }));
    }
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let events = feed(&app, &org.owner_key, 7).await;
    let n = events.len() as i64;
    assert_eq!(seqs(&events), (1..=n).collect::<Vec<_>>(), "gaps or repeats");
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids repeat");
    // The Owner, 14 admin adds and 13 SCIM creates join; 13 are invited.
    let count = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();
    assert_eq!((count("member.added"), count("invitation.created")), (28, 13));
    assert_eq!(n, 41);
    let audited = audited_events(&app, &org.owner_key).await;
    assert_eq!(audited.len() as i64, n, "events and event-type audit records differ in number");
    // The same records, each once.
    let mut a = audited.clone();
    let mut b = as_records(&events);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    let seats = app.seats(&org.owner_key).await;
    assert_eq!(seats["used"], 41);
}

#[tokio::test]
async fn a_page_holds_200_events_unless_told_otherwise() {
    let app = TestApp::spawn().await;
    let org = app.org("Many", 300).await;
    let csv: String = (0..210).map(|i| format!("p{i}@many.example.com,read\n")).collect();
    let (status, body) = app.post_csv(&org.owner_key, &csv).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (first, next) = page(&app, &org.owner_key, "").await;
    assert_eq!((seqs(&first), next), ((1..=200).collect::<Vec<_>>(), 200));
    let (rest, next) = page(&app, &org.owner_key, "?after=200").await;
    assert_eq!((seqs(&rest), next), ((201..=211).collect::<Vec<_>>(), 211));
    let (all, next) = page(&app, &org.owner_key, "?limit=1000").await;
    assert_eq!((all.len(), next), (211, 211));
    assert_eq!(kinds(&all).iter().filter(|k| *k == "invitation.created").count(), 210);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_concurrent_changes_take_no_position() {
    let app = TestApp::spawn().await;
    // The Owner holds one of 20 seats: 19 of 30 changes get one.
    let org = app.org("Crowded", 20).await;
    let token = scim_token(&app, &org).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let client = app.client.clone();
        let req = match i % 3 {
            0 => client
                .post(app.url("/api/v1/members"))
                .bearer_auth(&org.owner_key)
                .json(&json!({"email": format!("m{i}@crowded.example.com"), "role": "read"})),
            1 => client
                .post(app.url("/api/v1/invitations"))
                .bearer_auth(&org.owner_key)
                .json(&json!({"email": format!("i{i}@crowded.example.com"), "role": "read"})),
            _ => client
                .post(app.url("/scim/v2/Users"))
                .bearer_auth(&token)
                .header("content-type", "application/scim+json")
                .body(user(&format!("s{i}@crowded.example.com")).to_string()),
        };
        tasks.push(tokio::spawn(async move { req.send().await.expect("request").status() }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.expect("task") {
            StatusCode::CREATED => created += 1,
            // A seat refusal: 409 on the admin API, 403 on SCIM.
            StatusCode::CONFLICT | StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 19);
    let events = feed(&app, &org.owner_key, 200).await;
    assert_eq!(seqs(&events), (1..=20).collect::<Vec<_>>(), "gaps or repeats");
    assert_eq!(audited_events(&app, &org.owner_key).await.len(), 20);
    assert_eq!(app.seats(&org.owner_key).await["used"], 20);
}

// Inviting an email again after its invitation lapsed marks the old
// invitation expired, and says so in the audit log and the outbox, as every
// other way an invitation expires does.
#[tokio::test]
async fn a_lapsed_invitation_replaced_by_a_new_one_is_an_expiry_event() {
    let clock = ManualClock::new(SystemClock.now());
    let app = TestApp::spawn_with(TestDb::new().await, |_| {}, Arc::new(clock.clone())).await;
    let org = app.org("Lapsing", 5).await;
    let key = &org.owner_key;
    let (status, old) = app.post("/api/v1/invitations", key, json!({"email": "a@lapsing.com", "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED, "{old}");
    clock.advance(chrono::Duration::days(15));
    let (status, new) = app.post("/api/v1/invitations", key, json!({"email": "a@lapsing.com", "role": "read"})).await;
    assert_eq!(status, StatusCode::CREATED, "{new}");
    // The old invitation did change: it is stored as expired now.
    let (_, list) = app.get("/api/v1/invitations?status=expired", key).await;
    assert_eq!(list["items"][0]["id"], old["id"], "{list}");
    let events = feed(&app, key, 200).await;
    let records = as_records(&events);
    assert!(
        records.contains(&("invitation.expired".to_string(), id_of(&old))),
        "the old invitation's expiry is not in the feed: {records:?}"
    );
    assert_eq!(records, audited_events(&app, key).await);
}
