//! The SCIM request log: every request an organization's identity provider
//! sends (once its token names the organization) with its outcome and its
//! body masked, kept in the database, the newest 200 per organization.
//!
//! The request path only notes what happened; a task of its own masks the
//! bodies and writes them, a batch per transaction, so provisioning does not
//! wait on the log. A request appears in the log about
//! [`COLLECT_FOR`] after it was answered.

use super::AppState;
use crate::scim::ScimError;
use crate::service::Roster;
use crate::store::{ScimRequestRecord, SCIM_REQUESTS_KEPT};
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long the writer gathers requests before writing them together.
const COLLECT_FOR: Duration = Duration::from_millis(500);
/// Requests waiting to be written at most; beyond, new ones are not logged.
const QUEUE: usize = 20_000;
/// Bodies longer than this are logged by their size only.
const BODY_KEPT: usize = 64 * 1024;
/// What a masked value shows.
pub const MASK: &str = "•••";

/// The organization a SCIM request's token named, filled in by the SCIM
/// authentication; a request it stays empty for is not logged.
#[derive(Clone, Default)]
pub struct LoggedOrg(Arc<OnceLock<Uuid>>);

impl LoggedOrg {
    pub fn set(&self, org_id: Uuid) {
        let _ = self.0.set(org_id);
    }
}

/// A request as the HTTP layer saw it, before masking.
struct Noted {
    org_id: Uuid,
    at: chrono::DateTime<chrono::Utc>,
    method: String,
    path: String,
    status: u16,
    latency_us: i64,
    client: String,
    error: Option<Bytes>,
    body: Bytes,
}

/// The sending side of the log; the writer task ends when every sender is gone.
pub struct ScimLog {
    queue: mpsc::Sender<Noted>,
}

impl ScimLog {
    /// The log, and its writer running on the current runtime.
    pub fn start(roster: Roster) -> Self {
        let (queue, mut rx) = mpsc::channel::<Noted>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                tokio::time::sleep(COLLECT_FOR).await;
                let mut batch = vec![first];
                while let Ok(next) = rx.try_recv() {
                    batch.push(next);
                }
                // Only what the log will keep is masked and written: under
                // load, a batch holds more of an organization's requests
                // than it keeps.
                let records: Vec<ScimRequestRecord> =
                    newest_per_org(batch, |n| n.org_id).into_iter().map(Noted::into_record).collect();
                if let Err(e) = roster.record_scim_requests(&records).await {
                    tracing::warn!(error = %e, requests = records.len(), "could not write the SCIM request log");
                }
            }
        });
        Self { queue }
    }

    fn note(&self, noted: Noted) {
        if self.queue.try_send(noted).is_err() {
            metrics::counter!("roster_scim_requests_unlogged_total").increment(1);
        }
    }
}

impl Noted {
    fn into_record(self) -> ScimRequestRecord {
        let (scim_type, detail) = self.error.as_deref().map(error_of).unwrap_or_default();
        ScimRequestRecord {
            seq: 0,
            org_id: self.org_id,
            at: self.at,
            method: self.method,
            path: self.path,
            status: self.status,
            latency_us: self.latency_us,
            client: self.client,
            scim_type,
            detail,
            body: masked_body(&self.body),
        }
    }
}

/// Of a batch, the newest [`SCIM_REQUESTS_KEPT`] of each organization, in order.
fn newest_per_org<T>(batch: Vec<T>, org_of: impl Fn(&T) -> Uuid) -> Vec<T> {
    let mut left: HashMap<Uuid, i64> = HashMap::new();
    let mut kept: Vec<T> = batch
        .into_iter()
        .rev()
        .filter(|r| {
            let n = left.entry(org_of(r)).or_insert(SCIM_REQUESTS_KEPT);
            *n -= 1;
            *n >= 0
        })
        .collect();
    kept.reverse();
    kept
}

/// Logs each SCIM request whose token named an organization.
pub async fn record(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let at = s.roster.now();
    let method = req.method().to_string();
    let uri = req.extensions().get::<OriginalUri>().map(|u| u.0.clone()).unwrap_or_else(|| req.uri().clone());
    let client = client_name(req.headers().get("user-agent").and_then(|v| v.to_str().ok()));
    let org = LoggedOrg::default();
    req.extensions_mut().insert(org.clone());

    // The body is read here, within the same limit the SCIM routes apply.
    let limit = s.config.request_body_limit_bytes;
    let too_large = || {
        ScimError::new(StatusCode::PAYLOAD_TOO_LARGE, None, "the request body is larger than maxPayloadSize")
            .into_response()
    };
    let declared =
        req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, limit).await else { return too_large() };
    let res = next.run(Request::from_parts(parts, Body::from(body.clone()))).await;

    let Some(org_id) = org.0.get().copied() else { return res };
    let status = res.status();
    let (res, error) = if status.is_client_error() || status.is_server_error() {
        let (parts, res_body) = res.into_parts();
        match axum::body::to_bytes(res_body, BODY_KEPT).await {
            Ok(bytes) => (Response::from_parts(parts, Body::from(bytes.clone())), Some(bytes)),
            Err(_) => (Response::from_parts(parts, Body::empty()), None),
        }
    } else {
        (res, None)
    };
    s.scim_log.note(Noted {
        org_id,
        at,
        method,
        path: masked_path(&uri),
        status: status.as_u16(),
        latency_us: i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX),
        client,
        error,
        body,
    });
    res
}

/// The identity provider a User-Agent names.
pub fn client_name(user_agent: Option<&str>) -> String {
    let ua = user_agent.unwrap_or("").trim();
    let lower = ua.to_ascii_lowercase();
    let known = [
        ("okta", "Okta"),
        ("azure", "Microsoft Entra ID"),
        ("microsoft", "Microsoft Entra ID"),
        ("entra", "Microsoft Entra ID"),
        ("onelogin", "OneLogin"),
        ("jumpcloud", "JumpCloud"),
        ("google", "Google Workspace"),
    ];
    if let Some((_, name)) = known.iter().find(|(needle, _)| lower.contains(needle)) {
        return name.to_string();
    }
    let product: String =
        ua.split(['/', ' ']).next().unwrap_or("").chars().filter(|c| !c.is_control()).take(64).collect();
    if product.is_empty() {
        "The identity provider".into()
    } else {
        product
    }
}

/// The `scimType` and `detail` of a SCIM error answer.
fn error_of(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return (None, None) };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(|s| s.chars().take(1000).collect::<String>());
    (text("scimType"), text("detail"))
}

/// The path with its query, filter values masked but a `userName`'s.
pub fn masked_path(uri: &axum::http::Uri) -> String {
    let path = uri.path().to_string();
    let Some(query) = uri.query() else { return path };
    let pairs: Vec<String> =
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("filter") {
                    format!("{k}={}", masked_filter(&v))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// A SCIM filter with each quoted value masked unless it is compared with `userName`.
pub fn masked_filter(filter: &str) -> String {
    let mut out = String::with_capacity(filter.len());
    let mut chars = filter.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let mut literal = String::new();
        let mut escaped = false;
        for c in chars.by_ref() {
            if escaped {
                literal.push(c);
                escaped = false;
            } else if c == '\\' {
                literal.push(c);
                escaped = true;
            } else if c == '"' {
                break;
            } else {
                literal.push(c);
            }
        }
        // The attribute is the word before the operator before the value.
        let attribute = out.split_whitespace().rev().nth(1).unwrap_or("");
        let attribute = attribute.trim_start_matches(['(', '[']);
        let attribute = attribute.rsplit(':').next().unwrap_or(attribute);
        if attribute.eq_ignore_ascii_case("userName") {
            out.push('"');
            out.push_str(&literal);
            out.push('"');
        } else {
            out.push('"');
            out.push_str(MASK);
            out.push('"');
        }
    }
    out
}

/// The body as the log keeps it: JSON with every value masked but the ones
/// that identify and do not reveal (`schemas`, `userName`, `op`, `path`,
/// `id`, booleans, group members' `value`); anything else by its size.
pub fn masked_body(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    if body.len() > BODY_KEPT {
        return Some(format!("({} bytes, not kept)", body.len()));
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Some(format!("({} bytes, not JSON)", body.len()));
    };
    mask(&mut v, None, false);
    serde_json::to_string_pretty(&v).ok()
}

fn mask(v: &mut Value, key: Option<&str>, members: bool) {
    match v {
        Value::Object(map) => {
            // A PATCH operation on `members`: its value lists members.
            let op_on_members = map
                .get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| p.trim().to_ascii_lowercase().starts_with("members"));
            for (k, child) in map.iter_mut() {
                let lower = k.to_ascii_lowercase();
                let child_members = members || lower == "members" || (op_on_members && lower == "value");
                mask(child, Some(&lower), child_members);
            }
        }
        Value::Array(items) => {
            for item in items {
                mask(item, key, members);
            }
        }
        Value::String(_) | Value::Number(_) => {
            let kept =
                matches!(key, Some("schemas" | "username" | "op" | "path" | "id")) || (members && key == Some("value"));
            if !kept {
                *v = Value::String(MASK.into());
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// A logged error in plain words: who sent what, and what Roster made of it.
pub fn explain(r: &ScimRequestRecord) -> Option<String> {
    if r.status < 400 {
        return None;
    }
    let who = &r.client;
    let what = format!("{who} sent a {} to {}", r.method, r.path.split('?').next().unwrap_or(&r.path));
    let detail = r.detail.as_deref().unwrap_or("no detail was given");
    // A `members` attribute, or a PATCH path on it (`"members"`, `"members[…`).
    let members = r.body.as_deref().is_some_and(|b| b.to_ascii_lowercase().contains("\"members"));
    let words = match (r.status, r.scim_type.as_deref()) {
        (400, Some("invalidValue")) if r.method == "PATCH" && members => format!(
            "{who} sent a PATCH whose `members` value names a user this organization does not have, or is not a \
             member id: {detail}. Push the user first, or check the group's members in {who}."
        ),
        (400, Some("invalidFilter")) => {
            format!("{what} with a filter Roster cannot read: {detail}. Roster filters on userName, externalId, emails and the other attributes of its schema.")
        }
        (400, Some("invalidPath")) => format!("{what} whose PATCH path names no attribute Roster knows: {detail}. Remove that attribute mapping in {who}."),
        (400, Some("invalidValue")) => format!("{what} with a value Roster cannot accept: {detail}. Check the attribute mappings in {who}."),
        (400, Some("invalidSyntax")) => format!("{what} whose body is not a SCIM request: {detail}."),
        (400, Some("mutability")) => format!("{what} that changes an attribute that cannot change: {detail}."),
        (400, Some("noTarget")) => format!("{what} whose PATCH path matched nothing: {detail}."),
        (400, Some("tooMany")) => format!("{what} asking for more than Roster returns at once: {detail}."),
        (400, Some("sensitive")) => format!("{what} with secrets in the URL: {detail}."),
        (409, _) => format!(
            "{what} for a user or group that already exists in this organization: {detail}. {who} should look it up \
             by userName (or displayName) and update it instead."
        ),
        (404, _) => format!("{what} for a user or group this organization does not have: {detail}."),
        (403, _) => format!("{what} that the organization's limits refuse: {detail}."),
        (412, _) => format!("{what} for a version that is no longer current: {detail}. {who} will read it again."),
        (413, _) => format!("{what} with a body larger than Roster accepts: {detail}."),
        (429, _) => format!("{what} faster than Roster's limits allow: {detail}. {who} retries later."),
        (500..=599, _) => format!("{what} and Roster failed to answer it: {detail}. {who} retries it."),
        _ => format!("{what} and Roster refused it ({}): {detail}.", r.status),
    };
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_keep_what_identifies_and_mask_the_rest() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@example.com",
            "password": "hunter2",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@example.com", "primary": true, "type": "work"}],
            "active": true,
            "externalId": "00u1"
        });
        let masked: Value = serde_json::from_str(&masked_body(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(masked["userName"], "ada@example.com");
        assert_eq!(masked["schemas"][0], "urn:ietf:params:scim:schemas:core:2.0:User");
        assert_eq!(masked["password"], MASK);
        assert_eq!(masked["name"]["givenName"], MASK);
        assert_eq!(masked["emails"][0]["value"], MASK);
        assert_eq!(masked["emails"][0]["primary"], true);
        assert_eq!(masked["active"], true);
        assert_eq!(masked["externalId"], MASK);
    }

    #[test]
    fn group_members_keep_their_ids_but_not_their_names() {
        let patch = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": "u-1", "display": "Ada"}]},
                {"op": "replace", "path": "displayName", "value": "Secret project"}
            ]
        });
        let masked: Value = serde_json::from_str(&masked_body(patch.to_string().as_bytes()).unwrap()).unwrap();
        let ops = &masked["Operations"];
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "members");
        assert_eq!(ops[0]["value"][0]["value"], "u-1");
        assert_eq!(ops[0]["value"][0]["display"], MASK);
        assert_eq!(ops[1]["value"], MASK);
        let group = json!({"displayName": "Eng", "members": [{"value": "u-2", "display": "Bob"}]});
        let masked: Value = serde_json::from_str(&masked_body(group.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(masked["members"][0]["value"], "u-2");
        assert_eq!(masked["members"][0]["display"], MASK);
        assert_eq!(masked["displayName"], MASK);
    }

    #[test]
    fn filters_show_user_names_only() {
        assert_eq!(masked_filter(r#"userName eq "ada@example.com""#), r#"userName eq "ada@example.com""#);
        assert_eq!(masked_filter(r#"emails.value eq "ada@example.com""#), format!(r#"emails.value eq "{MASK}""#));
        assert_eq!(
            masked_filter(r#"(userName eq "a\"b") or externalId eq "x""#),
            format!(r#"(userName eq "a\"b") or externalId eq "{MASK}""#)
        );
        let uri: axum::http::Uri = "/scim/v2/Users?filter=displayName%20eq%20%22Ada%22&count=1".parse().unwrap();
        assert_eq!(masked_path(&uri), format!("/scim/v2/Users?filter=displayName eq \"{MASK}\"&count=1"));
    }

    #[test]
    fn the_provider_is_named_from_its_user_agent() {
        assert_eq!(client_name(Some("Okta SCIM Client 1.0.0")), "Okta");
        assert_eq!(client_name(Some("Microsoft.AzureAD.Provisioning/1.0")), "Microsoft Entra ID");
        assert_eq!(client_name(Some("curl/8.5.0")), "curl");
        assert_eq!(client_name(None), "The identity provider");
    }

    #[test]
    fn errors_are_explained_in_plain_words() {
        let patch = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "u-9"}]}]});
        let record = ScimRequestRecord {
            seq: 1,
            org_id: Uuid::now_v7(),
            at: chrono::DateTime::UNIX_EPOCH,
            method: "PATCH".into(),
            path: "/scim/v2/Groups/g-1".into(),
            status: 400,
            latency_us: 900,
            client: "Okta".into(),
            scim_type: Some("invalidValue".into()),
            detail: Some("member `u-9` is not a User of this organization".into()),
            body: masked_body(patch.to_string().as_bytes()),
        };
        let words = explain(&record).unwrap();
        assert!(
            words.starts_with("Okta sent a PATCH whose `members` value names a user this organization does not have"),
            "{words}"
        );
        assert!(words.contains("u-9"), "{words}");
        let taken = ScimRequestRecord {
            method: "POST".into(),
            status: 409,
            scim_type: Some("uniqueness".into()),
            ..record.clone()
        };
        assert!(explain(&taken).unwrap().contains("already exists"));
        assert_eq!(explain(&ScimRequestRecord { status: 201, ..record }), None);
    }

    #[test]
    fn a_batch_keeps_each_organizations_newest() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let record = |org_id, n: u16| ScimRequestRecord {
            seq: 0,
            org_id,
            at: chrono::DateTime::UNIX_EPOCH,
            method: "GET".into(),
            path: "/".into(),
            status: n,
            latency_us: 0,
            client: "x".into(),
            scim_type: None,
            detail: None,
            body: None,
        };
        let mut batch: Vec<ScimRequestRecord> = (0..250).map(|n| record(a, n)).collect();
        batch.push(record(b, 7));
        let kept = newest_per_org(batch, |r| r.org_id);
        assert_eq!(kept.len(), SCIM_REQUESTS_KEPT as usize + 1);
        assert_eq!(kept[0].status, 50);
        assert_eq!(kept.last().unwrap().org_id, b);
    }
}
