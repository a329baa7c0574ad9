//! A real SMTP server for the integration tests, and the smoke tests of it
//! with lettre, the client Roster sends mail with.
//!
//! [`SmtpServer`] runs `tests/smtp/server.py` (aiosmtpd, with trustme for
//! TLS; pinned in `tests/smtp/requirements.txt`, installed in
//! `tests/smtp/.venv` by `scripts/test.sh`) as a child process on a random
//! loopback port, in the clear, with STARTTLS or with implicit TLS, and
//! optionally requiring AUTH. Recipients whose local part starts with
//! `reject` are refused for good (550), those that start with `tempfail`
//! for now (451). Every accepted message lands as a numbered JSON file in a
//! temporary maildir, read back as [`ReceivedMail`] with its MIME decoded.
//! The server can be stopped and started again on the same port and
//! maildir, to play an outage.

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the server may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`SmtpServer::start_again`] keeps trying to bind the old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`SmtpServer::wait_for_messages`] looks at the maildir.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How the server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain SMTP; no STARTTLS offered.
    #[default]
    None,
    /// STARTTLS offered on a plain listener (not required for mail without
    /// AUTH; AUTH is offered only after it).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

/// What the server runs with.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    pub tls: SmtpTls,
    /// `(user, password)`: AUTH PLAIN and LOGIN offered, and required
    /// before MAIL. With [`SmtpTls::None`] it is offered in the clear.
    pub auth: Option<(String, String)>,
}

/// A message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Its number in the maildir: 1, 2, … in the order the server accepted
    /// them, continuing across [`SmtpServer::start_again`].
    pub seq: u32,
    /// The envelope sender (MAIL FROM), empty for `<>`.
    pub mail_from: String,
    /// The envelope recipients that were accepted (RCPT TO).
    pub rcpt_tos: Vec<String>,
    /// The message as sent after DATA (CRLF line ends, dot-unstuffed).
    pub raw: String,
    /// The user the client authenticated as, if it did.
    pub auth_user: Option<String>,
    /// Whether the message came over TLS (after STARTTLS or implicit).
    pub tls: bool,
}

/// One file of the maildir, as `server.py` writes it.
#[derive(Deserialize)]
struct Record {
    mail_from: String,
    rcpt_tos: Vec<String>,
    data: String,
    auth_user: Option<String>,
    tls: bool,
}

impl ReceivedMail {
    /// Parses the message with every header but the MIME ones read as text,
    /// RFC 2047 encoded words decoded.
    fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::new()
            .with_mime_headers()
            .default_header_text()
            .parse(self.raw.as_bytes())
            .unwrap_or_else(|| panic!("message {} has no headers:\n{}", self.seq, self.raw))
    }

    /// The first top-level header called `name` (any case), unfolded, with
    /// RFC 2047 encoded words decoded (`=?utf-8?b?…?=` → the text). MIME
    /// headers (`Content-Type`, …) are given as they were written.
    pub fn header(&self, name: &str) -> Option<String> {
        let message = self.parsed();
        let header = message.headers().iter().find(|h| h.name().eq_ignore_ascii_case(name))?;
        match header.value() {
            HeaderValue::Text(text) => Some(text.to_string()),
            HeaderValue::TextList(list) => Some(list.join(", ")),
            HeaderValue::Empty => Some(String::new()),
            _ => {
                let raw = &self.raw.as_bytes()[header.offset_start() as usize..header.offset_end() as usize];
                let raw = String::from_utf8_lossy(raw);
                Some(raw.split_whitespace().collect::<Vec<_>>().join(" "))
            }
        }
    }

    /// The first text/plain body part (not an attachment), its transfer
    /// encoding and charset decoded and its line ends made `\n`. `None`
    /// when the message has no such part (an HTML-only message is not
    /// turned into text).
    pub fn text(&self) -> Option<String> {
        let message = self.parsed();
        let part = message.text_bodies().find(|part| {
            matches!(part.body, PartType::Text(_))
                && (part.content_type().is_none() || part.is_content_type("text", "plain"))
        })?;
        Some(unix_lines(part.text_contents()?))
    }

    /// The first text/html body part (not an attachment), decoded as
    /// [`text`](Self::text) is. `None` when the message has none (a
    /// plain-text message is not turned into HTML).
    pub fn html(&self) -> Option<String> {
        let message = self.parsed();
        let part = message.html_bodies().find(|part| matches!(part.body, PartType::Html(_)))?;
        Some(unix_lines(part.text_contents()?))
    }
}

fn unix_lines(text: &str) -> String {
    text.replace("\r\n", "\n")
}

/// `tests/smtp/server.py` running as a child process; killed when dropped.
/// The maildir (a temporary directory) lives as long as this value.
pub struct SmtpServer {
    opts: SmtpOptions,
    port: u16,
    maildir: tempfile::TempDir,
    /// `None` while stopped.
    child: Option<Child>,
}

impl SmtpServer {
    /// Starts the server on a free loopback port with an empty maildir and
    /// waits until it listens. Panics when `tests/smtp/.venv` is missing
    /// (run scripts/test.sh), or the server dies or is not ready within a
    /// minute, with its stderr.
    pub async fn start(opts: SmtpOptions) -> SmtpServer {
        let maildir = tempfile::tempdir().unwrap();
        let (child, port) = spawn(&opts, maildir.path(), 0).await;
        SmtpServer { opts, port, maildir, child: Some(child) }
    }

    /// The loopback port it listens on (the same after [`start_again`](Self::start_again)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server as Roster's configuration names one:
    /// `smtp://127.0.0.1:PORT?tls=none`, `smtp://127.0.0.1:PORT?tls=starttls` or
    /// `smtps://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match self.opts.tls {
            SmtpTls::None => format!("smtp://127.0.0.1:{}?tls=none", self.port),
            SmtpTls::StartTls => format!("smtp://127.0.0.1:{}?tls=starttls", self.port),
            SmtpTls::Implicit => format!("smtps://127.0.0.1:{}", self.port),
        }
    }

    /// The PEM file of the CA that issued the server's certificate (for
    /// `localhost` and `127.0.0.1`), when it speaks TLS. A restart keeps
    /// the CA.
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        match self.opts.tls {
            SmtpTls::None => None,
            SmtpTls::StartTls | SmtpTls::Implicit => Some(self.maildir.path().join("ca.pem")),
        }
    }

    /// Kills the server and waits for it to exit: from then on connections
    /// to its port are refused, and the port can be bound again. The
    /// maildir stays. Does nothing when it is stopped already.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts the server again on the same port, maildir and options (the
    /// numbering of messages goes on, the CA stays), stopping it first if
    /// it runs. Keeps trying for a while when the port is still taken.
    pub async fn start_again(&mut self) {
        self.stop().await;
        let (child, port) = spawn(&self.opts, self.maildir.path(), self.port).await;
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    /// The messages received so far, in the order the server accepted them.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut messages = Vec::new();
        for entry in std::fs::read_dir(self.maildir.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(seq_of_file) else { continue };
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let record: Record =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}:\n{text}", entry.path().display()));
            messages.push(ReceivedMail {
                seq,
                mail_from: record.mail_from,
                rcpt_tos: record.rcpt_tos,
                raw: record.data,
                auth_user: record.auth_user,
                tls: record.tls,
            });
        }
        messages.sort_by_key(|m| m.seq);
        messages
    }

    /// Waits until at least `n` messages were received and returns them
    /// all (as [`messages`](Self::messages)); panics with those it has
    /// after `timeout`.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the SMTP server at {} received {} message(s) within {timeout:?}, not {n}: {messages:#?}",
                    self.url(),
                    messages.len()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // SIGKILL (kill_on_drop would send it too); tokio reaps the process.
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// `000042.json` → 42; other files (the CA, temporary files) → `None`.
fn seq_of_file(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Runs `server.py` on `port` (0: any) and waits for `LISTENING <port>`.
/// For a given port it retries the bind for [`REBIND_TIMEOUT`].
async fn spawn(opts: &SmtpOptions, maildir: &Path, port: u16) -> (Child, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp");
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh, which installs tests/smtp/requirements.txt there",
        python.display()
    );
    let mut command = Command::new(&python);
    command
        .arg(root.join("server.py"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--maildir")
        .arg(maildir)
        .args([
            "--tls",
            match opts.tls {
                SmtpTls::None => "none",
                SmtpTls::StartTls => "starttls",
                SmtpTls::Implicit => "implicit",
            },
        ]);
    if let Some((user, password)) = &opts.auth {
        command.args(["--auth-user", user, "--auth-password", password]);
    }
    if port != 0 {
        command.args(["--bind-timeout", &REBIND_TIMEOUT.as_secs_f64().to_string()]);
    }
    let mut child = command
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", python.display()));

    let (stderr, stderr_task) = crate::oidc_provider::keep_stderr(child.stderr.take().unwrap(), "smtp-server");

    let mut out_lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = out_lines.next_line().await {
            match line.strip_prefix("LISTENING ").and_then(|p| p.trim().parse::<u16>().ok()) {
                Some(port) => return Some(port),
                None => eprintln!("[smtp-server] {line}"),
            }
        }
        None
    })
    .await;

    match ready {
        Ok(Some(listening)) => {
            tokio::spawn(async move {
                while let Ok(Some(line)) = out_lines.next_line().await {
                    eprintln!("[smtp-server] {line}");
                }
            });
            (child, listening)
        }
        Ok(None) => {
            let status = child.wait().await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(5), stderr_task).await;
            let stderr = stderr.lock().unwrap();
            panic!("the SMTP test server exited before it was ready ({status}); its stderr:\n{stderr}");
        }
        Err(_) => {
            let _ = child.kill().await;
            let stderr = stderr.lock().unwrap();
            panic!("the SMTP test server was not ready within {START_TIMEOUT:?}; its stderr:\n{stderr}");
        }
    }
}

// ---------------------------------------------------------------------------
// Smoke tests: the server and lettre alone, no Roster.

/// How long a test waits for a message it saw accepted.
const WAIT: Duration = Duration::from_secs(10);

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A fresh transport (so no pooled connection outlives a test step) to the
/// server on 127.0.0.1, with this TLS and these credentials.
fn transport(server: &SmtpServer, tls: Tls, credentials: Option<(&str, &str)>) -> Transport {
    let mut builder =
        Transport::builder_dangerous("127.0.0.1").port(server.port()).tls(tls).timeout(Some(Duration::from_secs(30)));
    if let Some((user, password)) = credentials {
        builder = builder.credentials(Credentials::new(user.into(), password.into()));
    }
    builder.build()
}

/// TLS parameters for `localhost` that trust the server's CA alone.
fn trusting(server: &SmtpServer) -> TlsParameters {
    let pem = std::fs::read(server.ca_pem_path().unwrap()).unwrap();
    trusting_pem(&pem)
}

fn trusting_pem(pem: &[u8]) -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(pem).unwrap())
        .build_rustls()
        .unwrap()
}

fn mail(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("Roster <roster@example.com>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(format!("{subject}\n"))
        .unwrap()
}

/// Whether lettre's error comes from a refused TCP connection.
fn connection_refused(error: &lettre::transport::smtp::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = e.source();
    }
    false
}

#[tokio::test]
async fn a_multipart_message_is_received_and_decoded() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    assert_eq!(server.url(), format!("smtp://127.0.0.1:{}?tls=none", server.port()));
    assert_eq!(server.ca_pem_path(), None);

    let subject = "Willkommen bei Roster, Jörg — Grüße ✓";
    // A line longer than 76 characters, so that quoted-printable breaks it.
    let text = "Hallo Jörg,\n\nbitte bestätige deine Adresse: https://roster.example/invitations/accept?token=0123456789abcdef0123456789abcdef\n\n— Roster\n";
    let html = "<p>Hallo Jörg,</p>\n<p><a href=\"https://roster.example/x?a=1&amp;b=2\">Bestätigen</a> ✓</p>\n";
    let message = Message::builder()
        .from("Roster <roster@example.com>".parse().unwrap())
        .to(Mailbox::new(Some("Jörg Ähnlich".into()), "joerg@example.com".parse().unwrap()))
        .subject(subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(text.to_string()))
                .singlepart(SinglePart::html(html.to_string())),
        )
        .unwrap();
    transport(&server, Tls::None, None).send(message).await.unwrap();

    let messages = server.wait_for_messages(1, WAIT).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.seq, 1);
    assert_eq!(m.mail_from, "roster@example.com");
    assert_eq!(m.rcpt_tos, ["joerg@example.com"]);
    assert_eq!(m.auth_user, None);
    assert!(!m.tls);
    // Encoded on the wire, decoded here.
    assert!(!m.raw.contains("Grüße"), "{}", m.raw);
    assert_eq!(m.header("Subject").as_deref(), Some(subject));
    assert_eq!(m.header("subject").as_deref(), Some(subject));
    assert_eq!(m.header("To").as_deref(), Some("Jörg Ähnlich <joerg@example.com>"));
    assert_eq!(m.header("X-Missing"), None);
    assert!(m.header("Content-Type").unwrap().starts_with("multipart/alternative;"), "{:?}", m.header("Content-Type"));
    assert_eq!(m.text().as_deref(), Some(text));
    assert_eq!(m.html().as_deref(), Some(html));
}

#[test]
fn received_mail_decodes_what_it_was_given() {
    let mail = |raw: &str| ReceivedMail {
        seq: 1,
        mail_from: "a@example.com".into(),
        rcpt_tos: vec!["b@example.com".into()],
        raw: raw.into(),
        auth_user: None,
        tls: false,
    };
    let html_only = mail(concat!(
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus\r\n =?utf-8?b?S8O2bG4=?=\r\n",
        "Content-Type: text/html; charset=iso-8859-1\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n",
        "\r\n",
        "<p>K=F6ln</p>\r\n",
    ));
    assert_eq!(html_only.header("Subject").as_deref(), Some("Grüße aus Köln"));
    assert_eq!(html_only.html().as_deref(), Some("<p>Köln</p>\n"));
    assert_eq!(html_only.text(), None);

    let text_only = mail("Subject: plain\r\n\r\nline one\r\nline two\r\n");
    assert_eq!(text_only.text().as_deref(), Some("line one\nline two\n"));
    assert_eq!(text_only.html(), None);

    assert_eq!(seq_of_file("000042.json"), Some(42));
    assert_eq!(seq_of_file(".000042.json.tmp"), None);
    assert_eq!(seq_of_file("ca.pem"), None);
    assert_eq!(seq_of_file("42.json"), None);
}

#[tokio::test]
async fn reject_and_tempfail_recipients_are_refused_and_not_stored() {
    let server = SmtpServer::start(SmtpOptions::default()).await;

    let error = transport(&server, Tls::None, None).send(mail("reject-x@example.com", "no")).await.unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(error.status().map(|c| c.to_string()).as_deref(), Some("550"), "{error}");
    assert!(error.to_string().contains("reject-x@example.com"), "{error}");

    let error = transport(&server, Tls::None, None).send(mail("tempfail-x@example.com", "later")).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.status().map(|c| c.to_string()).as_deref(), Some("451"), "{error}");

    // The refusals came before DATA: nothing was stored, and the next
    // message is the first.
    assert_eq!(server.messages(), []);
    transport(&server, Tls::None, None).send(mail("ok@example.com", "yes")).await.unwrap();
    let messages = server.wait_for_messages(1, WAIT).await;
    assert_eq!(messages.len(), 1);
    assert_eq!((messages[0].seq, messages[0].rcpt_tos.as_slice()), (1, &["ok@example.com".to_string()][..]));
    assert_eq!(messages[0].header("Subject").as_deref(), Some("yes"));
}

#[tokio::test]
async fn starttls_with_auth_delivers_and_checks_the_password() {
    let auth = Some(("roster".to_string(), "s3cret".to_string()));
    let server = SmtpServer::start(SmtpOptions { tls: SmtpTls::StartTls, auth }).await;
    assert_eq!(server.url(), format!("smtp://127.0.0.1:{}?tls=starttls", server.port()));
    let tls = || Tls::Required(trusting(&server));

    transport(&server, tls(), Some(("roster", "s3cret"))).send(mail("a@example.com", "over tls")).await.unwrap();
    let messages = server.wait_for_messages(1, WAIT).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls);
    assert_eq!(messages[0].auth_user.as_deref(), Some("roster"));
    assert_eq!(messages[0].rcpt_tos, ["a@example.com"]);

    let error =
        transport(&server, tls(), Some(("roster", "wrong"))).send(mail("a@example.com", "x")).await.unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(error.status().map(|c| c.to_string()).as_deref(), Some("535"), "{error}");

    // Without credentials, MAIL is refused.
    let error = transport(&server, tls(), None).send(mail("a@example.com", "x")).await.unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(error.status().map(|c| c.to_string()).as_deref(), Some("530"), "{error}");

    // In the clear the server offers no AUTH, so the client has no way to log in.
    let error =
        transport(&server, Tls::None, Some(("roster", "s3cret"))).send(mail("a@example.com", "x")).await.unwrap_err();
    assert!(error.is_client(), "{error:?}");

    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn implicit_tls_with_auth_delivers_and_checks_the_password() {
    let auth = Some(("roster".to_string(), "s3cret".to_string()));
    let server = SmtpServer::start(SmtpOptions { tls: SmtpTls::Implicit, auth }).await;
    assert_eq!(server.url(), format!("smtps://127.0.0.1:{}", server.port()));
    let tls = || Tls::Wrapper(trusting(&server));

    transport(&server, tls(), Some(("roster", "s3cret"))).send(mail("a@example.com", "smtps")).await.unwrap();
    let messages = server.wait_for_messages(1, WAIT).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls);
    assert_eq!(messages[0].auth_user.as_deref(), Some("roster"));
    assert_eq!(messages[0].header("Subject").as_deref(), Some("smtps"));

    let error =
        transport(&server, tls(), Some(("roster", "wrong"))).send(mail("a@example.com", "x")).await.unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(error.status().map(|c| c.to_string()).as_deref(), Some("535"), "{error}");

    // A client that trusts only the public roots refuses the certificate.
    let public_roots = Tls::Wrapper(TlsParameters::new("localhost".into()).unwrap());
    let error = transport(&server, public_roots, Some(("roster", "s3cret")))
        .send(mail("a@example.com", "x"))
        .await
        .unwrap_err();
    assert!(!error.is_permanent() && !error.is_transient(), "{error:?}");
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");

    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_stopped_server_refuses_connections_and_a_restart_goes_on_numbering() {
    let auth = Some(("roster".to_string(), "s3cret".to_string()));
    let mut server = SmtpServer::start(SmtpOptions { tls: SmtpTls::StartTls, auth }).await;
    let port = server.port();
    // The CA as a client was configured with before the outage.
    let ca = std::fs::read(server.ca_pem_path().unwrap()).unwrap();
    let send = |server: &SmtpServer, subject: &str| {
        let transport = transport(server, Tls::Required(trusting_pem(&ca)), Some(("roster", "s3cret")));
        let message = mail("a@example.com", subject);
        async move { transport.send(message).await }
    };

    send(&server, "before").await.unwrap();
    server.wait_for_messages(1, WAIT).await;

    server.stop().await;
    // The port is free: it can be bound (and is let go at once).
    drop(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    let error = send(&server, "during").await.unwrap_err();
    assert!(connection_refused(&error), "{error:?}");
    // Stopping twice is harmless.
    server.stop().await;

    server.start_again().await;
    assert_eq!(server.port(), port);
    send(&server, "after").await.unwrap();
    let messages = server.wait_for_messages(2, WAIT).await;
    let seen: Vec<_> = messages.iter().map(|m| (m.seq, m.header("Subject").unwrap(), m.tls)).collect();
    assert_eq!(seen, [(1, "before".to_string(), true), (2, "after".to_string(), true)]);
}
