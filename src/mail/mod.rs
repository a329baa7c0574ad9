//! Email: delivery of the outbox's messages over SMTP, or into a folder of
//! `.eml` files when no relay is configured.
//!
//! Services queue a message in the transaction of the change that causes it
//! (see `service::mail`); the sender here claims due messages, delivers
//! them and records each attempt. A temporary failure (the relay is down,
//! a `4xx` reply) is tried again with exponential backoff and jitter until
//! the message's retry window closes; a permanent one (`5xx`) fails it at
//! once. A claim lasts a few minutes, so a replica that stops mid-send
//! leaves its messages to another after that, and two replicas never send
//! one message at the same time.

pub mod templates;

use crate::config::{MailConfig, MailTransport, SmtpSecurity, SmtpSettings};
use crate::service::Roster;
use crate::store::{MailAttempt, MailStatus, OutboxMail};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How many messages one claim takes at most.
const CLAIM_BATCH: i64 = 50;
/// How long a claim keeps other replicas off its messages.
const CLAIM_FOR: Duration = Duration::from_secs(300);
/// The first retry waits this long; each next one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Messages delivered at once by one replica.
const CONCURRENCY: usize = 4;

/// Where messages go.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Folder(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from.to_string()).field("transport", &self.describe()).finish()
    }
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The relay refused it for good (a `5xx` reply), or it cannot be sent as it is.
    pub permanent: bool,
    pub reply: String,
}

impl Mailer {
    /// The transport a configuration describes.
    pub fn from_config(config: &MailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse().map_err(|e| anyhow::anyhow!("mail_from: {e}"))?;
        let transport = match &config.transport {
            MailTransport::Smtp(smtp) => Transport::Smtp(smtp_transport(smtp)?),
            MailTransport::Folder(dir) => Transport::Folder(dir.clone()),
        };
        Ok(Self { from, transport })
    }

    /// The transport in words, for the log.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "SMTP relay".to_string(),
            Transport::Folder(dir) => format!("folder {}", dir.display()),
        }
    }

    /// The folder messages are written to, when there is no relay.
    pub fn folder(&self) -> Option<&std::path::Path> {
        match &self.transport {
            Transport::Folder(dir) => Some(dir),
            Transport::Smtp(_) => None,
        }
    }

    /// Delivers one message; the relay's reply (or the file written) on success.
    pub async fn send(&self, mail: &OutboxMail) -> Result<String, SendFailure> {
        let message = self.message(mail)?;
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => {
                    let text: Vec<&str> = response.message().collect();
                    Ok(format!("{} {}", response.code(), text.join(" ")).trim_end().to_string())
                }
                Err(e) => {
                    Err(SendFailure { permanent: refuses_the_message(&e), reply: crate::telemetry::with_causes(&e) })
                }
            },
            Transport::Folder(dir) => {
                let path = dir.join(format!("{}-{}.eml", mail.created_at.format("%Y%m%dT%H%M%S"), mail.id));
                let temporary = dir.join(format!(".{}.eml.tmp", mail.id));
                let bytes = message.formatted();
                let write = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(&temporary, &bytes).await?;
                    tokio::fs::rename(&temporary, &path).await
                };
                match write.await {
                    Ok(()) => {
                        tracing::info!(to = %mail.recipient, path = %path.display(), "email written to the mail folder");
                        Ok(format!("written to {}", path.display()))
                    }
                    Err(e) => {
                        Err(SendFailure { permanent: false, reply: format!("cannot write {}: {e}", path.display()) })
                    }
                }
            }
        }
    }

    /// The message as it goes out: text and HTML alternatives.
    fn message(&self, mail: &OutboxMail) -> Result<Message, SendFailure> {
        let permanent = |reply: String| SendFailure { permanent: true, reply };
        let to: Mailbox =
            mail.recipient.parse().map_err(|e| permanent(format!("`{}` cannot be sent to: {e}", mail.recipient)))?;
        let domain = self.from.email.domain().to_string();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}@{}>", mail.id, domain)))
            .date(mail.created_at.into())
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(self.body(&mail.text)))
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(self.body(&mail.html))),
            )
            .map_err(|e| permanent(format!("the message cannot be built: {e}")))
    }
}

impl Mailer {
    /// A part's body. In the mail folder it is written as 8-bit text, so a
    /// link in an `.eml` file reads (and copies) as it is; over SMTP it is
    /// encoded as lettre chooses (7-bit or quoted-printable), which every
    /// relay takes.
    fn body(&self, text: &str) -> Body {
        match &self.transport {
            // `8bit` where every line is short enough, else `binary` (a link
            // makes a long line): a file is read whole, not relayed.
            Transport::Folder(_) => Body::new_with_encoding(text.to_string(), ContentTransferEncoding::EightBit)
                .or_else(|_| Body::new_with_encoding(text.to_string(), ContentTransferEncoding::Binary))
                .unwrap_or_else(|_| Body::new(text.to_string())),
            Transport::Smtp(_) => Body::new(text.to_string()),
        }
    }
}

/// Whether a relay's error refuses this message for good: a `5xx` reply,
/// except to authentication (`530`, `534`, `535`, `538`), which is the
/// deployment's credentials at fault and fails every message alike until
/// they are fixed, so it is retried like a relay that is down.
fn refuses_the_message(e: &lettre::transport::smtp::Error) -> bool {
    let authentication =
        e.status().is_some_and(|code| matches!(code.to_string().as_str(), "530" | "534" | "535" | "538"));
    e.is_permanent() && !authentication
}

fn smtp_transport(s: &SmtpSettings) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls_parameters = || -> anyhow::Result<TlsParameters> {
        let mut params = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &s.ca_pem {
            for cert in split_pem_certificates(pem) {
                params = params.add_root_certificate(
                    Certificate::from_pem(&cert).map_err(|e| anyhow::anyhow!("smtp_ca_file: {e}"))?,
                );
            }
        }
        Ok(params.build_rustls()?)
    };
    let tls = match s.security {
        SmtpSecurity::ImplicitTls => Tls::Wrapper(tls_parameters()?),
        SmtpSecurity::StartTls => Tls::Required(tls_parameters()?),
        SmtpSecurity::Opportunistic => Tls::Opportunistic(tls_parameters()?),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.as_str())
        .port(s.port)
        .tls(tls)
        .timeout(Some(s.timeout));
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
    }
    Ok(builder.build())
}

/// Each `CERTIFICATE` block of a PEM file (lettre reads one per call).
fn split_pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            if let Some(block) = current.take() {
                out.push(block.into_bytes());
            }
        }
    }
    out
}

/// How long to wait before attempt `attempts + 1`: 30 s, 1 min, 2 min, …
/// up to an hour, each spread by ±20% so a relay that comes back is not
/// hit by every queued message at once.
pub fn backoff(attempts: i64) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 16) as u32;
    let base = FIRST_BACKOFF.saturating_mul(1u32 << doublings).min(MAX_BACKOFF);
    base.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// Delivers the messages due now as `holder`; returns how many attempts it made.
pub async fn deliver_due(roster: &Roster, mailer: &Mailer, holder: &str) -> anyhow::Result<usize> {
    let now = roster.now();
    if !roster.store().read().await?.mail_due(now).await? {
        return Ok(0);
    }
    let until = now + chrono::Duration::from_std(CLAIM_FOR)?;
    let mut tx = roster.store().begin().await?;
    let claimed = tx.claim_mail(holder, now, until, CLAIM_BATCH).await?;
    tx.commit().await?;
    let n = claimed.len();
    use futures::StreamExt;
    futures::stream::iter(claimed)
        .for_each_concurrent(CONCURRENCY, |mail| async move {
            let outcome = mailer.send(&mail).await;
            if let Err(e) = roster.record_mail_attempt(&mail, holder, outcome).await {
                tracing::warn!(error = %e, mail = %mail.id, "could not record an email delivery");
            }
        })
        .await;
    Ok(n)
}

/// What a delivery attempt leaves: sent, failed for good, or queued again.
pub fn attempt_outcome(
    mail: &OutboxMail,
    outcome: Result<String, SendFailure>,
    now: chrono::DateTime<chrono::Utc>,
) -> MailAttempt {
    match outcome {
        Ok(reply) => MailAttempt { status: MailStatus::Sent, reply, next_attempt_at: None, at: now },
        Err(SendFailure { permanent: true, reply }) => {
            MailAttempt { status: MailStatus::Failed, reply, next_attempt_at: None, at: now }
        }
        Err(SendFailure { permanent: false, reply }) => {
            let next = now + chrono::Duration::from_std(backoff(mail.attempts)).unwrap_or(chrono::Duration::MAX);
            if next > mail.give_up_at {
                let reply = format!("{reply} (still failing after {} attempts; no more retries)", mail.attempts);
                MailAttempt { status: MailStatus::Failed, reply, next_attempt_at: None, at: now }
            } else {
                MailAttempt { status: MailStatus::Queued, reply, next_attempt_at: Some(next), at: now }
            }
        }
    }
}

/// Starts this replica's sender: it delivers due messages every
/// `poll_interval`, and at once when this replica queues one.
pub fn spawn_sender(roster: Roster, mailer: Arc<Mailer>, poll_interval: Duration) -> tokio::task::JoinHandle<()> {
    let holder = Arc::new(format!("mail-{}", Uuid::new_v4()));
    tokio::spawn(crate::jobs::woken_or_polled(roster.mail_queued(), poll_interval, move || {
        let (roster, mailer, holder) = (roster.clone(), mailer.clone(), holder.clone());
        async move {
            match deliver_due(&roster, &mailer, &holder).await {
                // A full batch: there may be more due at once.
                Ok(n) => n as i64 >= CLAIM_BATCH,
                Err(e) => {
                    tracing::warn!(error = %e, "email delivery tick failed");
                    false
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_with_jitter() {
        for (attempts, base) in [(1, 30.0), (2, 60.0), (3, 120.0), (8, 3600.0), (60, 3600.0)] {
            let d = backoff(attempts).as_secs_f64();
            assert!(d >= base * 0.8 && d <= base * 1.2, "attempt {attempts}: {d}");
        }
    }

    #[test]
    fn pem_files_are_split_into_certificates() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
            -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let certs = split_pem_certificates(pem);
        assert_eq!(certs.len(), 2);
        assert!(String::from_utf8_lossy(&certs[1]).contains("BBB"));
    }
}
