//! What a fuzzer and a security review found, held on both backends: values
//! PostgreSQL could not store or index are refused with the same 400 on
//! SQLite, long lists are checked in linear time within documented limits,
//! and every error keeps its route's dialect.

use crate::helpers::*;
use crate::scim::{scim, user};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

fn long(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// Users and Groups the organization holds, as SCIM lists them.
async fn totals(app: &TestApp, token: &str) -> (Value, Value) {
    let (s, _, users) = scim(app, token, Method::GET, "/Users?count=0", None).await;
    assert_eq!(s, StatusCode::OK, "{users}");
    let (s, _, groups) = scim(app, token, Method::GET, "/Groups?count=0", None).await;
    assert_eq!(s, StatusCode::OK, "{groups}");
    (users["totalResults"].clone(), groups["totalResults"].clone())
}

#[tokio::test]
async fn the_nul_character_is_refused_everywhere_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org("Nul", 10).await;
    let token = scim_token(&app, &org).await;
    let (s, _, ada) = scim(&app, &token, Method::POST, "/Users", Some(user("ada@nul.example.com"))).await;
    assert_eq!(s, StatusCode::CREATED, "{ada}");
    let ada_id = id_of(&ada);
    let (s, _, group) =
        scim(&app, &token, Method::POST, "/Groups", Some(json!({ "schemas": [GROUP_SCHEMA], "displayName": "Ops" })))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{group}");
    let group_id = id_of(&group);
    let before = totals(&app, &token).await;
    let audit_before = app.audit(&org.owner_key).await.len();

    let nul = "a\u{0}b";
    let with = |key: &str, value: Value| {
        let mut body = user("bob@nul.example.com");
        body[key] = value;
        body
    };
    let bodies: Vec<(Method, String, Value)> = vec![
        (Method::POST, "/Users".into(), with("userName", json!(nul))),
        (Method::POST, "/Users".into(), with("externalId", json!(nul))),
        (Method::POST, "/Users".into(), with("name", json!({ "givenName": nul }))),
        (Method::POST, "/Users".into(), with("displayName", json!(nul))),
        (Method::POST, "/Users".into(), with("roles", json!([{ "value": nul }]))),
        (Method::POST, "/Users".into(), with("emails", json!([{ "value": "bob@nul.example.com", "type": nul }]))),
        (Method::PUT, format!("/Users/{ada_id}"), with("userName", json!(nul))),
        (
            Method::PATCH,
            format!("/Users/{ada_id}"),
            json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{ "op": "replace", "path": "title", "value": nul }] }),
        ),
        (Method::POST, "/Groups".into(), json!({ "schemas": [GROUP_SCHEMA], "displayName": nul })),
        (
            Method::PATCH,
            format!("/Groups/{group_id}"),
            json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{ "op": "replace", "path": "displayName", "value": nul }] }),
        ),
        (
            Method::POST,
            "/Users/.search".into(),
            json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                    "filter": format!("userName eq \"{nul}\"") }),
        ),
    ];
    for (method, path, body) in bodies {
        let (s, _, answer) = scim(&app, &token, method.clone(), &path, Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path}: {answer}");
        assert_eq!(answer["scimType"], "invalidValue", "{method} {path}: {answer}");
        assert!(answer["detail"].as_str().unwrap().contains("NUL"), "{answer}");
    }
    for path in ["/Users?filter=meta.version%20co%20%22%00%22", "/Users?filter=userName%20eq%20%22a%00%22"] {
        let (s, _, answer) = scim(&app, &token, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["scimType"], "invalidValue", "{path}: {answer}");
    }
    // Escaped inside the filter's string, `"a\u0000"`: decoded by the filter parser.
    for path in ["/Users?filter=userName%20eq%20%22a%5Cu0000%22", "/Groups?filter=displayName%20co%20%22%5Cu0000%22"] {
        let (s, _, answer) = scim(&app, &token, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["scimType"], "invalidFilter", "{path}: {answer}");
    }
    assert_eq!(totals(&app, &token).await, before);
    let (_, ada_now) = {
        let (s, _, v) = scim(&app, &token, Method::GET, &format!("/Users/{ada_id}"), None).await;
        (s, v)
    };
    assert_eq!(ada_now["meta"]["version"], ada["meta"]["version"]);

    // The admin API: a problem naming where the character is.
    let (s, problem) = app
        .post("/api/v1/members", &org.owner_key, json!({ "email": "carol@nul.example.com", "role": "read\u{0}" }))
        .await;
    assert_problem(s, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(problem["field"], "role");
    let (s, problem) = app
        .post("/api/v1/invitations", &org.owner_key, json!({ "email": "dan\u{0}@nul.example.com", "role": "read" }))
        .await;
    assert_problem(s, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let (s, problem) = app.get("/api/v1/members?email=a%00b", &org.owner_key).await;
    assert_problem(s, &problem, StatusCode::BAD_REQUEST, "invalid-request");
    // The sign-in routes answer people with a page, this one too.
    let res = app.client.get(app.url("/sso/authorize?tenant_id=t%00")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["x-roster-sso-error"], "invalid_request");
    assert_eq!(app.audit(&org.owner_key).await.len(), audit_before);
}

#[tokio::test]
async fn lengths_are_held_to_the_advertised_limits_and_the_longest_allowed_values_are_stored() {
    let app = TestApp::spawn_with(TestDb::new().await, |c| c.request_body_limit_bytes = 1 << 20, clock()).await;
    let org = app.org("Long", 10).await;
    let token = scim_token(&app, &org).await;

    let (s, _, config) = scim(&app, &token, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(s, StatusCode::OK);
    let limits = &config["urn:roster:params:scim:ServiceProviderConfig:limits"];
    assert_eq!(limits["maxCharacters"]["indexed"], 512, "{config}");
    assert_eq!(limits["maxCharacters"]["other"], 8192, "{config}");

    // 512 characters of four bytes each: 2,048 bytes in every index,
    // within PostgreSQL's B-tree limit.
    let widest = long(512, '𝔘');
    let body = json!({
        "schemas": [USER_SCHEMA],
        "userName": widest,
        "externalId": widest,
        "displayName": widest,
        "title": long(8_192, 'é'),
        "emails": [{ "value": widest }],
    });
    let (s, _, created) = scim(&app, &token, Method::POST, "/Users", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let filter = format!("/Users?filter=externalId%20eq%20%22{}%22", urlencoding(&widest));
    let (s, _, found) = scim(&app, &token, Method::GET, &filter, None).await;
    assert_eq!((s, found["totalResults"].clone()), (StatusCode::OK, json!(1)), "{found}");
    let (s, _, group) = scim(
        &app,
        &token,
        Method::POST,
        "/Groups",
        Some(json!({ "schemas": [GROUP_SCHEMA], "displayName": long(512, '𝔘'), "externalId": long(512, '𝔘') })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{group}");

    let before = totals(&app, &token).await;
    let too_long = [
        ("userName", json!(long(2_700, 'a'))),
        ("externalId", json!(long(513, 'x'))),
        ("displayName", json!(long(513, 'd'))),
        ("emails", json!([{ "value": format!("{}@long.example.com", long(600, 'e')) }])),
        ("title", json!(long(8_193, 't'))),
    ];
    for (key, value) in too_long {
        let mut body = user("bob@long.example.com");
        body[key] = value;
        let (s, _, answer) = scim(&app, &token, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{key}: {answer}");
        assert_eq!(answer["scimType"], "invalidValue", "{key}: {answer}");
        assert!(answer["detail"].as_str().unwrap().contains("characters"), "{key}: {answer}");
    }
    let (s, _, answer) = scim(
        &app,
        &token,
        Method::POST,
        "/Groups",
        Some(json!({ "schemas": [GROUP_SCHEMA], "displayName": long(2_800, 'g') })),
    )
    .await;
    assert_eq!((s, answer["scimType"].clone()), (StatusCode::BAD_REQUEST, json!("invalidValue")), "{answer}");
    assert_eq!(totals(&app, &token).await, before);
}

fn clock() -> std::sync::Arc<dyn roster::clock::Clock> {
    std::sync::Arc::new(roster::clock::SystemClock)
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn long_lists_are_capped_and_checked_in_linear_time() {
    let app = TestApp::spawn_with(TestDb::new().await, |c| c.request_body_limit_bytes = 1 << 20, clock()).await;
    let org = app.org("Lists", 10).await;
    let token = scim_token(&app, &org).await;
    let before = totals(&app, &token).await;

    // ~38,000 emails fit in 1 MiB: refused by count before any comparison.
    let emails: Vec<Value> = (0..38_000).map(|i| json!({ "value": format!("{i}@x.io") })).collect();
    let mut body = user("ada@l.example.com");
    body["emails"] = Value::Array(emails);
    assert!(body.to_string().len() < 1 << 20);
    let (s, _, answer) = scim(&app, &token, Method::POST, "/Users", Some(body)).await;
    assert_eq!((s, answer["scimType"].clone()), (StatusCode::BAD_REQUEST, json!("invalidValue")), "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("at most 100"), "{answer}");

    // 10,001 members in a new Group: one too many.
    let members: Vec<Value> = (0..10_001).map(|_| json!({ "value": uuid::Uuid::new_v4() })).collect();
    let body = json!({ "schemas": [GROUP_SCHEMA], "displayName": "Big", "members": members });
    let (s, _, answer) = scim(&app, &token, Method::POST, "/Groups", Some(body)).await;
    assert_eq!((s, answer["scimType"].clone()), (StatusCode::BAD_REQUEST, json!("invalidValue")), "{answer}");

    // 8,000 names in `attributes` (the most a URL holds is less: a search).
    let search = |key: &str, names: Vec<String>| json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], key: names });
    let names: Vec<String> = (0..8_000).map(|i| format!("x{i}")).collect();
    let (s, _, answer) = scim(&app, &token, Method::POST, "/Users/.search", Some(search("attributes", names))).await;
    assert_eq!((s, answer["scimType"].clone()), (StatusCode::BAD_REQUEST, json!("invalidValue")), "{answer}");
    // The same name many times is one name.
    let names = vec!["userName".to_string(); 8_000];
    let (s, _, answer) =
        scim(&app, &token, Method::POST, "/Users/.search", Some(search("excludedAttributes", names))).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(totals(&app, &token).await, before);
}

/// Sends `request` over a raw connection and answers the status line, the
/// headers and the body.
async fn raw(app: &TestApp, request: &[u8]) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn every_error_keeps_its_routes_dialect() {
    let app = TestApp::spawn_with(TestDb::new().await, |c| c.request_timeout_secs = 1, clock()).await;
    let org = app.org("Dialect", 3).await;
    let token = scim_token(&app, &org).await;

    // A path that is not UTF-8, and the SCIM root with a slash.
    for path in ["/Users/%FF", "/", "/Groups/%C3%28/x"] {
        let (s, _, body) = scim(&app, &token, Method::GET, path, None).await;
        assert!(s.is_client_error(), "{path}: {s} {body}");
    }
    let res = app.client.get(app.url("/api/v1/members/%FF")).bearer_auth(&org.owner_key).send().await.unwrap();
    let (s, body) = read(res).await;
    assert!(s.is_client_error(), "{s} {body}");

    // A body that never arrives: 408 once the request timeout passes, with a body.
    let close = "Connection: close\r\n";
    let request = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\n{close}Authorization: Bearer {token}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let (status, head, body) = raw(&app, request.as_bytes()).await;
    assert_eq!(status, 408, "{head}\n{body}");
    assert!(head.contains("content-type: application/scim+json"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "408");
    let request = format!(
        "POST /api/v1/members HTTP/1.1\r\nHost: x\r\n{close}Authorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        org.owner_key
    );
    let (status, head, body) = raw(&app, request.as_bytes()).await;
    assert_eq!(status, 408, "{head}\n{body}");
    assert!(head.contains("content-type: application/problem+json"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], 408);

    // Heads past Roster's limits, under the HTTP layer's own: 414 and 431
    // with a body in the route's dialect.
    let long = "a".repeat(9 * 1024);
    let many: String = (0..150).map(|i| format!("X-Extra-{i}: {i}\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "b".repeat(40 * 1024));
    let cases = [
        (format!("/scim/v2/Users?filter={long}"), String::new(), 414),
        ("/scim/v2/Users".to_string(), many.clone(), 431),
        ("/scim/v2/Users".to_string(), big.clone(), 431),
        (format!("/api/v1/members?cursor={long}"), String::new(), 414),
        ("/api/v1/members".to_string(), many, 431),
        ("/api/v1/members".to_string(), big, 431),
    ];
    for (target, extra, expected) in cases {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n{close}Authorization: Bearer {token}\r\n{extra}\r\n");
        let (status, head, body) = raw(&app, request.as_bytes()).await;
        assert_eq!(status, expected, "{}: {head}\n{body}", &target[..20]);
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {head}\n{body}"));
        match target.starts_with("/scim") {
            true => {
                assert!(head.contains("content-type: application/scim+json"), "{head}");
                assert_eq!(body["status"], expected.to_string());
            }
            false => {
                assert!(head.contains("content-type: application/problem+json"), "{head}");
                assert_eq!(body["status"], expected);
            }
        }
        assert!(body["detail"].as_str().unwrap().contains("at most"), "{body}");
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_cut_off_and_health_checks_answer_at_the_cap() {
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.header_read_timeout_secs = 1;
            c.max_connections = 3;
        },
        clock(),
    )
    .await;
    let org = app.org("Crowded", 3).await;

    // A header byte every 300 ms never completes in time: the server hangs up.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(200) {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(std::time::Duration::from_millis(1), slow.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a client sending one header byte at a time held its connection");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());

    // Three connections that send nothing fill the server; while they are
    // open, health checks still answer and other requests get 503.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    // The server takes them in order: wait until the last one holds its slot.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, head, _) = raw(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200, "{head}");
    let request = format!(
        "GET /api/v1/organization HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        org.owner_key
    );
    let (status, head, body) = raw(&app, request.as_bytes()).await;
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("content-type: application/problem+json"), "{head}");

    // Idle connections are cut off after the header timeout too, and the
    // server takes requests again.
    let mut answered = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, _, _) = raw(&app, request.as_bytes()).await;
        if status == 200 {
            answered = true;
            break;
        }
    }
    assert!(answered, "idle connections kept their slots");
    for mut stream in idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "an idle connection stayed open");
    }
}

#[tokio::test]
async fn failed_authentications_and_sign_ins_are_limited_per_client_address() {
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.rate_limit_failed_auth_per_minute = 3;
            c.rate_limit_sign_in_per_minute = 2;
            c.trust_forwarded_for = true;
        },
        clock(),
    )
    .await;
    let org = app.org("Limited", 3).await;
    let token = scim_token(&app, &org).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];

    // SCIM: three bad tokens are 401; then the address waits, whatever it sends.
    for _ in 0..3 {
        let (s, _, body) =
            crate::scim::scim_with(&app, "roster_scim_wrong", Method::GET, "/Users", None, &from("10.0.0.1")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (s, headers, body) =
        crate::scim::scim_with(&app, "roster_scim_wrong", Method::GET, "/Users", None, &from("10.0.0.1")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], "20", "three a minute: one comes back every 20 s");
    let (s, _, _) = crate::scim::scim_with(&app, &token, Method::GET, "/Users", None, &from("10.0.0.1")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // Another address is not held back, and a valid token never spends.
    for _ in 0..5 {
        let (s, _, body) = crate::scim::scim_with(&app, &token, Method::GET, "/Users", None, &from("10.0.0.2")).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }

    // The admin API, in its own dialect.
    for expected in [401, 401, 401, 429] {
        let res = app
            .client
            .get(app.url("/api/v1/organization"))
            .bearer_auth("roster_ak_wrong")
            .header("x-forwarded-for", "10.0.0.3")
            .send()
            .await
            .unwrap();
        let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let (s, body) = read(res).await;
        assert_eq!(s.as_u16(), expected, "{body}");
        if expected == 429 {
            assert_problem(s, &body, StatusCode::TOO_MANY_REQUESTS, "too-many-requests");
            assert_eq!(retry_after.as_deref(), Some("20"));
        }
    }

    // Sign-ins started from one address: two a minute.
    let authorize =
        app.url("/sso/authorize?email=ada%40limited.example.com&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb");
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..2 {
        let res = no_redirects.get(&authorize).header("x-forwarded-for", "10.0.0.4").send().await.unwrap();
        assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let res = no_redirects.get(&authorize).header("x-forwarded-for", "10.0.0.4").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "30");
    assert_eq!(res.headers()["x-roster-sso-error"], "too_many_requests");
    assert!(res.text().await.unwrap().contains("Try again in 30 seconds"));

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("roster_rate_limited_total{limit=\"failed_auth\"}"), "{metrics}");
    assert!(metrics.contains("roster_rate_limited_total{limit=\"sign_in\"}"), "{metrics}");
}

#[tokio::test]
async fn only_a_trusted_proxys_forwarded_for_names_the_client_in_audit_records_and_limits() {
    let add_member = |app: &TestApp, key: String, email: &'static str, forwarded: Option<&'static str>| {
        let mut req = app.client.post(app.url("/api/v1/members")).bearer_auth(key);
        if let Some(chain) = forwarded {
            req = req.header("x-forwarded-for", chain);
        }
        req.json(&json!({"email": email, "role": "read"})).send()
    };
    let client_of = |audit: &[Value], email: &str| {
        let added = audit.iter().find(|e| e["action"] == "member.added" && e["after"].to_string().contains(email));
        added.unwrap_or_else(|| panic!("{email} audited")).get("client_address").cloned().unwrap_or(Value::Null)
    };

    // No trusted proxy: the peer is the client, whatever it forwards.
    let app = TestApp::spawn().await;
    let org = app.org("Direct", 5).await;
    let res = add_member(&app, org.owner_key.clone(), "a@direct.example.com", Some("203.0.113.7")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(client_of(&app.audit(&org.owner_key).await, "a@direct.example.com"), "127.0.0.1");

    // Loopback is the trusted proxy: the last address it forwards that is
    // not a proxy is the client; what the client wrote before it is not believed.
    let app = TestApp::spawn_with(
        TestDb::new().await,
        |c| {
            c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap(), "10.1.0.0/16".parse().unwrap()];
            c.rate_limit_failed_auth_per_minute = 2;
        },
        clock(),
    )
    .await;
    let org = app.org("Proxied", 5).await;
    let chain = Some("198.51.100.66, 203.0.113.9, 10.1.2.3");
    let res = add_member(&app, org.owner_key.clone(), "b@proxied.example.com", chain).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = add_member(&app, org.owner_key.clone(), "c@proxied.example.com", None).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let audit = app.audit(&org.owner_key).await;
    assert_eq!(client_of(&audit, "b@proxied.example.com"), "203.0.113.9");
    assert_eq!(client_of(&audit, "c@proxied.example.com"), "127.0.0.1", "nothing forwarded: the proxy itself");
    // Failed authentications count against the forwarded client, not the proxy.
    let bad = |chain: &'static str| {
        app.client
            .get(app.url("/api/v1/organization"))
            .bearer_auth("roster_ak_wrong")
            .header("x-forwarded-for", chain)
            .send()
    };
    for expected in [401, 401, 429] {
        assert_eq!(bad("203.0.113.9").await.unwrap().status().as_u16(), expected);
    }
    assert_eq!(
        bad("203.0.113.10").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "another client is not held back"
    );
    // A client cannot slip out of its limit by writing an address before its own.
    assert_eq!(bad("192.0.2.1, 203.0.113.9").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
}
