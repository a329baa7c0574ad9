//! Webhook endpoints: an organization's (managed with its API keys) or the
//! deployment's (managed at the command line), each hearing the events
//! outbox through a filter, signed with a secret shown once. Delivery itself
//! is `crate::webhooks`; what it leaves (the log, the queue's progress, an
//! endpoint disabled after failing too long) is recorded here.

use super::*;
use crate::model::*;
use crate::store::{DeliveryOutcome, WebhookDelivery, WebhookEndpoint, WebhookProgress, WebhookQueue, EVENT_FAMILIES};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

/// Every event type the outbox holds, as a webhook's `type`.
pub const EVENT_TYPES: [&str; 24] = [
    "member.added",
    "member.invited",
    "member.role_changed",
    "member.suspended",
    "member.reactivated",
    "member.removed",
    "member.email_set",
    "member.reprovisioned",
    "member.sessions_ended",
    "invitation.created",
    "invitation.accepted",
    "invitation.revoked",
    "invitation.resent",
    "invitation.expired",
    "seats.updated",
    "seats.change_requested",
    "seats.change_approved",
    "seats.change_rejected",
    "seats.change_cancelled",
    "domain.added",
    "domain.verified",
    "domain.failed",
    "domain.lapsed",
    "domain.removed",
];

/// How long the delivery log keeps an attempt.
pub const WEBHOOK_LOG_DAYS: i64 = 30;
/// The longest a rotated-out secret keeps signing.
pub const MAX_OVERLAP_HOURS: i64 = 7 * 24;
const DEFAULT_OVERLAP_HOURS: i64 = 24;
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 200;

/// The webhook knobs from the configuration.
#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    /// Endpoints may be on loopback, private and link-local addresses.
    pub allow_private_addresses: bool,
    /// `http://` endpoints are accepted (SSO dev mode); otherwise `https://` only.
    pub allow_http: bool,
    /// How long an endpoint may fail before it is disabled.
    pub retry_for: Duration,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self { allow_private_addresses: false, allow_http: false, retry_for: Duration::days(3) }
    }
}

/// Whose endpoints a call is about: an organization's, through an actor of
/// it, or the deployment-wide ones, through the operator.
#[derive(Debug, Clone)]
pub enum WebhookScope {
    Org(Actor),
    /// The deployment's operator (the CLI or an operator key): deployment-wide endpoints.
    Deployment(Operator),
}

impl WebhookScope {
    fn org_id(&self) -> Option<Uuid> {
        match self {
            WebhookScope::Org(a) => Some(a.org_id),
            WebhookScope::Deployment(_) => None,
        }
    }

    fn who(&self) -> &str {
        match self {
            WebhookScope::Org(a) => &a.id,
            WebhookScope::Deployment(op) => &op.id,
        }
    }

    /// Webhooks are managed by an organization's Owners and Admins.
    fn require_admin(&self) -> ServiceResult<()> {
        match self {
            WebhookScope::Org(a) => a.require(Role::Admin),
            WebhookScope::Deployment(_) => Ok(()),
        }
    }

    /// Audits a change of an organization's endpoint; the deployment's are logged.
    async fn audit(
        &self,
        tx: &mut dyn Tx,
        now: DateTime<Utc>,
        action: &str,
        id: Uuid,
        before: Option<&WebhookEndpoint>,
        after: Option<&WebhookEndpoint>,
    ) -> ServiceResult<()> {
        match self {
            WebhookScope::Org(actor) => tx.insert_audit(actor.audit(now, action, id, before, after)).await?,
            WebhookScope::Deployment(op) => {
                tracing::info!(%action, endpoint = %id, by = %op.id, "deployment webhook")
            }
        }
        Ok(())
    }
}

/// A new endpoint.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are POSTed: `https://…` (`http://` only in SSO dev mode).
    #[schema(value_type = WebhookUrl)]
    pub url: String,
    /// Event types (`member.added`), families (`member.*`) or `*`; absent or empty: every event.
    #[serde(default)]
    #[schema(value_type = Vec<EventFilter>)]
    pub events: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub description: String,
}

/// A change of an endpoint; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    #[schema(value_type = Option<WebhookUrl>)]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<EventFilter>>)]
    pub events: Option<Vec<String>>,
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub description: Option<String>,
    /// `true` also retries a disabled endpoint's held events at once.
    pub enabled: Option<bool>,
}

/// An endpoint URL as the schema describes it: `https` to a host name
/// (`http` too in SSO dev mode, and addresses inside the network with
/// `webhook_allow_private_addresses`).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String,
    pattern = r"^https://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?(\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*)?$")]
#[allow(dead_code)]
struct WebhookUrl(String);

/// An entry of an event filter: an event type, a family or `*`.
struct EventFilter;

impl utoipa::PartialSchema for EventFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        let mut names: Vec<String> = vec!["*".into()];
        names.extend(EVENT_FAMILIES.iter().map(|f| format!("{f}.*")));
        names.extend(EVENT_TYPES.iter().map(|t| t.to_string()));
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some("An event type, `family.*` or `*`"))
            .enum_values(Some(names))
            .into()
    }
}

impl utoipa::ToSchema for EventFilter {}

/// An endpoint with its signing secret, shown this once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    pub endpoint: WebhookEndpoint,
    /// `whsec_…`: the key of the `webhook-signature` HMAC (Standard Webhooks).
    pub secret: String,
}

/// One page of an endpoint's delivery log, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<WebhookDelivery>,
    /// Pass as `cursor` for older attempts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// How many events a replay sends again.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ReplayQueued {
    pub queued: i64,
}

/// Checks an endpoint URL: `https` (or `http` in dev mode), no credentials
/// or fragment, and not a loopback, private or link-local host unless the
/// deployment allows those. Host names are checked again, resolved, at each
/// delivery.
pub fn check_webhook_url(raw: &str, policy: &WebhookPolicy) -> ServiceResult<url::Url> {
    let invalid = |m: String| ServiceError::invalid("url", m);
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(format!("must be at most {MAX_URL_LEN} characters")));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid(format!("`{raw}` is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err(invalid("must be https".into())),
        other => return Err(invalid(format!("must be https, not {other}"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not hold credentials".into()));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not have a fragment".into()));
    }
    check_url_text(raw, policy.allow_private_addresses).map_err(invalid)?;
    let refused = |what: &str| {
        invalid(format!(
            "{what} is not a public address; set webhook_allow_private_addresses to deliver inside the network"
        ))
    };
    match url.host() {
        None => return Err(invalid("has no host".into())),
        Some(url::Host::Ipv4(ip)) if !policy.allow_private_addresses && !crate::webhooks::is_public(ip.into()) => {
            return Err(refused(&ip.to_string()))
        }
        Some(url::Host::Ipv6(ip)) if !policy.allow_private_addresses && !crate::webhooks::is_public(ip.into()) => {
            return Err(refused(&ip.to_string()))
        }
        Some(url::Host::Domain(name)) if !policy.allow_private_addresses => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(refused(&name));
            }
        }
        Some(_) => {}
    }
    Ok(url)
}

/// Checks what the parser would take but rewrite or take loosely: a host
/// name of letters, digits and hyphens in dot-separated labels (one label
/// only inside the network), ending in a label that starts with a letter; a
/// port without leading zeros; a path and query of URL characters only
/// (anything else percent-encoded), as the schema's pattern says.
fn check_url_text(raw: &str, private_allowed: bool) -> Result<(), String> {
    let rest = raw.split_once("://").map(|(_, rest)| rest).unwrap_or(raw);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // `[v6]:port` or `host:port`.
    let split_at = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].find(':').map(|i| bracket + i),
        None => authority.rfind(':'),
    };
    let (host, port) = match split_at {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    };
    if let Some(port) = port {
        if port.starts_with('0') || port.len() > 5 || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("port `{port}` is not a port number"));
        }
    }
    let literal = host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
    if !literal {
        let labels: Vec<&str> = host.split('.').collect();
        let ldh = |l: &&str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let last_ok = labels.last().is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()));
        if !labels.iter().all(ldh) || !last_ok || (labels.len() < 2 && !private_allowed) {
            return Err(format!(
                "host `{host}` must be a domain name: labels of letters, digits and hyphens, separated by dots"
            ));
        }
    }
    let url_char = |c: char| c.is_ascii_alphanumeric() || "._~%!$&'()*+,;=:@/-?".contains(c);
    if let Some(bad) = tail.chars().find(|c| !url_char(*c)) {
        return Err(format!("`{bad}` must be percent-encoded"));
    }
    Ok(())
}

/// Checks an event filter: each entry a known type, `family.*` or `*`.
pub fn check_event_filter(events: &[String]) -> ServiceResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        let known = e == "*"
            || EVENT_TYPES.contains(&e.as_str())
            || e.strip_suffix(".*").is_some_and(|family| EVENT_FAMILIES.contains(&family));
        if !known {
            return Err(ServiceError::invalid(
                "events",
                format!(
                    "`{}` is not an event type, a family (`member.*`, `invitation.*`, `seats.*`, `domain.*`) or `*`",
                    e.chars().take(64).collect::<String>()
                ),
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// Whether an endpoint with filter `filter` hears events of type `kind`.
pub fn hears(filter: &[String], kind: &str) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| {
            f == "*"
                || f == kind
                || f.strip_suffix('*').is_some_and(|prefix| prefix.ends_with('.') && kind.starts_with(prefix))
        })
}

fn check_description(d: &str) -> ServiceResult<String> {
    if !plain_text(d, MAX_DESCRIPTION_LEN) {
        return Err(ServiceError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters without control characters"),
        ));
    }
    Ok(d.trim().to_string())
}

impl Roster {
    fn seal_webhook_secret(&self, endpoint: Uuid, secret: &str) -> String {
        self.settings.sealing.seal(secret, &webhook_seal_context(endpoint))
    }

    /// The keys an endpoint signs with at `now`: its secret, and during a
    /// rotation's overlap the previous one.
    pub fn webhook_signing_keys(&self, e: &WebhookEndpoint, now: DateTime<Utc>) -> ServiceResult<Vec<Vec<u8>>> {
        let context = webhook_seal_context(e.id);
        let open = |stored: &str| -> ServiceResult<Vec<u8>> {
            let secret = self
                .settings
                .sealing
                .open(stored, &context)
                .map_err(|err| ServiceError::Store(StoreError::Other(anyhow::anyhow!("webhook secret: {err}"))))?;
            crate::webhooks::secret_key(&secret).ok_or_else(|| {
                ServiceError::Store(StoreError::Other(anyhow::anyhow!("stored webhook secret is malformed")))
            })
        };
        let mut keys = vec![open(&e.secret)?];
        if let (Some(previous), Some(until)) = (&e.previous_secret, e.previous_secret_expires_at) {
            if until > now {
                keys.push(open(previous)?);
            }
        }
        Ok(keys)
    }

    /// Adds an endpoint; its secret is in the answer only.
    pub async fn create_webhook(&self, scope: &WebhookScope, new: NewWebhook) -> ServiceResult<CreatedWebhook> {
        scope.require_admin()?;
        let url = check_webhook_url(new.url.trim(), &self.settings.webhooks)?;
        let event_types = check_event_filter(&new.events)?;
        let description = check_description(&new.description)?;
        let now = self.clock.now();
        let id = Uuid::now_v7();
        let secret = crate::webhooks::generate_secret();
        let endpoint = WebhookEndpoint {
            id,
            org_id: scope.org_id(),
            url: url.to_string(),
            description,
            event_types,
            enabled: true,
            disabled_reason: None,
            previous_secret_expires_at: None,
            created_by: scope.who().to_string(),
            created_at: now,
            updated_at: now,
            secret: self.seal_webhook_secret(id, secret.expose()),
            previous_secret: None,
        };
        let mut tx = self.store.begin().await?;
        if let Some(org_id) = endpoint.org_id {
            lock_org(&mut *tx, org_id).await?;
        }
        tx.insert_webhook_endpoint(&endpoint, now).await?;
        scope.audit(&mut *tx, now, "webhook.created", id, None, Some(&endpoint)).await?;
        tx.commit().await?;
        Ok(CreatedWebhook { endpoint, secret: secret.expose().to_string() })
    }

    /// The scope's endpoints.
    pub async fn list_webhooks(&self, scope: &WebhookScope) -> ServiceResult<Vec<WebhookEndpoint>> {
        scope.require_admin()?;
        Ok(self.store.read().await?.list_webhook_endpoints(scope.org_id()).await?)
    }

    /// One of the scope's endpoints.
    pub async fn get_webhook(&self, scope: &WebhookScope, id: Uuid) -> ServiceResult<WebhookEndpoint> {
        scope.require_admin()?;
        let mut tx = self.store.read().await?;
        find_endpoint(&mut *tx, scope, id).await
    }

    /// Changes an endpoint's URL, filter, description or state.
    pub async fn update_webhook(
        &self,
        scope: &WebhookScope,
        id: Uuid,
        change: WebhookChange,
    ) -> ServiceResult<WebhookEndpoint> {
        scope.require_admin()?;
        let url = change.url.as_deref().map(|u| check_webhook_url(u.trim(), &self.settings.webhooks)).transpose()?;
        let events = change.events.as_deref().map(check_event_filter).transpose()?;
        let description = change.description.as_deref().map(check_description).transpose()?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let before = find_endpoint(&mut *tx, scope, id).await?;
        let mut after = before.clone();
        if let Some(url) = url {
            after.url = url.to_string();
        }
        if let Some(events) = events {
            after.event_types = events;
        }
        if let Some(description) = description {
            after.description = description;
        }
        let enabling = change.enabled == Some(true) && !before.enabled;
        if let Some(enabled) = change.enabled {
            after.enabled = enabled;
            if enabled {
                after.disabled_reason = None;
            }
        }
        if after == before {
            return Ok(before);
        }
        after.updated_at = now;
        tx.update_webhook_endpoint(&after).await?;
        if enabling {
            tx.retry_webhook_queues(id, now).await?;
        }
        scope.audit(&mut *tx, now, "webhook.updated", id, Some(&before), Some(&after)).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes an endpoint with its queues and delivery log.
    pub async fn delete_webhook(&self, scope: &WebhookScope, id: Uuid) -> ServiceResult<()> {
        scope.require_admin()?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let before = find_endpoint(&mut *tx, scope, id).await?;
        tx.delete_webhook_endpoint(id).await?;
        scope.audit(&mut *tx, now, "webhook.deleted", id, Some(&before), None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives an endpoint a new secret; the previous one keeps signing for
    /// `overlap_hours` (24 unless given), so receivers can switch without
    /// refusing a delivery.
    pub async fn rotate_webhook_secret(
        &self,
        scope: &WebhookScope,
        id: Uuid,
        overlap_hours: Option<i64>,
    ) -> ServiceResult<CreatedWebhook> {
        scope.require_admin()?;
        let overlap = overlap_hours.unwrap_or(DEFAULT_OVERLAP_HOURS);
        if !(0..=MAX_OVERLAP_HOURS).contains(&overlap) {
            return Err(ServiceError::invalid(
                "overlap_hours",
                format!("must be between 0 and {MAX_OVERLAP_HOURS}, got {overlap}"),
            ));
        }
        let now = self.clock.now();
        let secret = crate::webhooks::generate_secret();
        let mut tx = self.store.begin().await?;
        let before = find_endpoint(&mut *tx, scope, id).await?;
        let mut after = before.clone();
        after.previous_secret = (overlap > 0).then(|| before.secret.clone());
        after.previous_secret_expires_at = (overlap > 0).then(|| now + Duration::hours(overlap));
        after.secret = self.seal_webhook_secret(id, secret.expose());
        after.updated_at = now;
        tx.update_webhook_endpoint(&after).await?;
        scope.audit(&mut *tx, now, "webhook.secret_rotated", id, Some(&before), Some(&after)).await?;
        tx.commit().await?;
        Ok(CreatedWebhook { endpoint: after, secret: secret.expose().to_string() })
    }

    /// The endpoint's delivery attempts, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        scope: &WebhookScope,
        id: Uuid,
        limit: Option<i64>,
        before: Option<Uuid>,
    ) -> ServiceResult<DeliveryPage> {
        scope.require_admin()?;
        let limit = page_size(limit)?;
        let mut tx = self.store.read().await?;
        find_endpoint(&mut *tx, scope, id).await?;
        let mut items = tx.list_webhook_deliveries(id, before, limit + 1).await?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|d| d.id.to_string())
        } else {
            None
        };
        Ok(DeliveryPage { items, next_cursor })
    }

    /// Sends one delivery's event again (once, whatever the answer).
    pub async fn replay_webhook_delivery(
        &self,
        scope: &WebhookScope,
        id: Uuid,
        delivery_id: Uuid,
    ) -> ServiceResult<ReplayQueued> {
        scope.require_admin()?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        find_endpoint(&mut *tx, scope, id).await?;
        let delivery = tx.get_webhook_delivery(id, delivery_id).await?.ok_or(ServiceError::NotFound("delivery"))?;
        tx.insert_webhook_replay(id, delivery.org_id, delivery.event_seq, now).await?;
        let detail = serde_json::json!({ "delivery": delivery_id, "event_seq": delivery.event_seq });
        self.audit_replay(&mut *tx, scope, delivery.org_id, id, &detail, now).await?;
        tx.commit().await?;
        self.store.events_committed().notify_waiters();
        Ok(ReplayQueued { queued: 1 })
    }

    /// Delivers again, in order, every event of the organization from
    /// number `since_seq` on (a deployment-wide endpoint names the organization).
    pub async fn replay_webhook_events(
        &self,
        scope: &WebhookScope,
        id: Uuid,
        since_seq: i64,
        org_id: Option<Uuid>,
    ) -> ServiceResult<ReplayQueued> {
        scope.require_admin()?;
        if since_seq < 1 {
            return Err(ServiceError::invalid("since_seq", "event numbers start at 1"));
        }
        let org_id = match (scope.org_id(), org_id) {
            (Some(own), None) => own,
            (Some(own), Some(named)) if named == own => own,
            (Some(_), Some(_)) => return Err(ServiceError::NotFound("organization")),
            (None, Some(named)) => named,
            (None, None) => {
                return Err(ServiceError::invalid(
                    "organization_id",
                    "a deployment-wide endpoint needs an organization",
                ))
            }
        };
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        find_endpoint(&mut *tx, scope, id).await?;
        let queued = match tx.rewind_webhook_queue(id, org_id, since_seq - 1).await {
            Err(StoreError::NotFound) => return Err(ServiceError::NotFound("organization")),
            other => other?,
        };
        let detail = serde_json::json!({ "since_seq": since_seq, "queued": queued });
        self.audit_replay(&mut *tx, scope, org_id, id, &detail, now).await?;
        tx.commit().await?;
        self.store.events_committed().notify_waiters();
        Ok(ReplayQueued { queued })
    }

    async fn audit_replay(
        &self,
        tx: &mut dyn Tx,
        scope: &WebhookScope,
        org_id: Uuid,
        endpoint: Uuid,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let actor = match scope {
            WebhookScope::Org(a) => a.clone(),
            WebhookScope::Deployment(op) => op.on(org_id),
        };
        tx.insert_audit(actor.audit(now, "webhook.replayed", endpoint, None::<&()>, Some(detail))).await?;
        Ok(())
    }

    /// Records a delivery round of a claimed queue. When its head event has
    /// failed for longer than the retry window, the endpoint is disabled and
    /// (an organization's endpoint) its admins are told by email.
    pub async fn record_webhook_round(
        &self,
        endpoint: &WebhookEndpoint,
        queue: &WebhookQueue,
        holder: &str,
        deliveries: &[WebhookDelivery],
        progress: &WebhookProgress,
    ) -> ServiceResult<bool> {
        let now = self.clock.now();
        let gave_up = progress.failing_since.is_some_and(|since| now - since >= self.settings.webhooks.retry_for);
        let mut tx = self.store.begin().await?;
        let recorded = tx.record_webhook_round(queue, holder, deliveries, progress).await?;
        let mut told = false;
        if recorded && gave_up {
            if let Some(mut current) = tx.get_webhook_endpoint(endpoint.id).await?.filter(|e| e.enabled) {
                let last = deliveries.iter().rev().find(|d| d.outcome == DeliveryOutcome::Failed);
                let reason = format!(
                    "deliveries failed for {} hours (since {}); last answer: {}",
                    self.settings.webhooks.retry_for.num_hours(),
                    progress.failing_since.map(human_time).unwrap_or_default(),
                    last.map(|d| d.response.as_str()).unwrap_or("none"),
                );
                let before = current.clone();
                current.enabled = false;
                current.disabled_reason = Some(reason.chars().take(500).collect());
                current.updated_at = now;
                tx.update_webhook_endpoint(&current).await?;
                tracing::warn!(endpoint = %current.id, url = %current.url, "webhook endpoint disabled after failing too long");
                if let Some(org_id) = current.org_id {
                    let actor = Actor {
                        kind: ActorKind::System,
                        id: "webhooks".into(),
                        org_id,
                        role: Role::Read,
                        request_id: None,
                    };
                    tx.insert_audit(actor.audit(now, "webhook.disabled", current.id, Some(&before), Some(&current)))
                        .await?;
                    if let Some(org) = tx.get_org(org_id).await? {
                        self.notify_webhook_disabled(&mut *tx, &org, &current, now).await?;
                        told = true;
                    }
                }
            }
        }
        tx.commit().await?;
        if told {
            self.wake_sender();
        }
        Ok(recorded)
    }
}

/// The scope's endpoint `id`; another scope's is not found.
async fn find_endpoint(tx: &mut dyn Tx, scope: &WebhookScope, id: Uuid) -> ServiceResult<WebhookEndpoint> {
    tx.get_webhook_endpoint(id)
        .await?
        .filter(|e| e.org_id == scope.org_id())
        .ok_or(ServiceError::NotFound("webhook endpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_private_addresses: bool, allow_http: bool) -> WebhookPolicy {
        WebhookPolicy { allow_private_addresses, allow_http, retry_for: Duration::days(3) }
    }

    #[test]
    fn endpoint_urls_are_public_https_unless_allowed() {
        let strict = policy(false, false);
        for fine in [
            "https://hooks.example.com/roster",
            "https://Hooks.Example.com:8443/in?token=a-b_c%20d&x=1",
            "https://xn--bcher-kva.example/",
            "https://a.io",
        ] {
            assert!(check_webhook_url(fine, &strict).is_ok(), "{fine}");
        }
        for refused in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#x",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://localhost/",
            "https://api.localhost./",
            "https://0.0.0.0/",
            "https://z.example.com*/",
            "https://-a.example.com/",
            "https://intranet/",
            "https://hooks.example.com:080/",
            "https://hooks.example.com:0/",
            "https://hooks.example.com/a b",
            "https://hooks.example.com/{x}",
            "https://hooks.example.com./",
            "https://hooks.123/",
            "not a url",
        ] {
            assert!(check_webhook_url(refused, &strict).is_err(), "{refused}");
        }
        let inside = policy(true, true);
        assert!(check_webhook_url("http://127.0.0.1:9000/hook", &inside).is_ok());
        assert!(check_webhook_url("http://localhost/hook", &inside).is_ok());
        assert!(check_webhook_url("http://[::1]:8080/hook", &inside).is_ok());
        assert!(check_webhook_url("http://[::1]/hook", &inside).is_ok());
        assert!(check_webhook_url("http://receiver:8080/hook", &inside).is_ok());
    }

    #[test]
    fn filters_name_known_types_and_families() {
        assert_eq!(check_event_filter(&["member.*".into(), "member.*".into()]).unwrap(), vec!["member.*"]);
        assert!(check_event_filter(&["*".into(), "seats.updated".into(), "domain.*".into()]).is_ok());
        for bad in ["members.*", "member.", "member.eaten", "", "webhook.*"] {
            assert!(check_event_filter(&[bad.into()]).is_err(), "{bad}");
        }
        let f = vec!["member.*".to_string(), "seats.updated".to_string()];
        assert!(hears(&f, "member.added") && hears(&f, "seats.updated"));
        assert!(!hears(&f, "invitation.created") && !hears(&f, "memberx.added"));
        assert!(hears(&[], "domain.lapsed") && hears(&["*".into()], "domain.lapsed"));
    }

    #[test]
    fn every_event_type_is_an_event() {
        for t in EVENT_TYPES {
            assert!(crate::store::is_event(t), "{t}");
        }
        assert!(!crate::store::is_event("webhook.created"));
    }
}
