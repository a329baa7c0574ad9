//! SCIM 2.0 over real HTTP: Users and Groups mapped to members and seats,
//! queries, versioning, Bulk, discovery and tenant isolation.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub use crate::helpers::scim_token;

/// A SCIM call: status, headers and JSON body. Error answers must be SCIM errors.
pub async fn scim(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    scim_with(app, token, method, path, body, &[]).await
}

pub async fn scim_with(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app.client.request(method, app.url(&format!("/scim/v2{path}"))).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/scim+json").body(body.to_string());
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let body: Value =
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(headers["content-type"], "application/scim+json", "{status}: {body}");
        assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{body}");
        assert_eq!(body["status"], status.as_u16().to_string(), "{body}");
    }
    (status, headers, body)
}

pub fn user(user_name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true
    })
}

async fn create(app: &TestApp, token: &str, user_name: &str) -> Value {
    let (s, _, body) = scim(app, token, Method::POST, "/Users", Some(user(user_name))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn a_user_is_a_member_through_its_whole_lifecycle() {
    let app = TestApp::spawn().await;
    let org = app.org("Scimmed", 3).await;
    let token = scim_token(&app, &org).await;

    let (s, headers, created) = scim(&app, &token, Method::POST, "/Users", Some(user("ada@scimmed.com"))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(headers["content-type"], "application/scim+json");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"].to_str().unwrap(), created["meta"]["location"].as_str().unwrap());
    assert_eq!(headers["etag"].to_str().unwrap(), created["meta"]["version"].as_str().unwrap());
    assert_eq!(created["meta"]["resourceType"], "User");
    assert_eq!(created["name"]["familyName"], "Lovelace");
    let (_, members) = app.get("/api/v1/members?status=active", &org.owner_key).await;
    assert_eq!(members["total"], 2);
    let member = members["items"].as_array().unwrap().iter().find(|m| m["email"] == "ada@scimmed.com").unwrap().clone();
    assert_eq!(member["source"], "scim");

    // active=false suspends and frees the seat.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (s, _, body) = scim(&app, &token, Method::PATCH, &format!("/Users/{id}"), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["active"], false);
    assert_eq!(app.seats(&org.owner_key).await["used"], 1);
    let (_, m) = app.get(&format!("/api/v1/members/{}", member["id"].as_str().unwrap()), &org.owner_key).await;
    assert_eq!(m["status"], "suspended");

    // Re-activation takes it again.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Replace", "path": "active", "value": "True"}]});
    let (s, _, body) = scim(&app, &token, Method::PATCH, &format!("/Users/{id}"), Some(patch)).await;
    assert_eq!((s, body["active"].clone()), (StatusCode::OK, json!(true)), "{body}");
    assert_eq!(app.seats(&org.owner_key).await["used"], 2);

    // DELETE deprovisions: gone for SCIM, the member and audit trail stay.
    let (s, _, _) = scim(&app, &token, Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = scim(&app, &token, Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, m) = app.get(&format!("/api/v1/members/{}", member["id"].as_str().unwrap()), &org.owner_key).await;
    assert_eq!(m["status"], "deprovisioned");
    assert_eq!(app.seats(&org.owner_key).await["used"], 1);

    // Re-creation after delete works, with a new id.
    let again = create(&app, &token, "ada@scimmed.com").await;
    assert_ne!(again["id"].as_str().unwrap(), id);
    let (_, m) = app.get(&format!("/api/v1/members/{}", member["id"].as_str().unwrap()), &org.owner_key).await;
    assert_eq!(m["status"], "active");
    let actions: Vec<String> =
        app.audit(&org.owner_key).await.iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    assert!(actions.contains(&"scim.user.deleted".to_string()));
    assert!(actions.contains(&"member.removed".to_string()));
}

#[tokio::test]
async fn no_free_seat_is_a_403_that_changes_nothing_and_is_audited() {
    let app = TestApp::spawn().await;
    let org = app.org("Full", 2).await;
    let token = scim_token(&app, &org).await;
    create(&app, &token, "one@full.com").await;
    let before = app.audit(&org.owner_key).await.len();
    let (s, _, body) = scim(&app, &token, Method::POST, "/Users", Some(user("two@full.com"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("2 seats") && detail.contains("2 are in use"), "{detail}");
    let (_, _, list) = scim(&app, &token, Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 1);
    let audit = app.audit(&org.owner_key).await;
    assert_eq!(audit.len(), before + 1);
    assert_eq!(audit[0]["action"], "scim.user.refused_seat_limit");
    // An inactive user needs no seat.
    let mut inactive = user("three@full.com");
    inactive["active"] = json!(false);
    let (s, _, body) = scim(&app, &token, Method::POST, "/Users", Some(inactive)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_scim_creates_never_exceed_the_seats() {
    let app = TestApp::spawn().await;
    let org = app.org("Race", 6).await;
    let token = scim_token(&app, &org).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, url, token) = (app.client.clone(), app.url("/scim/v2/Users"), token.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(user(&format!("r{i}@race.com")).to_string())
                .send()
                .await
                .expect("request")
                .status()
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(app.seats(&org.owner_key).await["used"], 6);
}

#[tokio::test]
async fn user_names_are_unique_case_insensitively_and_an_invitation_keeps_one_seat() {
    let app = TestApp::spawn().await;
    let org = app.org("Unique", 3).await;
    let token = scim_token(&app, &org).await;
    create(&app, &token, "bob@unique.com").await;
    let (s, _, body) = scim(&app, &token, Method::POST, "/Users", Some(user("BOB@unique.com"))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["scimType"], "uniqueness");
    // A pending invitation for the same email becomes the SCIM member: one seat, not two.
    app.post("/api/v1/invitations", &org.owner_key, json!({"email": "cy@unique.com", "role": "write"})).await;
    assert_eq!(app.seats(&org.owner_key).await["available"], 0);
    create(&app, &token, "cy@unique.com").await;
    let seats = app.seats(&org.owner_key).await;
    assert_eq!((seats["used"].as_i64(), seats["pending_invitations"].as_i64()), (Some(3), Some(0)));
}

/// The organization's members that have no email.
async fn members_without_email(app: &TestApp, org: &TestOrg) -> Vec<Value> {
    let (_, members) = app.get("/api/v1/members", &org.owner_key).await;
    members["items"].as_array().unwrap().iter().filter(|m| m["email"].is_null()).cloned().collect()
}

#[tokio::test]
async fn a_user_without_an_email_holds_a_seat_and_takes_its_email_when_one_arrives() {
    let app = TestApp::spawn().await;
    let org = app.org("Emailless", 5).await;
    let other = app.org("Elsewhere", 5).await;
    let token = scim_token(&app, &org).await;
    let bare =
        |user_name: &str| json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name});

    // Neither an email-shaped userName nor emails: a member without an email, holding a seat.
    let mut ids = Vec::new();
    for user_name in ["5c0ffee1", "5c0ffee2", "5c0ffee3"] {
        let (s, _, body) = scim(&app, &token, Method::POST, "/Users", Some(bare(user_name))).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        assert_eq!(body["userName"], user_name);
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(app.seats(&org.owner_key).await["used"], 4);
    let bare_members = members_without_email(&app, &org).await;
    assert_eq!(bare_members.len(), 3, "{bare_members:?}");
    assert!(bare_members.iter().all(|m| m["source"] == "scim" && m["status"] == "active"), "{bare_members:?}");
    let (s, _, body) = scim(&app, &token, Method::GET, "/Users?filter=userName%20eq%20%225C0FFEE1%22", None).await;
    assert_eq!((s, body["totalResults"].as_i64()), (StatusCode::OK, Some(1)), "{body}");
    let (s, _, body) = scim(&app, &token, Method::POST, "/Users", Some(bare("5C0FFEE1"))).await;
    assert_eq!((s, body["scimType"].as_str()), (StatusCode::CONFLICT, Some("uniqueness")), "{body}");

    // A PATCH that brings an address gives the member its email.
    let add_email = |email: &str| {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "add", "path": "emails", "value": [{"value": email, "type": "work", "primary": true}]}]})
    };
    let (s, _, body) =
        scim(&app, &token, Method::PATCH, &format!("/Users/{}", ids[0]), Some(add_email("ada@emailless.com"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, members) = app.get("/api/v1/members?status=active", &org.owner_key).await;
    assert!(members["items"].as_array().unwrap().iter().any(|m| m["email"] == "ada@emailless.com"), "{members}");
    assert_eq!(members_without_email(&app, &org).await.len(), 2);

    // The person is already a member here: 409, and the User keeps its emails as they were.
    let (s, _, body) =
        scim(&app, &token, Method::PATCH, &format!("/Users/{}", ids[1]), Some(add_email("ADA@emailless.com"))).await;
    assert_eq!((s, body["scimType"].as_str()), (StatusCode::CONFLICT, Some("uniqueness")), "{body}");
    let (_, _, body) = scim(&app, &token, Method::GET, &format!("/Users/{}", ids[1]), None).await;
    assert!(body.get("emails").is_none(), "{body}");
    assert_eq!(members_without_email(&app, &org).await.len(), 2);

    // A pending invitation of the address is settled when a member takes it: one seat, not two.
    let (s, _) =
        app.post("/api/v1/invitations", &org.owner_key, json!({"email": "cy@emailless.com", "role": "write"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(app.seats(&org.owner_key).await["used"], 5);
    let put = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "cy@emailless.com"});
    let (s, _, body) = scim(&app, &token, Method::PUT, &format!("/Users/{}", ids[1]), Some(put)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let seats = app.seats(&org.owner_key).await;
    assert_eq!((seats["used"].as_i64(), seats["pending_invitations"].as_i64()), (Some(4), Some(0)), "{seats}");
    let (_, members) = app.get("/api/v1/members?status=active", &org.owner_key).await;
    let cy = members["items"].as_array().unwrap().iter().find(|m| m["email"] == "cy@emailless.com").unwrap().clone();
    assert_eq!(cy["role"], "write", "the invitation's role: {cy}");

    // The person is a Roster user through another organization: the member becomes that user's.
    let (s, dee) =
        app.post("/api/v1/members", &other.owner_key, json!({"email": "dee@elsewhere.com", "role": "read"})).await;
    assert_eq!(s, StatusCode::CREATED, "{dee}");
    let (s, _, body) =
        scim(&app, &token, Method::PATCH, &format!("/Users/{}", ids[2]), Some(add_email("dee@elsewhere.com"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, members) = app.get("/api/v1/members?status=active", &org.owner_key).await;
    let here = members["items"].as_array().unwrap().iter().find(|m| m["email"] == "dee@elsewhere.com").unwrap().clone();
    assert_eq!(here["user_id"], dee["user_id"], "{here} {dee}");
    assert_ne!(here["id"], dee["id"]);
    assert!(members_without_email(&app, &org).await.is_empty());

    // Deleting a User that never had an email frees its seat like any other.
    let (s, _, body) = scim(&app, &token, Method::POST, "/Users", Some(bare("5c0ffee4"))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(app.seats(&org.owner_key).await["used"], 5);
    let (s, _, _) = scim(&app, &token, Method::DELETE, &format!("/Users/{}", body["id"].as_str().unwrap()), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.seats(&org.owner_key).await["used"], 4);
}

/// An unfiltered page's `totalResults` is the organization's count of SCIM
/// Users kept in its row: it follows creates and deletes, and counts no
/// other organization's Users.
#[tokio::test]
async fn the_total_of_an_unfiltered_page_follows_creates_and_deletes() {
    let app = TestApp::spawn().await;
    let org = app.org("Counted", 20).await;
    let other = app.org("Elsewhere", 20).await;
    let token = scim_token(&app, &org).await;
    let other_token = scim_token(&app, &other).await;
    let total = |token: String| {
        let app = &app;
        async move {
            // A page of one does not end the results, so the total is counted.
            let (s, _, page) = scim(app, &token, Method::GET, "/Users?count=1", None).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            let filtered = "/Users?count=1&filter=userName%20pr";
            let (_, _, all) = scim(app, &token, Method::GET, filtered, None).await;
            assert_eq!(page["totalResults"], all["totalResults"], "kept and counted totals differ");
            page["totalResults"].as_i64().unwrap()
        }
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(id_of(&create(&app, &token, &format!("u{i}@counted.com")).await));
    }
    create(&app, &other_token, "x@elsewhere.com").await;
    assert_eq!(total(token.clone()).await, 4);
    for id in &ids[..3] {
        let (s, _, body) = scim(&app, &token, Method::DELETE, &format!("/Users/{id}"), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    }
    assert_eq!(total(token.clone()).await, 1);
    assert_eq!(total(other_token).await, 1);
}

#[tokio::test]
async fn filters_paging_sorting_and_projection() {
    let app = TestApp::spawn().await;
    let org = app.org("Query", 20).await;
    let token = scim_token(&app, &org).await;
    for (i, name) in ["carol", "alice", "dave", "bob", "erin"].iter().enumerate() {
        let mut u = user(&format!("{name}@query.com"));
        u["externalId"] = json!(format!("ext-{i}"));
        u["title"] = json!(if i % 2 == 0 { "Engineer" } else { "Manager" });
        let (s, _, body) = scim(&app, &token, Method::POST, "/Users", Some(u)).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let (s, _, body) =
        scim(&app, &token, Method::GET, "/Users?filter=userName%20eq%20%22ALICE%40query.com%22", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["totalResults"], 1);
    assert_eq!(body["Resources"][0]["userName"], "alice@query.com");
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:ListResponse");

    let (_, _, page) = scim(&app, &token, Method::GET, "/Users?sortBy=userName&startIndex=2&count=2", None).await;
    assert_eq!(page["totalResults"], 5);
    assert_eq!(page["itemsPerPage"], 2);
    assert_eq!(page["startIndex"], 2);
    let names: Vec<&str> =
        page["Resources"].as_array().unwrap().iter().map(|r| r["userName"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["bob@query.com", "carol@query.com"]);

    let (_, _, desc) =
        scim(&app, &token, Method::GET, "/Users?sortBy=userName&sortOrder=descending&count=1", None).await;
    assert_eq!(desc["Resources"][0]["userName"], "erin@query.com");
    let (_, _, by_ext) = scim(&app, &token, Method::GET, "/Users?filter=externalId%20eq%20%22ext-3%22", None).await;
    assert_eq!(by_ext["Resources"][0]["userName"], "bob@query.com");
    let (_, _, titled) = scim(&app, &token, Method::GET, "/Users?filter=title%20eq%20%22engineer%22", None).await;
    assert_eq!(titled["totalResults"], 3, "title is not case-exact");

    let (_, _, co) = scim(
        &app,
        &token,
        Method::GET,
        "/Users?filter=emails.value%20co%20%22a%22%20and%20not%20(userName%20sw%20%22d%22)",
        None,
    )
    .await;
    let mut names: Vec<&str> =
        co["Resources"].as_array().unwrap().iter().map(|r| r["userName"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["alice@query.com", "carol@query.com"]);

    let (_, _, projected) = scim(&app, &token, Method::GET, "/Users?attributes=userName&count=1", None).await;
    let r = &projected["Resources"][0];
    assert!(r["userName"].is_string() && r["id"].is_string());
    assert!(r.get("name").is_none(), "{r}");
    let (_, _, excluded) = scim(&app, &token, Method::GET, "/Users?excludedAttributes=emails,name&count=1", None).await;
    assert!(excluded["Resources"][0].get("emails").is_none());
    assert!(excluded["Resources"][0]["userName"].is_string());

    let (_, _, zero) = scim(&app, &token, Method::GET, "/Users?count=0", None).await;
    assert_eq!((zero["totalResults"].as_i64(), zero["itemsPerPage"].as_i64()), (Some(5), Some(0)));

    let (s, _, bad) = scim(&app, &token, Method::GET, "/Users?filter=userName%20eq", None).await;
    assert_eq!((s, bad["scimType"].as_str()), (StatusCode::BAD_REQUEST, Some("invalidFilter")));
    let (s, _, bad) = scim(&app, &token, Method::GET, "/Users?filter=shoeSize%20gt%2042", None).await;
    assert_eq!((s, bad["scimType"].as_str()), (StatusCode::BAD_REQUEST, Some("invalidFilter")));

    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName sw \"b\"", "attributes": ["userName"]});
    let (s, _, found) = scim(&app, &token, Method::POST, "/Users/.search", Some(search)).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found["totalResults"], 1);
}

#[tokio::test]
async fn etags_guard_writes_and_answer_conditional_reads() {
    let app = TestApp::spawn().await;
    let org = app.org("Versions", 5).await;
    let token = scim_token(&app, &org).await;
    let u = create(&app, &token, "v@versions.com").await;
    let id = u["id"].as_str().unwrap();
    let version = u["meta"]["version"].as_str().unwrap().to_string();
    let (s, _, _) =
        scim_with(&app, &token, Method::GET, &format!("/Users/{id}"), None, &[("if-none-match", &version)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let mut replaced = user("v@versions.com");
    replaced["displayName"] = json!("V");
    let (s, headers, body) = scim_with(
        &app,
        &token,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(replaced.clone()),
        &[("if-match", &version)],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_ne!(headers["etag"].to_str().unwrap(), version);
    assert_eq!(body["displayName"], "V");
    let (s, _, body) =
        scim_with(&app, &token, Method::PUT, &format!("/Users/{id}"), Some(replaced), &[("if-match", &version)]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{body}");
    let (s, _, _) =
        scim_with(&app, &token, Method::DELETE, &format!("/Users/{id}"), None, &[("if-match", &version)]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn groups_hold_members_and_patches_change_only_the_members_named() {
    let app = TestApp::spawn().await;
    let org = app.org("Groupy", 10).await;
    let token = scim_token(&app, &org).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(create(&app, &token, &format!("g{i}@groupy.com")).await["id"].as_str().unwrap().to_string());
    }
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "eng-admins", "members": [{"value": ids[0]}]});
    let (s, _, group) = scim(&app, &token, Method::POST, "/Groups", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{group}");
    let gid = group["id"].as_str().unwrap().to_string();
    assert_eq!(group["members"].as_array().unwrap().len(), 1);

    let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Add", "path": "members", "value": [{"value": ids[1]}, {"value": ids[2]}]}]});
    let (s, _, _) = scim(&app, &token, Method::PATCH, &format!("/Groups/{gid}"), Some(add)).await;
    assert_eq!(s, StatusCode::OK);
    let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": ids[0]}]}]});
    let (s, _, _) = scim(&app, &token, Method::PATCH, &format!("/Groups/{gid}"), Some(remove)).await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, got) = scim(&app, &token, Method::GET, &format!("/Groups/{gid}"), None).await;
    let mut members: Vec<&str> =
        got["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
    members.sort();
    let mut expected = vec![ids[1].as_str(), ids[2].as_str()];
    expected.sort();
    assert_eq!(members, expected);

    let (_, _, excluded) = scim(
        &app,
        &token,
        Method::GET,
        "/Groups?excludedAttributes=members&filter=displayName%20eq%20%22ENG-admins%22",
        None,
    )
    .await;
    assert_eq!(excluded["totalResults"], 1);
    assert!(excluded["Resources"][0].get("members").is_none());
    let (_, _, by_member) =
        scim(&app, &token, Method::GET, &format!("/Groups?filter=members.value%20eq%20%22{}%22", ids[2]), None).await;
    assert_eq!(by_member["totalResults"], 1);
    let (_, _, user_view) = scim(&app, &token, Method::GET, &format!("/Users/{}", ids[1]), None).await;
    assert_eq!(user_view["groups"][0]["display"], "eng-admins");
    let (_, _, listed) = scim(&app, &token, Method::GET, "/Users?sortBy=userName", None).await;
    let in_group: Vec<bool> =
        listed["Resources"].as_array().unwrap().iter().map(|u| u["groups"][0]["display"] == "eng-admins").collect();
    assert_eq!(in_group, vec![false, true, true, false], "listed users carry their groups");
    // A user in two groups lists them by display name, read or looked up.
    let second = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Auditors", "members": [{"value": ids[1]}]});
    let (s, _, _) = scim(&app, &token, Method::POST, "/Groups", Some(second)).await;
    assert_eq!(s, StatusCode::CREATED);
    let names = |user: &Value| -> Vec<String> {
        user["groups"].as_array().unwrap().iter().map(|g| g["display"].as_str().unwrap().to_string()).collect()
    };
    let (_, _, user_view) = scim(&app, &token, Method::GET, &format!("/Users/{}", ids[1]), None).await;
    assert_eq!(names(&user_view), ["Auditors", "eng-admins"]);
    let (_, _, looked_up) =
        scim(&app, &token, Method::GET, &format!("/Users?filter=id%20eq%20%22{}%22", ids[1]), None).await;
    assert_eq!(looked_up["totalResults"], 1);
    assert_eq!(names(&looked_up["Resources"][0]), ["Auditors", "eng-admins"]);

    // An unknown member is refused and changes nothing.
    let bad = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": [{"value": "00000000-0000-0000-0000-000000000000"}]}]});
    let (s, _, body) = scim(&app, &token, Method::PATCH, &format!("/Groups/{gid}"), Some(bad)).await;
    assert_eq!((s, body["scimType"].as_str()), (StatusCode::BAD_REQUEST, Some("invalidValue")), "{body}");

    // PUT replaces the member list.
    let put = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "eng-admins", "members": [{"value": ids[3]}]});
    let (s, _, replaced) = scim(&app, &token, Method::PUT, &format!("/Groups/{gid}"), Some(put)).await;
    assert_eq!(s, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["members"].as_array().unwrap().len(), 1);
    let (s, _, _) = scim(&app, &token, Method::DELETE, &format!("/Groups/{gid}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = scim(&app, &token, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// GET of a group larger than a page of members streams the members: the
/// answer is whole, in id order, and under every projection the same JSON as
/// the list answer, which builds the group in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_streams_every_member_once_and_in_order() {
    use futures::stream::{self, StreamExt};
    let app = TestApp::spawn().await;
    let page = usize::try_from(roster::service::GROUP_MEMBER_PAGE).unwrap();
    let n = 2 * page + page / 2;
    let org = app.org("Crowd", i64::try_from(n).unwrap() + 1).await;
    let (token, other) = (scim_token(&app, &org).await, scim_token(&app, &app.org("Elsewhere", 1).await).await);
    // Every other user has a displayName, which a member then carries as `display`.
    let mut users: Vec<(String, Option<String>)> = stream::iter(0..n)
        .map(|i| {
            let (app, token) = (&app, &token);
            async move {
                let mut body = user(&format!("crowd{i}@crowd.com"));
                let display = i.is_multiple_of(2).then(|| format!("Crowd {i}"));
                if let Some(d) = &display {
                    body["displayName"] = d.clone().into();
                }
                let (s, _, created) = scim(app, token, Method::POST, "/Users", Some(body)).await;
                assert_eq!(s, StatusCode::CREATED, "{created}");
                (created["id"].as_str().unwrap().to_string(), display)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    users.sort();
    let (s, _, group) = scim(
        &app,
        &token,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "crowd"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{group}");
    let gid = group["id"].as_str().unwrap().to_string();

    // Same as the list's answer, under the projections that touch members.
    let queries = [
        "",
        "attributes=members.value",
        "attributes=displayName,members.display",
        "excludedAttributes=members",
        "excludedAttributes=members.display,meta",
        "excludedAttributes=members.value,members.$ref,members.type,members.display",
        "attributes=members.nosuch",
    ];
    let same_as_listed = |members: usize| {
        let (app, token, gid) = (&app, &token, &gid);
        async move {
            for query in queries {
                let (s, headers, got) = scim(app, token, Method::GET, &format!("/Groups/{gid}?{query}"), None).await;
                assert_eq!(s, StatusCode::OK, "{query}: {got}");
                assert_eq!(headers["content-type"], "application/scim+json", "{query}");
                let path = format!("/Groups?filter=displayName%20eq%20%22crowd%22&{query}");
                let (_, _, listed) = scim(app, token, Method::GET, &path, None).await;
                assert_eq!(got, listed["Resources"][0], "{members} members, `{query}`");
            }
        }
    };
    // An empty group has no `members` (as `project` leaves out an empty list).
    same_as_listed(0).await;
    let (_, _, empty) = scim(&app, &token, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert!(empty.get("members").is_none(), "{empty}");

    for batch in users.chunks(500) {
        let value: Vec<Value> = batch.iter().map(|(id, _)| json!({"value": id})).collect();
        let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": value}]});
        let (s, _, body) =
            scim(&app, &token, Method::PATCH, &format!("/Groups/{gid}?excludedAttributes=members"), Some(add)).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }

    let (s, headers, got) = scim(&app, &token, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert!(headers.get("content-length").is_none(), "the members are streamed, not counted out beforehand");
    let members = got["members"].as_array().unwrap();
    assert_eq!(members.len(), n);
    let base = app.url("/scim/v2");
    for (m, (id, display)) in members.iter().zip(&users) {
        let mut expected = json!({"value": id, "$ref": format!("{base}/Users/{id}"), "type": "User"});
        if let Some(d) = display {
            expected["display"] = d.clone().into();
        }
        assert_eq!(m, &expected);
    }
    assert_eq!(got["displayName"], "crowd");
    assert_eq!(got["meta"]["version"], format!("W/\"{}\"", 1 + n.div_ceil(500)));
    same_as_listed(n).await;

    let etag = headers["etag"].to_str().unwrap();
    let (s, headers, body) =
        scim_with(&app, &token, Method::GET, &format!("/Groups/{gid}"), None, &[("if-none-match", etag)]).await;
    assert_eq!((s, &body), (StatusCode::NOT_MODIFIED, &Value::Null));
    assert_eq!(headers["etag"], etag);
    let (s, _, body) = scim(&app, &other, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.to_string().contains("crowd"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_member_additions_to_one_group_all_land() {
    let app = TestApp::spawn().await;
    let org = app.org("Busy", 30).await;
    let token = scim_token(&app, &org).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(create(&app, &token, &format!("b{i}@busy.com")).await["id"].as_str().unwrap().to_string());
    }
    let (_, _, group) = scim(
        &app,
        &token,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "all"})),
    )
    .await;
    let gid = group["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for id in &ids {
        let (client, url, token) = (app.client.clone(), app.url(&format!("/scim/v2/Groups/{gid}")), token.clone());
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
        tasks.push(tokio::spawn(async move {
            client
                .patch(url)
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await
                .expect("request")
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (_, _, got) = scim(&app, &token, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!(got["members"].as_array().unwrap().len(), 20);
    assert_eq!(got["meta"]["version"], "W/\"21\"");
}

#[tokio::test]
async fn another_organizations_token_sees_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.org("Alpha", 5).await, app.org("Beta", 5).await);
    let (ta, tb) = (scim_token(&app, &a).await, scim_token(&app, &b).await);
    let u = create(&app, &ta, "secret@alpha.com").await;
    let uid = u["id"].as_str().unwrap();
    let (_, _, g) = scim(&app, &ta, Method::POST, "/Groups", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "alpha-team", "members": [{"value": uid}]}))).await;
    let gid = g["id"].as_str().unwrap();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]});
    for (method, path, body) in [
        (Method::GET, format!("/Users/{uid}"), None),
        (Method::PUT, format!("/Users/{uid}"), Some(user("secret@alpha.com"))),
        (Method::PATCH, format!("/Users/{uid}"), Some(patch.clone())),
        (Method::DELETE, format!("/Users/{uid}"), None),
        (Method::GET, format!("/Groups/{gid}"), None),
        (Method::PATCH, format!("/Groups/{gid}"), Some(patch)),
        (Method::DELETE, format!("/Groups/{gid}"), None),
    ] {
        let (s, _, body) = scim(&app, &tb, method.clone(), &path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(!body.to_string().contains("secret@alpha.com"));
    }
    for path in ["/Users", "/Groups", "/Users?filter=userName%20eq%20%22secret%40alpha.com%22"] {
        let (_, _, list) = scim(&app, &tb, Method::GET, path, None).await;
        assert_eq!(list["totalResults"], 0, "{path}");
    }
    // A member of another organization cannot be put in this one's group.
    let (_, _, bg) = scim(&app, &tb, Method::POST, "/Groups", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "beta", "members": [{"value": uid}]}))).await;
    assert_eq!(bg["status"], "400", "{bg}");
    let (_, _, still) = scim(&app, &ta, Method::GET, &format!("/Users/{uid}"), None).await;
    assert_eq!(still["active"], true);
    let (s, _, _) = scim(&app, "not-a-token", Method::GET, "/Users", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let res = app.client.get(app.url("/scim/v2/Users")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("www-authenticate"));
    // An admin API key is not a SCIM token.
    let (s, _, _) = scim(&app, &a.owner_key, Method::GET, "/Users", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn discovery_answers_and_refuses_writes() {
    let app = TestApp::spawn().await;
    let org = app.org("Disco", 5).await;
    let token = scim_token(&app, &org).await;
    let (s, _, spc) = scim(&app, &token, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(s, StatusCode::OK, "{spc}");
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["bulk"]["maxOperations"], 1000);
    assert_eq!(spc["filter"]["maxResults"], 200);
    assert_eq!(spc["etag"]["supported"], true);
    let (_, _, types) = scim(&app, &token, Method::GET, "/ResourceTypes", None).await;
    assert_eq!(types["totalResults"], 2);
    let (s, _, t) = scim(&app, &token, Method::GET, "/ResourceTypes/User", None).await;
    assert_eq!((s, t["endpoint"].as_str()), (StatusCode::OK, Some("/Users")));
    let (_, _, schemas) = scim(&app, &token, Method::GET, "/Schemas", None).await;
    assert!(schemas["totalResults"].as_i64().unwrap() >= 3);
    let (s, _, sch) =
        scim(&app, &token, Method::GET, "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", None).await;
    assert_eq!((s, sch["name"].as_str()), (StatusCode::OK, Some("User")));
    for path in ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"] {
        let (s, _, _) = scim(&app, &token, Method::POST, path, Some(json!({}))).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
    let (s, _, _) = scim(&app, &token, Method::GET, "/Me", None).await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn bulk_resolves_bulk_ids_and_stops_after_fail_on_errors() {
    let app = TestApp::spawn().await;
    let org = app.org("Bulky", 10).await;
    let token = scim_token(&app, &org).await;
    // The group refers to a user created later in the same request.
    let request = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Groups", "bulkId": "g1", "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "bulk", "members": [{"type": "User", "value": "bulkId:u1"}]}},
            {"method": "POST", "path": "/Users", "bulkId": "u1", "data": user("u1@bulky.com")},
            {"method": "POST", "path": "/Users", "bulkId": "u2", "data": user("u1@BULKY.com")}
        ]
    });
    let (s, _, body) = scim(&app, &token, Method::POST, "/Bulk", Some(request)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let ops = body["Operations"].as_array().unwrap();
    let status_of = |b: &str| ops.iter().find(|o| o["bulkId"] == b).map(|o| o["status"].as_str().unwrap().to_string());
    assert_eq!(status_of("u1").as_deref(), Some("201"));
    assert_eq!(status_of("g1").as_deref(), Some("201"));
    assert_eq!(status_of("u2").as_deref(), Some("409"));
    let (_, _, groups) = scim(&app, &token, Method::GET, "/Groups", None).await;
    assert_eq!(groups["Resources"][0]["members"].as_array().unwrap().len(), 1);

    let failing = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "failOnErrors": 1,
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "x", "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}},
            {"method": "POST", "path": "/Users", "bulkId": "y", "data": user("y@bulky.com")}
        ]
    });
    let (_, _, body) = scim(&app, &token, Method::POST, "/Bulk", Some(failing)).await;
    assert_eq!(body["Operations"].as_array().unwrap().len(), 1, "{body}");
    let (_, _, list) = scim(&app, &token, Method::GET, "/Users?filter=userName%20eq%20%22y%40bulky.com%22", None).await;
    assert_eq!(list["totalResults"], 0);

    let too_many: Vec<Value> = (0..1001).map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")})).collect();
    let (s, _, body) = scim(
        &app,
        &token,
        Method::POST,
        "/Bulk",
        Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": too_many})),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

#[tokio::test]
async fn bad_requests_get_scim_errors_with_the_right_type() {
    let app = TestApp::spawn().await;
    let org = app.org("Strict", 5).await;
    let token = scim_token(&app, &org).await;
    let u = create(&app, &token, "s@strict.com").await;
    let id = u["id"].as_str().unwrap();
    let cases: Vec<(Method, String, Value, u16, Option<&str>)> = vec![
        (
            Method::POST,
            "/Users".into(),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}),
            400,
            Some("invalidValue"),
        ),
        (
            Method::POST,
            "/Users".into(),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "   "}),
            400,
            Some("invalidValue"),
        ),
        (
            Method::PATCH,
            format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove"}]}),
            400,
            Some("noTarget"),
        ),
        (
            Method::PATCH,
            format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "emails[type eq", "value": "x"}]}),
            400,
            Some("invalidPath"),
        ),
        (
            Method::PATCH,
            format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "id", "value": "x"}]}),
            400,
            Some("mutability"),
        ),
        (Method::PATCH, format!("/Users/{id}"), json!({"Operations": []}), 400, Some("invalidSyntax")),
    ];
    for (method, path, body, status, scim_type) in cases {
        let (s, _, res) = scim(&app, &token, method.clone(), &path, Some(body.clone())).await;
        assert_eq!(s.as_u16(), status, "{method} {path} {body}: {res}");
        assert_eq!(res["scimType"].as_str(), scim_type, "{method} {path} {body}: {res}");
    }
    let res = app
        .client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scimType"], "invalidSyntax");
    let (_, _, still) = scim(&app, &token, Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(still["meta"]["version"], u["meta"]["version"], "nothing changed");
}

/// `roster bench scim` against a real server: every phase runs, and on a
/// healthy server none of its requests is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_runs_every_phase_without_errors() {
    let app = TestApp::spawn().await;
    let org = app.org("Loaded", 100).await;
    let opts = roster::bench::BenchOptions {
        url: app.url("/scim/v2"),
        token: scim_token(&app, &org).await,
        users: 30,
        concurrency: 4,
        reads: 20,
        batch: 7,
        run_id: "t".into(),
        // The server runs in this process.
        server_pid: Some(std::process::id()),
        existing: 0,
    };
    let reports = roster::bench::run(opts, |_| {}).await.unwrap();
    // Every phase reads the server's CPU time; together they used some.
    let cpu: Option<f64> = reports.iter().map(|r| r.server_cpu_ms.map(|ms| ms * r.requests as f64)).sum();
    assert!(cpu.is_some_and(|ms| ms > 0.0), "{reports:?}");
    let got: Vec<(&str, usize, usize)> = reports.iter().map(|r| (r.phase.as_str(), r.requests, r.errors)).collect();
    assert_eq!(
        got,
        vec![
            ("create users", 30, 0),
            ("userName eq lookups", 20, 0),
            ("get by id", 20, 0),
            ("list pages of 100", got[3].1, 0),
            ("group add x7", 5, 0),
            ("get the group with its members", 10, 0),
            ("healthz under 1 MiB load", 200, 0),
            ("deactivate", 30, 0),
            ("delete", 30, 0),
        ]
    );
    assert!(got[3].1 > 0, "no list pages were read");
    // Deleted users are gone for SCIM; their members are deprovisioned.
    assert_eq!(app.seats(&org.owner_key).await["active_members"], 1);
}
