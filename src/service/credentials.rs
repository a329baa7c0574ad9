//! Bearer credentials: admin API keys (carrying a role) and SCIM tokens.
//! Only a hash is stored; the secret is returned once, at creation.

use super::*;
use crate::model::*;
use crate::secrets::{generate_token, hash_token, hashes_match, Secret};
use crate::store::Credential;
use chrono::{DateTime, Duration, Utc};

/// How stale `last_used_at` may get before a use writes it again; keeps
/// authentication from writing on every request.
pub(super) const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

/// A new credential and its secret (shown once).
#[derive(Debug)]
pub struct CreatedCredential {
    pub credential: Credential,
    pub secret: Secret,
}

/// What an admin asks for when creating a credential.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub kind: CredentialKind,
    pub name: Name,
    /// Required for API keys; must be empty for SCIM tokens.
    pub role: Option<Role>,
    pub expires_in_days: Option<u32>,
}

impl Roster {
    /// Creates an API key or SCIM token (Owner and Admin). An API key's role
    /// cannot exceed the creator's.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, kind = %new.kind))]
    pub async fn create_credential(&self, actor: &Actor, new: NewCredential) -> ServiceResult<CreatedCredential> {
        actor.require(Role::Admin)?;
        let role = match (new.kind, new.role) {
            (CredentialKind::ApiKey, Some(role)) => {
                actor.require(role)?;
                Some(role)
            }
            (CredentialKind::ApiKey, None) => return Err(ServiceError::invalid("role", "an API key needs a role")),
            (CredentialKind::ScimToken, Some(_)) => {
                return Err(ServiceError::invalid("role", "a SCIM token has no role"))
            }
            (CredentialKind::ScimToken, None) => None,
        };
        let expires_at = match new.expires_in_days {
            Some(0) | Some(3651..) => {
                return Err(ServiceError::invalid("expires_in_days", "must be between 1 and 3650"))
            }
            Some(days) => Some(self.clock.now() + Duration::days(days.into())),
            None => None,
        };
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        let (credential, secret) =
            insert_credential(&mut *tx, actor, new.kind, new.name.as_str(), role, expires_at, now).await?;
        tx.commit().await?;
        Ok(CreatedCredential { credential, secret })
    }

    pub async fn list_credentials(&self, actor: &Actor, kind: CredentialKind) -> ServiceResult<Vec<Credential>> {
        actor.require(Role::Read)?;
        Ok(self.store.read().await?.list_credentials(actor.org_id, kind).await?)
    }

    /// Revokes a credential; it stops working at once.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, credential = %id))]
    pub async fn revoke_credential(&self, actor: &Actor, kind: CredentialKind, id: Uuid) -> ServiceResult<Credential> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        let before = tx.get_credential(actor.org_id, kind, id).await?.ok_or(ServiceError::NotFound("credential"))?;
        if let Some(role) = before.role {
            // An Admin cannot take away an Owner's key.
            actor.require(role)?;
        }
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        let mut cred = before.clone();
        cred.revoked_at = Some(now);
        tx.update_credential(&cred).await?;
        let action = format!("{kind}.revoked");
        tx.insert_audit(actor.audit(now, &action, cred.id, Some(&before), Some(&cred))).await?;
        tx.commit().await?;
        Ok(cred)
    }

    /// The live credential of `kind` this bearer token belongs to, if any.
    /// Unknown, revoked, expired and wrong-kind tokens all answer `None`.
    pub async fn authenticate(&self, kind: CredentialKind, token: &str) -> ServiceResult<Option<Credential>> {
        let hash = hash_token(token);
        let found = self.store.lookup().await?.find_credential_by_hash(&hash).await?;
        let Some((mut cred, stored)) = found else { return Ok(None) };
        let now = self.clock.now();
        let live = hashes_match(&stored, &hash)
            && cred.kind == kind
            && cred.revoked_at.is_none()
            && cred.expires_at.is_none_or(|e| e > now);
        if !live {
            return Ok(None);
        }
        if cred.last_used_at.is_none_or(|t| now - t >= LAST_USED_RESOLUTION) {
            cred.last_used_at = Some(now);
            let mut tx = self.store.begin().await?;
            tx.update_credential(&cred).await?;
            tx.commit().await?;
        }
        Ok(Some(cred))
    }
}

/// Writes a new credential and its audit record in `tx`.
pub(crate) async fn insert_credential(
    tx: &mut dyn Tx,
    actor: &Actor,
    kind: CredentialKind,
    name: &str,
    role: Option<Role>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ServiceResult<(Credential, Secret)> {
    let prefix = match kind {
        CredentialKind::ApiKey => "roster_ak",
        CredentialKind::ScimToken => "roster_scim",
    };
    let secret = generate_token(prefix);
    let credential = Credential {
        id: Uuid::now_v7(),
        org_id: actor.org_id,
        kind,
        name: name.to_string(),
        role,
        created_by: actor.id.clone(),
        created_at: now,
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    tx.insert_credential(&credential, &hash_token(secret.expose())).await?;
    let action = format!("{kind}.created");
    tx.insert_audit(actor.audit(now, &action, credential.id, None::<&()>, Some(&credential))).await?;
    Ok((credential, secret))
}
