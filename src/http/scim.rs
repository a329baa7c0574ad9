//! The SCIM 2.0 endpoints under `/scim/v2` (RFC 7644 §3): thin handlers that
//! authenticate the organization's SCIM token, call one service function
//! and shape the answer as `application/scim+json`, with `ETag`s, paging,
//! `attributes`/`excludedAttributes`, `/.search`, `/Bulk` and discovery.

use super::extract::{bearer_token, nul_at, request_id};
use super::limits::Limited;
use super::AppState;
use crate::model::CredentialKind;
use crate::scim::error::SCIM_JSON;
use crate::scim::schema::{registry, resource_limits, ResourceKind, ScimLimits};
use crate::scim::{ScimError, ScimType};
use crate::service::{
    etag, Actor, GroupMemberPages, ScimGroup, ScimListParams, ScimPage, ScimUser, ServiceError, SCIM_MAX_RESULTS,
};
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
/// The most operations one `/Bulk` request may carry.
pub const BULK_MAX_OPERATIONS: usize = 1000;

type ScimResult<T> = Result<T, ScimError>;

/// The SCIM routes, to be nested at `/scim/v2`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/.search", post(search_users))
        .route("/Users/{id}", get(get_user).put(replace_user).patch(patch_user).delete(delete_user))
        .route("/Groups", get(list_groups).post(create_group))
        .route("/Groups/.search", post(search_groups))
        .route("/Groups/{id}", get(get_group).put(replace_group).patch(patch_group).delete(delete_group))
        .route("/.search", post(search_all))
        .route("/Bulk", post(bulk))
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .route("/Me", any(|| async { ScimError::new(StatusCode::NOT_IMPLEMENTED, None, "/Me is not supported") }))
        .route(
            "/Me/{*rest}",
            any(|| async { ScimError::new(StatusCode::NOT_IMPLEMENTED, None, "/Me is not supported") }),
        )
        .fallback(|| async { ScimError::not_found("no such SCIM endpoint") })
        .method_not_allowed_fallback(|| async {
            ScimError::new(StatusCode::METHOD_NOT_ALLOWED, None, "this endpoint does not take that method")
        })
}

// ---- Extractors --------------------------------------------------------------

/// The organization a SCIM token belongs to, as the acting [`Actor`].
pub struct ScimAuth(pub Actor);

impl FromRequestParts<AppState> for ScimAuth {
    type Rejection = Response;

    /// An address whose failed authentications used up
    /// `rate_limit_failed_auth_per_minute` gets 429 before any look-up.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let unauthorized = |detail: &str| ScimError::new(StatusCode::UNAUTHORIZED, None, detail).into_response();
        let too_many =
            |limited: Limited| limited.answer(ScimError::new(StatusCode::TOO_MANY_REQUESTS, None, limited.detail()));
        let token = bearer_token(parts)
            .ok_or_else(|| unauthorized("send the SCIM token as `Authorization: Bearer <token>`"))?;
        let client = state.limits.client(parts);
        state.limits.failed_auth.check(&client).map_err(too_many)?;
        let found = state
            .roster
            .authenticate(CredentialKind::ScimToken, token)
            .await
            .map_err(|e| to_scim(e).into_response())?;
        let Some(cred) = found else {
            state.limits.failed_auth.take(&client).map_err(too_many)?;
            return Err(unauthorized("the SCIM token is not valid, or was revoked or has expired"));
        };
        tracing::Span::current().record("org", tracing::field::display(cred.org_id));
        if let Some(logged) = parts.extensions.get::<super::scim_log::LoggedOrg>() {
            logged.set(cred.org_id);
        }
        Ok(ScimAuth(crate::service::Roster::scim_actor(cred.id, cred.org_id, request_id(parts))))
    }
}

/// Bodies larger than this are parsed off the async workers.
const LARGE_BODY: usize = 64 * 1024;

/// A SCIM request body: `application/scim+json` or `application/json`.
pub struct ScimBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(req: Request, state: &S) -> ScimResult<Self> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(essence == "application/scim+json" || essence == "application/json") {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "send the body as application/scim+json or application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ScimError::new(StatusCode::PAYLOAD_TOO_LARGE, None, "the request body is larger than maxPayloadSize")
            } else {
                ScimError::invalid_syntax(r.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ScimBody(json!({})));
        }
        let bytes_len = bytes.len();
        let parse = move || -> ScimResult<Value> {
            serde_json::from_slice(&bytes)
                .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
        };
        // A large body is parsed on the blocking pool: the async workers
        // keep answering other requests (health checks among them).
        let body = if bytes_len > LARGE_BODY {
            tokio::task::spawn_blocking(parse)
                .await
                .map_err(|_| ScimError::new(StatusCode::INTERNAL_SERVER_ERROR, None, "the body could not be read"))??
        } else {
            parse()?
        };
        match nul_at(&body) {
            Some(at) => Err(ScimError::invalid_value(format!(
                "the body holds the NUL character (\\u0000) at `{}`",
                if at.is_empty() { "/" } else { &at }
            ))),
            None => Ok(ScimBody(body)),
        }
    }
}

/// Maps a service failure to its SCIM error (RFC 7644 §3.12).
pub fn to_scim(e: ServiceError) -> ScimError {
    match e {
        ServiceError::Scim(e) => e,
        ServiceError::NotFound(what) => ScimError::not_found(format!("{what} not found")),
        ServiceError::SeatLimitReached { purchased, used, .. } => ScimError::new(
            StatusCode::FORBIDDEN,
            None,
            format!("seat limit reached: the organization has {purchased} seats and {used} are in use"),
        ),
        ServiceError::LastOwner => ScimError::new(
            StatusCode::FORBIDDEN,
            None,
            "this user is the organization's last active Owner and cannot be suspended or deprovisioned",
        ),
        ServiceError::Conflict(detail) => ScimError::uniqueness(detail),
        ServiceError::Invalid { field, message } => ScimError::invalid_value(format!("{field}: {message}")),
        ServiceError::BulkRejected(_) => ScimError::invalid_value("the request is not valid"),
        ServiceError::Forbidden { .. } | ServiceError::OperatorOnly(_) => {
            ScimError::new(StatusCode::FORBIDDEN, None, e.to_string())
        }
        ServiceError::PreconditionFailed(current) => ScimError::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            format!("the resource has changed; its version is now {current}"),
        ),
        ServiceError::Store(cause) => {
            tracing::error!(error = ?anyhow::Error::from(cause), "storage failure");
            ScimError::new(StatusCode::INTERNAL_SERVER_ERROR, None, "an internal error occurred")
        }
    }
}

// ---- Representations ---------------------------------------------------------

/// `https://host/scim/v2`.
fn base_url(state: &AppState) -> String {
    format!("{}scim/v2", state.config.public_base_url)
}

fn meta(
    kind: &str,
    location: String,
    created: chrono::DateTime<chrono::Utc>,
    modified: chrono::DateTime<chrono::Utc>,
    version: i64,
) -> Value {
    json!({
        "resourceType": kind,
        "created": created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lastModified": modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "location": location,
        "version": etag(version),
    })
}

fn user_json(base: &str, u: ScimUser) -> Value {
    let ScimUser { record: r, groups } = u;
    let mut obj = match r.resource {
        Value::Object(obj) => obj,
        _ => Map::new(),
    };
    obj.insert("id".into(), r.id.to_string().into());
    if !groups.is_empty() {
        let groups: Vec<Value> = groups
            .iter()
            .map(|(id, name)| json!({ "value": id.to_string(), "display": name, "$ref": format!("{base}/Groups/{id}"), "type": "direct" }))
            .collect();
        obj.insert("groups".into(), Value::Array(groups));
    }
    obj.insert("meta".into(), meta("User", format!("{base}/Users/{}", r.id), r.created_at, r.updated_at, r.version));
    Value::Object(obj)
}

fn group_json(base: &str, g: ScimGroup) -> Value {
    let ScimGroup { record: r, members } = g;
    let mut obj = match r.resource {
        Value::Object(obj) => obj,
        _ => Map::new(),
    };
    obj.insert("id".into(), r.id.to_string().into());
    // No `members` for none, as a default projection writes an empty list.
    if let Some(members) = members.as_ref().filter(|m| !m.is_empty()) {
        let list: Vec<Value> =
            members.iter().map(|(id, name)| Value::Object(member_json(base, id, name.as_deref()))).collect();
        obj.insert("members".into(), Value::Array(list));
    }
    obj.insert("meta".into(), meta("Group", format!("{base}/Groups/{}", r.id), r.created_at, r.updated_at, r.version));
    Value::Object(obj)
}

/// One element of a Group's `members`.
fn member_json(base: &str, id: &Uuid, name: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("value".into(), id.to_string().into());
    m.insert("$ref".into(), format!("{base}/Users/{id}").into());
    m.insert("type".into(), "User".into());
    if let Some(name) = name {
        m.insert("display".into(), name.into());
    }
    m
}

/// A group answer whose `members` are written as they are read, so that a
/// large group is never whole in memory: `head` is the projected group
/// without them, and the list goes in before its closing brace.
fn streamed_group(head: &Value, pages: GroupMemberPages, mut members: MembersWriter, version: i64) -> Response {
    let head = members.head(head);
    let rest = stream::unfold(Some((Box::pin(pages.into_stream()), members)), |state| async move {
        let (mut pages, mut members) = state?;
        match pages.next().await {
            Some(Ok(page)) => {
                let chunk = members.page(&page);
                Some((Ok(Bytes::from(chunk)), Some((pages, members))))
            }
            None => Some((Ok(Bytes::from_static(members.end())), None)),
            // The status line is sent: all that is left is to cut the answer
            // short, so that the client sees it is not whole. The reader
            // logged why.
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    let body = stream::once(async move { Ok(Bytes::from(head)) }).chain(rest);
    let mut res = Response::new(Body::from_stream(body));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

/// Writes pages of a group's members as the JSON of its `members` list.
struct MembersWriter {
    base: String,
    /// The sub-attributes the projection keeps.
    keep: Vec<String>,
    /// Whether the group's JSON has attributes before the list (a `,` goes
    /// first); set by [`Self::head`].
    after_attribute: bool,
    /// Whether `"members":[` is written. A list whose every member was
    /// projected away is left out, as [`Projection::apply`] leaves out an
    /// empty list.
    opened: bool,
}

impl MembersWriter {
    /// The group's JSON up to its closing brace, which [`Self::end`] writes.
    fn head(&mut self, group: &Value) -> Vec<u8> {
        let mut head = group.to_string().into_bytes();
        head.pop();
        self.after_attribute = head.len() > 1;
        head
    }

    fn page(&mut self, page: &[(Uuid, Option<String>)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(page.len() * 160);
        for (id, name) in page {
            let mut m = member_json(&self.base, id, name.as_deref());
            m.retain(|k, _| self.keep.contains(k));
            if m.is_empty() {
                continue;
            }
            out.extend_from_slice(match (self.opened, self.after_attribute) {
                (true, _) => b",",
                (false, true) => b",\"members\":[",
                (false, false) => b"\"members\":[",
            });
            self.opened = true;
            // Writing a map of JSON values into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &m);
        }
        out
    }

    fn end(&self) -> &'static [u8] {
        if self.opened {
            b"]}"
        } else {
            b"}"
        }
    }
}

/// A SCIM JSON answer.
fn scim(status: StatusCode, body: Value) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    res
}

/// A single resource with its `ETag` (and `Location` when created).
fn resource(status: StatusCode, body: Value, version: i64, location: Option<&str>) -> Response {
    let mut res = scim(status, body);
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        res.headers_mut().insert(header::ETAG, v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    res
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `304 Not Modified` when `If-None-Match` names the current version.
fn not_modified(headers: &HeaderMap, version: i64) -> Option<Response> {
    let header = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    let current = etag(version);
    let strong = format!("\"{version}\"");
    header.split(',').map(str::trim).any(|t| t == "*" || t == current || t == strong).then(|| {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&current) {
            res.headers_mut().insert(header::ETAG, v);
        }
        res
    })
}

// ---- Query parameters ---------------------------------------------------------

/// `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5), comma-separated.
#[derive(Debug, Clone, Default)]
struct Projection {
    attributes: Vec<String>,
    excluded: Vec<String>,
}

impl Projection {
    /// Each list without repeats (names are case-insensitive), and at most
    /// [`resource_limits::MAX_ATTRIBUTE_NAMES`] long: `invalidValue`.
    fn from_strings(attributes: Option<&str>, excluded: Option<&str>) -> ScimResult<Self> {
        let split = |s: Option<&str>, param: &str| {
            let mut seen = HashSet::new();
            let names: Vec<String> = s
                .into_iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|a| !a.is_empty() && seen.insert(a.to_ascii_lowercase()))
                .map(str::to_string)
                .collect();
            match names.len() > resource_limits::MAX_ATTRIBUTE_NAMES {
                true => Err(ScimError::invalid_value(format!(
                    "{param} names {} attributes: at most {} are taken",
                    names.len(),
                    resource_limits::MAX_ATTRIBUTE_NAMES
                ))),
                false => Ok(names),
            }
        };
        Ok(Self { attributes: split(attributes, "attributes")?, excluded: split(excluded, "excludedAttributes")? })
    }

    /// `value` as this projection returns it. Without `attributes` or
    /// `excludedAttributes` that is `value` itself: a representation built
    /// from a stored resource holds only what the default returns (what
    /// is never returned, `password`, is never stored; see
    /// `default_projection_keeps_a_stored_resource_whole` in the schema).
    fn apply(&self, kind: ResourceKind, value: Value) -> Value {
        if self.attributes.is_empty() && self.excluded.is_empty() {
            return value;
        }
        registry().project(kind, &value, &self.attributes, &self.excluded)
    }

    /// How to write a group's members under this projection, found by
    /// projecting a member with every sub-attribute: whether a
    /// sub-attribute is kept depends neither on its value nor on the other
    /// members. `None` when `members` is left out altogether.
    fn members_writer(&self, base: String) -> Option<MembersWriter> {
        let sample = json!({ "members": [member_json(&base, &Uuid::nil(), Some("-"))] });
        let projected = self.apply(ResourceKind::Group, sample);
        let keep = projected.get("members")?.get(0)?.as_object()?.keys().cloned().collect();
        Some(MembersWriter { base, keep, after_attribute: false, opened: false })
    }

    /// Whether group members are in the answer (they cost a read per group).
    fn wants_members(&self) -> bool {
        let names = |list: &[String]| {
            list.iter().any(|a| a.eq_ignore_ascii_case("members") || a.to_ascii_lowercase().starts_with("members."))
        };
        if names(&self.excluded) {
            return false;
        }
        self.attributes.is_empty() || names(&self.attributes)
    }
}

fn int_param(raw: Option<&String>, name: &str) -> ScimResult<Option<i64>> {
    raw.map(|v| v.trim().parse::<i64>().map_err(|_| ScimError::invalid_value(format!("{name} must be an integer"))))
        .transpose()
}

/// List parameters from a query string or a SearchRequest body.
fn list_params(p: &HashMap<String, String>) -> ScimResult<(ScimListParams, Projection)> {
    if let Some((key, _)) = p.iter().find(|(_, v)| v.contains('\0')) {
        let detail = format!("`{key}` contains the NUL character");
        return Err(match key.eq_ignore_ascii_case("filter") {
            true => ScimError::invalid_filter(detail),
            false => ScimError::invalid_value(detail),
        });
    }
    let get = |k: &str| p.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v);
    let descending = match get("sortOrder").map(|s| s.to_ascii_lowercase()) {
        None => false,
        Some(s) if s == "ascending" => false,
        Some(s) if s == "descending" => true,
        Some(other) => {
            return Err(ScimError::invalid_value(format!("sortOrder `{other}` is not ascending or descending")))
        }
    };
    let projection =
        Projection::from_strings(get("attributes").map(String::as_str), get("excludedAttributes").map(String::as_str))?;
    let params = ScimListParams {
        filter: get("filter").cloned(),
        sort_by: get("sortBy").cloned(),
        descending,
        start_index: int_param(get("startIndex"), "startIndex")?,
        count: int_param(get("count"), "count")?,
        with_members: projection.wants_members(),
    };
    Ok((params, projection))
}

/// A SearchRequest body (RFC 7644 §3.4.3) as list parameters.
fn search_params(body: &Value) -> ScimResult<(ScimListParams, Projection)> {
    let obj = body.as_object().ok_or_else(|| ScimError::invalid_syntax("the SearchRequest must be a JSON object"))?;
    let schemas_ok = obj
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(SEARCH_REQUEST))));
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!("schemas must contain {SEARCH_REQUEST}")));
    }
    let mut map = HashMap::new();
    for (k, v) in obj {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
            _ => continue,
        };
        map.insert(k.clone(), text);
    }
    list_params(&map)
}

fn list_response(total: i64, start_index: i64, resources: Vec<Value>) -> Response {
    scim(
        StatusCode::OK,
        json!({
            "schemas": [LIST_RESPONSE],
            "totalResults": total,
            "itemsPerPage": resources.len(),
            "startIndex": start_index,
            "Resources": resources,
        }),
    )
}

fn parse_id(raw: &str, kind: &str) -> ScimResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ScimError::not_found(format!("{kind} {raw} not found")))
}

// ---- Users --------------------------------------------------------------------

async fn users_page(s: &AppState, a: &Actor, params: ScimListParams, projection: &Projection) -> ScimResult<Response> {
    let base = base_url(s);
    let page: ScimPage<ScimUser> = s.roster.scim_list_users(a, params).await.map_err(to_scim)?;
    let items = page.items.into_iter().map(|u| projection.apply(ResourceKind::User, user_json(&base, u))).collect();
    Ok(list_response(page.total, page.start_index, items))
}

async fn list_users(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Query(q): Query<HashMap<String, String>>,
) -> ScimResult<Response> {
    let (params, projection) = list_params(&q)?;
    users_page(&s, &a, params, &projection).await
}

async fn search_users(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (params, projection) = search_params(&body)?;
    users_page(&s, &a, params, &projection).await
}

async fn get_user(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let user = s.roster.scim_get_user(&a, parse_id(&id, "User")?).await.map_err(to_scim)?;
    if let Some(res) = not_modified(&headers, user.record.version) {
        return Ok(res);
    }
    let version = user.record.version;
    let body = projection.apply(ResourceKind::User, user_json(&base_url(&s), user));
    Ok(resource(StatusCode::OK, body, version, None))
}

async fn create_user(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let user = s.roster.scim_create_user(&a, &body).await.map_err(to_scim)?;
    let version = user.record.version;
    let json = user_json(&base_url(&s), user);
    let location = json["meta"]["location"].as_str().map(str::to_string);
    Ok(resource(StatusCode::CREATED, projection.apply(ResourceKind::User, json), version, location.as_deref()))
}

async fn replace_user(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let id = parse_id(&id, "User")?;
    let user = s.roster.scim_replace_user(&a, id, &body, if_match(&headers).as_deref()).await.map_err(to_scim)?;
    let version = user.record.version;
    let body = projection.apply(ResourceKind::User, user_json(&base_url(&s), user));
    Ok(resource(StatusCode::OK, body, version, None))
}

async fn patch_user(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let id = parse_id(&id, "User")?;
    let user = s.roster.scim_patch_user(&a, id, &body, if_match(&headers).as_deref()).await.map_err(to_scim)?;
    let version = user.record.version;
    let body = projection.apply(ResourceKind::User, user_json(&base_url(&s), user));
    Ok(resource(StatusCode::OK, body, version, None))
}

async fn delete_user(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ScimResult<StatusCode> {
    let id = parse_id(&id, "User")?;
    s.roster.scim_delete_user(&a, id, if_match(&headers).as_deref()).await.map_err(to_scim)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Groups -------------------------------------------------------------------

async fn groups_page(s: &AppState, a: &Actor, params: ScimListParams, projection: &Projection) -> ScimResult<Response> {
    let base = base_url(s);
    let page: ScimPage<ScimGroup> = s.roster.scim_list_groups(a, params).await.map_err(to_scim)?;
    let items = page.items.into_iter().map(|g| projection.apply(ResourceKind::Group, group_json(&base, g))).collect();
    Ok(list_response(page.total, page.start_index, items))
}

async fn list_groups(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Query(q): Query<HashMap<String, String>>,
) -> ScimResult<Response> {
    let (params, projection) = list_params(&q)?;
    groups_page(&s, &a, params, &projection).await
}

async fn search_groups(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (params, projection) = search_params(&body)?;
    groups_page(&s, &a, params, &projection).await
}

async fn get_group(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let id = parse_id(&id, "Group")?;
    let (group, pages) = s.roster.scim_get_group_streamed(&a, id, projection.wants_members()).await.map_err(to_scim)?;
    if let Some(res) = not_modified(&headers, group.record.version) {
        return Ok(res);
    }
    let base = base_url(&s);
    let version = group.record.version;
    let mut json = group_json(&base, group);
    match pages.zip(projection.members_writer(base)) {
        Some((pages, members)) => {
            // The list read from the store replaces any stored `members`, as in `group_json`.
            if let Some(obj) = json.as_object_mut() {
                obj.remove("members");
            }
            Ok(streamed_group(&projection.apply(ResourceKind::Group, json), pages, members, version))
        }
        None => Ok(resource(StatusCode::OK, projection.apply(ResourceKind::Group, json), version, None)),
    }
}

async fn create_group(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let group = s.roster.scim_create_group(&a, &body).await.map_err(to_scim)?;
    let version = group.record.version;
    let json = group_json(&base_url(&s), group);
    let location = json["meta"]["location"].as_str().map(str::to_string);
    Ok(resource(StatusCode::CREATED, projection.apply(ResourceKind::Group, json), version, location.as_deref()))
}

/// Answers a group write with the group as it now is (members read only when wanted).
async fn group_answer(s: &AppState, a: &Actor, id: Uuid, projection: &Projection) -> ScimResult<Response> {
    let group = s.roster.scim_get_group(a, id, projection.wants_members()).await.map_err(to_scim)?;
    let version = group.record.version;
    let body = projection.apply(ResourceKind::Group, group_json(&base_url(s), group));
    Ok(resource(StatusCode::OK, body, version, None))
}

async fn replace_group(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let id = parse_id(&id, "Group")?;
    s.roster.scim_replace_group(&a, id, &body, if_match(&headers).as_deref()).await.map_err(to_scim)?;
    group_answer(&s, &a, id, &projection).await
}

async fn patch_group(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (_, projection) = list_params(&q)?;
    let id = parse_id(&id, "Group")?;
    s.roster.scim_patch_group(&a, id, &body, if_match(&headers).as_deref()).await.map_err(to_scim)?;
    group_answer(&s, &a, id, &projection).await
}

async fn delete_group(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ScimResult<StatusCode> {
    let id = parse_id(&id, "Group")?;
    s.roster.scim_delete_group(&a, id, if_match(&headers).as_deref()).await.map_err(to_scim)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Root search ---------------------------------------------------------------

/// POST /.search: Users then Groups, paged across both (RFC 7644 §3.4.3).
async fn search_all(
    State(s): State<AppState>,
    ScimAuth(a): ScimAuth,
    ScimBody(body): ScimBody,
) -> ScimResult<Response> {
    let (params, projection) = search_params(&body)?;
    let base = base_url(&s);
    let start = params.start_index.unwrap_or(1).max(1);
    let count = params.count.unwrap_or(crate::service::SCIM_DEFAULT_COUNT).clamp(0, SCIM_MAX_RESULTS);
    // Totals first, then the slice of the concatenation this page covers.
    let users_total =
        s.roster.scim_list_users(&a, ScimListParams { count: Some(0), ..params.clone() }).await.map_err(to_scim)?.total;
    let groups_total = s
        .roster
        .scim_list_groups(&a, ScimListParams { count: Some(0), ..params.clone() })
        .await
        .map_err(to_scim)?
        .total;
    let mut items = Vec::new();
    if start <= users_total && count > 0 {
        let page = s
            .roster
            .scim_list_users(&a, ScimListParams { start_index: Some(start), count: Some(count), ..params.clone() })
            .await
            .map_err(to_scim)?;
        items.extend(page.items.into_iter().map(|u| projection.apply(ResourceKind::User, user_json(&base, u))));
    }
    let left = count - items.len() as i64;
    if left > 0 {
        let group_start = (start - users_total).max(1);
        let page = s
            .roster
            .scim_list_groups(&a, ScimListParams { start_index: Some(group_start), count: Some(left), ..params })
            .await
            .map_err(to_scim)?;
        items.extend(page.items.into_iter().map(|g| projection.apply(ResourceKind::Group, group_json(&base, g))));
    }
    Ok(list_response(users_total + groups_total, start, items))
}

// ---- Bulk -----------------------------------------------------------------------

/// POST /Bulk (RFC 7644 §3.7): each operation runs as its own request
/// would; `bulkId:` references are resolved to the ids of resources created
/// earlier in the same request, whatever their order.
async fn bulk(State(s): State<AppState>, ScimAuth(a): ScimAuth, ScimBody(body): ScimBody) -> ScimResult<Response> {
    let obj = body.as_object().ok_or_else(|| ScimError::invalid_syntax("the BulkRequest must be a JSON object"))?;
    let schemas_ok = obj
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(BULK_REQUEST))));
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!("schemas must contain {BULK_REQUEST}")));
    }
    let ops = obj
        .get("Operations")
        .or_else(|| obj.get("operations"))
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("Operations must be a list"))?;
    if ops.len() > BULK_MAX_OPERATIONS {
        return Err(ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(ScimType::TooMany),
            format!("at most {BULK_MAX_OPERATIONS} operations per request, got {}", ops.len()),
        ));
    }
    let fail_on_errors = match obj.get("failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| ScimError::invalid_value("failOnErrors must be a positive integer"))?),
    };
    let base = base_url(&s);
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut results: Vec<Option<Value>> = vec![None; ops.len()];
    let mut errors = 0u64;
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    loop {
        let mut progressed = false;
        let mut deferred = Vec::new();
        for i in pending {
            if fail_on_errors.is_some_and(|limit| errors >= limit) {
                break;
            }
            let op = &ops[i];
            let Some(resolved) = resolve_bulk_ids(op, &ids) else {
                deferred.push(i);
                continue;
            };
            progressed = true;
            let outcome = bulk_operation(&s, &a, &base, &resolved).await;
            if let (Some(bulk_id), Some(id)) =
                (op.get("bulkId").and_then(Value::as_str), outcome.get("id").and_then(Value::as_str))
            {
                ids.insert(bulk_id.to_string(), id.to_string());
            }
            let status: u16 = outcome["status"].as_str().and_then(|s| s.parse().ok()).unwrap_or(500);
            if status >= 400 {
                errors += 1;
            }
            let mut entry = outcome;
            if let Some(obj) = entry.as_object_mut() {
                obj.remove("id");
            }
            results[i] = Some(entry);
        }
        pending = deferred;
        if pending.is_empty() || !progressed || fail_on_errors.is_some_and(|limit| errors >= limit) {
            break;
        }
    }
    for i in pending {
        if fail_on_errors.is_some_and(|limit| errors >= limit) {
            break;
        }
        let err = ScimError::new(
            StatusCode::CONFLICT,
            Some(ScimType::InvalidValue),
            "a bulkId it refers to was never created",
        );
        results[i] = Some(bulk_entry(&ops[i], err.status, Some(err.body()), None, None));
        errors += 1;
    }
    let operations: Vec<Value> = results.into_iter().flatten().collect();
    Ok(scim(StatusCode::OK, json!({ "schemas": [BULK_RESPONSE], "Operations": operations })))
}

/// The operation with every `bulkId:<id>` replaced, or `None` while one of them is still unknown.
fn resolve_bulk_ids(op: &Value, ids: &HashMap<String, String>) -> Option<Value> {
    fn walk(v: &Value, ids: &HashMap<String, String>) -> Option<Value> {
        Some(match v {
            Value::String(s) => match s.strip_prefix("bulkId:") {
                Some(b) => Value::String(ids.get(b)?.clone()),
                None => v.clone(),
            },
            Value::Array(list) => Value::Array(list.iter().map(|x| walk(x, ids)).collect::<Option<_>>()?),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, x) in map {
                    out.insert(k.clone(), walk(x, ids)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
    let mut op = op.clone();
    if let Some(path) = op.get("path").and_then(Value::as_str) {
        if let Some((prefix, b)) = path.split_once("bulkId:") {
            let id = ids.get(b)?;
            op["path"] = Value::String(format!("{prefix}{id}"));
        }
    }
    if let Some(data) = op.get("data") {
        op["data"] = walk(data, ids)?;
    }
    Some(op)
}

fn bulk_entry(
    op: &Value,
    status: StatusCode,
    response: Option<Value>,
    location: Option<String>,
    version: Option<i64>,
) -> Value {
    let mut entry = json!({
        "method": op.get("method").cloned().unwrap_or(Value::Null),
        "status": status.as_u16().to_string(),
    });
    if let Some(b) = op.get("bulkId") {
        entry["bulkId"] = b.clone();
    }
    if let Some(l) = location {
        entry["location"] = l.into();
    }
    if let Some(v) = version {
        entry["version"] = etag(v).into();
    }
    if let Some(r) = response {
        entry["response"] = r;
    }
    entry
}

/// Runs one bulk operation; the answer carries the created id under `id` for bulkId resolution.
async fn bulk_operation(s: &AppState, a: &Actor, base: &str, op: &Value) -> Value {
    let fail = |e: ScimError| bulk_entry(op, e.status, Some(e.body()), None, None);
    let method = op.get("method").and_then(Value::as_str).unwrap_or("").to_ascii_uppercase();
    let Ok(method) = method.parse::<Method>() else {
        return fail(ScimError::invalid_syntax("method must be POST, PUT, PATCH or DELETE"));
    };
    let path = op.get("path").and_then(Value::as_str).unwrap_or("");
    let data = op.get("data").cloned().unwrap_or(Value::Null);
    let version = op.get("version").and_then(Value::as_str);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kind = match segments.first().copied() {
        Some("Users") => ResourceKind::User,
        Some("Groups") => ResourceKind::Group,
        _ => return fail(ScimError::invalid_path(format!("`{path}` is not /Users or /Groups"))),
    };
    let id = match segments.get(1) {
        Some(raw) => match Uuid::parse_str(raw) {
            Ok(id) => Some(id),
            Err(_) => return fail(ScimError::not_found(format!("{path} not found"))),
        },
        None => None,
    };
    let r = &s.roster;
    let outcome: Result<(StatusCode, Option<(i64, Value)>), ServiceError> = match (method.as_str(), kind, id) {
        ("POST", ResourceKind::User, None) => r
            .scim_create_user(a, &data)
            .await
            .map(|u| (StatusCode::CREATED, Some((u.record.version, user_json(base, u))))),
        ("POST", ResourceKind::Group, None) => r
            .scim_create_group(a, &data)
            .await
            .map(|g| (StatusCode::CREATED, Some((g.record.version, group_json(base, g))))),
        ("PUT", ResourceKind::User, Some(id)) => r
            .scim_replace_user(a, id, &data, version)
            .await
            .map(|u| (StatusCode::OK, Some((u.record.version, user_json(base, u))))),
        ("PUT", ResourceKind::Group, Some(id)) => r
            .scim_replace_group(a, id, &data, version)
            .await
            .map(|g| (StatusCode::OK, Some((g.record.version, group_json(base, g))))),
        ("PATCH", ResourceKind::User, Some(id)) => r
            .scim_patch_user(a, id, &data, version)
            .await
            .map(|u| (StatusCode::OK, Some((u.record.version, user_json(base, u))))),
        ("PATCH", ResourceKind::Group, Some(id)) => r
            .scim_patch_group(a, id, &data, version)
            .await
            .map(|g| (StatusCode::OK, Some((g.record.version, group_json(base, g))))),
        ("DELETE", ResourceKind::User, Some(id)) => {
            r.scim_delete_user(a, id, version).await.map(|_| (StatusCode::NO_CONTENT, None))
        }
        ("DELETE", ResourceKind::Group, Some(id)) => {
            r.scim_delete_group(a, id, version).await.map(|_| (StatusCode::NO_CONTENT, None))
        }
        _ => return fail(ScimError::invalid_syntax(format!("{method} {path} is not a bulk operation Roster runs"))),
    };
    match outcome {
        Ok((status, Some((version, json)))) => {
            let location = json["meta"]["location"].as_str().map(str::to_string);
            let mut entry = bulk_entry(op, status, None, location, Some(version));
            entry["id"] = json["id"].clone();
            entry
        }
        Ok((status, None)) => {
            bulk_entry(op, status, None, Some(format!("{base}/{path}", path = path.trim_start_matches('/'))), None)
        }
        Err(e) => fail(to_scim(e)),
    }
}

// ---- Discovery --------------------------------------------------------------------

fn limits(s: &AppState) -> ScimLimits {
    ScimLimits {
        max_results: SCIM_MAX_RESULTS as usize,
        max_operations: BULK_MAX_OPERATIONS,
        max_payload_size: s.config.request_body_limit_bytes,
    }
}

async fn service_provider_config(State(s): State<AppState>, ScimAuth(_): ScimAuth) -> Response {
    scim(StatusCode::OK, registry().service_provider_config(&limits(&s), &base_url(&s)))
}

async fn resource_types(State(s): State<AppState>, ScimAuth(_): ScimAuth) -> Response {
    scim(StatusCode::OK, registry().resource_types_document(&base_url(&s)))
}

async fn resource_type(
    State(s): State<AppState>,
    ScimAuth(_): ScimAuth,
    Path(id): Path<String>,
) -> ScimResult<Response> {
    let doc = registry()
        .resource_type_document(&id, &base_url(&s))
        .ok_or_else(|| ScimError::not_found(format!("no resource type {id}")))?;
    Ok(scim(StatusCode::OK, doc))
}

async fn schemas(State(s): State<AppState>, ScimAuth(_): ScimAuth) -> Response {
    scim(StatusCode::OK, registry().schemas_document(&base_url(&s)))
}

async fn schema(State(s): State<AppState>, ScimAuth(_): ScimAuth, Path(id): Path<String>) -> ScimResult<Response> {
    let doc = registry()
        .schema_document(&id, &base_url(&s))
        .ok_or_else(|| ScimError::not_found(format!("no schema {id}")))?;
    Ok(scim(StatusCode::OK, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group's JSON with `pages` of members spliced in, as `streamed_group` writes it.
    fn spliced(group: &Value, projection: &Projection, pages: &[Vec<(Uuid, Option<String>)>]) -> Value {
        let Some(mut members) = projection.members_writer("https://h/scim/v2".into()) else {
            return group.clone();
        };
        let mut out = members.head(group);
        for page in pages {
            out.extend(members.page(page));
        }
        out.extend(members.end());
        serde_json::from_slice(&out).expect("the spliced answer is JSON")
    }

    #[test]
    fn members_are_spliced_in_as_the_projection_in_memory_would_leave_them() {
        let named = |i: u128| (Uuid::from_u128(i), i.is_multiple_of(2).then(|| format!("User {i}")));
        let pages: Vec<Vec<(Uuid, Option<String>)>> =
            vec![(1..4).map(named).collect(), vec![], (4..6).map(named).collect()];
        let whole: Vec<(Uuid, Option<String>)> = pages.concat();
        let group = json!({ "id": "g", "displayName": "team" });
        for (attributes, excluded) in [
            (None, None),
            (Some("members.value"), None),
            (Some("members.display"), None),
            (None, Some("members.display,members.$ref")),
            (None, Some("members.value,members.$ref,members.type,members.display")),
        ] {
            let projection = Projection::from_strings(attributes, excluded).unwrap();
            for head in [group.clone(), json!({})] {
                let mut in_memory = head.clone();
                in_memory["members"] = whole
                    .iter()
                    .map(|(id, name)| Value::Object(member_json("https://h/scim/v2", id, name.as_deref())))
                    .collect();
                let want = projection.apply(ResourceKind::Group, in_memory);
                let got = spliced(&projection.apply(ResourceKind::Group, head.clone()), &projection, &pages);
                assert_eq!(got, want, "{attributes:?} {excluded:?} on {head}");
            }
        }
        // No members at all: the object stays as it was, `{}` included.
        assert_eq!(spliced(&json!({}), &Projection::default(), &[vec![]]), json!({}));
        assert_eq!(spliced(&group, &Projection::default(), &[]), group);
    }
}
