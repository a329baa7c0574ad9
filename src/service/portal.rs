//! The portal's own use cases: who a browser session is (with the idle
//! timeout), switching organization, one-time sign-in links for operators,
//! the summary on Home, and the previews the portal shows before a change
//! (an invitation upload, a seat decrease). Every change itself goes through
//! the same service functions as the admin API, with the same permission
//! checks and audit records.

use super::invitations::not_invitable;
use super::*;
use crate::model::*;
use crate::secrets::{generate_token, hash_token, Secret};
use crate::store::{Member, Organization, SignInLink, SsoClient};
use chrono::{DateTime, Duration, Utc};

/// The portal's place among the product clients: Roster signs people in
/// to its own portal through the same SSO and emailed-link logins as the
/// product. It exists in no table; the logins add it to an organization's
/// clients.
pub const PORTAL_CLIENT_ID: Uuid = uuid::uuid!("00000000-0000-7000-8000-00000000a11d");

/// A session refreshes its last-seen time at most this often.
const TOUCH_EVERY_SECS: i64 = 60;

/// A member signed in to the portal.
#[derive(Debug, Clone)]
pub struct PortalSession {
    /// The member as the services see them: the portal acts with the member's role.
    pub actor: Actor,
    pub session_id: Uuid,
    pub member: Member,
    pub org: Organization,
    /// Every organization where this person is an active member (for the switcher).
    pub memberships: Vec<Membership>,
    pub expires_at: DateTime<Utc>,
}

/// One organization a person belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub org_id: Uuid,
    pub org_name: String,
    pub role: Role,
}

/// Where switching organization leads.
#[derive(Debug)]
pub enum Switch {
    /// A session in the other organization, as a cookie value, and its end.
    Session(Secret, DateTime<Utc>),
    /// The other organization signs in only through its SSO: start there.
    SignIn(String),
}

/// An upload of `email,role` lines as it would be sent.
#[derive(Debug, Clone)]
pub struct InvitationPreview {
    pub rows: Vec<CsvInvitation>,
    /// Bad lines, duplicates, and addresses already members or invited.
    pub errors: Vec<LineError>,
    /// Seats free now (below zero when over the limit).
    pub seats_free: i64,
    pub policy: SeatPolicy,
}

impl InvitationPreview {
    /// Seats the upload would take beyond those free.
    pub fn seats_short(&self) -> i64 {
        match self.policy {
            SeatPolicy::Strict => (self.rows.len() as i64 - self.seats_free.max(0)).max(0),
            SeatPolicy::Overage => 0,
        }
    }

    /// Whether sending would be accepted: every line good, seats enough.
    pub fn can_send(&self) -> bool {
        self.errors.is_empty() && !self.rows.is_empty() && self.seats_short() == 0
    }
}

/// What Home shows about the organization.
#[derive(Debug, Clone)]
pub struct HomeSummary {
    pub seats: Seats,
    pub domains_verified: usize,
    pub domains: usize,
    pub sso_configured: bool,
    pub scim_tokens: usize,
    /// Members the identity provider provisioned over SCIM.
    pub scim_members: i64,
}

impl Roster {
    /// Where SSO and emailed-link logins return to sign in to the portal.
    pub fn portal_callback(&self) -> String {
        self.settings.mail.link("portal/callback", &[])
    }

    /// The portal as a product client, added to every organization's own.
    pub(super) fn portal_client(&self) -> SsoClient {
        SsoClient {
            id: PORTAL_CLIENT_ID,
            org_id: None,
            name: "Roster portal".into(),
            redirect_uris: vec![self.portal_callback()],
            created_by: "roster".into(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            revoked_at: None,
        }
    }

    /// The clients a login for `org_id` may return to: the organization's,
    /// the deployment's, and the portal.
    pub(super) async fn login_clients(&self, tx: &mut dyn Tx, org_id: Uuid) -> ServiceResult<Vec<SsoClient>> {
        let mut clients = tx.sso_clients_for(org_id).await?;
        clients.push(self.portal_client());
        Ok(clients)
    }

    /// The live portal session a cookie names, or `None` when there is none,
    /// it ended, expired, or sat idle longer than `idle` (then it ends now),
    /// or its member is no longer active.
    pub async fn portal_session(
        &self,
        token: &str,
        idle: Duration,
        request_id: Option<String>,
    ) -> ServiceResult<Option<PortalSession>> {
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let Some(session) = tx.find_sso_session(&hash_token(token)).await? else { return Ok(None) };
        if session.ended_at.is_some() || session.expires_at <= now {
            return Ok(None);
        }
        let last_seen = session.last_seen_at.unwrap_or(session.created_at);
        if last_seen + idle <= now {
            drop(tx);
            let mut tx = self.store.begin().await?;
            if tx.end_sso_session(session.id, now).await? {
                let actor = session_actor(session.org_id, format!("session:{}", session.id), Role::Read, None);
                let detail = serde_json::json!({ "reason": "idle", "last_seen_at": last_seen });
                tx.insert_audit(actor.audit(
                    now,
                    "portal.session_ended",
                    session.member_id,
                    None::<&()>,
                    Some(&detail),
                ))
                .await?;
            }
            tx.commit().await?;
            return Ok(None);
        }
        let Some(member) = tx.get_member(session.org_id, session.member_id).await? else { return Ok(None) };
        if member.status != MemberStatus::Active {
            return Ok(None);
        }
        let Some(org) = tx.get_org(session.org_id).await? else { return Ok(None) };
        let memberships = tx
            .active_memberships(member.user_id)
            .await?
            .into_iter()
            .map(|(org_id, org_name, role)| Membership { org_id, org_name, role })
            .collect();
        drop(tx);
        if now - last_seen >= Duration::seconds(TOUCH_EVERY_SECS) {
            let mut tx = self.store.begin().await?;
            tx.touch_sso_session(session.id, now).await?;
            tx.commit().await?;
        }
        Ok(Some(PortalSession {
            actor: session_actor(org.id, member.label(), member.role, request_id),
            session_id: session.id,
            member,
            org,
            memberships,
            expires_at: session.expires_at,
        }))
    }

    /// Moves a signed-in person to another organization they are an active
    /// member of: a session there, ending this one, unless that organization
    /// signs in only through its SSO (then its login).
    pub async fn switch_organization(&self, from: &PortalSession, org_id: Uuid) -> ServiceResult<Switch> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = tx.get_org(org_id).await?.ok_or(ServiceError::NotFound("organization"))?;
        let email = from.member.email.clone().ok_or(ServiceError::NotFound("organization"))?;
        let member = tx
            .find_person(org.id, &email)
            .await?
            .member
            .filter(|m| m.status == MemberStatus::Active && m.user_id == from.member.user_id)
            .ok_or(ServiceError::NotFound("organization"))?;
        if org.sso.enforce {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query
                .append_pair("organization", &org.id.to_string())
                .append_pair("redirect_uri", &self.portal_callback())
                .append_pair("client_id", &PORTAL_CLIENT_ID.to_string());
            return Ok(Switch::SignIn(format!("/sso/authorize?{}", query.finish())));
        }
        let ttl = from.expires_at - now;
        let (session, expires) = open_session_for(&mut *tx, &member, ttl, now).await?;
        tx.end_sso_session(from.session_id, now).await?;
        let actor = session_actor(org.id, member.label(), member.role, from.actor.request_id.clone());
        let detail = serde_json::json!({ "from_organization": from.org.id });
        tx.insert_audit(actor.audit(now, "portal.switched_organization", member.id, None::<&()>, Some(&detail)))
            .await?;
        tx.commit().await?;
        Ok(Switch::Session(session, expires))
    }

    /// A one-time link that signs `email` in to the portal of `org_id` (the
    /// operator's `roster portal link`): 15 minutes, single use, in any
    /// browser. The email must be an active member, and the organization
    /// must not enforce SSO.
    pub async fn portal_link(&self, org_id: Uuid, email: &Email, created_by: &str) -> ServiceResult<String> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, org_id).await?;
        if org.sso.enforce {
            return Err(ServiceError::Conflict(format!(
                "{} signs in only through its single sign-on; sign in there",
                org.name
            )));
        }
        let member =
            tx.find_person(org.id, email).await?.member.filter(|m| m.status == MemberStatus::Active).ok_or_else(
                || ServiceError::invalid("email", format!("{email} is not an active member of {}", org.name)),
            )?;
        let token = generate_token("roster_link");
        let link = SignInLink {
            org_id: org.id,
            email: email.clone(),
            client_id: PORTAL_CLIENT_ID,
            redirect_uri: self.portal_callback(),
            state: None,
            // Bound to no browser: the operator hands it over.
            browser_hash: String::new(),
            created_at: now,
            expires_at: now + Duration::minutes(SIGN_IN_LINK_TTL_MINUTES),
            used_at: None,
        };
        tx.insert_sign_in_link(&hash_token(token.expose()), &link).await?;
        let actor = Operator::cli_as(created_by).on(org.id);
        let detail = serde_json::json!({ "email": email.as_str(), "expires_at": link.expires_at });
        tx.insert_audit(actor.audit(now, "portal.link_issued", member.id, None::<&()>, Some(&detail))).await?;
        tx.commit().await?;
        Ok(self.settings.mail.link("signin/link", &[("token", token.expose())]))
    }

    /// What Home shows: seats, domains, SSO and SCIM at a glance.
    pub async fn portal_home(&self, actor: &Actor) -> ServiceResult<HomeSummary> {
        actor.require(Role::Read)?;
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let org = tx.get_org(actor.org_id).await?.ok_or(ServiceError::NotFound("organization"))?;
        let seats = Seats::of(&org, tx.seat_usage(org.id, now).await?);
        let domains = tx.list_domains(org.id).await?;
        let sso_configured = self.connection_for(&mut *tx, &org).await.is_ok();
        let scim_tokens = tx
            .list_credentials(org.id, CredentialKind::ScimToken)
            .await?
            .iter()
            .filter(|c| c.revoked_at.is_none() && c.expires_at.is_none_or(|e| e > now))
            .count();
        let scim = crate::store::MemberFilter { source: Some(MemberSource::Scim), ..Default::default() };
        let scim_members = tx.count_members(org.id, &scim).await?;
        Ok(HomeSummary {
            seats,
            domains_verified: domains.iter().filter(|d| d.status == DomainStatus::Verified).count(),
            domains: domains.len(),
            sso_configured,
            scim_tokens,
            scim_members,
        })
    }

    /// An upload of `email,role` lines checked as sending it would check
    /// it, without sending anything: every bad or duplicate line, every
    /// address already a member or invited, and the seats it needs.
    pub async fn preview_invitations(&self, actor: &Actor, csv: &[u8]) -> ServiceResult<InvitationPreview> {
        actor.require(Role::Admin)?;
        let (rows, mut errors) = parse_invitation_lines(csv);
        if rows.len() > MAX_BULK_INVITATIONS {
            return Err(ServiceError::invalid(
                "file",
                format!("at most {MAX_BULK_INVITATIONS} invitations per upload, found {}", rows.len()),
            ));
        }
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let org = tx.get_org(actor.org_id).await?.ok_or(ServiceError::NotFound("organization"))?;
        for row in &rows {
            if row.role == Role::Owner && !actor.role.at_least(Role::Owner) {
                errors.push(LineError { line: row.line, message: "only an Owner may invite an Owner".into() });
            }
            if let Some(problem) = not_invitable(&tx.find_person(org.id, &row.email).await?, &row.email, now) {
                errors.push(LineError { line: row.line, message: problem });
            }
        }
        errors.sort_by_key(|e| e.line);
        let used = tx.seat_usage(org.id, now).await?.used();
        Ok(InvitationPreview { rows, errors, seats_free: org.purchased_seats - used, policy: org.seat_policy })
    }

    /// What setting purchased seats to `purchased` would lead to: the
    /// reconcile plan as it would be right after (who would be suspended or
    /// lose an invitation, in which order, and why). Changes nothing.
    pub async fn preview_seats(&self, actor: &Actor, purchased: i64) -> ServiceResult<ReconcilePlan> {
        actor.require(Role::Admin)?;
        let purchased = parse_seats(purchased).map_err(|e| ServiceError::invalid("purchased", e))?;
        let mut tx = self.store.read().await?;
        let mut org = tx.get_org(actor.org_id).await?.ok_or(ServiceError::NotFound("organization"))?;
        org.purchased_seats = purchased;
        plan_in(&mut *tx, &org, self.clock.now()).await
    }

    /// Sets purchased seats and applies the plan that follows, in one
    /// transaction, provided it is still the plan with the `expected`
    /// fingerprint the admin confirmed (409 when something changed since).
    pub async fn set_seats_and_apply(
        &self,
        actor: &Actor,
        purchased: i64,
        expected: &str,
    ) -> ServiceResult<ReconcileOutcome> {
        actor.require(Role::Admin)?;
        if self.needs_approval(actor) {
            return Err(ServiceError::OperatorOnly(
                "seats are changed by request in this deployment; ask for the new number on the Billing page".into(),
            ));
        }
        let purchased = parse_seats(purchased).map_err(|e| ServiceError::invalid("purchased", e))?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let before = lock_org(&mut *tx, actor.org_id).await?;
        let mut org = before.clone();
        org.purchased_seats = purchased;
        org.updated_at = now;
        let plan = plan_in(&mut *tx, &org, now).await?;
        if plan.fingerprint != expected.trim() {
            return Err(ServiceError::Conflict(
                "the members or seats changed since the plan was shown; review the new plan".into(),
            ));
        }
        tx.update_org(&org).await?;
        let seats = Seats::of(&org, tx.seat_usage(org.id, now).await?);
        tx.insert_audit(seats_updated(actor, now, &before, &seats)).await?;
        if !plan.changes.is_empty() {
            apply_in(&mut *tx, actor, &org, &plan.changes, now).await?;
            let summary = serde_json::json!({ "changes": plan.changes.len(), "fingerprint": plan.fingerprint });
            tx.insert_audit(actor.audit(now, "reconcile.applied", org.id, None::<&()>, Some(&summary))).await?;
        }
        tx.commit().await?;
        Ok(ReconcileOutcome { applied: plan, left: 0 })
    }
}

/// The portal's actor for a member: acts with the member's role; the audit
/// log names them by email.
fn session_actor(org_id: Uuid, who: String, role: Role, request_id: Option<String>) -> Actor {
    Actor { kind: ActorKind::Portal, id: who, org_id, role, request_id }
}

/// A session in another organization for the same person, carrying the
/// remaining lifetime of the one it replaces.
async fn open_session_for(
    tx: &mut dyn Tx,
    member: &Member,
    ttl: Duration,
    now: DateTime<Utc>,
) -> ServiceResult<(Secret, DateTime<Utc>)> {
    let origin = super::sso::SessionOrigin::switched();
    super::sso::open_session(tx, member, origin, ttl, now).await
}
