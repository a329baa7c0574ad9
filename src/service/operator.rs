//! The deployment's operator: keys for the product's back office and billing
//! system (`roster operator-key create`), and organizations managed across
//! the deployment — created, found by tenant ID or domain, changed (seats,
//! plan, features) and deleted. Acting inside one organization, the operator
//! goes through the same use cases as its Owners, audited as the operator.

use super::credentials::LAST_USED_RESOLUTION;
use super::*;
use crate::domains::DomainName;
use crate::model::*;
use crate::secrets::{generate_token, hash_token, hashes_match, Secret};
use crate::store::{Features, OperatorKey, Organization};
use chrono::Duration;

/// A new operator key and its secret (shown once).
#[derive(Debug)]
pub struct CreatedOperatorKey {
    pub key: OperatorKey,
    pub secret: Secret,
}

/// What the operator changes of an organization; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorOrganizationChange {
    pub name: Option<Name>,
    /// `null` clears the contact email.
    #[serde(default, deserialize_with = "crate::model::present")]
    #[schema(value_type = Option<String>, format = "email")]
    pub contact_email: Option<Option<Email>>,
    pub plan: Option<Plan>,
    #[schema(minimum = 0, maximum = 1_000_000)]
    #[serde(default, with = "crate::model::whole_number::option")]
    pub purchased: Option<i64>,
    pub seat_policy: Option<SeatPolicy>,
    pub seat_enforcement: Option<SeatEnforcement>,
    pub features: Option<Features>,
}

/// How the operator looks an organization up.
#[derive(Debug, Clone, Default)]
pub struct OrganizationLookup {
    /// Its SSO tenant ID.
    pub tenant_id: Option<TenantId>,
    /// A domain it verified.
    pub domain: Option<DomainName>,
}

impl Roster {
    /// Creates an operator key; its secret is shown once.
    pub async fn create_operator_key(
        &self,
        by: &Operator,
        name: &Name,
        expires_in_days: Option<u32>,
    ) -> ServiceResult<CreatedOperatorKey> {
        let now = self.clock.now();
        let expires_at = match expires_in_days {
            Some(0) | Some(3651..) => {
                return Err(ServiceError::invalid("expires_in_days", "must be between 1 and 3650"))
            }
            Some(days) => Some(now + Duration::days(days.into())),
            None => None,
        };
        let secret = generate_token("roster_op");
        let key = OperatorKey {
            id: Uuid::now_v7(),
            name: name.as_str().to_string(),
            created_by: by.id.clone(),
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        let mut tx = self.store.begin().await?;
        tx.insert_operator_key(&key, &hash_token(secret.expose())).await?;
        tx.commit().await?;
        tracing::info!(key = %key.id, name = %key.name, by = %by.id, "operator key created");
        Ok(CreatedOperatorKey { key, secret })
    }

    pub async fn list_operator_keys(&self) -> ServiceResult<Vec<OperatorKey>> {
        Ok(self.store.read().await?.list_operator_keys().await?)
    }

    /// Revokes an operator key; it stops working at once.
    pub async fn revoke_operator_key(&self, by: &Operator, id: Uuid) -> ServiceResult<OperatorKey> {
        let mut tx = self.store.begin().await?;
        let mut key = tx
            .list_operator_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(ServiceError::NotFound("operator key"))?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(self.clock.now());
            tx.update_operator_key(&key).await?;
            tx.commit().await?;
            tracing::info!(key = %key.id, by = %by.id, "operator key revoked");
        }
        Ok(key)
    }

    /// The live operator key this bearer token is, if any.
    pub async fn authenticate_operator(&self, token: &str) -> ServiceResult<Option<OperatorKey>> {
        let hash = hash_token(token);
        let Some((mut key, stored)) = self.store.lookup().await?.find_operator_key_by_hash(&hash).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if !hashes_match(&stored, &hash) || key.revoked_at.is_some() || key.expires_at.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        if key.last_used_at.is_none_or(|t| now - t >= LAST_USED_RESOLUTION) {
            key.last_used_at = Some(now);
            let mut tx = self.store.begin().await?;
            tx.update_operator_key(&key).await?;
            tx.commit().await?;
        }
        Ok(Some(key))
    }

    /// Refuses an organization id that names none (404), for the operator
    /// naming the organization it acts on.
    pub async fn organization_exists(&self, id: Uuid) -> ServiceResult<()> {
        let mut tx = self.store.lookup().await?;
        tx.get_org(id).await?.map(|_| ()).ok_or(ServiceError::NotFound("organization"))
    }

    /// Organizations, all or those a tenant ID or verified domain names.
    pub async fn find_organizations(&self, lookup: &OrganizationLookup) -> ServiceResult<Vec<Organization>> {
        let mut tx = self.store.read().await?;
        let mut found: Option<Vec<Organization>> = None;
        if let Some(tenant) = &lookup.tenant_id {
            found = Some(tx.find_org_by_tenant_id(tenant.as_str()).await?.into_iter().collect());
        }
        if let Some(domain) = &lookup.domain {
            let owner = match tx.find_verified_domain(domain.as_str()).await? {
                Some(d) => tx.get_org(d.org_id).await?,
                None => None,
            };
            let owner: Vec<Organization> = owner.into_iter().collect();
            found = Some(match found {
                Some(by_tenant) => by_tenant.into_iter().filter(|o| owner.iter().any(|d| d.id == o.id)).collect(),
                None => owner,
            });
        }
        match found {
            Some(orgs) => Ok(orgs),
            None => Ok(tx.list_orgs().await?),
        }
    }

    /// Changes what the operator sells and names: general settings, plan,
    /// seats and features, in one transaction with one audit record per
    /// kind of change (seats as `seats.updated`, an event).
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn change_organization_as_operator(
        &self,
        actor: &Actor,
        change: OperatorOrganizationChange,
    ) -> ServiceResult<Organization> {
        if !actor.is_operator() {
            return Err(ServiceError::OperatorOnly("only the deployment's operator changes this".into()));
        }
        let purchased =
            change.purchased.map(|p| parse_seats(p).map_err(|e| ServiceError::invalid("purchased", e))).transpose()?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let before = lock_org(&mut *tx, actor.org_id).await?;
        let mut org = before.clone();
        if let Some(name) = change.name {
            org.name = name.as_str().to_string();
        }
        if let Some(contact) = change.contact_email {
            org.contact_email = contact.map(String::from);
        }
        if let Some(plan) = change.plan {
            org.plan = plan;
        }
        org.purchased_seats = purchased.unwrap_or(org.purchased_seats);
        org.seat_policy = change.seat_policy.unwrap_or(org.seat_policy);
        org.seat_enforcement = change.seat_enforcement.unwrap_or(org.seat_enforcement);
        org.features = change.features.unwrap_or(org.features);
        if org == before {
            return Ok(before);
        }
        org.updated_at = now;
        tx.update_org(&org).await?;
        let general = |o: &Organization| (o.name.clone(), o.contact_email.clone(), o.plan);
        if general(&org) != general(&before) {
            tx.insert_audit(actor.audit(now, "organization.updated", org.id, Some(&before), Some(&org))).await?;
        }
        if org.features != before.features {
            let action = "organization.features_updated";
            tx.insert_audit(actor.audit(now, action, org.id, Some(&before.features), Some(&org.features))).await?;
        }
        let seats = |o: &Organization| (o.purchased_seats, o.seat_policy, o.seat_enforcement);
        if seats(&org) != seats(&before) {
            let after = Seats::of(&org, tx.seat_usage(org.id, now).await?);
            tx.insert_audit(seats_updated(actor, now, &before, &after)).await?;
            metrics::gauge!("roster_seats_overage", "org" => org.id.to_string()).set(after.overage as f64);
        }
        tx.commit().await?;
        Ok(org)
    }
}
