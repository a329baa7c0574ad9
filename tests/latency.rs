//! Health checks under the heaviest load, in a test binary of its own:
//! cargo runs test binaries one after another, so no other test shares the
//! machine's cores with the load this one makes.

// Test code states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// Two clients send the largest bodies the server takes, over and over,
/// while a probe polls `/healthz`: no probe waits for them. Checking those
/// bodies once took seconds on the async workers (23 s for 16,000 emails)
/// and stopped `/healthz` for over a minute; a probe answered within a
/// second shows the workers are never held by them. The figure itself
/// (tens of milliseconds, release build) is measured by `roster bench scim`
/// (`healthz under 1 MiB load`, benches/README.md): a wall-clock bound of
/// that size in a debug build on a shared two-core machine measures its
/// scheduler, not Roster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_while_the_largest_requests_are_checked() {
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| c.request_body_limit_bytes = 1 << 20,
        std::sync::Arc::new(roster::clock::SystemClock),
    )
    .await;
    let org = app.org("Heavy", 10).await;
    let token = scim_token(&app, &org).await;
    let res = app
        .client
        .post(app.url("/scim/v2/Groups"))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body(json!({ "schemas": [GROUP_SCHEMA], "displayName": "G" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let group: Value = res.json().await.unwrap();
    let group_id = id_of(&group);

    // Near 1 MiB each: a new Group naming 10,000 members (none of them
    // Users), and a PATCH of 10,000 operations each adding one.
    let members: Vec<Value> = (0..10_000).map(|_| json!({ "value": uuid::Uuid::new_v4() })).collect();
    let create = json!({ "schemas": [GROUP_SCHEMA], "displayName": "Big", "members": members }).to_string();
    let ops: Vec<Value> = (0..10_000)
        .map(|_| json!({ "op": "add", "path": "members", "value": [{ "value": uuid::Uuid::new_v4() }] }))
        .collect();
    let patch = json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops }).to_string();
    assert!(create.len() > 400_000 && create.len() < 1 << 20, "{}", create.len());
    assert!(patch.len() > 800_000 && patch.len() < 1 << 20, "{}", patch.len());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (method, path, body) in [
        (Method::POST, "/scim/v2/Groups".to_string(), create),
        (Method::PATCH, format!("/scim/v2/Groups/{group_id}"), patch),
    ] {
        let (url, token, stop) = (app.url(&path), token.clone(), stop.clone());
        // The clients run on a runtime of their own, as they would on
        // another machine: the server's workers do only the server's work.
        load.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let client = reqwest::Client::new();
                let mut sent = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let res = client
                        .request(method.clone(), &url)
                        .bearer_auth(&token)
                        .header("content-type", "application/scim+json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{method} {url}");
                    sent += 1;
                }
                sent
            })
        }));
    }
    let probe = reqwest::Client::new();
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let res = probe.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for thread in load {
        sent += thread.join().unwrap();
    }
    assert!(sent >= 2, "the large requests did not run alongside the probes");
    eprintln!("{sent} large requests; slowest health check {slowest:?}");
    assert!(slowest < std::time::Duration::from_secs(1), "a health check took {slowest:?}");
}
