//! Pages a person opens from an email: the invitation link
//! (`/invitations/accept`). Showing a link never changes anything (mail
//! scanners open links before people do); accepting is a form post.

use super::sso::{page, set_cookie, sign_in_limited, SESSION_COOKIE};
use super::AppState;
use crate::mail::templates::{InvitationPage, MessagePage};
use crate::service::{human_time, role_title, LoginError};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, ORIGIN, REFERRER_POLICY};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// What every page says about itself: no scripts, no framing, no caching,
/// and links (which carry tokens) never leak as a referrer.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new().route("/invitations/accept", get(show_invitation).post(accept_invitation))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// A rendered page with the headers every page carries.
fn html(status: StatusCode, body: askama::Result<String>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            return page(&LoginError::new(500, "internal", "An internal error occurred; see the server log."));
        }
    };
    let mut res = (status, Html(body)).into_response();
    let headers = res.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    res
}

/// A refusal as a page, with its reason code in `X-Roster-Error`.
fn refusal(e: &LoginError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let title = match status.as_u16() {
        429 => "Too many attempts",
        500.. => "Something went wrong",
        _ => "This link cannot be used",
    };
    let mut res = html(status, MessagePage { title, message: &e.message, code: Some(e.code) }.render());
    if let Ok(v) = HeaderValue::from_str(e.code) {
        res.headers_mut().insert("x-roster-error", v);
    }
    res
}

/// A token as links carry it: bounded, printable.
fn token_of(raw: Option<&str>) -> Result<&str, LoginError> {
    raw.map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256 && t.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            LoginError::new(400, "invalid_link", "This link is incomplete. Open the whole link from the email.")
        })
}

/// The invitation a link names: organization, role, email, expiry, and
/// the button that accepts it (or how to accept through SSO).
async fn show_invitation(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(limited) = sign_in_limited(&s, &parts) {
        return limited;
    }
    let raw = query.as_ref().ok().and_then(|q| q.token.as_deref());
    let token = match token_of(raw) {
        Ok(t) => t.to_string(),
        Err(e) => return refusal(&e),
    };
    match s.roster.invitation_offer(&token).await {
        Ok(offer) => html(
            StatusCode::OK,
            InvitationPage {
                org_name: &offer.org_name,
                role: role_title(offer.invitation.role),
                email: offer.invitation.email.as_str(),
                expires: human_time(offer.invitation.expires_at),
                sso_enforced: offer.sso_enforced,
                action: "/invitations/accept",
                token: &token,
            }
            .render(),
        ),
        Err(e) => refusal(&e),
    }
}

/// Accepts the invitation: the member becomes active and the browser gets
/// Roster's session cookie.
async fn accept_invitation(State(s): State<AppState>, parts: Parts, body: axum::body::Bytes) -> Response {
    if let Some(limited) = sign_in_limited(&s, &parts) {
        return limited;
    }
    if !same_origin(&s, &parts) {
        return refusal(&LoginError::new(
            403,
            "cross_site_request",
            "This form was sent from another site. Open the invitation link from the email again.",
        ));
    }
    let token = url::form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    let token = match token_of(token.as_deref()) {
        Ok(t) => t.to_string(),
        Err(e) => return refusal(&e),
    };
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    match s.roster.accept_invitation(&token, request_id).await {
        Ok(accepted) => {
            let message = format!(
                "You joined {} as {} and are signed in as {}.",
                accepted.org_name,
                role_title(accepted.member.role),
                accepted.member.label()
            );
            let title = format!("Welcome to {}", accepted.org_name);
            let mut res = html(StatusCode::OK, MessagePage { title: &title, message: &message, code: None }.render());
            let max_age = (accepted.session_expires - s.roster.now()).num_seconds().max(0) as u64;
            let cookie = set_cookie(&s, SESSION_COOKIE, accepted.session.expose(), "/", Some(max_age));
            res.headers_mut().append(axum::http::header::SET_COOKIE, cookie);
            res
        }
        Err(e) => refusal(&e),
    }
}

/// Whether a form post comes from Roster's own pages: its `Origin`, when
/// the browser sends one, is Roster's public origin (or the address it was
/// reached at). A post from another site could sign the browser in as
/// someone else.
fn same_origin(s: &AppState, parts: &Parts) -> bool {
    let Some(origin) = parts.headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let public = s.config.public_base_url.origin().ascii_serialization();
    let host = parts.headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
    origin == public || host.is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"))
}
