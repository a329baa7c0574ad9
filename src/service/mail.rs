//! Email from the services' side: messages are queued in the transaction of
//! the change that causes them, and each delivery attempt the sender makes
//! (`crate::mail`) is recorded here, with an audit record once a message is
//! sent or has failed for good.

use super::*;
use crate::mail::templates::Rendered;
use crate::mail::SendFailure;
use crate::model::*;
use crate::store::{MailStatus, OutboxMail};
use chrono::{DateTime, Utc};

/// The mail knobs from the configuration.
#[derive(Debug, Clone)]
pub struct MailPolicy {
    /// Where links in messages point: Roster's public base URL.
    pub base_url: url::Url,
    /// How long a message failing for a temporary reason is retried.
    pub retry_for: chrono::Duration,
}

impl Default for MailPolicy {
    fn default() -> Self {
        Self {
            base_url: crate::config::base_url_for(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
            retry_for: chrono::Duration::hours(48),
        }
    }
}

impl MailPolicy {
    /// `path` (without a leading `/`) under the public base URL, with a query.
    pub fn link(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = self.base_url.join(path).unwrap_or_else(|_| self.base_url.clone());
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.to_string()
    }
}

/// A message to queue.
pub(crate) struct NewMail<'a> {
    pub org_id: Option<Uuid>,
    pub kind: &'static str,
    pub subject_id: Option<Uuid>,
    pub recipient: &'a Email,
    pub rendered: Rendered,
}

/// Queues a message in the caller's transaction; it goes out once that commits.
pub(crate) async fn queue_mail(
    tx: &mut dyn Tx,
    policy: &MailPolicy,
    mail: NewMail<'_>,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    let record = OutboxMail {
        id: Uuid::now_v7(),
        org_id: mail.org_id,
        kind: mail.kind.to_string(),
        subject_id: mail.subject_id,
        recipient: mail.recipient.as_str().to_string(),
        subject: mail.rendered.subject,
        text: mail.rendered.text,
        html: mail.rendered.html,
        attempts: 0,
        give_up_at: now + policy.retry_for,
        created_at: now,
    };
    tx.insert_mail(&record).await?;
    Ok(())
}

/// A role as a person reads it in a message: "Write".
pub(crate) fn role_title(role: Role) -> &'static str {
    match role {
        Role::Owner => "Owner",
        Role::Admin => "Admin",
        Role::Write => "Write",
        Role::Read => "Read",
    }
}

/// A time as a person reads it in a message: "17 December 2026, 10:00 UTC".
pub(crate) fn human_time(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y, %H:%M UTC").to_string()
}

impl Roster {
    /// Woken whenever this replica queues a message.
    pub fn mail_queued(&self) -> Arc<tokio::sync::Notify> {
        self.mail_queued.clone()
    }

    /// Tells this replica's sender that messages were committed.
    pub(crate) fn wake_sender(&self) {
        self.mail_queued.notify_one();
    }

    /// Records the outcome of an attempt at a message `holder` claimed; a
    /// message sent or failed for good is audited in its organization.
    pub async fn record_mail_attempt(
        &self,
        mail: &OutboxMail,
        holder: &str,
        outcome: Result<String, SendFailure>,
    ) -> ServiceResult<MailStatus> {
        let now = self.clock.now();
        let attempt = crate::mail::attempt_outcome(mail, outcome, now);
        let mut tx = self.store.begin().await?;
        if !tx.record_mail_attempt(mail.id, holder, &attempt).await? {
            // The claim lapsed and another replica took the message over.
            return Ok(MailStatus::Queued);
        }
        match (attempt.status, mail.org_id) {
            (MailStatus::Queued, _) => tracing::info!(
                mail = %mail.id, attempts = mail.attempts, reply = %attempt.reply, next = ?attempt.next_attempt_at,
                "email delivery failed for now; retrying later"
            ),
            (status, Some(org_id)) => {
                let actor =
                    Actor { kind: ActorKind::System, id: "mail".into(), org_id, role: Role::Read, request_id: None };
                let action = if status == MailStatus::Sent { "mail.sent" } else { "mail.failed" };
                let detail = serde_json::json!({
                    "kind": mail.kind,
                    "to": mail.recipient,
                    "attempts": mail.attempts,
                    "reply": attempt.reply,
                });
                let target = mail.subject_id.unwrap_or(mail.id);
                tx.insert_audit(actor.audit(now, action, target, None::<&()>, Some(&detail))).await?;
            }
            (_, None) => {}
        }
        if attempt.status == MailStatus::Failed {
            tracing::warn!(mail = %mail.id, kind = %mail.kind, reply = %attempt.reply, "email delivery failed");
        }
        tx.commit().await?;
        Ok(attempt.status)
    }
}
