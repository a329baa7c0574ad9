//! The deployment's operator: operator keys, the operator API for
//! organizations, admin routes on behalf of an organization, and billing
//! requests (an organization asks, the operator approves or rejects).

use crate::cli::run_json;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use roster::clock::SystemClock;
use roster::model::Name;
use roster::service::Operator;
use serde_json::{json, Value};
use std::sync::Arc;

async fn op_call(app: &TestApp, method: Method, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    app.call(method, path, Some(key), body).await
}

/// The types of the organization's events, oldest first.
async fn event_types(app: &TestApp, key: &str) -> Vec<String> {
    let (status, body) = app.get("/api/v1/events?limit=1000", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().expect("events").iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn an_operator_key_creates_finds_changes_and_deletes_organizations() {
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| c.tenant_connection = Some(tenant_connection_nobody_answers()),
        Arc::new(SystemClock),
    )
    .await;
    let op = app.operator_key().await;
    assert!(op.starts_with("roster_op_"), "{op}");

    let order = json!({"name": "Initech", "owner_email": "bill@initech.example.com", "purchased": 25,
        "plan": "enterprise_seat_monthly", "contact_email": "ap@initech.example.com"});
    let (s, created) = op_call(&app, Method::POST, "/api/v1/operator/organizations", &op, Some(order)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let org_id = created["organization"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["organization"]["purchased_seats"], 25);
    assert_eq!(created["organization"]["plan"], "enterprise_seat_monthly");
    assert_eq!(created["owner"]["role"], "owner");
    // The Owner key it returns works on the organization's admin routes.
    let owner_key = created["api_key"]["secret"].as_str().unwrap().to_string();
    let (s, seats) = app.get("/api/v1/seats", &owner_key).await;
    assert_eq!((s, seats["purchased"].as_i64(), seats["used"].as_i64()), (StatusCode::OK, Some(25), Some(1)));
    let audit = app.audit(&owner_key).await;
    let first = audit.iter().find(|e| e["action"] == "organization.created").expect("audited");
    assert_eq!(first["actor_kind"], "operator", "{first}");

    // Found among all, and by its tenant ID; a domain it has not verified finds nothing.
    let (s, b) = app
        .call_for(
            Method::PATCH,
            "/api/v1/organization/sso",
            &op,
            org_id.parse().unwrap(),
            Some(json!({"tenant_id": "T-initech"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let other = app.org("Globex", 3).await;
    let (s, all) = app.get("/api/v1/operator/organizations", &op).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    let (s, found) = app.get("/api/v1/operator/organizations?tenant_id=T-initech", &op).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found.as_array().map(|a| a.iter().map(id_of).collect::<Vec<_>>()), Some(vec![org_id.clone()]));
    let (s, b) = app.post("/api/v1/domains", &owner_key, json!({"name": "initech.example.com"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, found) = app.get("/api/v1/operator/organizations?domain=initech.example.com", &op).await;
    assert_eq!((s, found), (StatusCode::OK, json!([])), "only a verified domain names an organization");
    let (s, b) = app.get("/api/v1/operator/organizations?tenant_id=bad%20id", &op).await;
    assert_problem(s, &b, StatusCode::BAD_REQUEST, "invalid-request");

    // Seats, plan and features in one change: audited as the operator's, seats as an event.
    let change = json!({"purchased": 40, "seat_policy": "overage", "plan": "enterprise_seat_yearly",
        "features": {"external_cloud": true, "analytics": true}});
    let path = format!("/api/v1/operator/organizations/{org_id}");
    let (s, changed) = op_call(&app, Method::PATCH, &path, &op, Some(change)).await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["purchased_seats"].as_i64(), changed["seats"]["available"].as_i64(), changed["plan"].as_str()),
        (Some(40), Some(39), Some("enterprise_seat_yearly"))
    );
    assert_eq!(changed["features"], json!({"external_cloud": true, "analytics": true}));
    let audit = app.audit(&owner_key).await;
    for action in ["seats.updated", "organization.updated", "organization.features_updated"] {
        let entry = audit.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("no {action}"));
        assert_eq!(entry["actor_kind"], "operator", "{entry}");
    }
    assert!(event_types(&app, &owner_key).await.contains(&"seats.updated".to_string()));
    let (s, b) = op_call(&app, Method::PATCH, &path, &op, Some(json!({"purchased": -1}))).await;
    assert_problem(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, b) = op_call(&app, Method::PATCH, &path, &op, Some(json!({"seats": 5}))).await;
    assert_problem(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(app.get(&path, &op).await.1["purchased_seats"], 40, "a refused change changed nothing");

    // Deleted: gone for the operator, and its Owner key with it.
    let (s, _) = op_call(&app, Method::DELETE, &path, &op, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = app.get(&path, &op).await;
    assert_problem(s, &b, StatusCode::NOT_FOUND, "not-found");
    assert_eq!(app.get("/api/v1/seats", &owner_key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/api/v1/seats", &other.owner_key).await.0, StatusCode::OK, "another is untouched");
}

#[tokio::test]
async fn operator_routes_take_only_a_live_operator_key() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 5).await;
    let op = app.operator_key().await;
    let (_, doc) = read(app.client.get(app.url("/api/v1/openapi.json")).send().await.expect("request")).await;
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/v1/operator/") {
            continue;
        }
        for method in ["get", "post", "patch", "delete"].into_iter().filter(|m| item.get(*m).is_some()) {
            let path = path.replace("{id}", &org.id.to_string());
            routes.push((Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), path));
        }
    }
    assert!(routes.len() >= 9, "{routes:?}");
    let (revoked, _) = {
        let name = Name::parse("old").unwrap();
        let created = app.roster.create_operator_key(&Operator::cli_as("cli:test"), &name, None).await.unwrap();
        app.roster.revoke_operator_key(&Operator::cli_as("cli:test"), created.key.id).await.unwrap();
        (created.secret.expose().to_string(), ())
    };
    for (method, path) in &routes {
        let body = (*method != Method::GET && *method != Method::DELETE).then(|| json!({}));
        let (s, b) = app.call(method.clone(), path, Some(&org.owner_key), body.clone()).await;
        assert_problem(s, &b, StatusCode::FORBIDDEN, "forbidden");
        let (s, b) = app.call(method.clone(), path, None, body.clone()).await;
        assert_problem(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
        let (s, b) = app.call(method.clone(), path, Some(&revoked), body.clone()).await;
        assert_problem(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The organization is still there; the live key reaches it.
    assert_eq!(app.get(&format!("/api/v1/operator/organizations/{}", org.id), &op).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_operator_key_acts_in_an_organization_it_names() {
    let app = TestApp::spawn().await;
    let acme = app.org("Acme", 5).await;
    let globex = app.org("Globex", 5).await;
    let op = app.operator_key().await;
    let (s, b) = app
        .call_for(
            Method::POST,
            "/api/v1/members",
            &op,
            acme.id,
            Some(json!({"email": "x@acme.example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let added = app.audit(&acme.owner_key).await.into_iter().find(|e| e["action"] == "member.added").unwrap();
    assert_eq!(added["actor_kind"], "operator", "{added}");
    let (_, members) = app.get("/api/v1/members", &globex.owner_key).await;
    assert!(!members.to_string().contains("x@acme.example.com"), "only the named organization: {members}");

    // No organization named, a malformed one, or one that does not exist.
    let (s, b) = app.get("/api/v1/members", &op).await;
    assert_problem(s, &b, StatusCode::BAD_REQUEST, "invalid-request");
    let res = app.client.get(app.url("/api/v1/members")).bearer_auth(&op).header("roster-organization", "acme").send();
    let (s, b) = read(res.await.unwrap()).await;
    assert_problem(s, &b, StatusCode::BAD_REQUEST, "invalid-request");
    let (s, b) = app.call_for(Method::GET, "/api/v1/members", &op, uuid::Uuid::now_v7(), None).await;
    assert_problem(s, &b, StatusCode::NOT_FOUND, "not-found");
    // An organization's own key ignores the header: it acts on its own organization only.
    let res = app
        .client
        .get(app.url("/api/v1/organization"))
        .bearer_auth(&acme.owner_key)
        .header("roster-organization", globex.id.to_string())
        .send();
    let (s, b) = read(res.await.unwrap()).await;
    assert_eq!((s, b["id"].as_str()), (StatusCode::OK, Some(acme.id.to_string().as_str())));

    // Without a named organization, the webhook routes manage the deployment's endpoints.
    let (s, b) = app
        .post("/api/v1/webhooks", &op, json!({"url": "https://billing.example.com/hooks", "events": ["seats.*"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["endpoint"]["organization_id"], Value::Null, "{b}");
    let (_, listed) = app.get("/api/v1/webhooks", &op).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let (_, own) = app.get("/api/v1/webhooks", &acme.owner_key).await;
    assert_eq!(own, json!([]), "not an organization's endpoint");
}

#[tokio::test]
async fn an_admin_asks_for_seats_and_the_operator_approves_or_rejects() {
    let app = TestApp::spawn().await;
    let org = app.org("Acme", 5).await;
    let admin = app.key(&org, roster::model::Role::Admin).await;
    let op = app.operator_key().await;

    // An Admin key can no longer raise seats: the change is a request, and an event.
    let (s, request) = app.call(Method::PUT, "/api/v1/seats", Some(&admin), Some(json!({"purchased": 1000000}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{request}");
    assert_eq!((request["status"].as_str(), request["purchased"].as_i64()), (Some("pending"), Some(1_000_000)));
    assert_eq!(app.seats(&admin).await["purchased"], 5, "nothing granted");
    assert!(event_types(&app, &admin).await.contains(&"seats.change_requested".to_string()));

    // A newer request supersedes it.
    let (s, newer) = app.post("/api/v1/billing/requests", &admin, json!({"purchased": 20, "note": "Q3 hires"})).await;
    assert_eq!(s, StatusCode::CREATED, "{newer}");
    let (s, listed) = app.get("/api/v1/billing/requests", &admin).await;
    assert_eq!(s, StatusCode::OK);
    let statuses: Vec<_> = listed.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["pending", "cancelled"], "{listed}");
    let (_, pending) = app.get("/api/v1/operator/billing/requests?status=pending", &op).await;
    assert_eq!(pending.as_array().map(|p| p.iter().map(id_of).collect::<Vec<_>>()), Some(vec![id_of(&newer)]));

    // The operator reviews and approves: the seats change, as the operator's change.
    let (s, review) = app.get(&format!("/api/v1/operator/billing/requests/{}", id_of(&newer)), &op).await;
    assert_eq!(s, StatusCode::OK, "{review}");
    assert_eq!(
        (review["seats"]["purchased"].as_i64(), review["request"]["note"].as_str()),
        (Some(5), Some("Q3 hires"))
    );
    assert_eq!(review["plan_after"]["changes"], json!([]), "an increase cuts nobody: {review}");
    let approve = format!("/api/v1/operator/billing/requests/{}/approve", id_of(&newer));
    let (s, approved) = app.post(&approve, &op, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{approved}");
    assert_eq!(
        (approved["request"]["status"].as_str(), approved["seats"]["purchased"].as_i64()),
        (Some("approved"), Some(20))
    );
    assert_eq!(app.seats(&admin).await["purchased"], 20);
    let types = event_types(&app, &admin).await;
    assert!(types.ends_with(&["seats.updated".to_string(), "seats.change_approved".to_string()]), "{types:?}");
    let (s, b) = app.post(&approve, &op, json!({})).await;
    assert_problem(s, &b, StatusCode::CONFLICT, "conflict");

    // A decrease: the review shows who would lose a seat; rejected, the requester reads why.
    for i in 0..3 {
        app.post("/api/v1/members", &admin, json!({"email": format!("r{i}@acme.example.com"), "role": "read"})).await;
    }
    let (s, down) = app.call(Method::PUT, "/api/v1/seats", Some(&admin), Some(json!({"purchased": 2}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{down}");
    let (_, review) = app.get(&format!("/api/v1/operator/billing/requests/{}", id_of(&down)), &op).await;
    let cuts = review["plan_after"]["changes"].as_array().expect("a plan").len();
    assert_eq!(cuts, 2, "four seats in use, two asked for: two Read members would be suspended: {review}");
    let reject = format!("/api/v1/operator/billing/requests/{}/reject", id_of(&down));
    let (s, b) = app.post(&reject, &op, json!({"reason": "  "})).await;
    assert_problem(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, rejected) = app.post(&reject, &op, json!({"reason": "The contract runs until June: call us."})).await;
    assert_eq!((s, rejected["status"].as_str()), (StatusCode::OK, Some("rejected")), "{rejected}");
    let (_, listed) = app.get("/api/v1/billing/requests", &admin).await;
    assert_eq!(listed[0]["reason"], "The contract runs until June: call us.");
    assert_eq!(app.seats(&admin).await["purchased"], 20);
    assert!(event_types(&app, &admin).await.contains(&"seats.change_rejected".to_string()));

    // A plan change is a request too; withdrawn, it cannot be approved.
    let (s, plan) = app
        .call(Method::PATCH, "/api/v1/organization", Some(&admin), Some(json!({"plan": "enterprise_seat_monthly"})))
        .await;
    assert_eq!((s, plan["plan"].as_str()), (StatusCode::ACCEPTED, Some("enterprise_seat_monthly")), "{plan}");
    let (s, cancelled) =
        app.call(Method::DELETE, &format!("/api/v1/billing/requests/{}", id_of(&plan)), Some(&admin), None).await;
    assert_eq!((s, cancelled["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{cancelled}");
    let (s, b) = app.post(&format!("/api/v1/operator/billing/requests/{}/approve", id_of(&plan)), &op, json!({})).await;
    assert_problem(s, &b, StatusCode::CONFLICT, "conflict");
    assert_eq!(app.get("/api/v1/organization", &admin).await.1["plan"], "enterprise_seat_yearly");

    // A request that changes nothing, or of another organization, is refused.
    let (s, b) = app.post("/api/v1/billing/requests", &admin, json!({"purchased": 20})).await;
    assert_problem(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let other = app.org("Globex", 5).await;
    let (s, b) = app
        .call(Method::DELETE, &format!("/api/v1/billing/requests/{}", id_of(&down)), Some(&other.owner_key), None)
        .await;
    assert_problem(s, &b, StatusCode::NOT_FOUND, "not-found");
    // The seat enforcement is the organization's own choice: set at once.
    let (s, b) = app
        .call(Method::PUT, "/api/v1/seats", Some(&admin), Some(json!({"purchased": 20, "enforcement": "automatic"})))
        .await;
    assert_eq!((s, b["enforcement"].as_str()), (StatusCode::OK, Some("automatic")), "{b}");
}

#[tokio::test]
async fn a_self_serve_deployment_lets_admins_set_seats_and_plan() {
    let app = TestApp::spawn_self_serve().await;
    let org = app.org("Acme", 5).await;
    let admin = app.key(&org, roster::model::Role::Admin).await;
    let (s, b) = app.call(Method::PUT, "/api/v1/seats", Some(&admin), Some(json!({"purchased": 9}))).await;
    assert_eq!((s, b["purchased"].as_i64()), (StatusCode::OK, Some(9)), "{b}");
    let (s, b) = app
        .call(Method::PATCH, "/api/v1/organization", Some(&admin), Some(json!({"plan": "enterprise_seat_monthly"})))
        .await;
    assert_eq!((s, b["plan"].as_str()), (StatusCode::OK, Some("enterprise_seat_monthly")), "{b}");
    assert_eq!(app.get("/api/v1/billing/requests", &admin).await.1, json!([]));
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_operator_keys() {
    let app = TestApp::spawn().await;
    let created = run_json(app.db_url(), &["operator-key", "create", "--name", "billing"]);
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert_eq!(app.get("/api/v1/operator/organizations", &secret).await.0, StatusCode::OK);
    let listed = run_json(app.db_url(), &["operator-key", "list"]);
    assert_eq!(listed[0]["name"], "billing");
    assert!(!listed.to_string().contains(&secret), "never the secret");
    run_json(app.db_url(), &["operator-key", "revoke", created["id"].as_str().unwrap()]);
    assert_eq!(app.get("/api/v1/operator/organizations", &secret).await.0, StatusCode::UNAUTHORIZED);
}
