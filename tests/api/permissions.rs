//! The permission matrix over real HTTP: every admin route called with a key
//! of every role, with no key, a bad or revoked key, and another
//! organization's Owner key. A refused call must answer a problem body and
//! leave the organization exactly as it was.

use crate::helpers::{id_of, read, TestApp, TestDb, TestOrg};
use crate::scim::{scim as scim_call, user};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use roster::clock::SystemClock;
use roster::model::Role;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::net::UdpSocket;

use crate::oidc_provider::{OidcProvider, ProviderClient, ProviderConfig};
use std::cell::RefCell;

thread_local! {
    /// The issuer of this test's OpenID provider (each test runs on a thread of its own).
    static ISSUER: RefCell<String> = const { RefCell::new(String::new()) };
}

fn issuer() -> String {
    ISSUER.with(|i| i.borrow().clone())
}

/// A direct connection to this test's provider, named after the organization.
fn connection(client_id: &str) -> Value {
    json!({"issuer": issuer(), "client_id": client_id, "client_secret": "matrix-secret"})
}

/// How a route's request body is made, from a tag unique to the acting organization.
#[derive(Clone, Copy)]
enum Body {
    Empty,
    Json(fn(&str) -> Value),
    Csv(fn(&str) -> String),
}

/// One admin route, the least role that may call it, and its success status.
struct Route {
    method: Method,
    /// `{member}`, `{suspended}`, `{invitation}`, `{scim}`, `{key}`, `{domain}`, `{ssoclient}`, `{mapping}`,
    /// `{webhook}`, `{delivery}` and `{request}` stand for the fixture's objects.
    path: &'static str,
    body: Body,
    min: Role,
    ok: StatusCode,
}

impl Route {
    fn changes(&self) -> bool {
        self.method != Method::GET
    }

    fn names_an_object(&self) -> bool {
        self.path.contains('{')
    }

    fn is_delete_organization(&self) -> bool {
        self.method == Method::DELETE && self.path == "/api/v1/organization"
    }

    /// Whether success writes an audit record. A domain check that DNS does
    /// not answer (as in these tests) leaves the status as it was: it is
    /// recorded on the domain, not in the audit log.
    fn audited(&self) -> bool {
        self.changes() && !self.path.ends_with("/verify")
    }
}

fn route(method: Method, path: &'static str, body: Body, min: Role, ok: StatusCode) -> Route {
    Route { method, path, body, min, ok }
}

/// Every admin route. Each change's body really changes the fixture, so a
/// refusal that let the change through would show in the snapshot.
fn routes() -> Vec<Route> {
    use Body::*;
    use Method as M;
    use Role::*;
    const OK: StatusCode = StatusCode::OK;
    const CREATED: StatusCode = StatusCode::CREATED;
    vec![
        route(M::GET, "/api/v1/organization", Empty, Read, OK),
        route(M::GET, "/api/v1/organization/features", Empty, Read, OK),
        route(M::GET, "/api/v1/organization/sso", Empty, Read, OK),
        route(M::GET, "/api/v1/seats", Empty, Read, OK),
        route(M::GET, "/api/v1/members", Empty, Read, OK),
        route(M::GET, "/api/v1/members/{member}", Empty, Read, OK),
        route(M::GET, "/api/v1/invitations", Empty, Read, OK),
        route(M::GET, "/api/v1/scim-tokens", Empty, Read, OK),
        route(M::GET, "/api/v1/api-keys", Empty, Read, OK),
        route(M::GET, "/api/v1/audit-log", Empty, Admin, OK),
        route(M::PATCH, "/api/v1/organization", Json(|_| json!({"name": "Renamed"})), Admin, OK),
        route(
            M::PUT,
            "/api/v1/organization/features",
            Json(|_| json!({"external_cloud": true, "analytics": false})),
            Admin,
            OK,
        ),
        route(
            M::PUT,
            "/api/v1/organization/sso",
            // Not the defaults, so that the call changes something.
            Json(|_| json!({"tenant_id": null, "enforce": false, "auto_assign": true, "default_role": "write"})),
            Admin,
            OK,
        ),
        route(M::PATCH, "/api/v1/organization/sso", Json(|_| json!({"auto_assign": true})), Admin, OK),
        // Seats are sold by the operator: an organization's change is a request.
        route(M::PUT, "/api/v1/seats", Json(|_| json!({"purchased": 12})), Admin, StatusCode::ACCEPTED),
        route(M::GET, "/api/v1/billing/requests", Empty, Admin, OK),
        route(
            M::POST,
            "/api/v1/billing/requests",
            Json(|_| json!({"plan": "enterprise_seat_monthly"})),
            Admin,
            CREATED,
        ),
        route(M::DELETE, "/api/v1/billing/requests/{request}", Empty, Admin, OK),
        route(
            M::POST,
            "/api/v1/members",
            Json(|tag| json!({"email": format!("new@{tag}.example.com"), "role": "write"})),
            Admin,
            CREATED,
        ),
        route(M::PATCH, "/api/v1/members/{member}", Json(|_| json!({"role": "admin"})), Admin, OK),
        route(M::POST, "/api/v1/members/{member}/suspend", Empty, Admin, OK),
        route(M::POST, "/api/v1/members/{suspended}/reactivate", Empty, Admin, OK),
        route(M::DELETE, "/api/v1/members/{member}", Empty, Admin, OK),
        route(
            M::POST,
            "/api/v1/invitations",
            Json(|tag| json!({"email": format!("invitee2@{tag}.example.com"), "role": "read"})),
            Admin,
            CREATED,
        ),
        route(
            M::POST,
            "/api/v1/invitations/bulk",
            Csv(|tag| format!("email,role\nbulk1@{tag}.example.com,read\nbulk2@{tag}.example.com,write\n")),
            Admin,
            CREATED,
        ),
        route(M::DELETE, "/api/v1/invitations/{invitation}", Empty, Admin, OK),
        route(M::POST, "/api/v1/invitations/{invitation}/resend", Empty, Admin, OK),
        route(M::GET, "/api/v1/role-mappings", Empty, Read, OK),
        route(
            M::POST,
            "/api/v1/role-mappings",
            Json(|tag| json!({"source": "idp_role", "value": format!("{tag}-role"), "role": "write"})),
            Admin,
            CREATED,
        ),
        route(M::DELETE, "/api/v1/role-mappings/{mapping}", Empty, Admin, OK),
        // The fixture's plan is not empty, so an apply changes something.
        route(M::GET, "/api/v1/reconcile/plan", Empty, Admin, OK),
        route(M::POST, "/api/v1/reconcile/apply", Empty, Admin, OK),
        route(M::GET, "/api/v1/events", Empty, Read, OK),
        route(M::POST, "/api/v1/scim-tokens", Json(|_| json!({"name": "Okta"})), Admin, CREATED),
        route(M::DELETE, "/api/v1/scim-tokens/{scim}", Empty, Admin, OK),
        route(M::POST, "/api/v1/api-keys", Json(|_| json!({"name": "CI", "role": "read"})), Admin, CREATED),
        route(M::DELETE, "/api/v1/api-keys/{key}", Empty, Admin, OK),
        route(M::GET, "/api/v1/domains", Empty, Read, OK),
        route(M::GET, "/api/v1/domains/{domain}", Empty, Read, OK),
        route(M::POST, "/api/v1/domains", Json(|tag| json!({"name": format!("{tag}.example.net")})), Admin, CREATED),
        route(M::POST, "/api/v1/domains/{domain}/verify", Empty, Admin, OK),
        route(M::DELETE, "/api/v1/domains/{domain}", Empty, Admin, StatusCode::NO_CONTENT),
        route(M::GET, "/api/v1/sso/clients", Empty, Read, OK),
        route(
            M::POST,
            "/api/v1/sso/clients",
            Json(|tag| json!({"name": "App", "redirect_uris": [format!("https://{tag}.example.com/new")]})),
            Admin,
            CREATED,
        ),
        route(M::DELETE, "/api/v1/sso/clients/{ssoclient}", Empty, Admin, OK),
        route(M::GET, "/api/v1/sso/connection", Empty, Read, OK),
        route(M::PUT, "/api/v1/sso/connection", Json(|tag| connection(&format!("changed-{tag}"))), Admin, OK),
        route(M::DELETE, "/api/v1/sso/connection", Empty, Admin, StatusCode::NO_CONTENT),
        route(M::GET, "/api/v1/webhooks", Empty, Admin, OK),
        route(
            M::POST,
            "/api/v1/webhooks",
            Json(|tag| json!({"url": format!("https://{tag}.example.com/new")})),
            Admin,
            CREATED,
        ),
        route(M::GET, "/api/v1/webhooks/{webhook}", Empty, Admin, OK),
        route(M::PATCH, "/api/v1/webhooks/{webhook}", Json(|_| json!({"description": "changed"})), Admin, OK),
        route(M::POST, "/api/v1/webhooks/{webhook}/rotate", Empty, Admin, OK),
        route(M::GET, "/api/v1/webhooks/{webhook}/deliveries", Empty, Admin, OK),
        route(M::POST, "/api/v1/webhooks/{webhook}/deliveries/{delivery}/replay", Empty, Admin, StatusCode::ACCEPTED),
        route(
            M::POST,
            "/api/v1/webhooks/{webhook}/replay",
            Json(|_| json!({"since_seq": 1})),
            Admin,
            StatusCode::ACCEPTED,
        ),
        route(M::DELETE, "/api/v1/webhooks/{webhook}", Empty, Admin, StatusCode::NO_CONTENT),
        route(M::GET, "/api/v1/setup-links", Empty, Admin, OK),
        route(M::POST, "/api/v1/setup-links", Json(|_| json!({"scopes": ["sso", "scim"]})), Admin, CREATED),
        route(M::DELETE, "/api/v1/setup-links/{setuplink}", Empty, Admin, StatusCode::NO_CONTENT),
        route(M::GET, "/api/v1/setup-status", Empty, Admin, OK),
        route(M::GET, "/api/v1/scim/requests", Empty, Admin, OK),
        route(M::DELETE, "/api/v1/organization", Empty, Owner, StatusCode::NO_CONTENT),
    ]
}

/// An organization with one object of each kind a route can name, made with its Owner key.
struct Fixture {
    org: TestOrg,
    /// Lower-case, unique in the test: used in the organization's emails.
    tag: String,
    /// An active member with the `write` role.
    member: String,
    /// A suspended member.
    suspended: String,
    /// A pending invitation.
    invitation: String,
    scim: String,
    /// An API key with the `write` role.
    key: String,
    /// A pending domain.
    domain: String,
    /// A product SSO client.
    ssoclient: String,
    /// A group mapping, made after its group's SCIM-provisioned member joined:
    /// the reconcile plan changes that member's role.
    mapping: String,
    /// A webhook endpoint (at a closed loopback port) and its failed first delivery.
    webhook: String,
    delivery: String,
    /// A pending billing request (11 seats).
    request: String,
    /// An active setup link.
    setuplink: String,
    /// Strings that identify this organization's data and must not show in another's answers.
    marks: Vec<String>,
}

async fn created(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    let (status, answer) = app.post(path, key, body).await;
    assert_eq!(status, StatusCode::CREATED, "fixture POST {path}: {answer}");
    answer
}

async fn fixture(app: &TestApp, tag: &str, seats: i64) -> Fixture {
    let org = app.org(tag, seats).await;
    let owner = org.owner_key.clone();
    let email = |who: &str| format!("{who}@{tag}.example.com");
    // Port 9 refuses connections: the fixture's events fail at once, leaving deliveries in the log.
    let webhook = created(app, &owner, "/api/v1/webhooks", json!({"url": "http://127.0.0.1:9/hooks"})).await;
    let webhook = id_of(&webhook["endpoint"]);
    let member = created(app, &owner, "/api/v1/members", json!({"email": email("member"), "role": "write"})).await;
    let suspended = created(app, &owner, "/api/v1/members", json!({"email": email("suspended"), "role": "read"})).await;
    let suspended = id_of(&suspended);
    let (status, body) = app.post(&format!("/api/v1/members/{suspended}/suspend"), &owner, json!({})).await;
    assert_eq!(status, StatusCode::OK, "fixture suspend: {body}");
    let invitation =
        created(app, &owner, "/api/v1/invitations", json!({"email": email("invitee"), "role": "read"})).await;
    let scim = created(app, &owner, "/api/v1/scim-tokens", json!({"name": "IdP"})).await;
    let key = created(app, &owner, "/api/v1/api-keys", json!({"name": "target", "role": "write"})).await;
    let domain = created(app, &owner, "/api/v1/domains", json!({"name": format!("{tag}.example.com")})).await;
    let (member, invitation, scim, key) = (id_of(&member), id_of(&invitation), id_of(&scim), id_of(&key));
    let domain = id_of(&domain);
    let ssoclient = created(
        app,
        &owner,
        "/api/v1/sso/clients",
        json!({"name": "Product", "redirect_uris": [format!("https://{tag}.example.com/cb")]}),
    )
    .await;
    let ssoclient = id_of(&ssoclient);
    let (status, body) = app
        .call(Method::PUT, "/api/v1/sso/connection", Some(&owner), Some(connection(&format!("fixture-{tag}"))))
        .await;
    assert_eq!(status, StatusCode::OK, "fixture SSO connection: {body}");
    // A SCIM-provisioned member in a group that is mapped only afterwards:
    // role drift the reconcile plan lists.
    let idp = created(app, &owner, "/api/v1/scim-tokens", json!({"name": "provisioning"})).await;
    let idp = idp["secret"].as_str().expect("secret").to_string();
    let (status, _, scimmed) = scim_call(app, &idp, Method::POST, "/Users", Some(user(&email("scimmed")))).await;
    assert_eq!(status, StatusCode::CREATED, "fixture SCIM user: {scimmed}");
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": format!("{tag}-admins"),
        "members": [{"value": id_of(&scimmed)}],
    });
    let (status, _, group) = scim_call(app, &idp, Method::POST, "/Groups", Some(group)).await;
    assert_eq!(status, StatusCode::CREATED, "fixture SCIM group: {group}");
    let mapping = created(
        app,
        &owner,
        "/api/v1/role-mappings",
        json!({"source": "group", "value": format!("{tag}-admins"), "role": "admin"}),
    )
    .await;
    let mapping = id_of(&mapping);
    app.deliver_webhooks().await;
    let (status, deliveries) = app.get(&format!("/api/v1/webhooks/{webhook}/deliveries"), &owner).await;
    assert_eq!(status, StatusCode::OK, "fixture deliveries: {deliveries}");
    let delivery = id_of(&deliveries["items"][0]);
    let request = created(app, &owner, "/api/v1/billing/requests", json!({"purchased": 11})).await;
    let request = id_of(&request);
    let setuplink = id_of(&created(app, &owner, "/api/v1/setup-links", json!({"scopes": ["domains"]})).await);
    let (status, plan) = app.get("/api/v1/reconcile/plan", &owner).await;
    assert_eq!(status, StatusCode::OK, "fixture plan: {plan}");
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(1), "fixture plan: {plan}");
    let marks = vec![
        ssoclient.clone(),
        format!("fixture-{tag}"),
        org.id.to_string(),
        org.owner_member.to_string(),
        org.owner_key.clone(),
        tag.to_string(),
        email("owner"),
        member.clone(),
        email("member"),
        suspended.clone(),
        email("suspended"),
        invitation.clone(),
        email("invitee"),
        scim.clone(),
        key.clone(),
        domain.clone(),
        mapping.clone(),
        email("scimmed"),
        webhook.clone(),
        delivery.clone(),
        request.clone(),
        setuplink.clone(),
    ];
    Fixture {
        org,
        tag: tag.to_string(),
        member,
        suspended,
        invitation,
        scim,
        key,
        domain,
        ssoclient,
        mapping,
        webhook,
        delivery,
        request,
        setuplink,
        marks,
    }
}

impl Fixture {
    fn path(&self, route: &Route) -> String {
        route
            .path
            .replace("{member}", &self.member)
            .replace("{suspended}", &self.suspended)
            .replace("{invitation}", &self.invitation)
            .replace("{scim}", &self.scim)
            .replace("{key}", &self.key)
            .replace("{domain}", &self.domain)
            .replace("{ssoclient}", &self.ssoclient)
            .replace("{mapping}", &self.mapping)
            .replace("{webhook}", &self.webhook)
            .replace("{delivery}", &self.delivery)
            .replace("{request}", &self.request)
            .replace("{setuplink}", &self.setuplink)
    }
}

/// Roster with its DNS look-ups sent to a loopback socket that never
/// answers (a domain check ends quickly, as transient, whatever the
/// network), and a real OpenID provider for organizations' SSO connections.
async fn spawn() -> (TestApp, (UdpSocket, OidcProvider)) {
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind a UDP socket");
    let addr = silent.local_addr().expect("addr");
    let idp = OidcProvider::start(&ProviderConfig::new().client(ProviderClient::new(
        "matrix",
        "matrix-secret",
        "http://127.0.0.1:9/sso/callback",
    )))
    .await;
    ISSUER.with(|i| *i.borrow_mut() = idp.issuer.clone());
    let idp_issuer = idp.issuer.clone();
    let adjust = move |c: &mut roster::config::Config| {
        c.dns_name_servers = vec![addr];
        c.dns_timeout_ms = 200;
        c.dns_attempts = 1;
        c.background_jobs = false;
        c.sso_dev_mode = true;
        c.webhooks.allow_private_addresses = true;
        c.tenant_connection = Some(crate::oidc_provider::tenant_connection(idp_issuer));
        // These tests send hundreds of refused credentials from one
        // address to check each refusal; the limit on failed
        // authentications has a test of its own (hardening.rs).
        c.rate_limit_failed_auth_per_minute = 0;
    };
    (TestApp::spawn_with(TestDb::new().await, adjust, Arc::new(SystemClock)).await, (silent, idp))
}

/// What the caller presents.
enum Auth<'a> {
    Nothing,
    Bearer(&'a str),
    /// A raw `Authorization` header value.
    Header(&'a str),
}

async fn send(app: &TestApp, route: &Route, path: &str, auth: Auth<'_>, tag: &str) -> (StatusCode, HeaderMap, Value) {
    let mut req = app.client.request(route.method.clone(), app.url(path));
    req = match auth {
        Auth::Nothing => req,
        Auth::Bearer(key) => req.bearer_auth(key),
        Auth::Header(value) => req.header(AUTHORIZATION, value),
    };
    req = match route.body {
        Body::Empty => req,
        Body::Json(make) => req.json(&make(tag)),
        Body::Csv(make) => req.header(CONTENT_TYPE, "text/csv").body(make(tag)),
    };
    let res = req.send().await.expect("request");
    let headers = res.headers().clone();
    let (status, body) = read(res).await;
    (status, headers, body)
}

/// Everything an organization's Owner can see of it. Credentials leave out
/// `last_used_at`, which authenticating a request may move.
#[derive(Debug, PartialEq)]
struct Snapshot {
    organization: Value,
    seats: Value,
    members: Value,
    invitations: Value,
    scim_tokens: Value,
    api_keys: Value,
    domains: Value,
    sso_clients: Value,
    sso_connection: (StatusCode, Value),
    role_mappings: Value,
    webhooks: Value,
    events: Value,
    audit: Vec<Value>,
}

async fn snapshot(app: &TestApp, owner_key: &str) -> Snapshot {
    async fn get(app: &TestApp, path: &str, key: &str) -> Value {
        let (status, body) = app.get(path, key).await;
        assert_eq!(status, StatusCode::OK, "snapshot GET {path}: {body}");
        body
    }
    fn without_last_use(mut list: Value) -> Value {
        for cred in list.as_array_mut().expect("a list of credentials") {
            cred.as_object_mut().expect("a credential").remove("last_used_at");
        }
        list
    }
    Snapshot {
        organization: get(app, "/api/v1/organization", owner_key).await,
        seats: app.seats(owner_key).await,
        members: get(app, "/api/v1/members?limit=200", owner_key).await,
        invitations: get(app, "/api/v1/invitations?limit=200", owner_key).await,
        scim_tokens: without_last_use(get(app, "/api/v1/scim-tokens", owner_key).await),
        api_keys: without_last_use(get(app, "/api/v1/api-keys", owner_key).await),
        domains: get(app, "/api/v1/domains", owner_key).await,
        sso_clients: get(app, "/api/v1/sso/clients", owner_key).await,
        sso_connection: app.get("/api/v1/sso/connection", owner_key).await,
        role_mappings: get(app, "/api/v1/role-mappings", owner_key).await,
        webhooks: get(app, "/api/v1/webhooks", owner_key).await,
        events: get(app, "/api/v1/events?limit=1000", owner_key).await,
        audit: app.audit(owner_key).await,
    }
}

fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, kind: &str, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["type"], format!("urn:roster:problem:{kind}"), "{what}: {body}");
    assert_eq!(body["status"], expected.as_u16(), "{what}: {body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {body}");
}

fn assert_unauthorized(status: StatusCode, headers: &HeaderMap, body: &Value, what: &str) {
    assert_problem(status, body, StatusCode::UNAUTHORIZED, "unauthorized", what);
    let challenge = headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "{what}: WWW-Authenticate is `{challenge}`");
}

/// Checks what an allowed read answered is about the fixture.
fn assert_read_is_about(route: &Route, body: &Value, fx: &Fixture, what: &str) {
    let text = body.to_string();
    let expected = match route.path {
        "/api/v1/organization" => Some(fx.org.id.to_string()),
        "/api/v1/members" | "/api/v1/members/{member}" => Some(fx.member.clone()),
        "/api/v1/invitations" => Some(fx.invitation.clone()),
        "/api/v1/scim-tokens" => Some(fx.scim.clone()),
        "/api/v1/api-keys" => Some(fx.key.clone()),
        "/api/v1/audit-log" => Some(fx.org.id.to_string()),
        "/api/v1/domains" | "/api/v1/domains/{domain}" => Some(fx.domain.clone()),
        "/api/v1/sso/clients" => Some(fx.ssoclient.clone()),
        "/api/v1/sso/connection" => Some(format!("fixture-{}", fx.tag)),
        "/api/v1/role-mappings" => Some(fx.mapping.clone()),
        "/api/v1/reconcile/plan" => Some(fx.org.id.to_string()),
        "/api/v1/events" => Some(fx.member.clone()),
        "/api/v1/webhooks" | "/api/v1/webhooks/{webhook}" => Some(fx.webhook.clone()),
        "/api/v1/webhooks/{webhook}/deliveries" => Some(fx.delivery.clone()),
        "/api/v1/billing/requests" => Some(fx.request.clone()),
        "/api/v1/setup-links" => Some(fx.setuplink.clone()),
        "/api/v1/seats" => {
            assert_eq!(body["purchased"], 10, "{what}: {body}");
            None
        }
        _ => None,
    };
    if let Some(expected) = expected {
        assert!(text.contains(&expected), "{what}: the answer does not show {expected}: {text}");
    }
}

/// Calls each selected route with a key of each role on a fresh organization:
/// roles at or above the route's minimum succeed (a change leaves an audit
/// record), lower roles get 403 and change nothing.
async fn check_role_matrix(select: impl Fn(&Route) -> bool) {
    let (app, _dns) = spawn().await;
    let selected: Vec<Route> = routes().into_iter().filter(|r| select(r)).collect();
    assert!(!selected.is_empty());
    let mut n = 0;
    for route in &selected {
        for &role in Role::ALL {
            n += 1;
            let fx = fixture(&app, &format!("matrixorg{n}"), 10).await;
            let key = app.key(&fx.org, role).await;
            let path = fx.path(route);
            let what = format!("{role} key, {} {path}", route.method);
            let before = snapshot(&app, &fx.org.owner_key).await;
            let (status, _, body) = send(&app, route, &path, Auth::Bearer(&key), &fx.tag).await;
            if !role.at_least(route.min) {
                assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden", &what);
                let after = snapshot(&app, &fx.org.owner_key).await;
                assert_eq!(after, before, "{what} was refused but changed the organization");
                continue;
            }
            assert_eq!(status, route.ok, "{what}: {body}");
            if route.is_delete_organization() {
                let orgs = app.roster.list_organizations().await.expect("list organizations");
                assert!(orgs.iter().all(|o| o.id != fx.org.id), "{what}: the organization is still there");
                let (status, body) = app.get("/api/v1/organization", &fx.org.owner_key).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "the deleted organization's key still works: {body}");
            } else if route.changes() {
                let after = snapshot(&app, &fx.org.owner_key).await;
                assert_ne!(after, before, "{what} answered {status} but changed nothing");
                if route.audited() {
                    assert!(
                        after.audit.len() > before.audit.len(),
                        "{what} answered {status} but left no audit record"
                    );
                }
            } else {
                assert_read_is_about(route, &body, &fx, &what);
                assert_eq!(snapshot(&app, &fx.org.owner_key).await, before, "{what} is a read but changed something");
            }
        }
    }
}

#[tokio::test]
async fn reads_need_the_read_role() {
    check_role_matrix(|r| !r.changes()).await;
}

fn is_role_mapping_or_reconcile(r: &Route) -> bool {
    r.path.starts_with("/api/v1/role-mappings") || r.path.starts_with("/api/v1/reconcile")
}

fn is_webhook(r: &Route) -> bool {
    r.path.starts_with("/api/v1/webhooks")
}

#[tokio::test]
async fn organization_seat_credential_and_domain_changes_need_their_role() {
    check_role_matrix(|r| {
        r.changes()
            && !r.path.starts_with("/api/v1/members")
            && !r.path.starts_with("/api/v1/invitations")
            && !is_role_mapping_or_reconcile(r)
            && !is_webhook(r)
    })
    .await;
}

#[tokio::test]
async fn webhook_changes_need_the_admin_role() {
    check_role_matrix(|r| r.changes() && is_webhook(r)).await;
}

#[tokio::test]
async fn role_mapping_and_reconcile_changes_need_the_admin_role() {
    check_role_matrix(|r| r.changes() && is_role_mapping_or_reconcile(r)).await;
}

#[tokio::test]
async fn member_and_invitation_changes_need_the_admin_role() {
    check_role_matrix(|r| {
        r.changes() && (r.path.starts_with("/api/v1/members") || r.path.starts_with("/api/v1/invitations"))
    })
    .await;
}

#[tokio::test]
async fn the_matrix_covers_every_route_of_the_openapi_document() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/api/v1/openapi.json")).send().await.expect("request");
    let (status, doc) = read(res).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let mut documented = BTreeSet::new();
    // The API key routes; the sign-in routes under /sso take no API key, and
    // the operator's routes take only an operator key (tests/api/operator.rs).
    let admin = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.starts_with("/api/v1/") && !path.starts_with("/api/v1/operator/"));
    for (path, item) in admin {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let tested: BTreeSet<String> = routes()
        .iter()
        .map(|r| {
            let mut path = r.path.to_string();
            for placeholder in [
                "{member}",
                "{suspended}",
                "{invitation}",
                "{scim}",
                "{key}",
                "{domain}",
                "{ssoclient}",
                "{mapping}",
                "{webhook}",
                "{request}",
                "{setuplink}",
            ] {
                path = path.replace(placeholder, "{id}");
            }
            path = path.replace("{delivery}", "{delivery_id}");
            format!("{} {path}", r.method)
        })
        .collect();
    assert_eq!(tested, documented);
}

#[tokio::test]
async fn every_route_needs_a_live_api_key() {
    let (app, _dns) = spawn().await;
    let fx = fixture(&app, "authorg", 10).await;
    let owner = fx.org.owner_key.clone();
    // An Owner key, which would pass every permission check, revoked.
    let revoked = created(&app, &owner, "/api/v1/api-keys", json!({"name": "revoked", "role": "owner"})).await;
    let (status, body) =
        app.call(Method::DELETE, &format!("/api/v1/api-keys/{}", id_of(&revoked)), Some(&owner), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked = revoked["secret"].as_str().expect("secret").to_string();
    // A live SCIM token of the same organization is not an API key.
    let scim = created(&app, &owner, "/api/v1/scim-tokens", json!({"name": "not an API key"})).await;
    let scim = scim["secret"].as_str().expect("secret").to_string();
    let near_miss = format!("{owner}x");
    let basic = format!("Basic {owner}");
    let before = snapshot(&app, &owner).await;
    for route in routes() {
        let path = fx.path(&route);
        let callers = [
            ("no Authorization header", Auth::Nothing),
            ("a garbage token", Auth::Bearer("roster_ak_garbage")),
            ("the Owner key with a character added", Auth::Bearer(&near_miss)),
            ("a revoked Owner key", Auth::Bearer(&revoked)),
            ("a SCIM token", Auth::Bearer(&scim)),
            ("the Owner key under the Basic scheme", Auth::Header(&basic)),
            ("a Bearer scheme without a token", Auth::Header("Bearer")),
        ];
        for (who, auth) in callers {
            let what = format!("{} {path} with {who}", route.method);
            let (status, headers, body) = send(&app, &route, &path, auth, &fx.tag).await;
            assert_unauthorized(status, &headers, &body, &what);
        }
        let after = snapshot(&app, &owner).await;
        assert_eq!(after, before, "{} {path} was refused but changed the organization", route.method);
    }
}

#[tokio::test]
async fn another_organizations_owner_key_reaches_nothing_here() {
    let (app, _dns) = spawn().await;
    for (i, route) in routes().iter().enumerate() {
        let first = fixture(&app, &format!("alphaorg{i}"), 10).await;
        let owner = first.org.owner_key.clone();
        // Settings of the first organization that differ from the other's defaults.
        let (status, body) = app
            .call(
                Method::PUT,
                "/api/v1/organization/features",
                Some(&owner),
                Some(json!({"external_cloud": true, "analytics": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let tenant = format!("alpha-tenant-{i}");
        let sso = json!({"tenant_id": tenant, "enforce": true, "auto_assign": true, "default_role": "admin"});
        let (status, body) = app.call(Method::PUT, "/api/v1/organization/sso", Some(&owner), Some(sso)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut marks = first.marks.clone();
        marks.push(tenant);

        let other = fixture(&app, &format!("betaorg{i}"), 7).await;
        let path = first.path(route);
        let what = format!("{} {path} with another organization's Owner key", route.method);
        let before = snapshot(&app, &owner).await;
        let (status, _, body) = send(&app, route, &path, Auth::Bearer(&other.org.owner_key), &other.tag).await;
        if route.names_an_object() {
            assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found", &what);
        } else {
            // An organization-level route acts on the caller's own organization.
            assert_eq!(status, route.ok, "{what}: {body}");
            match route.path {
                "/api/v1/organization" if route.method == Method::GET => {
                    assert_eq!(body["id"], other.org.id.to_string(), "{what}: {body}")
                }
                "/api/v1/organization/features" if route.method == Method::GET => {
                    assert_eq!(body, json!({"external_cloud": false, "analytics": false}), "{what}")
                }
                "/api/v1/organization/sso" if route.method == Method::GET => {
                    assert_eq!(body["tenant_id"], Value::Null, "{what}: {body}");
                    assert_eq!(body["default_role"], "read", "{what}: {body}");
                }
                "/api/v1/seats" if route.method == Method::GET => {
                    assert_eq!(body["purchased"], 7, "{what}: {body}")
                }
                // The other organization's: a SCIM-provisioned user, no verified domain.
                "/api/v1/setup-status" => {
                    assert_eq!(
                        (body["user_provisioned"].as_bool(), body["domain_verified"].as_bool()),
                        (Some(true), Some(false)),
                        "{what}: {body}"
                    )
                }
                // Written in the background: the marks below check whose it is.
                "/api/v1/scim/requests" => assert!(body["items"].is_array(), "{what}: {body}"),
                _ if route.method == Method::GET => assert_read_is_about_other(route, &body, &other, &what),
                _ => {}
            }
        }
        let text = body.to_string();
        for mark in &marks {
            assert!(
                !text.contains(mark.as_str()),
                "{what}: the answer shows the first organization's `{mark}`: {text}"
            );
        }
        let after = snapshot(&app, &owner).await;
        assert_eq!(after, before, "{what} changed the first organization");
    }
}

fn assert_read_is_about_other(route: &Route, body: &Value, other: &Fixture, what: &str) {
    let expected = match route.path {
        "/api/v1/members" => &other.member,
        "/api/v1/invitations" => &other.invitation,
        "/api/v1/scim-tokens" => &other.scim,
        "/api/v1/api-keys" => &other.key,
        "/api/v1/audit-log" => &other.org.id.to_string(),
        "/api/v1/domains" => &other.domain,
        "/api/v1/sso/clients" => &other.ssoclient,
        "/api/v1/sso/connection" => &format!("fixture-{}", other.tag),
        "/api/v1/role-mappings" => &other.mapping,
        "/api/v1/reconcile/plan" => &other.org.id.to_string(),
        "/api/v1/events" => &other.member,
        "/api/v1/webhooks" => &other.webhook,
        "/api/v1/billing/requests" => &other.request,
        "/api/v1/setup-links" => &other.setuplink,
        path => panic!("no check for GET {path}"),
    };
    assert!(body.to_string().contains(expected.as_str()), "{what}: the caller's own {expected} is missing: {body}");
}

#[tokio::test]
async fn an_admin_cannot_grant_or_take_away_owner_powers() {
    let (app, _dns) = spawn().await;
    let fx = fixture(&app, "ownerorg", 10).await;
    let owner = fx.org.owner_key.clone();
    let admin = app.key(&fx.org, Role::Admin).await;
    let (status, keys) = app.get("/api/v1/api-keys", &owner).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let owner_key_id = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["role"] == "owner")
        .map(id_of)
        .expect("the organization's Owner key");
    let owner_member = fx.org.owner_member;
    let member = fx.member.clone();

    let refused: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/api/v1/api-keys".into(), Some(json!({"name": "escalate", "role": "owner"}))),
        (Method::DELETE, format!("/api/v1/api-keys/{owner_key_id}"), None),
        (Method::PATCH, format!("/api/v1/members/{member}"), Some(json!({"role": "owner"}))),
        (Method::PATCH, format!("/api/v1/members/{owner_member}"), Some(json!({"role": "admin"}))),
        (Method::POST, format!("/api/v1/members/{owner_member}/suspend"), None),
        (Method::DELETE, format!("/api/v1/members/{owner_member}"), None),
        (Method::POST, "/api/v1/members".into(), Some(json!({"email": "boss@ownerorg.example.com", "role": "owner"}))),
        (
            Method::POST,
            "/api/v1/invitations".into(),
            Some(json!({"email": "boss@ownerorg.example.com", "role": "owner"})),
        ),
    ];
    let before = snapshot(&app, &owner).await;
    for (method, path, body) in refused {
        let what = format!("Admin key, {method} {path} {}", body.clone().unwrap_or_default());
        let (status, answer) = app.call(method, &path, Some(&admin), body).await;
        assert_problem(status, &answer, StatusCode::FORBIDDEN, "forbidden", &what);
        assert_eq!(snapshot(&app, &owner).await, before, "{what} was refused but changed the organization");
    }
    let (status, answer) =
        app.post_csv(&admin, "email,role\nboss@ownerorg.example.com,owner\nok@ownerorg.example.com,read\n").await;
    assert_problem(status, &answer, StatusCode::FORBIDDEN, "forbidden", "Admin key, bulk invitation of an Owner");
    assert_eq!(snapshot(&app, &owner).await, before, "a refused bulk upload changed the organization");

    // The Owner key still works.
    let (status, body) = app.get("/api/v1/audit-log", &owner).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // What is within an Admin's reach works with the same key.
    let admin_key = created(&app, &admin, "/api/v1/api-keys", json!({"name": "peer", "role": "admin"})).await;
    let (status, body) =
        app.call(Method::DELETE, &format!("/api/v1/api-keys/{}", id_of(&admin_key)), Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(Method::PATCH, &format!("/api/v1/members/{member}"), Some(&admin), Some(json!({"role": "admin"})))
        .await;
    assert_eq!((status, body["role"].clone()), (StatusCode::OK, json!("admin")), "{body}");

    // And an Owner can do what the Admin could not.
    let second_owner = app.key(&fx.org, Role::Owner).await;
    created(&app, &second_owner, "/api/v1/api-keys", json!({"name": "another owner", "role": "owner"})).await;
    let (status, body) = app
        .call(Method::PATCH, &format!("/api/v1/members/{member}"), Some(&second_owner), Some(json!({"role": "owner"})))
        .await;
    assert_eq!((status, body["role"].clone()), (StatusCode::OK, json!("owner")), "{body}");
    let (status, body) =
        app.call(Method::DELETE, &format!("/api/v1/api-keys/{owner_key_id}"), Some(&second_owner), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.get("/api/v1/organization", &owner).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked Owner key still works: {body}");
}
