//! Sign-in by emailed link, for organizations without SSO and for people
//! who are not members yet: the product sends the browser to `/signin`
//! (as it would to `/sso/authorize`), the person gives an email, and
//! either the email's verified domain routes to SSO, or Roster emails a
//! one-time link. Following the link ends as an SSO login does: Roster's
//! session, and the product's one-time code for the profile
//! (`"method": "email_link"`). Membership follows the SSO rules: an active
//! member, a pending invitation, or auto-assignment by verified domain.

use super::sso::{issue_code, open_session, pick_client, product_redirect, resolve_membership, SessionOrigin};
use super::*;
use crate::mail::templates::SignInLinkMail;
use crate::model::*;
use crate::secrets::{generate_token, hash_token, hashes_match, Secret};
use crate::store::SignInLink;
use chrono::Duration;

/// How long an emailed sign-in link works.
pub const SIGN_IN_LINK_TTL_MINUTES: i64 = 15;

/// A product's request to sign someone in by email.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    pub email: Email,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub client_id: Option<Uuid>,
    /// The browser-binding cookie of the browser asking (it alone may use the link).
    pub browser: Secret,
}

/// Where a sign-in by email goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInRoute {
    /// The email's verified domain belongs to an organization with SSO: sign in there.
    Sso,
    /// A link is emailed if the address may sign in (the answer is the same either way).
    Link,
}

impl Roster {
    /// Whether the email signs in through SSO: its domain is verified by an
    /// organization whose SSO connection is set up. Depends on the domain
    /// alone, never on whether the address is known.
    pub async fn sign_in_route(&self, email: &Email) -> ServiceResult<SignInRoute> {
        if self.settings.sso.is_none() {
            return Ok(SignInRoute::Link);
        }
        let Some((org, _)) = self.organization_for_email(email).await? else {
            return Ok(SignInRoute::Link);
        };
        let mut tx = self.store.read().await?;
        Ok(match self.connection_for(&mut *tx, &org).await {
            Ok(_) => SignInRoute::Sso,
            Err(_) => SignInRoute::Link,
        })
    }

    /// Emails a sign-in link if the address may sign in by link to an
    /// organization the product client serves: an active member or a live
    /// invitation there, or a verified domain of it with auto-assignment,
    /// and never where SSO is enforced. Returns whether a link was queued;
    /// the person is told the same either way.
    #[tracing::instrument(skip_all)]
    pub async fn send_sign_in_link(&self, req: LinkRequest) -> ServiceResult<bool> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut candidates = tx.orgs_for_email(&req.email, now).await?;
        // The organization that verified the email's domain, if any: it may auto-assign.
        let domain_org = tx.find_verified_domain(&req.email.domain()).await?.map(|d| d.org_id);
        if let Some(org_id) = domain_org.filter(|o| !candidates.contains(o)) {
            candidates.push(org_id);
        }
        for org_id in candidates {
            let Some(org) = tx.get_org(org_id).await? else { continue };
            if org.sso.enforce {
                continue;
            }
            let person = tx.find_person(org.id, &req.email).await?;
            let member_status = person.member.as_ref().map(|m| m.status);
            let invited = person.invitation.as_ref().is_some_and(|i| i.expires_at > now);
            let by_domain = org.sso.auto_assign && domain_org == Some(org.id);
            let admitted = match member_status {
                Some(MemberStatus::Active) => true,
                Some(MemberStatus::Suspended) => false,
                _ => invited || by_domain,
            };
            if !admitted {
                continue;
            }
            let Ok(client) = pick_client(self.login_clients(&mut *tx, org.id).await?, req.client_id, &req.redirect_uri)
            else {
                continue;
            };
            let token = generate_token("roster_link");
            let link = SignInLink {
                org_id: org.id,
                email: req.email.clone(),
                client_id: client.id,
                redirect_uri: req.redirect_uri.clone(),
                state: req.state.clone(),
                browser_hash: hash_token(req.browser.expose()),
                created_at: now,
                expires_at: now + Duration::minutes(SIGN_IN_LINK_TTL_MINUTES),
                used_at: None,
            };
            tx.insert_sign_in_link(&hash_token(token.expose()), &link).await?;
            let url = self.settings.mail.link("signin/link", &[("token", token.expose())]);
            let rendered = SignInLinkMail {
                org_name: &org.name,
                email: req.email.as_str(),
                link: &url,
                minutes: SIGN_IN_LINK_TTL_MINUTES,
            }
            .render()
            .map_err(|e| ServiceError::Store(crate::store::StoreError::Other(e.into())))?;
            let mail = NewMail {
                org_id: Some(org.id),
                kind: "sign_in_link",
                subject_id: None,
                recipient: &req.email,
                rendered,
            };
            queue_mail(&mut *tx, &self.settings.mail, mail, now).await?;
            tx.commit().await?;
            self.wake_sender();
            return Ok(true);
        }
        Ok(false)
    }

    /// The organization a sign-in link is for, if it can still be used by this browser.
    pub async fn sign_in_link_offer(&self, token: &str, browser: Option<&str>) -> Result<String, LoginError> {
        let link = self.live_link(token, browser).await?;
        let org = self.store.read().await?.get_org(link.org_id).await?;
        org.map(|o| o.name)
            .ok_or_else(|| LoginError::new(404, "unknown_organization", "The organization no longer exists."))
    }

    async fn live_link(&self, token: &str, browser: Option<&str>) -> Result<SignInLink, LoginError> {
        let now = self.clock.now();
        let link = self.store.read().await?.find_sign_in_link(&hash_token(token)).await?.ok_or_else(|| {
            LoginError::new(
                404,
                "link_unknown",
                "This sign-in link is not valid. Ask for a new one from the sign-in page.",
            )
        })?;
        if link.used_at.is_some() {
            return Err(LoginError::new(
                410,
                "link_used",
                "This sign-in link was already used. Ask for a new one from the sign-in page.",
            ));
        }
        if link.expires_at <= now {
            return Err(LoginError::new(
                410,
                "link_expired",
                format!(
                    "This sign-in link has expired (links work for {SIGN_IN_LINK_TTL_MINUTES} minutes). Ask for a new one."
                ),
            ));
        }
        // A link the operator issued (`roster portal link`) is bound to no browser.
        let unbound = link.browser_hash.is_empty();
        if !unbound && !browser.is_some_and(|b| hashes_match(&hash_token(b), &link.browser_hash)) {
            return Err(LoginError::new(
                403,
                "browser_mismatch",
                "Open this link in the browser where you asked for it (the link works only there).",
            ));
        }
        Ok(link)
    }

    /// Signs in with an emailed link: checks it (unused, unexpired, this
    /// browser), resolves the membership as an SSO login does, and returns
    /// the product's redirect with a one-time code, and Roster's session.
    #[tracing::instrument(skip_all)]
    pub async fn use_sign_in_link(
        &self,
        token: &str,
        browser: Option<&str>,
        request_id: Option<String>,
    ) -> Result<LoginDone, LoginError> {
        let now = self.clock.now();
        let link = self.live_link(token, browser).await?;
        let mut tx = self.store.begin().await?;
        if !tx.use_sign_in_link(&hash_token(token), now).await? {
            return Err(LoginError::new(410, "link_used", "This sign-in link was already used."));
        }
        let org = lock_org(&mut *tx, link.org_id).await?;
        if org.sso.enforce {
            return Err(LoginError::new(
                403,
                "sso_required",
                format!("{} signs in only through its single sign-on.", org.name),
            ));
        }
        let actor = Actor {
            kind: ActorKind::EmailLink,
            id: format!("email:{}", link.email.normalized()),
            org_id: org.id,
            role: Role::Read,
            request_id,
        };
        let (member, how) = resolve_membership(&mut *tx, &actor, &org, &link.email, &[], now).await?;
        let base = self.settings.mail.base_url.to_string();
        let profile = SsoProfile {
            user_id: member.user_id,
            email: link.email.as_str().to_string(),
            name: None,
            organization_id: org.id,
            organization_name: org.name.clone(),
            member_id: member.id,
            role: member.role,
            member_status: member.status,
            method: SignInMethod::EmailLink,
            connection: None,
            issuer: base.clone(),
            idp_subject: member.user_id.to_string(),
            sso_enforced: org.sso.enforce,
        };
        let sso = self.sso().ok();
        let code_ttl = sso.map_or(Duration::seconds(60), |s| s.code_ttl);
        let session_ttl = sso.map_or(Duration::hours(8), |s| s.session_ttl);
        let code = issue_code(&mut *tx, link.client_id, &profile, now + code_ttl, now).await?;
        let (session, session_expires) =
            open_session(&mut *tx, &member, SessionOrigin::email_link(), session_ttl, now).await?;
        let detail = serde_json::json!({
            "email": link.email.as_str(),
            "how": how,
            "role": member.role,
            "client_id": link.client_id,
        });
        tx.insert_audit(actor.audit(now, "sign_in.email_link", member.id, None::<&()>, Some(&detail))).await?;
        tx.commit().await?;
        let redirect = product_redirect(&link.redirect_uri, &code, link.state.as_deref())?;
        Ok(LoginDone { redirect, session, session_expires })
    }
}
