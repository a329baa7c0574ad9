//! Replays the SCIM requests identity providers send, as their public
//! documentation records them, through Roster's real HTTP stack at
//! `/scim/v2`. The fixtures live in `fixtures/okta/` and `fixtures/entra/`;
//! `fixtures/README.md` names the page each one comes from.
//!
//! One JSON file is one scenario, replayed against a fresh Roster and a new
//! organization (`seats` purchased seats) with its own SCIM token. Each step
//! sends `method` to `/scim/v2` + `path` with the bearer token, the
//! provider's `request_headers`, and — when there is a `body` — the
//! provider's `content_type`. Then:
//!
//! - `capture` stores values of the response for later steps, by JSON
//!   pointer into the body (`"/id"`) or by header (`"header:etag"`);
//!   `{{name}}` in paths, bodies and expectations is replaced by them.
//!   A step's own captures are usable in its own expectations.
//! - `expect.status` must equal the status.
//! - `expect.headers` must be present with these values (names in any case;
//!   `content-type` compares the media type, ignoring parameters).
//! - `expect.body` must be a subset of the body: objects match when every
//!   expected key matches, arrays when every expected element matches some
//!   actual element, scalars when equal (strings exactly).
//! - `expect.present` / `expect.absent` list JSON pointers that must / must
//!   not resolve (a bare name in `absent` is a top-level key).
//! - `expect.suffix` maps a JSON pointer to the text its string must end with.
//!
//! Bodies are sent re-serialized after placeholders are filled in: their
//! content is the recorded one, their key order and whitespace are not.

use crate::helpers::TestApp;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;
use roster::model::{CredentialKind, Name};
use roster::service::{Actor, NewCredential};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Fewer recorded steps than this means fixtures went missing.
const MIN_OKTA_STEPS: usize = 20;
const MIN_ENTRA_STEPS: usize = 45;
const MIN_FILES: usize = 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fixture {
    pub(crate) provider: String,
    scenario: String,
    source: String,
    pub(crate) seats: i64,
    /// What the provider sends as `Content-Type` with a request body.
    content_type: String,
    /// Other headers the provider sends with every request.
    #[serde(default)]
    request_headers: BTreeMap<String, String>,
    pub(crate) steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Step {
    pub(crate) name: String,
    /// Why the step is as it is: an adaptation, or the rule it checks.
    #[serde(default)]
    note: Option<String>,
    pub(crate) method: String,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) body: Option<Value>,
    pub(crate) expect: Expect,
    #[serde(default)]
    capture: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    pub(crate) status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) body: Option<Value>,
    #[serde(default)]
    present: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    suffix: BTreeMap<String, String>,
}

pub(crate) struct Loaded {
    path: PathBuf,
    pub(crate) fixture: Fixture,
}

impl Loaded {
    pub(crate) fn label(&self) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shown = self.path.strip_prefix(root).unwrap_or(&self.path);
        format!("{} ({})", shown.display(), self.fixture.scenario)
    }
}

// ---------------------------------------------------------------------------
// Loading and checking the fixture files

fn fixture_dir(provider: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(provider)
}

/// Every `*.json` under `fixtures/<provider>`, parsed and checked, in file
/// name order. Panics with every problem found, file by file.
pub(crate) fn load(provider: &str) -> Vec<Loaded> {
    let dir = fixture_dir(provider);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= MIN_FILES,
        "{}: expected at least {MIN_FILES} fixture files, found {}",
        dir.display(),
        paths.len()
    );
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match parse(&path, provider) {
            Ok(fixture) => loaded.push(Loaded { path, fixture }),
            Err(problem) => problems.push(format!("{}: {problem}", path.display())),
        }
    }
    assert!(
        problems.is_empty(),
        "{provider} fixtures that do not parse or do not hold together:\n{}",
        problems.join("\n")
    );
    loaded
}

fn parse(path: &Path, provider: &str) -> Result<Fixture, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let fixture: Fixture = serde_json::from_str(&text).map_err(|e| format!("not a fixture: {e}"))?;
    check(&fixture, provider)?;
    Ok(fixture)
}

/// What serde cannot see: the provider matches the folder, steps are named
/// once, methods and paths are usable, and every `{{name}}` is captured
/// before it is used.
fn check(fixture: &Fixture, provider: &str) -> Result<(), String> {
    if fixture.provider != provider {
        return Err(format!("provider is {:?} but the file is under fixtures/{provider}", fixture.provider));
    }
    if fixture.steps.is_empty() {
        return Err("no steps".into());
    }
    if fixture.seats < 1 {
        return Err("seats must be at least 1".into());
    }
    let mut names = BTreeSet::new();
    let mut known = BTreeSet::new();
    for (i, step) in fixture.steps.iter().enumerate() {
        let at = format!("step {} {:?}", i + 1, step.name);
        if !names.insert(step.name.as_str()) {
            return Err(format!("{at}: another step has this name"));
        }
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&step.method.as_str()) {
            return Err(format!("{at}: unexpected method {:?}", step.method));
        }
        if !step.path.starts_with('/') {
            return Err(format!("{at}: path must start with '/'"));
        }
        if !(100..=599).contains(&step.expect.status) {
            return Err(format!("{at}: status {} is not an HTTP status", step.expect.status));
        }
        let mut request_uses = placeholders(&step.path).map_err(|e| format!("{at}: path: {e}"))?;
        if let Some(body) = &step.body {
            value_placeholders(body, &mut request_uses).map_err(|e| format!("{at}: body: {e}"))?;
        }
        if let Some(unknown) = request_uses.iter().find(|n| !known.contains(*n)) {
            return Err(format!("{at}: {{{{{unknown}}}}} is not captured by an earlier step"));
        }
        for (name, source) in &step.capture {
            if !(source.starts_with('/') || source.starts_with("header:")) {
                return Err(format!("{at}: capture {name}: {source:?} is neither a JSON pointer nor header:<name>"));
            }
            known.insert(name.clone());
        }
        let expect = &step.expect;
        let mut expect_uses = Vec::new();
        if let Some(body) = &expect.body {
            value_placeholders(body, &mut expect_uses).map_err(|e| format!("{at}: expect.body: {e}"))?;
        }
        for text in expect.headers.values().chain(expect.suffix.values()) {
            expect_uses.extend(placeholders(text).map_err(|e| format!("{at}: expect: {e}"))?);
        }
        if let Some(unknown) = expect_uses.iter().find(|n| !known.contains(*n)) {
            return Err(format!("{at}: expectation uses {{{{{unknown}}}}}, which is never captured before it"));
        }
        if let Some(p) = expect.present.iter().chain(expect.suffix.keys()).find(|p| !p.starts_with('/')) {
            return Err(format!("{at}: {p:?} is not a JSON pointer"));
        }
        if expect.absent.iter().any(|a| a.is_empty()) {
            return Err(format!("{at}: an empty entry in expect.absent"));
        }
    }
    Ok(())
}

/// The `{{name}}` placeholders in `text`.
fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unterminated placeholder in {text:?}"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad placeholder {{{{{name}}}}} in {text:?}"));
        }
        found.push(name.to_string());
        rest = &after[end + 2..];
    }
    Ok(found)
}

fn value_placeholders(value: &Value, out: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::String(s) => out.extend(placeholders(s)?),
        Value::Array(items) => {
            for item in items {
                value_placeholders(item, out)?;
            }
        }
        Value::Object(map) => {
            for item in map.values() {
                value_placeholders(item, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `text` with every `{{name}}` replaced by its captured value.
pub(crate) fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = text.to_string();
    for name in placeholders(text)? {
        let value = vars.get(&name).ok_or_else(|| format!("{{{{{name}}}}} was never captured"))?;
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    Ok(out)
}

/// `value` with placeholders in its strings replaced (keys are left alone).
fn render_value(value: &Value, vars: &BTreeMap<String, String>) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(render(s, vars)?),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_value(v, vars)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render_value(v, vars)?))).collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

// ---------------------------------------------------------------------------
// Matching

/// Whether `actual` contains `expected` (see the module documentation).
fn contains(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, ev)| a.get(k).is_some_and(|av| contains(ev, av))),
        (Value::Array(e), Value::Array(a)) => e.iter().all(|ev| a.iter().any(|av| contains(ev, av))),
        _ => expected == actual,
    }
}

/// The places where `actual` does not contain `expected`, as diff-like lines.
fn mismatches(expected: &Value, actual: &Value, at: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, ev) in e {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match a.get(key) {
                    Some(av) => mismatches(ev, av, &here, out),
                    None => out.push(format!("{here}: missing\n    - {}", compact(ev))),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for ev in e {
                if !a.iter().any(|av| contains(ev, av)) {
                    out.push(format!(
                        "{}: no element matches\n    - {}\n    + {}",
                        or_root(at),
                        compact(ev),
                        compact(actual)
                    ));
                }
            }
        }
        _ if expected == actual => {}
        _ => out.push(format!("{}:\n    - {}\n    + {}", or_root(at), compact(expected), compact(actual))),
    }
}

fn or_root(at: &str) -> &str {
    if at.is_empty() {
        "/"
    } else {
        at
    }
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 600 {
        format!("{}…", text.chars().take(600).collect::<String>())
    } else {
        text
    }
}

fn pointer_of(entry: &str) -> String {
    if entry.starts_with('/') {
        entry.to_string()
    } else {
        format!("/{}", entry.replace('~', "~0").replace('/', "~1"))
    }
}

// ---------------------------------------------------------------------------
// Replaying

/// What came back for one step.
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
    json: Option<Value>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// Replays every fixture of `provider`, each against its own Roster, and
/// panics with every failing step.
async fn replay(provider: &str, min_steps: usize) {
    let fixtures = load(provider);
    let recorded: usize = fixtures.iter().map(|f| f.fixture.steps.len()).sum();
    assert!(recorded >= min_steps, "only {recorded} {provider} steps are recorded, expected at least {min_steps}");

    let mut ran = 0;
    let mut failures = Vec::new();
    for (i, loaded) in fixtures.iter().enumerate() {
        let (steps_ok, failure) = replay_file(provider, i + 1, loaded).await;
        ran += steps_ok;
        failures.extend(failure);
    }
    assert!(
        failures.is_empty(),
        "{} of {} {provider} fixture files failed ({ran} steps passed):\n\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n\n")
    );
    assert_eq!(ran, recorded, "every recorded {provider} step runs");
    assert!(ran >= min_steps, "only {ran} {provider} steps ran, expected at least {min_steps}");
}

/// Replays one file up to its first failing step (later steps depend on
/// earlier ones); returns how many steps passed and the failure, if any.
async fn replay_file(provider: &str, n: usize, loaded: &Loaded) -> (usize, Option<String>) {
    let app = TestApp::spawn().await;
    let org = app.org(&format!("{provider}{n}"), loaded.fixture.seats).await;
    let token = app
        .roster
        .create_credential(
            &Actor::cli(org.id),
            NewCredential {
                kind: CredentialKind::ScimToken,
                name: Name::parse(&format!("{provider} provisioning")).expect("token name"),
                role: None,
                expires_in_days: None,
            },
        )
        .await
        .expect("create SCIM token")
        .secret
        .expose()
        .to_string();
    match replay_steps(&app, &token, loaded).await {
        Ok(_) => (loaded.fixture.steps.len(), None),
        Err((passed, failure)) => (passed, Some(failure)),
    }
}

/// Replays one file's steps in order through `app` with the SCIM `token`,
/// up to its first failing step (later steps depend on earlier ones).
/// Returns the values captured on the way, or how many steps passed and
/// the report of the failure.
pub(crate) async fn replay_steps(
    app: &TestApp,
    token: &str,
    loaded: &Loaded,
) -> Result<BTreeMap<String, String>, (usize, String)> {
    let fixture = &loaded.fixture;
    let mut vars = BTreeMap::new();
    for (i, step) in fixture.steps.iter().enumerate() {
        if let Err(message) = run_step(app, token, fixture, step, &mut vars).await {
            let note = step.note.as_deref().map(|n| format!("\n  note: {n}")).unwrap_or_default();
            let failure = format!(
                "{} › step {} {:?}\n  source: {}{note}\n{}",
                loaded.label(),
                i + 1,
                step.name,
                fixture.source,
                message
            );
            return Err((i, failure));
        }
    }
    Ok(vars)
}

/// Sends one step and checks its reply; the error is a report of what differed.
async fn run_step(
    app: &TestApp,
    token: &str,
    fixture: &Fixture,
    step: &Step,
    vars: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let path = format!("/scim/v2{}", render(&step.path, vars)?);
    let method = Method::from_bytes(step.method.as_bytes()).map_err(|e| format!("  method: {e}"))?;
    let body = step.body.as_ref().map(|b| render_value(b, vars)).transpose()?;

    let mut request = app.client.request(method.clone(), app.url(&path)).bearer_auth(token);
    for (name, value) in &fixture.request_headers {
        request = request.header(name, value);
    }
    if let Some(body) = &body {
        let bytes = serde_json::to_vec(body).map_err(|e| format!("  cannot serialize the body: {e}"))?;
        request = request.header(CONTENT_TYPE, &fixture.content_type).body(bytes);
    }
    let response = request.send().await.map_err(|e| format!("  {method} {path}: request failed: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.map_err(|e| format!("  {method} {path}: cannot read the body: {e}"))?;
    let json = if text.trim().is_empty() { None } else { serde_json::from_str(&text).ok() };
    let reply = Reply { status, headers, text, json };

    let request_line = format!("  {method} {path} → {}", reply.status);
    let shown_request = body.as_ref().map(|b| format!("\n  request body: {}", compact(b))).unwrap_or_default();
    let shown_response = match &reply.json {
        Some(json) => serde_json::to_string_pretty(json).unwrap_or_else(|_| reply.text.clone()),
        None if reply.text.is_empty() => "(empty)".to_string(),
        None => format!("(not JSON) {}", reply.text),
    };
    let report = |problems: Vec<String>| {
        format!(
            "{request_line}{shown_request}\n  mismatches:\n  {}\n  response body:\n{}",
            problems.join("\n  "),
            indent(&shown_response)
        )
    };

    if reply.status != step.expect.status {
        return Err(report(vec![format!("status:\n    - {}\n    + {}", step.expect.status, reply.status)]));
    }

    let mut problems = Vec::new();
    for (var, source) in &step.capture {
        match capture(&reply, source) {
            Ok(value) => {
                vars.insert(var.clone(), value);
            }
            Err(e) => problems.push(format!("capture {var} from {source}: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(report(problems));
    }

    let expect = &step.expect;
    for (name, want) in &expect.headers {
        let want = render(want, vars)?;
        match reply.header(name) {
            None => problems.push(format!("header {name}: missing\n    - {want}")),
            Some(got) if header_matches(name, &want, &got) => {}
            Some(got) => problems.push(format!("header {name}:\n    - {want}\n    + {got}")),
        }
    }
    let needs_json = expect.body.is_some() || !expect.present.is_empty() || !expect.suffix.is_empty();
    match (&reply.json, needs_json) {
        (None, true) => problems.push("the response body is not JSON".to_string()),
        (None, false) => {}
        (Some(actual), _) => {
            if let Some(expected) = &expect.body {
                mismatches(&render_value(expected, vars)?, actual, "", &mut problems);
            }
            for p in &expect.present {
                if actual.pointer(p).is_none() {
                    problems.push(format!("{p}: missing (must be present)"));
                }
            }
            for entry in &expect.absent {
                let p = pointer_of(entry);
                if let Some(found) = actual.pointer(&p) {
                    problems.push(format!("{p}: must be absent\n    + {}", compact(found)));
                }
            }
            for (p, end) in &expect.suffix {
                let end = render(end, vars)?;
                match actual.pointer(p).and_then(Value::as_str) {
                    Some(s) if s.ends_with(&end) => {}
                    Some(s) => problems.push(format!("{p}: must end with {end:?}\n    + {s:?}")),
                    None => problems.push(format!("{p}: missing or not a string (must end with {end:?})")),
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(report(problems))
    }
}

fn capture(reply: &Reply, source: &str) -> Result<String, String> {
    if let Some(name) = source.strip_prefix("header:") {
        return reply.header(name).ok_or_else(|| "no such header".to_string());
    }
    let json = reply.json.as_ref().ok_or("the response body is not JSON")?;
    match json.pointer(source) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        Some(other) => Err(format!("not a scalar: {}", compact(other))),
        None => Err("missing".to_string()),
    }
}

/// `content-type` compares media types (RFC 9110 §8.3.1: parameters such as
/// a charset may follow); other headers compare exactly.
fn header_matches(name: &str, want: &str, got: &str) -> bool {
    if name.eq_ignore_ascii_case("content-type") {
        let media = |v: &str| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        media(want) == media(got)
    } else {
        want == got
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------
// Tests

/// Needs no server: every fixture parses, and its placeholders are captured
/// before use. Fails with the file and the reason.
#[test]
fn scim_fixtures_parse_and_hold_together() {
    for (provider, min) in [("okta", MIN_OKTA_STEPS), ("entra", MIN_ENTRA_STEPS)] {
        let steps: usize = load(provider).iter().map(|f| f.fixture.steps.len()).sum();
        assert!(steps >= min, "only {steps} {provider} steps are recorded, expected at least {min}");
    }
}

#[test]
fn subset_matching_follows_the_fixture_rules() {
    let actual = serde_json::json!({
        "id": "1",
        "emails": [{"type": "home", "value": "a@x"}, {"type": "work", "value": "b@x", "primary": true}],
        "name": {"givenName": "A", "familyName": "B"}
    });
    for (expected, ok) in [
        (serde_json::json!({"id": "1"}), true),
        (serde_json::json!({"emails": [{"type": "work", "value": "b@x"}]}), true),
        (serde_json::json!({"emails": []}), true),
        (serde_json::json!({"name": {"givenName": "A"}}), true),
        (serde_json::json!({"id": 1}), false),
        (serde_json::json!({"id": "1 "}), false),
        (serde_json::json!({"emails": [{"type": "work", "value": "a@x"}]}), false),
        (serde_json::json!({"name": {"middleName": "C"}}), false),
        (serde_json::json!({"members": []}), false),
    ] {
        assert_eq!(contains(&expected, &actual), ok, "{expected}");
        let mut found = Vec::new();
        mismatches(&expected, &actual, "", &mut found);
        assert_eq!(found.is_empty(), ok, "{expected}: {found:?}");
    }
    let vars = BTreeMap::from([("id".to_string(), "W/\"1\"".to_string())]);
    assert_eq!(render_value(&serde_json::json!({"v": "{{id}}"}), &vars).unwrap(), serde_json::json!({"v": "W/\"1\""}));
    assert!(render("{{nope}}", &vars).is_err());
    assert!(placeholders("{{open").is_err());
}

#[tokio::test]
async fn okta_requests_replay() {
    replay("okta", MIN_OKTA_STEPS).await;
}

#[tokio::test]
async fn entra_requests_replay() {
    replay("entra", MIN_ENTRA_STEPS).await;
}
