//! Single sign-on, the gateway pattern: a product sends the browser to
//! `/sso/authorize`; Roster finds the organization (by verified email
//! domain, organization id or tenant ID), sends the browser to the
//! organization's OpenID provider, checks what comes back, resolves the
//! membership (active member, invitation, or auto-assignment by verified
//! domain) and hands the product a one-time code it redeems for the profile.
//!
//! Login attempts, codes and sessions live in the database, so any replica
//! can finish what another started. Every secret handed out (state, browser
//! binding, code, session) is stored as a hash only.

use super::*;
use crate::config::TenantConnection;
use crate::model::*;
use crate::secrets::{generate_token, hash_token, hashes_match, Secret};
use crate::sso::{Connection, ConnectionKind, OidcError, RelyingParty, TenantRouting};
use crate::store::{Member, Organization, SsoAttempt, SsoClient, SsoCode, SsoConnectionRecord, SsoSession};
use chrono::{DateTime, Duration, Utc};

/// The SSO knobs from the configuration.
#[derive(Clone)]
pub struct SsoPolicy {
    pub rp: RelyingParty,
    /// Roster's own callback URL, registered at every provider.
    pub callback_url: String,
    pub tenant: Option<TenantConnection>,
    pub attempt_ttl: Duration,
    pub code_ttl: Duration,
    pub session_ttl: Duration,
    /// Allows `http` issuers and redirect URIs.
    pub dev_mode: bool,
}

impl std::fmt::Debug for SsoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoPolicy")
            .field("callback_url", &self.callback_url)
            .field("tenant", &self.tenant)
            .field("attempt_ttl", &self.attempt_ttl)
            .field("code_ttl", &self.code_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("dev_mode", &self.dev_mode)
            .finish()
    }
}

/// Where a login starts: which organization the user belongs to.
#[derive(Debug, Clone)]
pub enum LoginTarget {
    /// Home-realm discovery: the organization that verified the email's domain.
    Email(Email),
    Organization(Uuid),
    Tenant(TenantId),
}

/// A product's request to sign a user in.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    pub target: LoginTarget,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub client_id: Option<Uuid>,
    /// The browser-binding cookie the browser already has, if any.
    pub browser: Option<String>,
}

/// Whom a login attempt is for: the organization, the product client and
/// where the browser goes back to.
struct AttemptFor {
    org_id: Uuid,
    client_id: Uuid,
    redirect_uri: String,
    product_state: Option<String>,
    login_hint: Option<String>,
}

/// A started login: where to send the browser, and the browser-binding cookie to set.
#[derive(Debug)]
pub struct LoginStart {
    pub provider_url: url::Url,
    pub browser: Secret,
}

/// What the provider sent back to the callback.
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// How a callback ends: a person signed in, or a test sign-in recorded.
#[derive(Debug)]
pub enum Completed {
    SignedIn(LoginDone),
    /// A test sign-in: its result is shown at `result_url`; nobody signed in.
    Tested {
        result_url: String,
    },
}

/// A finished login: where to send the browser (the product, with its code),
/// and Roster's own session cookie.
#[derive(Debug)]
pub struct LoginDone {
    pub redirect: url::Url,
    pub session: Secret,
    pub session_expires: DateTime<Utc>,
}

/// What sealing a secret binds it to: the organization it belongs to.
fn seal_context(org_id: Uuid) -> String {
    format!("sso_connection:{org_id}")
}

/// What sealing a webhook signing secret binds it to: its endpoint.
pub(crate) fn webhook_seal_context(endpoint: Uuid) -> String {
    format!("webhook:{endpoint}")
}

/// Organizations' OpenID client secrets and webhook signing secrets by how they are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SealedSecrets {
    /// Sealed with the sealing key.
    pub current: usize,
    /// Sealed with an older key still configured: `roster secrets rotate` reseals them.
    pub stale: usize,
    /// In clear.
    pub clear: usize,
}

impl SealedSecrets {
    fn count(&mut self, stored: &str, keys: &crate::secrets::SealingKeys) {
        match crate::secrets::SealingKeys::sealed_with(stored) {
            None => self.clear += 1,
            Some(_) if !keys.is_current(stored) => self.stale += 1,
            Some(_) => self.current += 1,
        }
    }
}

/// What the start-up check of the tenant connection found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantConnectionProblem {
    /// The provider answers, as another issuer: every sign-in would fail.
    #[error(
        "tenant_connection.issuer: the provider at `{configured}` names its issuer `{advertised}`; \
         set tenant_connection.issuer to exactly that (ID tokens are checked against it, trailing `/` included)"
    )]
    WrongIssuer { configured: String, advertised: String },
    /// The provider did not answer: sign-ins through it fail until it does.
    #[error("tenant_connection.issuer: the discovery document of `{issuer}` could not be read: {cause}")]
    Unreachable { issuer: String, cause: String },
}

/// Why a login stopped, in words for the person at the browser.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LoginError {
    /// A stable machine-readable reason (`domain_not_verified`, `no_free_seat`, …).
    pub code: &'static str,
    pub message: String,
    pub status: u16,
}

impl LoginError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), status }
    }

    /// Too many sign-ins from this browser's address.
    pub fn too_many(retry_after_secs: u64) -> Self {
        Self::new(
            429,
            "too_many_requests",
            format!("Too many sign-ins from your network. Try again in {retry_after_secs} seconds."),
        )
    }
}

impl From<ServiceError> for LoginError {
    fn from(e: ServiceError) -> Self {
        tracing::error!(error = ?e, "sign-in failed");
        LoginError::new(500, "internal", "Roster could not complete the sign-in. Try again in a moment.")
    }
}

impl From<crate::store::StoreError> for LoginError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

/// Who signed in: what the product receives for a code.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SsoProfile {
    pub user_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub organization_id: Uuid,
    pub organization_name: String,
    pub member_id: Uuid,
    pub role: Role,
    pub member_status: MemberStatus,
    /// How the person signed in: `sso`, or `email_link` (a link Roster emailed).
    #[serde(default)]
    pub method: SignInMethod,
    /// `tenant` or `direct`, for a sign-in through SSO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionKind>,
    /// The identity provider's issuer; Roster's own public URL for an emailed link.
    pub issuer: String,
    /// The subject (`sub`) at the identity provider; the user id for an emailed link.
    pub idp_subject: String,
    /// True when the organization enforces SSO: the product must not let these users in any other way.
    pub sso_enforced: bool,
}

/// How a person signed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignInMethod {
    #[default]
    Sso,
    EmailLink,
}

/// Why a code was not redeemed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidGrant(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for RedeemError {
    fn from(e: crate::store::StoreError) -> Self {
        RedeemError::Service(e.into())
    }
}

/// A new product client and its secret (shown once).
#[derive(Debug)]
pub struct CreatedSsoClient {
    pub client: SsoClient,
    pub secret: Secret,
}

/// What an admin registers for a product client.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSsoClient {
    pub name: Name,
    /// Exact URLs Roster may send the browser back to: `https`, or `http`
    /// on a loopback host; no fragment.
    #[schema(min_items = 1, max_items = 20, value_type = Vec<RedirectUri>)]
    pub redirect_uris: Vec<String>,
}

/// A redirect URI as the schema describes it: `https`, or `http` on a
/// loopback host; no fragment.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String,
    pattern = r"^(https://([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z]([a-z0-9-]*[a-z0-9])?|http://(localhost|127\.0\.0\.1|\[::1\]))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?(\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*)?$")]
#[allow(dead_code)]
struct RedirectUri(String);

/// An organization's own OpenID connection, as an admin sets it.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectConnectionInput {
    /// The provider's issuer, exactly as its discovery document states it;
    /// the document must answer when the connection is set.
    #[schema(format = "uri")]
    pub issuer: String,
    #[schema(min_length = 1, max_length = 512)]
    pub client_id: String,
    /// Write-only: never returned.
    #[schema(value_type = String, min_length = 1, max_length = 4096)]
    pub client_secret: Secret,
    /// Defaults to `openid email profile`.
    pub scopes: Option<Vec<String>>,
    /// Require `email_verified=true` in the ID token (default true).
    pub require_email_verified: Option<bool>,
}

/// An organization's own OpenID connection, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DirectConnectionView {
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub require_email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<SsoConnectionRecord> for DirectConnectionView {
    fn from(c: SsoConnectionRecord) -> Self {
        Self {
            issuer: c.issuer,
            client_id: c.client_id,
            scopes: c.scopes,
            require_email_verified: c.require_email_verified,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Who is signed in to a Roster browser session.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub user_id: Uuid,
    pub email: String,
    pub organization_id: Uuid,
    pub organization_name: String,
    pub member_id: Uuid,
    pub role: Role,
    pub issuer: String,
    pub signed_in_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An ended session and where to end the provider's session too, when it offers that.
#[derive(Debug)]
pub struct LoggedOut {
    pub provider_logout: Option<url::Url>,
}

impl Roster {
    /// The OpenID relying party, when SSO is set up (for metrics and benchmarks).
    pub fn relying_party(&self) -> Option<&RelyingParty> {
        self.settings.sso.as_ref().map(|s| &s.rp)
    }

    pub(super) fn sso(&self) -> ServiceResult<&SsoPolicy> {
        self.settings.sso.as_ref().ok_or_else(|| ServiceError::Conflict("single sign-on is not set up".into()))
    }

    // ---- Product clients -------------------------------------------------

    /// Registers a product client of the actor's organization (Owner/Admin).
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn create_sso_client(&self, actor: &Actor, new: NewSsoClient) -> ServiceResult<CreatedSsoClient> {
        actor.require(Role::Admin)?;
        let uris = self.check_redirect_uris(&new.redirect_uris)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        let (client, secret) = new_client(Some(actor.org_id), new.name.as_str(), uris, &actor.id, now);
        tx.insert_sso_client(&client, &hash_token(secret.expose())).await?;
        tx.insert_audit(actor.audit(now, "sso_client.created", client.id, None::<&()>, Some(&client))).await?;
        tx.commit().await?;
        Ok(CreatedSsoClient { client, secret })
    }

    /// Registers a deployment-wide product client, which may sign users in to
    /// any organization (operator only, from the CLI).
    pub async fn create_deployment_sso_client(
        &self,
        name: &Name,
        redirect_uris: &[String],
        created_by: &str,
    ) -> ServiceResult<CreatedSsoClient> {
        let uris = self.check_redirect_uris(redirect_uris)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let (client, secret) = new_client(None, name.as_str(), uris, created_by, now);
        tx.insert_sso_client(&client, &hash_token(secret.expose())).await?;
        tx.commit().await?;
        Ok(CreatedSsoClient { client, secret })
    }

    /// The organization's product clients (`None`: the deployment-wide ones, for the operator).
    pub async fn list_sso_clients(&self, actor: Option<&Actor>) -> ServiceResult<Vec<SsoClient>> {
        if let Some(actor) = actor {
            actor.require(Role::Read)?;
        }
        Ok(self.store.read().await?.list_sso_clients(actor.map(|a| a.org_id)).await?)
    }

    /// Revokes a product client of the organization: its codes stop redeeming at once.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, client = %id))]
    pub async fn revoke_sso_client(&self, actor: &Actor, id: Uuid) -> ServiceResult<SsoClient> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        let (before, _) = tx
            .get_sso_client(id)
            .await?
            .filter(|(c, _)| c.org_id == Some(actor.org_id))
            .ok_or(ServiceError::NotFound("SSO client"))?;
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        tx.revoke_sso_client(id, now).await?;
        let after = SsoClient { revoked_at: Some(now), ..before.clone() };
        tx.insert_audit(actor.audit(now, "sso_client.revoked", id, Some(&before), Some(&after))).await?;
        tx.commit().await?;
        Ok(after)
    }

    fn check_redirect_uris(&self, uris: &[String]) -> ServiceResult<Vec<String>> {
        if uris.is_empty() || uris.len() > 20 {
            return Err(ServiceError::invalid("redirect_uris", "give between 1 and 20 redirect URIs"));
        }
        let dev = self.settings.sso.as_ref().is_some_and(|s| s.dev_mode);
        let mut out = Vec::new();
        for raw in uris {
            let url = url::Url::parse(raw)
                .map_err(|e| ServiceError::invalid("redirect_uris", format!("`{raw}` is not an absolute URL: {e}")))?;
            if url.fragment().is_some() {
                return Err(ServiceError::invalid("redirect_uris", format!("`{raw}` must not have a fragment")));
            }
            let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            match url.scheme() {
                "https" => {}
                "http" if dev || loopback => {}
                _ => {
                    return Err(ServiceError::invalid(
                        "redirect_uris",
                        format!("`{raw}` must be https (http only for loopback hosts)"),
                    ))
                }
            }
            if !out.contains(raw) {
                out.push(raw.clone());
            }
        }
        Ok(out)
    }

    // ---- Direct connections ----------------------------------------------

    /// Sets the organization's own OpenID connection; its discovery document
    /// must be reachable and state the same issuer.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn set_sso_connection(
        &self,
        actor: &Actor,
        input: DirectConnectionInput,
    ) -> ServiceResult<DirectConnectionView> {
        actor.require(Role::Admin)?;
        let sso = self.sso()?;
        crate::config::check_issuer(&input.issuer, sso.dev_mode).map_err(|m| ServiceError::invalid("issuer", m))?;
        if input.client_id.trim().is_empty() || input.client_id.len() > 512 {
            return Err(ServiceError::invalid("client_id", "must be 1 to 512 characters"));
        }
        if input.client_secret.expose().is_empty() || input.client_secret.expose().len() > 4096 {
            return Err(ServiceError::invalid("client_secret", "must be 1 to 4096 characters"));
        }
        let mut scopes = input.scopes.unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
        if scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return Err(ServiceError::invalid("scopes", "a scope is one non-empty word"));
        }
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        // Prove the provider answers before an organization depends on it.
        sso.rp.discover(&input.issuer).await.map_err(|e| ServiceError::invalid("issuer", e))?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        let before = tx.get_sso_connection(actor.org_id).await?;
        let record = SsoConnectionRecord {
            org_id: actor.org_id,
            issuer: input.issuer,
            client_id: input.client_id,
            client_secret: Secret::new(
                self.settings.sealing.seal(input.client_secret.expose(), &seal_context(actor.org_id)),
            ),
            scopes,
            require_email_verified: input.require_email_verified.unwrap_or(true),
            created_at: before.as_ref().map(|b| b.created_at).unwrap_or(now),
            updated_at: now,
        };
        tx.upsert_sso_connection(&record).await?;
        let before_view = before.map(DirectConnectionView::from);
        let view = DirectConnectionView::from(record);
        tx.insert_audit(actor.audit(now, "sso_connection.set", actor.org_id, before_view.as_ref(), Some(&view)))
            .await?;
        tx.commit().await?;
        Ok(view)
    }

    pub async fn sso_connection(&self, actor: &Actor) -> ServiceResult<DirectConnectionView> {
        actor.require(Role::Read)?;
        let mut tx = self.store.read().await?;
        let record = tx.get_sso_connection(actor.org_id).await?.ok_or(ServiceError::NotFound("SSO connection"))?;
        Ok(record.into())
    }

    /// Removes the organization's own connection; refused while SSO is
    /// enforced and no tenant connection would take over.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn delete_sso_connection(&self, actor: &Actor) -> ServiceResult<()> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let before = tx.get_sso_connection(org.id).await?.ok_or(ServiceError::NotFound("SSO connection"))?;
        if org.sso.enforce && !self.tenant_connection_serves(&org) {
            return Err(ServiceError::Conflict(
                "the organization enforces SSO; turn enforcement off or set a tenant ID before removing its connection"
                    .into(),
            ));
        }
        tx.delete_sso_connection(org.id).await?;
        let view = DirectConnectionView::from(before);
        tx.insert_audit(actor.audit(now, "sso_connection.removed", org.id, Some(&view), None::<&()>)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks the deployment's tenant connection once, at start: its
    /// provider must name, in its discovery document, exactly the issuer
    /// configured. `Ok` when there is no tenant connection.
    pub async fn check_tenant_connection(&self) -> Result<(), TenantConnectionProblem> {
        let Some(policy) = self.settings.sso.as_ref() else { return Ok(()) };
        let Some(tenant) = policy.tenant.as_ref() else { return Ok(()) };
        match policy.rp.advertised_issuer(&tenant.issuer).await {
            Ok(advertised) if advertised == tenant.issuer => Ok(()),
            Ok(advertised) => {
                Err(TenantConnectionProblem::WrongIssuer { configured: tenant.issuer.clone(), advertised })
            }
            Err(e) => Err(TenantConnectionProblem::Unreachable { issuer: tenant.issuer.clone(), cause: e.to_string() }),
        }
    }

    /// Checks that every sealed OpenID client secret opens with the
    /// configured keys, and counts those in clear or sealed with an older
    /// key. `Err` names the first that cannot be read: Roster must not start
    /// then, or that organization's sign-ins would fail.
    pub async fn check_sealed_secrets(&self) -> ServiceResult<SealedSecrets> {
        let mut read = self.store.read().await?;
        let mut report = SealedSecrets::default();
        for c in read.list_sso_connections().await? {
            let stored = c.client_secret.expose();
            if let Err(e) = self.settings.sealing.open(stored, &seal_context(c.org_id)) {
                return Err(ServiceError::invalid(
                    "secrets_key_file",
                    format!("the OpenID client secret of organization {} cannot be read: {e}", c.org_id),
                ));
            }
            report.count(stored, &self.settings.sealing);
        }
        for e in read.all_webhook_endpoints().await? {
            for stored in std::iter::once(&e.secret).chain(&e.previous_secret) {
                if let Err(err) = self.settings.sealing.open(stored, &webhook_seal_context(e.id)) {
                    return Err(ServiceError::invalid(
                        "secrets_key_file",
                        format!("the signing secret of webhook endpoint {} cannot be read: {err}", e.id),
                    ));
                }
                report.count(stored, &self.settings.sealing);
            }
        }
        Ok(report)
    }

    /// Reseals every OpenID client secret with the sealing key (the first in
    /// `secrets_key_file`): those in clear and those sealed with older keys.
    /// Answers how many were resealed.
    pub async fn reseal_secrets(&self) -> ServiceResult<usize> {
        if !self.settings.sealing.is_configured() {
            return Err(ServiceError::invalid("secrets_key_file", "no key is configured to seal with"));
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut resealed = 0;
        for mut c in tx.list_sso_connections().await? {
            if self.settings.sealing.is_current(c.client_secret.expose()) {
                continue;
            }
            let context = seal_context(c.org_id);
            let secret =
                self.settings.sealing.open(c.client_secret.expose(), &context).map_err(|e| {
                    ServiceError::invalid("secrets_key_file", format!("organization {}: {e}", c.org_id))
                })?;
            c.client_secret = Secret::new(self.settings.sealing.seal(&secret, &context));
            c.updated_at = now;
            tx.upsert_sso_connection(&c).await?;
            resealed += 1;
        }
        for mut e in tx.all_webhook_endpoints().await? {
            let context = webhook_seal_context(e.id);
            let mut changed = false;
            for stored in std::iter::once(&mut e.secret).chain(e.previous_secret.as_mut()) {
                if self.settings.sealing.is_current(stored) {
                    continue;
                }
                let secret = self.settings.sealing.open(stored, &context).map_err(|err| {
                    ServiceError::invalid("secrets_key_file", format!("webhook endpoint {}: {err}", e.id))
                })?;
                *stored = self.settings.sealing.seal(&secret, &context);
                changed = true;
                resealed += 1;
            }
            if changed {
                e.updated_at = now;
                tx.update_webhook_endpoint(&e).await?;
            }
        }
        tx.commit().await?;
        Ok(resealed)
    }

    /// True when the deployment's tenant connection can sign this organization in.
    pub(crate) fn tenant_connection_serves(&self, org: &Organization) -> bool {
        org.sso.tenant_id.is_some() && self.settings.sso.as_ref().is_some_and(|s| s.tenant.is_some())
    }

    /// The connection a login for `org` goes through: its own, else the tenant connection.
    pub(super) async fn connection_for(&self, tx: &mut dyn Tx, org: &Organization) -> Result<Connection, LoginError> {
        if let Some(c) = tx.get_sso_connection(org.id).await? {
            let secret = self.settings.sealing.open(c.client_secret.expose(), &seal_context(org.id)).map_err(|e| {
                tracing::error!(org = %org.id, error = %e, "the organization's OpenID client secret cannot be read");
                LoginError::new(500, "internal", "Roster could not complete the sign-in. Try again in a moment.")
            })?;
            return Ok(Connection {
                kind: ConnectionKind::Direct,
                issuer: c.issuer,
                client_id: c.client_id,
                client_secret: Secret::new(secret),
                scopes: c.scopes,
                require_email_verified: c.require_email_verified,
                tenant: None,
            });
        }
        let tenant = self.settings.sso.as_ref().and_then(|s| s.tenant.as_ref());
        match (&org.sso.tenant_id, tenant) {
            (Some(tenant_id), Some(t)) => Ok(Connection {
                kind: ConnectionKind::Tenant,
                issuer: t.issuer.clone(),
                client_id: t.client_id.clone(),
                client_secret: t.client_secret.clone(),
                scopes: t.scopes.clone(),
                require_email_verified: t.require_email_verified,
                tenant: Some(TenantRouting {
                    tenant_id: tenant_id.clone(),
                    param: t.tenant_param.clone(),
                    claim: t.tenant_claim.clone(),
                }),
            }),
            _ => Err(LoginError::new(
                409,
                "sso_not_configured",
                format!("{} has not set up single sign-on yet. Ask its administrator.", org.name),
            )),
        }
    }

    // ---- The login -------------------------------------------------------

    /// Starts a login: finds the organization and the product client, stores
    /// the attempt and returns the provider's authorization URL.
    #[tracing::instrument(skip_all)]
    pub async fn begin_login(&self, req: LoginRequest) -> Result<LoginStart, LoginError> {
        let sso = self.sso().map_err(|_| LoginError::new(404, "sso_disabled", "Single sign-on is not available."))?;
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let (org, login_hint) = match &req.target {
            LoginTarget::Email(email) => {
                let (org, _) = self.organization_for_email(email).await?.ok_or_else(|| {
                    let domain = email.domain();
                    LoginError::new(
                        404,
                        "domain_not_verified",
                        format!(
                            "No organization has verified the domain {domain}, so Roster cannot tell where {email} \
                             signs in. Use your organization's sign-in link, or ask its administrator to verify \
                             {domain}."
                        ),
                    )
                })?;
                (org, Some(email.as_str().to_string()))
            }
            LoginTarget::Organization(id) => {
                let org = tx
                    .get_org(*id)
                    .await?
                    .ok_or_else(|| LoginError::new(404, "unknown_organization", "There is no such organization."))?;
                (org, None)
            }
            LoginTarget::Tenant(t) => {
                let org = tx.find_org_by_tenant_id(t.as_str()).await?.ok_or_else(|| {
                    LoginError::new(
                        404,
                        "unknown_tenant",
                        format!("No organization uses the tenant ID {}.", t.as_str()),
                    )
                })?;
                (org, None)
            }
        };
        let client = pick_client(self.login_clients(&mut *tx, org.id).await?, req.client_id, &req.redirect_uri)?;
        let conn = self.connection_for(&mut *tx, &org).await?;
        drop(tx);
        let attempt = AttemptFor {
            org_id: org.id,
            client_id: client.id,
            redirect_uri: req.redirect_uri.clone(),
            product_state: req.state.clone(),
            login_hint,
        };
        self.start_attempt(sso, &conn, attempt, req.browser, now).await
    }

    /// Starts a test sign-in through the organization's connection as it is
    /// now, for a setup link (`link`) or an admin: the browser comes back to
    /// `result_url`, where the claims and Roster's decision are shown;
    /// nobody is signed in.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn begin_sso_test(
        &self,
        actor: &Actor,
        link: Option<Uuid>,
        result_url: &str,
        browser: Option<String>,
    ) -> Result<LoginStart, LoginError> {
        actor.require(Role::Admin).map_err(|e| LoginError::new(403, "forbidden", e.to_string()))?;
        let sso = self.sso().map_err(|_| LoginError::new(404, "sso_disabled", "Single sign-on is not available."))?;
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let org = tx
            .get_org(actor.org_id)
            .await?
            .ok_or_else(|| LoginError::new(404, "unknown_organization", "There is no such organization."))?;
        let conn = self.connection_for(&mut *tx, &org).await?;
        drop(tx);
        let attempt = AttemptFor {
            org_id: org.id,
            client_id: SETUP_TEST_CLIENT_ID,
            redirect_uri: result_url.to_string(),
            product_state: Some(
                serde_json::json!({"link": link, "by": actor.id, "kind": actor.kind.as_str()}).to_string(),
            ),
            login_hint: None,
        };
        self.start_attempt(sso, &conn, attempt, browser, now).await
    }

    /// Stores a login attempt through `conn` and returns the provider's authorization URL.
    async fn start_attempt(
        &self,
        sso: &SsoPolicy,
        conn: &Connection,
        req: AttemptFor,
        browser: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<LoginStart, LoginError> {
        let login_hint = req.login_hint;
        let state = generate_token("st");
        let nonce = generate_token("n");
        let verifier = generate_token("pkce");
        let browser = match browser.filter(|b| b.starts_with("rb_") && b.len() == 46) {
            Some(existing) => Secret::new(existing),
            None => generate_token("rb"),
        };
        let provider_url = sso
            .rp
            .authorization_url(
                conn,
                &sso.callback_url,
                state.expose(),
                nonce.expose(),
                verifier.expose(),
                login_hint.as_deref(),
            )
            .await
            .map_err(provider_unavailable)?;
        let attempt = SsoAttempt {
            id: Uuid::now_v7(),
            org_id: req.org_id,
            connection: conn.kind.as_str().to_string(),
            issuer: conn.issuer.clone(),
            nonce: nonce.expose().to_string(),
            pkce_verifier: verifier.expose().to_string(),
            client_id: req.client_id,
            redirect_uri: req.redirect_uri,
            product_state: req.product_state,
            login_hint,
            browser_hash: hash_token(browser.expose()),
            created_at: now,
            expires_at: now + sso.attempt_ttl,
            used_at: None,
        };
        let mut tx = self.store.begin().await?;
        tx.insert_sso_attempt(&attempt, &hash_token(state.expose())).await?;
        tx.commit().await?;
        metrics::counter!("roster_sso_logins_started_total", "connection" => conn.kind.as_str()).increment(1);
        Ok(LoginStart { provider_url, browser })
    }

    /// Finishes a login at the callback: checks the attempt and the browser,
    /// exchanges the code, verifies the ID token, resolves the membership,
    /// and returns the product's redirect with a one-time code.
    #[tracing::instrument(skip_all)]
    pub async fn complete_login(
        &self,
        params: CallbackParams,
        browser: Option<&str>,
        request_id: Option<String>,
    ) -> Result<Completed, LoginError> {
        let sso = self.sso().map_err(|_| LoginError::new(404, "sso_disabled", "Single sign-on is not available."))?;
        let now = self.clock.now();
        let state = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty() && s.len() <= 512)
            .ok_or_else(|| LoginError::new(400, "invalid_request", "The sign-in response has no state."))?;
        let attempt = self.store.read().await?.find_sso_attempt(&hash_token(state)).await?.ok_or_else(|| {
            LoginError::new(
                400,
                "unknown_login",
                "This sign-in response does not belong to a sign-in Roster started. Start again from the application.",
            )
        })?;
        let same_browser = browser.is_some_and(|b| hashes_match(&hash_token(b), &attempt.browser_hash));
        let refusal = if attempt.used_at.is_some() {
            Some(already_used())
        } else if attempt.expires_at <= now {
            Some(LoginError::new(
                400,
                "login_expired",
                "This sign-in took too long and has expired. Start again from the application.",
            ))
        } else if !same_browser {
            Some(LoginError::new(
                400,
                "browser_mismatch",
                "This sign-in was started in another browser (or its cookie is missing). Start again from the \
                 application in this browser.",
            ))
        } else {
            let mut tx = self.store.begin().await?;
            let first = tx.use_sso_attempt(attempt.id, now).await?;
            tx.commit().await?;
            (!first).then(already_used)
        };
        if let Some(err) = refusal {
            let hint = attempt.login_hint.as_deref();
            self.audit_login_failure(&attempt, request_id.clone(), err.code, &err.message, hint, None).await;
            return Err(err);
        }
        let mut read = self.store.read().await?;
        let org = read
            .get_org(attempt.org_id)
            .await?
            .ok_or_else(|| LoginError::new(404, "unknown_organization", "The organization no longer exists."))?;
        let conn = self.connection_for(&mut *read, &org).await?;
        drop(read);
        if attempt.client_id == SETUP_TEST_CLIENT_ID {
            let callback = TestCallback { sso, attempt: &attempt, org: &org, conn: &conn, params: &params };
            return self.finish_sso_test(callback, request_id, now).await;
        }
        if let Some(message) = provider_error(&params) {
            self.audit_login_failure(
                &attempt,
                request_id.clone(),
                "provider_error",
                &message,
                attempt.login_hint.as_deref(),
                None,
            )
            .await;
            return Err(LoginError::new(403, "provider_error", message));
        }
        if conn.issuer != attempt.issuer || conn.kind.as_str() != attempt.connection {
            let message = "The organization's SSO settings changed during the sign-in. Start again.";
            self.audit_login_failure(
                &attempt,
                request_id.clone(),
                "connection_changed",
                message,
                attempt.login_hint.as_deref(),
                None,
            )
            .await;
            return Err(LoginError::new(409, "connection_changed", message));
        }
        let code = params
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| LoginError::new(400, "invalid_request", "The sign-in response has no code."))?;
        let identity = match sso.rp.finish(&conn, &sso.callback_url, code, &attempt.pkce_verifier, &attempt.nonce).await
        {
            Ok(identity) => identity,
            Err(e) => {
                let err = oidc_refusal(e);
                self.audit_login_failure(
                    &attempt,
                    request_id.clone(),
                    err.code,
                    &err.message,
                    attempt.login_hint.as_deref(),
                    None,
                )
                .await;
                return Err(err);
            }
        };
        let email = match Email::parse(&identity.email) {
            Ok(e) => e,
            Err(_) => {
                let message =
                    format!("The identity provider sent an email address Roster cannot use: {}", identity.email);
                self.audit_login_failure(
                    &attempt,
                    request_id.clone(),
                    "invalid_email",
                    &message,
                    None,
                    Some(&identity.subject),
                )
                .await;
                return Err(LoginError::new(403, "invalid_email", message));
            }
        };
        let actor = Actor {
            kind: ActorKind::Sso,
            id: format!("sso:{}", email.normalized()),
            org_id: org.id,
            role: Role::Read,
            request_id: request_id.clone(),
        };
        match self.sign_in(&actor, &attempt, &conn, &identity, &email, sso, now).await {
            Ok(done) => {
                metrics::counter!("roster_sso_logins_total", "outcome" => "success").increment(1);
                Ok(Completed::SignedIn(done))
            }
            Err(err) => {
                metrics::counter!("roster_sso_logins_total", "outcome" => err.code).increment(1);
                if err.status != 500 {
                    self.audit_login_failure(
                        &attempt,
                        request_id.clone(),
                        err.code,
                        &err.message,
                        Some(email.as_str()),
                        Some(&identity.subject),
                    )
                    .await;
                }
                if err.code == "no_free_seat" {
                    self.notify_no_free_seat(org.id, email.as_str(), "single sign-on").await;
                }
                Err(err)
            }
        }
    }

    /// Resolves the membership and issues the product's code and Roster's session, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn sign_in(
        &self,
        actor: &Actor,
        attempt: &SsoAttempt,
        conn: &Connection,
        identity: &crate::sso::Identity,
        email: &Email,
        sso: &SsoPolicy,
        now: DateTime<Utc>,
    ) -> Result<LoginDone, LoginError> {
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, attempt.org_id).await?;
        let (member, how) = resolve_membership(&mut *tx, actor, &org, email, &identity.tenant_roles, now).await?;
        let profile = SsoProfile {
            user_id: member.user_id,
            email: email.as_str().to_string(),
            name: identity.name.clone(),
            organization_id: org.id,
            organization_name: org.name.clone(),
            member_id: member.id,
            role: member.role,
            member_status: member.status,
            method: SignInMethod::Sso,
            connection: Some(conn.kind),
            issuer: identity.issuer.clone(),
            idp_subject: identity.subject.clone(),
            sso_enforced: org.sso.enforce,
        };
        let code = issue_code(&mut *tx, attempt.client_id, &profile, now + sso.code_ttl, now).await?;
        let origin = SessionOrigin {
            issuer: identity.issuer.clone(),
            client_id: conn.client_id.clone(),
            id_token: Some(identity.id_token.clone()),
        };
        let (session, session_expires) = open_session(&mut *tx, &member, origin, sso.session_ttl, now).await?;
        let detail = serde_json::json!({
            "email": email.as_str(),
            "how": how,
            "connection": conn.kind,
            "issuer": identity.issuer,
            "subject": identity.subject,
            "role": member.role,
            "client_id": attempt.client_id,
        });
        tx.insert_audit(actor.audit(now, "sso.login", member.id, None::<&()>, Some(&detail))).await?;
        tx.commit().await?;
        let redirect = product_redirect(&attempt.redirect_uri, &code, attempt.product_state.as_deref())?;
        Ok(LoginDone { redirect, session, session_expires })
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit_login_failure(
        &self,
        attempt: &SsoAttempt,
        request_id: Option<String>,
        code: &str,
        message: &str,
        email: Option<&str>,
        subject: Option<&str>,
    ) {
        let now = self.clock.now();
        let actor = Actor {
            kind: ActorKind::Sso,
            id: email.map(|e| format!("sso:{}", e.to_lowercase())).unwrap_or_else(|| "sso:unknown".into()),
            org_id: attempt.org_id,
            role: Role::Read,
            request_id,
        };
        let detail = serde_json::json!({
            "reason": code,
            "message": message,
            "email": email,
            "subject": subject,
            "connection": attempt.connection,
            "issuer": attempt.issuer,
        });
        let target = email.unwrap_or("unknown").to_lowercase();
        let write = async {
            let mut tx = self.store.begin().await?;
            tx.insert_audit(actor.audit(now, "sso.login_refused", target, None::<&()>, Some(&detail))).await?;
            tx.commit().await
        };
        if let Err(e) = write.await {
            tracing::error!(error = ?e, "could not audit a refused sign-in");
        }
    }

    // ---- The product's code exchange ---------------------------------------

    /// Redeems a one-time code for the signed-in profile. The code must be
    /// the client's, unexpired and unused; the member must still be active.
    #[tracing::instrument(skip_all)]
    pub async fn redeem_code(
        &self,
        code: &str,
        client_id: Option<Uuid>,
        client_secret: &str,
    ) -> Result<SsoProfile, RedeemError> {
        let now = self.clock.now();
        let code_hash = hash_token(code);
        let mut tx = self.store.begin().await?;
        let record = tx
            .find_sso_code(&code_hash)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(|| RedeemError::InvalidGrant("the code is not valid".into()))?;
        if client_id.is_some_and(|id| id != record.client_id) {
            return Err(RedeemError::InvalidClient);
        }
        let (client, secret_hash) =
            tx.get_sso_client(record.client_id).await.map_err(ServiceError::from)?.ok_or(RedeemError::InvalidClient)?;
        if client.revoked_at.is_some() || !hashes_match(&hash_token(client_secret), &secret_hash) {
            return Err(RedeemError::InvalidClient);
        }
        if record.used_at.is_some() {
            return Err(RedeemError::InvalidGrant("the code was already redeemed".into()));
        }
        if record.expires_at <= now {
            return Err(RedeemError::InvalidGrant("the code has expired".into()));
        }
        if !tx.use_sso_code(&code_hash, now).await.map_err(ServiceError::from)? {
            return Err(RedeemError::InvalidGrant("the code was already redeemed".into()));
        }
        let member = tx.get_member(record.org_id, record.member_id).await.map_err(ServiceError::from)?;
        let mut profile: SsoProfile = serde_json::from_value(record.profile)
            .map_err(|e| ServiceError::Store(crate::store::StoreError::Other(e.into())))?;
        match member {
            Some(m) if m.status == MemberStatus::Active => {
                profile.role = m.role;
                profile.member_status = m.status;
            }
            _ => return Err(RedeemError::InvalidGrant("the member is no longer active".into())),
        }
        tx.commit().await.map_err(ServiceError::from)?;
        Ok(profile)
    }

    // ---- Roster's own browser session --------------------------------------

    /// The live session a cookie names, with who is signed in.
    pub async fn session(&self, token: &str) -> ServiceResult<SessionView> {
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let session = tx
            .find_sso_session(&hash_token(token))
            .await?
            .filter(|s| s.ended_at.is_none() && s.expires_at > now)
            .ok_or(ServiceError::NotFound("session"))?;
        let member = tx
            .get_member(session.org_id, session.member_id)
            .await?
            .filter(|m| m.status == MemberStatus::Active)
            .ok_or(ServiceError::NotFound("session"))?;
        let org = tx.get_org(session.org_id).await?.ok_or(ServiceError::NotFound("session"))?;
        Ok(SessionView {
            user_id: member.user_id,
            // A member signs in by email, and a user's email is never taken away.
            email: member.label(),
            organization_id: org.id,
            organization_name: org.name,
            member_id: member.id,
            role: member.role,
            issuer: session.issuer,
            signed_in_at: session.created_at,
            expires_at: session.expires_at,
        })
    }

    /// Ends the session a cookie names, and says where to end the provider's session.
    pub async fn logout(&self, token: &str, post_logout_redirect: Option<&str>) -> ServiceResult<LoggedOut> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let Some(session) = tx.find_sso_session(&hash_token(token)).await? else {
            return Ok(LoggedOut { provider_logout: None });
        };
        let ended = tx.end_sso_session(session.id, now).await?;
        if ended {
            let actor = Actor {
                kind: ActorKind::Sso,
                id: format!("session:{}", session.id),
                org_id: session.org_id,
                role: Role::Read,
                request_id: None,
            };
            tx.insert_audit(actor.audit(now, "sso.logout", session.member_id, None::<&()>, None::<&()>)).await?;
        }
        tx.commit().await?;
        // A session begun by an emailed link has no provider session to end.
        let provider_logout = match (&self.settings.sso, ended && session.id_token.is_some()) {
            (Some(sso), true) => {
                sso.rp
                    .end_session_url(
                        &session.issuer,
                        &session.client_id,
                        session.id_token.as_deref(),
                        post_logout_redirect,
                    )
                    .await
            }
            _ => None,
        };
        Ok(LoggedOut { provider_logout })
    }

    /// Deletes expired attempts, codes and sessions older than a day.
    pub async fn purge_sso(&self) -> ServiceResult<u64> {
        let before = self.clock.now() - Duration::days(1);
        let mut tx = self.store.begin().await?;
        let mut n = tx.purge_sso(before).await?;
        n += tx.purge_webhook_deliveries(self.clock.now() - Duration::days(WEBHOOK_LOG_DAYS)).await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// The issuer of a session opened by switching organization in the portal.
pub const ORGANIZATION_SWITCH_ISSUER: &str = "organization_switch";

/// Where a Roster session came from: the identity provider's login (for
/// its logout later), or an emailed link.
pub(super) struct SessionOrigin {
    pub issuer: String,
    pub client_id: String,
    pub id_token: Option<String>,
}

impl SessionOrigin {
    /// A session begun by a link Roster emailed, with no provider session behind it.
    pub(super) fn email_link() -> Self {
        Self { issuer: EMAIL_LINK_ISSUER.to_string(), client_id: String::new(), id_token: None }
    }

    /// A session a signed-in person opened by switching organization in the portal.
    pub(super) fn switched() -> Self {
        Self { issuer: ORGANIZATION_SWITCH_ISSUER.to_string(), client_id: String::new(), id_token: None }
    }
}

/// Opens a Roster session for the member, stored by the hash of its cookie;
/// returns the cookie's value and when the session ends.
pub(super) async fn open_session(
    tx: &mut dyn Tx,
    member: &Member,
    origin: SessionOrigin,
    ttl: Duration,
    now: DateTime<Utc>,
) -> ServiceResult<(Secret, DateTime<Utc>)> {
    let token = generate_token("roster_sess");
    let session = SsoSession {
        id: Uuid::now_v7(),
        org_id: member.org_id,
        member_id: member.id,
        issuer: origin.issuer,
        client_id: origin.client_id,
        id_token: origin.id_token,
        created_at: now,
        expires_at: now + ttl,
        ended_at: None,
        last_seen_at: Some(now),
    };
    tx.insert_sso_session(&session, &hash_token(token.expose())).await?;
    Ok((token, session.expires_at))
}

/// Stores a one-time code for the product client that redeems it for `profile` until `expires_at`.
pub(super) async fn issue_code(
    tx: &mut dyn Tx,
    client_id: Uuid,
    profile: &SsoProfile,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ServiceResult<Secret> {
    let code = generate_token("roster_code");
    let record = SsoCode {
        client_id,
        org_id: profile.organization_id,
        member_id: profile.member_id,
        profile: serde_json::to_value(profile).unwrap_or_default(),
        created_at: now,
        expires_at,
        used_at: None,
    };
    tx.insert_sso_code(&hash_token(code.expose()), &record).await?;
    Ok(code)
}

/// The product's redirect URI with the one-time code and the product's state.
pub(super) fn product_redirect(redirect_uri: &str, code: &Secret, state: Option<&str>) -> Result<url::Url, LoginError> {
    let mut redirect = url::Url::parse(redirect_uri)
        .map_err(|_| LoginError::new(500, "internal", "The registered redirect URI is not valid."))?;
    {
        let mut q = redirect.query_pairs_mut();
        q.append_pair("code", code.expose());
        if let Some(state) = state {
            q.append_pair("state", state);
        }
    }
    Ok(redirect)
}

fn new_client(
    org_id: Option<Uuid>,
    name: &str,
    redirect_uris: Vec<String>,
    created_by: &str,
    now: DateTime<Utc>,
) -> (SsoClient, Secret) {
    let client = SsoClient {
        id: Uuid::now_v7(),
        org_id,
        name: name.to_string(),
        redirect_uris,
        created_by: created_by.to_string(),
        created_at: now,
        revoked_at: None,
    };
    (client, generate_token("roster_cs"))
}

fn already_used() -> LoginError {
    LoginError::new(400, "login_already_used", "This sign-in was already completed. Start again from the application.")
}

fn provider_unavailable(e: OidcError) -> LoginError {
    tracing::warn!(error = %e, "identity provider unavailable");
    LoginError::new(502, "provider_unavailable", format!("{e}. Try again in a moment."))
}

/// The product client a login is for: the one named, or the one whose
/// registered redirect URIs include `redirect_uri` (the organization's own
/// before deployment-wide ones). Never redirects to an unregistered URI.
pub(super) fn pick_client(
    clients: Vec<SsoClient>,
    wanted: Option<Uuid>,
    redirect_uri: &str,
) -> Result<SsoClient, LoginError> {
    let unregistered = || {
        LoginError::new(
            400,
            "redirect_uri_not_registered",
            "The application asked to return to an address that is not registered with Roster.",
        )
    };
    let mut matching: Vec<SsoClient> =
        clients.into_iter().filter(|c| c.redirect_uris.iter().any(|u| u == redirect_uri)).collect();
    if let Some(id) = wanted {
        return matching.into_iter().find(|c| c.id == id).ok_or_else(unregistered);
    }
    if matching.iter().any(|c| c.org_id.is_some()) {
        matching.retain(|c| c.org_id.is_some());
    }
    match matching.len() {
        0 => Err(unregistered()),
        1 => Ok(matching.remove(0)),
        _ => Err(LoginError::new(
            400,
            "ambiguous_client",
            "Several applications registered this redirect address; the application must send its client_id.",
        )),
    }
}

/// Who the signing-in email is in the organization, admitting them when an
/// invitation or auto-assignment allows; the reason in words when not.
/// The provider's own refusal the callback carries (`error`), in words.
pub(super) fn provider_error(params: &CallbackParams) -> Option<String> {
    let error = params.error.as_deref()?;
    let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    let detail: String =
        params.error_description.as_deref().unwrap_or("").chars().filter(|c| !c.is_control()).take(300).collect();
    Some(if detail.is_empty() {
        format!("The identity provider did not sign you in ({error}).")
    } else {
        format!("The identity provider did not sign you in ({error}: {detail}).")
    })
}

/// Why a code exchange or ID token check ended the sign-in.
pub(super) fn oidc_refusal(e: OidcError) -> LoginError {
    match &e {
        OidcError::Provider(_) => provider_unavailable(e),
        OidcError::Refused(m) => {
            LoginError::new(403, "provider_refused", format!("The identity provider refused the sign-in: {m}"))
        }
        OidcError::InvalidToken(m) => LoginError::new(
            403,
            "invalid_id_token",
            format!("The identity provider's answer could not be trusted: {m}"),
        ),
        OidcError::Claims { code, message } => LoginError::new(403, code, message.clone()),
    }
}

pub(super) async fn resolve_membership(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    email: &Email,
    tenant_roles: &[String],
    now: DateTime<Utc>,
) -> Result<(Member, &'static str), LoginError> {
    let person = tx.find_person(org.id, email).await?;
    let existing = person.member.clone();
    let ask = format!("Ask an administrator of {}.", org.name);
    match existing.as_ref().map(|m| m.status) {
        Some(MemberStatus::Active) => {
            // The tenant roles of this login are a role source from now on,
            // and the login brings the role in line with every source.
            let mut member = existing.expect("checked above");
            if member.sso_roles != tenant_roles {
                member.sso_roles = tenant_roles.to_vec();
                member.updated_at = now;
                tx.update_member(&member).await?;
            }
            if let Some(changed) = recompute_roles(tx, actor, org, &[member.id], now).await?.pop() {
                member = changed;
            }
            return Ok((member, "member"));
        }
        Some(MemberStatus::Suspended) => {
            return Err(LoginError::new(
                403,
                "member_suspended",
                format!("Your membership of {} is suspended. {ask}", org.name),
            ))
        }
        _ => {}
    }
    if person.invitation.as_ref().is_some_and(|i| i.expires_at > now) {
        // The invitation's role becomes the member's manual role.
        let member = insert_active_member(tx, actor, org, email, person, None, tenant_roles, MemberSource::Invite, now)
            .await
            .map_err(|e| seat_or_internal(e, org))?;
        return Ok((member, "invitation_accepted"));
    }
    if existing.as_ref().is_some_and(|m| m.status == MemberStatus::Deprovisioned) {
        return Err(LoginError::new(403, "member_removed", format!("You were removed from {}. {ask}", org.name)));
    }
    let domain = email.domain();
    let verified = tx.find_verified_domain(&domain).await?.is_some_and(|d| d.org_id == org.id);
    if !verified {
        return Err(LoginError::new(
            403,
            "not_a_member",
            format!(
                "{email} is not a member of {}, has no invitation, and {domain} is not a verified domain of {}. {ask}",
                org.name, org.name
            ),
        ));
    }
    if !org.sso.auto_assign {
        return Err(LoginError::new(
            403,
            "not_a_member",
            format!("{email} is not a member of {} and has no invitation. {ask}", org.name),
        ));
    }
    let member = insert_active_member(tx, actor, org, email, person, None, tenant_roles, MemberSource::Sso, now)
        .await
        .map_err(|e| seat_or_internal(e, org))?;
    Ok((member, "auto_assigned"))
}

pub(super) fn seat_or_internal(e: ServiceError, org: &Organization) -> LoginError {
    match e {
        ServiceError::SeatLimitReached { purchased, used, .. } => LoginError::new(
            403,
            "no_free_seat",
            format!(
                "{} has no free seat ({used} of {purchased} in use), so you cannot join yet. Ask an administrator of {} \
                 to free or buy a seat.",
                org.name, org.name
            ),
        ),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(org: Option<Uuid>, uris: &[&str]) -> SsoClient {
        SsoClient {
            id: Uuid::now_v7(),
            org_id: org,
            name: "app".into(),
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            created_by: "t".into(),
            created_at: DateTime::<Utc>::MIN_UTC,
            revoked_at: None,
        }
    }

    #[test]
    fn clients_are_picked_by_exact_redirect_uri() {
        let org = Uuid::now_v7();
        let wide = client(None, &["https://app.example/cb"]);
        let own = client(Some(org), &["https://app.example/cb", "https://app.example/cb2"]);
        let all = vec![wide.clone(), own.clone()];
        assert_eq!(pick_client(all.clone(), None, "https://app.example/cb").unwrap().id, own.id);
        assert_eq!(pick_client(all.clone(), Some(wide.id), "https://app.example/cb").unwrap().id, wide.id);
        assert_eq!(
            pick_client(all.clone(), None, "https://app.example/cb/").unwrap_err().code,
            "redirect_uri_not_registered"
        );
        assert_eq!(
            pick_client(all.clone(), Some(wide.id), "https://app.example/cb2").unwrap_err().code,
            "redirect_uri_not_registered"
        );
        let two = vec![client(None, &["https://x/cb"]), client(None, &["https://x/cb"])];
        assert_eq!(pick_client(two, None, "https://x/cb").unwrap_err().code, "ambiguous_client");
    }
}
