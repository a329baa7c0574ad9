//! A real OpenID provider for the integration tests, a browser to sign in
//! with, and the smoke tests of both.
//!
//! [`OidcProvider`] runs `tests/oidc-provider/server.mjs`, the npm package
//! `oidc-provider` (pinned in `tests/oidc-provider/package.json`), as a
//! Node.js child process on a random loopback port, with the clients and
//! accounts of a [`ProviderConfig`]. A client can be set to receive doctored
//! ID tokens (`tamper`), and the provider can advertise an issuer in its
//! discovery document that its tokens don't carry, to play a hostile or
//! misconfigured provider. `scripts/test.sh` installs the package (`npm ci`).
//!
//! [`Browser`] keeps cookies and follows redirects by hand, filling in the
//! provider's sign-in form on the way, up to the first redirect to the
//! relying party's callback.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use roster::clock::{Clock, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

/// How long the provider may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The most requests [`Browser::follow`] makes before giving up.
const MAX_HOPS: usize = 30;

/// What the provider serves: the JSON that `server.mjs` reads.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    /// The host in the issuer URL, `http://<issuer_host>:<port>`. The
    /// provider listens on 127.0.0.1 whatever this says.
    pub issuer_host: String,
    /// When set, the discovery document's `issuer` is
    /// `http://<advertise_issuer_host>:<port>` while the tokens keep the
    /// real issuer: a wrong-issuer provider.
    pub advertise_issuer_host: Option<String>,
    pub clients: Vec<ProviderClient>,
    /// The accounts by login name. Each value is an object of claims
    /// (`email`, `email_verified`, `name`, `tenants`, …); `sub` is the login.
    pub accounts: BTreeMap<String, Value>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            issuer_host: "127.0.0.1".into(),
            advertise_issuer_host: None,
            clients: Vec::new(),
            accounts: BTreeMap::new(),
        }
    }
}

impl ProviderConfig {
    /// No clients, no accounts, issuer on 127.0.0.1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the issuer `http://<host>:<port>`.
    pub fn issuer_host(mut self, host: &str) -> Self {
        self.issuer_host = host.into();
        self
    }

    /// Makes discovery claim the issuer `http://<host>:<port>` (see the field).
    pub fn advertise_issuer_host(mut self, host: &str) -> Self {
        self.advertise_issuer_host = Some(host.into());
        self
    }

    /// Registers a client.
    pub fn client(mut self, client: ProviderClient) -> Self {
        self.clients.push(client);
        self
    }

    /// Adds an account that signs in as `login`, with these claims.
    pub fn account(mut self, login: &str, claims: Value) -> Self {
        self.accounts.insert(login.into(), claims);
        self
    }
}

/// A client registered at the provider (confidential, authorization code
/// flow, secret by HTTP Basic or in the form body, PKCE S256 required).
#[derive(Debug, Clone, Serialize)]
pub struct ProviderClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// How the token endpoint doctors this client's ID tokens: `audience`
    /// (aud is "someone-else"), `issuer` (iss is "http://evil.example"),
    /// `expired` (exp an hour ago), all three re-signed with the provider's
    /// key; `hs256` (signed HS256 with the client secret) or `none`
    /// (unsigned). `None` leaves them alone.
    pub tamper: Option<String>,
}

impl ProviderClient {
    /// A client with one redirect URI.
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        ProviderClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
            tamper: None,
        }
    }

    /// Adds a redirect URI.
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// Adds a URI the provider may send the browser to after signing out.
    pub fn post_logout_redirect_uri(mut self, uri: &str) -> Self {
        self.post_logout_redirect_uris.push(uri.into());
        self
    }

    /// Doctors this client's ID tokens (see the field for the modes).
    pub fn tamper(mut self, mode: &str) -> Self {
        self.tamper = Some(mode.into());
        self
    }
}

/// The line `server.mjs` prints once it listens.
#[derive(Deserialize)]
struct Ready {
    issuer: String,
    port: u16,
}

/// `oidc-provider` running as a child process; killed when dropped.
pub struct OidcProvider {
    /// `http://<issuer_host>:<port>`, the `iss` of its tokens.
    pub issuer: String,
    /// The loopback port it listens on.
    pub port: u16,
    /// What it wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
    child: Child,
    /// Holds the configuration file.
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts the provider and waits until it listens. Panics when the npm
    /// packages are not installed, or the provider dies or is not ready
    /// within a minute, with its stderr.
    pub async fn start(config: &ProviderConfig) -> OidcProvider {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider");
        assert!(
            root.join("node_modules/oidc-provider").is_dir(),
            "{} is missing: run scripts/test.sh, which runs npm ci there",
            root.join("node_modules").display()
        );
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("provider.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();

        let mut child = Command::new("node")
            .arg(root.join("server.mjs"))
            .arg(&config_path)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run `node` (Node.js 20 or later must be on PATH): {e}"));

        let (stderr, stderr_task) = keep_stderr(child.stderr.take().unwrap(), "oidc-provider");

        let mut out_lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = out_lines.next_line().await {
                match serde_json::from_str::<Ready>(&line) {
                    Ok(ready) => return Some(ready),
                    Err(_) => eprintln!("[oidc-provider] {line}"),
                }
            }
            None
        })
        .await;

        match ready {
            Ok(Some(Ready { issuer, port })) => {
                // Anything it prints later is drained into the test's output.
                tokio::spawn(async move {
                    while let Ok(Some(line)) = out_lines.next_line().await {
                        eprintln!("[oidc-provider] {line}");
                    }
                });
                OidcProvider { issuer, port, stderr, child, _dir: dir }
            }
            Ok(None) => {
                let status = child.wait().await.unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(5), stderr_task).await;
                let stderr = stderr.lock().unwrap();
                panic!("the OpenID test provider exited before it was ready ({status}); its stderr:\n{stderr}");
            }
            Err(_) => {
                let _ = child.kill().await;
                let stderr = stderr.lock().unwrap();
                panic!("the OpenID test provider was not ready within {START_TIMEOUT:?}; its stderr:\n{stderr}");
            }
        }
    }

    /// A URL on the provider's listening address (not the issuer's host).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its discovery document, read as a relying party would (and counted).
    pub async fn discovery(&self) -> Value {
        let url = self.url("/.well-known/openid-configuration");
        get_json(&url).await
    }

    /// `{"discovery_fetches": n, "jwks_fetches": n, "token_requests": n}`:
    /// the requests it served so far.
    pub async fn stats(&self) -> Value {
        get_json(&self.url("/__stats")).await
    }

    /// What the provider wrote to stderr so far (errors it met).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // SIGKILL (kill_on_drop would send it too); tokio reaps the process.
        let _ = self.child.start_kill();
    }
}

async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.json().await.unwrap()
}

/// Where [`Browser::follow`] stopped short of the redirect it was after:
/// a page that is neither a redirect nor a provider form (an error page,
/// most often), or the sign-in form shown again after signing in.
#[derive(Debug)]
pub struct Stopped {
    pub url: String,
    pub status: StatusCode,
    pub body: String,
}

/// A browser: keeps cookies, follows no redirect by itself.
pub struct Browser {
    pub client: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with an empty cookie jar.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Browser { client }
    }

    /// One GET, redirects not followed.
    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Starts at `start` and follows redirects (with GET, relative
    /// `Location`s resolved), signing in as `login` (any password) on the
    /// provider's sign-in form and submitting its consent and sign-out
    /// confirmation forms, until a redirect to a URL that starts with
    /// `stop_prefix`: that URL is returned, not requested. Any other page
    /// on the way, or the sign-in form shown a second time (an unknown
    /// login), stops it with `Err`. Panics on a network error or after
    /// 30 requests.
    pub async fn follow(&self, start: &str, login: &str, stop_prefix: &str) -> Result<String, Stopped> {
        let mut url = Url::parse(start).unwrap_or_else(|e| panic!("{start} is not a URL: {e}"));
        let mut response = self.get(url.as_str()).await;
        let mut signed_in = false;
        for _ in 1..MAX_HOPS {
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or_else(|| panic!("{status} from {url} without a Location"));
                let next = url.join(location).unwrap_or_else(|e| panic!("bad Location {location:?} from {url}: {e}"));
                if next.as_str().starts_with(stop_prefix) {
                    return Ok(next.into());
                }
                url = next;
                response = self.get(url.as_str()).await;
                continue;
            }

            let body = response.text().await.unwrap();
            let form = if status == StatusCode::OK { provider_form(&body) } else { None };
            let Some(form) = form else {
                return Err(Stopped { url: url.into(), status, body });
            };
            let mut fields = form.fields;
            match form.kind {
                FormKind::Login if signed_in => return Err(Stopped { url: url.into(), status, body }),
                FormKind::Login => {
                    signed_in = true;
                    set_field(&mut fields, "login", login);
                    set_field(&mut fields, "password", "any");
                }
                FormKind::Consent | FormKind::Logout => {}
            }
            let action = url.join(&form.action).unwrap_or_else(|e| panic!("bad form action {:?}: {e}", form.action));
            response = self
                .client
                .post(action.clone())
                .form(&fields)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {action}: {e}"));
            url = action;
        }
        panic!("no redirect to {stop_prefix} after {MAX_HOPS} requests from {start}; the last was {url}");
    }
}

/// Roster's tenant connection to a provider's client `roster` (secret
/// `roster-secret`), with the default tenant parameter and claim.
pub fn tenant_connection(issuer: String) -> roster::config::TenantConnection {
    roster::config::TenantConnection {
        issuer,
        client_id: "roster".into(),
        client_secret: roster::secrets::Secret::new("roster-secret"),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        tenant_param: "tenant".into(),
        tenant_claim: "tenants".into(),
        require_email_verified: true,
    }
}

/// The value of the query parameter `name` in `url`, decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The provider forms [`Browser::follow`] submits.
#[derive(Debug, PartialEq)]
enum FormKind {
    /// devInteractions' sign-in form: fields `prompt=login`, `login`, `password`.
    Login,
    /// devInteractions' consent form: `prompt=consent`.
    Consent,
    /// rpInitiatedLogout's confirmation: `xsrf`, and the button `logout=yes`.
    Logout,
}

#[derive(Debug)]
struct ProviderForm {
    kind: FormKind,
    action: String,
    /// The named inputs with their values, and the named submit button.
    fields: Vec<(String, String)>,
}

/// The first POST form in `html` that is one of the provider's own.
fn provider_form(html: &str) -> Option<ProviderForm> {
    html_forms(html).into_iter().find_map(|form| {
        if !form.method.eq_ignore_ascii_case("post") {
            return None;
        }
        let value = |name: &str| form.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let kind = match (value("prompt"), value("login"), value("xsrf"), value("logout")) {
            (_, Some(_), _, _) | (Some("login"), _, _, _) => FormKind::Login,
            (Some("consent"), _, _, _) => FormKind::Consent,
            (_, _, Some(_), Some(_)) => FormKind::Logout,
            _ => return None,
        };
        Some(ProviderForm { kind, action: form.action, fields: form.fields })
    })
}

fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(n, _)| n != name);
    fields.push((name.into(), value.into()));
}

/// A `<form>` as a browser would submit it with its first named button.
#[derive(Debug)]
struct HtmlForm {
    action: String,
    method: String,
    fields: Vec<(String, String)>,
}

/// The forms in `html`, read just well enough for the provider's pages:
/// `<input>`s (their `value`, empty when absent) and the first named
/// `<button>` or submit input inside each `<form>…</form>`.
fn html_forms(html: &str) -> Vec<HtmlForm> {
    let lower = html.to_ascii_lowercase();
    let mut forms = Vec::new();
    let mut at = 0;
    while let Some(start) = find_tag(&lower, "form", at) {
        let (attrs, open_end) = tag_attributes(html, start + "<form".len());
        let close = lower[open_end..].find("</form").map_or(html.len(), |i| open_end + i);
        let attr = |attrs: &[(String, String)], name: &str| {
            attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        let mut fields = Vec::new();
        let mut button_taken = false;
        let mut inner = open_end;
        while let Some(tag) = next_field_tag(&lower, inner, close) {
            let (name_len, is_button) = if lower[tag..].starts_with("<button") { (7, true) } else { (6, false) };
            let (attrs, end) = tag_attributes(html, tag + name_len);
            inner = end;
            let name = attr(&attrs, "name");
            if name.is_empty() {
                continue;
            }
            let kind = attr(&attrs, "type").to_ascii_lowercase();
            let is_submit = is_button && kind != "button" && kind != "reset" || kind == "submit";
            if is_submit {
                if button_taken {
                    continue;
                }
                button_taken = true;
            }
            fields.push((name, attr(&attrs, "value")));
        }
        forms.push(HtmlForm { action: attr(&attrs, "action"), method: attr(&attrs, "method"), fields });
        at = close;
    }
    forms
}

/// Where the next `<name` tag starts in the lower-cased `html`, from `from`.
fn find_tag(lower: &str, name: &str, from: usize) -> Option<usize> {
    let open = format!("<{name}");
    let mut at = from;
    while let Some(i) = lower[at..].find(&open) {
        let start = at + i;
        match lower.as_bytes().get(start + open.len()) {
            Some(b) if b.is_ascii_whitespace() || *b == b'>' || *b == b'/' => return Some(start),
            _ => at = start + open.len(),
        }
    }
    None
}

/// The next `<input` or `<button` tag between `from` and `until`.
fn next_field_tag(lower: &str, from: usize, until: usize) -> Option<usize> {
    let input = find_tag(lower, "input", from).filter(|&i| i < until);
    let button = find_tag(lower, "button", from).filter(|&i| i < until);
    match (input, button) {
        (Some(i), Some(b)) => Some(i.min(b)),
        (i, b) => i.or(b),
    }
}

/// The attributes of the tag whose name ends at `from` (names lower-cased,
/// values unescaped), and where the tag ends.
fn tag_attributes(html: &str, from: usize) -> (Vec<(String, String)>, usize) {
    let bytes = html.as_bytes();
    let mut attrs = Vec::new();
    let mut i = from;
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() {
            return (attrs, i);
        }
        if bytes[i] == b'>' {
            return (attrs, i + 1);
        }
        let name_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !matches!(bytes[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let name = html[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let value_start;
            let value_end;
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                value_start = i + 1;
                value_end = html[value_start..].find(quote as char).map_or(html.len(), |j| value_start + j);
                i = (value_end + 1).min(html.len());
            } else {
                value_start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                    i += 1;
                }
                value_end = i;
            }
            value = unescape_html(&html[value_start..value_end]);
        }
        attrs.push((name, value));
    }
}

/// Resolves the character references an HTML text or attribute value may hold.
pub fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|&s| s <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// Smoke tests: the provider and the browser alone, no Roster.

const CALLBACK: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "a-pkce-code-verifier-of-at-least-forty-three-characters";

fn alice() -> Value {
    json!({
        "email": "alice@acme.test",
        "email_verified": true,
        "name": "Alice",
        "tenants": { "T-acme": { "roles": ["admin"] } },
    })
}

/// The S256 code challenge of `verifier`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A JWT's header and payload, unverified.
fn jwt_parts(jwt: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS in compact form: {jwt}");
    let decode = |part: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
    (decode(parts[0]), decode(parts[1]), parts[2].to_string())
}

/// Signs in as alice for `client_id` from a fresh browser and returns the
/// callback URL the provider redirects to.
async fn sign_in(browser: &Browser, discovery: &Value, client_id: &str) -> String {
    let mut auth = Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("scope", "openid email profile")
        .append_pair("state", "xyz")
        .append_pair("nonce", "n1")
        .append_pair("code_challenge", &s256(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", "alice@acme.test")
        .append_pair("tenant", "T-acme");
    browser.follow(auth.as_str(), "alice", CALLBACK).await.unwrap()
}

/// Redeems `code` at the token endpoint, with the secret by HTTP Basic or
/// in the form body, and returns the token response.
async fn redeem(discovery: &Value, client_id: &str, code: &str, basic: bool) -> Value {
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ];
    let request = reqwest::Client::new().post(token_endpoint);
    let request = if basic {
        request.basic_auth(client_id, Some("s3cret"))
    } else {
        form.extend([("client_id", client_id), ("client_secret", "s3cret")]);
        request
    };
    let response = request.form(&form).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "token response: {body}");
    body
}

#[tokio::test]
async fn provider_issues_codes_and_id_tokens() {
    let config =
        ProviderConfig::new().client(ProviderClient::new("roster", "s3cret", CALLBACK)).account("alice", alice());
    let provider = OidcProvider::start(&config).await;
    let discovery = provider.discovery().await;
    assert_eq!(discovery["issuer"], provider.issuer.as_str());

    let callback = sign_in(&Browser::new(), &discovery, "roster").await;
    assert_eq!(query_param(&callback, "state").as_deref(), Some("xyz"), "{callback}");
    // RFC 9207: the provider names itself on the authorization response.
    assert_eq!(query_param(&callback, "iss").as_deref(), Some(provider.issuer.as_str()));
    let code = query_param(&callback, "code").unwrap();

    let tokens = redeem(&discovery, "roster", &code, true).await;
    let (header, claims, _) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], provider.issuer.as_str());
    assert_eq!(claims["aud"], "roster");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "n1");
    assert_eq!(claims["email"], "alice@acme.test");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["tenants"]["T-acme"]["roles"], json!(["admin"]));

    // The token is signed with the key the JWKS publishes.
    let jwks = Browser::new().get(discovery["jwks_uri"].as_str().unwrap()).await.json::<Value>().await.unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(provider.stats().await, json!({ "discovery_fetches": 1, "jwks_fetches": 1, "token_requests": 1 }));

    // A code is good once.
    let again = reqwest::Client::new()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth("roster", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(again.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(provider.stats().await["token_requests"], 2);
}

#[tokio::test]
async fn tampering_clients_get_doctored_id_tokens() {
    let mut config = ProviderConfig::new().account("alice", alice());
    for mode in ["audience", "issuer", "hs256", "none", "expired"] {
        config = config.client(ProviderClient::new(mode, "s3cret", CALLBACK).tamper(mode));
    }
    let provider = OidcProvider::start(&config).await;
    let discovery = provider.discovery().await;
    let jwks = Browser::new().get(discovery["jwks_uri"].as_str().unwrap()).await.json::<Value>().await.unwrap();
    let kid = &jwks["keys"][0]["kid"];

    let mut tokens = BTreeMap::new();
    for mode in ["audience", "issuer", "hs256", "none", "expired"] {
        let code = query_param(&sign_in(&Browser::new(), &discovery, mode).await, "code").unwrap();
        // The secret in the form body (client_secret_post) is accepted too.
        let response = redeem(&discovery, mode, &code, false).await;
        tokens.insert(mode, jwt_parts(response["id_token"].as_str().unwrap()));
    }

    let (header, claims, _) = &tokens["audience"];
    assert_eq!((&header["alg"], &header["kid"]), (&json!("RS256"), kid));
    assert_eq!(claims["aud"], "someone-else");
    assert_eq!(claims["iss"], provider.issuer.as_str());
    assert_eq!(claims["email"], "alice@acme.test");

    let (header, claims, _) = &tokens["issuer"];
    assert_eq!((&header["alg"], &header["kid"]), (&json!("RS256"), kid));
    assert_eq!(claims["iss"], "http://evil.example");
    assert_eq!(claims["aud"], "issuer");

    let (header, claims, signature) = &tokens["hs256"];
    assert_eq!(header, &json!({ "alg": "HS256" }));
    assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap().len(), 32);
    assert_eq!(claims["nonce"], "n1");

    let (header, claims, signature) = &tokens["none"];
    assert_eq!(header, &json!({ "alg": "none" }));
    assert_eq!(signature, "");
    assert_eq!(claims["aud"], "none");

    let (header, claims, _) = &tokens["expired"];
    assert_eq!((&header["alg"], &header["kid"]), (&json!("RS256"), kid));
    let now = SystemClock.now().timestamp();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp <= now - 3500 && exp > now - 3700, "exp {exp}, now {now}");
    assert!(claims["iat"].as_i64().unwrap() < exp);
}

#[tokio::test]
async fn provider_can_advertise_a_wrong_issuer() {
    let config = ProviderConfig::new()
        .advertise_issuer_host("localhost")
        .client(ProviderClient::new("roster", "s3cret", CALLBACK))
        .account("alice", alice());
    let provider = OidcProvider::start(&config).await;
    let discovery = provider.discovery().await;
    assert_eq!(discovery["issuer"], format!("http://localhost:{}", provider.port));
    assert_eq!(provider.issuer, format!("http://127.0.0.1:{}", provider.port));

    let code = query_param(&sign_in(&Browser::new(), &discovery, "roster").await, "code").unwrap();
    let tokens = redeem(&discovery, "roster", &code, true).await;
    let (_, claims, _) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["iss"], provider.issuer.as_str());
    assert_ne!(claims["iss"], discovery["issuer"]);
}

#[tokio::test]
async fn browser_stops_at_error_pages_and_unknown_logins_and_signs_out() {
    let bye = "http://127.0.0.1:9/bye";
    let config = ProviderConfig::new()
        .client(ProviderClient::new("roster", "s3cret", CALLBACK).post_logout_redirect_uri(bye))
        .account("alice", alice());
    let provider = OidcProvider::start(&config).await;
    let discovery = provider.discovery().await;

    // An unregistered redirect URI gets the provider's error page.
    let auth = discovery["authorization_endpoint"].as_str().unwrap();
    let bad =
        format!("{auth}?response_type=code&client_id=roster&redirect_uri=http%3A%2F%2Fevil.example%2F&scope=openid");
    let stopped = Browser::new().follow(&bad, "alice", CALLBACK).await.unwrap_err();
    assert_eq!(stopped.status, StatusCode::BAD_REQUEST);
    assert!(stopped.url.starts_with(auth), "{stopped:?}");
    assert!(stopped.body.contains("redirect_uri"), "{}", stopped.body);

    // A login the provider has no account for is asked to sign in again.
    let browser = Browser::new();
    let mut unknown = Url::parse(auth).unwrap();
    unknown
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "roster")
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("scope", "openid")
        .append_pair("code_challenge", &s256(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    let stopped = browser.follow(unknown.as_str(), "mallory", CALLBACK).await.unwrap_err();
    assert_eq!(stopped.status, StatusCode::OK);
    assert!(stopped.url.contains("/interaction/"), "{stopped:?}");
    assert!(provider_form(&stopped.body).is_some_and(|f| f.kind == FormKind::Login));

    // Signing in, then out through the provider's confirmation form.
    let browser = Browser::new();
    let code = query_param(&sign_in(&browser, &discovery, "roster").await, "code").unwrap();
    let tokens = redeem(&discovery, "roster", &code, true).await;
    let mut end = Url::parse(discovery["end_session_endpoint"].as_str().unwrap()).unwrap();
    end.query_pairs_mut()
        .append_pair("id_token_hint", tokens["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", bye)
        .append_pair("state", "out");
    // While signed in, the browser's session cookie skips the sign-in form
    // (were it shown, "nobody" would be refused).
    let again = browser.follow(unknown.as_str(), "nobody", CALLBACK).await.unwrap();
    assert!(query_param(&again, "code").is_some(), "{again}");
    let landed = browser.follow(end.as_str(), "alice", bye).await.unwrap();
    assert_eq!(query_param(&landed, "state").as_deref(), Some("out"));

    // Signed out: the next authorization request meets the sign-in form again.
    let response = browser.get(unknown.as_str()).await;
    assert!(response.status().is_redirection(), "{}", response.status());
    let interaction = Url::parse(auth).unwrap().join(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    let page = browser.get(interaction.as_str()).await.text().await.unwrap();
    assert_eq!(provider_form(&page).unwrap().kind, FormKind::Login);
    assert!(!provider.stderr().contains("server_error"), "{}", provider.stderr());
}

#[test]
fn html_forms_are_read_with_their_fields() {
    let html = r#"<html><body><FORM autocomplete="off" action="http://127.0.0.1:1/interaction/a&amp;b" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login"  value="alice@acme.test" >
  <input required type=password name='password'>
  <button type="submit" class="login login-submit">Sign-in</button>
</form><form id="op.logoutForm" method="post" action="/session/end/confirm"><input type="hidden" name="xsrf" value="x&#39;y"/>
<button type="submit" name="logout" value="yes">Yes</button><button type="submit" name="logout" value="no">No</button></form>"#;
    let forms = html_forms(html);
    assert_eq!(forms.len(), 2);
    assert_eq!(forms[0].action, "http://127.0.0.1:1/interaction/a&b");
    assert_eq!(forms[0].method, "post");
    let fields = |f: &HtmlForm| f.fields.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>();
    assert_eq!(fields(&forms[0]), ["prompt=login", "login=alice@acme.test", "password="]);
    assert_eq!(fields(&forms[1]), ["xsrf=x'y", "logout=yes"]);
    assert_eq!(provider_form(html).unwrap().kind, FormKind::Login);
    assert_eq!(query_param("http://h/cb?code=a%2Bb&state=s", "code").as_deref(), Some("a+b"));
    assert_eq!(query_param("http://h/cb?code=a", "state"), None);
}

#[test]
fn provider_config_serializes_to_what_server_mjs_reads() {
    let config = ProviderConfig::new()
        .issuer_host("localhost")
        .advertise_issuer_host("wrong.test")
        .client(
            ProviderClient::new("roster", "s3cret", "http://127.0.0.1:1/sso/callback")
                .redirect_uri("http://127.0.0.1:1/other")
                .post_logout_redirect_uri("http://127.0.0.1:1/")
                .tamper("none"),
        )
        .account("alice", alice());
    assert_eq!(
        serde_json::to_value(&config).unwrap(),
        json!({
            "issuer_host": "localhost",
            "advertise_issuer_host": "wrong.test",
            "clients": [{
                "client_id": "roster",
                "client_secret": "s3cret",
                "redirect_uris": ["http://127.0.0.1:1/sso/callback", "http://127.0.0.1:1/other"],
                "post_logout_redirect_uris": ["http://127.0.0.1:1/"],
                "tamper": "none",
            }],
            "accounts": { "alice": alice() },
        })
    );
    assert_eq!(serde_json::to_value(ProviderConfig::new()).unwrap()["advertise_issuer_host"], Value::Null);
}

#[tokio::test]
#[should_panic(expected = "unknown tamper mode")]
async fn a_provider_that_dies_at_start_says_why() {
    let config = ProviderConfig::new().client(ProviderClient::new("roster", "s3cret", CALLBACK).tamper("bogus"));
    OidcProvider::start(&config).await;
}

/// Keeps what a child process writes to stderr (for panic messages) and
/// echoes it, prefixed by `label`, into the test's captured output; the pipe
/// is drained in any case. Returns the text so far and the draining task.
pub fn keep_stderr(
    stderr: tokio::process::ChildStderr,
    label: &'static str,
) -> (Arc<Mutex<String>>, tokio::task::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let mut lines = BufReader::new(stderr).lines();
    let task = tokio::spawn({
        let text = text.clone();
        async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
                let mut kept = text.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        }
    });
    (text, task)
}
