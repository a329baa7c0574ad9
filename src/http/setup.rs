//! The set-up pages under `/setup` that a setup link opens for an
//! organization's IT admin: guided single sign-on and SCIM steps for their
//! identity provider (texts in `templates/setup/providers/`), domains, a
//! test sign-in, the SCIM request log and the checklist. The link's token
//! becomes a cookie scoped to `/setup`; every page looks the link up again,
//! so a revoked or expired link stops at once. Nothing else of the
//! organization is reachable: no members, billing or audit log.

use super::portal::{message_page, problem_of, DomainRow};
use super::sso::{cookie, redirect, set_cookie, ATTEMPT_COOKIE};
use super::AppState;
use crate::domains::DomainName;
use crate::model::SetupScope;
use crate::secrets::{hashes_match, Secret};
use crate::service::{DirectConnectionInput, ServiceError, SetupAccess, SetupLinkRefused};
use crate::store::SetupStatus;
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use sha2::Digest;
use std::sync::LazyLock;

const SETUP_COOKIE: &str = "roster_setup";

/// The set-up pages: Roster's own styles and script, no framing, no referrer.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/setup", get(home))
        .route("/setup/{token}", get(enter))
        .route("/setup/sso", get(sso_providers))
        .route("/setup/sso/test", get(test_result).post(start_test))
        .route("/setup/sso/{provider}", get(sso_guide).post(save_connection))
        .route("/setup/scim", get(scim_providers))
        .route("/setup/scim/log", get(scim_log))
        .route("/setup/scim/token", post(create_token))
        .route("/setup/scim/{provider}", get(scim_guide))
        .route("/setup/domains", get(domains).post(add_domain))
        .route("/setup/domains/{id}/verify", post(verify_domain))
}

// ---- Identity provider guides ---------------------------------------------

/// One identity provider's steps, from `templates/setup/providers/<id>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Guide {
    pub id: String,
    pub name: String,
    pub order: u32,
    pub sso: SsoGuide,
    pub scim: ScimGuide,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SsoGuide {
    pub intro: String,
    pub steps: Vec<String>,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub success: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScimGuide {
    pub intro: String,
    pub steps: Vec<String>,
    pub keep: Vec<String>,
    pub remove: Vec<String>,
    pub success: String,
}

const GUIDE_FILES: &[(&str, &str)] = &[
    ("okta", include_str!("../../templates/setup/providers/okta.toml")),
    ("entra", include_str!("../../templates/setup/providers/entra.toml")),
    ("google", include_str!("../../templates/setup/providers/google.toml")),
    ("jumpcloud", include_str!("../../templates/setup/providers/jumpcloud.toml")),
    ("onelogin", include_str!("../../templates/setup/providers/onelogin.toml")),
    ("generic", include_str!("../../templates/setup/providers/generic.toml")),
];

/// A guide file read, or why it cannot be.
pub(crate) fn parse_guide(file: &str, text: &str) -> Result<Guide, String> {
    use figment::providers::{Format, Toml};
    let guide: Guide = figment::Figment::from(Toml::string(text)).extract().map_err(|e| format!("{file}: {e}"))?;
    if guide.id != file {
        return Err(format!("{file}: its id is `{}`", guide.id));
    }
    Ok(guide)
}

/// The guides, in their order; a file that cannot be read is left out (and logged).
static GUIDES: LazyLock<Vec<Guide>> = LazyLock::new(|| {
    let mut guides: Vec<Guide> = GUIDE_FILES
        .iter()
        .filter_map(|(file, text)| {
            parse_guide(file, text).map_err(|e| tracing::error!(error = %e, "a provider guide cannot be read")).ok()
        })
        .collect();
    guides.sort_by_key(|g| g.order);
    guides
});

fn guide(id: &str) -> Option<&'static Guide> {
    GUIDES.iter().find(|g| g.id == id)
}

/// A piece of a step: text, or a value to paste (shown as code).
pub(crate) struct StepPart {
    pub text: String,
    pub code: bool,
}

/// A step's text with its placeholders (`{redirect_uri}`…) filled in as
/// values to paste; the template escapes both.
fn step_parts(step: &str, values: &[(&str, &str)]) -> Vec<StepPart> {
    let mut parts = Vec::new();
    let mut rest = step;
    let mut text = String::new();
    while let Some(open) = rest.find('{') {
        let value = rest[open + 1..]
            .find('}')
            .and_then(|close| values.iter().find(|(name, _)| *name == &rest[open + 1..open + 1 + close]))
            .map(|(name, value)| (name.len(), *value));
        match value {
            Some((len, value)) => {
                text.push_str(&rest[..open]);
                parts.push(StepPart { text: std::mem::take(&mut text), code: false });
                parts.push(StepPart { text: value.to_string(), code: true });
                rest = &rest[open + len + 2..];
            }
            None => {
                text.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    text.push_str(rest);
    parts.push(StepPart { text, code: false });
    parts.retain(|p| p.code || !p.text.is_empty());
    parts
}

// ---- The frame, the link and its refusals ----------------------------------

/// What every set-up page shows around its content.
struct Frame {
    title: String,
    section: &'static str,
    org_name: String,
    expires: String,
    csrf: String,
    sso: bool,
    scim: bool,
    domains: bool,
    notice: Option<String>,
    problem: Option<String>,
}

/// An open link and the CSRF token its forms carry.
struct Opened {
    access: SetupAccess,
    csrf: String,
}

impl Opened {
    fn frame(&self, section: &'static str, title: &str) -> Frame {
        Frame {
            title: title.to_string(),
            section,
            org_name: self.access.org.name.clone(),
            expires: crate::service::human_time(self.access.link.expires_at),
            csrf: self.csrf.clone(),
            sso: self.access.allows(SetupScope::Sso),
            scim: self.access.allows(SetupScope::Scim),
            domains: self.access.allows(SetupScope::Domains),
            notice: None,
            problem: None,
        }
    }
}

fn render(status: StatusCode, body: askama::Result<String>) -> Response {
    let mut res = super::pages::html_with(status, body, CONTENT_SECURITY_POLICY);
    res.headers_mut().insert("referrer-policy", axum::http::HeaderValue::from_static("no-referrer"));
    res
}

fn message(status: StatusCode, title: &str, message: &str) -> Response {
    render(status, message_page(title, message))
}

fn refused_link(why: SetupLinkRefused) -> Response {
    let ask = "Ask the organization's administrator for a new set-up link.";
    match why {
        SetupLinkRefused::Unknown => message(
            StatusCode::NOT_FOUND,
            "This setup link does not work",
            &format!("The link is not one Roster issued, or its organization is gone. {ask}"),
        ),
        SetupLinkRefused::Expired => message(
            StatusCode::GONE,
            "This setup link has expired",
            &format!("Setup links work for a limited time, and this one's has passed. {ask}"),
        ),
        SetupLinkRefused::Revoked => message(
            StatusCode::GONE,
            "This setup link was revoked",
            &format!("The organization's administrator revoked this link. {ask}"),
        ),
    }
}

fn failure(e: &ServiceError) -> Response {
    let (status, text, _) = problem_of(e);
    message(status, if status.is_server_error() { "Something went wrong" } else { "This cannot be done" }, &text)
}

fn csrf_token(link_cookie: &str) -> String {
    let digest = sha2::Sha256::digest(format!("roster-setup-csrf:{link_cookie}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// The link this browser opened, still valid, allowing `scope` (any, when `None`).
async fn opened(s: &AppState, parts: &Parts, scope: Option<SetupScope>) -> Result<Opened, Response> {
    let Some(token) = cookie(&parts.headers, SETUP_COOKIE) else {
        return Err(message(
            StatusCode::UNAUTHORIZED,
            "Open your setup link",
            "These pages open from the set-up link the organization's administrator sent you. Open that link again.",
        ));
    };
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let access = match s.roster.open_setup_link(&token, request_id).await {
        Ok(Ok(access)) => access,
        Ok(Err(why)) => return Err(refused_link(why)),
        Err(e) => return Err(failure(&e)),
    };
    if let Some(scope) = scope.filter(|scope| !access.allows(*scope)) {
        let what = match scope {
            SetupScope::Sso => "single sign-on",
            SetupScope::Scim => "provisioning (SCIM)",
            SetupScope::Domains => "domains",
        };
        return Err(message(
            StatusCode::FORBIDDEN,
            "Not part of this setup link",
            &format!(
                "This setup link does not cover {what}. Ask the organization's administrator for a link that does."
            ),
        ));
    }
    Ok(Opened { access, csrf: csrf_token(&token) })
}

/// A posted form: the link allowing `scope`, the session's CSRF token and Roster's own origin.
async fn posted(s: &AppState, parts: &Parts, body: &[u8], scope: SetupScope) -> Result<(Opened, Form), Response> {
    let opened = opened(s, parts, Some(scope)).await?;
    let form = Form(url::form_urlencoded::parse(body).into_owned().collect());
    let sent = form.get("csrf");
    if !super::pages::same_origin(s, parts) || sent.is_empty() || !hashes_match(sent, &opened.csrf) {
        return Err(message(
            StatusCode::FORBIDDEN,
            "This form cannot be accepted",
            "The form was missing its security token or came from another site, so nothing was changed. Go back, \
             reload the page and try again.",
        ));
    }
    if form.0.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This form cannot be accepted",
            "The form holds a NUL character, which nothing here can store; nothing was changed.",
        ));
    }
    Ok((opened, form))
}

struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, key: &str) -> &str {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim()).unwrap_or("")
    }
}

fn answer(result: Result<Response, Response>) -> Response {
    result.unwrap_or_else(|refusal| refusal)
}

// ---- Entering, and the overview -------------------------------------------

/// The link itself: its token becomes this browser's cookie for `/setup`.
async fn enter(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    match s.roster.open_setup_link(&token, None).await {
        Ok(Ok(access)) => {
            let max_age = (access.link.expires_at - s.roster.now()).num_seconds().max(0) as u64;
            let mut res = redirect("/setup", vec![set_cookie(&s, SETUP_COOKIE, &token, "/setup", Some(max_age))]);
            res.headers_mut().insert("referrer-policy", axum::http::HeaderValue::from_static("no-referrer"));
            res
        }
        Ok(Err(why)) => refused_link(why),
        Err(e) => failure(&e),
    }
}

/// One line of the checklist.
pub(super) struct Check {
    pub key: &'static str,
    pub label: &'static str,
    pub done: bool,
}

pub(super) fn checks(status: SetupStatus) -> Vec<Check> {
    vec![
        Check { key: "domain_verified", label: "A domain is verified", done: status.domain_verified },
        Check { key: "sso_tested", label: "A test sign-in through the SSO connection worked", done: status.sso_tested },
        Check { key: "scim_received", label: "The first SCIM request arrived", done: status.scim_received },
        Check { key: "user_provisioned", label: "The first user was provisioned", done: status.user_provisioned },
    ]
}

#[derive(Template)]
#[template(path = "setup/home.html")]
struct HomePage {
    f: Frame,
    checks: Vec<Check>,
}

async fn home(State(s): State<AppState>, parts: Parts) -> Response {
    answer(
        async {
            let opened = opened(&s, &parts, None).await?;
            let status = s.roster.setup_status(&opened.access.actor).await.map_err(|e| failure(&e))?;
            let title = format!("Set up {}", opened.access.org.name);
            let page = HomePage { f: opened.frame("home", &title), checks: checks(status) };
            Ok(render(StatusCode::OK, page.render()))
        }
        .await,
    )
}

// ---- Single sign-on ---------------------------------------------------------

struct ProviderLink {
    id: &'static str,
    name: &'static str,
}

#[derive(Template)]
#[template(path = "setup/providers.html")]
struct ProvidersPage {
    f: Frame,
    base: &'static str,
    providers: Vec<ProviderLink>,
}

fn providers_page(opened: &Opened, section: &'static str, title: &str, base: &'static str) -> Response {
    let providers = GUIDES.iter().map(|g| ProviderLink { id: &g.id, name: &g.name }).collect();
    render(StatusCode::OK, ProvidersPage { f: opened.frame(section, title), base, providers }.render())
}

async fn sso_providers(State(s): State<AppState>, parts: Parts) -> Response {
    answer(
        opened(&s, &parts, Some(SetupScope::Sso))
            .await
            .map(|o| providers_page(&o, "sso", "Single sign-on", "/setup/sso")),
    )
}

#[derive(Template)]
#[template(path = "setup/sso.html")]
struct SsoPage {
    f: Frame,
    provider: &'static str,
    name: &'static str,
    intro: &'static str,
    steps: Vec<Vec<StepPart>>,
    redirect_uri: String,
    issuer: String,
    client_id: String,
    issuer_help: &'static str,
    client_id_help: &'static str,
    client_secret_help: &'static str,
    success: &'static str,
    connected: bool,
    /// Accept only ID tokens that say the email is verified.
    verified_only: bool,
}

fn no_such_provider() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "Roster has no guide for that identity provider. Pick one from the list.",
    )
}

async fn sso_page(
    s: &AppState,
    opened: &Opened,
    g: &'static Guide,
    notice: Option<String>,
    problem: Option<(StatusCode, String)>,
    typed: Option<(String, String, bool)>,
) -> Response {
    let redirect_uri = s.config.public_base_url.join("sso/callback").map(|u| u.to_string()).unwrap_or_default();
    let current = match s.roster.sso_connection(&opened.access.actor).await {
        Ok(c) => Some(c),
        Err(ServiceError::NotFound(_)) => None,
        Err(e) => return failure(&e),
    };
    let (issuer, client_id, verified_only) = typed
        .or_else(|| current.as_ref().map(|c| (c.issuer.clone(), c.client_id.clone(), c.require_email_verified)))
        .unwrap_or_else(|| (String::new(), String::new(), true));
    let values = [("redirect_uri", redirect_uri.as_str()), ("org_name", opened.access.org.name.as_str())];
    let mut f = opened.frame("sso", &format!("Single sign-on with {}", g.name));
    f.notice = notice;
    let status = problem.as_ref().map(|(status, _)| *status).unwrap_or(StatusCode::OK);
    f.problem = problem.map(|(_, text)| text);
    let page = SsoPage {
        f,
        provider: &g.id,
        name: &g.name,
        intro: &g.sso.intro,
        steps: g.sso.steps.iter().map(|step| step_parts(step, &values)).collect(),
        redirect_uri: redirect_uri.clone(),
        issuer,
        client_id,
        issuer_help: &g.sso.issuer,
        client_id_help: &g.sso.client_id,
        client_secret_help: &g.sso.client_secret,
        success: &g.sso.success,
        connected: current.is_some(),
        verified_only,
    };
    render(status, page.render())
}

async fn sso_guide(State(s): State<AppState>, parts: Parts, Path(provider): Path<String>) -> Response {
    answer(
        async {
            let opened = opened(&s, &parts, Some(SetupScope::Sso)).await?;
            let g = guide(&provider).ok_or_else(no_such_provider)?;
            Ok(sso_page(&s, &opened, g, None, None, None).await)
        }
        .await,
    )
}

async fn save_connection(
    State(s): State<AppState>,
    parts: Parts,
    Path(provider): Path<String>,
    body: Bytes,
) -> Response {
    answer(
        async {
            let (opened, form) = posted(&s, &parts, &body, SetupScope::Sso).await?;
            let g = guide(&provider).ok_or_else(no_such_provider)?;
            let input = DirectConnectionInput {
                issuer: form.get("issuer").to_string(),
                client_id: form.get("client_id").to_string(),
                client_secret: Secret::new(form.get("client_secret").to_string()),
                scopes: None,
                require_email_verified: Some(!form.get("require_email_verified").is_empty()),
            };
            let typed = (input.issuer.clone(), input.client_id.clone(), input.require_email_verified == Some(true));
            Ok(match s.roster.set_sso_connection(&opened.access.actor, input).await {
                Ok(_) => {
                    let notice = "Saved: Roster reached the provider's discovery document. Now run a test sign-in.";
                    sso_page(&s, &opened, g, Some(notice.into()), None, None).await
                }
                Err(e) => {
                    let (status, text, _) = problem_of(&e);
                    sso_page(&s, &opened, g, None, Some((status, text)), Some(typed)).await
                }
            })
        }
        .await,
    )
}

/// Sends the browser to the identity provider for a test sign-in.
async fn start_test(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    answer(
        async {
            let (opened, _) = posted(&s, &parts, &body, SetupScope::Sso).await?;
            let result_url = s.config.public_base_url.join("setup/sso/test").map(|u| u.to_string()).unwrap_or_default();
            let browser = cookie(&parts.headers, ATTEMPT_COOKIE);
            let actor = &opened.access.actor;
            match s.roster.begin_sso_test(actor, Some(opened.access.link.id), &result_url, browser).await {
                Ok(start) => {
                    let max_age = s.config.sso_attempt_ttl_secs;
                    let cookie = set_cookie(&s, ATTEMPT_COOKIE, start.browser.expose(), "/sso", Some(max_age));
                    Ok(redirect(start.provider_url.as_str(), vec![cookie]))
                }
                Err(e) => Ok(message(
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                    "The test sign-in cannot start",
                    &e.message,
                )),
            }
        }
        .await,
    )
}

/// A test sign-in's result as the page shows it.
struct TestView {
    ok: bool,
    outcome: String,
    organization: String,
    email: String,
    email_verified: String,
    role: String,
    role_source: String,
    seat: String,
    connection: String,
    issuer: String,
    at: String,
    claims: Vec<(String, String)>,
}

impl TestView {
    fn of(test: crate::store::SsoTest) -> Self {
        let r = &test.result;
        let text = |key: &str| match &r[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "—".into(),
            other => other.to_string(),
        };
        let claims = r["claims"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), claim_text(k, v))).collect())
            .unwrap_or_default();
        let email_verified = match r["email_verified"].as_bool() {
            Some(true) => "yes".to_string(),
            Some(false) => "no".to_string(),
            None => "not stated".to_string(),
        };
        TestView {
            ok: test.ok,
            outcome: text("outcome"),
            organization: text("organization"),
            email: text("email"),
            email_verified,
            role: text("role"),
            role_source: text("role_source"),
            seat: text("seat"),
            connection: text("connection"),
            issuer: text("issuer"),
            at: crate::service::human_time(test.at),
            claims,
        }
    }
}

/// A claim's value as the page shows it: times (`exp`, `iat`, `auth_time`,
/// `nbf`) also in words.
fn claim_text(name: &str, value: &serde_json::Value) -> String {
    let seconds = value.as_i64().filter(|_| matches!(name, "exp" | "iat" | "auth_time" | "nbf"));
    match (seconds.and_then(|s| chrono::DateTime::from_timestamp(s, 0)), value.as_str()) {
        (Some(at), _) => format!("{value} ({})", crate::service::human_time(at)),
        (None, Some(text)) => text.to_string(),
        (None, None) => value.to_string(),
    }
}

#[derive(Template)]
#[template(path = "setup/test.html")]
struct TestPage {
    f: Frame,
    test: Option<TestView>,
}

async fn test_result(State(s): State<AppState>, parts: Parts) -> Response {
    answer(
        async {
            let opened = opened(&s, &parts, Some(SetupScope::Sso)).await?;
            let link = Some(opened.access.link.id);
            let test = s.roster.latest_sso_test(&opened.access.actor, link).await.map_err(|e| failure(&e))?;
            let page = TestPage { f: opened.frame("sso", "Test sign-in"), test: test.map(TestView::of) };
            Ok(render(StatusCode::OK, page.render()))
        }
        .await,
    )
}

// ---- SCIM ---------------------------------------------------------------------

async fn scim_providers(State(s): State<AppState>, parts: Parts) -> Response {
    answer(
        opened(&s, &parts, Some(SetupScope::Scim))
            .await
            .map(|o| providers_page(&o, "scim", "Provisioning (SCIM)", "/setup/scim")),
    )
}

#[derive(Template)]
#[template(path = "setup/scim.html")]
struct ScimPage {
    f: Frame,
    provider: &'static str,
    name: &'static str,
    intro: &'static str,
    base_url: String,
    token: Option<String>,
    steps: Vec<Vec<StepPart>>,
    keep: &'static [String],
    remove: &'static [String],
    success: &'static str,
}

fn scim_page(s: &AppState, opened: &Opened, g: &'static Guide, token: Option<String>) -> Response {
    let base_url = s.config.public_base_url.join("scim/v2").map(|u| u.to_string()).unwrap_or_default();
    let values = [
        ("scim_base_url", base_url.as_str()),
        ("token_hint", "the token created on this page"),
        ("org_name", opened.access.org.name.as_str()),
    ];
    let mut f = opened.frame("scim", &format!("Provisioning with {}", g.name));
    if token.is_some() {
        f.notice = Some("Token created. Copy it now: it is shown this once.".into());
    }
    let page = ScimPage {
        f,
        provider: &g.id,
        name: &g.name,
        intro: &g.scim.intro,
        steps: g.scim.steps.iter().map(|step| step_parts(step, &values)).collect(),
        base_url,
        token,
        keep: &g.scim.keep,
        remove: &g.scim.remove,
        success: &g.scim.success,
    };
    render(StatusCode::OK, page.render())
}

async fn scim_guide(State(s): State<AppState>, parts: Parts, Path(provider): Path<String>) -> Response {
    answer(
        async {
            let opened = opened(&s, &parts, Some(SetupScope::Scim)).await?;
            let g = guide(&provider).ok_or_else(no_such_provider)?;
            Ok(scim_page(&s, &opened, g, None))
        }
        .await,
    )
}

async fn create_token(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    answer(
        async {
            let (opened, form) = posted(&s, &parts, &body, SetupScope::Scim).await?;
            let g = guide(form.get("provider")).or_else(|| guide("generic")).ok_or_else(no_such_provider)?;
            let name = crate::model::Name::parse(&format!("{} (setup link)", g.name))
                .map_err(|e| failure(&ServiceError::invalid("name", e)))?;
            let new = crate::service::NewCredential {
                kind: crate::model::CredentialKind::ScimToken,
                name,
                role: None,
                expires_in_days: None,
            };
            let created = s.roster.create_credential(&opened.access.actor, new).await.map_err(|e| failure(&e))?;
            Ok(scim_page(&s, &opened, g, Some(created.secret.expose().to_string())))
        }
        .await,
    )
}

struct LoggedRequest {
    at: String,
    client: String,
    method: String,
    path: String,
    status: u16,
    scim_type: Option<String>,
    latency: String,
    explanation: String,
    body: Option<String>,
}

#[derive(Template)]
#[template(path = "setup/log.html")]
struct LogPage {
    f: Frame,
    kept: i64,
    requests: Vec<LoggedRequest>,
}

async fn scim_log(State(s): State<AppState>, parts: Parts) -> Response {
    answer(
        async {
            let opened = opened(&s, &parts, Some(SetupScope::Scim)).await?;
            let logged = s.roster.scim_requests(&opened.access.actor, None).await.map_err(|e| failure(&e))?;
            let requests = logged
                .into_iter()
                .map(|r| LoggedRequest {
                    at: r.at.format("%H:%M:%S").to_string(),
                    explanation: super::scim_log::explain(&r).unwrap_or_default(),
                    latency: format!("{:.1} ms", r.latency_us as f64 / 1000.0),
                    client: r.client,
                    method: r.method,
                    path: r.path,
                    status: r.status,
                    scim_type: r.scim_type,
                    body: r.body,
                })
                .collect();
            let page = LogPage {
                f: opened.frame("log", "SCIM request log"),
                kept: crate::store::SCIM_REQUESTS_KEPT,
                requests,
            };
            Ok(render(StatusCode::OK, page.render()))
        }
        .await,
    )
}

// ---- Domains ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "setup/domains.html")]
struct DomainsPage {
    f: Frame,
    domains: Vec<DomainRow>,
    name: String,
}

async fn domains_page(
    s: &AppState,
    opened: &Opened,
    notice: Option<String>,
    problem: Option<&ServiceError>,
    name: String,
) -> Response {
    let list = match s.roster.list_domains(&opened.access.actor).await {
        Ok(list) => list,
        Err(e) => return failure(&e),
    };
    let mut f = opened.frame("domains", "Domains");
    f.notice = notice;
    let mut status = StatusCode::OK;
    if let Some(e) = problem {
        let (code, text, _) = problem_of(e);
        status = code;
        f.problem = Some(text);
    }
    let domains = list.into_iter().map(DomainRow::from).collect();
    render(status, DomainsPage { f, domains, name }.render())
}

async fn domains(State(s): State<AppState>, parts: Parts) -> Response {
    answer(
        async {
            let opened = opened(&s, &parts, Some(SetupScope::Domains)).await?;
            Ok(domains_page(&s, &opened, None, None, String::new()).await)
        }
        .await,
    )
}

async fn add_domain(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    answer(
        async {
            let (opened, form) = posted(&s, &parts, &body, SetupScope::Domains).await?;
            let raw = form.get("name").to_string();
            let result = match DomainName::parse(&raw) {
                Err(e) => Err(ServiceError::invalid("domain", e)),
                Ok(name) => s.roster.add_domain(&opened.access.actor, name).await,
            };
            Ok(match result {
                Ok(d) => {
                    let notice = format!(
                        "Added {}. Publish the TXT record below at your DNS provider, then press Verify now.",
                        d.domain.name
                    );
                    domains_page(&s, &opened, Some(notice), None, String::new()).await
                }
                Err(e) => domains_page(&s, &opened, None, Some(&e), raw).await,
            })
        }
        .await,
    )
}

async fn verify_domain(State(s): State<AppState>, parts: Parts, Path(id): Path<String>, body: Bytes) -> Response {
    answer(
        async {
            let (opened, _) = posted(&s, &parts, &body, SetupScope::Domains).await?;
            let id = uuid::Uuid::parse_str(&id).map_err(|_| failure(&ServiceError::NotFound("domain")))?;
            let check = s.roster.verify_domain(&opened.access.actor, id).await.map_err(|e| failure(&e))?;
            let mut text = check.message.clone();
            if !check.found.is_empty() {
                text = format!("{text} DNS showed: {}", check.found.join(", "));
            }
            Ok(match check.result {
                crate::service::CheckKind::Verified => domains_page(&s, &opened, Some(text), None, String::new()).await,
                _ => {
                    let e = ServiceError::Conflict(text);
                    domains_page(&s, &opened, None, Some(&e), String::new()).await
                }
            })
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_guide_reads_and_fills_its_placeholders() {
        assert_eq!(GUIDES.len(), GUIDE_FILES.len(), "a guide file does not parse");
        for (file, text) in GUIDE_FILES {
            let g = parse_guide(file, text).unwrap_or_else(|e| panic!("{e}"));
            let joined = g.sso.steps.join(" ");
            assert!(joined.contains("{redirect_uri}"), "{file}: the SSO steps never give the redirect URI");
            let joined = g.scim.steps.join(" ");
            assert!(joined.contains("{scim_base_url}"), "{file}: the SCIM steps never give the base URL");
            let values = [("redirect_uri", "R"), ("scim_base_url", "S"), ("token_hint", "T"), ("org_name", "O")];
            for step in g.sso.steps.iter().chain(&g.scim.steps) {
                let parts = step_parts(step, &values);
                assert!(parts.iter().all(|p| !p.text.contains('{')), "{file}: an unknown placeholder in {step:?}");
            }
        }
    }

    #[test]
    fn claim_times_are_shown_in_words_too() {
        assert_eq!(claim_text("exp", &serde_json::json!(0)), "0 (1 January 1970, 00:00 UTC)");
        assert_eq!(claim_text("sub", &serde_json::json!(0)), "0");
        assert_eq!(claim_text("email", &serde_json::json!("a@b.example")), "a@b.example");
    }

    #[test]
    fn placeholders_become_values_to_paste_and_the_rest_stays_text() {
        let parts = step_parts("Paste <b>{redirect_uri}</b>, not {other}.", &[("redirect_uri", "https://x/?a=1&b=2")]);
        let shown: Vec<(&str, bool)> = parts.iter().map(|p| (p.text.as_str(), p.code)).collect();
        assert_eq!(shown, [("Paste <b>", false), ("https://x/?a=1&b=2", true), ("</b>, not {other}.", false)]);
    }
}
