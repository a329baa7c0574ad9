//! The browser test harness: Debian's real Chromium, headless, driven over
//! WebDriver (chromedriver) from the tests through fantoccini.
//!
//! Each test starts a [`Browser`] of its own (a chromedriver on a free
//! loopback port, in a process group of its own, and a fresh Chromium
//! profile) and closes it at the end; when a test panics first, dropping the
//! `Browser` kills that process group, so no Chromium outlives its test.
//! Each test that opens a page saves a screenshot of it as a PNG artifact under
//! `target/tmp/screenshots/` (`<name>.png`, `<name>-postgres.png` on the
//! PostgreSQL run).
//!
//! `scripts/test.sh` installs Debian's `chromium` and `chromium-driver` when
//! they are missing; `CHROMIUM` and `CHROMEDRIVER` name other binaries.

use crate::helpers::TestApp;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long a helper waits for an element or a text before failing the test.
const WAIT: Duration = Duration::from_secs(10);
/// How often a helper looks again while it waits.
const POLL: Duration = Duration::from_millis(50);
/// How long chromedriver may take to answer `GET /status`.
const DRIVER_READY: Duration = Duration::from_secs(15);

/// A headless Chromium for one test.
pub struct Browser {
    pub client: Client,
    /// Dropped after the client: stops chromedriver and everything it started.
    driver: Driver,
    /// Chromium's profile, removed once the processes are gone.
    _profile: tempfile::TempDir,
}

/// A chromedriver leading its own process group. Chromium's processes stay in
/// that group, but for its crash handlers, which leave it and exit with Chromium.
struct Driver {
    child: tokio::process::Child,
    /// The process group to kill; `None` once killed (its ID may be reused after the child is reaped).
    group: Option<rustix::process::Pid>,
}

impl Driver {
    /// Kills the whole process group: chromedriver, Chromium and its zygotes, renderers and helpers.
    fn kill_group(&mut self) {
        if let Some(group) = self.group.take() {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Killing chromedriver alone would orphan Chromium; the child itself is reaped by tokio (kill_on_drop).
        self.kill_group();
    }
}

fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found: install Debian's chromium and chromium-driver (scripts/test.sh does) or set {var}",
        path.display()
    );
    path
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("addr").port()
}

/// Starts chromedriver on a free port and waits until it is ready; `None` when it exits or never answers.
async fn spawn_driver(chromedriver: &Path) -> Option<(Driver, u16)> {
    let port = free_port();
    let child = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chromedriver");
    let group = child.id().and_then(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?));
    let mut driver = Driver { child, group };
    let http = reqwest::Client::new();
    let status = format!("http://127.0.0.1:{port}/status");
    let deadline = Instant::now() + DRIVER_READY;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = driver.child.try_wait() {
            // Exited, most likely because another process took the port in between.
            driver.group = None;
            return None;
        }
        if let Ok(res) = http.get(&status).timeout(Duration::from_secs(2)).send().await {
            let ready = res.json::<serde_json::Value>().await.is_ok_and(|v| v["value"]["ready"] == true);
            if ready {
                return Some((driver, port));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> Browser {
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("CHROMIUM", "/usr/bin/chromium");
        let mut spawned = None;
        for _ in 0..5 {
            spawned = spawn_driver(&chromedriver).await;
            if spawned.is_some() {
                break;
            }
        }
        let (driver, port) = spawned.expect("chromedriver did not start (5 attempts)");
        let profile = tempfile::tempdir().expect("Chromium profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    // The machine's network is closed: Chromium must not try to reach Google's services.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("start a Chromium session");
        Browser { client, driver, _profile: profile }
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver.
    pub async fn close(self) {
        let Browser { client, mut driver, _profile } = self;
        client.close().await.expect("close the Chromium session");
        driver.kill_group();
        let _ = driver.child.wait().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(WAIT).every(POLL).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("no `{css}` on {} within {WAIT:?}: {e}", self.current_url().await),
        }
    }

    /// Every element matching `css` right now (none is fine).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find all `{css}`: {e}"))
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_else(|e| panic!("text of `{css}`: {e}"))
    }

    /// An attribute of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await.attr(name).await.unwrap_or_else(|e| panic!("attribute {name} of `{css}`: {e}"))
    }

    /// The current value of the form field matching `css`.
    pub async fn value(&self, css: &str) -> String {
        let value = self.find(css).await.prop("value").await.unwrap_or_else(|e| panic!("value of `{css}`: {e}"));
        value.unwrap_or_default()
    }

    /// Replaces the value of the field matching `css` by typing `value`.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap_or_else(|e| panic!("clear `{css}`: {e}"));
        field.send_keys(value).await.unwrap_or_else(|e| panic!("type into `{css}`: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Submits the form matching `form_css` with its submit button, as a person would.
    pub async fn submit(&self, form_css: &str) {
        self.find(form_css).await;
        let form = self.client.form(Locator::Css(form_css)).await.unwrap_or_else(|e| panic!("form `{form_css}`: {e}"));
        form.submit().await.unwrap_or_else(|e| panic!("submit `{form_css}`: {e}"));
    }

    /// Picks the option with `value` in the `<select>` matching `css`.
    pub async fn select_option(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.unwrap_or_else(|e| panic!("select {value} in `{css}`: {e}"));
    }

    /// Chooses the file at `path` in the `<input type=file>` matching `css`.
    pub async fn upload_file(&self, css: &str, path: &Path) {
        let path = path.canonicalize().unwrap_or_else(|e| panic!("file to upload {}: {e}", path.display()));
        let path = path.to_str().expect("UTF-8 path");
        self.find(css).await.send_keys(path).await.unwrap_or_else(|e| panic!("upload {path} in `{css}`: {e}"));
    }

    /// Waits up to 10 s for the element matching `css` to show `needle`; returns its whole text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            // Elements may be replaced while the page changes: look the element up each time.
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                    last = text;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{css}` on {} did not show {needle:?} within {WAIT:?}; last text: {last:?}",
                    self.current_url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn current_url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("page title")
    }

    pub async fn page_source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// Sets a cookie (path `/`, `SameSite=Lax`) for the current page's host.
    pub async fn add_cookie(&self, name: &str, value: &str) {
        // chromedriver refuses a cookie without a domain, and Chromium one that is `SameSite=None` without `Secure`.
        let host = self.current_url().await.host_str().expect("a page with a host").to_string();
        let cookie = fantoccini::cookies::Cookie::parse(format!("{name}={value}; Domain={host}; Path=/; SameSite=Lax"))
            .unwrap_or_else(|e| panic!("cookie {name}: {e}"));
        self.client.add_cookie(cookie).await.unwrap_or_else(|e| panic!("add cookie {name}: {e}"));
    }

    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client.get_named_cookie(name).await.ok().map(|c| c.value().to_string())
    }

    pub async fn delete_cookie(&self, name: &str) {
        self.client.delete_cookie(name).await.unwrap_or_else(|e| panic!("delete cookie {name}: {e}"));
    }

    /// Saves the page as `target/tmp/screenshots/<name>.png` (`<name>-postgres.png` on PostgreSQL); returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG ({} bytes)", png.len());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        let postgres = std::env::var("DATABASE_URL").is_ok_and(|url| url.starts_with("postgres"));
        let path = dir.join(if postgres { format!("{name}-postgres.png") } else { format!("{name}.png") });
        std::fs::write(&path, &png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }
}

/// The sign-in page as a person's browser shows it: title, heading, the
/// email field (typed into, inside its card), the hidden redirect and the
/// Continue button.
#[tokio::test]
async fn signin_page_renders_in_chromium() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/signin?redirect_uri=https://app.example/cb")).await;

    let title = browser.title().await;
    assert!(title.contains("Sign in"), "title: {title:?}");
    assert_eq!(browser.text("h1").await, "Sign in");
    assert_eq!(browser.current_url().await.path(), "/signin");
    assert_eq!(browser.text("label[for=email]").await, "Work email");
    assert_eq!(browser.attr("input[name=email]", "type").await.as_deref(), Some("email"));
    assert_eq!(browser.attr("input[name=email]", "required").await.as_deref(), Some("true"));
    assert_eq!(browser.value("input[type=hidden][name=redirect_uri]").await, "https://app.example/cb");
    assert_eq!(browser.text("form button[type=submit]").await, "Continue");
    assert!(browser.text("p.muted").await.contains("single sign-on"));
    assert!(browser.find_all("#problem").await.is_empty(), "no problem shown on a fresh page");

    browser.fill("input[name=email]", "ada@acme.example").await;
    assert_eq!(browser.value("input[name=email]").await, "ada@acme.example");

    // The email field stays inside its card (the page's `main`).
    let (card_x, _, card_width, _) = browser.find("main").await.rectangle().await.unwrap();
    let (field_x, _, field_width, _) = browser.find("input[name=email]").await.rectangle().await.unwrap();
    assert!(field_width > 100.0, "the email field is {field_width}px wide");
    assert!(
        field_x >= card_x && field_x + field_width <= card_x + card_width,
        "the email field ({field_x}+{field_width}) overflows its card ({card_x}+{card_width})"
    );

    let shot = browser.screenshot("signin").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000, "{} is too small for a page", shot.display());
    browser.close().await;
}

/// A page of the test's own with the controls the portal's pages use: a
/// text field, a `<select>`, a file input, a late text, and a GET form that
/// echoes what it received (query and cookies).
async fn controls_page() -> std::net::SocketAddr {
    use axum::extract::RawQuery;
    use axum::http::HeaderMap;
    use axum::response::Html;
    async fn form() -> Html<&'static str> {
        Html(concat!(
            "<!DOCTYPE html><html><head><title>Controls</title></head><body>",
            "<form id=f action=/echo method=get>",
            "<input name=name>",
            "<select name=plan><option value=monthly>Monthly</option><option value=yearly>Yearly</option></select>",
            "<input type=file name=upload>",
            "<button type=submit>Send</button></form>",
            "<p id=late></p>",
            "<button id=reveal type=button onclick=\"setTimeout(() => document.getElementById('late').textContent = 'revealed', 300)\">Reveal</button>",
            "</body></html>"
        ))
    }
    async fn echo(RawQuery(query): RawQuery, headers: HeaderMap) -> Html<String> {
        let cookies = headers.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
        let text = format!("{}\ncookies: {cookies}", query.unwrap_or_default());
        let text = text.replace('&', "&amp;").replace('<', "&lt;");
        Html(format!("<!DOCTYPE html><title>Echo</title><pre id=echo>{text}</pre>"))
    }
    let router = axum::Router::new().route("/form", axum::routing::get(form)).route("/echo", axum::routing::get(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Each helper of the harness against the page of controls: typing,
/// choosing an option and a file, waiting for a late text, cookies, and
/// submitting the form.
#[tokio::test]
async fn harness_drives_form_controls() {
    let addr = controls_page().await;
    let files = tempfile::tempdir().unwrap();
    let csv = files.path().join("members.csv");
    std::fs::write(&csv, "email,role\nada@acme.example,member\n").unwrap();
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/form")).await;
    assert_eq!(browser.title().await, "Controls");

    browser.fill("input[name=name]", "Ada").await;
    browser.select_option("select[name=plan]", "yearly").await;
    assert_eq!(browser.value("select[name=plan]").await, "yearly");
    browser.upload_file("input[type=file]", &csv).await;
    assert!(browser.value("input[type=file]").await.ends_with("members.csv"));
    browser.click("#reveal").await;
    assert_eq!(browser.wait_for_text("#late", "revealed").await, "revealed");
    browser.add_cookie("roster_test", "kept").await;
    assert_eq!(browser.cookie("roster_test").await.as_deref(), Some("kept"));

    browser.submit("#f").await;
    let echo = browser.wait_for_text("#echo", "name=Ada").await;
    assert!(echo.contains("plan=yearly"), "{echo}");
    assert!(echo.contains("upload=members.csv"), "{echo}");
    assert!(echo.contains("roster_test=kept"), "{echo}");
    assert_eq!(browser.current_url().await.path(), "/echo");
    assert!(browser.page_source().await.contains("<pre id=\"echo\">"));
    browser.screenshot("harness-controls").await;

    browser.delete_cookie("roster_test").await;
    assert_eq!(browser.cookie("roster_test").await, None);
    browser.goto(&format!("http://{addr}/echo")).await;
    assert!(!browser.text("#echo").await.contains("roster_test"));
    browser.close().await;
}

/// A test that panics before `close` drops its `Browser`: chromedriver,
/// Chromium and all of Chromium's processes go with it.
#[tokio::test]
async fn dropping_a_browser_stops_its_processes() {
    let browser = Browser::start().await;
    browser.goto("about:blank").await;
    let group = browser.driver.group.expect("chromedriver's process group");
    assert!(rustix::process::test_kill_process_group(group).is_ok(), "the processes run");
    drop(browser);
    let deadline = Instant::now() + WAIT;
    while rustix::process::test_kill_process_group(group).is_ok() {
        assert!(Instant::now() < deadline, "processes of group {group:?} still run 10 s after the drop");
        tokio::time::sleep(POLL).await;
    }
}
