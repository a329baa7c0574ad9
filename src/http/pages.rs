//! Pages a person opens from an email or is sent to by the product: the
//! invitation link (`/invitations/accept`), and sign-in by emailed link
//! (`/signin`, `/signin/link`). Showing a link never changes anything (mail
//! scanners open links before people do); using it is a form post.

use super::sso::{cookie, redirect, set_cookie, sign_in_limited, SESSION_COOKIE};
use super::AppState;
use crate::mail::templates::{InvitationPage, MessagePage, SignInLinkPage, SignInPage};
use crate::model::Email;
use crate::secrets::{generate_token, Secret};
use crate::service::{human_time, role_title, LinkRequest, LoginError, SignInRoute, SIGN_IN_LINK_TTL_MINUTES};
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
/// and links (which carry tokens) never leak as a referrer to another site.
/// No `form-action`: these forms' answers go on to the organization's
/// identity provider or the product's redirect URI, and Chrome applies
/// `form-action` to the redirects that follow a form post.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/invitations/accept", get(show_invitation).post(accept_invitation))
        .route("/signin", get(sign_in_form).post(sign_in))
        .route("/signin/link", get(show_sign_in_link).post(use_sign_in_link))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// A rendered page with the headers every page carries.
pub(super) fn html(status: StatusCode, body: askama::Result<String>) -> Response {
    html_with(status, body, CONTENT_SECURITY_POLICY)
}

/// A rendered page under the content security policy `csp`.
pub(super) fn html_with(status: StatusCode, body: askama::Result<String>, csp: &'static str) -> Response {
    let (status, body) = match body {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            let text = "<!doctype html><title>Error</title><p>An internal error occurred; see the server log.</p>";
            (StatusCode::INTERNAL_SERVER_ERROR, text.to_string())
        }
    };
    let mut res = (status, Html(body)).into_response();
    let headers = res.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("content-security-policy", HeaderValue::from_static(csp));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
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
fn token_of(raw: Option<&str>) -> Result<String, LoginError> {
    raw.map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256 && t.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .ok_or_else(|| {
            LoginError::new(400, "invalid_link", "This link is incomplete. Open the whole link from the email.")
        })
}

/// The token of a link being opened, unless this address is past its rate
/// limit or the link is malformed (then the page that says so).
fn link_token(
    s: &AppState,
    parts: &Parts,
    query: &Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<String, Box<Response>> {
    if let Some(limited) = sign_in_limited(s, parts) {
        return Err(Box::new(limited));
    }
    token_of(query.as_ref().ok().and_then(|q| q.token.as_deref())).map_err(|e| Box::new(refusal(&e)))
}

/// The `token` field of a posted form.
fn form_token(body: &[u8]) -> Result<String, LoginError> {
    let token = url::form_urlencoded::parse(body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    token_of(token.as_deref())
}

/// A form post this address may not make now (rate limit), or that came
/// from another site, answered; `None` when it may go on.
fn post_refused(s: &AppState, parts: &Parts) -> Option<Response> {
    if let Some(limited) = sign_in_limited(s, parts) {
        return Some(limited);
    }
    if !same_origin(s, parts) {
        return Some(refusal(&LoginError::new(
            403,
            "cross_site_request",
            "This form was sent from another site. Open the link from the email again.",
        )));
    }
    None
}

/// The invitation a link names: organization, role, email, expiry, and
/// the button that accepts it (or how to accept through SSO).
async fn show_invitation(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let token = match link_token(&s, &parts, &query) {
        Ok(t) => t,
        Err(refused) => return *refused,
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
                sso_login: offer.sso_login.as_deref(),
                action: "/invitations/accept",
                token: &token,
            }
            .render(),
        ),
        Err(e) => refusal(&e),
    }
}

/// Accepts the invitation: the member becomes active, the browser gets
/// Roster's session cookie and lands on the portal's Home.
async fn accept_invitation(State(s): State<AppState>, parts: Parts, body: axum::body::Bytes) -> Response {
    if let Some(refused) = post_refused(&s, &parts) {
        return refused;
    }
    let token = match form_token(&body) {
        Ok(t) => t,
        Err(e) => return refusal(&e),
    };
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    match s.roster.accept_invitation(&token, request_id).await {
        Ok(accepted) => {
            // Signed in: on to the portal's Home.
            let max_age = (accepted.session_expires - s.roster.now()).num_seconds().max(0) as u64;
            let cookie = set_cookie(&s, SESSION_COOKIE, accepted.session.expose(), "/", Some(max_age));
            redirect("/portal", vec![cookie])
        }
        Err(e) => refusal(&e),
    }
}

/// Whether a form post comes from Roster's own pages: its `Origin`, when
/// the browser sends one, is Roster's public origin (or the address it was
/// reached at). A post from another site could sign the browser in as
/// someone else. A browser sends `Origin: null` for a page whose referrer
/// policy withholds it; then its `Sec-Fetch-Site` must say the post is
/// same-origin.
pub(super) fn same_origin(s: &AppState, parts: &Parts) -> bool {
    let Some(origin) = parts.headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if origin == "null" {
        return parts.headers.get("sec-fetch-site").is_some_and(|v| v == "same-origin");
    }
    let public = s.config.public_base_url.origin().ascii_serialization();
    let host = parts.headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
    origin == public || host.is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"))
}

/// Binds a requested sign-in link to the browser that asked for it.
const LINK_BROWSER_COOKIE: &str = "roster_signin_browser";

/// The product's request, as `/signin` carries it: where to come back to.
#[derive(Debug, Deserialize, Default)]
struct SignInQuery {
    redirect_uri: Option<String>,
    state: Option<String>,
    client_id: Option<String>,
    email: Option<String>,
}

impl SignInQuery {
    /// The checked request, or the page saying what is missing.
    fn checked(&self) -> Result<(String, Option<String>, Option<uuid::Uuid>), LoginError> {
        let redirect_uri = self
            .redirect_uri
            .as_deref()
            .filter(|r| !r.is_empty() && r.len() <= 2048)
            .ok_or_else(|| LoginError::new(400, "invalid_request", "The sign-in link has no redirect_uri."))?;
        url::Url::parse(redirect_uri)
            .map_err(|_| LoginError::new(400, "invalid_request", "The sign-in link's redirect_uri is not a URL."))?;
        if self.state.as_ref().is_some_and(|s| s.len() > 1024) {
            return Err(LoginError::new(400, "invalid_request", "The sign-in link's state is too long."));
        }
        let client_id = match self.client_id.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(
                uuid::Uuid::parse_str(c.trim())
                    .map_err(|_| LoginError::new(400, "invalid_request", format!("`{c}` is not a client id.")))?,
            ),
        };
        Ok((redirect_uri.to_string(), self.state.clone().filter(|s| !s.is_empty()), client_id))
    }

    fn page(&self, status: StatusCode, problem: Option<&str>) -> Response {
        html(
            status,
            SignInPage {
                email: self.email.as_deref().unwrap_or(""),
                problem,
                redirect_uri: self.redirect_uri.as_deref().unwrap_or(""),
                state: self.state.as_deref(),
                client_id: self.client_id.as_deref(),
            }
            .render(),
        )
    }
}

/// The sign-in page: one email field.
async fn sign_in_form(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<SignInQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(limited) = sign_in_limited(&s, &parts) {
        return limited;
    }
    let Ok(Query(q)) = query else {
        return refusal(&LoginError::new(400, "invalid_request", "The sign-in link is malformed."));
    };
    if let Err(e) = q.checked() {
        return refusal(&e);
    }
    q.page(StatusCode::OK, None)
}

/// An email given: on to its organization's SSO, or a link emailed. The
/// page says the same whether or not the address may sign in, and the
/// link is looked for and sent after the answer, so its timing says
/// nothing either.
async fn sign_in(State(s): State<AppState>, parts: Parts, body: axum::body::Bytes) -> Response {
    if let Some(refused) = post_refused(&s, &parts) {
        return refused;
    }
    let mut q = SignInQuery::default();
    for (k, v) in url::form_urlencoded::parse(&body) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "email" => q.email = v,
            "redirect_uri" => q.redirect_uri = v,
            "state" => q.state = v,
            "client_id" => q.client_id = v,
            _ => {}
        }
    }
    let (redirect_uri, state, client_id) = match q.checked() {
        Ok(checked) => checked,
        Err(e) => return refusal(&e),
    };
    let email = match q.email.as_deref().map(Email::parse) {
        Some(Ok(email)) => email,
        _ => return q.page(StatusCode::BAD_REQUEST, Some("Enter your email address, such as ada@example.com.")),
    };
    match s.roster.sign_in_route(&email).await {
        Ok(SignInRoute::Sso) => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("email", email.as_str()).append_pair("redirect_uri", &redirect_uri);
            if let Some(state) = &state {
                query.append_pair("state", state);
            }
            if let Some(client) = client_id {
                query.append_pair("client_id", &client.to_string());
            }
            return redirect(&format!("/sso/authorize?{}", query.finish()), Vec::new());
        }
        Ok(SignInRoute::Link) => {}
        Err(e) => return refusal(&LoginError::from(e)),
    }
    let browser = cookie(&parts.headers, LINK_BROWSER_COOKIE)
        .filter(|b| b.starts_with("rb_") && b.len() == 46)
        .map(Secret::new)
        .unwrap_or_else(|| generate_token("rb"));
    if s.limits.sign_in_links.take(&email.normalized()).is_ok() {
        let req = LinkRequest { email, redirect_uri, state, client_id, browser: Secret::new(browser.expose()) };
        let roster = s.roster.clone();
        tokio::spawn(async move {
            if let Err(e) = roster.send_sign_in_link(req).await {
                tracing::error!(error = %e, "could not queue a sign-in link");
            }
        });
    }
    let message = format!(
        "If this address may sign in here, we sent it a sign-in link. Open it in this browser within \
         {SIGN_IN_LINK_TTL_MINUTES} minutes."
    );
    let mut res =
        html(StatusCode::OK, MessagePage { title: "Check your email", message: &message, code: None }.render());
    let cookie = set_cookie(&s, LINK_BROWSER_COOKIE, browser.expose(), "/signin", Some(3600));
    res.headers_mut().append(axum::http::header::SET_COOKIE, cookie);
    res
}

/// The page a sign-in link opens: who it signs in to, and one button.
async fn show_sign_in_link(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let token = match link_token(&s, &parts, &query) {
        Ok(t) => t,
        Err(refused) => return *refused,
    };
    let browser = cookie(&parts.headers, LINK_BROWSER_COOKIE);
    match s.roster.sign_in_link_offer(&token, browser.as_deref()).await {
        Ok(org_name) => html(StatusCode::OK, SignInLinkPage { org_name: &org_name, token: &token }.render()),
        Err(e) => refusal(&e),
    }
}

/// Uses a sign-in link: Roster's session, and back to the product with its code.
async fn use_sign_in_link(State(s): State<AppState>, parts: Parts, body: axum::body::Bytes) -> Response {
    if let Some(refused) = post_refused(&s, &parts) {
        return refused;
    }
    let token = match form_token(&body) {
        Ok(t) => t,
        Err(e) => return refusal(&e),
    };
    let browser = cookie(&parts.headers, LINK_BROWSER_COOKIE);
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    match s.roster.use_sign_in_link(&token, browser.as_deref(), request_id).await {
        Ok(done) => {
            let max_age = (done.session_expires - s.roster.now()).num_seconds().max(0) as u64;
            let session = set_cookie(&s, SESSION_COOKIE, done.session.expose(), "/", Some(max_age));
            redirect(done.redirect.as_str(), vec![session])
        }
        Err(e) => refusal(&e),
    }
}
