//! Invitations: one at a time or as a CSV of `email,role`, each holding a
//! seat until accepted, revoked or expired.

use super::*;
use crate::mail::templates::InvitationMail;
use crate::model::*;
use crate::secrets::{generate_token, hash_token, Secret};
use crate::store::{Invitation, InvitationFilter, MailDelivery, MailStatus, Organization};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// The most invitations one CSV upload may carry.
pub const MAX_BULK_INVITATIONS: usize = 1000;

/// A created invitation and its token (shown once: the product puts it in the invitation link).
#[derive(Debug)]
pub struct CreatedInvitation {
    pub invitation: Invitation,
    pub token: Secret,
}

/// Which invitations to list.
#[derive(Debug, Clone, Default)]
pub struct InvitationQuery {
    pub status: Option<InvitationStatus>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

impl Roster {
    /// Invites one person; reserves a seat.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn invite(&self, actor: &Actor, email: Email, role: Role) -> ServiceResult<CreatedInvitation> {
        let mut created = self.invite_all(actor, vec![(email, role)], |_, e| e).await?;
        Ok(created.remove(0))
    }

    /// Invites everyone in a CSV of `email,role` lines (header optional).
    /// Every line is checked first; any bad line, or too few seats for all,
    /// rejects the whole upload with per-line errors and creates nothing.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn invite_csv(&self, actor: &Actor, csv: &[u8]) -> ServiceResult<Vec<CreatedInvitation>> {
        actor.require(Role::Admin)?;
        let rows = parse_invitation_csv(csv)?;
        let lines: Vec<usize> = rows.iter().map(|r| r.line).collect();
        let rows = rows.into_iter().map(|r| (r.email, r.role)).collect();
        self.invite_all(actor, rows, |i, e| match e {
            ServiceError::Conflict(message) | ServiceError::Invalid { message, .. } => {
                ServiceError::BulkRejected(vec![LineError { line: lines[i], message }])
            }
            other => other,
        })
        .await
    }

    /// Creates one invitation per row in one transaction. `line_error` turns
    /// a row's refusal into the error the caller reports.
    async fn invite_all(
        &self,
        actor: &Actor,
        rows: Vec<(Email, Role)>,
        line_error: impl Fn(usize, ServiceError) -> ServiceError,
    ) -> ServiceResult<Vec<CreatedInvitation>> {
        actor.require(Role::Admin)?;
        if rows.iter().any(|(_, role)| *role == Role::Owner) {
            actor.require(Role::Owner)?;
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let mut conflicts = Vec::new();
        for (i, (email, _)) in rows.iter().enumerate() {
            if let Err(e) = check_invitable(&mut *tx, actor, &org, email, now).await {
                match line_error(i, e) {
                    ServiceError::BulkRejected(mut lines) => conflicts.append(&mut lines),
                    other => return Err(other),
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(ServiceError::BulkRejected(conflicts));
        }
        let reservation = reserve_seats(&mut *tx, &org, rows.len() as i64, now).await?;
        let mut created = Vec::with_capacity(rows.len());
        for (email, role) in rows {
            let token = generate_token("roster_inv");
            let invitation = Invitation {
                id: Uuid::now_v7(),
                org_id: org.id,
                email,
                role,
                status: InvitationStatus::Pending,
                expires_at: now + self.settings.invitation_ttl,
                invited_by: actor.id.clone(),
                created_at: now,
                updated_at: now,
                email_delivery: None,
            };
            tx.insert_invitation(&invitation, &hash_token(token.expose())).await?;
            let after = audit_with_overage(&invitation, reservation);
            tx.insert_audit(actor.audit(now, "invitation.created", invitation.id, None::<&()>, Some(&after))).await?;
            let mut invitation = invitation;
            invitation.email_delivery =
                Some(self.queue_invitation_mail(&mut *tx, actor, &org, &invitation, &token, false, now).await?);
            created.push(CreatedInvitation { invitation, token });
        }
        tx.commit().await?;
        self.wake_sender();
        Ok(created)
    }

    pub async fn list_invitations(&self, actor: &Actor, q: InvitationQuery) -> ServiceResult<Page<Invitation>> {
        actor.require(Role::Read)?;
        let limit = page_size(q.limit)?;
        let now = self.clock.now();
        let filter =
            InvitationFilter { status: q.status, now, after: parse_cursor(q.cursor.as_deref())?, limit: limit + 1 };
        let mut tx = self.store.read().await?;
        let mut items = tx.list_invitations(actor.org_id, &filter).await?;
        let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
        let mut deliveries = tx.mail_deliveries(&ids).await?;
        // An invitation past its expiry no longer holds a seat; show it as expired.
        for inv in &mut items {
            if inv.status == InvitationStatus::Pending && inv.expires_at <= now {
                inv.status = InvitationStatus::Expired;
            }
            inv.email_delivery = deliveries.remove(&inv.id);
        }
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|i| i.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Revokes a pending invitation, freeing its seat.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, invitation = %id))]
    pub async fn revoke_invitation(&self, actor: &Actor, id: Uuid) -> ServiceResult<Invitation> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let before = tx.get_invitation(org.id, id).await?.ok_or(ServiceError::NotFound("invitation"))?;
        match before.status {
            InvitationStatus::Revoked => return Ok(before),
            InvitationStatus::Pending => {}
            other => return Err(ServiceError::Conflict(format!("the invitation is already {other}"))),
        }
        let mut inv = before.clone();
        inv.status = InvitationStatus::Revoked;
        inv.updated_at = now;
        tx.update_invitation(&inv).await?;
        tx.insert_audit(actor.audit(now, "invitation.revoked", inv.id, Some(&before), Some(&inv))).await?;
        tx.commit().await?;
        Ok(inv)
    }
}

impl Roster {
    /// Sends an invitation again: a new token (the old link stops working)
    /// and a new expiry. An invitation that had expired needs a free seat again.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, invitation = %id))]
    pub async fn resend_invitation(&self, actor: &Actor, id: Uuid) -> ServiceResult<CreatedInvitation> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let before = tx.get_invitation(org.id, id).await?.ok_or(ServiceError::NotFound("invitation"))?;
        if before.role == Role::Owner {
            actor.require(Role::Owner)?;
        }
        let lapsed = match before.status {
            InvitationStatus::Pending => before.expires_at <= now,
            InvitationStatus::Expired => true,
            other => return Err(ServiceError::Conflict(format!("the invitation is {other}; invite again instead"))),
        };
        if before.status == InvitationStatus::Expired {
            // Someone may have joined, or been invited again, since.
            check_invitable(&mut *tx, actor, &org, &before.email, now).await?;
        }
        let reservation =
            if lapsed { reserve_seats(&mut *tx, &org, 1, now).await? } else { Reservation { overage: 0 } };
        let token = generate_token("roster_inv");
        let inv = Invitation {
            status: InvitationStatus::Pending,
            expires_at: now + self.settings.invitation_ttl,
            updated_at: now,
            ..before.clone()
        };
        tx.update_invitation(&inv).await?;
        tx.set_invitation_token(org.id, inv.id, &hash_token(token.expose())).await?;
        let after = audit_with_overage(&inv, reservation);
        tx.insert_audit(actor.audit(now, "invitation.resent", inv.id, Some(&before), Some(&after))).await?;
        let mut inv = inv;
        inv.email_delivery = Some(self.queue_invitation_mail(&mut *tx, actor, &org, &inv, &token, true, now).await?);
        tx.commit().await?;
        self.wake_sender();
        Ok(CreatedInvitation { invitation: inv, token })
    }
}

impl Roster {
    /// Queues the email of a new or resent invitation; its delivery as it starts.
    #[allow(clippy::too_many_arguments)]
    async fn queue_invitation_mail(
        &self,
        tx: &mut dyn Tx,
        actor: &Actor,
        org: &Organization,
        inv: &Invitation,
        token: &Secret,
        resent: bool,
        now: DateTime<Utc>,
    ) -> ServiceResult<MailDelivery> {
        let policy = &self.settings.mail;
        let link = policy.link("invitations/accept", &[("token", token.expose())]);
        let rendered = InvitationMail {
            org_name: &org.name,
            role: role_title(inv.role),
            inviter: &inviter(actor, org),
            email: inv.email.as_str(),
            expires: human_time(inv.expires_at),
            link: &link,
            resent,
            sso_enforced: org.sso.enforce,
        }
        .render()
        .map_err(|e| ServiceError::Store(crate::store::StoreError::Other(e.into())))?;
        let mail = NewMail {
            org_id: Some(org.id),
            kind: if resent { "invitation_resent" } else { "invitation" },
            subject_id: Some(inv.id),
            recipient: &inv.email,
            rendered,
        };
        queue_mail(tx, policy, mail, now).await?;
        Ok(MailDelivery {
            status: MailStatus::Queued,
            attempts: 0,
            reply: None,
            next_attempt_at: Some(now),
            sent_at: None,
            updated_at: now,
        })
    }
}

/// Who sent an invitation, as its email names them.
fn inviter(actor: &Actor, org: &Organization) -> String {
    match actor.kind {
        ActorKind::Sso | ActorKind::EmailLink => {
            actor.id.split_once(':').map_or(actor.id.clone(), |(_, email)| email.to_string())
        }
        _ => format!("An administrator of {}", org.name),
    }
}

/// Refuses an invitation for someone who is already a member or already invited.
async fn check_invitable(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    email: &Email,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    let person = tx.find_person(org.id, email).await?;
    if let Some(problem) = not_invitable(&person, email, now) {
        return Err(ServiceError::Conflict(problem));
    }
    if let Some(inv) = person.invitation {
        // The old invitation lapsed: mark it so the new one can take its place.
        let before = inv.clone();
        let mut expired = inv;
        expired.status = InvitationStatus::Expired;
        expired.updated_at = now;
        tx.update_invitation(&expired).await?;
        tx.insert_audit(actor.audit(now, "invitation.expired", expired.id, Some(&before), Some(&expired))).await?;
    }
    Ok(())
}

/// Why `email` cannot be invited now, if it cannot: a member already, or
/// an invitation still pending.
pub(super) fn not_invitable(person: &crate::store::Person, email: &Email, now: DateTime<Utc>) -> Option<String> {
    if let Some(m) = &person.member {
        if m.status != MemberStatus::Deprovisioned {
            return Some(format!("{email} is already a member ({})", m.status));
        }
    }
    match &person.invitation {
        Some(inv) if inv.expires_at > now => Some(format!("{email} already has a pending invitation")),
        _ => None,
    }
}

/// One accepted line of an invitation upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvInvitation {
    pub line: usize,
    pub email: Email,
    pub role: Role,
}

/// Parses a CSV of `email,role` lines. A first line `email,role` is a
/// header; blank lines and a leading byte-order mark (spreadsheet exports)
/// are skipped. Line numbers are 1-based.
pub fn parse_invitation_csv(bytes: &[u8]) -> ServiceResult<Vec<CsvInvitation>> {
    let (rows, errors) = parse_invitation_lines(bytes);
    if !errors.is_empty() {
        return Err(ServiceError::BulkRejected(errors));
    }
    if rows.is_empty() {
        return Err(ServiceError::invalid("file", "the upload has no `email,role` lines"));
    }
    if rows.len() > MAX_BULK_INVITATIONS {
        return Err(ServiceError::invalid(
            "file",
            format!("at most {MAX_BULK_INVITATIONS} invitations per upload, found {}", rows.len()),
        ));
    }
    Ok(rows)
}

/// The good lines of an upload and what is wrong with each of the others
/// (a malformed line, an unknown role, an address already on an earlier line).
pub fn parse_invitation_lines(bytes: &[u8]) -> (Vec<CsvInvitation>, Vec<LineError>) {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Line by line, so the numbers match what the admin sees in an editor
    // (and a line in another encoding is named); each line is read as CSV so
    // quoted fields work.
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let raw = match std::str::from_utf8(raw.strip_suffix(b"\r").unwrap_or(raw)) {
            Ok(text) => text,
            Err(_) => {
                errors.push(LineError { line, message: "not UTF-8 text (save the file as UTF-8 CSV)".into() });
                continue;
            }
        };
        if raw.trim().is_empty() {
            continue;
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(raw.as_bytes());
        let record = match reader.records().next() {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                errors.push(LineError { line, message: format!("not valid CSV: {e}") });
                continue;
            }
            None => continue,
        };
        let fields: Vec<&str> = record.iter().collect();
        let is_header =
            fields.len() == 2 && fields[0].eq_ignore_ascii_case("email") && fields[1].eq_ignore_ascii_case("role");
        if is_header && rows.is_empty() && errors.is_empty() {
            continue;
        }
        if fields.len() != 2 {
            errors.push(LineError { line, message: format!("expected 2 fields `email,role`, found {}", fields.len()) });
            continue;
        }
        let email = match Email::parse(fields[0]) {
            Ok(e) => e,
            Err(e) => {
                errors.push(LineError { line, message: e.0 });
                continue;
            }
        };
        let role = match fields[1].parse::<Role>() {
            Ok(r) => r,
            Err(e) => {
                errors.push(LineError { line, message: e.0 });
                continue;
            }
        };
        if let Some(first) = seen.insert(email.normalized(), line) {
            errors.push(LineError { line, message: format!("{email} is already on line {first}") });
            continue;
        }
        rows.push(CsvInvitation { line, email, role });
    }
    (rows, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(csv: &str) -> Vec<LineError> {
        match parse_invitation_csv(csv.as_bytes()) {
            Err(ServiceError::BulkRejected(lines)) => lines,
            other => panic!("expected per-line errors, got {other:?}"),
        }
    }

    #[test]
    fn header_is_optional_and_blank_lines_are_skipped() {
        let rows =
            parse_invitation_csv("\u{feff}email,role\na@x.com,admin\n\n B@x.com , Read \r\n".as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].email.as_str(), "B@x.com");
        assert_eq!(rows[1].role, Role::Read);
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 4]);
        let rows = parse_invitation_csv(b"\"a@x.com\",write").unwrap();
        assert_eq!(rows[0].role, Role::Write);
    }

    #[test]
    fn every_bad_line_is_reported() {
        let e = errors("email,role\na@x.com,admin\nnot-an-email,read\nb@x.com,boss\nA@X.com,read\nc@x.com\n");
        let got: Vec<usize> = e.iter().map(|l| l.line).collect();
        assert_eq!(got, vec![3, 4, 5, 6], "{e:?}");
        assert!(e[2].message.contains("line 2"), "{:?}", e[2]);
    }

    #[test]
    fn empty_upload_is_refused() {
        assert!(matches!(parse_invitation_csv(b"email,role\n"), Err(ServiceError::Invalid { .. })));
    }
}

/// What an invitation link shows before it is accepted.
#[derive(Debug, Clone)]
pub struct InvitationOffer {
    pub invitation: Invitation,
    pub org_name: String,
    pub sso_enforced: bool,
    /// For an organization that enforces SSO: where its SSO login starts
    /// (through its first registered product client), which accepts the
    /// invitation when it signs in the invited email.
    pub sso_login: Option<String>,
}

/// An accepted invitation: the new member, signed in.
#[derive(Debug)]
pub struct AcceptedInvitation {
    pub org_name: String,
    pub member: crate::store::Member,
    pub session: Secret,
    pub session_expires: DateTime<Utc>,
}

/// The invitation a link's token found, if it can still be accepted; else
/// why not, in the words of the page that says so.
fn live_invitation(inv: Option<Invitation>, now: DateTime<Utc>) -> Result<Invitation, LoginError> {
    let Some(inv) = inv else {
        return Err(LoginError::new(
            404,
            "invitation_unknown",
            "This invitation link is not valid. It may have been replaced by a newer invitation: use the link in the \
             latest email, or ask for the invitation to be sent again.",
        ));
    };
    match inv.status {
        InvitationStatus::Accepted => Err(LoginError::new(
            410,
            "invitation_used",
            "This invitation was already accepted. Sign in to the application instead.",
        )),
        InvitationStatus::Revoked => Err(LoginError::new(
            410,
            "invitation_revoked",
            "This invitation was withdrawn. Ask an administrator to invite you again.",
        )),
        InvitationStatus::Expired => Err(expired_link()),
        InvitationStatus::Pending if inv.expires_at <= now => Err(expired_link()),
        InvitationStatus::Pending => Ok(inv),
    }
}

fn expired_link() -> LoginError {
    LoginError::new(410, "invitation_expired", "This invitation has expired. Ask an administrator to send it again.")
}

impl Roster {
    /// The invitation a link's token names, if it can still be accepted.
    pub async fn invitation_offer(&self, token: &str) -> Result<InvitationOffer, LoginError> {
        let now = self.clock.now();
        let mut tx = self.store.read().await?;
        let invitation = live_invitation(tx.find_invitation_by_token(&hash_token(token)).await?, now)?;
        let org = tx
            .get_org(invitation.org_id)
            .await?
            .ok_or_else(|| LoginError::new(404, "invitation_unknown", "The organization no longer exists."))?;
        let sso_login = match org.sso.enforce {
            false => None,
            true => self.login_clients(&mut *tx, org.id).await?.into_iter().find_map(|client| {
                let uri = client.redirect_uris.first()?;
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query
                    .append_pair("organization", &org.id.to_string())
                    .append_pair("redirect_uri", uri)
                    .append_pair("client_id", &client.id.to_string());
                Some(format!("/sso/authorize?{}", query.finish()))
            }),
        };
        Ok(InvitationOffer { invitation, org_name: org.name, sso_enforced: org.sso.enforce, sso_login })
    }

    /// Accepts the invitation a link's token names: following the emailed
    /// link proved the address, so the invitee becomes an active member and
    /// is signed in. Single use; an organization that enforces SSO accepts
    /// only through its SSO login.
    #[tracing::instrument(skip_all)]
    pub async fn accept_invitation(
        &self,
        token: &str,
        request_id: Option<String>,
    ) -> Result<AcceptedInvitation, LoginError> {
        let now = self.clock.now();
        let token_hash = hash_token(token);
        let found = live_invitation(self.store.read().await?.find_invitation_by_token(&token_hash).await?, now)?;
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, found.org_id).await?;
        // Under the organization's lock: a second use of the link waits here, then sees it accepted.
        live_invitation(tx.find_invitation_by_token(&token_hash).await?, now)?;
        if org.sso.enforce {
            return Err(LoginError::new(
                403,
                "sso_required",
                format!(
                    "{} signs in only through its single sign-on. Sign in to its application with your single \
                     sign-on account for {}: the invitation is accepted when you do.",
                    org.name, found.email
                ),
            ));
        }
        let email = found.email.clone();
        let actor = Actor {
            kind: ActorKind::EmailLink,
            id: format!("email:{}", email.normalized()),
            org_id: org.id,
            role: Role::Read,
            request_id,
        };
        let person = tx.find_person(org.id, &email).await?;
        let member = match person.member.as_ref().map(|m| m.status) {
            // Joined another way (SCIM) since: the link settles the invitation and signs them in.
            Some(MemberStatus::Active) => {
                let member = person.member.clone().ok_or_else(|| LoginError::new(500, "internal", "member"))?;
                super::org::settle_invitation(&mut *tx, &actor, person.invitation, now).await?;
                member
            }
            Some(MemberStatus::Suspended) => {
                return Err(LoginError::new(
                    403,
                    "member_suspended",
                    format!("Your membership of {} is suspended. Ask an administrator of {}.", org.name, org.name),
                ))
            }
            _ => super::org::insert_active_member(
                &mut *tx,
                &actor,
                &org,
                &email,
                person,
                None,
                &[],
                MemberSource::Invite,
                now,
            )
            .await
            .map_err(|e| super::sso::seat_or_internal(e, &org))?,
        };
        let session_ttl = self.settings.sso.as_ref().map_or(chrono::Duration::hours(8), |s| s.session_ttl);
        let (session, session_expires) =
            super::sso::open_session(&mut *tx, &member, super::sso::SessionOrigin::email_link(), session_ttl, now)
                .await?;
        let detail = serde_json::json!({ "email": email.as_str(), "how": "invitation_link", "role": member.role });
        tx.insert_audit(actor.audit(now, "sign_in.email_link", member.id, None::<&()>, Some(&detail))).await?;
        tx.commit().await?;
        Ok(AcceptedInvitation { org_name: org.name, member, session, session_expires })
    }
}

/// The `issuer` of a session begun by an emailed link rather than an identity provider.
pub const EMAIL_LINK_ISSUER: &str = "email_link";
