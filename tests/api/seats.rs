//! The seat primitive under concurrency: with 5 seats left and 20 concurrent
//! requests exactly 5 succeed, in one process and across two `roster`
//! processes sharing one PostgreSQL.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

/// Fires `n` concurrent invitations at `base` and counts the outcomes.
async fn race_invitations(client: &reqwest::Client, bases: &[String], key: &str, n: usize) -> (usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("{}/api/v1/invitations", bases[i % bases.len()]);
        let client = client.clone();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "email": format!("racer{i}@example.com"), "role": "read" }))
                .send()
                .await
                .expect("request");
            read(res).await
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                assert!(body["type"].as_str().unwrap_or("").ends_with("seat-limit-reached"), "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (created, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_invitations_take_exactly_the_five_free_seats() {
    let app = TestApp::spawn().await;
    // 6 purchased, the Owner holds one: 5 free.
    let org = app.org("Racers", 6).await;
    let (created, refused) = race_invitations(&app.client, &[app.url("")], &org.owner_key, 20).await;
    assert_eq!((created, refused), (5, 15));
    let seats = app.seats(&org.owner_key).await;
    assert_eq!(seats["used"], 6);
    assert_eq!(seats["available"], 0);
    assert_eq!(seats["pending_invitations"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_member_adds_and_reactivations_share_the_same_limit() {
    let app = TestApp::spawn().await;
    let org = app.org("Mixed", 4).await;
    // One suspended member who will try to come back while others are added.
    let (s, m) =
        app.post("/api/v1/members", &org.owner_key, json!({"email": "back@example.com", "role": "read"})).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let (s, _) = app.post(&format!("/api/v1/members/{id}/suspend"), &org.owner_key, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    // 3 free seats; 10 adds and 1 re-activation race for them.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/members"), org.owner_key.clone());
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"email": format!("m{i}@example.com"), "role": "read"}))
                .send()
                .await;
            read(res.expect("request")).await.0
        }));
    }
    let (client, url, key) =
        (app.client.clone(), app.url(&format!("/api/v1/members/{id}/reactivate")), org.owner_key.clone());
    tasks.push(tokio::spawn(
        async move { read(client.post(url).bearer_auth(key).send().await.expect("request")).await.0 },
    ));
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            StatusCode::CREATED | StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 3);
    let seats = app.seats(&org.owner_key).await;
    assert_eq!((seats["used"].as_i64(), seats["purchased"].as_i64()), (Some(4), Some(4)));
}

#[tokio::test]
async fn overage_policy_grants_beyond_purchased_and_shows_it() {
    let app = TestApp::spawn().await;
    let org = app.org("Elastic", 1).await;
    let (s, body) = app.set_seats(&org, json!({"purchased": 1, "policy": "overage"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "extra@example.com", "role": "read"})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let seats = app.seats(&org.owner_key).await;
    assert_eq!(seats["overage"], 1);
    assert_eq!(seats["available"], 0);
    let audit = app.audit(&org.owner_key).await;
    let created = audit.iter().find(|e| e["action"] == "invitation.created").expect("audited");
    assert_eq!(created["after"]["seat_overage"], 1, "{created}");
}

#[tokio::test]
async fn seats_report_purchased_used_available_and_pending() {
    let app = TestApp::spawn().await;
    let org = app.org("Counting", 5).await;
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "a@example.com", "role": "read"})).await;
    app.post("/api/v1/members", &org.owner_key, json!({"email": "b@example.com", "role": "write"})).await;
    let seats = app.seats(&org.owner_key).await;
    assert_eq!(seats["purchased"], 5);
    assert_eq!(seats["used"], 3);
    assert_eq!(seats["available"], 2);
    assert_eq!(seats["pending_invitations"], 1);
    assert_eq!(seats["active_members"], 2);
    // Lowering below use cuts nobody and shows the overage.
    let (s, body) = app.set_seats(&org, json!({"purchased": 2})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["overage"], 1);
    assert_eq!(body["used"], 3);
}
