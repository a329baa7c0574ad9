//! Organizations: creation with a first Owner, general settings, billing
//! plan, features, SSO settings, deletion.

use super::*;
use crate::model::*;
use crate::roles::derive_role;
use crate::secrets::Secret;
use crate::store::{
    BillingRequest, Credential, Features, Invitation, Member, Organization, Person, SsoSettings, StoreError, User,
};

/// What `roster org create` asks for.
#[derive(Debug, Clone)]
pub struct NewOrganization {
    pub name: Name,
    pub seats: i64,
    pub owner_email: Email,
    pub plan: Plan,
    pub contact_email: Option<Email>,
}

/// A new organization, its first Owner and the Owner API key (shown once).
#[derive(Debug)]
pub struct CreatedOrganization {
    pub organization: Organization,
    pub owner: Member,
    pub api_key: Credential,
    pub api_key_secret: Secret,
}

/// A change to the general settings and billing plan; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationChange {
    pub name: Option<Name>,
    /// `null` clears the contact email.
    #[serde(default, deserialize_with = "crate::model::present")]
    #[schema(value_type = Option<String>, format = "email")]
    pub contact_email: Option<Option<Email>>,
    pub plan: Option<Plan>,
}

/// A change to the SSO settings; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoSettingsChange {
    /// `null` clears the tenant ID.
    #[serde(default, deserialize_with = "crate::model::present")]
    #[schema(value_type = Option<String>, pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[A-Za-z0-9._:-]{1,128}[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
    pub tenant_id: Option<Option<TenantId>>,
    pub enforce: Option<bool>,
    pub auto_assign: Option<bool>,
    pub default_role: Option<Role>,
}

impl From<SsoSettings> for SsoSettingsChange {
    fn from(s: SsoSettings) -> Self {
        Self {
            tenant_id: Some(s.tenant_id),
            enforce: Some(s.enforce),
            auto_assign: Some(s.auto_assign),
            default_role: Some(s.default_role),
        }
    }
}

impl Roster {
    /// Creates an organization with `owner_email` as its active Owner and an Owner API key.
    #[tracing::instrument(skip_all)]
    pub async fn create_organization(&self, new: NewOrganization, by: &Operator) -> ServiceResult<CreatedOrganization> {
        let seats = parse_seats(new.seats).map_err(|e| ServiceError::invalid("seats", e))?;
        if seats < 1 {
            return Err(ServiceError::invalid("seats", "the first Owner needs a seat: buy at least 1"));
        }
        let now = self.clock.now();
        let org = Organization {
            id: Uuid::now_v7(),
            name: new.name.as_str().to_string(),
            contact_email: new.contact_email.map(String::from),
            plan: new.plan,
            purchased_seats: seats,
            seat_policy: SeatPolicy::Strict,
            seat_enforcement: SeatEnforcement::Manual,
            features: Features::default(),
            sso: SsoSettings::default(),
            created_at: now,
            updated_at: now,
        };
        let actor = by.on(org.id);
        let mut tx = self.store.begin().await?;
        tx.insert_org(&org).await?;
        tx.add_webhook_queues(org.id, now).await?;
        tx.insert_audit(actor.audit(now, "organization.created", org.id, None::<&()>, Some(&org))).await?;
        let person = tx.find_person(org.id, &new.owner_email).await?;
        let owner = insert_active_member(
            &mut *tx,
            &actor,
            &org,
            &new.owner_email,
            person,
            Some(Role::Owner),
            &[],
            MemberSource::Admin,
            now,
        )
        .await?;
        let (api_key, api_key_secret) =
            insert_credential(&mut *tx, &actor, CredentialKind::ApiKey, "owner key", Some(Role::Owner), None, now)
                .await?;
        tx.commit().await?;
        Ok(CreatedOrganization { organization: org, owner, api_key, api_key_secret })
    }

    /// Every organization, for operators.
    pub async fn list_organizations(&self) -> ServiceResult<Vec<Organization>> {
        Ok(self.store.read().await?.list_orgs().await?)
    }

    pub async fn organization(&self, actor: &Actor) -> ServiceResult<Organization> {
        actor.require(Role::Read)?;
        let mut tx = self.store.read().await?;
        tx.get_org(actor.org_id).await?.ok_or(ServiceError::NotFound("organization"))
    }

    /// Changes general settings and the plan (Owner and Admin). The plan is
    /// sold by the operator: unless the deployment is self-serve, a change
    /// of it becomes a billing request, filed with the other fields' change.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn update_organization(
        &self,
        actor: &Actor,
        change: OrganizationChange,
    ) -> ServiceResult<(Organization, Option<BillingRequest>)> {
        actor.require(Role::Admin)?;
        let mut tx = self.store.begin().await?;
        let before = lock_org(&mut *tx, actor.org_id).await?;
        let mut org = before.clone();
        if let Some(name) = change.name {
            org.name = name.as_str().to_string();
        }
        if let Some(contact) = change.contact_email {
            org.contact_email = contact.map(String::from);
        }
        let mut request = None;
        if let Some(plan) = change.plan.filter(|p| *p != before.plan) {
            if self.needs_approval(actor) {
                let ask = BillingAsk { plan: Some(plan), ..Default::default() };
                request = Some(billing::file_request(&mut *tx, actor, &before, ask, self.clock.now()).await?);
            } else {
                org.plan = plan;
            }
        }
        if org == before {
            tx.commit().await?;
            return Ok((before, request));
        }
        Ok((self.save_org(tx, actor, "organization.updated", before, org).await?, request))
    }

    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn set_features(&self, actor: &Actor, features: Features) -> ServiceResult<Organization> {
        self.change_org(actor, "organization.features_updated", |org| org.features = features).await
    }

    /// Sets SSO settings; a tenant ID already used by another organization is a conflict.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn set_sso(&self, actor: &Actor, change: SsoSettingsChange) -> ServiceResult<Organization> {
        if change.default_role == Some(Role::Owner) {
            return Err(ServiceError::invalid("default_role", "members joining through SSO cannot become Owners"));
        }
        actor.require(Role::Admin)?;
        let tenant_connection = self.settings.sso.as_ref().is_some_and(|s| s.tenant.is_some());
        // The checks read the organization and its connection under its lock.
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let mut sso = org.sso.clone();
        if let Some(tenant_id) = change.tenant_id {
            if tenant_id.is_some() && tenant_id != sso.tenant_id && !tenant_connection {
                return Err(ServiceError::invalid(
                    "tenant_id",
                    "this deployment has no tenant connection (tenant_connection in Roster's configuration), so a \
                     tenant ID would sign no one in; set the organization's own OpenID provider instead",
                ));
            }
            sso.tenant_id = tenant_id;
        }
        sso.enforce = change.enforce.unwrap_or(sso.enforce);
        sso.auto_assign = change.auto_assign.unwrap_or(sso.auto_assign);
        sso.default_role = change.default_role.unwrap_or(sso.default_role);
        let tenant_serves = sso.tenant_id.is_some() && tenant_connection;
        if sso.enforce && !tenant_serves && tx.get_sso_connection(org.id).await?.is_none() {
            let why = match org.sso.enforce {
                true => {
                    "the organization enforces SSO: it needs a working connection (a tenant ID the deployment's \
                         tenant connection serves, or its own OpenID provider); turn enforcement off first"
                }
                false => {
                    "enforcing SSO needs a working connection first (a tenant ID the deployment's tenant \
                          connection serves, or the organization's own OpenID provider), or no one could sign in"
                }
            };
            let field = if change.enforce == Some(true) { "enforce" } else { "tenant_id" };
            return Err(ServiceError::invalid(field, why));
        }
        let changed = Organization { sso, ..org.clone() };
        self.save_org(tx, actor, "organization.sso_updated", org, changed).await
    }

    async fn change_org(
        &self,
        actor: &Actor,
        action: &str,
        apply: impl FnOnce(&mut Organization),
    ) -> ServiceResult<Organization> {
        actor.require(Role::Admin)?;
        let mut tx = self.store.begin().await?;
        let before = lock_org(&mut *tx, actor.org_id).await?;
        let mut org = before.clone();
        apply(&mut org);
        self.save_org(tx, actor, action, before, org).await
    }

    /// Writes `org` (read as `before` under its lock in `tx`) and audits the change.
    async fn save_org(
        &self,
        mut tx: Box<dyn Tx>,
        actor: &Actor,
        action: &str,
        before: Organization,
        mut org: Organization,
    ) -> ServiceResult<Organization> {
        if org == before {
            return Ok(before);
        }
        let now = self.clock.now();
        org.updated_at = now;
        tx.update_org(&org).await.map_err(|e| match e {
            StoreError::Conflict(_) => {
                ServiceError::Conflict("another organization already uses this tenant ID".into())
            }
            other => other.into(),
        })?;
        tx.insert_audit(actor.audit(now, action, org.id, Some(&before), Some(&org))).await?;
        tx.commit().await?;
        Ok(org)
    }

    /// Deletes the organization and everything in it except its audit trail (Owner only).
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn delete_organization(&self, actor: &Actor) -> ServiceResult<()> {
        actor.require(Role::Owner)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        tx.delete_org(org.id).await?;
        tx.insert_audit(actor.audit(now, "organization.deleted", org.id, Some(&org), None::<&()>)).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Makes `email` an active member of `org` (locked by the caller), reserving
/// its seat, and writes the audit record; `person` is what the caller found
/// of the email in `org`. A pending invitation for the same
/// email is accepted by it, so the person keeps one seat, not two, and its
/// role becomes the member's manual (pinned) role unless `manual` names one.
/// `sso_roles` are the tenant-claim roles of a member joining by SSO. The
/// role is derived from these; the caller recomputes it once SCIM groups or
/// `roles` are linked.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_active_member(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    email: &Email,
    person: Person,
    manual: Option<Role>,
    sso_roles: &[String],
    source: MemberSource,
    now: chrono::DateTime<chrono::Utc>,
) -> ServiceResult<Member> {
    // A new user is stored with its member, once the seat is granted.
    let (user, new_user, existing) = match person.user {
        Some(user) => (user, false, person.member),
        None => (User { id: Uuid::now_v7(), email: Some(email.clone()), created_at: now }, true, None),
    };
    if let Some(m) = &existing {
        if m.status != MemberStatus::Deprovisioned {
            return Err(ServiceError::Conflict(format!("{} is already a member ({})", email, m.status)));
        }
    }
    let invited = settle_invitation(tx, actor, person.invitation, now).await?;
    let reservation = match invited {
        // The invitation's seat becomes the member's.
        Some(_) => Reservation { overage: 0 },
        None => reserve_seats(tx, org, 1, now).await?,
    };
    let manual = manual.or(invited);
    let mut member = match &existing {
        Some(old) => Member { status: MemberStatus::Active, source, updated_at: now, ..old.clone() },
        None => Member::new(org.id, &user, MemberStatus::Active, source, now),
    };
    member.manual_role = manual;
    member.role_pinned = manual.is_some();
    member.sso_roles = sso_roles.to_vec();
    // A new member has no groups or SCIM roles yet: only tenant roles need the mappings.
    let mappings = if sso_roles.is_empty() { Vec::new() } else { tx.list_role_mappings(org.id).await? };
    member.set_role(&derive_role(&member.role_inputs(&[], &[]), &mappings, org.sso.default_role));
    let after = audit_with_overage(&member, reservation);
    match existing {
        Some(old) => {
            tx.update_member(&member).await?;
            tx.insert_audit(actor.audit(now, "member.reprovisioned", member.id, Some(&old), Some(&after))).await?;
        }
        None => {
            if new_user {
                tx.insert_user(&user).await?;
            }
            tx.insert_member(&member).await?;
            tx.insert_audit(actor.audit(now, "member.added", member.id, None::<&()>, Some(&after))).await?;
        }
    }
    Ok(member)
}

/// Settles the pending invitation of an email, if it has one, now that the
/// person is a member: accepted while it is live (its seat becomes the
/// member's), expired otherwise; audited. Returns the role a live
/// invitation offered.
pub(crate) async fn settle_invitation(
    tx: &mut dyn Tx,
    actor: &Actor,
    pending: Option<Invitation>,
    now: chrono::DateTime<chrono::Utc>,
) -> ServiceResult<Option<Role>> {
    let Some(mut inv) = pending else {
        return Ok(None);
    };
    let before = inv.clone();
    let live = inv.expires_at > now;
    inv.status = if live { InvitationStatus::Accepted } else { InvitationStatus::Expired };
    inv.updated_at = now;
    tx.update_invitation(&inv).await?;
    let action = if live { "invitation.accepted" } else { "invitation.expired" };
    tx.insert_audit(actor.audit(now, action, inv.id, Some(&before), Some(&inv))).await?;
    Ok(live.then_some(inv.role))
}

pub(crate) fn audit_with_overage(value: &impl Serialize, reservation: Reservation) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    if reservation.overage > 0 {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("seat_overage".into(), reservation.overage.into());
        }
    }
    v
}
