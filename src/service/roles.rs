//! Role mappings (SCIM group or IdP role → role) and the role-recompute
//! function every door calls after it changed one of a member's role sources.

use super::*;
use crate::model::*;
use crate::roles::{derive_role, Derivation, RoleMapping};
use crate::store::{Member, MemberLinks, Organization, StoreError};
use chrono::{DateTime, Utc};

/// A mapping to create.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoleMapping {
    /// `group` (a SCIM group's `displayName` or `externalId`) or `idp_role`
    /// (a SCIM `roles` value or a role of the SSO tenant claim).
    pub source: RoleMappingSource,
    /// The group or role name, matched case-insensitively.
    #[schema(
        pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\x00-\x1F\x7F-\x9F]{0,254}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub value: String,
    /// The role granted: `read`, `write` or `admin` (an identity provider never grants Owner).
    #[schema(value_type = String, pattern = "^(read|write|admin)$")]
    pub role: Role,
}

/// The longest group or role name a mapping may name.
const MAX_MAPPING_VALUE: usize = 256;

/// A member's derived role, from the member row, its links and the mappings.
pub(crate) fn derive_member(
    member: &Member,
    links: Option<&MemberLinks>,
    mappings: &[RoleMapping],
    org: &Organization,
) -> Derivation {
    let (groups, roles) = links.map_or((&[][..], &[][..]), |l| (&l.groups[..], &l.scim_roles[..]));
    derive_role(&member.role_inputs(groups, roles), mappings, org.sso.default_role)
}

/// Re-derives the role of each member named (in `org`, which the caller
/// locked) and saves and audits those that changed. An active Owner who is
/// the last one keeps the role whatever the derivation says.
pub(crate) async fn recompute_roles(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    member_ids: &[Uuid],
    now: DateTime<Utc>,
) -> ServiceResult<Vec<Member>> {
    if member_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mappings = tx.list_role_mappings(org.id).await?;
    let links = tx.member_links(org.id, Some(member_ids), now).await?;
    let mut changed = Vec::new();
    for before in tx.members_by_ids(org.id, member_ids).await? {
        if before.status == MemberStatus::Deprovisioned {
            continue;
        }
        let d = derive_member(&before, links.get(&before.id), &mappings, org);
        if d.role == before.role && d.source == before.role_source {
            continue;
        }
        if before.role == Role::Owner
            && d.role != Role::Owner
            && before.status == MemberStatus::Active
            && tx.count_active_owners(org.id).await? <= 1
        {
            tracing::warn!(member = %before.id, "the derivation would demote the last Owner; kept");
            continue;
        }
        let mut member = before.clone();
        member.set_role(&d);
        member.updated_at = now;
        tx.update_member(&member).await?;
        tx.insert_audit(actor.audit(now, "member.role_changed", member.id, Some(&before), Some(&member))).await?;
        changed.push(member);
    }
    Ok(changed)
}

impl Roster {
    pub async fn role_mappings(&self, actor: &Actor) -> ServiceResult<Vec<RoleMapping>> {
        actor.require(Role::Read)?;
        Ok(self.store.read().await?.list_role_mappings(actor.org_id).await?)
    }

    /// Adds a mapping. Members' roles follow at the next reconcile: the plan
    /// shows who would change before anyone does.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn create_role_mapping(&self, actor: &Actor, new: NewRoleMapping) -> ServiceResult<RoleMapping> {
        actor.require(Role::Admin)?;
        let value = new.value.trim();
        if value.is_empty() || !plain_text(value, MAX_MAPPING_VALUE) {
            return Err(ServiceError::invalid(
                "value",
                format!("must be 1 to {MAX_MAPPING_VALUE} characters without control characters"),
            ));
        }
        if new.role.rank() > crate::roles::IDP_ROLE_CAP.rank() {
            return Err(ServiceError::invalid(
                "role",
                "an identity provider can grant at most admin; Owner is only assigned by an Owner",
            ));
        }
        let now = self.clock.now();
        let mapping = RoleMapping {
            id: Uuid::now_v7(),
            org_id: actor.org_id,
            source: new.source,
            value: value.to_string(),
            role: new.role,
            created_by: actor.id.clone(),
            created_at: now,
        };
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        tx.insert_role_mapping(&mapping).await.map_err(|e| match e {
            StoreError::Conflict(_) => {
                ServiceError::Conflict(format!("{} `{}` is already mapped", mapping.source, mapping.value))
            }
            other => other.into(),
        })?;
        tx.insert_audit(actor.audit(now, "role_mapping.created", mapping.id, None::<&()>, Some(&mapping))).await?;
        tx.commit().await?;
        Ok(mapping)
    }

    #[tracing::instrument(skip_all, fields(org = %actor.org_id, mapping = %id))]
    pub async fn delete_role_mapping(&self, actor: &Actor, id: Uuid) -> ServiceResult<RoleMapping> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        let gone = tx.delete_role_mapping(actor.org_id, id).await?.ok_or(ServiceError::NotFound("role mapping"))?;
        tx.insert_audit(actor.audit(now, "role_mapping.deleted", gone.id, Some(&gone), None::<&()>)).await?;
        tx.commit().await?;
        Ok(gone)
    }
}
