//! The browser and product side of single sign-on under `/sso`:
//! `authorize` starts a login, `callback` finishes it, `token` lets the
//! product's backend redeem its one-time code, `session` and `logout` serve
//! Roster's own browser session.
//!
//! Pages a person sees (errors included) are HTML; `token` and `session`
//! answer JSON, errors as `application/problem+json`.

use super::error::Problem;
use super::extract::too_many_requests;
use super::AppState;
use crate::mail::templates::MessagePage;
use crate::model::{Email, TenantId};
use crate::service::{CallbackParams, Completed, LoginError, LoginRequest, LoginTarget, RedeemError};
use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Binds a login attempt to the browser that started it.
pub(super) const ATTEMPT_COOKIE: &str = "roster_sso_attempt";
/// Roster's own session.
pub(super) const SESSION_COOKIE: &str = "roster_session";

/// The sign-in routes with their OpenAPI description, at their full paths.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(callback))
        .routes(routes!(token))
        .routes(routes!(session))
        .routes(routes!(logout))
}

/// Where to sign in (exactly one of `email`, `organization`, `tenant`) and
/// where to come back to.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuthorizeQuery {
    /// The person's email: home-realm discovery by its verified domain.
    email: Option<String>,
    /// An organization id.
    #[param(format = Uuid)]
    organization: Option<String>,
    /// A tenant ID of the deployment's tenant connection.
    tenant: Option<String>,
    /// Where the browser goes back with `code` and `state`: one of the
    /// client's registered redirect URIs.
    #[param(required = true, min_length = 1)]
    redirect_uri: Option<String>,
    /// Returned unchanged with the code; at most 1,024 characters.
    #[param(max_length = 1024)]
    state: Option<String>,
    /// The product client asking, when several are registered.
    #[param(format = Uuid)]
    client_id: Option<String>,
}

/// A sign-in started or finished from an address past
/// `rate_limit_sign_in_per_minute`: a 429 page with `Retry-After`.
pub(super) fn sign_in_limited(s: &AppState, parts: &Parts) -> Option<Response> {
    let limited = s.limits.sign_in.take(&s.limits.client(parts)).err()?;
    Some(limited.answer(page(&LoginError::too_many(limited.retry_after_secs()))))
}

/// Starts a sign-in: answers 303 to the organization's identity provider.
/// A sign-in that cannot start is an HTML page saying why, with the reason
/// code in `X-Roster-SSO-Error`.
#[utoipa::path(get, path = "/sso/authorize", tag = "sso", params(AuthorizeQuery), security(()),
    responses(
        (status = 303, description = "To the identity provider.", headers(("Location" = String), ("Set-Cookie" = String))),
        (status = 400, description = "The sign-in link is malformed.", content_type = "text/html", body = String),
        (status = 403, description = "Sign-in is not allowed here (for example the client may not use this redirect URI).", content_type = "text/html", body = String),
        (status = 404, description = "No organization, tenant or verified domain matches.", content_type = "text/html", body = String),
        (status = 409, description = "The organization has no working connection.", content_type = "text/html", body = String),
        (status = 429, description = "Too many sign-ins from this address.", content_type = "text/html", body = String, headers(("Retry-After" = u64))),
        (status = 500, description = "An internal error.", content_type = "text/html", body = String),
        (status = 502, description = "The identity provider could not be reached.", content_type = "text/html", body = String)))]
async fn authorize(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<AuthorizeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(limited) = sign_in_limited(&s, &parts) {
        return limited;
    }
    let headers = parts.headers;
    let Ok(Query(q)) = query else {
        return malformed_link();
    };
    let target = match (q.email.as_deref(), q.organization.as_deref(), q.tenant.as_deref()) {
        (Some(e), None, None) => match Email::parse(e) {
            Ok(email) => LoginTarget::Email(email),
            Err(err) => return page(&LoginError::invalid(err.to_string())),
        },
        (None, Some(o), None) => match Uuid::parse_str(o.trim()) {
            Ok(id) => LoginTarget::Organization(id),
            Err(_) => return page(&LoginError::invalid(format!("`{o}` is not an organization id."))),
        },
        (None, None, Some(t)) => match TenantId::parse(t) {
            Ok(t) => LoginTarget::Tenant(t),
            Err(err) => return page(&LoginError::invalid(err.to_string())),
        },
        _ => {
            return page(&LoginError::invalid(
                "Give exactly one of email, organization or tenant to say where to sign in.",
            ))
        }
    };
    let Some(redirect_uri) = q.redirect_uri.filter(|r| !r.is_empty()) else {
        return page(&LoginError::invalid("The sign-in link has no redirect_uri."));
    };
    if q.state.as_ref().is_some_and(|st| st.len() > 1024) {
        return page(&LoginError::invalid("state is longer than 1024 characters."));
    }
    let client_id = match q.client_id.as_deref().map(|c| Uuid::parse_str(c.trim())) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return page(&LoginError::invalid("client_id is not a valid client id.")),
    };
    let request =
        LoginRequest { target, redirect_uri, state: q.state, client_id, browser: cookie(&headers, ATTEMPT_COOKIE) };
    match s.roster.begin_login(request).await {
        Ok(start) => {
            let max_age = s.config.sso_attempt_ttl_secs;
            let cookie = set_cookie(&s, ATTEMPT_COOKIE, start.browser.expose(), "/sso", Some(max_age));
            redirect(start.provider_url.as_str(), vec![cookie])
        }
        Err(e) => page(&e),
    }
}

/// What the identity provider sends the browser back with (OAuth 2.0).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Finishes a sign-in: answers 303 to the product's redirect URI with a
/// one-time `code`, and sets Roster's session cookie. A sign-in that stops
/// is an HTML page saying why.
#[utoipa::path(get, path = "/sso/callback", tag = "sso", params(CallbackQuery), security(()),
    responses(
        (status = 303, description = "To the product's redirect URI with `code` and `state`; a test sign-in started from a setup link goes to its result page instead, signed in to nothing.", headers(("Location" = String), ("Set-Cookie" = String))),
        (status = 400, description = "The provider's answer is malformed, expired or does not match this browser's attempt.", content_type = "text/html", body = String),
        (status = 403, description = "The person may not sign in to this organization (domain, seats, suspended).", content_type = "text/html", body = String),
        (status = 404, description = "The organization is gone.", content_type = "text/html", body = String),
        (status = 409, description = "The sign-in was already completed.", content_type = "text/html", body = String),
        (status = 429, description = "Too many sign-ins from this address.", content_type = "text/html", body = String, headers(("Retry-After" = u64))),
        (status = 500, description = "An internal error.", content_type = "text/html", body = String),
        (status = 502, description = "The identity provider could not be reached.", content_type = "text/html", body = String)))]
async fn callback(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(limited) = sign_in_limited(&s, &parts) {
        return limited;
    }
    let headers = parts.headers;
    let Ok(Query(q)) = query else {
        return page(&LoginError::invalid("The identity provider's response is malformed."));
    };
    let params =
        CallbackParams { state: q.state, code: q.code, error: q.error, error_description: q.error_description };
    let browser = cookie(&headers, ATTEMPT_COOKIE);
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    match s.roster.complete_login(params, browser.as_deref(), request_id).await {
        Ok(Completed::SignedIn(done)) => {
            let max_age = (done.session_expires - s.roster.now()).num_seconds().max(0) as u64;
            let session = set_cookie(&s, SESSION_COOKIE, done.session.expose(), "/", Some(max_age));
            redirect(done.redirect.as_str(), vec![session])
        }
        // A test sign-in: to its result page, signed in to nothing.
        Ok(Completed::Tested { result_url }) => redirect(&result_url, vec![]),
        Err(e) => page(&e),
    }
}

/// A code to redeem, with the product client's credentials (or HTTP Basic).
#[derive(Debug, Deserialize, ToSchema)]
struct TokenRequest {
    /// The one-time code the browser brought back.
    #[schema(required = true, min_length = 1, max_length = 256)]
    code: Option<String>,
    #[schema(format = Uuid)]
    client_id: Option<String>,
    #[schema(max_length = 256)]
    client_secret: Option<String>,
    /// Accepted for OAuth-style callers; only `authorization_code` is meaningful.
    #[schema(pattern = "^authorization_code$")]
    grant_type: Option<String>,
}

/// `POST /sso/token`: the product's backend redeems a code. Takes JSON or a
/// form body; the client may authenticate with HTTP Basic instead of body fields.
#[utoipa::path(post, path = "/sso/token", tag = "sso", security(()),
    request_body(content(
        (TokenRequest = "application/json"),
        (TokenRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Who signed in.", body = crate::service::SsoProfile),
        (status = 400, description = "No code, or one unknown, used or expired; or a body that cannot be read.", body = Problem),
        (status = 401, description = "Client authentication failed.", body = Problem),
        (status = 413, description = "The body is too large.", body = Problem),
        (status = 415, description = "Neither JSON nor a form.", body = Problem),
        (status = 429, description = "Too many failed client authentications.", body = Problem, headers(("Retry-After" = u64))),
        (status = 500, description = "An internal error.", body = Problem)))]
async fn token(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, s.config.request_body_limit_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "the body is too large")
                .into_response()
        }
    };
    let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parsed: Result<TokenRequest, String> = if content_type.starts_with("application/json") {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded_like(&bytes)
    } else {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send application/json or application/x-www-form-urlencoded",
        )
        .into_response();
    };
    let mut req = match parsed {
        Ok(r) => r,
        Err(e) => return Problem::bad_request(format!("the body is not valid: {e}")).into_response(),
    };
    if let Some((id, secret)) = basic_auth(&parts.headers) {
        req.client_id = req.client_id.or(Some(id));
        req.client_secret = req.client_secret.or(Some(secret));
    }
    if req.grant_type.as_deref().is_some_and(|g| g != "authorization_code") {
        return Problem::bad_request("grant_type must be authorization_code").into_response();
    }
    let Some(code) = req.code.filter(|c| !c.is_empty() && c.len() <= 256) else {
        return Problem::bad_request("code is required").into_response();
    };
    let Some(secret) = req.client_secret.filter(|c| !c.is_empty() && c.len() <= 256) else {
        return Problem::unauthorized("client authentication is required (client_secret)").into_response();
    };
    let client_id = match req.client_id.as_deref().map(|c| Uuid::parse_str(c.trim())) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Problem::unauthorized("client authentication failed").into_response(),
    };
    // Failed client authentications count per address and per client.
    let client = s.limits.client(&parts);
    let client_key = client_id.map(|id| format!("sso-client:{id}"));
    for key in std::iter::once(&client).chain(&client_key) {
        if let Err(limited) = s.limits.failed_auth.check(key) {
            return too_many_requests(limited);
        }
    }
    match s.roster.redeem_code(&code, client_id, &secret).await {
        Err(RedeemError::InvalidClient) => {
            for key in std::iter::once(&client).chain(&client_key) {
                if let Err(limited) = s.limits.failed_auth.take(key) {
                    return too_many_requests(limited);
                }
            }
            Problem::unauthorized("client authentication failed").into_response()
        }
        Ok(profile) => {
            let mut res = Json(profile).into_response();
            res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(RedeemError::InvalidGrant(m)) => Problem::new(StatusCode::BAD_REQUEST, "invalid-grant", m).into_response(),
        Err(RedeemError::Service(e)) => Problem::from(e).into_response(),
    }
}

/// `GET /sso/session`: who is signed in to this browser's Roster session.
#[utoipa::path(get, path = "/sso/session", tag = "sso", security(("session" = [])),
    responses(
        (status = 200, description = "The session.", body = crate::service::SessionView),
        (status = 401, description = "Not signed in.", body = Problem),
        (status = 500, description = "An internal error.", body = Problem)))]
async fn session(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = cookie(&headers, SESSION_COOKIE) else {
        return Problem::unauthorized("not signed in").into_response();
    };
    match s.roster.session(&token).await {
        Ok(view) => {
            let mut res = Json(view).into_response();
            res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(crate::service::ServiceError::NotFound(_)) => Problem::unauthorized("not signed in").into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogoutQuery {
    /// Where the provider sends the browser after signing out there: one of
    /// the product client's registered redirect URIs, absolute.
    #[param(format = "uri", min_length = 1)]
    post_logout_redirect_uri: Option<String>,
}

/// `POST /sso/logout`: ends the session; when the provider has an
/// `end_session_endpoint`, answers 303 to it so the browser ends that too.
#[utoipa::path(post, path = "/sso/logout", tag = "sso", params(LogoutQuery), security((), ("session" = [])),
    responses(
        (status = 204, description = "Signed out (or was not signed in).", headers(("Set-Cookie" = String))),
        (status = 303, description = "To the provider's end-session endpoint.", headers(("Location" = String), ("Set-Cookie" = String))),
        (status = 400, description = "The query cannot be read, or the post-logout redirect is not registered.", body = Problem),
        (status = 500, description = "An internal error.", body = Problem)))]
async fn logout(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<LogoutQuery>) -> Response {
    if let Some(uri) = &q.post_logout_redirect_uri {
        if let Err(e) = url::Url::parse(uri) {
            return Problem::bad_request(format!("post_logout_redirect_uri is not an absolute URL: {e}"))
                .into_response();
        }
    }
    let clear = clear_cookie(&s, SESSION_COOKIE, "/");
    let Some(token) = cookie(&headers, SESSION_COOKIE) else {
        return with_cookies(StatusCode::NO_CONTENT.into_response(), vec![clear]);
    };
    match s.roster.logout(&token, q.post_logout_redirect_uri.as_deref()).await {
        Ok(out) => match out.provider_logout {
            Some(url) => redirect(url.as_str(), vec![clear]),
            None => with_cookies(StatusCode::NO_CONTENT.into_response(), vec![clear]),
        },
        Err(e) => Problem::from(e).into_response(),
    }
}

impl LoginError {
    fn invalid(message: impl Into<String>) -> Self {
        LoginError { code: "invalid_request", message: message.into(), status: 400 }
    }
}

/// Whether a path is one of the sign-in routes a browser is sent to, whose
/// every answer is a page for a person.
pub(super) fn is_sign_in_page(path: &str) -> bool {
    matches!(path, "/sso/authorize" | "/sso/callback" | "/invitations/accept" | "/signin" | "/signin/link")
}

/// The page for a sign-in link that cannot be read.
pub(super) fn malformed_link() -> Response {
    page(&LoginError::invalid("The sign-in link is malformed."))
}

/// The page a person sees when a sign-in stops, with its reason code in
/// `X-Roster-SSO-Error`.
pub(super) fn page(e: &LoginError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = MessagePage { title: "Sign-in stopped", message: &e.message, code: Some(e.code) }.render();
    let mut res = super::pages::html(status, body);
    if let Ok(v) = HeaderValue::from_str(e.code) {
        res.headers_mut().insert("x-roster-sso-error", v);
    }
    res
}

pub(super) fn redirect(to: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(LOCATION, v);
    }
    res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_cookies(res, cookies)
}

fn with_cookies(mut res: Response, cookies: Vec<HeaderValue>) -> Response {
    for c in cookies {
        res.headers_mut().append(SET_COOKIE, c);
    }
    res
}

pub(super) fn set_cookie(s: &AppState, name: &str, value: &str, path: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if s.config.sso_dev_mode { "" } else { "; Secure" };
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}{age}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie(s: &AppState, name: &str, path: &str) -> HeaderValue {
    set_cookie(s, name, "", path, Some(0))
}

/// The value of cookie `name`, from any `Cookie` header.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

/// `Authorization: Basic` client credentials (RFC 6749 §2.3.1: form-encoded id and secret).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape =
        |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

fn serde_urlencoded_like(bytes: &[u8]) -> Result<TokenRequest, String> {
    let mut req = TokenRequest { code: None, client_id: None, client_secret: None, grant_type: None };
    for (k, v) in url::form_urlencoded::parse(bytes) {
        let slot = match k.as_ref() {
            "code" => &mut req.code,
            "client_id" => &mut req.client_id,
            "client_secret" => &mut req.client_secret,
            "grant_type" => &mut req.grant_type,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("`{k}` is given twice"));
        }
        *slot = Some(v.into_owned());
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_basic_auth_are_read() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; roster_session=xyz; b="));
        assert_eq!(cookie(&h, "roster_session").as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
        let creds = base64::engine::general_purpose::STANDARD.encode("my%20id:s%3Acret");
        h.insert(axum::http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {creds}")).unwrap());
        assert_eq!(basic_auth(&h), Some(("my id".into(), "s:cret".into())));
    }

    #[test]
    fn error_pages_escape_what_they_show() {
        let res = page(&LoginError { code: "x", message: "<script>".into(), status: 403 });
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
}
