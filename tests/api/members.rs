//! Members: listing, role changes, suspension, removal, the last Owner, and
//! exactly one audit record per change.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn add(app: &TestApp, key: &str, email: &str, role: &str) -> String {
    let (s, body) = app.post("/api/v1/members", key, json!({"email": email, "role": role})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_last_owner_cannot_be_removed_demoted_or_suspended() {
    let app = TestApp::spawn().await;
    let org = app.org("Solo", 5).await;
    let owner = org.owner_member.to_string();
    let before = app.audit(&org.owner_key).await.len();
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::PATCH, format!("/api/v1/members/{owner}"), Some(json!({"role": "admin"}))),
        (Method::POST, format!("/api/v1/members/{owner}/suspend"), None),
        (Method::DELETE, format!("/api/v1/members/{owner}"), None),
    ];
    for (method, path, body) in &attempts {
        let (s, problem) = app.call(method.clone(), path, Some(&org.owner_key), body.clone()).await;
        assert_eq!(s, StatusCode::CONFLICT, "{method} {path}: {problem}");
        assert!(problem["type"].as_str().unwrap().ends_with("last-owner"), "{problem}");
    }
    let (_, m) = app.get(&format!("/api/v1/members/{owner}"), &org.owner_key).await;
    assert_eq!((m["role"].as_str(), m["status"].as_str()), (Some("owner"), Some("active")));
    assert_eq!(app.audit(&org.owner_key).await.len(), before);

    // With a second Owner, the first can step down; then the second is the last.
    let second = add(&app, &org.owner_key, "second@example.com", "owner").await;
    let (s, body) = app
        .call(Method::PATCH, &format!("/api/v1/members/{owner}"), Some(&org.owner_key), Some(json!({"role": "admin"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = app.call(Method::DELETE, &format!("/api/v1/members/{second}"), Some(&org.owner_key), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn concurrent_demotions_of_two_owners_leave_one() {
    let app = TestApp::spawn().await;
    let org = app.org("Duo", 5).await;
    let second = add(&app, &org.owner_key, "second@example.com", "owner").await;
    let mut tasks = Vec::new();
    for id in [org.owner_member.to_string(), second] {
        let (client, url, key) = (app.client.clone(), app.url(&format!("/api/v1/members/{id}")), org.owner_key.clone());
        tasks.push(tokio::spawn(async move {
            read(client.patch(url).bearer_auth(key).json(&json!({"role": "write"})).send().await.expect("request"))
                .await
                .0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    statuses.sort();
    assert_eq!(statuses, vec![StatusCode::OK, StatusCode::CONFLICT]);
    let (_, owners) = app.get("/api/v1/members?role=owner&status=active", &org.owner_key).await;
    assert_eq!(owners["total"], 1);
}

#[tokio::test]
async fn lifecycle_changes_free_and_take_seats_each_with_one_audit_record() {
    let app = TestApp::spawn().await;
    let org = app.org("Life", 3).await;
    let key = &org.owner_key;
    let start = app.audit(key).await.len();
    let id = add(&app, key, "pat@example.com", "write").await;
    let steps: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::PATCH, format!("/api/v1/members/{id}"), Some(json!({"role": "admin"})), "member.role_changed"),
        (Method::POST, format!("/api/v1/members/{id}/suspend"), None, "member.suspended"),
        (Method::POST, format!("/api/v1/members/{id}/reactivate"), None, "member.reactivated"),
        (Method::DELETE, format!("/api/v1/members/{id}"), None, "member.removed"),
    ];
    for (i, (method, path, body, action)) in steps.iter().enumerate() {
        let (s, res) = app.call(method.clone(), path, Some(key), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{method} {path}: {res}");
        let audit = app.audit(key).await;
        assert_eq!(audit.len(), start + 2 + i, "exactly one record for {action}");
        assert_eq!(audit[0]["action"], *action);
        assert_eq!(audit[0]["target"], id.as_str());
        assert!(audit[0]["request_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(audit[0]["before"].is_object() && audit[0]["after"].is_object());
    }
    // Repeating a change that is already in effect changes (and audits) nothing.
    let (s, _) = app.call(Method::DELETE, &format!("/api/v1/members/{id}"), Some(key), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.audit(key).await.len(), start + 5);
    let seats = app.seats(key).await;
    assert_eq!(seats["active_members"], 1);
    // A removed member cannot be re-activated, but can be added again.
    let (s, _) = app.post(&format!("/api/v1/members/{id}/reactivate"), key, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let again = add(&app, key, "PAT@example.com", "read").await;
    assert_eq!(again, id, "re-adding keeps the membership record");
}

#[tokio::test]
async fn reactivation_needs_a_free_seat() {
    let app = TestApp::spawn().await;
    let org = app.org("Full", 2).await;
    let id = add(&app, &org.owner_key, "a@example.com", "read").await;
    app.post(&format!("/api/v1/members/{id}/suspend"), &org.owner_key, json!({})).await;
    add(&app, &org.owner_key, "b@example.com", "read").await;
    let (s, body) = app.post(&format!("/api/v1/members/{id}/reactivate"), &org.owner_key, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["purchased_seats"], 2);
    let (_, m) = app.get(&format!("/api/v1/members/{id}"), &org.owner_key).await;
    assert_eq!(m["status"], "suspended");
}

#[tokio::test]
async fn members_are_listed_by_filter_in_pages() {
    let app = TestApp::spawn().await;
    let org = app.org("Pages", 20).await;
    for i in 0..7 {
        add(&app, &org.owner_key, &format!("p{i}@example.com"), if i % 2 == 0 { "read" } else { "write" }).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/members?limit=3".to_string();
    loop {
        let (s, page) = app.get(&path, &org.owner_key).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 8);
        seen.extend(page["items"].as_array().unwrap().iter().map(|m| m["email"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/members?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8);
    assert_eq!(seen[0], "owner@pages.example.com");
    assert_eq!(seen[7], "p6@example.com");
    let (_, reads) = app.get("/api/v1/members?role=read", &org.owner_key).await;
    assert_eq!(reads["total"], 4);
    assert!(reads["items"].as_array().unwrap().iter().all(|m| m["role"] == "read"));
}

#[tokio::test]
async fn organization_settings_round_trip_and_tenant_ids_are_unique() {
    // Tenant IDs mean something only with a tenant connection (never called here).
    let tenant = crate::oidc_provider::tenant_connection("https://idp.example.com".into());
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| c.tenant_connection = Some(tenant),
        std::sync::Arc::new(roster::clock::SystemClock),
    )
    .await;
    let a = app.org("Alpha", 2).await;
    let b = app.org("Bravo", 2).await;
    let sso = json!({"tenant_id": "T2alpha", "enforce": true, "auto_assign": true, "default_role": "write"});
    let (s, body) = app.call(Method::PUT, "/api/v1/organization/sso", Some(&a.owner_key), Some(sso.clone())).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, sso);
    let (s, body) = app.call(Method::PUT, "/api/v1/organization/sso", Some(&b.owner_key), Some(sso)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let features = json!({"external_cloud": true, "analytics": false});
    let (s, body) =
        app.call(Method::PUT, "/api/v1/organization/features", Some(&a.owner_key), Some(features.clone())).await;
    assert_eq!((s, body), (StatusCode::OK, features));
    let (s, org) = app
        .call(
            Method::PATCH,
            "/api/v1/organization",
            Some(&a.owner_key),
            Some(json!({"name": "Alpha Inc", "plan": "enterprise_seat_monthly", "contact_email": "it@alpha.com"})),
        )
        .await;
    // The plan is sold by the operator: its change is a request; the rest is saved.
    assert_eq!(s, StatusCode::ACCEPTED, "{org}");
    assert_eq!((org["plan"].as_str(), org["status"].as_str()), (Some("enterprise_seat_monthly"), Some("pending")));
    let (_, got) = app.get("/api/v1/organization", &a.owner_key).await;
    assert_eq!(
        (got["name"].as_str(), got["plan"].as_str(), got["contact_email"].as_str()),
        (Some("Alpha Inc"), Some("enterprise_seat_yearly"), Some("it@alpha.com"))
    );
    assert_eq!(got["sso"]["tenant_id"], "T2alpha");
    assert_eq!(got["features"]["external_cloud"], true);
}

#[tokio::test]
async fn deleting_the_organization_revokes_its_keys_and_keeps_nothing_reachable() {
    let app = TestApp::spawn().await;
    let org = app.org("Doomed", 2).await;
    let admin = app.key(&org, roster::model::Role::Admin).await;
    let (s, _) = app.call(Method::DELETE, "/api/v1/organization", Some(&admin), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.call(Method::DELETE, "/api/v1/organization", Some(&org.owner_key), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get("/api/v1/organization", &org.owner_key).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sso_settings_change_in_part_and_never_leave_members_without_a_way_in() {
    // No tenant connection in this deployment, and no connection of the organization's own.
    let app = TestApp::spawn().await;
    let org = app.org("Partial", 2).await;
    let patch = |body: Value| app.call(Method::PATCH, "/api/v1/organization/sso", Some(&org.owner_key), Some(body));
    let (s, body) = patch(json!({"auto_assign": true})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"tenant_id": null, "enforce": false, "auto_assign": true, "default_role": "read"}));
    let (s, body) = patch(json!({"default_role": "write"})).await;
    assert_eq!(
        (s, body["auto_assign"].clone(), body["default_role"].clone()),
        (StatusCode::OK, json!(true), json!("write"))
    );

    let audit_before = app.audit(&org.owner_key).await.len();
    for (change, field) in [
        (json!({"tenant_id": "T2partial"}), "tenant_id"),
        (json!({"enforce": true}), "enforce"),
        (json!({"default_role": "owner"}), "default_role"),
    ] {
        let (s, problem) = patch(change.clone()).await;
        assert_problem(s, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(problem["field"], field, "{change}: {problem}");
    }
    let (s, problem) = patch(json!({"enforced": true})).await;
    assert_problem(s, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, problem) = app
        .call(
            Method::PUT,
            "/api/v1/organization/sso",
            Some(&org.owner_key),
            Some(json!({"tenant_id": null, "enforce": true, "auto_assign": true, "default_role": "write"})),
        )
        .await;
    assert_problem(s, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (_, now) = app.get("/api/v1/organization/sso", &org.owner_key).await;
    assert_eq!(now, json!({"tenant_id": null, "enforce": false, "auto_assign": true, "default_role": "write"}));
    assert_eq!(app.audit(&org.owner_key).await.len(), audit_before, "refused changes are not audited");
}
