//! The one place admin-API errors become HTTP: RFC 9457
//! `application/problem+json` bodies. 5xx bodies say nothing of the cause;
//! the cause chain goes to the log.

use crate::service::{LineError, ServiceError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem details body (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Per-line errors of a rejected bulk upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<LineError>>,
    /// The field at fault, for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seat counts, for seat-limit problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchased_seats: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_seats: Option<i64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:roster:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
            field: None,
            purchased_seats: None,
            used_seats: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-request", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = (status, axum::Json(&self)).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"roster\""));
        }
        res
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        let detail = e.to_string();
        match e {
            ServiceError::Forbidden { .. } => Problem::new(StatusCode::FORBIDDEN, "forbidden", detail),
            ServiceError::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, "not-found", detail),
            ServiceError::OperatorOnly(_) => Problem::new(StatusCode::FORBIDDEN, "operator-only", detail),
            ServiceError::Invalid { field, .. } => {
                Problem { field: Some(field), ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail) }
            }
            ServiceError::SeatLimitReached { purchased, used, .. } => Problem {
                purchased_seats: Some(purchased),
                used_seats: Some(used),
                ..Problem::new(StatusCode::CONFLICT, "seat-limit-reached", detail)
            },
            ServiceError::LastOwner => Problem::new(StatusCode::CONFLICT, "last-owner", detail),
            ServiceError::Conflict(_) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            ServiceError::BulkRejected(lines) => Problem {
                errors: Some(lines),
                ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "bulk-rejected", detail)
            },
            ServiceError::Scim(e) => Problem::new(e.status, "invalid-request", e.detail),
            ServiceError::PreconditionFailed(_) => {
                Problem::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", detail)
            }
            ServiceError::Store(cause) => {
                tracing::error!(error = ?anyhow::Error::from(cause), "storage failure");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error occurred; see the server log",
                )
            }
        }
    }
}

/// Whether a request is a SCIM one: its errors are SCIM error bodies.
fn is_scim(uri: &axum::http::Uri) -> bool {
    let path = uri.path();
    path == "/scim/v2" || path.starts_with("/scim/v2/")
}

/// The longest request target Roster reads, in bytes (414 past it).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most bytes all request headers may hold together, names and values
/// (431 past it).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most header fields a request may carry (431 past it).
pub const MAX_HEADERS: usize = 100;
/// The HTTP layer's own cap on header fields, above [`MAX_HEADERS`] so that
/// a request between the two is answered in its dialect.
pub const HTTP_MAX_HEADERS: usize = 4 * MAX_HEADERS;

/// Which of the head limits a request passes, if any: the status and what
/// to say.
fn head_over_limits(req: &axum::extract::Request) -> Option<(StatusCode, String)> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Some((
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target} bytes long; at most {MAX_URI_BYTES} are read"),
        ));
    }
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request carries {} header fields; at most {MAX_HEADERS} are read", headers.len()),
        ));
    }
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request's header fields hold {bytes} bytes; at most {MAX_HEADER_BYTES} are read"),
        ));
    }
    None
}

/// Keeps every error in its route's dialect, whatever produced it: under
/// `/scim/v2` a SCIM error body (RFC 7644 §3.12), elsewhere
/// `application/problem+json`. Errors raised before a handler runs (a path
/// that is not UTF-8, a timeout, a body over the limit) come as plain text or
/// empty; the admin API's fallback answers `/scim/v2/` as a problem. Bodies
/// a route chose itself (HTML pages, OAuth error JSON) are left alone.
///
/// It also refuses a query string holding an encoded NUL (`%00`) in either
/// dialect: Roster refuses the character everywhere (see
/// [`super::extract::nul_at`]). Path segments name resources by UUID: one
/// holding it names nothing (404).
///
/// And it holds the request head to [`MAX_URI_BYTES`], [`MAX_HEADER_BYTES`]
/// and [`MAX_HEADERS`] (414 and 431, in the dialect). The HTTP layer's own
/// limits sit above these ([`HTTP_MAX_HEADERS`] and hyper's 64 KiB target
/// and ~400 KiB head): a head past those cannot be read at all, its path is
/// unknown, and hyper answers with the bare status.
pub async fn error_dialect(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let scim = is_scim(req.uri());
    if let Some((status, detail)) = head_over_limits(&req) {
        return match scim {
            true => crate::scim::ScimError::new(status, None, detail).into_response(),
            false => {
                let kind = match status {
                    StatusCode::URI_TOO_LONG => "uri-too-long",
                    _ => "header-fields-too-large",
                };
                Problem::new(status, kind, detail).into_response()
            }
        };
    }
    if req.uri().query().is_some_and(|q| q.contains("%00")) {
        let detail = "the query string holds an encoded NUL character (%00)";
        if super::sso::is_sign_in_page(req.uri().path()) {
            return super::sso::malformed_link();
        }
        return match scim {
            true => crate::scim::ScimError::invalid_value(detail).into_response(),
            false => Problem::bad_request(detail).into_response(),
        };
    }
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let content_type = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let plain = essence.is_empty() || essence == "text/plain";
    let problem = essence == "application/problem+json";
    if !(plain || (scim && problem)) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let detail = match (status.is_server_error(), problem) {
        (true, _) => None,
        (false, true) => serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| Some(v.get("detail")?.as_str()?.to_string())),
        (false, false) => std::str::from_utf8(&text).ok().map(str::trim).filter(|t| !t.is_empty()).map(str::to_string),
    }
    .unwrap_or_else(|| match status {
        StatusCode::REQUEST_TIMEOUT => "the request took longer than the server allows".to_string(),
        s if s.is_server_error() => "an internal error occurred; see the server log".to_string(),
        s => s.canonical_reason().unwrap_or("Error").to_string(),
    });
    let mut answer = match scim {
        true => crate::scim::ScimError::new(status, None, detail).into_response(),
        false => {
            let kind = match status {
                StatusCode::REQUEST_TIMEOUT => "request-timeout",
                StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
                StatusCode::NOT_FOUND => "not-found",
                s if s.is_server_error() => "internal",
                _ => "invalid-request",
            };
            Problem::new(status, kind, detail).into_response()
        }
    };
    // Headers the status needs (`Retry-After`, `Allow`, `WWW-Authenticate`) stay.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::store::StoreError;

    #[test]
    fn each_service_error_has_its_status_and_type() {
        let cases: Vec<(ServiceError, u16, &str)> = vec![
            (ServiceError::Forbidden { role: Role::Read, needed: Role::Admin }, 403, "forbidden"),
            (ServiceError::NotFound("member"), 404, "not-found"),
            (ServiceError::OperatorOnly("x".into()), 403, "operator-only"),
            (ServiceError::invalid("email", "bad"), 422, "validation"),
            (ServiceError::SeatLimitReached { purchased: 5, used: 5, requested: 1 }, 409, "seat-limit-reached"),
            (ServiceError::LastOwner, 409, "last-owner"),
            (ServiceError::Conflict("x".into()), 409, "conflict"),
            (ServiceError::BulkRejected(vec![LineError { line: 2, message: "bad".into() }]), 422, "bulk-rejected"),
            (ServiceError::Store(StoreError::Other(anyhow::anyhow!("secret detail"))), 500, "internal"),
        ];
        for (err, status, kind) in cases {
            let p = Problem::from(err);
            assert_eq!(p.status, status, "{p:?}");
            assert!(p.kind.ends_with(kind), "{p:?}");
            assert!(!p.detail.contains("secret detail"));
        }
    }

    #[test]
    fn seat_problems_carry_counts_and_unauthorized_asks_for_bearer() {
        let p = Problem::from(ServiceError::SeatLimitReached { purchased: 5, used: 5, requested: 2 });
        assert_eq!((p.purchased_seats, p.used_seats), (Some(5), Some(5)));
        let res = Problem::unauthorized("no").into_response();
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
