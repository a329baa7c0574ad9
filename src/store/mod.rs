//! Persistence: the store contract every backend fulfils, the records it
//! speaks in, and the backends (SQLite, the embedded default, and PostgreSQL).
//!
//! Services work through a [`Tx`]: a write transaction from
//! [`Store::begin`] or a read-only one from [`Store::read`]. A use case opens
//! one transaction, makes its change together with its audit record, and
//! commits; dropping a `Tx` without committing rolls it back.

pub mod backup;
mod postgres;
mod sql;
mod sqlite;
mod sqlite_statistics;

use crate::model::*;
pub use crate::roles::{RoleMapping, RoleSource};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// What can go wrong in the store, in the terms services act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the change; the constraint's name, where known.
    #[error("conflict on {0}")]
    Conflict(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or("unique constraint").to_string())
            }
            other => StoreError::Other(other.into()),
        }
    }
}

/// An organization with its billing, features and SSO settings.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub contact_email: Option<String>,
    pub plan: Plan,
    pub purchased_seats: i64,
    pub seat_policy: SeatPolicy,
    /// Whether the background reconciler applies seat cuts itself.
    pub seat_enforcement: SeatEnforcement,
    pub features: Features,
    pub sso: SsoSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Optional product features an organization has bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Features {
    pub external_cloud: bool,
    pub analytics: bool,
}

/// Single sign-on settings of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    /// The Descope-style tenant ID sent to the OpenID provider; `null` when SSO is not set up.
    pub tenant_id: Option<TenantId>,
    /// Members may sign in only through SSO.
    pub enforce: bool,
    /// New users whose email domain is a verified domain of the organization join on first sign-in.
    pub auto_assign: bool,
    /// The role given to members who join through SSO.
    pub default_role: Role,
}

impl Default for SsoSettings {
    fn default() -> Self {
        Self { tenant_id: None, enforce: false, auto_assign: false, default_role: Role::Read }
    }
}

/// A person, across organizations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub id: Uuid,
    /// None for a user provisioned through SCIM with no email (yet).
    pub email: Option<Email>,
    pub created_at: DateTime<Utc>,
}

/// A user's place in one organization, with the user's email.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub id: Uuid,
    pub org_id: Uuid,
    pub user_id: Uuid,
    /// None for a member provisioned through SCIM with no email (yet): it
    /// holds a seat and a role but cannot sign in until an email arrives.
    pub email: Option<Email>,
    pub role: Role,
    pub status: MemberStatus,
    pub source: MemberSource,
    /// The role an admin assigned, if any.
    pub manual_role: Option<Role>,
    /// Whether the manual role is pinned (`true`) or the identity provider
    /// manages the role, the manual role being the fallback (`false`).
    pub role_pinned: bool,
    /// The roles of the IdP's tenant claim at the member's last SSO login.
    pub sso_roles: Vec<String>,
    /// Which source decided `role`.
    pub role_source: RoleSource,
    /// `role_source` in words: "Admin, from group eng-admins".
    pub role_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Member {
    /// The member in words: its email, or `member <id>` when it has none.
    pub fn label(&self) -> String {
        self.email.as_ref().map_or_else(|| format!("member {}", self.id), |e| e.to_string())
    }

    /// A new member record; its role is the derivation's.
    pub fn new(org_id: Uuid, user: &User, status: MemberStatus, source: MemberSource, now: DateTime<Utc>) -> Self {
        Member {
            id: Uuid::now_v7(),
            org_id,
            user_id: user.id,
            email: user.email.clone(),
            role: Role::Read,
            status,
            source,
            manual_role: None,
            role_pinned: false,
            sso_roles: Vec::new(),
            role_source: RoleSource::Default,
            role_reason: RoleSource::Default.explain(Role::Read),
            created_at: now,
            updated_at: now,
        }
    }

    /// Takes the role a derivation decided.
    pub fn set_role(&mut self, d: &crate::roles::Derivation) {
        self.role = d.role;
        self.role_source = d.source.clone();
        self.role_reason = d.explain();
    }

    /// What the member's role derivation reads from the member itself.
    pub fn role_inputs<'a>(
        &'a self,
        groups: &'a [crate::roles::GroupRef],
        scim_roles: &'a [String],
    ) -> crate::roles::RoleInputs<'a> {
        crate::roles::RoleInputs {
            manual: self.manual_role,
            pinned: self.role_pinned,
            groups,
            scim_roles,
            sso_roles: &self.sso_roles,
        }
    }
}

/// What a member's role and seat depend on beyond the member row: its SCIM
/// user (if provisioned) with its `roles` values and groups, and its live sessions.
#[derive(Debug, Clone, Default)]
pub struct MemberLinks {
    pub scim_user: Option<Uuid>,
    pub scim_active: Option<bool>,
    pub scim_roles: Vec<String>,
    pub groups: Vec<crate::roles::GroupRef>,
    pub live_sessions: i64,
}

/// One entry of the events outbox.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in the organization's feed: 1, 2, 3… without gaps.
    pub seq: i64,
    pub id: Uuid,
    /// What happened: `member.added`, `member.role_changed`, `invitation.expired`, `seats.updated`…
    #[serde(rename = "type")]
    pub kind: String,
    /// The member, invitation or organization it happened to.
    pub subject: String,
    /// The subject after the change (before it, for a removal).
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// A webhook endpoint: where an organization's events (or, deployment-wide,
/// every organization's) are delivered.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    /// `null` for a deployment-wide endpoint, which hears every organization.
    #[serde(rename = "organization_id")]
    pub org_id: Option<Uuid>,
    pub url: String,
    pub description: String,
    /// The event types delivered: a type, `family.*` or `*`; empty: every event.
    #[serde(rename = "events")]
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why Roster disabled it (failing for too long); `null` when enabled or disabled by an admin.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret signs too, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The signing secret as stored (sealed when `secrets_key_file` is set); never shown.
    #[serde(skip)]
    pub secret: String,
    #[serde(skip)]
    pub previous_secret: Option<String>,
}

/// One organization's queue at one endpoint, claimed for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookQueue {
    pub endpoint_id: Uuid,
    pub org_id: Uuid,
    /// The feed number of the last event delivered (or skipped by the filter).
    pub delivered_seq: i64,
    /// Failed attempts at the event after it.
    pub attempts: i64,
    pub failing_since: Option<DateTime<Utc>>,
    /// Events to send again, by feed number.
    pub replays: Vec<i64>,
}

/// Where a queue stands after a delivery round.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookProgress {
    pub delivered_seq: i64,
    pub attempts: i64,
    pub failing_since: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    /// Replays done (sent, whatever the answer).
    pub replays_done: Vec<i64>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
        }
    }
}

/// One attempt to deliver an event to an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    #[serde(rename = "organization_id")]
    pub org_id: Uuid,
    /// The `webhook-id` sent: the event's id, the same on every attempt.
    pub event_id: Uuid,
    pub event_seq: i64,
    pub event_type: String,
    /// 1 for the first attempt at this event, 2 for the first retry….
    pub attempt: i64,
    /// Sent again on request (a replay), outside the feed's order.
    pub replay: bool,
    pub outcome: DeliveryOutcome,
    /// The receiver's HTTP status; `null` when no answer came.
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    /// The start of the receiver's answer, or why there was none.
    pub response: String,
    pub at: DateTime<Utc>,
}

/// One run of a database-coordinated background job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRun {
    pub id: Uuid,
    pub job: String,
    pub holder: String,
    pub started_at: DateTime<Utc>,
    pub summary: Option<serde_json::Value>,
}

/// What an email is to one organization: the user who has it, that user's
/// member of the organization (any status), and the organization's pending
/// invitation of it (live or lapsed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Person {
    pub user: Option<User>,
    pub member: Option<Member>,
    pub invitation: Option<Invitation>,
}

/// An invitation to join an organization.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Invitation {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: Email,
    pub role: Role,
    pub status: InvitationStatus,
    pub expires_at: DateTime<Utc>,
    pub invited_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The delivery of its latest email, where it is shown (not stored with the invitation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_delivery: Option<MailDelivery>,
}

/// An API key or SCIM token; the secret itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Credential {
    pub id: Uuid,
    pub org_id: Uuid,
    pub kind: CredentialKind,
    pub name: String,
    /// The role an API key acts with; `None` for SCIM tokens.
    pub role: Option<Role>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A deployment-wide key of the operator (the product's back office and
/// billing); only its hash is stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OperatorKey {
    pub id: Uuid,
    pub name: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A change of purchased seats, seat policy or plan an organization's Owner
/// or Admin asked for; the operator approves or rejects it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BillingRequest {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The purchased seats asked for; `None`: unchanged.
    pub purchased: Option<i64>,
    pub seat_policy: Option<SeatPolicy>,
    pub plan: Option<Plan>,
    /// The requester's words to the operator.
    pub note: Option<String>,
    pub status: BillingRequestStatus,
    /// Why it was rejected or cancelled.
    pub reason: Option<String>,
    /// Who asked (an API key id or a portal member's email).
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// An associated email domain and its DNS verification state.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Domain {
    pub id: Uuid,
    pub org_id: Uuid,
    /// Normalized: lower-case ASCII (IDNA), no trailing dot.
    pub name: String,
    pub status: DomainStatus,
    /// The value published at the challenge name is `roster-domain-verification=<token>`.
    pub verification_token: String,
    /// Consecutive definite failures since the last success.
    pub failures: i64,
    /// What the last check saw, in words.
    pub last_result: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub next_check_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A SCIM User as stored: its member, the indexed attributes, and the full
/// representation (without `id` and `meta`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScimUserRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub member_id: Uuid,
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub active: bool,
    pub resource: serde_json::Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A SCIM Group as stored; its members are rows of their own.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimGroupRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub display_name: String,
    pub external_id: Option<String>,
    pub resource: serde_json::Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An organization's own OpenID connection (a "direct" connection).
#[derive(Debug, Clone, PartialEq)]
pub struct SsoConnectionRecord {
    pub org_id: Uuid,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: crate::secrets::Secret,
    pub scopes: Vec<String>,
    pub require_email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A product backend registered to start logins and redeem their codes.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SsoClient {
    pub id: Uuid,
    /// The organization it serves; `null` for a deployment-wide client.
    pub org_id: Option<Uuid>,
    pub name: String,
    /// Where Roster may send the browser back; matched exactly.
    pub redirect_uris: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A login in flight: what Roster sent to the provider and must check on the way back.
#[derive(Debug, Clone, PartialEq)]
pub struct SsoAttempt {
    pub id: Uuid,
    pub org_id: Uuid,
    /// `tenant` or `direct`.
    pub connection: String,
    pub issuer: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub client_id: Uuid,
    pub redirect_uri: String,
    pub product_state: Option<String>,
    pub login_hint: Option<String>,
    /// Hash of the browser-binding cookie.
    pub browser_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// A one-time code for the product, stored by hash.
#[derive(Debug, Clone, PartialEq)]
pub struct SsoCode {
    pub client_id: Uuid,
    pub org_id: Uuid,
    pub member_id: Uuid,
    pub profile: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// One of Roster's own browser sessions, stored by the hash of its cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct SsoSession {
    pub id: Uuid,
    pub org_id: Uuid,
    pub member_id: Uuid,
    pub issuer: String,
    /// The OpenID client the session signed in through (for the provider's logout).
    pub client_id: String,
    pub id_token: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// When the session last served a page (the portal's idle timeout).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A message in the mail outbox, as the sender delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMail {
    pub id: Uuid,
    /// The organization it is about, if any (its audit log records the delivery).
    pub org_id: Option<Uuid>,
    /// What the message is: `invitation`, `sign_in_link`, a notice….
    pub kind: String,
    /// The record it is about (an invitation), whose delivery status it is.
    pub subject_id: Option<Uuid>,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Attempts so far, counting the one a claim starts.
    pub attempts: i64,
    /// Past this, a message that still fails for a temporary reason fails for good.
    pub give_up_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Where a message's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MailStatus {
    /// Waiting for its (next) attempt.
    Queued,
    /// Accepted by the mail server (or written to the mail folder).
    Sent,
    /// Refused for good, or still failing when its retries ran out.
    Failed,
}

impl MailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Queued => "queued",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for MailStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "queued" => Ok(MailStatus::Queued),
            "sent" => Ok(MailStatus::Sent),
            "failed" => Ok(MailStatus::Failed),
            _ => Err(()),
        }
    }
}

/// The delivery of a record's latest message: what an invitation shows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MailDelivery {
    pub status: MailStatus,
    pub attempts: i64,
    /// The mail server's last reply (`250 2.0.0 Ok: queued`, `550 5.1.1 …`), or the connection error.
    pub reply: Option<String>,
    /// When the next attempt is due, while queued.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// The outcome of one delivery attempt, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct MailAttempt {
    pub status: MailStatus,
    pub reply: String,
    /// When to try again, for a message left queued.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// A sign-in link in flight: the product's request it answers, for one browser.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInLink {
    pub org_id: Uuid,
    pub email: Email,
    pub client_id: Uuid,
    pub redirect_uri: String,
    pub state: Option<String>,
    /// Hash of the browser-binding cookie of the browser that asked.
    pub browser_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// The groups a User is in: `(group id, displayName)`, by display name.
pub type UserGroups = Vec<(Uuid, String)>;

/// A page query over SCIM resources: a WHERE fragment and an ORDER BY
/// fragment written for this store's dialect (see `scim::filter`), whose
/// placeholders start at `$2` (`$1` is the organization).
#[derive(Debug, Clone, Default)]
pub struct ScimQuery {
    pub filter: Option<crate::scim::filter::SqlFragment>,
    pub order: Option<crate::scim::filter::SqlFragment>,
    pub offset: i64,
    pub limit: i64,
}

/// How many seats are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatUsage {
    pub active_members: i64,
    pub pending_invitations: i64,
}

impl SeatUsage {
    pub fn used(&self) -> i64 {
        self.active_members + self.pending_invitations
    }
}

/// An audit record to write.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub org_id: Uuid,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
    /// The address of the client whose request made the change.
    pub client_address: Option<String>,
    pub at: DateTime<Utc>,
}

/// Whether an audited action also goes to the events outbox: every change of
/// membership (`member.*`), of invitations holding seats (`invitation.*`), of
/// seats (`seats.updated`) and of the organization's domains (`domain.*`).
pub fn is_event(action: &str) -> bool {
    EVENT_FAMILIES.iter().any(|family| action.strip_prefix(family).is_some_and(|rest| rest.starts_with('.')))
}

/// The families of event types: `member.added`, `seats.updated`, ….
pub const EVENT_FAMILIES: [&str; 4] = ["member", "invitation", "seats", "domain"];

/// A written audit record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub id: Uuid,
    pub org_id: Uuid,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
    /// The address of the client whose request made the change (behind
    /// trusted proxies, the one they forwarded); none for background jobs.
    pub client_address: Option<String>,
    pub at: DateTime<Utc>,
}

/// Which members to list: a page of at most `limit`, after the member `after`, in id (creation) order.
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    pub status: Option<MemberStatus>,
    pub role: Option<Role>,
    pub source: Option<MemberSource>,
    /// Part of the email or the SCIM display name, any case.
    pub search: Option<String>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// Which invitations to list, in id (creation) order.
#[derive(Debug, Clone, Default)]
pub struct InvitationFilter {
    /// As shown: a pending invitation past its expiry counts as expired.
    pub status: Option<InvitationStatus>,
    /// The time that decides which pending invitations have expired.
    pub now: DateTime<Utc>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// Which audit records to list, newest first, before sequence number `before`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// A setup link: a token an organization's Owner or Admin sends its IT
/// admin, opening the set-up pages of `scopes` for that organization only.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SetupLink {
    pub id: Uuid,
    #[serde(skip)]
    pub org_id: Uuid,
    pub scopes: Vec<SetupScope>,
    /// Who created it (the actor id of the audit log).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One SCIM request an organization's identity provider sent, as the
/// request log keeps it: its body masked, its query's values masked.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScimRequestRecord {
    /// Its place in the log: later requests have larger ids.
    #[serde(rename = "id")]
    pub seq: i64,
    #[serde(skip)]
    pub org_id: Uuid,
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub status: u16,
    #[serde(skip)]
    pub latency_us: i64,
    /// The identity provider, as its User-Agent names it.
    pub client: String,
    /// The SCIM error type of an error answer, if it had one.
    pub scim_type: Option<String>,
    /// The error answer's detail.
    pub detail: Option<String>,
    /// The request body with every value masked but `schemas`, `userName`,
    /// `op`, `path`, `active`, `id` and group members' `value`.
    pub body: Option<String>,
}

/// A test sign-in through an organization's SSO connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SsoTest {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The setup link it was run through, if any.
    pub link_id: Option<Uuid>,
    pub tested_by: String,
    pub at: DateTime<Utc>,
    /// Whether the person would have been signed in.
    pub ok: bool,
    /// The claims and the decision, as the set-up page shows them.
    pub result: serde_json::Value,
}

/// How far an organization's set-up has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct SetupStatus {
    pub domain_verified: bool,
    /// A test sign-in through the current connection succeeded.
    pub sso_tested: bool,
    pub scim_received: bool,
    pub user_provisioned: bool,
}

/// A store: opens transactions on one database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A write transaction. Changes to one organization are serialized by
    /// [`Tx::lock_org`], which every membership and seat change calls first.
    async fn begin(&self) -> StoreResult<Box<dyn Tx>>;
    /// A read-only transaction. Its statements all see one snapshot of the
    /// database, as it was at the first of them.
    async fn read(&self) -> StoreResult<Box<dyn Tx>>;
    /// A read-only connection without a transaction around it: each
    /// statement sees its own snapshot. For reads of a single statement, on
    /// the hot path, where a transaction's begin and end would be two more
    /// round trips for nothing.
    async fn lookup(&self) -> StoreResult<Box<dyn Tx>>;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Refreshes the planner's statistics of the tables that outgrew them,
    /// so look-ups keep choosing the selective index as tables grow (SQLite,
    /// whose statistics are never taken from tables smaller than a seed;
    /// PostgreSQL's autovacuum does this itself).
    async fn optimize(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Notified each time a transaction that appended to the events outbox
    /// commits in this process (other replicas' events are found by polling).
    fn events_committed(&self) -> Arc<tokio::sync::Notify>;
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// The connections to the database now (SQLite: its readers; the one
    /// writer is not counted).
    fn connections(&self) -> Connections;
    /// The SQL dialect SCIM filters are translated to.
    fn dialect(&self) -> crate::scim::filter::Dialect;
}

/// How many connections a store has open, by state, and at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Connections {
    pub in_use: f64,
    pub idle: f64,
    pub max: f64,
}

/// One transaction's operations. Every backend implements the same list.
#[async_trait]
pub trait Tx: Send {
    async fn commit(self: Box<Self>) -> StoreResult<()>;

    // Organizations.
    async fn insert_org(&mut self, org: &Organization) -> StoreResult<()>;
    async fn get_org(&mut self, id: Uuid) -> StoreResult<Option<Organization>>;
    async fn list_orgs(&mut self) -> StoreResult<Vec<Organization>>;
    async fn update_org(&mut self, org: &Organization) -> StoreResult<()>;
    async fn delete_org(&mut self, id: Uuid) -> StoreResult<bool>;
    /// Takes the organization's change lock for the rest of the transaction
    /// and returns the organization as it is under the lock. Two transactions
    /// that lock the same organization run one after the other, on every
    /// backend and across processes, which makes seat checks race-free.
    async fn lock_org(&mut self, id: Uuid) -> StoreResult<Option<Organization>>;
    async fn find_org_by_tenant_id(&mut self, tenant_id: &str) -> StoreResult<Option<Organization>>;
    /// Active members and unexpired pending invitations at `now`.
    async fn seat_usage(&mut self, org_id: Uuid, now: DateTime<Utc>) -> StoreResult<SeatUsage>;

    // Users and members.
    async fn find_user_by_email(&mut self, email: &Email) -> StoreResult<Option<User>>;
    async fn insert_user(&mut self, user: &User) -> StoreResult<()>;
    /// Gives a user without an email its email.
    async fn set_user_email(&mut self, user_id: Uuid, email: &Email) -> StoreResult<()>;
    /// Deletes a user that no member stands for any more.
    async fn delete_user(&mut self, user_id: Uuid) -> StoreResult<()>;
    async fn insert_member(&mut self, member: &Member) -> StoreResult<()>;
    async fn get_member(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<Member>>;
    async fn find_member_by_user(&mut self, org_id: Uuid, user_id: Uuid) -> StoreResult<Option<Member>>;
    async fn find_member_by_email(&mut self, org_id: Uuid, email: &Email) -> StoreResult<Option<Member>>;
    /// The user, member and pending invitation of `email` in the organization, in one look-up.
    async fn find_person(&mut self, org_id: Uuid, email: &Email) -> StoreResult<Person>;
    async fn list_members(&mut self, org_id: Uuid, filter: &MemberFilter) -> StoreResult<Vec<Member>>;
    async fn count_members(&mut self, org_id: Uuid, filter: &MemberFilter) -> StoreResult<i64>;
    async fn update_member(&mut self, member: &Member) -> StoreResult<()>;
    async fn count_active_owners(&mut self, org_id: Uuid) -> StoreResult<i64>;
    /// The members with these ids (any status).
    async fn members_by_ids(&mut self, org_id: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Member>>;
    /// Every member that is not deprovisioned, oldest first.
    async fn current_members(&mut self, org_id: Uuid) -> StoreResult<Vec<Member>>;
    /// The SCIM user, `roles`, groups and live sessions of each member
    /// named, or of every member when `ids` is `None`.
    async fn member_links(
        &mut self,
        org_id: Uuid,
        ids: Option<&[Uuid]>,
        now: DateTime<Utc>,
    ) -> StoreResult<std::collections::HashMap<Uuid, MemberLinks>>;
    /// The members of SCIM users in a group.
    async fn member_ids_of_group(&mut self, group_id: Uuid) -> StoreResult<Vec<Uuid>>;
    /// The members of these SCIM users.
    async fn member_ids_of_scim_users(&mut self, org_id: Uuid, user_ids: &[Uuid]) -> StoreResult<Vec<Uuid>>;

    // Role mappings
    async fn list_role_mappings(&mut self, org_id: Uuid) -> StoreResult<Vec<RoleMapping>>;
    async fn insert_role_mapping(&mut self, m: &RoleMapping) -> StoreResult<()>;
    async fn delete_role_mapping(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<RoleMapping>>;

    // Events outbox; events are appended by `insert_audit`.
    async fn list_events(&mut self, org_id: Uuid, after: i64, limit: i64) -> StoreResult<Vec<Event>>;

    // Webhooks.
    /// Adds an endpoint and its queues: its organization's, or every
    /// organization's for a deployment-wide one, each starting after the
    /// organization's latest event.
    async fn insert_webhook_endpoint(&mut self, e: &WebhookEndpoint, now: DateTime<Utc>) -> StoreResult<()>;
    async fn get_webhook_endpoint(&mut self, id: Uuid) -> StoreResult<Option<WebhookEndpoint>>;
    /// The organization's endpoints (`Some`) or the deployment-wide ones (`None`).
    async fn list_webhook_endpoints(&mut self, org_id: Option<Uuid>) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Every endpoint of the deployment, organizations' and deployment-wide.
    async fn all_webhook_endpoints(&mut self) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Rewrites the endpoint (secrets included).
    async fn update_webhook_endpoint(&mut self, e: &WebhookEndpoint) -> StoreResult<()>;
    async fn delete_webhook_endpoint(&mut self, id: Uuid) -> StoreResult<bool>;
    /// Gives a new organization a queue at each deployment-wide endpoint.
    async fn add_webhook_queues(&mut self, org_id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;
    /// Clears the endpoint's queues' failures so they are tried at `now`.
    async fn retry_webhook_queues(&mut self, endpoint_id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;
    /// Moves a queue back so events after `seq` are delivered again; how many that is.
    async fn rewind_webhook_queue(&mut self, endpoint_id: Uuid, org_id: Uuid, seq: i64) -> StoreResult<i64>;
    /// Queues one event to be sent again.
    async fn insert_webhook_replay(
        &mut self,
        endpoint_id: Uuid,
        org_id: Uuid,
        seq: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Whether any queue has an event due at `now` and is unclaimed (a read).
    async fn webhooks_due(&mut self, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Claims up to `limit` due queues of enabled endpoints for `holder`
    /// until `until` (on PostgreSQL, skipping queues another replica is claiming).
    async fn claim_webhook_queues(
        &mut self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookQueue>>;
    /// The organization's event of this number.
    async fn get_event(&mut self, org_id: Uuid, seq: i64) -> StoreResult<Option<Event>>;
    /// Logs a queue's attempts and moves it on, releasing its claim; false
    /// when the claim had passed to another replica (the log is kept).
    async fn record_webhook_round(
        &mut self,
        queue: &WebhookQueue,
        holder: &str,
        deliveries: &[WebhookDelivery],
        progress: &WebhookProgress,
    ) -> StoreResult<bool>;
    /// The endpoint's delivery log, newest first, before the delivery `before`.
    async fn list_webhook_deliveries(
        &mut self,
        endpoint_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    async fn get_webhook_delivery(&mut self, endpoint_id: Uuid, id: Uuid) -> StoreResult<Option<WebhookDelivery>>;
    /// Deletes log entries older than `before`.
    async fn purge_webhook_deliveries(&mut self, before: DateTime<Utc>) -> StoreResult<u64>;

    // Background job runs
    /// Claims the run of `name` due now: succeeds for one caller only, when
    /// the previous claim's `next_at` has passed; the next run is due at `next_at`.
    async fn claim_job_run(
        &mut self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        next_at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn insert_job_run(&mut self, run: &JobRun) -> StoreResult<()>;
    async fn list_job_runs(&mut self, job: &str, limit: i64) -> StoreResult<Vec<JobRun>>;

    // Invitations.
    async fn insert_invitation(&mut self, inv: &Invitation, token_hash: &str) -> StoreResult<()>;
    async fn get_invitation(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<Invitation>>;
    async fn find_pending_invitation(&mut self, org_id: Uuid, email: &Email) -> StoreResult<Option<Invitation>>;
    async fn list_invitations(&mut self, org_id: Uuid, filter: &InvitationFilter) -> StoreResult<Vec<Invitation>>;
    async fn update_invitation(&mut self, inv: &Invitation) -> StoreResult<()>;
    /// Every pending invitation, expired or not, newest last.
    async fn pending_invitations(&mut self, org_id: Uuid) -> StoreResult<Vec<Invitation>>;
    async fn set_invitation_token(&mut self, org_id: Uuid, id: Uuid, token_hash: &str) -> StoreResult<()>;
    /// The invitation whose link token has this hash, in any status.
    async fn find_invitation_by_token(&mut self, token_hash: &str) -> StoreResult<Option<Invitation>>;

    // Credentials (API keys and SCIM tokens).
    async fn insert_credential(&mut self, cred: &Credential, token_hash: &str) -> StoreResult<()>;
    async fn list_credentials(&mut self, org_id: Uuid, kind: CredentialKind) -> StoreResult<Vec<Credential>>;
    async fn get_credential(&mut self, org_id: Uuid, kind: CredentialKind, id: Uuid)
        -> StoreResult<Option<Credential>>;
    /// The credential with this token hash and its stored hash, for a constant-time comparison.
    async fn find_credential_by_hash(&mut self, token_hash: &str) -> StoreResult<Option<(Credential, String)>>;
    async fn update_credential(&mut self, cred: &Credential) -> StoreResult<()>;

    // Operator keys (deployment-wide).
    async fn insert_operator_key(&mut self, key: &OperatorKey, token_hash: &str) -> StoreResult<()>;
    async fn list_operator_keys(&mut self) -> StoreResult<Vec<OperatorKey>>;
    /// The operator key with this token hash and its stored hash, for a constant-time comparison.
    async fn find_operator_key_by_hash(&mut self, token_hash: &str) -> StoreResult<Option<(OperatorKey, String)>>;
    async fn update_operator_key(&mut self, key: &OperatorKey) -> StoreResult<()>;

    // Billing requests.
    async fn insert_billing_request(&mut self, request: &BillingRequest) -> StoreResult<()>;
    async fn update_billing_request(&mut self, request: &BillingRequest) -> StoreResult<()>;
    async fn get_billing_request(&mut self, id: Uuid) -> StoreResult<Option<BillingRequest>>;
    /// Requests of one organization (or every one), newest first, optionally of one status.
    async fn list_billing_requests(
        &mut self,
        org_id: Option<Uuid>,
        status: Option<BillingRequestStatus>,
        limit: i64,
    ) -> StoreResult<Vec<BillingRequest>>;

    // Domains.
    async fn insert_domain(&mut self, domain: &Domain) -> StoreResult<()>;
    async fn get_domain(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<Domain>>;
    async fn list_domains(&mut self, org_id: Uuid) -> StoreResult<Vec<Domain>>;
    async fn update_domain(&mut self, domain: &Domain) -> StoreResult<()>;
    async fn delete_domain(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<bool>;
    /// The verified domain of this name, in whichever organization verified it.
    async fn find_verified_domain(&mut self, name: &str) -> StoreResult<Option<Domain>>;
    /// Domains whose next check is due at `now`, soonest first.
    async fn due_domains(&mut self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Domain>>;

    // SCIM resources.
    async fn insert_scim_user(&mut self, user: &ScimUserRecord, emails: &[String]) -> StoreResult<()>;
    /// Rewrites the user and its emails.
    async fn update_scim_user(&mut self, user: &ScimUserRecord, emails: &[String]) -> StoreResult<()>;
    async fn delete_scim_user(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<bool>;
    async fn get_scim_user(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<ScimUserRecord>>;
    async fn find_scim_user_by_member(&mut self, member_id: Uuid) -> StoreResult<Option<ScimUserRecord>>;
    async fn find_scim_user_by_user_name(
        &mut self,
        org_id: Uuid,
        user_name: &str,
    ) -> StoreResult<Option<ScimUserRecord>>;
    /// A User with its groups, in one statement.
    async fn get_scim_user_with_groups(
        &mut self,
        org_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<(ScimUserRecord, UserGroups)>>;
    /// A page of Users, each with its groups, in one statement.
    async fn list_scim_users(
        &mut self,
        org_id: Uuid,
        query: &ScimQuery,
    ) -> StoreResult<Vec<(ScimUserRecord, UserGroups)>>;
    async fn count_scim_users(&mut self, org_id: Uuid, query: &ScimQuery) -> StoreResult<i64>;
    /// Of `ids`, those that are SCIM users of the organization.
    async fn existing_scim_users(&mut self, org_id: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Uuid>>;
    async fn insert_scim_group(&mut self, group: &ScimGroupRecord) -> StoreResult<()>;
    async fn update_scim_group(&mut self, group: &ScimGroupRecord) -> StoreResult<()>;
    async fn delete_scim_group(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<bool>;
    async fn get_scim_group(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<ScimGroupRecord>>;
    /// Locks the group row for the rest of the transaction and returns it.
    async fn lock_scim_group(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<ScimGroupRecord>>;
    async fn list_scim_groups(&mut self, org_id: Uuid, query: &ScimQuery) -> StoreResult<Vec<ScimGroupRecord>>;
    async fn count_scim_groups(&mut self, org_id: Uuid, query: &ScimQuery) -> StoreResult<i64>;
    /// Adds members (skipping ones already in); returns those added.
    async fn add_group_members(&mut self, org_id: Uuid, group_id: Uuid, user_ids: &[Uuid]) -> StoreResult<Vec<Uuid>>;
    /// Removes members; returns those that were in.
    async fn remove_group_members(&mut self, group_id: Uuid, user_ids: &[Uuid]) -> StoreResult<Vec<Uuid>>;
    /// The group's members with their display names, in id order.
    async fn group_members(&mut self, group_id: Uuid) -> StoreResult<Vec<(Uuid, Option<String>)>>;
    /// One page of the group's members with their display names, in id
    /// order: the first `limit` whose id comes after `after` (keyset paging
    /// over the `(group_id, user_id)` primary key).
    async fn group_members_after(
        &mut self,
        group_id: Uuid,
        after: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<(Uuid, Option<String>)>>;

    // Single sign-on.
    async fn upsert_sso_connection(&mut self, c: &SsoConnectionRecord) -> StoreResult<()>;
    async fn get_sso_connection(&mut self, org_id: Uuid) -> StoreResult<Option<SsoConnectionRecord>>;
    /// Every organization's own connection.
    async fn list_sso_connections(&mut self) -> StoreResult<Vec<SsoConnectionRecord>>;
    async fn delete_sso_connection(&mut self, org_id: Uuid) -> StoreResult<bool>;
    async fn insert_sso_client(&mut self, c: &SsoClient, secret_hash: &str) -> StoreResult<()>;
    /// The organization's clients (`Some`) or the deployment-wide ones (`None`), revoked included.
    async fn list_sso_clients(&mut self, org_id: Option<Uuid>) -> StoreResult<Vec<SsoClient>>;
    /// A client and its secret hash, for a constant-time comparison.
    async fn get_sso_client(&mut self, id: Uuid) -> StoreResult<Option<(SsoClient, String)>>;
    /// Unrevoked clients that may serve `org_id`: its own and the deployment-wide ones.
    async fn sso_clients_for(&mut self, org_id: Uuid) -> StoreResult<Vec<SsoClient>>;
    async fn revoke_sso_client(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn insert_sso_attempt(&mut self, a: &SsoAttempt, state_hash: &str) -> StoreResult<()>;
    async fn find_sso_attempt(&mut self, state_hash: &str) -> StoreResult<Option<SsoAttempt>>;
    /// Marks the attempt used; false when it already was (single use).
    async fn use_sso_attempt(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn insert_sso_code(&mut self, code_hash: &str, c: &SsoCode) -> StoreResult<()>;
    async fn find_sso_code(&mut self, code_hash: &str) -> StoreResult<Option<SsoCode>>;
    /// Marks the code used; false when it already was (single use).
    async fn use_sso_code(&mut self, code_hash: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn insert_sso_session(&mut self, s: &SsoSession, token_hash: &str) -> StoreResult<()>;
    async fn find_sso_session(&mut self, token_hash: &str) -> StoreResult<Option<SsoSession>>;
    /// Records that the session served a page now.
    async fn touch_sso_session(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
    /// The organizations where the user is an active member: id, name, role.
    async fn active_memberships(&mut self, user_id: Uuid) -> StoreResult<Vec<(Uuid, String, Role)>>;
    async fn end_sso_session(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Ends every live session of the member (a write that may go with the
    /// transaction's next statement, see `store::sql`).
    async fn end_member_sessions(&mut self, member_id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
    async fn insert_sign_in_link(&mut self, token_hash: &str, link: &SignInLink) -> StoreResult<()>;
    async fn find_sign_in_link(&mut self, token_hash: &str) -> StoreResult<Option<SignInLink>>;
    /// Marks the link used; false when it already was (single use).
    async fn use_sign_in_link(&mut self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// The organizations where `email` is an active member or has a live invitation, oldest first.
    async fn orgs_for_email(&mut self, email: &Email, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>>;
    /// Deletes attempts, codes, sign-in links and ended or expired sessions that expired before `before`.
    async fn purge_sso(&mut self, before: DateTime<Utc>) -> StoreResult<u64>;

    // Mail outbox.
    /// Queues a message, due at once (a write that may go with the transaction's next statement).
    async fn insert_mail(&mut self, mail: &OutboxMail) -> StoreResult<()>;
    /// Whether any message is due and unclaimed at `now` (a read, so an idle sender takes no write lock).
    async fn mail_due(&mut self, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Claims up to `limit` due messages for `holder` until `until`: no one
    /// else claims them before then (on PostgreSQL, rows another
    /// transaction is claiming are skipped, not waited for).
    async fn claim_mail(
        &mut self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>>;
    /// Records an attempt at a message `holder` claimed; false when the
    /// claim had passed to someone else. A sent or failed message loses its
    /// subject and bodies.
    async fn record_mail_attempt(&mut self, id: Uuid, holder: &str, attempt: &MailAttempt) -> StoreResult<bool>;
    /// Whether a message of `kind` about the organization was queued at or after `since`.
    async fn mail_queued_since(&mut self, org_id: Uuid, kind: &str, since: DateTime<Utc>) -> StoreResult<bool>;
    /// The email addresses of the organization's active Owners and Admins.
    async fn admin_emails(&mut self, org_id: Uuid) -> StoreResult<Vec<Email>>;
    /// Unrevoked credentials (every organization's) expiring after `now` and
    /// by `until` that no message of `kind` was queued about yet.
    async fn credentials_expiring(
        &mut self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        kind: &str,
    ) -> StoreResult<Vec<Credential>>;
    /// The delivery of the latest message about each of these records.
    async fn mail_deliveries(
        &mut self,
        subject_ids: &[Uuid],
    ) -> StoreResult<std::collections::HashMap<Uuid, MailDelivery>>;

    // Background job coordination.
    /// Takes or renews the lease `name` for `holder` until `until`, unless
    /// another holder's lease is still valid at `now`. True when `holder` has it.
    async fn try_acquire_lease(
        &mut self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // Setup links.
    async fn insert_setup_link(&mut self, link: &SetupLink, token_hash: &str) -> StoreResult<()>;
    /// The organization's links, newest first.
    async fn list_setup_links(&mut self, org_id: Uuid) -> StoreResult<Vec<SetupLink>>;
    /// The link with this token hash and its stored hash, for a constant-time comparison.
    async fn find_setup_link_by_hash(&mut self, token_hash: &str) -> StoreResult<Option<(SetupLink, String)>>;
    /// Revokes the link; false when it is not the organization's or already revoked.
    async fn revoke_setup_link(&mut self, org_id: Uuid, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn insert_sso_test(&mut self, test: &SsoTest) -> StoreResult<()>;
    /// The organization's latest test sign-in (through `link_id` only, when given).
    async fn latest_sso_test(&mut self, org_id: Uuid, link_id: Option<Uuid>) -> StoreResult<Option<SsoTest>>;
    async fn setup_status(&mut self, org_id: Uuid) -> StoreResult<SetupStatus>;
    /// Appends to the SCIM request log (skipping organizations deleted
    /// meanwhile) and keeps only the newest [`SCIM_REQUESTS_KEPT`] of each
    /// organization.
    async fn insert_scim_requests(&mut self, requests: &[ScimRequestRecord]) -> StoreResult<()>;
    /// The organization's newest logged SCIM requests, newest first.
    async fn list_scim_requests(&mut self, org_id: Uuid, limit: i64) -> StoreResult<Vec<ScimRequestRecord>>;

    // Audit log.
    async fn insert_audit(&mut self, entry: NewAudit) -> StoreResult<()>;
    async fn list_audit(&mut self, org_id: Uuid, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;
}

/// SCIM requests the log keeps per organization.
pub const SCIM_REQUESTS_KEPT: i64 = 200;

/// Opens the store a database URL names: `sqlite:…` or `postgres://…`.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, max_connections).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, max_connections).await?))
    } else {
        Err(StoreError::Other(anyhow::anyhow!("unsupported database URL scheme")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    fn names(dir: &str) -> BTreeSet<String> {
        std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
            .expect("migrations folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let sqlite = names("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(
            sqlite,
            names("postgres"),
            "every change needs a migration of the same version and name for each backend"
        );
    }
}
