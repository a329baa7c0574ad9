//! The use cases. Each public function checks the actor's permission, opens
//! one transaction, makes its change together with exactly one audit record
//! per changed thing, and commits: a failure anywhere leaves nothing behind.

mod audit;
mod billing;
mod credentials;
mod domains;
mod invitations;
mod mail;
mod members;
mod notices;
mod operator;
mod org;
mod portal;
mod reconcile;
mod roles;
mod scim;
mod seats;
mod setup;
mod signin;
mod sso;
mod webhooks;

pub use audit::*;
pub use billing::*;
pub use credentials::*;
pub use domains::*;
pub use invitations::*;
pub use mail::*;
pub use members::*;
pub use notices::*;
pub use operator::*;
pub use org::*;
pub use portal::*;
pub use reconcile::*;
pub use roles::*;
pub use scim::*;
pub use seats::*;
pub use setup::*;
pub use signin::*;
pub use sso::*;
pub use webhooks::*;

use crate::clock::Clock;
use crate::domains::dns::TxtChecker;
use crate::model::{ActorKind, Role};
use crate::store::{NewAudit, Store, StoreError, Tx};
use serde::Serialize;
use std::sync::Arc;
use uuid::Uuid;

tokio::task_local! {
    /// The address of the client whose request the current task serves, set
    /// by the HTTP layer around each request; every audit record made while
    /// serving it carries it (background jobs have none).
    pub static CLIENT_ADDRESS: String;
}

/// Roster's services over one store and clock.
#[derive(Clone)]
pub struct Roster {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dns: TxtChecker,
    pub(crate) settings: Settings,
    /// Woken when this replica queues an email, so its sender goes at once.
    pub(crate) mail_queued: Arc<tokio::sync::Notify>,
}

/// Policy knobs the services need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long an invitation stays pending.
    pub invitation_ttl: chrono::Duration,
    pub domains: DomainPolicy,
    /// Single sign-on; `None` turns the SSO routes off.
    pub sso: Option<SsoPolicy>,
    /// Seals organizations' OpenID client secrets at rest.
    pub sealing: crate::secrets::SealingKeys,
    pub mail: MailPolicy,
    pub webhooks: WebhookPolicy,
    /// Owners and Admins change purchased seats, seat policy and plan
    /// themselves; otherwise (the default) their changes are requests the
    /// operator answers.
    pub self_serve_seats: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            invitation_ttl: chrono::Duration::days(14),
            domains: DomainPolicy::default(),
            sso: None,
            sealing: crate::secrets::SealingKeys::default(),
            mail: MailPolicy::default(),
            webhooks: WebhookPolicy::default(),
            self_serve_seats: false,
        }
    }
}

impl Roster {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, dns: TxtChecker, settings: Settings) -> Self {
        Self { store, clock, dns, settings, mail_queued: Arc::new(tokio::sync::Notify::new()) }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current time on this instance's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// Who is acting, on which organization, with which role.
#[derive(Debug, Clone)]
pub struct Actor {
    pub kind: ActorKind,
    /// The credential id, or a name for the CLI and the system.
    pub id: String,
    pub org_id: Uuid,
    pub role: Role,
    pub request_id: Option<String>,
}

/// The deployment's operator: at the command line (`cli:<user>`, with
/// direct access to the database) or the product's back office with an
/// operator key (the key's id).
#[derive(Debug, Clone)]
pub struct Operator {
    pub kind: ActorKind,
    pub id: String,
    pub request_id: Option<String>,
}

impl Operator {
    /// The operator at the command line.
    pub fn cli() -> Self {
        let who = std::env::var("USER").unwrap_or_else(|_| "operator".into());
        Self::cli_as(&format!("cli:{who}"))
    }

    /// The operator at the command line, recorded as `id` (`cli:<user>`).
    pub fn cli_as(id: &str) -> Self {
        Self { kind: ActorKind::Cli, id: id.to_string(), request_id: None }
    }

    /// The operator acting on `org_id` with every right of its Owners.
    pub fn on(&self, org_id: Uuid) -> Actor {
        Actor { kind: self.kind, id: self.id.clone(), org_id, role: Role::Owner, request_id: self.request_id.clone() }
    }
}

impl Actor {
    /// The operator at the command line, acting on `org_id` with every right.
    pub fn cli(org_id: Uuid) -> Self {
        Operator::cli().on(org_id)
    }

    /// Whether this is the deployment's operator (the CLI or an operator
    /// key), who sells seats and plans, rather than the organization's own.
    pub fn is_operator(&self) -> bool {
        matches!(self.kind, ActorKind::Cli | ActorKind::Operator)
    }

    /// Refuses unless the actor's role is at least `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ServiceError> {
        if self.role.at_least(needed) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden { role: self.role, needed })
        }
    }

    /// An audit record of this actor's change to `target`.
    pub(crate) fn audit(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        action: &str,
        target: impl ToString,
        before: Option<&impl Serialize>,
        after: Option<&impl Serialize>,
    ) -> NewAudit {
        NewAudit {
            org_id: self.org_id,
            actor_kind: self.kind,
            actor_id: self.id.clone(),
            action: action.to_string(),
            target: target.to_string(),
            before: before.and_then(|b| serde_json::to_value(b).ok()),
            after: after.and_then(|a| serde_json::to_value(a).ok()),
            request_id: self.request_id.clone(),
            client_address: CLIENT_ADDRESS.try_with(Clone::clone).ok(),
            at,
        }
    }
}

/// One line of a bulk upload that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineError {
    /// 1-based line number in the uploaded file.
    pub line: usize,
    pub message: String,
}

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("this needs the {needed} role; the credential has {role}")]
    Forbidden { role: Role, needed: Role },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the organization has {purchased} purchased seats and {used} in use; {requested} more needed")]
    SeatLimitReached { purchased: i64, used: i64, requested: i64 },
    #[error("an organization must keep at least one active Owner")]
    LastOwner,
    #[error("{0}")]
    Conflict(String),
    #[error("{} line(s) of the upload are not valid; nothing was created", .0.len())]
    BulkRejected(Vec<LineError>),
    /// A SCIM protocol error (bad filter, path, value…), answered as is on SCIM routes.
    #[error("{}", .0.detail)]
    Scim(crate::scim::ScimError),
    /// The resource changed since the version the client named (`If-Match`).
    #[error("the resource has changed since version {0}")]
    PreconditionFailed(String),
    /// Only the deployment's operator may do this (sell seats, change plans).
    #[error("{0}")]
    OperatorOnly(String),
    #[error("storage failure")]
    Store(#[source] StoreError),
}

impl From<crate::scim::ScimError> for ServiceError {
    fn from(e: crate::scim::ScimError) -> Self {
        ServiceError::Scim(e)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            // A unique value the use case did not look for first: taken by
            // a concurrent change, or found when deferred writes were sent.
            StoreError::Conflict(constraint) => {
                ServiceError::Conflict(format!("a value of this change is already taken ({constraint})"))
            }
            other => ServiceError::Store(other),
        }
    }
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl ToString) -> Self {
        ServiceError::Invalid { field: field.into(), message: message.to_string() }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// One page of a listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Page size bounds for every listing.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 200;

pub(crate) fn page_size(limit: Option<i64>) -> ServiceResult<i64> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Some(n) => Err(ServiceError::invalid("limit", format!("must be between 1 and {MAX_PAGE_SIZE}, got {n}"))),
    }
}

/// Whether `s` is at most `max` characters with no control character: what
/// a free-text filter or value may hold.
pub(crate) fn plain_text(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Locks the actor's organization for the rest of `tx`, or says it is gone.
pub(crate) async fn lock_org(tx: &mut dyn Tx, org_id: Uuid) -> ServiceResult<crate::store::Organization> {
    tx.lock_org(org_id).await?.ok_or(ServiceError::NotFound("organization"))
}
