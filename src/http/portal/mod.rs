//! The organization portal under `/portal`: Home, Members, Billing,
//! Settings and Audit, server-rendered from templates, on the same service
//! functions as the admin API. A member signs in through their
//! organization's SSO or an emailed link (Roster is its own client of both)
//! and acts with their own role. Every form posts a CSRF token bound to the
//! session; every page works without JavaScript (one small script of ours
//! adds copy buttons).

mod pages;
mod views;

pub(super) use pages::DomainRow;
pub(super) use views::{message_page, problem_of};

use super::sso::{cookie, set_cookie, SESSION_COOKIE};
use super::AppState;
use crate::model::Role;
use crate::secrets::hashes_match;
use crate::service::{role_title, Membership, PortalSession, ServiceError, PORTAL_CLIENT_ID};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use sha2::Digest;

/// The portal's pages: styles and scripts from Roster's own files only, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal", get(pages::home))
        .route("/portal/", get(|| async { redirect("/portal") }))
        .route("/portal/signin", get(sign_in))
        .route("/portal/callback", get(callback))
        .route("/portal/signout", post(sign_out))
        .route("/portal/switch", post(switch))
        .route(
            "/portal/static/portal.css",
            get(|| async { asset("text/css", include_str!("../../../templates/portal/portal.css")) }),
        )
        .route(
            "/portal/static/portal.js",
            get(|| async { asset("text/javascript", include_str!("../../../templates/portal/portal.js")) }),
        )
        .route("/portal/members", get(pages::members))
        .route("/portal/members/invite", post(pages::invite))
        .route("/portal/members/upload", post(pages::upload))
        .route("/portal/members/upload/send", post(pages::upload_send))
        .route("/portal/members/{id}", get(pages::member))
        .route("/portal/members/{id}/{action}", post(pages::member_action))
        .route("/portal/invitations/{id}/{action}", post(pages::invitation_action))
        .route("/portal/billing", get(pages::billing))
        .route("/portal/billing/seats", post(pages::change_seats))
        .route("/portal/billing/seats/apply", post(pages::apply_seats))
        .route("/portal/billing/plan", post(pages::change_plan))
        .route("/portal/billing/requests/{id}/withdraw", post(pages::withdraw_request))
        .route("/portal/settings", get(pages::settings).post(pages::change_general))
        .route("/portal/settings/features", post(pages::change_features))
        .route("/portal/settings/domains", get(pages::domains).post(pages::add_domain))
        .route("/portal/settings/domains/{id}/{action}", post(pages::domain_action))
        .route("/portal/settings/sso", get(pages::sso).post(pages::change_sso))
        .route("/portal/settings/sso/connection", post(pages::set_connection))
        .route("/portal/settings/sso/connection/remove", post(pages::remove_connection))
        .route("/portal/settings/sso/clients", post(pages::create_client))
        .route("/portal/settings/sso/clients/{id}/revoke", post(pages::revoke_client))
        .route("/portal/settings/scim", get(pages::scim))
        .route("/portal/settings/scim/tokens", post(pages::create_token))
        .route("/portal/settings/scim/tokens/{id}/revoke", post(pages::revoke_token))
        .route("/portal/settings/scim/mappings", post(pages::create_mapping))
        .route("/portal/settings/scim/mappings/{id}/delete", post(pages::delete_mapping))
        .route("/portal/settings/setup-links", get(pages::setup_links).post(pages::create_setup_link))
        .route("/portal/settings/setup-links/{id}/revoke", post(pages::revoke_setup_link))
        .route("/portal/audit", get(pages::audit))
        .route("/portal/audit.csv", get(pages::audit_csv))
}

/// A signed-in member, with the CSRF token their forms carry.
pub(super) struct Signed {
    pub session: PortalSession,
    pub csrf: String,
}

impl Signed {
    fn actor(&self) -> &crate::service::Actor {
        &self.session.actor
    }

    fn admin(&self) -> bool {
        self.session.actor.role.at_least(Role::Admin)
    }
}

/// The CSRF token of a session: derived from its cookie, which pages on
/// other sites can neither read nor derive it from.
fn csrf_token(session_cookie: &str) -> String {
    let digest = sha2::Sha256::digest(format!("roster-portal-csrf:{session_cookie}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// The member a request's session cookie signs in, or the answer that
/// sends the browser to sign in.
async fn signed_in(s: &AppState, parts: &Parts) -> Result<Signed, Response> {
    let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(redirect("/portal/signin")) };
    let idle = chrono::Duration::seconds(s.config.portal_idle_timeout_secs as i64);
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    match s.roster.portal_session(&token, idle, request_id).await {
        Ok(Some(session)) => Ok(Signed { session, csrf: csrf_token(&token) }),
        Ok(None) => Err(redirect("/portal/signin?expired=1")),
        Err(e) => Err(views::failure(&e)),
    }
}

/// A posted form of a signed-in member, refused (403, nothing changed)
/// unless it carries the session's CSRF token and comes from Roster's pages.
async fn posted(s: &AppState, parts: &Parts, body: &[u8]) -> Result<(Signed, Form), Response> {
    let signed = signed_in(s, parts).await?;
    let form = Form::parse(body);
    let sent = form.get("csrf").unwrap_or("");
    let same_site = super::pages::same_origin(s, parts);
    if !same_site || sent.is_empty() || !hashes_match(sent, &signed.csrf) {
        return Err(views::refused(
            StatusCode::FORBIDDEN,
            "This form cannot be accepted",
            "The form was missing its security token or came from another site, so nothing was changed. \
             Go back, reload the page and try again.",
        ));
    }
    if form.0.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(views::refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This form cannot be accepted",
            "The form holds a NUL character, which nothing here can store; nothing was changed.",
        ));
    }
    Ok((signed, form))
}

/// A urlencoded form body.
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The field, trimmed; `None` when absent or blank.
    fn text(&self, key: &str) -> Option<&str> {
        self.get(key).map(str::trim).filter(|v| !v.is_empty())
    }

    fn checked(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// 303 to `to`.
fn redirect(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(LOCATION, v);
    }
    res
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    res
}

/// Signing in to the portal is signing in to Roster with the portal as the
/// client: SSO where the email's domain has it, otherwise an emailed link.
async fn sign_in(State(s): State<AppState>, parts: Parts) -> Response {
    if let Ok(signed) = signed_in(&s, &parts).await {
        drop(signed);
        return redirect("/portal");
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("redirect_uri", &s.roster.portal_callback())
        .append_pair("client_id", &PORTAL_CLIENT_ID.to_string());
    redirect(&format!("/signin?{}", query.finish()))
}

/// Where a portal login returns: the session cookie is set by then.
async fn callback(State(s): State<AppState>, parts: Parts, RawQuery(_): RawQuery) -> Response {
    match signed_in(&s, &parts).await {
        Ok(_) => redirect("/portal"),
        Err(answer) => answer,
    }
}

async fn sign_out(State(s): State<AppState>, parts: Parts, body: axum::body::Bytes) -> Response {
    if let Err(answer) = posted(&s, &parts, &body).await {
        return answer;
    }
    if let Some(token) = cookie(&parts.headers, SESSION_COOKIE) {
        if let Err(e) = s.roster.logout(&token, None).await {
            return views::failure(&e);
        }
    }
    let mut res = views::signed_out();
    res.headers_mut().append(SET_COOKIE, set_cookie(&s, SESSION_COOKIE, "", "/", Some(0)));
    res
}

/// The organization switcher: a session in the chosen organization.
async fn switch(State(s): State<AppState>, parts: Parts, body: axum::body::Bytes) -> Response {
    let (signed, form) = match posted(&s, &parts, &body).await {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let Some(org_id) = form.text("organization").and_then(|o| uuid::Uuid::parse_str(o).ok()) else {
        return views::refused(StatusCode::UNPROCESSABLE_ENTITY, "Choose an organization", "Pick one from the list.");
    };
    if org_id == signed.session.org.id {
        return redirect("/portal");
    }
    match s.roster.switch_organization(&signed.session, org_id).await {
        Ok(crate::service::Switch::Session(session, expires)) => {
            let max_age = (expires - s.roster.now()).num_seconds().max(0) as u64;
            let mut res = redirect("/portal");
            res.headers_mut().append(SET_COOKIE, set_cookie(&s, SESSION_COOKIE, session.expose(), "/", Some(max_age)));
            res
        }
        Ok(crate::service::Switch::SignIn(url)) => views::continue_to_sso(&signed, &url),
        Err(e) => views::failure(&e),
    }
}

/// The id a path names; one that names nothing is a 404 page.
async fn path_id(Path(id): &Path<String>) -> Result<uuid::Uuid, Response> {
    uuid::Uuid::parse_str(id).map_err(|_| views::failure(&ServiceError::NotFound("page")))
}

fn membership_label(m: &Membership) -> String {
    format!("{} ({})", m.org_name, role_title(m.role))
}
