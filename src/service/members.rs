//! Members: listing, adding directly, role changes, suspension,
//! re-activation and removal, with last-Owner protection.

use super::*;
use crate::model::*;
use crate::store::{Member, MemberFilter};

/// Which members to list.
#[derive(Debug, Clone, Default)]
pub struct MemberQuery {
    pub status: Option<MemberStatus>,
    pub role: Option<Role>,
    pub source: Option<MemberSource>,
    /// Part of the email or name, any case.
    pub search: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// A page of members with the total matching the filter.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberPage {
    pub items: Vec<Member>,
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub(crate) fn parse_cursor(cursor: Option<&str>) -> ServiceResult<Option<Uuid>> {
    cursor
        .map(|c| Uuid::parse_str(c).map_err(|_| ServiceError::invalid("cursor", "is not a cursor this API returned")))
        .transpose()
}

impl Roster {
    pub async fn list_members(&self, actor: &Actor, q: MemberQuery) -> ServiceResult<MemberPage> {
        actor.require(Role::Read)?;
        let limit = page_size(q.limit)?;
        if q.search.as_deref().is_some_and(|s| !plain_text(s, 254)) {
            return Err(ServiceError::invalid("q", "a search is at most 254 characters, without control characters"));
        }
        let filter = MemberFilter {
            status: q.status,
            role: q.role,
            source: q.source,
            search: q.search.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            after: parse_cursor(q.cursor.as_deref())?,
            limit: limit + 1,
        };
        let mut tx = self.store.read().await?;
        let mut items = tx.list_members(actor.org_id, &filter).await?;
        let total = tx.count_members(actor.org_id, &filter).await?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|m| m.id.to_string())
        } else {
            None
        };
        Ok(MemberPage { items, total, next_cursor })
    }

    pub async fn member(&self, actor: &Actor, id: Uuid) -> ServiceResult<Member> {
        actor.require(Role::Read)?;
        let mut tx = self.store.read().await?;
        tx.get_member(actor.org_id, id).await?.ok_or(ServiceError::NotFound("member"))
    }

    /// Adds `email` as an active member (source `admin`); needs a free seat.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn add_member(&self, actor: &Actor, email: Email, role: Role) -> ServiceResult<Member> {
        actor.require(Role::Admin)?;
        if role == Role::Owner {
            actor.require(Role::Owner)?;
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let person = tx.find_person(org.id, &email).await?;
        let member =
            insert_active_member(&mut *tx, actor, &org, &email, person, Some(role), &[], MemberSource::Admin, now)
                .await?;
        tx.commit().await?;
        Ok(member)
    }

    /// Assigns a member's role by hand, pinned: the identity provider no
    /// longer changes it. Granting or taking away Owner needs an Owner; the
    /// last active Owner cannot be demoted.
    pub async fn change_role(&self, actor: &Actor, id: Uuid, role: Role) -> ServiceResult<Member> {
        self.assign_role(actor, id, RoleAssignment { role: Some(role), managed_by: None }).await
    }

    /// Sets a member's manual role and whether it is pinned or the identity
    /// provider manages the role (the manual role then being the fallback);
    /// the role becomes the derivation's.
    pub async fn assign_role(&self, actor: &Actor, id: Uuid, a: RoleAssignment) -> ServiceResult<Member> {
        if a.role.is_none() && a.managed_by.is_none() {
            return Err(ServiceError::invalid("role", "name a role, role_managed_by, or both"));
        }
        self.change_member(actor, id, MemberChange::Assign(a)).await
    }

    /// Suspends an active member, freeing the seat.
    pub async fn suspend_member(&self, actor: &Actor, id: Uuid) -> ServiceResult<Member> {
        self.change_member(actor, id, MemberChange::Suspend).await
    }

    /// Re-activates a suspended member; needs a free seat.
    pub async fn reactivate_member(&self, actor: &Actor, id: Uuid) -> ServiceResult<Member> {
        self.change_member(actor, id, MemberChange::Reactivate).await
    }

    /// Removes a member (deprovisioned: gone from the organization, kept in the audit trail).
    pub async fn remove_member(&self, actor: &Actor, id: Uuid) -> ServiceResult<Member> {
        self.change_member(actor, id, MemberChange::Remove).await
    }

    /// Applies one change to a member under the organization lock, with its
    /// audit record. A change that is already in effect changes nothing.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, member = %id, change = ?change))]
    async fn change_member(&self, actor: &Actor, id: Uuid, change: MemberChange) -> ServiceResult<Member> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let before = tx.get_member(org.id, id).await?.ok_or(ServiceError::NotFound("member"))?;
        let (status, role) = (before.status, before.role);
        // Only an Owner may change an Owner, even when the change is already in effect.
        if role == Role::Owner {
            actor.require(Role::Owner)?;
        }
        let mut member = before.clone();
        let action = match change {
            MemberChange::Assign(a) => {
                if status == MemberStatus::Deprovisioned {
                    return Err(ServiceError::Conflict("the member has been removed".into()));
                }
                if let Some(new) = a.role {
                    member.manual_role = Some(new);
                }
                member.role_pinned = match a.managed_by {
                    None | Some(RoleManager::Admin) => true,
                    Some(RoleManager::Idp) => false,
                };
                if member.role_pinned && member.manual_role.is_none() {
                    member.manual_role = Some(role);
                }
                let mappings = tx.list_role_mappings(org.id).await?;
                let links = tx.member_links(org.id, Some(&[id]), now).await?;
                member.set_role(&derive_member(&member, links.get(&id), &mappings, &org));
                if member.role == Role::Owner || role == Role::Owner {
                    actor.require(Role::Owner)?;
                }
                if (member.role, member.manual_role, member.role_pinned, &member.role_source)
                    == (role, before.manual_role, before.role_pinned, &before.role_source)
                {
                    return Ok(before);
                }
                "member.role_changed"
            }
            MemberChange::Suspend => {
                match status {
                    MemberStatus::Suspended => return Ok(before),
                    MemberStatus::Active => {}
                    other => {
                        return Err(ServiceError::Conflict(format!("a member that is {other} cannot be suspended")))
                    }
                }
                member.status = MemberStatus::Suspended;
                "member.suspended"
            }
            MemberChange::Reactivate => {
                match status {
                    MemberStatus::Active => return Ok(before),
                    MemberStatus::Suspended => {}
                    other => {
                        return Err(ServiceError::Conflict(format!("a member that is {other} cannot be re-activated")))
                    }
                }
                reserve_seats(&mut *tx, &org, 1, now).await?;
                member.status = MemberStatus::Active;
                "member.reactivated"
            }
            MemberChange::Remove => {
                if status == MemberStatus::Deprovisioned {
                    return Ok(before);
                }
                member.status = MemberStatus::Deprovisioned;
                "member.removed"
            }
        };
        // An active Owner who stops being one (demoted, suspended, removed):
        // only an Owner may do it, and never to the last one.
        let loses_owner = role == Role::Owner
            && status == MemberStatus::Active
            && (member.role != Role::Owner || member.status != MemberStatus::Active);
        if loses_owner && tx.count_active_owners(org.id).await? <= 1 {
            return Err(ServiceError::LastOwner);
        }
        member.updated_at = now;
        tx.update_member(&member).await?;
        if member.status != MemberStatus::Active {
            tx.end_member_sessions(member.id, now).await?;
        }
        tx.insert_audit(actor.audit(now, action, member.id, Some(&before), Some(&member))).await?;
        tx.commit().await?;
        Ok(member)
    }
}

/// Who manages a member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleManager {
    /// The manual role is pinned: SCIM groups, SCIM `roles` and SSO tenant roles do not change it.
    Admin,
    /// The identity provider's sources decide; the manual role applies when none maps to a role.
    Idp,
}

/// A manual role assignment: a role, who manages it, or both (a field is
/// given or left out, never `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    /// The role an admin assigns.
    #[serde(default, deserialize_with = "crate::model::present")]
    #[schema(nullable = false)]
    pub role: Option<Role>,
    /// `admin` (the default when a role is given) pins it; `idp` lets the identity provider manage the role.
    #[serde(rename = "role_managed_by", default, deserialize_with = "crate::model::present")]
    #[schema(nullable = false)]
    pub managed_by: Option<RoleManager>,
}

/// One change an admin makes to a member.
#[derive(Debug, Clone, Copy)]
enum MemberChange {
    Assign(RoleAssignment),
    Suspend,
    Reactivate,
    Remove,
}
