//! Associated email domains: adding one, proving it by DNS TXT, checking it
//! again over time, and the home-realm lookup that only verified domains
//! answer.
//!
//! DNS is never queried inside a transaction: a check reads the domain,
//! asks DNS, then applies the outcome in a transaction of its own, so a slow
//! name server cannot hold the database.

use super::*;
use crate::domains::dns::CheckOutcome;
use crate::domains::{txt_value, DomainName};
use crate::model::*;
use crate::store::{Domain, Organization};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::{Rng, RngCore};

/// The actor recorded for background re-verification.
pub const REVERIFIER: &str = "domain-reverifier";

/// How domains are checked over time.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    pub challenge_prefix: String,
    pub reverify_interval: Duration,
    pub retry_interval: Duration,
    pub lapse_after_failures: i64,
}

impl Default for DomainPolicy {
    fn default() -> Self {
        Self {
            challenge_prefix: "_roster-challenge".into(),
            reverify_interval: Duration::days(1),
            retry_interval: Duration::minutes(15),
            lapse_after_failures: 3,
        }
    }
}

/// The record an admin publishes to prove a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DnsRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub value: String,
}

/// A domain with the record to publish for it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DomainView {
    #[serde(flatten)]
    pub domain: Domain,
    pub record: DnsRecord,
}

/// What one check saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Verified,
    NoSuchName,
    NoMatchingRecord,
    Transient,
    /// The record matched, but another organization has verified the domain.
    TakenByAnotherOrganization,
}

/// The outcome of an on-demand check, in words an admin can act on.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DomainCheck {
    pub domain: DomainView,
    pub result: CheckKind,
    /// TXT values found at the challenge name (for a mismatch).
    pub found: Vec<String>,
    pub message: String,
}

impl Roster {
    fn view(&self, domain: Domain) -> DomainView {
        let record = DnsRecord {
            kind: "TXT",
            name: format!("{}.{}", self.settings.domains.challenge_prefix, domain.name),
            value: txt_value(&domain.verification_token),
        };
        DomainView { domain, record }
    }

    /// Adds a domain to the organization, pending until its TXT record is seen.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, domain = %name))]
    pub async fn add_domain(&self, actor: &Actor, name: DomainName) -> ServiceResult<DomainView> {
        actor.require(Role::Admin)?;
        // The challenge record must itself be a valid name (RFC 1035: 253
        // characters), or no one could ever publish it.
        let prefix = &self.settings.domains.challenge_prefix;
        let most = 253usize.saturating_sub(prefix.len() + 1);
        if name.as_str().len() > most {
            return Err(ServiceError::invalid(
                "name",
                format!(
                    "{name} is {} characters long: its challenge record {prefix}.{name} would exceed DNS's 253, \
                     so at most {most} can be verified",
                    name.as_str().len()
                ),
            ));
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        if let Some(other) = tx.find_verified_domain(name.as_str()).await? {
            if other.org_id != org.id {
                return Err(ServiceError::Conflict(format!("{name} is verified by another organization")));
            }
        }
        let mut token = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut token);
        let domain = Domain {
            id: Uuid::now_v7(),
            org_id: org.id,
            name: name.as_str().to_string(),
            status: DomainStatus::Pending,
            verification_token: URL_SAFE_NO_PAD.encode(token),
            failures: 0,
            last_result: None,
            checked_at: None,
            verified_at: None,
            next_check_at: Some(now + self.settings.domains.retry_interval),
            created_at: now,
            updated_at: now,
        };
        tx.insert_domain(&domain).await.map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ServiceError::Conflict(format!("{name} is already a domain of this organization"))
            }
            other => other.into(),
        })?;
        tx.insert_audit(actor.audit(now, "domain.added", domain.id, None::<&()>, Some(&domain))).await?;
        tx.commit().await?;
        Ok(self.view(domain))
    }

    pub async fn list_domains(&self, actor: &Actor) -> ServiceResult<Vec<DomainView>> {
        actor.require(Role::Read)?;
        let domains = self.store.read().await?.list_domains(actor.org_id).await?;
        Ok(domains.into_iter().map(|d| self.view(d)).collect())
    }

    pub async fn domain(&self, actor: &Actor, id: Uuid) -> ServiceResult<DomainView> {
        actor.require(Role::Read)?;
        let domain = self.store.read().await?.get_domain(actor.org_id, id).await?;
        Ok(self.view(domain.ok_or(ServiceError::NotFound("domain"))?))
    }

    /// Looks a domain of the organization up by name.
    pub async fn domain_by_name(&self, actor: &Actor, name: &DomainName) -> ServiceResult<DomainView> {
        actor.require(Role::Read)?;
        let domains = self.store.read().await?.list_domains(actor.org_id).await?;
        let found = domains.into_iter().find(|d| d.name == name.as_str()).ok_or(ServiceError::NotFound("domain"))?;
        Ok(self.view(found))
    }

    /// Removes a domain; it stops routing and assigning at once.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, domain = %id))]
    pub async fn remove_domain(&self, actor: &Actor, id: Uuid) -> ServiceResult<()> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        let domain = tx.get_domain(actor.org_id, id).await?.ok_or(ServiceError::NotFound("domain"))?;
        tx.delete_domain(actor.org_id, id).await?;
        tx.insert_audit(actor.audit(now, "domain.removed", domain.id, Some(&domain), None::<&()>)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks a domain's TXT record now and records the outcome.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, domain = %id))]
    pub async fn verify_domain(&self, actor: &Actor, id: Uuid) -> ServiceResult<DomainCheck> {
        actor.require(Role::Admin)?;
        let domain =
            self.store.read().await?.get_domain(actor.org_id, id).await?.ok_or(ServiceError::NotFound("domain"))?;
        let check = self.check_and_apply(actor, domain).await?;
        if check.result == CheckKind::TakenByAnotherOrganization {
            return Err(ServiceError::Conflict(check.message));
        }
        Ok(check)
    }

    /// Asks DNS about `domain`, then applies the outcome under the organization lock.
    async fn check_and_apply(&self, actor: &Actor, domain: Domain) -> ServiceResult<DomainCheck> {
        let view = self.view(domain);
        let outcome = self.dns.check(&view.record.name, &view.record.value).await;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, view.domain.org_id).await?;
        // The domain may have been removed, or re-added with a new token, while DNS answered.
        let current = tx.get_domain(view.domain.org_id, view.domain.id).await?;
        let Some(current) = current.filter(|c| c.verification_token == view.domain.verification_token) else {
            return Err(ServiceError::NotFound("domain"));
        };
        let taken = match &outcome {
            CheckOutcome::Verified => {
                tx.find_verified_domain(&current.name).await?.is_some_and(|other| other.org_id != current.org_id)
            }
            _ => false,
        };
        let jitter = rand::thread_rng().gen_range(0.9..1.1);
        let (next, action, kind, found) = next_state(&current, &outcome, taken, &self.settings.domains, now, jitter);
        tx.update_domain(&next).await.map_err(|e| match e {
            // Another organization's verification committed first.
            crate::store::StoreError::Conflict(_) => {
                ServiceError::Conflict(format!("{} is verified by another organization", current.name))
            }
            other => other.into(),
        })?;
        if let Some(action) = action {
            tx.insert_audit(actor.audit(now, action, next.id, Some(&current), Some(&next))).await?;
        }
        let lapsed = action == Some("domain.lapsed");
        if lapsed {
            let expected = format!("{} TXT \"{}\"", view.record.name, view.record.value);
            self.notify_domain_lapsed(&mut *tx, &org, &next, &expected, now).await?;
        }
        tx.commit().await?;
        if lapsed {
            self.wake_sender();
        }
        let message = next.last_result.clone().unwrap_or_default();
        Ok(DomainCheck { domain: self.view(next), result: kind, found, message })
    }

    /// The organization that verified the email's domain, if one has:
    /// home-realm discovery and auto-assignment read only verified domains.
    pub async fn organization_for_email(&self, email: &Email) -> ServiceResult<Option<(Organization, Domain)>> {
        let mut tx = self.store.read().await?;
        let Some(domain) = tx.find_verified_domain(&email.domain()).await? else { return Ok(None) };
        Ok(tx.get_org(domain.org_id).await?.map(|org| (org, domain)))
    }

    /// Checks every domain that is due (at most `limit`), `concurrency` at a
    /// time. Returns how many were checked.
    pub async fn check_due_domains(&self, limit: i64, concurrency: usize) -> ServiceResult<usize> {
        use futures::StreamExt;
        let due = self.store.read().await?.due_domains(self.clock.now(), limit).await?;
        let count = due.len();
        let results: Vec<_> = futures::stream::iter(due)
            .map(|domain| async move {
                let actor = Actor {
                    kind: ActorKind::System,
                    id: REVERIFIER.into(),
                    org_id: domain.org_id,
                    role: Role::Owner,
                    request_id: None,
                };
                let name = domain.name.clone();
                (name, self.check_and_apply(&actor, domain).await)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for (name, result) in results {
            match result {
                Ok(check) => tracing::info!(domain = %name, result = ?check.result, "domain checked"),
                Err(ServiceError::NotFound(_)) => {}
                Err(e) => tracing::warn!(domain = %name, error = %e, "domain check failed"),
            }
        }
        metrics::counter!("roster_domain_checks_total").increment(count as u64);
        Ok(count)
    }
}

/// The domain after a check: the pure state machine of verification.
/// Returns the new state, the audit action when the status changed, and
/// what the check saw.
pub fn next_state(
    d: &Domain,
    outcome: &CheckOutcome,
    taken_by_another: bool,
    policy: &DomainPolicy,
    now: DateTime<Utc>,
    jitter: f64,
) -> (Domain, Option<&'static str>, CheckKind, Vec<String>) {
    let scaled = |interval: Duration| {
        Duration::milliseconds((interval.num_milliseconds() as f64 * jitter.clamp(0.5, 1.5)) as i64)
    };
    let mut next = Domain { checked_at: Some(now), updated_at: now, ..d.clone() };
    let prefix = &policy.challenge_prefix;
    let (kind, found) = match outcome {
        CheckOutcome::Verified if taken_by_another => {
            next.last_result = Some(format!("the record matches, but {} is verified by another organization", d.name));
            next.next_check_at = Some(now + scaled(policy.retry_interval));
            (CheckKind::TakenByAnotherOrganization, Vec::new())
        }
        CheckOutcome::Verified => {
            next.status = DomainStatus::Verified;
            next.failures = 0;
            if d.status != DomainStatus::Verified {
                next.verified_at = Some(now);
            }
            next.last_result = Some(format!("verified: found the TXT record at {prefix}.{}", d.name));
            next.next_check_at = Some(now + scaled(policy.reverify_interval));
            (CheckKind::Verified, Vec::new())
        }
        CheckOutcome::NoSuchName | CheckOutcome::NoMatchingRecord { .. } => {
            let (kind, found, what) = match outcome {
                CheckOutcome::NoMatchingRecord { found } if found.is_empty() => {
                    (CheckKind::NoMatchingRecord, Vec::new(), format!("{prefix}.{} has no TXT record", d.name))
                }
                CheckOutcome::NoMatchingRecord { found } => (
                    CheckKind::NoMatchingRecord,
                    found.clone(),
                    format!(
                        "no TXT record at {prefix}.{} has the expected value; found: {}",
                        d.name,
                        found.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ")
                    ),
                ),
                _ => (CheckKind::NoSuchName, Vec::new(), format!("{prefix}.{} does not exist in DNS", d.name)),
            };
            match d.status {
                DomainStatus::Verified => {
                    next.failures = d.failures + 1;
                    if next.failures >= policy.lapse_after_failures {
                        next.status = DomainStatus::Lapsed;
                        next.last_result =
                            Some(format!("lapsed after {} failed checks in a row: {what}", next.failures));
                        next.next_check_at = Some(now + scaled(policy.retry_interval));
                    } else {
                        next.last_result =
                            Some(format!("check {} of {} failed: {what}", next.failures, policy.lapse_after_failures));
                        next.next_check_at = Some(now + scaled(policy.retry_interval));
                    }
                }
                DomainStatus::Pending | DomainStatus::Failed => {
                    next.status = DomainStatus::Failed;
                    next.failures = d.failures + 1;
                    next.last_result = Some(format!("failed: {what}"));
                    next.next_check_at = Some(now + scaled(policy.retry_interval));
                }
                DomainStatus::Lapsed => {
                    next.failures = d.failures + 1;
                    next.last_result = Some(format!("still lapsed: {what}"));
                    next.next_check_at = Some(now + scaled(policy.retry_interval));
                }
            }
            (kind, found)
        }
        CheckOutcome::Transient { reason } => {
            // Neither proof nor disproof: the status and failure count stay.
            next.last_result = Some(format!("DNS did not answer conclusively ({reason}); will retry"));
            next.next_check_at = Some(now + scaled(policy.retry_interval));
            (CheckKind::Transient, Vec::new())
        }
    };
    let action = match (d.status, next.status) {
        (a, b) if a == b => None,
        (_, DomainStatus::Verified) => Some("domain.verified"),
        (_, DomainStatus::Lapsed) => Some("domain.lapsed"),
        (_, DomainStatus::Failed) => Some("domain.failed"),
        (_, DomainStatus::Pending) => None,
    };
    (next, action, kind, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(status: DomainStatus, failures: i64) -> Domain {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        Domain {
            id: Uuid::nil(),
            org_id: Uuid::nil(),
            name: "acme.com".into(),
            status,
            verification_token: "tok".into(),
            failures,
            last_result: None,
            checked_at: None,
            verified_at: if status == DomainStatus::Verified { Some(t) } else { None },
            next_check_at: None,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn verification_state_machine() {
        use DomainStatus::*;
        let miss = CheckOutcome::NoMatchingRecord { found: vec!["roster-domain-verification=old".into()] };
        let gone = CheckOutcome::NoSuchName;
        let flaky = CheckOutcome::Transient { reason: "timed out".into() };
        let ok = CheckOutcome::Verified;
        // (from, failures, outcome, taken, to, failures after, audit action)
        type Case<'a> = (DomainStatus, i64, &'a CheckOutcome, bool, DomainStatus, i64, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (Pending, 0, &ok, false, Verified, 0, Some("domain.verified")),
            (Pending, 0, &miss, false, Failed, 1, Some("domain.failed")),
            (Pending, 0, &gone, false, Failed, 1, Some("domain.failed")),
            (Pending, 0, &flaky, false, Pending, 0, None),
            (Pending, 0, &ok, true, Pending, 0, None),
            (Failed, 2, &ok, false, Verified, 0, Some("domain.verified")),
            (Verified, 0, &ok, false, Verified, 0, None),
            (Verified, 0, &gone, false, Verified, 1, None),
            (Verified, 1, &miss, false, Verified, 2, None),
            (Verified, 2, &gone, false, Lapsed, 3, Some("domain.lapsed")),
            (Verified, 2, &flaky, false, Verified, 2, None),
            (Lapsed, 3, &gone, false, Lapsed, 4, None),
            (Lapsed, 3, &ok, false, Verified, 0, Some("domain.verified")),
        ];
        let now = DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").unwrap().with_timezone(&Utc);
        for (from, failures, outcome, taken, to, after, action) in cases {
            let d = domain(from, failures);
            let (next, got_action, _, _) = next_state(&d, outcome, taken, &DomainPolicy::default(), now, 1.0);
            assert_eq!((next.status, next.failures, got_action), (to, after, action), "{from} {outcome:?}");
            assert_eq!(next.checked_at, Some(now));
            assert!(next.next_check_at.unwrap() > now);
        }
    }

    #[test]
    fn a_mismatch_says_what_was_found_and_reverification_waits_the_interval() {
        let d = domain(DomainStatus::Pending, 0);
        let found = vec!["roster-domain-verification=old".to_string(), "v=spf1 -all".to_string()];
        let now = DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let policy = DomainPolicy::default();
        let (next, _, kind, seen) =
            next_state(&d, &CheckOutcome::NoMatchingRecord { found: found.clone() }, false, &policy, now, 1.0);
        assert_eq!(kind, CheckKind::NoMatchingRecord);
        assert_eq!(seen, found);
        assert!(next.last_result.unwrap().contains("\"v=spf1 -all\""));
        let (next, _, _, _) = next_state(&d, &CheckOutcome::Verified, false, &policy, now, 1.1);
        assert_eq!(next.next_check_at, Some(now + Duration::milliseconds((86_400_000.0 * 1.1) as i64)));
    }
}
