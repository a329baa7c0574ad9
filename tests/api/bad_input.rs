//! Bad input: malformed, mistyped, oversized or invalid requests get a 4xx
//! `application/problem+json` answer (the harness's `read` checks the
//! content type) and change nothing: same audit log, seats, members,
//! invitations, credentials and domains as before.

use crate::helpers::{read, TestApp, TestOrg};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// What an organization's Owner can see of it; credentials without `last_used_at`.
#[derive(Debug, PartialEq)]
struct State {
    audit_len: usize,
    organization: Value,
    seats: Value,
    members: Value,
    invitations: Value,
    credentials: Vec<Value>,
    domains: Value,
}

async fn state(app: &TestApp, key: &str) -> State {
    let mut credentials = Vec::new();
    for path in ["/api/v1/api-keys", "/api/v1/scim-tokens"] {
        let (status, mut list) = app.get(path, key).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        for cred in list.as_array_mut().expect("a list") {
            cred.as_object_mut().expect("a credential").remove("last_used_at");
        }
        credentials.push(list);
    }
    let get = |path: &'static str| async move {
        let (status, body) = app.get(path, key).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    };
    State {
        audit_len: app.audit(key).await.len(),
        organization: get("/api/v1/organization").await,
        seats: app.seats(key).await,
        members: get("/api/v1/members?limit=200").await,
        invitations: get("/api/v1/invitations?limit=200").await,
        credentials,
        domains: get("/api/v1/domains").await,
    }
}

/// An organization with a member, a pending invitation and a pending domain.
struct Setup {
    app: TestApp,
    org: TestOrg,
    member: String,
    invitation: String,
    domain: String,
}

async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    let org = app.org("badorg", 5).await;
    let (status, member) = app
        .post("/api/v1/members", &org.owner_key, json!({"email": "member@badorg.example.com", "role": "write"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let (status, invitation) = app
        .post("/api/v1/invitations", &org.owner_key, json!({"email": "invitee@badorg.example.com", "role": "read"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    let (status, domain) = app.post("/api/v1/domains", &org.owner_key, json!({"name": "badorg.example.com"})).await;
    assert_eq!(status, StatusCode::CREATED, "{domain}");
    let id = |v: &Value| v["id"].as_str().expect("id").to_string();
    Setup { member: id(&member), invitation: id(&invitation), domain: id(&domain), app, org }
}

/// One bad request and the problem it must get.
struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: StatusCode,
    /// The end of the problem `type` URN.
    kind: &'static str,
}

fn json_case(method: Method, path: &str, body: &str, status: StatusCode, kind: &'static str) -> Case {
    Case {
        method,
        path: path.to_string(),
        content_type: Some("application/json"),
        body: Some(body.as_bytes().to_vec()),
        status,
        kind,
    }
}

fn get_case(path: &str, status: StatusCode, kind: &'static str) -> Case {
    Case { method: Method::GET, path: path.to_string(), content_type: None, body: None, status, kind }
}

impl Setup {
    /// Sends each case with the Owner key; checks its problem and that nothing changed.
    async fn expect_refused(&self, cases: Vec<Case>) -> Vec<Value> {
        let key = &self.org.owner_key;
        let mut answers = Vec::new();
        for case in cases {
            let shown = case.body.as_ref().map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned());
            let what = format!("{} {} {}", case.method, case.path, shown.unwrap_or_default());
            let before = state(&self.app, key).await;
            let mut req = self.app.client.request(case.method.clone(), self.app.url(&case.path)).bearer_auth(key);
            if let Some(content_type) = case.content_type {
                req = req.header(CONTENT_TYPE, content_type);
            }
            if let Some(body) = case.body {
                req = req.body(body);
            }
            let (status, body) = read(req.send().await.expect("request")).await;
            assert_eq!(status, case.status, "{what}: {body}");
            assert_eq!(body["type"], format!("urn:roster:problem:{}", case.kind), "{what}: {body}");
            assert_eq!(body["status"], case.status.as_u16(), "{what}: {body}");
            assert_eq!(state(&self.app, key).await, before, "{what} was refused but changed something");
            answers.push(body);
        }
        answers
    }
}

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

#[tokio::test]
async fn malformed_and_mistyped_json_is_refused() {
    let s = setup().await;
    let member = format!("/api/v1/members/{}", s.member);
    let (post, put, patch) = (Method::POST, Method::PUT, Method::PATCH);
    let cases = vec![
        // Malformed JSON: 400.
        json_case(
            post.clone(),
            "/api/v1/members",
            r#"{"email": "new@badorg.example.com", "role": "#,
            BAD_REQUEST,
            "malformed-json",
        ),
        json_case(post.clone(), "/api/v1/members", "not json", BAD_REQUEST, "malformed-json"),
        json_case(
            post.clone(),
            "/api/v1/members",
            r#"{"email":"new@badorg.example.com","role":"read",}"#,
            BAD_REQUEST,
            "malformed-json",
        ),
        json_case(post.clone(), "/api/v1/members", "", BAD_REQUEST, "malformed-json"),
        json_case(put.clone(), "/api/v1/seats", "{purchased: 6}", BAD_REQUEST, "malformed-json"),
        // Unknown fields: 422.
        json_case(
            post.clone(),
            "/api/v1/members",
            r#"{"email":"new@badorg.example.com","role":"read","admin":true}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(put.clone(), "/api/v1/seats", r#"{"purchased":6,"price":10}"#, UNPROCESSABLE, "validation"),
        json_case(
            put.clone(),
            "/api/v1/organization/features",
            r#"{"external_cloud":true,"analytics":false,"beta":true}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(patch.clone(), "/api/v1/organization", r#"{"name":"Other","id":"x"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/scim-tokens", r#"{"name":"IdP","role":"read"}"#, UNPROCESSABLE, "validation"),
        json_case(patch.clone(), &member, r#"{"role":"admin","status":"suspended"}"#, UNPROCESSABLE, "validation"),
        // Wrong types and missing fields: 422.
        json_case(post.clone(), "/api/v1/members", r#"{"email":42,"role":"read"}"#, UNPROCESSABLE, "validation"),
        json_case(
            post.clone(),
            "/api/v1/members",
            r#"{"email":"new@badorg.example.com"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(post.clone(), "/api/v1/members", "[]", UNPROCESSABLE, "validation"),
        json_case(put.clone(), "/api/v1/seats", r#"{"purchased":"ten"}"#, UNPROCESSABLE, "validation"),
        json_case(put.clone(), "/api/v1/seats", r#"{"purchased":6.5}"#, UNPROCESSABLE, "validation"),
        json_case(put.clone(), "/api/v1/seats", r#"{"purchased":null}"#, UNPROCESSABLE, "validation"),
        json_case(
            put.clone(),
            "/api/v1/organization/features",
            r#"{"external_cloud":"yes","analytics":false}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            put.clone(),
            "/api/v1/organization/features",
            r#"{"external_cloud":true}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            put.clone(),
            "/api/v1/organization/sso",
            r#"{"tenant_id":null,"enforce":"no","auto_assign":false,"default_role":"read"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            post.clone(),
            "/api/v1/api-keys",
            r#"{"name":"CI","role":"read","expires_in_days":-1}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(post.clone(), "/api/v1/api-keys", r#"{"name":"CI"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/domains", r#"{"name":5}"#, UNPROCESSABLE, "validation"),
        json_case(
            post.clone(),
            "/api/v1/domains",
            r#"{"name":"acme.com","status":"verified"}"#,
            UNPROCESSABLE,
            "validation",
        ),
    ];
    let answers = s.expect_refused(cases).await;
    // A validation problem says what was wrong.
    assert!(answers[5]["detail"].as_str().is_some_and(|d| d.contains("admin")), "{}", answers[5]);
}

#[tokio::test]
async fn invalid_values_are_refused() {
    let s = setup().await;
    let member = format!("/api/v1/members/{}", s.member);
    let (post, put, patch) = (Method::POST, Method::PUT, Method::PATCH);
    let cases = vec![
        // Emails.
        json_case(
            post.clone(),
            "/api/v1/members",
            r#"{"email":"not-an-email","role":"read"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            post.clone(),
            "/api/v1/members",
            r#"{"email":"jane@nodot","role":"read"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            post.clone(),
            "/api/v1/invitations",
            r#"{"email":"not-an-email","role":"read"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(post.clone(), "/api/v1/invitations", r#"{"email":"","role":"read"}"#, UNPROCESSABLE, "validation"),
        json_case(
            post.clone(),
            "/api/v1/invitations",
            r#"{"email":"a b@badorg.example.com","role":"read"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(patch.clone(), "/api/v1/organization", r#"{"contact_email":"nope"}"#, UNPROCESSABLE, "validation"),
        // Roles.
        json_case(
            post.clone(),
            "/api/v1/members",
            r#"{"email":"new@badorg.example.com","role":"superuser"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            post.clone(),
            "/api/v1/invitations",
            r#"{"email":"new@badorg.example.com","role":"boss"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(patch.clone(), &member, r#"{"role":"root"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/api-keys", r#"{"name":"CI","role":"god"}"#, UNPROCESSABLE, "validation"),
        // Seats: negative or beyond the maximum.
        json_case(put.clone(), "/api/v1/seats", r#"{"purchased":-1}"#, UNPROCESSABLE, "validation"),
        json_case(put.clone(), "/api/v1/seats", r#"{"purchased":1000001}"#, UNPROCESSABLE, "validation"),
        json_case(put.clone(), "/api/v1/seats", r#"{"purchased":6,"policy":"unlimited"}"#, UNPROCESSABLE, "validation"),
        // SSO: nobody becomes an Owner by signing in; tenant IDs have a syntax.
        json_case(
            put.clone(),
            "/api/v1/organization/sso",
            r#"{"tenant_id":null,"enforce":false,"auto_assign":false,"default_role":"owner"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            put.clone(),
            "/api/v1/organization/sso",
            r#"{"tenant_id":"has space","enforce":false,"auto_assign":false,"default_role":"read"}"#,
            UNPROCESSABLE,
            "validation",
        ),
        // Names and plans.
        json_case(patch.clone(), "/api/v1/organization", r#"{"name":"   "}"#, UNPROCESSABLE, "validation"),
        json_case(patch.clone(), "/api/v1/organization", r#"{"name":"a\u0007b"}"#, UNPROCESSABLE, "validation"),
        json_case(patch.clone(), "/api/v1/organization", r#"{"plan":"free"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/scim-tokens", r#"{"name":""}"#, UNPROCESSABLE, "validation"),
        // Credential lifetimes.
        json_case(
            post.clone(),
            "/api/v1/api-keys",
            r#"{"name":"CI","role":"read","expires_in_days":0}"#,
            UNPROCESSABLE,
            "validation",
        ),
        json_case(
            post.clone(),
            "/api/v1/scim-tokens",
            r#"{"name":"IdP","expires_in_days":3651}"#,
            UNPROCESSABLE,
            "validation",
        ),
        // Domains nobody can prove for a whole organization, or that are not domains.
        json_case(post.clone(), "/api/v1/domains", r#"{"name":"com"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/domains", r#"{"name":"co.uk"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/domains", r#"{"name":"192.0.2.1"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/domains", r#"{"name":"intranet"}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/domains", r#"{"name":"   "}"#, UNPROCESSABLE, "validation"),
        json_case(post.clone(), "/api/v1/domains", r#"{"name":"bad_label!.example.com"}"#, UNPROCESSABLE, "validation"),
    ];
    let answers = s.expect_refused(cases).await;
    // The SSO refusal names its field.
    assert_eq!(answers[13]["field"], "default_role", "{}", answers[13]);
    assert_eq!(answers[10]["field"], "purchased", "{}", answers[10]);
}

/// A display name makes a valid RFC 5322 mailbox, but not an address to store.
#[tokio::test]
async fn an_email_with_a_display_name_is_refused() {
    let s = setup().await;
    let body = r#"{"email":"Jane <jane@badorg.example.com>","role":"read"}"#;
    let cases = vec![
        json_case(Method::POST, "/api/v1/members", body, UNPROCESSABLE, "validation"),
        json_case(Method::POST, "/api/v1/invitations", body, UNPROCESSABLE, "validation"),
        Case {
            method: Method::POST,
            path: "/api/v1/invitations/bulk".into(),
            content_type: Some("text/csv"),
            body: Some(b"\"Jane <jane@badorg.example.com>\",read\n".to_vec()),
            status: UNPROCESSABLE,
            kind: "bulk-rejected",
        },
    ];
    s.expect_refused(cases).await;
}

#[tokio::test]
async fn wrong_content_type_and_oversized_bodies_are_refused() {
    let s = setup().await;
    let valid = r#"{"email":"new@badorg.example.com","role":"read"}"#;
    let no_type = |method: Method, path: &str, body: &str| Case {
        method,
        path: path.to_string(),
        content_type: None,
        body: Some(body.as_bytes().to_vec()),
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        kind: "unsupported-media-type",
    };
    // Over the harness's 64 KiB limit; the JSON would otherwise be refused with 422 only.
    let padding = "a".repeat(80 * 1024);
    let big_json = format!(r#"{{"email":"new@badorg.example.com","role":"read","pad":"{padding}"}}"#);
    let mut big_csv = String::from("email,role\n");
    let mut i = 0;
    while big_csv.len() <= 80 * 1024 {
        big_csv.push_str(&format!("person{i}@badorg.example.com,read\n"));
        i += 1;
    }
    let cases = vec![
        no_type(Method::POST, "/api/v1/members", valid),
        no_type(Method::POST, "/api/v1/invitations", valid),
        no_type(Method::PUT, "/api/v1/seats", r#"{"purchased":6}"#),
        Case { content_type: Some("text/plain"), ..no_type(Method::POST, "/api/v1/members", valid) },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..no_type(Method::PATCH, "/api/v1/organization", r#"{"name":"Other"}"#)
        },
        Case {
            content_type: Some("text/csv"),
            ..no_type(Method::PUT, "/api/v1/organization/features", r#"{"external_cloud":true,"analytics":true}"#)
        },
        json_case(Method::POST, "/api/v1/members", &big_json, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
        Case {
            method: Method::POST,
            path: "/api/v1/invitations/bulk".into(),
            content_type: Some("text/csv"),
            body: Some(big_csv.into_bytes()),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "payload-too-large",
        },
    ];
    s.expect_refused(cases).await;
    // The limit is what refused the large body: the same request, small, is accepted.
    let (status, body) =
        s.app.post("/api/v1/members", &s.org.owner_key, serde_json::from_str(valid).expect("json")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn bad_paths_and_query_parameters_are_refused() {
    let s = setup().await;
    let path_case = |method: Method, path: &str| Case {
        method,
        path: path.to_string(),
        content_type: None,
        body: None,
        status: NOT_FOUND,
        kind: "not-found",
    };
    let unknown = uuid::Uuid::now_v7();
    let cases = vec![
        // A path parameter that is not a UUID names nothing.
        path_case(Method::GET, "/api/v1/members/not-a-uuid"),
        json_case(Method::PATCH, "/api/v1/members/123", r#"{"role":"admin"}"#, NOT_FOUND, "not-found"),
        path_case(Method::POST, "/api/v1/members/xyz/suspend"),
        path_case(Method::POST, "/api/v1/members/xyz/reactivate"),
        path_case(Method::DELETE, "/api/v1/members/%00"),
        path_case(Method::DELETE, "/api/v1/invitations/nope"),
        path_case(Method::DELETE, "/api/v1/scim-tokens/zzz"),
        path_case(Method::DELETE, &format!("/api/v1/api-keys/{}x", s.member)),
        // Nor does a UUID of nothing, or of a different kind of object.
        path_case(Method::GET, &format!("/api/v1/members/{unknown}")),
        path_case(Method::DELETE, &format!("/api/v1/members/{}", s.invitation)),
        path_case(Method::DELETE, &format!("/api/v1/invitations/{}", s.member)),
        path_case(Method::DELETE, &format!("/api/v1/api-keys/{unknown}")),
        path_case(Method::GET, "/api/v1/domains/nope"),
        path_case(Method::POST, "/api/v1/domains/xyz/verify"),
        path_case(Method::DELETE, &format!("/api/v1/domains/{}", s.member)),
        path_case(Method::GET, &format!("/api/v1/members/{}", s.domain)),
        // Query parameters that do not parse: 400.
        get_case("/api/v1/members?status=bogus", BAD_REQUEST, "invalid-request"),
        get_case("/api/v1/members?role=god", BAD_REQUEST, "invalid-request"),
        get_case("/api/v1/members?limit=ten", BAD_REQUEST, "invalid-request"),
        get_case("/api/v1/members?sort=email", BAD_REQUEST, "invalid-request"),
        get_case("/api/v1/invitations?status=bogus", BAD_REQUEST, "invalid-request"),
        get_case("/api/v1/audit-log?since=yesterday", BAD_REQUEST, "invalid-request"),
        get_case("/api/v1/audit-log?limit=-", BAD_REQUEST, "invalid-request"),
        // Page sizes out of range and cursors this API never returned: 422.
        get_case("/api/v1/members?limit=0", UNPROCESSABLE, "validation"),
        get_case("/api/v1/members?limit=100000", UNPROCESSABLE, "validation"),
        get_case("/api/v1/members?limit=-5", UNPROCESSABLE, "validation"),
        get_case("/api/v1/invitations?limit=0", UNPROCESSABLE, "validation"),
        get_case("/api/v1/invitations?limit=201", UNPROCESSABLE, "validation"),
        get_case("/api/v1/audit-log?limit=100000", UNPROCESSABLE, "validation"),
        get_case("/api/v1/members?cursor=not-a-cursor", UNPROCESSABLE, "validation"),
        get_case("/api/v1/invitations?cursor=zzz", UNPROCESSABLE, "validation"),
        get_case("/api/v1/audit-log?cursor=abc", UNPROCESSABLE, "validation"),
    ];
    let answers = s.expect_refused(cases).await;
    let cursor = answers.iter().rev().take(3).all(|a| a["field"] == "cursor");
    assert!(cursor, "cursor problems name the field: {answers:?}");
    // The largest page size is accepted, so the 422s above are about the range.
    let (status, body) = s.app.get("/api/v1/members?limit=200", &s.org.owner_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn bad_csv_uploads_are_refused_whole_with_line_numbers() {
    let s = setup().await;
    let csv = |body: &str, status: StatusCode, kind: &'static str| Case {
        method: Method::POST,
        path: "/api/v1/invitations/bulk".into(),
        content_type: Some("text/csv"),
        body: Some(body.as_bytes().to_vec()),
        status,
        kind,
    };
    // Line 3 is blank and some lines end in CRLF: numbers are those an editor shows.
    let bad_lines = "email,role\n\
        good@badorg.example.com,read\r\n\
        \n\
        not-an-email,read\r\n\
        b@badorg.example.com,boss\n\
        c@badorg.example.com\n\
        GOOD@badorg.example.com,write\n\
        d@badorg.example.com,read,extra\n";
    let cases = vec![
        csv("", UNPROCESSABLE, "validation"),
        csv("email,role\n", UNPROCESSABLE, "validation"),
        csv("\n\n  \n", UNPROCESSABLE, "validation"),
        csv(bad_lines, UNPROCESSABLE, "bulk-rejected"),
        // A good file but for one person who is already a member: nothing is created.
        csv("fresh@badorg.example.com,read\nmember@badorg.example.com,admin\n", UNPROCESSABLE, "bulk-rejected"),
    ];
    let answers = s.expect_refused(cases).await;
    for whole_file in [0, 1, 2] {
        assert_eq!(answers[whole_file]["field"], "file", "{}", answers[whole_file]);
    }
    let lines = |answer: &Value| -> Vec<u64> {
        answer["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {answer}"))
            .iter()
            .map(|e| {
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
                e["line"].as_u64().expect("line number")
            })
            .collect()
    };
    assert_eq!(lines(&answers[3]), vec![4, 5, 6, 7, 8], "{}", answers[3]);
    let duplicate = &answers[3]["errors"][3]["message"];
    assert!(duplicate.as_str().is_some_and(|m| m.contains("line 2")), "a duplicate names the first line: {duplicate}");
    assert_eq!(lines(&answers[4]), vec![2], "{}", answers[4]);

    // Not UTF-8 on line 3: refused, naming either the line or the whole file.
    let key = &s.org.owner_key;
    let before = state(&s.app, key).await;
    let res = s
        .app
        .client
        .post(s.app.url("/api/v1/invitations/bulk"))
        .bearer_auth(key)
        .header(CONTENT_TYPE, "text/csv")
        .body(b"email,role\nutf@badorg.example.com,read\n\xff\xfe@badorg.example.com,read\n".to_vec())
        .send()
        .await
        .expect("request");
    let (status, body) = read(res).await;
    assert_eq!(status, UNPROCESSABLE, "{body}");
    match body["type"].as_str() {
        Some("urn:roster:problem:bulk-rejected") => assert_eq!(lines(&body), vec![3], "{body}"),
        Some("urn:roster:problem:validation") => assert_eq!(body["field"], "file", "{body}"),
        _ => panic!("a non-UTF-8 upload got {body}"),
    }
    assert_eq!(state(&s.app, key).await, before, "a refused non-UTF-8 upload changed something");

    // The good lines of the refused uploads were not half-created: they can be invited now.
    let (status, body) =
        s.app.post_csv(&s.org.owner_key, "good@badorg.example.com,read\nfresh@badorg.example.com,read\n").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["created"].as_array().map(Vec::len), Some(2), "{body}");
}

/// A path or method no route has is bad input too: under `/api/v1` it gets
/// a problem body like every other refusal (a 405 keeps its `Allow` header).
#[tokio::test]
async fn unknown_paths_and_methods_answer_a_problem() {
    let s = setup().await;
    let key = &s.org.owner_key;
    let cases = [
        (Method::GET, "/api/v1/nope".to_string(), NOT_FOUND),
        (Method::GET, format!("/api/v1/members/{}/extra", s.member), NOT_FOUND),
        (Method::PUT, "/api/v1/members".to_string(), StatusCode::METHOD_NOT_ALLOWED),
        (Method::POST, "/api/v1/organization".to_string(), StatusCode::METHOD_NOT_ALLOWED),
        (Method::PATCH, "/api/v1/seats".to_string(), StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, path, expected) in cases {
        let what = format!("{method} {path}");
        let before = state(&s.app, key).await;
        let res = s.app.client.request(method, s.app.url(&path)).bearer_auth(key).send().await.expect("request");
        let status = res.status();
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (content_type, allow) = (header("content-type"), header("allow"));
        let text = res.text().await.expect("body");
        assert_eq!(status, expected, "{what}: {text}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{what} answered {status} without a problem body: `{text}`"
        );
        let body: Value = serde_json::from_str(&text).expect("a JSON problem");
        assert_eq!(body["status"], expected.as_u16(), "{what}: {body}");
        if expected == StatusCode::METHOD_NOT_ALLOWED {
            assert!(allow.is_some(), "{what}: a 405 without an Allow header");
        }
        assert_eq!(state(&s.app, key).await, before, "{what} changed something");
    }
}
