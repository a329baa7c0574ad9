//! The reconciler: one plan of every change that brings an organization's
//! seats and roles back in line with its rules, each with its reason, and
//! the application of that plan in one transaction with audit records.
//!
//! What a plan holds, in this order:
//! 1. pending invitations past their expiry (they hold no seat any more) →
//!    marked expired;
//! 2. active members whose SCIM user the identity provider deactivated →
//!    suspended;
//! 3. role drift: members whose role is not what the derivation gives (after
//!    a mapping change, a default-role change…) → the derived role;
//! 4. seats, under the strict policy, when more are used than purchased:
//!    first pending invitations are revoked (newest first), then members are
//!    suspended — never Owners; Read and Write members before Admins; within
//!    each, the most recently joined first. Under the overage policy nothing
//!    is cut and the overage is reported;
//! 5. live SSO sessions of members who are not active → ended.
//!
//! A plan is computed from a snapshot by a pure function, so the same state
//! always gives the same plan, and right after an apply the next plan is empty.

use super::*;
use crate::model::*;
use crate::roles::{RoleMapping, RoleSource};
use crate::store::{Invitation, Member, MemberLinks, Organization};
use chrono::{DateTime, Utc};
use sha2::Digest;
use std::collections::HashMap;

/// The lease-and-schedule name of the background reconciler.
pub const RECONCILE_JOB: &str = "reconcile";

/// One change of a plan, with the reason in words.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PlannedChange {
    /// A pending invitation past its expiry is marked expired.
    ExpireInvitation { invitation: Uuid, email: Email, expired_at: DateTime<Utc>, reason: String },
    /// A pending invitation is revoked to bring seats back under the limit.
    RevokeInvitation { invitation: Uuid, email: Email, reason: String },
    /// An active member is suspended (seat overage, or deactivated in the identity provider).
    SuspendMember { member: Uuid, email: Option<Email>, role: Role, reason: String },
    /// A member's role becomes the derived one.
    ChangeRole { member: Uuid, email: Option<Email>, from: Role, to: Role, source: RoleSource, reason: String },
    /// The live sessions of a member who is not active are ended.
    EndSessions { member: Uuid, email: Option<Email>, sessions: i64, reason: String },
}

impl PlannedChange {
    /// Whether the change takes something away from someone (a seat, an
    /// invitation, a role). Only an admin's apply, or automatic enforcement,
    /// makes these; the others are housekeeping the background job always does.
    pub fn disruptive(&self) -> bool {
        !matches!(self, PlannedChange::ExpireInvitation { .. } | PlannedChange::EndSessions { .. })
    }

    fn action(&self) -> &'static str {
        match self {
            PlannedChange::ExpireInvitation { .. } => "expire_invitation",
            PlannedChange::RevokeInvitation { .. } => "revoke_invitation",
            PlannedChange::SuspendMember { .. } => "suspend_member",
            PlannedChange::ChangeRole { .. } => "change_role",
            PlannedChange::EndSessions { .. } => "end_sessions",
        }
    }
}

/// Seats now and after the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PlanSeats {
    pub purchased: i64,
    pub policy: SeatPolicy,
    pub enforcement: SeatEnforcement,
    /// Active members plus unexpired pending invitations, now.
    pub used: i64,
    /// The same after the plan is applied.
    pub used_after: i64,
    /// Seats used beyond those purchased after the plan (only under `overage`,
    /// or when only Owners are left to suspend).
    pub overage_after: i64,
}

/// Everything reconcile would change in one organization, and why.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReconcilePlan {
    pub organization: Uuid,
    pub generated_at: DateTime<Utc>,
    /// Names this exact list of changes: pass it to apply to refuse applying
    /// anything but the plan that was read.
    pub fingerprint: String,
    pub seats: PlanSeats,
    pub changes: Vec<PlannedChange>,
    /// What the rules keep although it looks out of line (an Owner over the
    /// seat limit, the last Owner's role).
    pub kept: Vec<String>,
}

impl ReconcilePlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReconcileOutcome {
    /// The plan as it was applied (only its automatic part for a background run).
    pub applied: ReconcilePlan,
    /// Changes planned but left for an admin (background runs under manual enforcement).
    pub left: usize,
}

/// The state a plan is computed from.
pub struct PlanInput<'a> {
    pub org: &'a Organization,
    pub now: DateTime<Utc>,
    /// Members that are not deprovisioned, and removed ones with live sessions.
    pub members: &'a [Member],
    pub links: &'a HashMap<Uuid, MemberLinks>,
    /// Pending invitations, expired or not.
    pub invitations: &'a [Invitation],
    pub mappings: &'a [RoleMapping],
}

/// Computes the plan. Pure: the same input always gives the same plan.
pub fn plan(input: &PlanInput<'_>) -> ReconcilePlan {
    let PlanInput { org, now, members, links, invitations, mappings } = *input;
    let mut changes = Vec::new();
    let mut kept = Vec::new();

    // 1. Expired invitations.
    let (expired, live): (Vec<&Invitation>, Vec<&Invitation>) = invitations.iter().partition(|i| i.expires_at <= now);
    for inv in expired {
        changes.push(PlannedChange::ExpireInvitation {
            invitation: inv.id,
            email: inv.email.clone(),
            expired_at: inv.expires_at,
            reason: format!("the invitation expired at {}", inv.expires_at.format("%Y-%m-%d %H:%M UTC")),
        });
    }

    // 2 and 3. Deactivated in the IdP; role drift. `status` and `role` are
    // each member's state after the plan.
    let mut state: Vec<(&Member, MemberStatus, Role)> = members.iter().map(|m| (m, m.status, m.role)).collect();
    let derived: Vec<Option<crate::roles::Derivation>> = members
        .iter()
        .map(|m| {
            (m.status != MemberStatus::Deprovisioned)
                .then(|| super::roles::derive_member(m, links.get(&m.id), mappings, org))
        })
        .collect();
    let deactivated =
        |m: &Member| m.status == MemberStatus::Active && links.get(&m.id).and_then(|l| l.scim_active) == Some(false);
    // The Owners the plan ends with: active, not deactivated, derived Owner.
    // When there would be none, one current Owner (the longest-standing)
    // stays as it is: the organization keeps at least one.
    let owners_after = members
        .iter()
        .zip(&derived)
        .filter(|(m, d)| {
            m.status == MemberStatus::Active && !deactivated(m) && d.as_ref().is_some_and(|d| d.role == Role::Owner)
        })
        .count();
    let anchor = if owners_after > 0 {
        None
    } else {
        let mut owners: Vec<&Member> =
            members.iter().filter(|m| m.status == MemberStatus::Active && m.role == Role::Owner).collect();
        owners.sort_by(|a, b| {
            deactivated(a).cmp(&deactivated(b)).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id))
        });
        owners.first().map(|m| m.id)
    };
    for ((m, status, role), d) in state.iter_mut().zip(derived) {
        let Some(d) = d else { continue };
        if Some(m.id) == anchor {
            if deactivated(m) {
                kept.push(format!("{} is deactivated in the identity provider but is the last Owner", m.label()));
            }
            if d.role != Role::Owner {
                kept.push(format!("{} stays Owner: an organization keeps at least one Owner", m.label()));
            }
            continue;
        }
        if deactivated(m) {
            *status = MemberStatus::Suspended;
            changes.push(PlannedChange::SuspendMember {
                member: m.id,
                email: m.email.clone(),
                role: m.role,
                reason: "deactivated in the identity provider (SCIM active=false) but active here".into(),
            });
        }
        if d.role == m.role && d.source == m.role_source {
            continue;
        }
        let reason = if d.role == m.role {
            format!("same role, now decided by another source: {}", d.explain())
        } else {
            format!("role drift: the sources give {} but the member is {}", d.explain(), m.role.title())
        };
        *role = d.role;
        changes.push(PlannedChange::ChangeRole {
            member: m.id,
            email: m.email.clone(),
            from: m.role,
            to: d.role,
            source: d.source,
            reason,
        });
    }

    // 4. Seats.
    let active = |state: &[(&Member, MemberStatus, Role)]| {
        state.iter().filter(|(_, s, _)| *s == MemberStatus::Active).count() as i64
    };
    let used = members.iter().filter(|m| m.status == MemberStatus::Active).count() as i64 + live.len() as i64;
    let mut used_after = active(&state) + live.len() as i64;
    if org.seat_policy == SeatPolicy::Strict && used_after > org.purchased_seats {
        let why = |used_after: i64| {
            format!("{used_after} seats in use, {} purchased (strict seat policy)", org.purchased_seats)
        };
        let mut newest_first: Vec<&Invitation> = live.clone();
        newest_first.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        for inv in newest_first {
            if used_after <= org.purchased_seats {
                break;
            }
            changes.push(PlannedChange::RevokeInvitation {
                invitation: inv.id,
                email: inv.email.clone(),
                reason: format!("seat overage: {}; the newest pending invitations go first", why(used_after)),
            });
            used_after -= 1;
        }
        let mut candidates: Vec<usize> =
            (0..state.len()).filter(|&i| state[i].1 == MemberStatus::Active && state[i].2 != Role::Owner).collect();
        candidates.sort_by(|&a, &b| {
            let (ma, _, ra) = state[a];
            let (mb, _, rb) = state[b];
            (ra == Role::Admin)
                .cmp(&(rb == Role::Admin))
                .then(mb.created_at.cmp(&ma.created_at))
                .then(mb.id.cmp(&ma.id))
        });
        for i in candidates {
            if used_after <= org.purchased_seats {
                break;
            }
            let (m, _, role) = state[i];
            changes.push(PlannedChange::SuspendMember {
                member: m.id,
                email: m.email.clone(),
                role,
                reason: format!(
                    "seat overage: {}; Owners are never suspended, Admins last, the most recently joined first",
                    why(used_after)
                ),
            });
            state[i].1 = MemberStatus::Suspended;
            used_after -= 1;
        }
        if used_after > org.purchased_seats {
            kept.push(format!(
                "{} seats over the limit are held by Owners, who are never suspended",
                used_after - org.purchased_seats
            ));
        }
    }

    // 5. Sessions that outlived their member's suspension or removal.
    for (m, status, _) in &state {
        let sessions = links.get(&m.id).map_or(0, |l| l.live_sessions);
        if m.status != MemberStatus::Active && *status != MemberStatus::Active && sessions > 0 {
            changes.push(PlannedChange::EndSessions {
                member: m.id,
                email: m.email.clone(),
                sessions,
                reason: format!("the member is {} but has {sessions} live SSO session(s)", m.status),
            });
        }
    }

    ReconcilePlan {
        organization: org.id,
        generated_at: now,
        fingerprint: fingerprint(&changes),
        seats: PlanSeats {
            purchased: org.purchased_seats,
            policy: org.seat_policy,
            enforcement: org.seat_enforcement,
            used,
            used_after,
            overage_after: (used_after - org.purchased_seats).max(0),
        },
        changes,
        kept,
    }
}

/// Which part of a plan to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyScope {
    /// Everything: an admin applies the plan.
    All,
    /// What the background job may do: everything under automatic
    /// enforcement, housekeeping only under manual enforcement.
    Background,
}

/// Names a list of changes: the first 12 bytes of the SHA-256 of its JSON.
fn fingerprint(changes: &[PlannedChange]) -> String {
    let bytes = serde_json::to_vec(changes).unwrap_or_default();
    sha2::Sha256::digest(&bytes).iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Reads the state of `org` in `tx` and plans.
pub(super) async fn plan_in(tx: &mut dyn Tx, org: &Organization, now: DateTime<Utc>) -> ServiceResult<ReconcilePlan> {
    let mut members = tx.current_members(org.id).await?;
    let links = tx.member_links(org.id, None, now).await?;
    // Removed members with sessions still alive are planned too.
    let current: std::collections::HashSet<Uuid> = members.iter().map(|m| m.id).collect();
    let removed: Vec<Uuid> =
        links.iter().filter(|(id, l)| l.live_sessions > 0 && !current.contains(id)).map(|(id, _)| *id).collect();
    if !removed.is_empty() {
        members.extend(tx.members_by_ids(org.id, &removed).await?);
    }
    let invitations = tx.pending_invitations(org.id).await?;
    let mappings = tx.list_role_mappings(org.id).await?;
    Ok(plan(&PlanInput { org, now, members: &members, links: &links, invitations: &invitations, mappings: &mappings }))
}

/// Applies `changes` in `tx` (the organization locked), each with its audit record.
pub(super) async fn apply_in(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    changes: &[PlannedChange],
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    for change in changes {
        metrics::counter!("roster_reconcile_changes_total", "action" => change.action()).increment(1);
        match change {
            PlannedChange::ExpireInvitation { invitation, .. } | PlannedChange::RevokeInvitation { invitation, .. } => {
                let before =
                    tx.get_invitation(org.id, *invitation).await?.ok_or(ServiceError::NotFound("invitation"))?;
                let (status, action) = match change {
                    PlannedChange::ExpireInvitation { .. } => (InvitationStatus::Expired, "invitation.expired"),
                    _ => (InvitationStatus::Revoked, "invitation.revoked"),
                };
                let inv = Invitation { status, updated_at: now, ..before.clone() };
                tx.update_invitation(&inv).await?;
                let after = with_reason(&inv, change);
                tx.insert_audit(actor.audit(now, action, inv.id, Some(&before), Some(&after))).await?;
            }
            PlannedChange::SuspendMember { member, .. } => {
                let before = tx.get_member(org.id, *member).await?.ok_or(ServiceError::NotFound("member"))?;
                let m = Member { status: MemberStatus::Suspended, updated_at: now, ..before.clone() };
                tx.update_member(&m).await?;
                tx.end_member_sessions(m.id, now).await?;
                let after = with_reason(&m, change);
                tx.insert_audit(actor.audit(now, "member.suspended", m.id, Some(&before), Some(&after))).await?;
            }
            PlannedChange::ChangeRole { member, to, source, .. } => {
                let before = tx.get_member(org.id, *member).await?.ok_or(ServiceError::NotFound("member"))?;
                let mut m = before.clone();
                m.set_role(&crate::roles::Derivation { role: *to, source: source.clone() });
                m.updated_at = now;
                tx.update_member(&m).await?;
                let after = with_reason(&m, change);
                tx.insert_audit(actor.audit(now, "member.role_changed", m.id, Some(&before), Some(&after))).await?;
            }
            PlannedChange::EndSessions { member, sessions, .. } => {
                tx.end_member_sessions(*member, now).await?;
                let after = serde_json::json!({ "sessions_ended": sessions, "reason": reason_of(change) });
                tx.insert_audit(actor.audit(now, "member.sessions_ended", member, None::<&()>, Some(&after))).await?;
            }
        }
    }
    Ok(())
}

fn reason_of(change: &PlannedChange) -> &str {
    match change {
        PlannedChange::ExpireInvitation { reason, .. }
        | PlannedChange::RevokeInvitation { reason, .. }
        | PlannedChange::SuspendMember { reason, .. }
        | PlannedChange::ChangeRole { reason, .. }
        | PlannedChange::EndSessions { reason, .. } => reason,
    }
}

/// The audited state with the reconciler's reason beside it.
fn with_reason(value: &impl Serialize, change: &PlannedChange) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("reconcile_reason".into(), reason_of(change).into());
    }
    v
}

impl Roster {
    /// The plan for the actor's organization (Owner, Admin).
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn reconcile_plan(&self, actor: &Actor) -> ServiceResult<ReconcilePlan> {
        actor.require(Role::Admin)?;
        let mut tx = self.store.read().await?;
        let org = tx.get_org(actor.org_id).await?.ok_or(ServiceError::NotFound("organization"))?;
        plan_in(&mut *tx, &org, self.clock.now()).await
    }

    /// Plans again under the organization lock and applies the plan in one
    /// transaction. With `expected`, refuses when the plan is no longer the
    /// one with that fingerprint (something changed since it was read).
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn reconcile_apply(&self, actor: &Actor, expected: Option<&str>) -> ServiceResult<ReconcileOutcome> {
        actor.require(Role::Admin)?;
        self.reconcile_org(actor, ApplyScope::All, expected).await
    }

    /// Plans and applies `scope` of the plan for `actor`'s organization.
    pub async fn reconcile_org(
        &self,
        actor: &Actor,
        scope: ApplyScope,
        expected: Option<&str>,
    ) -> ServiceResult<ReconcileOutcome> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let mut plan = plan_in(&mut *tx, &org, now).await?;
        if let Some(expected) = expected.map(str::trim).filter(|e| !e.is_empty()) {
            if expected != plan.fingerprint {
                return Err(ServiceError::Conflict(format!(
                    "the plan changed since it was read (fingerprint {expected}, now {}); read the plan again",
                    plan.fingerprint
                )));
            }
        }
        let all = std::mem::take(&mut plan.changes);
        let automatic = scope == ApplyScope::All || org.seat_enforcement == SeatEnforcement::Automatic;
        let (apply, left): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| automatic || !c.disruptive());
        plan.changes = apply;
        if !plan.changes.is_empty() {
            apply_in(&mut *tx, actor, &org, &plan.changes, now).await?;
            let summary = serde_json::json!({
                "changes": plan.changes.len(),
                "fingerprint": plan.fingerprint,
                "left_for_an_admin": left.len(),
            });
            tx.insert_audit(actor.audit(now, "reconcile.applied", org.id, None::<&()>, Some(&summary))).await?;
        }
        tx.commit().await?;
        metrics::gauge!("roster_seats_overage", "org" => org.id.to_string()).set(plan.seats.overage_after as f64);
        Ok(ReconcileOutcome { applied: plan, left: left.len() })
    }

    /// One background pass over every organization; returns how many changes
    /// were applied and how many were left for admins.
    pub async fn reconcile_all(&self, holder: &str) -> ServiceResult<(usize, usize)> {
        let orgs = self.store.read().await?.list_orgs().await?;
        let (mut applied, mut left) = (0, 0);
        for org in orgs {
            let actor = Actor {
                kind: ActorKind::System,
                id: format!("reconciler:{holder}"),
                org_id: org.id,
                role: Role::Owner,
                request_id: None,
            };
            match self.reconcile_org(&actor, ApplyScope::Background, None).await {
                Ok(outcome) => {
                    applied += outcome.applied.changes.len();
                    left += outcome.left;
                }
                // An organization deleted meanwhile is not an error of the run.
                Err(ServiceError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((applied, left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::{derive_role, Derivation, GroupRef};
    use crate::store::{Features, SsoSettings, User};
    use chrono::TimeZone;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// `minutes` after a fixed origin; "now" is [`NOW`].
    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    const NOW: i64 = 10_000;

    fn email(name: &str) -> Email {
        Email::parse(&format!("{name}@acme.test")).unwrap()
    }

    /// The state a plan is computed from, built up by each case.
    #[derive(Clone)]
    struct World {
        org: Organization,
        members: Vec<Member>,
        links: HashMap<Uuid, MemberLinks>,
        invitations: Vec<Invitation>,
        mappings: Vec<RoleMapping>,
    }

    impl World {
        fn new(seats: i64, policy: SeatPolicy) -> Self {
            World {
                org: Organization {
                    id: Uuid::from_u128(0xA),
                    name: "Acme".into(),
                    contact_email: None,
                    plan: Plan::EnterpriseSeatYearly,
                    purchased_seats: seats,
                    seat_policy: policy,
                    seat_enforcement: SeatEnforcement::Manual,
                    features: Features::default(),
                    sso: SsoSettings::default(),
                    created_at: at(0),
                    updated_at: at(0),
                },
                members: Vec::new(),
                links: HashMap::new(),
                invitations: Vec::new(),
                mappings: Vec::new(),
            }
        }

        /// An active member an admin added with `role` (manual, pinned), joined at `joined`.
        fn member(&mut self, n: u128, name: &str, role: Role, joined: i64) -> Uuid {
            let user = User { id: Uuid::from_u128(0x1000 + n), email: Some(email(name)), created_at: at(joined) };
            let mut m = Member::new(self.org.id, &user, MemberStatus::Active, MemberSource::Admin, at(joined));
            m.id = Uuid::from_u128(n);
            m.manual_role = Some(role);
            m.role_pinned = true;
            m.set_role(&Derivation { role, source: RoleSource::Manual });
            self.members.push(m);
            Uuid::from_u128(n)
        }

        /// An active member provisioned by SCIM: no manual role, the role
        /// derived from its sources as they are when [`World::settle`] runs.
        fn idp_member(&mut self, n: u128, name: &str, joined: i64) -> Uuid {
            let id = self.member(n, name, Role::Read, joined);
            self.edit(id, |m| {
                m.source = MemberSource::Scim;
                m.manual_role = None;
                m.role_pinned = false;
                m.set_role(&Derivation { role: Role::Read, source: RoleSource::Default });
            });
            self.link(id).scim_user = Some(Uuid::from_u128(0x2000 + n));
            self.link(id).scim_active = Some(true);
            id
        }

        fn edit(&mut self, id: Uuid, f: impl FnOnce(&mut Member)) {
            f(self.members.iter_mut().find(|m| m.id == id).unwrap());
        }

        fn link(&mut self, id: Uuid) -> &mut MemberLinks {
            self.links.entry(id).or_default()
        }

        fn in_group(&mut self, id: Uuid, display_name: &str, external_id: Option<&str>) {
            let g = GroupRef { display_name: display_name.into(), external_id: external_id.map(String::from) };
            self.link(id).groups.push(g);
        }

        fn derive(&self, m: &Member) -> Derivation {
            let link = self.links.get(&m.id).cloned().unwrap_or_default();
            derive_role(&m.role_inputs(&link.groups, &link.scim_roles), &self.mappings, self.org.sso.default_role)
        }

        /// Makes the member's role what its sources give now (as every door does).
        fn settle(&mut self, id: Uuid) {
            let d = self.derive(self.members.iter().find(|m| m.id == id).unwrap());
            self.edit(id, |m| m.set_role(&d));
        }

        fn invite(&mut self, n: u128, name: &str, created: i64, expires: i64) {
            self.invitations.push(Invitation {
                id: Uuid::from_u128(n),
                org_id: self.org.id,
                email: email(name),
                role: Role::Read,
                status: InvitationStatus::Pending,
                expires_at: at(expires),
                invited_by: "test".into(),
                created_at: at(created),
                updated_at: at(created),
                email_delivery: None,
            });
        }

        fn map(&mut self, source: RoleMappingSource, value: &str, role: Role) {
            self.mappings.push(RoleMapping {
                id: Uuid::from_u128(0x3000 + self.mappings.len() as u128),
                org_id: self.org.id,
                source,
                value: value.into(),
                role,
                created_by: "test".into(),
                created_at: at(1),
            });
        }

        /// The plan, from the members as the store lists them (by id) and
        /// the pending invitations oldest first.
        fn plan(&self) -> ReconcilePlan {
            let mut members = self.members.clone();
            members.sort_by_key(|m| m.id);
            let mut invitations = self.invitations.clone();
            invitations.sort_by_key(|i| (i.created_at, i.id));
            plan(&PlanInput {
                org: &self.org,
                now: at(NOW),
                members: &members,
                links: &self.links,
                invitations: &invitations,
                mappings: &self.mappings,
            })
        }

        /// What `apply_in` does to the state, change by change.
        fn apply(&mut self, plan: &ReconcilePlan) {
            for change in &plan.changes {
                match change {
                    PlannedChange::ExpireInvitation { invitation, .. }
                    | PlannedChange::RevokeInvitation { invitation, .. } => {
                        let before = self.invitations.len();
                        self.invitations.retain(|i| i.id != *invitation);
                        assert_eq!(self.invitations.len() + 1, before, "{change:?} names a pending invitation");
                    }
                    PlannedChange::SuspendMember { member, .. } => {
                        self.edit(*member, |m| {
                            assert_eq!(m.status, MemberStatus::Active, "{change:?} suspends an active member");
                            m.status = MemberStatus::Suspended;
                        });
                        self.link(*member).live_sessions = 0;
                    }
                    PlannedChange::ChangeRole { member, from, to, source, .. } => {
                        self.edit(*member, |m| {
                            assert_eq!(m.role, *from, "{change:?} starts from the member's role");
                            m.set_role(&Derivation { role: *to, source: source.clone() });
                        });
                    }
                    PlannedChange::EndSessions { member, .. } => self.link(*member).live_sessions = 0,
                }
            }
            // The store lists removed members only while they have live sessions.
            let links = &self.links;
            self.members.retain(|m| {
                m.status != MemberStatus::Deprovisioned || links.get(&m.id).is_some_and(|l| l.live_sessions > 0)
            });
        }
    }

    fn local(email: &Email) -> &str {
        email.as_str().split('@').next().unwrap()
    }

    fn local_of(email: &Option<Email>) -> &str {
        email.as_ref().map_or("", local)
    }

    fn source_name(source: &RoleSource) -> String {
        match source {
            RoleSource::Manual => "manual".into(),
            RoleSource::Default => "default".into(),
            RoleSource::Group { name } => format!("group:{name}"),
            RoleSource::ScimRole { value } => format!("scim:{value}"),
            RoleSource::SsoRole { value } => format!("sso:{value}"),
        }
    }

    /// A change in a few words: `suspend bob (read)`.
    fn summary(change: &PlannedChange) -> String {
        match change {
            PlannedChange::ExpireInvitation { email, .. } => format!("expire {}", local(email)),
            PlannedChange::RevokeInvitation { email, .. } => format!("revoke {}", local(email)),
            PlannedChange::SuspendMember { email, role, .. } => format!("suspend {} ({role})", local_of(email)),
            PlannedChange::ChangeRole { email, from, to, source, .. } => {
                format!("role {} {from}->{to} {}", local_of(email), source_name(source))
            }
            PlannedChange::EndSessions { email, sessions, .. } => format!("end {} {sessions}", local_of(email)),
        }
    }

    struct Case {
        name: &'static str,
        world: World,
        changes: &'static [&'static str],
        /// One substring per `kept` note, in order.
        kept: &'static [&'static str],
        /// used, used_after, overage_after
        seats: (i64, i64, i64),
    }

    fn cases() -> Vec<Case> {
        use MemberStatus::*;
        use Role::*;
        use RoleMappingSource::{Group, IdpRole};
        use SeatPolicy::*;
        let mut cases = Vec::new();

        let mut w = World::new(2, Strict);
        w.member(1, "owner", Owner, 0);
        let gone = w.member(2, "gone", Read, 1);
        w.link(gone).scim_active = Some(false);
        w.invite(10, "late", 5, NOW - 1);
        w.invite(11, "edge", 6, NOW); // expires exactly now: expired
        w.invite(12, "live", 7, NOW + 60);
        cases.push(Case {
            name: "expired invitations come first and hold no seat",
            world: w,
            changes: &["expire late", "expire edge", "suspend gone (read)"],
            kept: &[],
            seats: (3, 2, 0),
        });

        let mut w = World::new(3, Strict);
        w.member(1, "owner", Owner, 0);
        w.member(2, "r1", Read, 10);
        w.member(3, "w2", Write, 20);
        w.member(4, "a3", Admin, 30);
        w.member(5, "r4", Read, 40);
        w.invite(20, "iold", 50, NOW + 100);
        w.invite(21, "inew", 60, NOW + 100);
        w.invite(19, "expired", 70, NOW - 100);
        let overage_world = w.clone();
        cases.push(Case {
            name: "strict overage: newest invitations revoked first, then newest read/write members",
            world: w,
            changes: &["expire expired", "revoke inew", "revoke iold", "suspend r4 (read)", "suspend w2 (write)"],
            kept: &[],
            seats: (7, 3, 0),
        });

        let mut w = overage_world;
        w.org.seat_policy = Overage;
        cases.push(Case {
            name: "overage policy cuts nothing and reports the overage",
            world: w,
            changes: &["expire expired"],
            kept: &[],
            seats: (7, 7, 4),
        });

        let mut w = World::new(1, Strict);
        w.member(1, "owner", Owner, 0);
        w.member(2, "admin", Admin, 90);
        w.member(3, "reader", Read, 10);
        w.member(4, "writer", Write, 20);
        cases.push(Case {
            name: "Admins only after every read/write member, whatever their joining time",
            world: w,
            changes: &["suspend writer (write)", "suspend reader (read)", "suspend admin (admin)"],
            kept: &[],
            seats: (4, 1, 0),
        });

        let mut w = World::new(2, Strict);
        w.member(1, "owner", Owner, 0);
        w.member(0x20, "second", Read, 10);
        w.member(0x10, "first", Write, 10);
        w.member(0x30, "admin", Admin, 10);
        cases.push(Case {
            name: "same joining time: the greater id goes first",
            world: w,
            changes: &["suspend second (read)", "suspend first (write)"],
            kept: &[],
            seats: (4, 2, 0),
        });

        let mut w = World::new(1, Strict);
        w.member(1, "owner1", Owner, 0);
        w.member(2, "owner2", Owner, 50);
        w.member(3, "reader", Read, 10);
        w.invite(10, "invitee", 20, NOW + 10);
        cases.push(Case {
            name: "Owners are never suspended: their excess is kept",
            world: w,
            changes: &["revoke invitee", "suspend reader (read)"],
            kept: &["1 seats over the limit are held by Owners"],
            seats: (4, 2, 1),
        });

        let mut w = World::new(10, Strict);
        w.member(1, "owner", Owner, 0);
        let gone = w.idp_member(2, "gone", 1);
        w.link(gone).scim_active = Some(false);
        let asleep = w.idp_member(3, "asleep", 2);
        w.link(asleep).scim_active = Some(false);
        w.edit(asleep, |m| m.status = Suspended);
        w.idp_member(4, "fine", 3);
        w.member(5, "plain", Write, 4);
        cases.push(Case {
            name: "SCIM active=false suspends an active member, nobody else",
            world: w,
            changes: &["suspend gone (read)"],
            kept: &[],
            seats: (4, 3, 0),
        });

        let mut w = World::new(10, Strict);
        let o1 = w.member(1, "owner1", Owner, 0);
        let o2 = w.member(2, "owner2", Owner, 1);
        w.link(o1).scim_active = Some(false);
        w.link(o2).scim_active = Some(false);
        cases.push(Case {
            name: "SCIM-deactivated Owners are suspended except the longest-standing one",
            world: w,
            changes: &["suspend owner2 (owner)"],
            kept: &["owner1@acme.test is deactivated in the identity provider but is the last Owner"],
            seats: (2, 1, 0),
        });

        let mut w = World::new(10, Strict);
        w.member(1, "owner", Owner, 0);
        let eng = w.idp_member(2, "eng", 1);
        w.in_group(eng, "Eng-Admins", None);
        let pinned = w.member(3, "pinned", Write, 2);
        w.in_group(pinned, "eng-admins", None);
        let fallback = w.member(4, "fallback", Admin, 3);
        w.edit(fallback, |m| m.role_pinned = false);
        w.in_group(fallback, "Platform", Some("ENG-ADMINS"));
        let scimmer = w.idp_member(5, "scimmer", 4);
        w.link(scimmer).scim_roles = vec!["Writer".into()];
        let settled = w.idp_member(6, "settled", 5);
        w.link(settled).scim_roles = vec!["admin".into()];
        for id in [eng, pinned, fallback, scimmer, settled] {
            w.settle(id);
        }
        w.map(Group, "eng-admins", Admin);
        w.map(IdpRole, "writer", Write);
        cases.push(Case {
            name: "role drift after mappings were added",
            world: w,
            changes: &[
                "role eng read->admin group:Eng-Admins",
                "role fallback admin->admin group:Platform",
                "role scimmer read->write scim:Writer",
            ],
            kept: &[],
            seats: (6, 6, 0),
        });

        let mut w = World::new(10, Strict);
        w.member(1, "owner", Owner, 0);
        let d = w.idp_member(2, "defaulted", 1);
        let m = w.member(3, "fallback", Write, 1);
        w.edit(m, |m| m.role_pinned = false);
        w.settle(d);
        w.settle(m);
        w.org.sso.default_role = Write;
        cases.push(Case {
            name: "a new default role drifts default-sourced members only",
            world: w,
            changes: &["role defaulted read->write default"],
            kept: &[],
            seats: (3, 3, 0),
        });

        // Owners held before derivation without a manual Owner role derive
        // another role; the last active one keeps Owner.
        let legacy = |m: &mut Member| {
            m.manual_role = None;
            m.role_pinned = false;
        };
        let mut w = World::new(10, Strict);
        let o = w.member(1, "legacy", Owner, 0);
        w.edit(o, legacy);
        w.member(2, "reader", Read, 1);
        cases.push(Case {
            name: "the last Owner is never demoted",
            world: w,
            changes: &[],
            kept: &["legacy@acme.test stays Owner"],
            seats: (2, 2, 0),
        });

        let mut w = World::new(10, Strict);
        let o1 = w.member(1, "legacy1", Owner, 0);
        let o2 = w.member(2, "legacy2", Owner, 1);
        let o3 = w.member(3, "sleeping", Owner, 2);
        for id in [o1, o2, o3] {
            w.edit(id, legacy);
        }
        w.edit(o3, |m| m.status = Suspended);
        cases.push(Case {
            name: "Owners are demoted but the longest-standing active one; suspended ones freely",
            world: w,
            changes: &["role legacy2 owner->read default", "role sleeping owner->read default"],
            kept: &["legacy1@acme.test stays Owner"],
            seats: (2, 2, 0),
        });

        let mut w = World::new(10, Strict);
        let o = w.member(1, "owner", Owner, 0);
        w.link(o).live_sessions = 1;
        let susp = w.member(2, "susp", Read, 1);
        w.edit(susp, |m| m.status = Suspended);
        w.link(susp).live_sessions = 2;
        let removed = w.idp_member(3, "removed", 2);
        w.edit(removed, |m| m.status = Deprovisioned);
        w.in_group(removed, "eng-admins", None); // drift, but a removed member's role is left alone
        w.link(removed).live_sessions = 1;
        let busy = w.member(4, "busy", Write, 3);
        w.link(busy).live_sessions = 3;
        let leaving = w.idp_member(5, "leaving", 4);
        w.link(leaving).scim_active = Some(false);
        w.link(leaving).live_sessions = 2;
        let quiet = w.member(6, "quiet", Read, 5);
        w.edit(quiet, |m| m.status = Suspended);
        w.map(Group, "eng-admins", Admin);
        cases.push(Case {
            name: "sessions of suspended and removed members are ended",
            world: w,
            // `leaving`'s sessions end with its suspension (apply ends them).
            changes: &["suspend leaving (read)", "end susp 2", "end removed 1"],
            kept: &[],
            seats: (3, 2, 0),
        });

        let mut w = World::new(2, Strict);
        let o = w.member(1, "owner", Owner, 0);
        w.link(o).live_sessions = 1;
        let cut = w.member(2, "cut", Read, 5);
        w.link(cut).live_sessions = 4;
        w.member(3, "stays", Write, 1);
        cases.push(Case {
            name: "a member suspended for seats has its sessions ended by the suspension",
            world: w,
            changes: &["suspend cut (read)"],
            kept: &[],
            seats: (3, 2, 0),
        });

        let mut w = World::new(3, Strict);
        w.member(1, "owner", Owner, 0);
        let g = w.idp_member(2, "grouped", 1);
        w.in_group(g, "eng-admins", None);
        w.map(Group, "eng-admins", Admin);
        w.settle(g);
        w.invite(10, "pending", 3, NOW + 1);
        cases.push(Case { name: "nothing out of line", world: w, changes: &[], kept: &[], seats: (3, 3, 0) });

        cases
    }

    #[test]
    fn plan_table() {
        let mut failures = Vec::new();
        for case in cases() {
            let plan = case.world.plan();
            let changes: Vec<String> = plan.changes.iter().map(summary).collect();
            if changes != case.changes {
                failures.push(format!("{}: changes\n  expected {:?}\n  got      {changes:?}", case.name, case.changes));
            }
            let kept_ok = plan.kept.len() == case.kept.len()
                && plan.kept.iter().zip(case.kept).all(|(got, want)| got.contains(want));
            if !kept_ok {
                failures.push(format!("{}: kept\n  expected {:?}\n  got      {:?}", case.name, case.kept, plan.kept));
            }
            let seats = (plan.seats.used, plan.seats.used_after, plan.seats.overage_after);
            if seats != case.seats {
                failures.push(format!(
                    "{}: seats (used, used_after, overage_after) expected {:?}, got {seats:?}",
                    case.name, case.seats
                ));
            }
            let org = &case.world.org;
            let header = (plan.organization, plan.generated_at, plan.seats.purchased, plan.seats.policy);
            if header != (org.id, at(NOW), org.purchased_seats, org.seat_policy) {
                failures.push(format!("{}: plan header {header:?}", case.name));
            }
        }
        assert!(failures.is_empty(), "plan cases failed:\n{}", failures.join("\n"));
    }

    /// After a plan is applied, planning again finds nothing to do, and the
    /// seats it counts are those the first plan announced.
    #[test]
    fn a_plan_applied_then_replanned_is_empty() {
        for case in cases() {
            let mut world = case.world;
            let first = world.plan();
            world.apply(&first);
            let again = world.plan();
            let changes: Vec<String> = again.changes.iter().map(summary).collect();
            assert!(again.is_empty(), "{}: planned again after apply: {changes:?}", case.name);
            assert_eq!(again.seats.used, first.seats.used_after, "{}: seats in use after apply", case.name);
            assert_eq!(again.seats.used_after, again.seats.used, "{}", case.name);
            assert_eq!(again.seats.overage_after, first.seats.overage_after, "{}", case.name);
            // What the rules keep stays kept, and nothing else is.
            assert_eq!(again.kept.len(), first.kept.len(), "{}: {:?} then {:?}", case.name, first.kept, again.kept);
            assert_eq!(again.fingerprint, fingerprint(&[]), "{}", case.name);
        }
    }

    #[test]
    fn reasons_say_why() {
        let mut w = World::new(1, SeatPolicy::Strict);
        w.member(1, "owner", Role::Owner, 0);
        let eng = w.idp_member(2, "eng", 1);
        w.in_group(eng, "eng-admins", None);
        let same = w.member(3, "same", Role::Admin, 2);
        w.edit(same, |m| m.role_pinned = false);
        w.in_group(same, "eng-admins", None);
        w.map(RoleMappingSource::Group, "eng-admins", Role::Admin);
        w.invite(10, "old", 0, NOW - 60);
        let plan = w.plan();
        let reasons: Vec<(String, &str)> = plan.changes.iter().map(|c| (summary(c), reason_of(c))).collect();
        let want = [
            ("expire old", "the invitation expired at 2026-03-08 09:40 UTC"),
            (
                "role eng read->admin group:eng-admins",
                "role drift: the sources give Admin, from group eng-admins but the member is Read",
            ),
            (
                "role same admin->admin group:eng-admins",
                "same role, now decided by another source: Admin, from group eng-admins",
            ),
            ("suspend same (admin)", "seat overage: 3 seats in use, 1 purchased (strict seat policy)"),
            ("suspend eng (admin)", "seat overage: 2 seats in use, 1 purchased (strict seat policy)"),
        ];
        assert_eq!(reasons.len(), want.len(), "{reasons:?}");
        for ((summary, reason), (want_summary, want_reason)) in reasons.iter().zip(want) {
            assert_eq!(summary, want_summary, "{reasons:?}");
            assert!(reason.contains(want_reason), "{summary}: `{reason}` should contain `{want_reason}`");
        }
        // The JSON form is tagged by action.
        let json = serde_json::to_value(&plan.changes[1]).unwrap();
        assert_eq!(json["action"], "change_role");
        assert_eq!(json["source"], serde_json::json!({"kind": "group", "name": "eng-admins"}));
        assert_eq!(json["from"], "read");
        assert_eq!(json["to"], "admin");
    }

    #[test]
    fn fingerprint_names_the_list_of_changes() {
        let mut w = World::new(1, SeatPolicy::Strict);
        w.member(1, "owner", Role::Owner, 0);
        w.member(2, "reader", Role::Read, 1);
        let first = w.plan();
        let second = w.plan();
        assert_eq!(first, second, "the same state gives the same plan");
        assert_eq!(first.fingerprint.len(), 24);
        assert!(first.fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(first.fingerprint, fingerprint(&first.changes));

        // Another cut: another fingerprint.
        let mut other = w.clone();
        other.member(3, "writer", Role::Write, 2);
        let third = other.plan();
        assert_ne!(third.changes, first.changes);
        assert_ne!(third.fingerprint, first.fingerprint);

        // The same cut with another reason (seat counts differ): another fingerprint.
        let mut bigger = w.clone();
        bigger.org.purchased_seats = 0;
        let fourth = bigger.plan();
        assert_eq!(fourth.changes.iter().map(summary).collect::<Vec<_>>(), ["suspend reader (read)"]);
        assert_ne!(fourth.fingerprint, first.fingerprint);

        // Nothing to do: the empty fingerprint, whatever the state.
        let mut calm = w;
        calm.org.purchased_seats = 5;
        let empty = calm.plan();
        assert!(empty.is_empty());
        assert_eq!(empty.fingerprint, fingerprint(&[]));
        assert_ne!(empty.fingerprint, first.fingerprint);
    }

    #[test]
    fn only_expiries_and_session_ends_are_housekeeping() {
        let email = email("x");
        let id = Uuid::from_u128(1);
        let reason = String::new();
        let housekeeping = [
            PlannedChange::ExpireInvitation {
                invitation: id,
                email: email.clone(),
                expired_at: at(0),
                reason: reason.clone(),
            },
            PlannedChange::EndSessions { member: id, email: Some(email.clone()), sessions: 1, reason: reason.clone() },
        ];
        let disruptive = [
            PlannedChange::RevokeInvitation { invitation: id, email: email.clone(), reason: reason.clone() },
            PlannedChange::SuspendMember {
                member: id,
                email: Some(email.clone()),
                role: Role::Read,
                reason: reason.clone(),
            },
            PlannedChange::ChangeRole {
                member: id,
                email: Some(email),
                from: Role::Read,
                to: Role::Write,
                source: RoleSource::Default,
                reason,
            },
        ];
        assert!(housekeeping.iter().all(|c| !c.disruptive()));
        assert!(disruptive.iter().all(PlannedChange::disruptive));
    }

    /// Random states: whatever the state, the plan leaves strict seats
    /// within the limit (but for Owners), keeps an active Owner, makes every
    /// role the derived one (but the last Owner's), and planning again after
    /// it is applied finds nothing.
    #[test]
    fn random_states_reconcile_in_one_plan() {
        use Role::*;
        const GROUPS: [(&str, Option<&str>); 4] =
            [("eng-admins", None), ("Writers", Some("grp-w")), ("Readers", Some("GRP-R")), ("Sales", None)];
        const IDP_ROLES: [&str; 6] = ["Admin", "Writer", "read", "owner", "Engineer", "Tenant Admin"];
        const MAPPINGS: [(RoleMappingSource, &str, Role); 6] = [
            (RoleMappingSource::Group, "ENG-ADMINS", Admin),
            (RoleMappingSource::Group, "grp-w", Write),
            (RoleMappingSource::Group, "readers", Read),
            (RoleMappingSource::IdpRole, "writer", Write),
            (RoleMappingSource::IdpRole, "engineer", Admin),
            (RoleMappingSource::IdpRole, "admin", Read),
        ];
        let roles = [Read, Write, Admin, Owner];
        for seed in 0..400u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let policy = if rng.gen_bool(0.75) { SeatPolicy::Strict } else { SeatPolicy::Overage };
            let mut w = World::new(rng.gen_range(0..6), policy);
            w.org.sso.default_role = roles[rng.gen_range(0..3)];
            for (source, value, role) in MAPPINGS {
                if rng.gen_bool(0.4) {
                    w.map(source, value, role);
                }
            }
            let first = w.member(1, "first-owner", Owner, 0);
            if rng.gen_bool(0.3) {
                // An Owner from before derivation: its sources give another role.
                w.edit(first, |m| {
                    m.manual_role = None;
                    m.role_pinned = false;
                });
            }
            if rng.gen_bool(0.3) {
                w.link(first).scim_active = Some(false);
            }
            for n in 2..rng.gen_range(2..10u128) {
                let name = format!("m{n}");
                let joined = rng.gen_range(0..5); // joining times collide: ids break ties
                let id = if rng.gen_bool(0.5) {
                    w.member(n, &name, roles[rng.gen_range(0..4)], joined)
                } else {
                    w.idp_member(n, &name, joined)
                };
                if rng.gen_bool(0.3) {
                    let manual = roles[rng.gen_range(0..4)];
                    let pinned = rng.gen_bool(0.5);
                    w.edit(id, |m| {
                        m.manual_role = Some(manual);
                        m.role_pinned = pinned;
                    });
                }
                for (name, ext) in GROUPS {
                    if rng.gen_bool(0.3) {
                        w.in_group(id, name, ext);
                    }
                }
                for value in IDP_ROLES {
                    if rng.gen_bool(0.15) {
                        w.link(id).scim_roles.push(value.into());
                    }
                    if rng.gen_bool(0.1) {
                        w.edit(id, |m| m.sso_roles.push(value.into()));
                    }
                }
                // Roles drift from their sources (a mapping or the default role
                // changed since), but never away from a manual Owner: every door
                // derives Owner from it (see the test below for what the plan
                // does when it meets one).
                let manual_owner = w.members.iter().any(|m| m.id == id && m.manual_role == Some(Owner));
                if manual_owner || rng.gen_bool(0.6) {
                    w.settle(id);
                }
                if w.links.get(&id).is_some_and(|l| l.scim_user.is_some()) && rng.gen_bool(0.25) {
                    w.link(id).scim_active = Some(false);
                }
                let status =
                    [MemberStatus::Active, MemberStatus::Active, MemberStatus::Suspended, MemberStatus::Deprovisioned]
                        [rng.gen_range(0..4)];
                w.edit(id, |m| m.status = status);
                w.link(id).live_sessions = rng.gen_range(0..3);
            }
            for n in 0..rng.gen_range(0..4u128) {
                let created = rng.gen_range(0..100);
                let expires = NOW + rng.gen_range(-50..50);
                w.invite(0x100 + n, &format!("i{n}"), created, expires);
            }
            // The store hands over removed members only while they have sessions.
            let links = w.links.clone();
            w.members.retain(|m| {
                m.status != MemberStatus::Deprovisioned || links.get(&m.id).is_some_and(|l| l.live_sessions > 0)
            });

            let before = w.clone();
            let plan = w.plan();
            let context = || {
                let members: Vec<String> = before
                    .members
                    .iter()
                    .map(|m| {
                        format!(
                            "{} {} {} manual={:?} pinned={} links={:?}",
                            m.label(),
                            m.status,
                            m.role,
                            m.manual_role,
                            m.role_pinned,
                            before.links.get(&m.id)
                        )
                    })
                    .collect();
                format!(
                    "seed {seed}: seats {} {:?}, mappings {:?}\n{}\nplan {:#?}",
                    before.org.purchased_seats,
                    before.org.seat_policy,
                    before.mappings.iter().map(|m| (m.source, &m.value, m.role)).collect::<Vec<_>>(),
                    members.join("\n"),
                    plan.changes.iter().map(summary).collect::<Vec<_>>()
                )
            };
            assert_eq!(plan, w.plan(), "{}", context());
            w.apply(&plan);

            let active: Vec<&Member> = w.members.iter().filter(|m| m.status == MemberStatus::Active).collect();
            let live = w.invitations.iter().filter(|i| i.expires_at > at(NOW)).count() as i64;
            assert!(w.invitations.iter().all(|i| i.expires_at > at(NOW)), "expired invitations left: {}", context());
            assert_eq!(plan.seats.used_after, active.len() as i64 + live, "{}", context());
            if policy == SeatPolicy::Strict && plan.seats.used_after > w.org.purchased_seats {
                assert!(live == 0 && active.iter().all(|m| m.role == Owner), "{}", context());
                assert_eq!(plan.kept.iter().filter(|k| k.contains("held by Owners")).count(), 1, "{}", context());
            }
            let held_by_owners = plan.kept.iter().filter(|k| k.contains("held by Owners")).count();
            if policy == SeatPolicy::Strict && plan.seats.used_after <= w.org.purchased_seats {
                assert_eq!(held_by_owners, 0, "{}", context());
            }
            if policy == SeatPolicy::Overage {
                let cuts = plan
                    .changes
                    .iter()
                    .filter(|c| matches!(c, PlannedChange::RevokeInvitation { .. }) || reason_of(c).contains("seat"))
                    .count();
                assert_eq!(cuts, 0, "{}", context());
                assert_eq!(held_by_owners, 0, "{}", context());
            }
            assert!(active.iter().any(|m| m.role == Owner), "no active Owner left: {}", context());
            for m in w.members.iter().filter(|m| m.status != MemberStatus::Deprovisioned) {
                let d = w.derive(m);
                let last_owner_kept = m.role == Owner
                    && m.status == MemberStatus::Active
                    && plan.kept.iter().any(|k| k.starts_with(&format!("{} stays Owner", m.label())));
                assert!(
                    (m.role, &m.role_source) == (d.role, &d.source) || last_owner_kept,
                    "{} is {} by {:?}, derivation {d:?}: {}",
                    m.label(),
                    m.role,
                    m.role_source,
                    context()
                );
                if m.status != MemberStatus::Active {
                    assert_eq!(w.links.get(&m.id).map_or(0, |l| l.live_sessions), 0, "{}: {}", m.label(), context());
                }
                if w.links.get(&m.id).and_then(|l| l.scim_active) == Some(false) && m.status == MemberStatus::Active {
                    assert!(plan.kept.iter().any(|k| k.contains("is deactivated")), "{}: {}", m.label(), context());
                }
            }
            let again = w.plan();
            assert!(
                again.is_empty(),
                "planned again: {:?}\n{}",
                again.changes.iter().map(summary).collect::<Vec<_>>(),
                context()
            );
        }
    }

    // The Owners a plan ends with include those it promotes: an active
    // Owner whose sources give another role is demoted in the same plan when
    // another member becomes Owner, so the plan applied and planned again is
    // empty.
    #[test]
    fn an_owner_made_by_the_plan_counts_for_the_last_owner_rule() {
        let mut w = World::new(5, SeatPolicy::Strict);
        let legacy = w.member(1, "legacy", Role::Owner, 0);
        w.edit(legacy, |m| {
            m.manual_role = None;
            m.role_pinned = false;
        });
        let heir = w.member(2, "heir", Role::Owner, 1);
        w.edit(heir, |m| m.set_role(&Derivation { role: Role::Admin, source: RoleSource::Manual }));
        let first = w.plan();
        w.apply(&first);
        let again = w.plan();
        assert!(
            again.is_empty(),
            "first plan {:?} kept {:?}; planned again: {:?}",
            first.changes.iter().map(summary).collect::<Vec<_>>(),
            first.kept,
            again.changes.iter().map(summary).collect::<Vec<_>>()
        );
    }
}
