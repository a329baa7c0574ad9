//! Notices to an organization's Owners and Admins, by email: a verified
//! domain lapsed, a member refused for lack of seats (at most one a day),
//! a SCIM token or API key about to expire. Each is queued with the change
//! that causes it, one message per recipient.

use super::*;
use crate::mail::templates::NoticeMail;
use crate::model::*;
use crate::store::{Credential, Domain, Organization};
use chrono::{DateTime, Duration, Utc};

/// How long before its expiry a credential's notice goes out.
pub const CREDENTIAL_NOTICE_DAYS: i64 = 7;
/// At most one seat notice per organization in this long.
const SEAT_NOTICE_EVERY_HOURS: i64 = 24;
/// The lease under which one replica sends the expiring-credential notices.
pub const CREDENTIAL_NOTICES: &str = "credential-notices";

const LAPSED: &str = "notice_domain_lapsed";
const NO_SEAT: &str = "notice_no_free_seat";
const WEBHOOK_DISABLED: &str = "notice_webhook_disabled";
const EXPIRING: &str = "notice_credential_expiring";

/// A notice: what it is (its outbox kind), what it is about, and what it says.
struct Notice<'a> {
    kind: &'static str,
    subject_id: Option<Uuid>,
    headline: &'a str,
    lines: &'a [String],
}

impl Roster {
    /// Queues a notice to each active Owner and Admin of `org`; how many.
    async fn notify_admins(
        &self,
        tx: &mut dyn Tx,
        org: &Organization,
        notice: Notice<'_>,
        now: DateTime<Utc>,
    ) -> ServiceResult<usize> {
        let rendered = NoticeMail { org_name: &org.name, headline: notice.headline, lines: notice.lines }
            .render()
            .map_err(|e| ServiceError::Store(crate::store::StoreError::Other(e.into())))?;
        let admins = tx.admin_emails(org.id).await?;
        for to in &admins {
            let mail = NewMail {
                org_id: Some(org.id),
                kind: notice.kind,
                subject_id: notice.subject_id,
                recipient: to,
                rendered: rendered.clone(),
            };
            queue_mail(tx, &self.settings.mail, mail, now).await?;
        }
        Ok(admins.len())
    }

    /// The notice that a verified domain lapsed, with what DNS showed.
    pub(crate) async fn notify_domain_lapsed(
        &self,
        tx: &mut dyn Tx,
        org: &Organization,
        domain: &Domain,
        expected: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let lines = vec![
            format!(
                "{} is no longer verified: {}.",
                domain.name,
                domain.last_result.as_deref().unwrap_or("its TXT record was not found")
            ),
            format!(
                "Until it is verified again, people with {} addresses are not routed to {}'s single sign-on and do \
                 not join automatically. Publish the record again: {expected}",
                domain.name, org.name
            ),
        ];
        let headline = format!("{} lapsed", domain.name);
        let notice = Notice { kind: LAPSED, subject_id: Some(domain.id), headline: &headline, lines: &lines };
        self.notify_admins(tx, org, notice, now).await?;
        Ok(())
    }

    /// The notice that a webhook endpoint was disabled after failing too long.
    pub(crate) async fn notify_webhook_disabled(
        &self,
        tx: &mut dyn Tx,
        org: &Organization,
        endpoint: &crate::store::WebhookEndpoint,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let lines = vec![
            format!(
                "Roster stopped delivering {}'s events to {}: {}.",
                org.name,
                endpoint.url,
                endpoint.disabled_reason.as_deref().unwrap_or("its deliveries kept failing")
            ),
            "Events since then wait for it. Once the receiver answers again, enable the endpoint \
             (PATCH /api/v1/webhooks/{id} with \"enabled\": true): the held events are delivered in order."
                .replace("{id}", &endpoint.id.to_string()),
        ];
        let headline = format!("webhook deliveries to {} stopped", endpoint.url);
        let notice =
            Notice { kind: WEBHOOK_DISABLED, subject_id: Some(endpoint.id), headline: &headline, lines: &lines };
        self.notify_admins(tx, org, notice, now).await?;
        Ok(())
    }

    /// Tells the organization's admins that someone could not join for lack
    /// of a seat, at most once a day per organization. Runs in a
    /// transaction of its own: the refused change itself was rolled back.
    pub async fn notify_no_free_seat(&self, org_id: Uuid, who: &str, door: &str) {
        let notice = async {
            let now = self.clock.now();
            let mut tx = self.store.begin().await?;
            let org = lock_org(&mut *tx, org_id).await?;
            if tx.mail_queued_since(org.id, NO_SEAT, now - Duration::hours(SEAT_NOTICE_EVERY_HOURS)).await? {
                return Ok::<_, ServiceError>(());
            }
            let usage = tx.seat_usage(org.id, now).await?;
            let lines = vec![
                format!("{who} could not join {} through {door}: every seat is taken.", org.name),
                format!(
                    "{} of {} seats are in use (active members and pending invitations). Free a seat or buy more, \
                     then the identity provider's next attempt (or the person's next sign-in) succeeds.",
                    usage.used(),
                    org.purchased_seats
                ),
                "Roster sends this notice at most once a day.".to_string(),
            ];
            let headline = "someone could not join: no free seat";
            let notice = Notice { kind: NO_SEAT, subject_id: None, headline, lines: &lines };
            self.notify_admins(&mut *tx, &org, notice, now).await?;
            tx.commit().await?;
            self.wake_sender();
            Ok(())
        };
        if let Err(e) = notice.await {
            tracing::warn!(error = %e, org = %org_id, "could not queue the no-free-seat notice");
        }
    }

    /// Queues a notice for each SCIM token and API key expiring within
    /// [`CREDENTIAL_NOTICE_DAYS`] that has not had one; how many credentials.
    pub async fn notify_expiring_credentials(&self) -> ServiceResult<usize> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let due = tx.credentials_expiring(now, now + Duration::days(CREDENTIAL_NOTICE_DAYS), EXPIRING).await?;
        for cred in &due {
            let Some(org) = tx.get_org(cred.org_id).await? else { continue };
            self.notify_credential(&mut *tx, &org, cred, now).await?;
        }
        tx.commit().await?;
        if !due.is_empty() {
            self.wake_sender();
        }
        Ok(due.len())
    }

    async fn notify_credential(
        &self,
        tx: &mut dyn Tx,
        org: &Organization,
        cred: &Credential,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let what = match cred.kind {
            CredentialKind::ScimToken => "SCIM token",
            CredentialKind::ApiKey => "API key",
        };
        let expires = cred.expires_at.map(human_time).unwrap_or_default();
        let consequence = match cred.kind {
            CredentialKind::ScimToken => {
                "After that, the identity provider's provisioning requests are refused: create a new token and put \
                 it in the provider's provisioning settings before then."
            }
            CredentialKind::ApiKey => "After that, requests with it are refused: create a new key and switch to it.",
        };
        let lines = vec![
            format!("The {what} \u{201c}{}\u{201d} of {} expires on {expires}.", cred.name, org.name),
            consequence.into(),
        ];
        let headline = format!("the {what} \u{201c}{}\u{201d} expires soon", cred.name);
        let notice = Notice { kind: EXPIRING, subject_id: Some(cred.id), headline: &headline, lines: &lines };
        self.notify_admins(tx, org, notice, now).await?;
        Ok(())
    }
}
