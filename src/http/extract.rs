//! Extractors that answer in the admin API's error format: JSON bodies,
//! query strings and paths whose rejections become problem responses, and
//! the API-key authentication that turns a bearer token into an [`Actor`].

use super::error::Problem;
use super::limits::Limited;
use super::AppState;
use crate::model::CredentialKind;
use crate::service::{Actor, Operator, WebhookScope};
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// A JSON object body; malformed JSON is 400, anything but an object, wrong
/// types or unknown fields 422,
/// a wrong content type 415, an oversized body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => return Err(json_problem(rejection)),
        };
        if let Some(at) = nul_at(&value) {
            let at = if at.is_empty() { "/" } else { &at };
            let mut problem = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                format!("the body holds the NUL character (\\u0000) at `{at}`"),
            );
            problem.field = Some(at.trim_start_matches('/').replace('/', "."));
            return Err(problem);
        }
        // Every admin API body is an object; serde would also read a struct
        // from an array of its fields in order.
        if !value.is_object() {
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "the body must be a JSON object"));
        }
        serde_path_to_error::deserialize(value).map(ApiJson).map_err(|e| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
        })
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let kind = match &rejection {
        JsonRejection::JsonDataError(_) => "validation",
        JsonRejection::JsonSyntaxError(_) => "malformed-json",
        JsonRejection::MissingJsonContentType(_) => "unsupported-media-type",
        JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        _ => "invalid-request",
    };
    Problem::new(status, kind, rejection.body_text())
}

/// A raw body (for CSV uploads); an oversized body is 413.
#[derive(Debug, Clone)]
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        Bytes::from_request(req, state).await.map(ApiBytes).map_err(|r: BytesRejection| {
            let status = r.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload-too-large" } else { "invalid-request" };
            Problem::new(status, kind, r.body_text())
        })
    }
}

/// A query string; a bad parameter is 400.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| Problem::bad_request(r.body_text()))
    }
}

/// A path parameter; one that cannot name anything (not a UUID) is 404.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_: PathRejection| Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource"))
    }
}

/// 429 in the admin API's dialect, with `Retry-After`.
pub fn too_many_requests(limited: Limited) -> Response {
    limited.answer(Problem::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", limited.detail()))
}

/// The request id the request-id layer set (or the client sent).
pub fn request_id(parts: &Parts) -> Option<String> {
    parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Where a JSON document holds a U+0000 character, in a key or a string, as
/// a JSON pointer (`/emails/0/value`); `None` when it holds none. Roster
/// refuses the character everywhere: PostgreSQL cannot store it, and no
/// identifier, name or address needs it.
pub fn nul_at(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_at(item).map(|rest| format!("/{i}{rest}")))
        }
        Value::Object(object) => object.iter().find_map(|(key, item)| match key.contains('\0') {
            true => Some(format!("/{}", escape(key))),
            false => nul_at(item).map(|rest| format!("/{}{rest}", escape(key))),
        }),
        _ => None,
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The header with which an operator key names the organization it acts
/// on in an admin route.
pub const ORGANIZATION_HEADER: &str = "roster-organization";

/// Who a bearer token is: an organization's API key, or an operator key.
enum Caller {
    Org(Actor),
    Operator(Operator),
}

/// Authenticates the request's bearer token: an operator key
/// (`roster_op_…`) or an organization API key. An address whose failed
/// authentications used up `rate_limit_failed_auth_per_minute` gets 429
/// before any look-up.
async fn caller(parts: &Parts, state: &AppState) -> Result<Caller, Response> {
    let token = bearer_token(parts)
        .ok_or_else(|| Problem::unauthorized("send an API key as `Authorization: Bearer <key>`").into_response())?;
    let client = state.limits.client(parts);
    state.limits.failed_auth.check(&client).map_err(too_many_requests)?;
    let refused = |what: &str| {
        let detail = format!("the {what} is not valid, or was revoked or has expired");
        match state.limits.failed_auth.take(&client) {
            Ok(()) => Problem::unauthorized(detail).into_response(),
            Err(limited) => too_many_requests(limited),
        }
    };
    if token.starts_with("roster_op_") {
        let found = state.roster.authenticate_operator(token).await.map_err(|e| Problem::from(e).into_response())?;
        let Some(key) = found else { return Err(refused("operator key")) };
        return Ok(Caller::Operator(Operator {
            kind: crate::model::ActorKind::Operator,
            id: key.id.to_string(),
            request_id: request_id(parts),
        }));
    }
    let found =
        state.roster.authenticate(CredentialKind::ApiKey, token).await.map_err(|e| Problem::from(e).into_response())?;
    let Some(cred) = found else { return Err(refused("API key")) };
    let role = cred.role.ok_or_else(|| Problem::unauthorized("the API key has no role").into_response())?;
    tracing::Span::current().record("org", tracing::field::display(cred.org_id));
    Ok(Caller::Org(Actor {
        kind: crate::model::ActorKind::ApiKey,
        id: cred.id.to_string(),
        org_id: cred.org_id,
        role,
        request_id: request_id(parts),
    }))
}

/// The organization an operator key acts on (`Roster-Organization`), if the request names one.
async fn named_organization(parts: &Parts, state: &AppState) -> Result<Option<Uuid>, Response> {
    let Some(value) = parts.headers.get(ORGANIZATION_HEADER) else { return Ok(None) };
    let id = value.to_str().ok().and_then(|v| Uuid::parse_str(v.trim()).ok()).ok_or_else(|| {
        Problem::bad_request(format!("`{ORGANIZATION_HEADER}` must be an organization id (a UUID)")).into_response()
    })?;
    // An organization that does not exist is as unknown as a wrong route.
    state.roster.organization_exists(id).await.map_err(|e| Problem::from(e).into_response())?;
    tracing::Span::current().record("org", tracing::field::display(id));
    Ok(Some(id))
}

/// The caller of an admin route: an organization API key, or an operator
/// key acting on the organization its `Roster-Organization` header names
/// (with an Owner's rights, audited as the operator).
#[derive(Debug, Clone)]
pub struct AdminActor(pub Actor);

impl FromRequestParts<AppState> for AdminActor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match caller(parts, state).await? {
            Caller::Org(actor) => Ok(AdminActor(actor)),
            Caller::Operator(op) => match named_organization(parts, state).await? {
                Some(org_id) => Ok(AdminActor(op.on(org_id))),
                None => Err(Problem::bad_request(format!(
                    "an operator key acts on one organization here: name it in the `{ORGANIZATION_HEADER}` header"
                ))
                .into_response()),
            },
        }
    }
}

/// The caller of an operator route (`/api/v1/operator/…`): an operator key.
#[derive(Debug, Clone)]
pub struct OperatorCaller(pub Operator);

impl FromRequestParts<AppState> for OperatorCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match caller(parts, state).await? {
            Caller::Operator(op) => Ok(OperatorCaller(op)),
            Caller::Org(_) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route is the deployment operator's: it needs an operator key (`roster operator-key create`)",
            )
            .into_response()),
        }
    }
}

/// The caller of a webhook route: an organization's endpoints for an API
/// key (or an operator key naming the organization), the deployment's for
/// an operator key naming none.
#[derive(Debug, Clone)]
pub struct WebhookCaller(pub WebhookScope);

impl FromRequestParts<AppState> for WebhookCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        Ok(WebhookCaller(match caller(parts, state).await? {
            Caller::Org(actor) => WebhookScope::Org(actor),
            Caller::Operator(op) => match named_organization(parts, state).await? {
                Some(org_id) => WebhookScope::Org(op.on(org_id)),
                None => WebhookScope::Deployment(op),
            },
        }))
    }
}
