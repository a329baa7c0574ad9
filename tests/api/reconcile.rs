//! Seats and roles reconciliation over real HTTP: role mappings, roles
//! derived at each door (SCIM groups, SCIM `roles`), pinned manual roles,
//! the reconcile plan and its apply (role drift, seat cuts, fingerprints),
//! the background run under each enforcement, and invitation resend and
//! expiry.

use crate::helpers::*;
use crate::scim::{scim, scim_token, user};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use roster::clock::{Clock, ManualClock, SystemClock};
use roster::model::Role;
use serde_json::{json, Value};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The background run's interval in these tests.
const HOUR: Duration = Duration::from_secs(3600);

// ---- Helpers ----------------------------------------------------------------

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("not a time: {v}")).parse().expect("an RFC 3339 time")
}

/// An app whose clock stands still until the test moves it.
async fn app_on(clock: &ManualClock) -> TestApp {
    TestApp::spawn_with(TestDb::new().await, |c| c.background_jobs = false, Arc::new(clock.clone())).await
}

fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now())
}

/// Moves the clock on, so that what happens next is later: plans order
/// members by joining time and invitations by creation time.
fn later(clock: &ManualClock) {
    clock.advance(chrono::Duration::minutes(1));
}

/// Sets the organization's seats as the deployment's billing does.
async fn put_seats(app: &TestApp, org: &TestOrg, body: Value) -> Value {
    let (status, seats) = app.set_seats(org, body).await;
    assert_eq!(status, StatusCode::OK, "{seats}");
    seats
}

/// Adds an active member by the admin API; returns its id.
async fn add_member(app: &TestApp, key: &str, email: &str, role: &str) -> String {
    let (status, body) = app.post("/api/v1/members", key, json!({"email": email, "role": role})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    id_of(&body)
}

/// Invites `email`; returns the invitation with its token.
async fn invite(app: &TestApp, key: &str, email: &str, role: &str) -> Value {
    let (status, body) = app.post("/api/v1/invitations", key, json!({"email": email, "role": role})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn member(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, body) = app.get(&format!("/api/v1/members/{id}"), key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn member_by_email(app: &TestApp, key: &str, email: &str) -> Value {
    let (status, page) = app.get("/api/v1/members?limit=200", key).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(email)))
        .unwrap_or_else(|| panic!("no member {email} in {page}"))
        .clone()
}

async fn invitation(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, page) = app.get("/api/v1/invitations?limit=200", key).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no invitation {id} in {page}"))
        .clone()
}

async fn plan(app: &TestApp, key: &str) -> Value {
    let (status, plan) = app.get("/api/v1/reconcile/plan", key).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    plan
}

async fn apply(app: &TestApp, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    app.call(Method::POST, "/api/v1/reconcile/apply", Some(key), body).await
}

/// The plan's changes as (action, email) pairs, in plan order.
fn changes(plan: &Value) -> Vec<(String, String)> {
    plan["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes in {plan}"))
        .iter()
        .map(|c| (c["action"].as_str().unwrap().to_string(), c["email"].as_str().unwrap().to_string()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, e)| (a.to_string(), e.to_string())).collect()
}

/// The audit records with `action`, newest first.
async fn audited(app: &TestApp, key: &str, action: &str) -> Vec<Value> {
    app.audit(key).await.into_iter().filter(|e| e["action"] == action).collect()
}

async fn create_mapping(app: &TestApp, key: &str, source: &str, value: &str, role: &str) -> Value {
    let (status, body) =
        app.post("/api/v1/role-mappings", key, json!({"source": source, "value": value, "role": role})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Creates a SCIM User for `email` with `extra` attributes; returns its SCIM id.
async fn scim_user(app: &TestApp, token: &str, email: &str, extra: Value) -> String {
    let mut body = user(email);
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    let (status, _, created) = scim(app, token, Method::POST, "/Users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    id_of(&created)
}

/// Creates a SCIM Group; returns its SCIM id.
async fn scim_group(app: &TestApp, token: &str, display: &str, external_id: Option<&str>, users: &[&str]) -> String {
    let mut body = json!({
        "schemas": [GROUP],
        "displayName": display,
        "members": users.iter().map(|u| json!({"value": u})).collect::<Vec<_>>(),
    });
    if let Some(ext) = external_id {
        body["externalId"] = json!(ext);
    }
    let (status, _, created) = scim(app, token, Method::POST, "/Groups", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    id_of(&created)
}

/// Adds (`op` = "add") or removes (`op` = "remove") one user of a SCIM Group.
async fn group_member(app: &TestApp, token: &str, group: &str, op: &str, user: &str) {
    let patch =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": op, "path": "members", "value": [{"value": user}]}]});
    let (status, _, body) = scim(app, token, Method::PATCH, &format!("/Groups/{group}"), Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The role, its source and its reason, as the admin API shows them.
fn role_of(m: &Value) -> (String, Value, String) {
    (m["role"].as_str().unwrap().to_string(), m["role_source"].clone(), m["role_reason"].as_str().unwrap().to_string())
}

fn role(role: &str, source: Value, reason: &str) -> (String, Value, String) {
    (role.to_string(), source, reason.to_string())
}

/// The token hash Roster keeps for an invitation (no route reads it).
async fn stored_token_hash(app: &TestApp, invitation: &str) -> String {
    let sql = "SELECT token_hash FROM invitations WHERE id = $1";
    let (hash,): (String,) = if app.db_url().starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(app.db_url()).await.expect("connect");
        sqlx::query_as(sql).bind(invitation).fetch_one(&mut conn).await.expect("the invitation row")
    } else {
        let mut conn = sqlx::SqliteConnection::connect(app.db_url()).await.expect("connect");
        sqlx::query_as(sql).bind(invitation).fetch_one(&mut conn).await.expect("the invitation row")
    };
    hash
}

// ---- Role mappings ------------------------------------------------------------

#[tokio::test]
async fn role_mappings_are_created_listed_and_deleted_and_bad_ones_refused() {
    let app = TestApp::spawn().await;
    let org = app.org("Mappings", 5).await;
    let key = app.key(&org, Role::Admin).await;
    let (status, list) = app.get("/api/v1/role-mappings", &key).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));

    let admins = create_mapping(&app, &key, "group", "  eng-admins ", "admin").await;
    assert_eq!(admins["source"], "group");
    assert_eq!(admins["value"], "eng-admins", "the value is trimmed");
    assert_eq!(admins["role"], "admin");
    assert_eq!(admins["org_id"], org.id.to_string());
    assert!(admins["created_by"].as_str().is_some_and(|c| !c.is_empty()), "{admins}");
    assert!(admins["created_at"].is_string(), "{admins}");
    // The same name under the other source is another mapping.
    let writers = create_mapping(&app, &key, "idp_role", "ENG-ADMINS", "write").await;
    let longest = "x".repeat(256);
    let longest = create_mapping(&app, &key, "idp_role", &longest, "read").await;

    let bad: Vec<(Value, StatusCode, &str, Option<&str>)> = vec![
        (
            json!({"source": "group", "value": "owners", "role": "owner"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            Some("role"),
        ),
        (
            json!({"source": "group", "value": "", "role": "read"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            Some("value"),
        ),
        (
            json!({"source": "group", "value": "   ", "role": "read"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            Some("value"),
        ),
        (
            json!({"source": "group", "value": "x".repeat(257), "role": "read"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            Some("value"),
        ),
        (json!({"source": "group", "value": "Eng-Admins", "role": "read"}), StatusCode::CONFLICT, "conflict", None),
        (
            json!({"source": "group", "value": "new", "role": "read", "priority": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            None,
        ),
        (
            json!({"source": "team", "value": "new", "role": "read"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            None,
        ),
        (
            json!({"source": "group", "value": "new", "role": "boss"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            None,
        ),
        (json!({"source": "group", "role": "read"}), StatusCode::UNPROCESSABLE_ENTITY, "validation", None),
    ];
    let audit_before = app.audit(&org.owner_key).await.len();
    for (body, expected, kind, field) in bad {
        let (status, problem) = app.post("/api/v1/role-mappings", &key, body.clone()).await;
        assert_problem(status, &problem, expected, kind);
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{body}: {problem}");
        }
    }
    assert_eq!(app.audit(&org.owner_key).await.len(), audit_before, "a refused mapping was audited");

    let (status, list) = app.get("/api/v1/role-mappings", &key).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let mut ids: Vec<String> = list.as_array().unwrap().iter().map(id_of).collect();
    ids.sort();
    let mut expected = vec![id_of(&admins), id_of(&writers), id_of(&longest)];
    expected.sort();
    assert_eq!(ids, expected);
    // A Read key sees them too.
    let reader = app.key(&org, Role::Read).await;
    let (status, seen) = app.get("/api/v1/role-mappings", &reader).await;
    assert_eq!((status, seen.as_array().map(Vec::len)), (StatusCode::OK, Some(3)), "{seen}");

    let path = format!("/api/v1/role-mappings/{}", id_of(&admins));
    let (status, gone) = app.call(Method::DELETE, &path, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    assert_eq!(gone, admins);
    let (status, problem) = app.call(Method::DELETE, &path, Some(&key), None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let unknown = format!("/api/v1/role-mappings/{}", uuid::Uuid::new_v4());
    let (status, problem) = app.call(Method::DELETE, &unknown, Some(&key), None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, problem) = app.call(Method::DELETE, "/api/v1/role-mappings/not-an-id", Some(&key), None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (_, list) = app.get("/api/v1/role-mappings", &key).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    // Once deleted, the name can be mapped again.
    create_mapping(&app, &key, "group", "ENG-admins", "write").await;

    let actions: Vec<String> =
        app.audit(&org.owner_key).await.iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions.iter().filter(|a| *a == "role_mapping.created").count(), 4, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "role_mapping.deleted").count(), 1, "{actions:?}");
}

// ---- Roles derived at the doors -------------------------------------------------

#[tokio::test]
async fn scim_group_membership_decides_the_role_at_once() {
    let app = TestApp::spawn().await;
    let org = app.org("Grouped", 10).await;
    let key = org.owner_key.clone();
    let token = scim_token(&app, &org).await;
    // Matched case-insensitively, by displayName or by externalId.
    create_mapping(&app, &key, "group", "ENG-Admins", "admin").await;
    create_mapping(&app, &key, "group", "ext-ops-7", "write").await;

    let ada_user = scim_user(&app, &token, "ada@grouped.com", json!({})).await;
    let bob_user = scim_user(&app, &token, "bob@grouped.com", json!({})).await;
    let ada = id_of(&member_by_email(&app, &key, "ada@grouped.com").await);
    let bob = id_of(&member_by_email(&app, &key, "bob@grouped.com").await);
    let m = member(&app, &key, &ada).await;
    assert_eq!(role_of(&m), role("read", json!({"kind": "default"}), "Read, the organization's default role"));
    assert_eq!((m["manual_role"].clone(), m["role_pinned"].clone()), (Value::Null, json!(false)), "{m}");
    assert_eq!(m["source"], "scim");

    let admins = scim_group(&app, &token, "eng-admins", None, &[&ada_user]).await;
    let admin_of_eng = role("admin", json!({"kind": "group", "name": "eng-admins"}), "Admin, from group eng-admins");
    assert_eq!(role_of(&member(&app, &key, &ada).await), admin_of_eng);

    let ops = scim_group(&app, &token, "Operations", Some("EXT-OPS-7"), &[&bob_user]).await;
    let write_of_ops = role("write", json!({"kind": "group", "name": "Operations"}), "Write, from group Operations");
    assert_eq!(role_of(&member(&app, &key, &bob).await), write_of_ops);

    // The highest mapped role wins.
    group_member(&app, &token, &admins, "add", &bob_user).await;
    assert_eq!(role_of(&member(&app, &key, &bob).await), admin_of_eng);

    // Out of the group: back to what is left.
    group_member(&app, &token, &admins, "remove", &ada_user).await;
    let default_read = role("read", json!({"kind": "default"}), "Read, the organization's default role");
    assert_eq!(role_of(&member(&app, &key, &ada).await), default_read);
    group_member(&app, &token, &admins, "remove", &bob_user).await;
    assert_eq!(role_of(&member(&app, &key, &bob).await), write_of_ops);
    // A deleted group decides nothing any more.
    let (status, _, body) = scim(&app, &token, Method::DELETE, &format!("/Groups/{ops}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(role_of(&member(&app, &key, &bob).await), default_read);

    // Each change was audited, and nothing is left for the reconciler.
    let changed = audited(&app, &key, "member.role_changed").await;
    assert_eq!(changed.len(), 6, "{changed:?}");
    let last = &changed[0];
    assert_eq!((last["target"].as_str(), last["after"]["role"].as_str()), (Some(bob.as_str()), Some("read")), "{last}");
    assert_eq!(last["before"]["role"], "write", "{last}");
    let p = plan(&app, &key).await;
    assert_eq!(p["changes"], json!([]), "{p}");
}

#[tokio::test]
async fn entra_scim_roles_derive_the_role() {
    let app = TestApp::spawn().await;
    let org = app.org("Entra", 10).await;
    let key = org.owner_key.clone();
    let token = scim_token(&app, &org).await;
    let entra_admin =
        json!({"roles": [{"primary": false, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]});
    let uid = scim_user(&app, &token, "eve@entra.com", entra_admin).await;
    let eve = id_of(&member_by_email(&app, &key, "eve@entra.com").await);
    let m = member(&app, &key, &eve).await;
    assert_eq!(
        role_of(&m),
        role("admin", json!({"kind": "scim_role", "value": "Admin"}), "Admin, from SCIM role Admin"),
        "{m}"
    );
    assert_eq!(m["role_pinned"], false, "{m}");

    // A value nobody mapped and that names no role decides nothing; a mapped one does.
    create_mapping(&app, &key, "idp_role", "writer", "write").await;
    let patch = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "roles", "value": [{"value": "Viewer"}, {"value": "Writer"}]}
    ]});
    let (status, _, body) = scim(&app, &token, Method::PATCH, &format!("/Users/{uid}"), Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        role_of(&member(&app, &key, &eve).await),
        role("write", json!({"kind": "scim_role", "value": "Writer"}), "Write, from SCIM role Writer")
    );

    // No roles any more: the default role.
    let patch = json!({"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "roles"}]});
    let (status, _, body) = scim(&app, &token, Method::PATCH, &format!("/Users/{uid}"), Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        role_of(&member(&app, &key, &eve).await),
        role("read", json!({"kind": "default"}), "Read, the organization's default role")
    );
    assert_eq!(audited(&app, &key, "member.role_changed").await.len(), 3);

    // A PUT that brings roles back re-derives too.
    let mut replaced = user("eve@entra.com");
    replaced["roles"] = json!([{"value": "write"}]);
    let (status, _, body) = scim(&app, &token, Method::PUT, &format!("/Users/{uid}"), Some(replaced)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        role_of(&member(&app, &key, &eve).await),
        role("write", json!({"kind": "scim_role", "value": "write"}), "Write, from SCIM role write")
    );
    assert_eq!(audited(&app, &key, "member.role_changed").await.len(), 4);
}

#[tokio::test]
async fn renaming_a_mapped_group_re_derives_all_its_members() {
    let app = TestApp::spawn().await;
    let org = app.org("Renamed", 10).await;
    let key = org.owner_key.clone();
    let token = scim_token(&app, &org).await;
    create_mapping(&app, &key, "group", "eng-admins", "admin").await;
    let u1 = scim_user(&app, &token, "u1@renamed.com", json!({})).await;
    let u2 = scim_user(&app, &token, "u2@renamed.com", json!({})).await;
    let group = scim_group(&app, &token, "engineering", None, &[&u1, &u2]).await;
    let ids = [
        id_of(&member_by_email(&app, &key, "u1@renamed.com").await),
        id_of(&member_by_email(&app, &key, "u2@renamed.com").await),
    ];
    let default_read = role("read", json!({"kind": "default"}), "Read, the organization's default role");
    for id in &ids {
        assert_eq!(role_of(&member(&app, &key, id).await), default_read);
    }
    let rename =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "eng-admins"}]});
    let (status, _, body) = scim(&app, &token, Method::PATCH, &format!("/Groups/{group}"), Some(rename)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let admin_of_eng = role("admin", json!({"kind": "group", "name": "eng-admins"}), "Admin, from group eng-admins");
    for id in &ids {
        assert_eq!(role_of(&member(&app, &key, id).await), admin_of_eng);
    }
    let put = json!({"schemas": [GROUP], "displayName": "former-admins", "members": [{"value": u1}, {"value": u2}]});
    let (status, _, body) = scim(&app, &token, Method::PUT, &format!("/Groups/{group}"), Some(put)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for id in &ids {
        assert_eq!(role_of(&member(&app, &key, id).await), default_read);
    }
    assert_eq!(plan(&app, &key).await["changes"], json!([]));
}

#[tokio::test]
async fn a_default_role_change_is_drift_the_plan_shows() {
    let app = TestApp::spawn().await;
    let org = app.org("Defaults", 10).await;
    let key = org.owner_key.clone();
    let token = scim_token(&app, &org).await;
    scim_user(&app, &token, "idp@defaults.com", json!({})).await;
    let pinned = add_member(&app, &key, "pinned@defaults.com", "read").await;
    let idp = id_of(&member_by_email(&app, &key, "idp@defaults.com").await);
    let sso = json!({"tenant_id": null, "enforce": false, "auto_assign": false, "default_role": "write"});
    let (status, body) = app.call(Method::PUT, "/api/v1/organization/sso", Some(&key), Some(sso)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(member(&app, &key, &idp).await["role"], "read");

    let p = plan(&app, &key).await;
    assert_eq!(changes(&p), pairs(&[("change_role", "idp@defaults.com")]), "{p}");
    let change = &p["changes"][0];
    assert_eq!((change["from"].as_str(), change["to"].as_str()), (Some("read"), Some("write")), "{change}");
    assert_eq!(change["source"], json!({"kind": "default"}));
    assert!(change["reason"].as_str().unwrap().contains("Write, the organization's default role"), "{change}");
    let (status, outcome) = apply(&app, &key, None).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(
        role_of(&member(&app, &key, &idp).await),
        role("write", json!({"kind": "default"}), "Write, the organization's default role")
    );
    // The admin's pinned choice is not drift.
    assert_eq!(
        role_of(&member(&app, &key, &pinned).await),
        role("read", json!({"kind": "manual"}), "Read, assigned by an admin")
    );
    assert_eq!(plan(&app, &key).await["changes"], json!([]));
}

#[tokio::test]
async fn a_manual_role_is_pinned_until_handed_back_to_the_identity_provider() {
    let app = TestApp::spawn().await;
    let org = app.org("Pinned", 10).await;
    let key = org.owner_key.clone();
    let token = scim_token(&app, &org).await;
    create_mapping(&app, &key, "group", "eng-admins", "admin").await;
    let uid = scim_user(&app, &token, "cy@pinned.com", json!({})).await;
    let group = scim_group(&app, &token, "eng-admins", None, &[&uid]).await;
    let cy = id_of(&member_by_email(&app, &key, "cy@pinned.com").await);
    let admin_of_eng = role("admin", json!({"kind": "group", "name": "eng-admins"}), "Admin, from group eng-admins");
    assert_eq!(role_of(&member(&app, &key, &cy).await), admin_of_eng);

    let path = format!("/api/v1/members/{cy}");
    let (status, m) = app.call(Method::PATCH, &path, Some(&key), Some(json!({"role": "read"}))).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let manual_read = role("read", json!({"kind": "manual"}), "Read, assigned by an admin");
    assert_eq!(role_of(&m), manual_read);
    assert_eq!((m["manual_role"].clone(), m["role_pinned"].clone()), (json!("read"), json!(true)), "{m}");

    // The group no longer changes it: out and back in.
    group_member(&app, &token, &group, "remove", &uid).await;
    group_member(&app, &token, &group, "add", &uid).await;
    assert_eq!(role_of(&member(&app, &key, &cy).await), manual_read);
    assert_eq!(plan(&app, &key).await["changes"], json!([]));

    // Handed back: the group decides again, the manual role is the fallback.
    let (status, m) = app.call(Method::PATCH, &path, Some(&key), Some(json!({"role_managed_by": "idp"}))).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(role_of(&m), admin_of_eng);
    assert_eq!((m["manual_role"].clone(), m["role_pinned"].clone()), (json!("read"), json!(false)), "{m}");
    group_member(&app, &token, &group, "remove", &uid).await;
    assert_eq!(role_of(&member(&app, &key, &cy).await), manual_read);
    group_member(&app, &token, &group, "add", &uid).await;
    assert_eq!(role_of(&member(&app, &key, &cy).await), admin_of_eng);

    // Naming neither, or anything else, is refused and changes nothing.
    let before = member(&app, &key, &cy).await;
    for body in [
        json!({}),
        json!({"role": "write", "pinned": true}),
        json!({"role_managed_by": "scim"}),
        json!({"role": "boss"}),
        json!({"role": null}),
        json!({"role": "write", "role_managed_by": null}),
        json!([null, null]),
    ] {
        let (status, problem) = app.call(Method::PATCH, &path, Some(&key), Some(body.clone())).await;
        assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    }
    assert_eq!(member(&app, &key, &cy).await, before);
}

// ---- Role drift and the plan ----------------------------------------------------

#[tokio::test]
async fn a_mapping_made_later_changes_roles_only_when_the_plan_is_applied() {
    let app = TestApp::spawn().await;
    let org = app.org("Later", 10).await;
    let key = app.key(&org, Role::Admin).await;
    let token = scim_token(&app, &org).await;
    let dee_user = scim_user(&app, &token, "dee@later.com", json!({})).await;
    scim_user(&app, &token, "fay@later.com", json!({})).await;
    // No group mapping yet: the group decides nothing.
    scim_group(&app, &token, "support", None, &[&dee_user]).await;
    let dee = id_of(&member_by_email(&app, &key, "dee@later.com").await);
    let default_read = role("read", json!({"kind": "default"}), "Read, the organization's default role");
    assert_eq!(role_of(&member(&app, &key, &dee).await), default_read);

    let mapping = create_mapping(&app, &key, "group", "Support", "write").await;
    assert_eq!(role_of(&member(&app, &key, &dee).await), default_read, "a new mapping changed a member at once");
    assert!(audited(&app, &org.owner_key, "member.role_changed").await.is_empty());

    let p = plan(&app, &key).await;
    assert_eq!(p["organization"], org.id.to_string());
    assert_eq!(changes(&p), pairs(&[("change_role", "dee@later.com")]), "{p}");
    let change = &p["changes"][0];
    assert_eq!(change["member"], dee.as_str());
    assert_eq!((change["from"].as_str(), change["to"].as_str()), (Some("read"), Some("write")), "{change}");
    assert_eq!(change["source"], json!({"kind": "group", "name": "support"}));
    let reason = change["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("Write, from group support"), "{reason}");
    assert!(p["fingerprint"].as_str().is_some_and(|f| !f.is_empty()), "{p}");
    // Reading the plan changes nothing, and the same state gives the same plan.
    let again = plan(&app, &key).await;
    assert_eq!((&again["changes"], &again["fingerprint"]), (&p["changes"], &p["fingerprint"]));

    let (status, outcome) = apply(&app, &key, None).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["left"], 0);
    assert_eq!(outcome["applied"]["changes"], p["changes"]);
    assert_eq!(outcome["applied"]["fingerprint"], p["fingerprint"]);
    assert_eq!(
        role_of(&member(&app, &key, &dee).await),
        role("write", json!({"kind": "group", "name": "support"}), "Write, from group support")
    );
    let changed = audited(&app, &org.owner_key, "member.role_changed").await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["target"], dee.as_str());
    assert_eq!(changed[0]["before"]["role"], "read");
    assert_eq!(changed[0]["after"]["role"], "write");
    assert_eq!(changed[0]["after"]["reconcile_reason"], reason.as_str());
    let applied = audited(&app, &org.owner_key, "reconcile.applied").await;
    assert_eq!(applied.len(), 1, "{applied:?}");
    let p = plan(&app, &key).await;
    assert_eq!((p["changes"].clone(), p["kept"].clone()), (json!([]), json!([])), "{p}");

    // Deleting the mapping is drift the other way.
    let (status, body) =
        app.call(Method::DELETE, &format!("/api/v1/role-mappings/{}", id_of(&mapping)), Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(member(&app, &key, &dee).await["role"], "write");
    let p = plan(&app, &key).await;
    assert_eq!(changes(&p), pairs(&[("change_role", "dee@later.com")]), "{p}");
    assert_eq!(
        (p["changes"][0]["to"].as_str(), &p["changes"][0]["source"]),
        (Some("read"), &json!({"kind": "default"}))
    );
    let (status, outcome) = apply(&app, &key, Some(json!({"fingerprint": p["fingerprint"]}))).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(role_of(&member(&app, &key, &dee).await), default_read);
    assert_eq!(plan(&app, &key).await["changes"], json!([]));
}

// ---- Seats --------------------------------------------------------------------

#[tokio::test]
async fn lowering_purchased_seats_plans_cuts_in_order_and_apply_brings_usage_under() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Cuts", 5).await;
    let key = org.owner_key.clone();
    // Joined in this order; the Admin joins last.
    later(&clock);
    let read = add_member(&app, &key, "read@cuts.com", "read").await;
    later(&clock);
    let write = add_member(&app, &key, "write@cuts.com", "write").await;
    later(&clock);
    let admin = add_member(&app, &key, "admin@cuts.com", "admin").await;
    later(&clock);
    let inv = id_of(&invite(&app, &key, "invitee@cuts.com", "read").await);
    assert_eq!(app.seats(&key).await["used"], 5);

    // Lowering cuts nobody by itself.
    let seats = put_seats(&app, &org, json!({"purchased": 2})).await;
    assert_eq!((seats["used"].as_i64(), seats["overage"].as_i64()), (Some(5), Some(3)), "{seats}");
    assert_eq!(member(&app, &key, &write).await["status"], "active");

    let p = plan(&app, &key).await;
    assert_eq!(
        p["seats"],
        json!({"purchased": 2, "policy": "strict", "enforcement": "manual", "used": 5, "used_after": 2, "overage_after": 0})
    );
    // The pending invitation first, then Read and Write members before the
    // Admin, the most recently joined first; never the Owner.
    assert_eq!(
        changes(&p),
        pairs(&[
            ("revoke_invitation", "invitee@cuts.com"),
            ("suspend_member", "write@cuts.com"),
            ("suspend_member", "read@cuts.com"),
        ]),
        "{p}"
    );
    assert_eq!(p["changes"][0]["invitation"], inv.as_str());
    assert_eq!(
        (p["changes"][1]["member"].as_str(), p["changes"][1]["role"].as_str()),
        (Some(write.as_str()), Some("write"))
    );
    assert_eq!(
        (p["changes"][2]["member"].as_str(), p["changes"][2]["role"].as_str()),
        (Some(read.as_str()), Some("read"))
    );
    for c in p["changes"].as_array().unwrap() {
        assert!(c["reason"].as_str().is_some_and(|r| r.contains("seat")), "{c}");
    }
    assert_eq!(p["kept"], json!([]));

    let (status, outcome) = apply(&app, &key, Some(json!({"fingerprint": p["fingerprint"]}))).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["applied"]["changes"], p["changes"]);
    let seats = app.seats(&key).await;
    assert!(seats["used"].as_i64() <= seats["purchased"].as_i64(), "{seats}");
    assert_eq!((seats["used"].as_i64(), seats["overage"].as_i64()), (Some(2), Some(0)), "{seats}");
    assert_eq!(member(&app, &key, &write).await["status"], "suspended");
    assert_eq!(member(&app, &key, &read).await["status"], "suspended");
    let kept = member(&app, &key, &admin).await;
    assert_eq!((kept["status"].as_str(), kept["role"].as_str()), (Some("active"), Some("admin")));
    assert_eq!(member(&app, &key, &org.owner_member.to_string()).await["status"], "active");
    assert_eq!(invitation(&app, &key, &inv).await["status"], "revoked");

    let revoked = audited(&app, &key, "invitation.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["after"]["reconcile_reason"], p["changes"][0]["reason"]);
    let suspended = audited(&app, &key, "member.suspended").await;
    assert_eq!(suspended.len(), 2);
    assert!(suspended.iter().all(|e| e["after"]["reconcile_reason"].as_str().is_some_and(|r| r.contains("seat"))));
    assert_eq!(audited(&app, &key, "reconcile.applied").await.len(), 1);

    let p = plan(&app, &key).await;
    assert_eq!(p["changes"], json!([]), "{p}");
    assert_eq!((p["seats"]["used"].as_i64(), p["seats"]["used_after"].as_i64()), (Some(2), Some(2)));
}

#[tokio::test]
async fn the_newest_invitations_go_first_and_owners_are_never_cut() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Newest", 5).await;
    let key = org.owner_key.clone();
    add_member(&app, &key, "w@newest.com", "write").await;
    for who in ["i1", "i2", "i3"] {
        later(&clock);
        invite(&app, &key, &format!("{who}@newest.com"), "read").await;
    }
    put_seats(&app, &org, json!({"purchased": 3})).await;
    let p = plan(&app, &key).await;
    assert_eq!(changes(&p), pairs(&[("revoke_invitation", "i3@newest.com"), ("revoke_invitation", "i2@newest.com")]));
    assert_eq!(p["seats"]["used_after"], 3);

    // With no seat at all, everyone but the Owner goes; the Owner's seat is kept and said so.
    put_seats(&app, &org, json!({"purchased": 0})).await;
    let p = plan(&app, &key).await;
    assert_eq!(
        changes(&p),
        pairs(&[
            ("revoke_invitation", "i3@newest.com"),
            ("revoke_invitation", "i2@newest.com"),
            ("revoke_invitation", "i1@newest.com"),
            ("suspend_member", "w@newest.com"),
        ]),
        "{p}"
    );
    assert_eq!((p["seats"]["used_after"].as_i64(), p["seats"]["overage_after"].as_i64()), (Some(1), Some(1)));
    let kept = p["kept"].as_array().expect("kept");
    assert_eq!(kept.len(), 1, "{p}");
    assert!(kept[0].as_str().unwrap().contains("Owner"), "{p}");
    let (status, outcome) = apply(&app, &key, None).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(member(&app, &key, &org.owner_member.to_string()).await["status"], "active");
    let seats = app.seats(&key).await;
    assert_eq!((seats["used"].as_i64(), seats["overage"].as_i64()), (Some(1), Some(1)), "{seats}");
    assert_eq!(plan(&app, &key).await["changes"], json!([]));
}

#[tokio::test]
async fn under_the_overage_policy_the_plan_cuts_nobody() {
    let app = TestApp::spawn().await;
    let org = app.org("Elastic", 5).await;
    let key = org.owner_key.clone();
    add_member(&app, &key, "r@elastic.com", "read").await;
    add_member(&app, &key, "w@elastic.com", "write").await;
    invite(&app, &key, "i@elastic.com", "read").await;
    let seats = put_seats(&app, &org, json!({"purchased": 2, "policy": "overage"})).await;
    assert_eq!((seats["policy"].as_str(), seats["overage"].as_i64()), (Some("overage"), Some(2)), "{seats}");
    let p = plan(&app, &key).await;
    assert_eq!(p["changes"], json!([]), "{p}");
    assert_eq!(
        p["seats"],
        json!({"purchased": 2, "policy": "overage", "enforcement": "manual", "used": 4, "used_after": 4, "overage_after": 2})
    );
    let audit_before = app.audit(&key).await.len();
    let (status, outcome) = apply(&app, &key, None).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["applied"]["changes"], json!([]));
    assert_eq!(app.audit(&key).await.len(), audit_before, "an empty apply wrote audit records");
    let seats = app.seats(&key).await;
    assert_eq!((seats["used"].as_i64(), seats["overage"].as_i64()), (Some(4), Some(2)), "{seats}");
}

#[tokio::test]
async fn apply_with_a_stale_fingerprint_is_refused_and_changes_nothing() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Stale", 4).await;
    let key = org.owner_key.clone();
    add_member(&app, &key, "r@stale.com", "read").await;
    later(&clock);
    let w = add_member(&app, &key, "w@stale.com", "write").await;
    let inv = id_of(&invite(&app, &key, "i@stale.com", "read").await);
    put_seats(&app, &org, json!({"purchased": 2})).await;
    let read = plan(&app, &key).await;
    assert_eq!(changes(&read), pairs(&[("revoke_invitation", "i@stale.com"), ("suspend_member", "w@stale.com")]));
    let stale = read["fingerprint"].as_str().unwrap().to_string();

    // Something changes between reading the plan and applying it.
    let (status, body) = app.post(&format!("/api/v1/members/{w}/suspend"), &key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let current = plan(&app, &key).await;
    assert_eq!(changes(&current), pairs(&[("revoke_invitation", "i@stale.com")]));
    assert_ne!(current["fingerprint"], stale.as_str());

    let seats = app.seats(&key).await;
    let (_, members) = app.get("/api/v1/members?limit=200", &key).await;
    let audit = app.audit(&key).await.len();
    let (status, problem) = apply(&app, &key, Some(json!({"fingerprint": stale}))).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    for bad in [json!({"fingerprint": current["fingerprint"], "force": true}), json!({"fingerprint": 7}), json!([1])] {
        let (status, problem) = apply(&app, &key, Some(bad)).await;
        assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    }
    assert_eq!(app.seats(&key).await, seats);
    assert_eq!(app.get("/api/v1/members?limit=200", &key).await.1, members);
    assert_eq!(invitation(&app, &key, &inv).await["status"], "pending");
    assert_eq!(app.audit(&key).await.len(), audit, "a refused apply was audited");

    let (status, outcome) = apply(&app, &key, Some(json!({"fingerprint": current["fingerprint"]}))).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["applied"]["fingerprint"], current["fingerprint"]);
    assert_eq!(invitation(&app, &key, &inv).await["status"], "revoked");
    assert_eq!(app.seats(&key).await["used"], 2);
}

// ---- The background run ---------------------------------------------------------

#[tokio::test]
async fn automatic_enforcement_lets_the_background_run_apply_seat_cuts() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Auto", 4).await;
    let key = org.owner_key.clone();
    let r = add_member(&app, &key, "r@auto.com", "read").await;
    later(&clock);
    add_member(&app, &key, "w@auto.com", "write").await;
    let inv = id_of(&invite(&app, &key, "i@auto.com", "read").await);
    let seats = put_seats(&app, &org, json!({"purchased": 2, "enforcement": "automatic"})).await;
    assert_eq!(seats["enforcement"], "automatic");
    assert_eq!(seats["used"], 4, "lowering the seats cut somebody by itself");

    let run = roster::jobs::reconcile_tick(&app.roster, "replica-a", HOUR).await.unwrap().expect("a run is due");
    assert_eq!((run.job.as_str(), run.holder.as_str()), ("reconcile", "replica-a"));
    assert_eq!(run.summary, Some(json!({"applied": 2, "left_for_admins": 0})));
    let seats = app.seats(&key).await;
    assert_eq!((seats["used"].as_i64(), seats["overage"].as_i64()), (Some(2), Some(0)), "{seats}");
    assert_eq!(invitation(&app, &key, &inv).await["status"], "revoked");
    assert_eq!(member(&app, &key, &r).await["status"], "active");
    assert_eq!(member_by_email(&app, &key, "w@auto.com").await["status"], "suspended");
    let suspended = audited(&app, &key, "member.suspended").await;
    assert_eq!(suspended.len(), 1);
    assert_eq!(
        (suspended[0]["actor_kind"].as_str(), suspended[0]["actor_id"].as_str()),
        (Some("system"), Some("reconciler:replica-a"))
    );
    assert!(suspended[0]["after"]["reconcile_reason"].is_string(), "{}", suspended[0]);
    assert_eq!(plan(&app, &key).await["changes"], json!([]));

    // Once per interval, whichever replica asks.
    assert!(roster::jobs::reconcile_tick(&app.roster, "replica-a", HOUR).await.unwrap().is_none());
    assert!(roster::jobs::reconcile_tick(&app.roster, "replica-b", HOUR).await.unwrap().is_none());
    let runs = app.roster.store().read().await.unwrap().list_job_runs("reconcile", 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0], run);
}

#[tokio::test]
async fn manual_enforcement_leaves_seat_cuts_to_an_admin_but_expires_invitations() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Manual", 5).await;
    let key = org.owner_key.clone();
    let lapsed = invite(&app, &key, "lapsed@manual.com", "read").await;
    clock.advance(chrono::Duration::days(15));
    add_member(&app, &key, "w@manual.com", "write").await;
    later(&clock);
    let r = add_member(&app, &key, "r@manual.com", "read").await;
    later(&clock);
    let inv = id_of(&invite(&app, &key, "i@manual.com", "read").await);
    let seats = put_seats(&app, &org, json!({"purchased": 2})).await;
    assert_eq!((seats["used"].as_i64(), seats["enforcement"].as_str()), (Some(4), Some("manual")), "{seats}");
    let p = plan(&app, &key).await;
    assert_eq!(
        changes(&p),
        pairs(&[
            ("expire_invitation", "lapsed@manual.com"),
            ("revoke_invitation", "i@manual.com"),
            ("suspend_member", "r@manual.com"),
        ]),
        "{p}"
    );
    assert_eq!(time(&p["changes"][0]["expired_at"]), time(&lapsed["expires_at"]));

    let run = roster::jobs::reconcile_tick(&app.roster, "replica-a", HOUR).await.unwrap().expect("a run is due");
    assert_eq!(run.summary, Some(json!({"applied": 1, "left_for_admins": 2})));
    let expired = audited(&app, &key, "invitation.expired").await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["target"], id_of(&lapsed).as_str());
    assert_eq!(expired[0]["after"]["status"], "expired");
    assert_eq!(expired[0]["actor_id"], "reconciler:replica-a");
    assert!(expired[0]["after"]["reconcile_reason"].is_string(), "{}", expired[0]);
    // The cuts wait for an admin, and the plan still lists them.
    assert!(audited(&app, &key, "member.suspended").await.is_empty());
    assert!(audited(&app, &key, "invitation.revoked").await.is_empty());
    assert_eq!(member(&app, &key, &r).await["status"], "active");
    assert_eq!(invitation(&app, &key, &inv).await["status"], "pending");
    assert_eq!(app.seats(&key).await["used"], 4);
    let p = plan(&app, &key).await;
    assert_eq!(changes(&p), pairs(&[("revoke_invitation", "i@manual.com"), ("suspend_member", "r@manual.com")]));

    // Not due again within the interval, for any replica; due again after it.
    assert!(roster::jobs::reconcile_tick(&app.roster, "replica-a", HOUR).await.unwrap().is_none());
    assert!(roster::jobs::reconcile_tick(&app.roster, "replica-b", HOUR).await.unwrap().is_none());
    clock.advance(chrono::Duration::minutes(61));
    let next = roster::jobs::reconcile_tick(&app.roster, "replica-b", HOUR).await.unwrap().expect("due again");
    assert_eq!(next.summary, Some(json!({"applied": 0, "left_for_admins": 2})));
    assert!(roster::jobs::reconcile_tick(&app.roster, "replica-a", HOUR).await.unwrap().is_none());
    let holders: Vec<String> = app
        .roster
        .store()
        .read()
        .await
        .unwrap()
        .list_job_runs("reconcile", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.holder)
        .collect();
    assert_eq!(holders, vec!["replica-b".to_string(), "replica-a".to_string()]);
}

// ---- Invitations ----------------------------------------------------------------

#[tokio::test]
async fn resending_gives_a_new_token_and_a_later_expiry() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Resend", 5).await;
    let key = app.key(&org, Role::Admin).await;
    let first = invite(&app, &key, "x@resend.com", "write").await;
    let id = id_of(&first);
    let old_token = first["token"].as_str().unwrap().to_string();
    assert_eq!(stored_token_hash(&app, &id).await, roster::secrets::hash_token(&old_token));
    let seats = app.seats(&key).await;

    clock.advance(chrono::Duration::days(1));
    let (status, resent) = app.post(&format!("/api/v1/invitations/{id}/resend"), &key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resent}");
    assert_eq!((resent["id"].as_str(), resent["status"].as_str()), (Some(id.as_str()), Some("pending")), "{resent}");
    let token = resent["token"].as_str().expect("a token").to_string();
    assert!(token.starts_with("roster_inv_"), "{token}");
    assert_ne!(token, old_token);
    // The old link stops working: only the new token's hash is kept.
    let stored = stored_token_hash(&app, &id).await;
    assert_eq!(stored, roster::secrets::hash_token(&token));
    assert_ne!(stored, roster::secrets::hash_token(&old_token));
    assert!(time(&resent["expires_at"]) > time(&first["expires_at"]), "{resent}");
    assert_eq!(time(&resent["expires_at"]), clock.now() + chrono::Duration::days(14));
    assert_eq!(app.seats(&key).await, seats, "a resend of a pending invitation took another seat");

    let audit = audited(&app, &org.owner_key, "invitation.resent").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["target"], id.as_str());
    assert_eq!(time(&audit[0]["before"]["expires_at"]), time(&first["expires_at"]));
    assert_eq!(time(&audit[0]["after"]["expires_at"]), time(&resent["expires_at"]));
    assert!(!audit[0].to_string().contains(&token), "the audit record shows the token");

    // Only an Owner resends an Owner's invitation.
    let boss = id_of(&invite(&app, &org.owner_key, "boss@resend.com", "owner").await);
    let path = format!("/api/v1/invitations/{boss}/resend");
    let (status, problem) = app.post(&path, &key, json!({})).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app.post(&path, &org.owner_key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A revoked invitation is not resent; an unknown one is not found.
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/invitations/{id}"), Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, problem) = app.post(&format!("/api/v1/invitations/{id}/resend"), &key, json!({})).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    assert_eq!(invitation(&app, &key, &id).await["status"], "revoked");
    let unknown = format!("/api/v1/invitations/{}/resend", uuid::Uuid::new_v4());
    let (status, problem) = app.post(&unknown, &key, json!({})).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn an_expired_invitation_frees_its_seat_and_resending_it_needs_a_free_seat() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Lapse", 2).await;
    let key = org.owner_key.clone();
    let lapsed = invite(&app, &key, "a@lapse.com", "read").await;
    let a = id_of(&lapsed);
    assert_eq!(app.seats(&key).await["available"], 0);

    clock.advance(chrono::Duration::days(15));
    let seats = app.seats(&key).await;
    assert_eq!(
        (seats["used"].as_i64(), seats["pending_invitations"].as_i64(), seats["available"].as_i64()),
        (Some(1), Some(0), Some(1)),
        "{seats}"
    );
    assert_eq!(invitation(&app, &key, &a).await["status"], "expired");
    // Listings filter by the status they show.
    let listed = |body: Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
    };
    let (status, pending) = app.get("/api/v1/invitations?status=pending", &key).await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    assert!(listed(pending).is_empty(), "a lapsed invitation listed as pending");
    let (_, expired) = app.get("/api/v1/invitations?status=expired", &key).await;
    assert_eq!(listed(expired), vec![a.clone()]);
    let p = plan(&app, &key).await;
    assert_eq!(changes(&p), pairs(&[("expire_invitation", "a@lapse.com")]));
    assert_eq!(p["changes"][0]["invitation"], a.as_str());

    // Its seat is someone else's now.
    let b = id_of(&invite(&app, &key, "b@lapse.com", "read").await);
    let audit = app.audit(&key).await.len();
    let seats = app.seats(&key).await;
    let (status, problem) = app.post(&format!("/api/v1/invitations/{a}/resend"), &key, json!({})).await;
    // NOTE: the spec says "strict: 403 seat problem"; every admin route answers a
    // seat-limit refusal 409 `seat-limit-reached` (only SCIM answers 403).
    assert_problem(status, &problem, StatusCode::CONFLICT, "seat-limit-reached");
    assert_eq!((problem["purchased_seats"].as_i64(), problem["used_seats"].as_i64()), (Some(2), Some(2)), "{problem}");
    assert_eq!(invitation(&app, &key, &a).await["status"], "expired");
    assert_eq!(app.seats(&key).await, seats);
    assert_eq!(app.audit(&key).await.len(), audit, "a refused resend was audited");

    // With a seat free again, it comes back to life for another full term.
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/invitations/{b}"), Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, resent) = app.post(&format!("/api/v1/invitations/{a}/resend"), &key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{resent}");
    assert_eq!(resent["status"], "pending");
    assert_eq!(time(&resent["expires_at"]), clock.now() + chrono::Duration::days(14));
    assert_eq!(invitation(&app, &key, &a).await["status"], "pending");
    let seats = app.seats(&key).await;
    assert_eq!((seats["used"].as_i64(), seats["pending_invitations"].as_i64()), (Some(2), Some(1)), "{seats}");
    assert_eq!(plan(&app, &key).await["changes"], json!([]));
}

#[tokio::test]
async fn an_expired_invitation_is_not_resent_to_someone_invited_again_or_who_joined() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Again", 5).await;
    let key = org.owner_key.clone();
    let a = id_of(&invite(&app, &key, "a@again.com", "read").await);
    let b = id_of(&invite(&app, &key, "b@again.com", "read").await);
    clock.advance(chrono::Duration::days(15));
    invite(&app, &key, "A@again.com", "write").await;
    add_member(&app, &key, "b@again.com", "read").await;
    let audit = app.audit(&key).await.len();
    for old in [&a, &b] {
        let (status, problem) = app.post(&format!("/api/v1/invitations/{old}/resend"), &key, json!({})).await;
        assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
        assert_eq!(invitation(&app, &key, old).await["status"], "expired");
    }
    assert_eq!(app.audit(&key).await.len(), audit);
    let seats = app.seats(&key).await;
    assert_eq!((seats["used"].as_i64(), seats["pending_invitations"].as_i64()), (Some(3), Some(1)), "{seats}");
}

#[tokio::test]
async fn scim_provisioning_an_invited_email_accepts_the_invitation() {
    let app = TestApp::spawn().await;
    let org = app.org("Welcome", 2).await;
    let key = org.owner_key.clone();
    let token = scim_token(&app, &org).await;
    let inv = id_of(&invite(&app, &key, "x@welcome.com", "write").await);
    assert_eq!(app.seats(&key).await["available"], 0);
    // Even with a role of its own from the identity provider, the invitation's role holds.
    scim_user(&app, &token, "X@welcome.com", json!({"roles": [{"value": "Admin"}]})).await;
    let seats = app.seats(&key).await;
    assert_eq!(
        (seats["used"].as_i64(), seats["active_members"].as_i64(), seats["pending_invitations"].as_i64()),
        (Some(2), Some(2), Some(0)),
        "one seat, not two: {seats}"
    );
    let m = member_by_email(&app, &key, "x@welcome.com").await;
    assert_eq!(role_of(&m), role("write", json!({"kind": "manual"}), "Write, assigned by an admin"), "{m}");
    assert_eq!((m["manual_role"].clone(), m["role_pinned"].clone()), (json!("write"), json!(true)), "{m}");
    assert_eq!(m["status"], "active");
    assert_eq!(invitation(&app, &key, &inv).await["status"], "accepted");
    let accepted = audited(&app, &key, "invitation.accepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["target"], inv.as_str());
    assert_eq!(plan(&app, &key).await["changes"], json!([]));
}

// ---- Under concurrency -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_make_each_change_once() {
    let clock = clock();
    let app = app_on(&clock).await;
    let org = app.org("Racing", 6).await;
    let key = org.owner_key.clone();
    for (who, role) in [("a", "read"), ("b", "write"), ("c", "read"), ("d", "admin")] {
        later(&clock);
        add_member(&app, &key, &format!("{who}@racing.com"), role).await;
    }
    later(&clock);
    invite(&app, &key, "i@racing.com", "read").await;
    put_seats(&app, &org, json!({"purchased": 3})).await;
    let p = plan(&app, &key).await;
    assert_eq!(
        changes(&p),
        pairs(&[
            ("revoke_invitation", "i@racing.com"),
            ("suspend_member", "c@racing.com"),
            ("suspend_member", "b@racing.com")
        ])
    );
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/reconcile/apply"), key.clone());
        tasks.push(tokio::spawn(async move {
            read(client.post(url).bearer_auth(key).send().await.expect("request")).await
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        let (status, outcome) = t.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{outcome}");
        applied.push(outcome["applied"]["changes"].as_array().expect("changes").len());
    }
    applied.sort();
    assert_eq!(applied, vec![0, 0, 0, 0, 0, 3], "the plan was applied more than once, or in parts");
    assert_eq!(audited(&app, &key, "member.suspended").await.len(), 2);
    assert_eq!(audited(&app, &key, "invitation.revoked").await.len(), 1);
    assert_eq!(audited(&app, &key, "reconcile.applied").await.len(), 1);
    assert_eq!(app.seats(&key).await["used"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_ticking_at_once_run_the_reconciler_once() {
    let app = TestApp::spawn().await;
    let org = app.org("Replicas", 3).await;
    add_member(&app, &org.owner_key, "a@replicas.com", "read").await;
    add_member(&app, &org.owner_key, "b@replicas.com", "read").await;
    put_seats(&app, &org, json!({"purchased": 1, "enforcement": "automatic"})).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let roster = app.roster.clone();
        tasks.push(tokio::spawn(async move {
            roster::jobs::reconcile_tick(&roster, &format!("replica-{i}"), HOUR).await.map(|run| run.map(|r| r.holder))
        }));
    }
    let mut ran = Vec::new();
    for t in tasks {
        if let Some(holder) = t.await.expect("task").expect("a tick does not fail") {
            ran.push(holder);
        }
    }
    assert_eq!(ran.len(), 1, "{ran:?}");
    let runs = app.roster.store().read().await.unwrap().list_job_runs("reconcile", 10).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.holder.clone()).collect::<Vec<_>>(), ran);
    assert_eq!(audited(&app, &org.owner_key, "member.suspended").await.len(), 2);
    assert_eq!(app.seats(&org.owner_key).await["used"], 1);
}

#[tokio::test]
async fn a_member_deactivated_in_the_identity_provider_but_active_here_is_suspended_by_the_plan() {
    let app = TestApp::spawn().await;
    let org = app.org("Deactivated", 5).await;
    let key = org.owner_key.clone();
    let token = scim_token(&app, &org).await;
    let uid = scim_user(&app, &token, "gone@deactivated.com", json!({})).await;
    let id = id_of(&member_by_email(&app, &key, "gone@deactivated.com").await);
    let patch = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (status, _, body) = scim(&app, &token, Method::PATCH, &format!("/Users/{uid}"), Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(member(&app, &key, &id).await["status"], "suspended");
    assert_eq!(plan(&app, &key).await["changes"], json!([]));

    // An admin lets the member back in; the identity provider still says no.
    let (status, body) = app.post(&format!("/api/v1/members/{id}/reactivate"), &key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let p = plan(&app, &key).await;
    assert_eq!(changes(&p), pairs(&[("suspend_member", "gone@deactivated.com")]), "{p}");
    assert!(p["changes"][0]["reason"].as_str().unwrap().contains("identity provider"), "{p}");
    let (status, outcome) = apply(&app, &key, None).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(member(&app, &key, &id).await["status"], "suspended");
    assert_eq!(app.seats(&key).await["used"], 1);
    assert_eq!(plan(&app, &key).await["changes"], json!([]));
}
