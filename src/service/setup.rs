//! Setup links: how an organization's IT admin, who is usually not a
//! member, sets up single sign-on, SCIM and domains for that organization
//! alone; the test sign-in that shows what Roster would decide without
//! deciding it; the SCIM request log; and the set-up checklist.

use super::*;
use crate::model::*;
use crate::secrets::{generate_token, hash_token, hashes_match};
use crate::store::{ScimRequestRecord, SetupLink, SetupStatus, SsoTest, SCIM_REQUESTS_KEPT};
use chrono::{DateTime, Duration, Utc};

/// How long a setup link lasts unless asked otherwise, and at most.
pub const SETUP_LINK_DEFAULT_HOURS: u32 = 24;
pub const SETUP_LINK_MAX_HOURS: u32 = 7 * 24;

/// The product client a test sign-in's attempt names: none of the
/// organization's, so a test can never yield a product's code.
pub const SETUP_TEST_CLIENT_ID: Uuid = uuid::uuid!("00000000-0000-7000-8000-0000000005e7");

/// What an Owner or Admin asks for when creating a setup link.
#[derive(Debug, Clone)]
pub struct NewSetupLink {
    pub scopes: Vec<SetupScope>,
    pub expires_in_hours: Option<u32>,
}

/// A setup link as its organization's admins see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SetupLinkView {
    #[serde(flatten)]
    pub link: SetupLink,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
}

/// A new setup link with its URL, which holds the token: shown this once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedSetupLink {
    #[serde(flatten)]
    pub view: SetupLinkView,
    pub url: String,
}

/// Why a setup link opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupLinkRefused {
    Unknown,
    Expired,
    Revoked,
}

/// An open setup link: its organization, and the actor its changes are made as.
#[derive(Debug, Clone)]
pub struct SetupAccess {
    pub link: SetupLink,
    pub org: crate::store::Organization,
    pub actor: Actor,
}

impl SetupAccess {
    pub fn allows(&self, scope: SetupScope) -> bool {
        self.link.scopes.contains(&scope)
    }
}

fn status_of(link: &SetupLink, now: DateTime<Utc>) -> &'static str {
    if link.revoked_at.is_some() {
        "revoked"
    } else if link.expires_at <= now {
        "expired"
    } else {
        "active"
    }
}

impl Roster {
    /// Creates a setup link (Owner and Admin); its URL is returned once.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn create_setup_link(&self, actor: &Actor, new: NewSetupLink) -> ServiceResult<CreatedSetupLink> {
        actor.require(Role::Admin)?;
        if new.scopes.is_empty() {
            return Err(ServiceError::invalid("scopes", "name at least one of sso, scim, domains"));
        }
        let hours = new.expires_in_hours.unwrap_or(SETUP_LINK_DEFAULT_HOURS);
        if !(1..=SETUP_LINK_MAX_HOURS).contains(&hours) {
            return Err(ServiceError::invalid(
                "expires_in_hours",
                format!("must be between 1 and {SETUP_LINK_MAX_HOURS} (7 days), got {hours}"),
            ));
        }
        let mut scopes = new.scopes;
        scopes.sort_by_key(|s| SetupScope::ALL.iter().position(|a| a == s));
        scopes.dedup();
        let now = self.clock.now();
        let token = generate_token("rsl");
        let link = SetupLink {
            id: Uuid::now_v7(),
            org_id: actor.org_id,
            scopes,
            created_by: actor.id.clone(),
            created_at: now,
            expires_at: now + Duration::hours(hours.into()),
            revoked_at: None,
        };
        let mut tx = self.store.begin().await?;
        lock_org(&mut *tx, actor.org_id).await?;
        tx.insert_setup_link(&link, &hash_token(token.expose())).await?;
        tx.insert_audit(actor.audit(now, "setup_link.created", link.id, None::<&()>, Some(&link))).await?;
        tx.commit().await?;
        let url = self.settings.mail.link(&format!("setup/{}", token.expose()), &[]);
        Ok(CreatedSetupLink { view: SetupLinkView { link, status: "active" }, url })
    }

    pub async fn list_setup_links(&self, actor: &Actor) -> ServiceResult<Vec<SetupLinkView>> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let links = self.store.read().await?.list_setup_links(actor.org_id).await?;
        Ok(links.into_iter().map(|link| SetupLinkView { status: status_of(&link, now), link }).collect())
    }

    /// Revokes a setup link at once: its next page is refused.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn revoke_setup_link(&self, actor: &Actor, id: Uuid) -> ServiceResult<()> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx.revoke_setup_link(actor.org_id, id, now).await? {
            let exists = tx.list_setup_links(actor.org_id).await?.iter().any(|l| l.id == id);
            return if exists { Ok(()) } else { Err(ServiceError::NotFound("setup link")) };
        }
        tx.insert_audit(actor.audit(now, "setup_link.revoked", id, None::<&()>, None::<&()>)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The organization and actor a setup link's token opens, or why it opens nothing.
    pub async fn open_setup_link(
        &self,
        token: &str,
        request_id: Option<String>,
    ) -> ServiceResult<Result<SetupAccess, SetupLinkRefused>> {
        if !token.starts_with("rsl_") || token.len() > 128 {
            return Ok(Err(SetupLinkRefused::Unknown));
        }
        let hash = hash_token(token);
        let mut tx = self.store.lookup().await?;
        let Some((link, stored)) = tx.find_setup_link_by_hash(&hash).await? else {
            return Ok(Err(SetupLinkRefused::Unknown));
        };
        if !hashes_match(&hash, &stored) {
            return Ok(Err(SetupLinkRefused::Unknown));
        }
        match status_of(&link, self.clock.now()) {
            "revoked" => return Ok(Err(SetupLinkRefused::Revoked)),
            "expired" => return Ok(Err(SetupLinkRefused::Expired)),
            _ => {}
        }
        let Some(org) = tx.get_org(link.org_id).await? else { return Ok(Err(SetupLinkRefused::Unknown)) };
        let actor = Actor {
            kind: ActorKind::SetupLink,
            id: link.id.to_string(),
            org_id: org.id,
            role: Role::Admin,
            request_id,
        };
        Ok(Ok(SetupAccess { link, org, actor }))
    }

    /// How far the organization's set-up has come (Owner and Admin, or a setup link).
    pub async fn setup_status(&self, actor: &Actor) -> ServiceResult<SetupStatus> {
        actor.require(Role::Admin)?;
        Ok(self.store.read().await?.setup_status(actor.org_id).await?)
    }

    /// The organization's latest test sign-in through `link_id` (any, when `None`).
    pub async fn latest_sso_test(&self, actor: &Actor, link_id: Option<Uuid>) -> ServiceResult<Option<SsoTest>> {
        actor.require(Role::Admin)?;
        Ok(self.store.read().await?.latest_sso_test(actor.org_id, link_id).await?)
    }

    // ---- The SCIM request log ------------------------------------------------

    /// The organization's newest logged SCIM requests, newest first (Owner and Admin).
    pub async fn scim_requests(&self, actor: &Actor, limit: Option<i64>) -> ServiceResult<Vec<ScimRequestRecord>> {
        actor.require(Role::Admin)?;
        let limit = limit.unwrap_or(SCIM_REQUESTS_KEPT);
        if !(1..=SCIM_REQUESTS_KEPT).contains(&limit) {
            return Err(ServiceError::invalid("limit", format!("must be between 1 and {SCIM_REQUESTS_KEPT}")));
        }
        Ok(self.store.read().await?.list_scim_requests(actor.org_id, limit).await?)
    }

    /// Appends SCIM requests to their organizations' logs, in one transaction.
    pub async fn record_scim_requests(&self, requests: &[ScimRequestRecord]) -> ServiceResult<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        tx.insert_scim_requests(requests).await?;
        tx.commit().await?;
        Ok(())
    }
}

// ---- The test sign-in -------------------------------------------------------

/// The claims of an ID token whose signature the relying party has checked,
/// as a JSON object (without the nonce, which only binds the attempt).
fn id_token_claims(id_token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = id_token.split('.').nth(1).unwrap_or("");
    let mut claims: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(map) = claims.as_object_mut() {
        map.remove("nonce");
    }
    claims
}

/// A test sign-in's callback: its attempt, organization and connection,
/// and what the identity provider sent back.
#[derive(Clone, Copy)]
pub(super) struct TestCallback<'a> {
    pub sso: &'a SsoPolicy,
    pub attempt: &'a crate::store::SsoAttempt,
    pub org: &'a crate::store::Organization,
    pub conn: &'a crate::sso::Connection,
    pub params: &'a CallbackParams,
}

impl Roster {
    /// Ends a test sign-in at the callback: exchanges the code and checks the
    /// ID token as a login would, then asks what Roster would decide in a
    /// transaction that is rolled back. Records the result (and one audit
    /// record, `sso.tested`) and sends the browser to the result page.
    pub(super) async fn finish_sso_test(
        &self,
        cb: TestCallback<'_>,
        request_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Completed, LoginError> {
        let TestCallback { attempt, org, conn, .. } = cb;
        let started: serde_json::Value =
            attempt.product_state.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        let link = started["link"].as_str().and_then(|l| Uuid::parse_str(l).ok());
        let by = started["by"].as_str().unwrap_or("unknown").to_string();
        let kind = started["kind"].as_str().and_then(|k| k.parse().ok()).unwrap_or(ActorKind::SetupLink);
        let mut result = serde_json::json!({
            "connection": conn.kind.as_str(),
            "issuer": conn.issuer,
            "organization": org.name,
            "claims": null,
            "email": null,
            "email_verified": null,
            "role": null,
            "role_source": null,
            "seat": null,
        });
        let ok = match self.try_sso_test(&cb, now, &mut result).await {
            Ok(outcome) => {
                result["code"] = "signed_in".into();
                result["outcome"] = outcome.into();
                true
            }
            Err(refusal) => {
                result["code"] = refusal.code.into();
                result["outcome"] = refusal.message.into();
                false
            }
        };
        let test =
            SsoTest { id: Uuid::now_v7(), org_id: org.id, link_id: link, tested_by: by.clone(), at: now, ok, result };
        let actor = Actor { kind, id: by, org_id: org.id, role: Role::Admin, request_id };
        let detail = serde_json::json!({
            "ok": ok,
            "code": test.result["code"],
            "email": test.result["email"],
            "issuer": conn.issuer,
        });
        let mut tx = self.store.begin().await?;
        tx.insert_sso_test(&test).await?;
        tx.insert_audit(actor.audit(now, "sso.tested", org.id, None::<&()>, Some(&detail))).await?;
        tx.commit().await?;
        Ok(Completed::Tested { result_url: attempt.redirect_uri.clone() })
    }

    /// The test's steps; fills `result` as it learns, and says what would happen.
    async fn try_sso_test(
        &self,
        cb: &TestCallback<'_>,
        now: DateTime<Utc>,
        result: &mut serde_json::Value,
    ) -> Result<String, LoginError> {
        let TestCallback { sso, attempt, org, conn, params } = *cb;
        if conn.issuer != attempt.issuer || conn.kind.as_str() != attempt.connection {
            return Err(LoginError::new(
                409,
                "connection_changed",
                "The connection changed during the test. Save it again and run the test again.",
            ));
        }
        if let Some(message) = provider_error(params) {
            return Err(LoginError::new(403, "provider_error", message));
        }
        let code = params
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| LoginError::new(400, "invalid_request", "The identity provider sent no code."))?;
        let identity = sso
            .rp
            .finish(conn, &sso.callback_url, code, &attempt.pkce_verifier, &attempt.nonce)
            .await
            .map_err(oidc_refusal)?;
        let claims = id_token_claims(&identity.id_token);
        result["email_verified"] = claims.get("email_verified").cloned().unwrap_or(serde_json::Value::Null);
        result["claims"] = claims;
        result["email"] = identity.email.clone().into();
        let email = Email::parse(&identity.email).map_err(|_| {
            LoginError::new(
                403,
                "invalid_email",
                format!("The identity provider sent an email address Roster cannot use: {}", identity.email),
            )
        })?;
        // What a login would decide, in a transaction rolled back when
        // dropped: the test creates no member, session or invitation use.
        let mut tx = self.store.begin().await?;
        let locked = lock_org(&mut *tx, org.id).await?;
        let usage = tx.seat_usage(org.id, now).await?;
        let free = (locked.purchased_seats - usage.used()).max(0);
        let actor = Actor {
            kind: ActorKind::Sso,
            id: format!("sso:{}", email.normalized()),
            org_id: org.id,
            role: Role::Read,
            request_id: None,
        };
        let decided = resolve_membership(&mut *tx, &actor, &locked, &email, &identity.tenant_roles, now).await;
        drop(tx);
        match decided {
            Ok((member, how)) => {
                result["role"] = member.role.as_str().into();
                result["role_source"] = member.role_reason.clone().into();
                result["seat"] = if how == "member" {
                    "already holds one".into()
                } else {
                    format!("available ({free} free)").into()
                };
                Ok(match how {
                    "member" => format!("{email} would sign in to {} as an existing member.", org.name),
                    "invitation_accepted" => {
                        format!("{email} would accept their invitation and join {}.", org.name)
                    }
                    _ => format!("{email} would join {} automatically: their domain is verified.", org.name),
                })
            }
            Err(refusal) => {
                result["seat"] = if refusal.code == "no_free_seat" || free == 0 {
                    "none free".into()
                } else {
                    format!("available ({free} free)").into()
                };
                Err(refusal)
            }
        }
    }
}
