//! Invitations, one by one and by CSV: all or nothing, per-line errors.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

async fn invitation_count(app: &TestApp, key: &str) -> usize {
    let (s, body) = app.get("/api/v1/invitations?limit=200", key).await;
    assert_eq!(s, StatusCode::OK);
    body["items"].as_array().expect("items").len()
}

#[tokio::test]
async fn csv_upload_creates_every_invitation_with_one_audit_record_each() {
    let app = TestApp::spawn().await;
    let org = app.org("Bulk", 10).await;
    let before = app.audit(&org.owner_key).await.len();
    let (s, body) = app
        .post_csv(&org.owner_key, "email,role\nada@example.com,admin\n\nbob@example.com, Read\ncy@example.com,write\n")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let created = body["created"].as_array().expect("created");
    assert_eq!(created.len(), 3);
    assert_eq!(created[1]["role"], "read");
    assert!(created.iter().all(|c| c["token"].as_str().is_some_and(|t| t.starts_with("roster_inv_"))));
    let audit = app.audit(&org.owner_key).await;
    assert_eq!(audit.len(), before + 3);
    assert!(audit[..3].iter().all(|e| e["action"] == "invitation.created"));
    assert_eq!(app.seats(&org.owner_key).await["pending_invitations"], 3);
}

#[tokio::test]
async fn csv_without_header_is_accepted() {
    let app = TestApp::spawn().await;
    let org = app.org("NoHeader", 10).await;
    let (s, body) = app.post_csv(&org.owner_key, "ada@example.com,admin\nbob@example.com,read").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(invitation_count(&app, &org.owner_key).await, 2);
}

#[tokio::test]
async fn a_bad_line_rejects_the_whole_upload() {
    let app = TestApp::spawn().await;
    let org = app.org("BadLine", 10).await;
    let before = app.audit(&org.owner_key).await.len();
    let (s, body) = app
        .post_csv(&org.owner_key, "email,role\nada@example.com,admin\nnot an email,read\ncy@example.com,superuser\n")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let lines: Vec<i64> =
        body["errors"].as_array().expect("errors").iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, vec![3, 4]);
    assert_eq!(invitation_count(&app, &org.owner_key).await, 0);
    assert_eq!(app.audit(&org.owner_key).await.len(), before);
}

#[tokio::test]
async fn a_duplicate_line_rejects_the_whole_upload() {
    let app = TestApp::spawn().await;
    let org = app.org("Dupes", 10).await;
    let (s, body) =
        app.post_csv(&org.owner_key, "ada@example.com,admin\nbob@example.com,read\nADA@example.com,read\n").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["line"], 3);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("line 1"), "{body}");
    assert_eq!(invitation_count(&app, &org.owner_key).await, 0);
}

#[tokio::test]
async fn an_already_invited_or_member_line_rejects_the_whole_upload() {
    let app = TestApp::spawn().await;
    let org = app.org("Known", 10).await;
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "inv@example.com", "role": "read"})).await;
    let (s, body) = app
        .post_csv(&org.owner_key, "new@example.com,read\nINV@example.com,read\nowner@known.example.com,read\n")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let lines: Vec<i64> = body["errors"].as_array().unwrap().iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, vec![2, 3], "{body}");
    assert_eq!(invitation_count(&app, &org.owner_key).await, 1);
}

#[tokio::test]
async fn too_few_seats_rejects_the_whole_upload() {
    let app = TestApp::spawn().await;
    let org = app.org("Tight", 3).await;
    let before = app.audit(&org.owner_key).await.len();
    let (s, body) = app.post_csv(&org.owner_key, "a@example.com,read\nb@example.com,read\nc@example.com,read\n").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body["type"].as_str().unwrap().ends_with("seat-limit-reached"));
    assert_eq!(body["purchased_seats"], 3);
    assert_eq!(body["used_seats"], 1);
    assert_eq!(invitation_count(&app, &org.owner_key).await, 0);
    assert_eq!(app.audit(&org.owner_key).await.len(), before);
}

#[tokio::test]
async fn revoking_frees_the_seat_and_a_second_invite_is_a_conflict() {
    let app = TestApp::spawn().await;
    let org = app.org("Revoke", 2).await;
    let (s, inv) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "x@example.com", "role": "write"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "X@Example.com", "role": "write"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.seats(&org.owner_key).await["available"], 0);
    let path = format!("/api/v1/invitations/{}", inv["id"].as_str().unwrap());
    let (s, body) = app.call(reqwest::Method::DELETE, &path, Some(&org.owner_key), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "revoked");
    assert_eq!(app.seats(&org.owner_key).await["available"], 1);
    let (s, _) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "x@example.com", "role": "write"})).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn adding_an_invited_person_as_member_uses_the_invitations_seat() {
    let app = TestApp::spawn().await;
    let org = app.org("OneSeat", 2).await;
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "x@example.com", "role": "write"})).await;
    let (s, body) =
        app.post("/api/v1/members", &org.owner_key, json!({"email": "x@example.com", "role": "write"})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let seats = app.seats(&org.owner_key).await;
    assert_eq!((seats["used"].as_i64(), seats["pending_invitations"].as_i64()), (Some(2), Some(0)));
    let (_, list) = app.get("/api/v1/invitations", &org.owner_key).await;
    assert_eq!(list["items"][0]["status"], "accepted");
}
