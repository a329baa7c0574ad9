//! SCIM provisioning on the organization model: a SCIM User is a member of
//! the token's organization (`active` ⇄ active/suspended, DELETE →
//! deprovisioned), a SCIM Group a set of those users. Every write runs under
//! the organization lock, takes or frees seats through the one seat
//! primitive, and writes its audit records in the same transaction.

use super::*;
use crate::model::*;
use crate::roles::scim_role_values;
use crate::scim::filter::{self, SqlFragment};
use crate::scim::patch::{self, PatchRequest};
use crate::scim::schema::{registry, ResourceKind, WriteMode};
use crate::scim::ScimError;
use crate::store::{Member, Organization, ScimGroupRecord, ScimQuery, ScimUserRecord, User, UserGroups};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// The largest page a list answers (advertised as `filter.maxResults`).
pub const SCIM_MAX_RESULTS: i64 = 200;
/// The page size when the client names none.
pub const SCIM_DEFAULT_COUNT: i64 = 100;

/// A SCIM User with the groups it belongs to.
#[derive(Debug, Clone)]
pub struct ScimUser {
    pub record: ScimUserRecord,
    pub groups: UserGroups,
}

impl From<(ScimUserRecord, UserGroups)> for ScimUser {
    fn from((record, groups): (ScimUserRecord, UserGroups)) -> Self {
        Self { record, groups }
    }
}

/// A SCIM Group, with its members when they were asked for.
#[derive(Debug, Clone)]
pub struct ScimGroup {
    pub record: ScimGroupRecord,
    pub members: Option<Vec<(Uuid, Option<String>)>>,
}

/// How many members one read of a streamed group answer takes.
pub const GROUP_MEMBER_PAGE: i64 = 500;

/// How long the reader of a streamed group answer waits for its client to
/// take the next page: the read transaction must not stay open for a client
/// that stopped reading.
const GROUP_MEMBER_STALL: Duration = Duration::from_secs(30);

/// A group's members still to be read, page by page, from the read
/// transaction its record came from: however long the client takes over the
/// answer, it is one snapshot, and only a few pages are in memory at a time.
pub struct GroupMemberPages {
    tx: Box<dyn Tx>,
    group_id: Uuid,
}

/// What the reader task hands the answer; a reader that stops without
/// [`MemberPage::End`] failed or gave up.
enum MemberPage {
    Page(Vec<(Uuid, Option<String>)>),
    End,
}

impl GroupMemberPages {
    /// The members in id order, at most [`GROUP_MEMBER_PAGE`] per item.
    ///
    /// A task reads one page ahead of the consumer. It stops when the stream
    /// is dropped (the client went away) or when the consumer takes no page
    /// for [`GROUP_MEMBER_STALL`]. The stream ends without an error only
    /// after the last member; a failed read, or a reader that gave up, ends
    /// it with one, and the reader logs why (under the caller's span).
    pub fn into_stream(self) -> impl Stream<Item = ServiceResult<Vec<(Uuid, Option<String>)>>> + Send + 'static {
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(read_member_pages(self.tx, self.group_id, sender).instrument(tracing::Span::current()));
        futures::stream::unfold(Some(receiver), |receiver| async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(MemberPage::Page(page)) => Some((Ok(page), Some(receiver))),
                Some(MemberPage::End) => None,
                None => {
                    let stopped = anyhow::anyhow!("the reader of the group's members stopped before the last one");
                    Some((Err(ServiceError::Store(StoreError::Other(stopped))), None))
                }
            }
        })
    }
}

/// Walks the group's members in keyset pages and hands them over, until the
/// last one, a failure, or an answer nobody takes.
async fn read_member_pages(mut tx: Box<dyn Tx>, group_id: Uuid, sender: mpsc::Sender<MemberPage>) {
    let sender = &sender;
    let send = move |message| async move {
        match sender.send_timeout(message, GROUP_MEMBER_STALL).await {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::warn!(group = %group_id, "the client stopped reading the group's members; the answer is cut");
                false
            }
        }
    };
    let mut after = None;
    loop {
        let page = match tx.group_members_after(group_id, after, GROUP_MEMBER_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                let e = anyhow::Error::from(e);
                tracing::error!(error = ?e, group = %group_id, "reading the group's members failed; the answer is cut");
                return;
            }
        };
        // A short page is the last one: no read only to find the end.
        let last = page.last().map(|(id, _)| *id).filter(|_| page.len() as i64 >= GROUP_MEMBER_PAGE);
        if !page.is_empty() && !send(MemberPage::Page(page)).await {
            return;
        }
        match last {
            Some(id) => after = Some(id),
            None => {
                send(MemberPage::End).await;
                return;
            }
        }
    }
}

/// A list request (RFC 7644 §3.4.2).
#[derive(Debug, Clone, Default)]
pub struct ScimListParams {
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub descending: bool,
    pub start_index: Option<i64>,
    pub count: Option<i64>,
    /// Whether group members are needed in the answer.
    pub with_members: bool,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ScimPage<T> {
    pub total: i64,
    pub start_index: i64,
    pub items: Vec<T>,
}

/// The attributes of a User that live outside its JSON.
struct UserAttrs {
    user_name: String,
    external_id: Option<String>,
    display_name: Option<String>,
    active: bool,
    emails: Vec<String>,
    /// The member's email, when the User carries one.
    email: Option<Email>,
}

fn str_at(resource: &Value, key: &str) -> Option<String> {
    resource.get(key).and_then(Value::as_str).map(str::to_string).filter(|s| !s.trim().is_empty())
}

impl UserAttrs {
    /// Reads a validated User. The member's email is `userName` when it is
    /// an address, else the primary (or first) email that is one; a User
    /// with neither is a member without an email until one arrives.
    fn of(resource: &Value) -> ServiceResult<Self> {
        let user_name = str_at(resource, "userName").ok_or_else(|| ScimError::invalid_value("userName is required"))?;
        let emails: Vec<(String, bool)> = resource
            .get("emails")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|e| {
                        let value = e.get("value")?.as_str()?.trim().to_string();
                        Some((value, e.get("primary").and_then(Value::as_bool).unwrap_or(false)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let email = Email::parse(&user_name)
            .ok()
            .or_else(|| emails.iter().find(|(_, p)| *p).and_then(|(v, _)| Email::parse(v).ok()))
            .or_else(|| emails.iter().find_map(|(v, _)| Email::parse(v).ok()));
        Ok(Self {
            user_name,
            external_id: str_at(resource, "externalId"),
            display_name: str_at(resource, "displayName"),
            active: resource.get("active").and_then(Value::as_bool).unwrap_or(true),
            emails: emails.into_iter().map(|(v, _)| v).collect(),
            email,
        })
    }
}

/// `W/"<version>"`, the ETag of a resource version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Refuses when `If-Match` names another version (RFC 7644 §3.14).
fn check_if_match(if_match: Option<&str>, version: i64) -> ServiceResult<()> {
    let Some(header) = if_match else { return Ok(()) };
    let current = etag(version);
    let strong = format!("\"{version}\"");
    let ok = header.split(',').map(str::trim).any(|t| t == "*" || t == current || t == strong);
    if ok {
        Ok(())
    } else {
        Err(ServiceError::PreconditionFailed(current))
    }
}

/// `totalResults` when the page itself tells it, read in the same
/// transaction as the page: a short page that holds something (or the first
/// page, even empty) ends the results. A look-up by `userName` or
/// `externalId` then costs no count.
fn total_from_page(query: &ScimQuery, returned: usize) -> Option<i64> {
    let returned = i64::try_from(returned).ok()?;
    let short = query.limit > 0 && returned < query.limit;
    (short && (returned > 0 || query.offset == 0)).then_some(query.offset + returned)
}

fn parse_ids(values: &[String], what: &str) -> ServiceResult<Vec<Uuid>> {
    let mut seen = BTreeSet::new();
    let mut ids = Vec::with_capacity(values.len());
    for v in values {
        let id = Uuid::parse_str(v.trim())
            .map_err(|_| ScimError::invalid_value(format!("{what} `{v}` is not the id of a User here")))?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

impl Roster {
    /// The actor a SCIM token acts as, after its organization was resolved.
    pub fn scim_actor(credential_id: Uuid, org_id: Uuid, request_id: Option<String>) -> Actor {
        Actor { kind: ActorKind::Scim, id: credential_id.to_string(), org_id, role: Role::Admin, request_id }
    }

    fn page_query(&self, kind: ResourceKind, p: &ScimListParams) -> ServiceResult<(ScimQuery, i64)> {
        let dialect = self.store.dialect();
        let filter = match p.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(raw) => Some(filter::to_sql(&filter::parse(raw)?, kind, dialect, 2)?),
            None => None,
        };
        let next = 2 + filter.as_ref().map_or(0, |f: &SqlFragment| f.binds.len());
        let order = match p.sort_by.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(attr) => Some(filter::order_by(attr, p.descending, kind, dialect, next)?),
            None => None,
        };
        let start_index = p.start_index.unwrap_or(1).max(1);
        let count = p.count.unwrap_or(SCIM_DEFAULT_COUNT).clamp(0, SCIM_MAX_RESULTS);
        Ok((ScimQuery { filter, order, offset: start_index - 1, limit: count }, start_index))
    }

    // ---- Users --------------------------------------------------------------

    pub async fn scim_list_users(&self, actor: &Actor, p: ScimListParams) -> ServiceResult<ScimPage<ScimUser>> {
        let (query, start_index) = self.page_query(ResourceKind::User, &p)?;
        let page = |page: Vec<(ScimUserRecord, UserGroups)>, total| ScimPage {
            total,
            start_index,
            items: page.into_iter().map(ScimUser::from).collect(),
        };
        // A filtered page (a look-up by userName, externalId, …) mostly
        // tells its own total: one statement, one snapshot, no transaction.
        // Should it not, the count and the page are read again, together.
        if query.limit > 0 && query.filter.is_some() {
            let found = self.store.lookup().await?.list_scim_users(actor.org_id, &query).await?;
            if let Some(total) = total_from_page(&query, found.len()) {
                return Ok(page(found, total));
            }
        }
        let mut tx = self.store.read().await?;
        let found = if query.limit > 0 { tx.list_scim_users(actor.org_id, &query).await? } else { Vec::new() };
        let total = match total_from_page(&query, found.len()) {
            Some(total) => total,
            None => tx.count_scim_users(actor.org_id, &query).await?,
        };
        Ok(page(found, total))
    }

    pub async fn scim_get_user(&self, actor: &Actor, id: Uuid) -> ServiceResult<ScimUser> {
        let found = self.store.lookup().await?.get_scim_user_with_groups(actor.org_id, id).await?;
        found.map(ScimUser::from).ok_or(ServiceError::NotFound("User"))
    }

    /// POST /Users.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn scim_create_user(&self, actor: &Actor, body: &Value) -> ServiceResult<ScimUser> {
        let resource = registry().validate(ResourceKind::User, body, WriteMode::Create)?;
        let attrs = UserAttrs::of(&resource)?;
        let now = self.clock.now();
        let result = async {
            let mut tx = self.store.begin().await?;
            let org = lock_org(&mut *tx, actor.org_id).await?;
            if tx.find_scim_user_by_user_name(org.id, &attrs.user_name).await?.is_some() {
                return Err(ScimError::uniqueness(format!("userName `{}` is already taken", attrs.user_name)).into());
            }
            let (member, existed) = match &attrs.email {
                Some(email) => scim_member(&mut *tx, actor, &org, email, attrs.active, now).await?,
                None => {
                    let user = User { id: Uuid::now_v7(), email: None, created_at: now };
                    (insert_scim_member(&mut *tx, actor, &org, &user, true, attrs.active, now).await?, false)
                }
            };
            // Only a member that was there before can stand behind another SCIM User.
            if existed && tx.find_scim_user_by_member(member.id).await?.is_some() {
                return Err(ScimError::uniqueness(format!(
                    "{} is already provisioned as another SCIM User",
                    member.label()
                ))
                .into());
            }
            let record = ScimUserRecord {
                id: Uuid::now_v7(),
                org_id: org.id,
                member_id: member.id,
                user_name: attrs.user_name.clone(),
                external_id: attrs.external_id.clone(),
                display_name: attrs.display_name.clone(),
                active: attrs.active,
                resource,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            tx.insert_scim_user(&record, &attrs.emails).await.map_err(uniqueness)?;
            if !scim_role_values(record.resource.get("roles")).is_empty() {
                recompute_roles(&mut *tx, actor, &org, &[member.id], now).await?;
            }
            let after =
                serde_json::json!({ "userName": record.user_name, "member": member.id, "active": record.active });
            tx.insert_audit(actor.audit(now, "scim.user.created", record.id, None::<&()>, Some(&after))).await?;
            tx.commit().await?;
            Ok(ScimUser { record, groups: Vec::new() })
        }
        .await;
        self.audit_seat_refusal(actor, &result, &attrs.user_name, now).await;
        result
    }

    /// PUT /Users/{id}: replaces the representation.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, user = %id))]
    pub async fn scim_replace_user(
        &self,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        if_match: Option<&str>,
    ) -> ServiceResult<ScimUser> {
        let resource = registry().validate(ResourceKind::User, body, WriteMode::Replace)?;
        if let Some(sent) = body.get("id").and_then(Value::as_str) {
            if sent != id.to_string() {
                return Err(ScimError::mutability("id cannot be changed").into());
            }
        }
        self.save_user(actor, id, if_match, "scim.user.replaced", |_| Ok(resource)).await
    }

    /// PATCH /Users/{id}.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, user = %id))]
    pub async fn scim_patch_user(
        &self,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        if_match: Option<&str>,
    ) -> ServiceResult<ScimUser> {
        let request = PatchRequest::parse(body)?;
        self.save_user(actor, id, if_match, "scim.user.patched", |current| {
            let mut resource = current.clone();
            let outcome = patch::apply(ResourceKind::User, &mut resource, &request)?;
            if !outcome.changed {
                return Ok(current.clone());
            }
            Ok(registry().validate(ResourceKind::User, &resource, WriteMode::Replace)?)
        })
        .await
    }

    /// Loads a user under the organization lock, computes its new
    /// representation with `change`, and applies what changed to the member.
    async fn save_user(
        &self,
        actor: &Actor,
        id: Uuid,
        if_match: Option<&str>,
        action: &str,
        change: impl FnOnce(&Value) -> ServiceResult<Value>,
    ) -> ServiceResult<ScimUser> {
        let now = self.clock.now();
        let mut user_name = String::new();
        let result = async {
            let mut tx = self.store.begin().await?;
            let org = lock_org(&mut *tx, actor.org_id).await?;
            let (before, groups) =
                tx.get_scim_user_with_groups(org.id, id).await?.ok_or(ServiceError::NotFound("User"))?;
            user_name = before.user_name.clone();
            check_if_match(if_match, before.version)?;
            let resource = change(&before.resource)?;
            let attrs = UserAttrs::of(&resource)?;
            let unchanged = resource == before.resource
                && attrs.user_name == before.user_name
                && attrs.active == before.active
                && attrs.external_id == before.external_id
                && attrs.display_name == before.display_name;
            if unchanged {
                return Ok(ScimUser { record: before, groups });
            }
            if attrs.user_name.to_lowercase() != before.user_name.to_lowercase()
                && tx.find_scim_user_by_user_name(org.id, &attrs.user_name).await?.is_some()
            {
                return Err(ScimError::uniqueness(format!("userName `{}` is already taken", attrs.user_name)).into());
            }
            // A User that carried no email stands for a member without one:
            // only an address arriving now needs the member looked at.
            let had_email = UserAttrs::of(&before.resource).is_ok_and(|a| a.email.is_some());
            let mut member = None;
            if let (Some(email), false) = (&attrs.email, had_email) {
                let m = tx.get_member(org.id, before.member_id).await?.ok_or(ServiceError::NotFound("User"))?;
                member =
                    Some(if m.email.is_none() { adopt_email(&mut *tx, actor, &org, m, email, now).await? } else { m });
            }
            if attrs.active != before.active {
                let member = match member {
                    Some(m) => m,
                    None => tx.get_member(org.id, before.member_id).await?.ok_or(ServiceError::NotFound("User"))?,
                };
                let status = if attrs.active { MemberStatus::Active } else { MemberStatus::Suspended };
                transition(&mut *tx, actor, &org, member, status, now).await?;
            }
            let record = ScimUserRecord {
                user_name: attrs.user_name,
                external_id: attrs.external_id,
                display_name: attrs.display_name,
                active: attrs.active,
                resource,
                version: before.version + 1,
                updated_at: now,
                ..before.clone()
            };
            tx.update_scim_user(&record, &attrs.emails).await.map_err(uniqueness)?;
            if scim_role_values(record.resource.get("roles")) != scim_role_values(before.resource.get("roles")) {
                recompute_roles(&mut *tx, actor, &org, &[record.member_id], now).await?;
            }
            let old =
                serde_json::json!({ "userName": before.user_name, "active": before.active, "version": before.version });
            let new =
                serde_json::json!({ "userName": record.user_name, "active": record.active, "version": record.version });
            tx.insert_audit(actor.audit(now, action, record.id, Some(&old), Some(&new))).await?;
            tx.commit().await?;
            Ok(ScimUser { record, groups })
        }
        .await;
        self.audit_seat_refusal(actor, &result, &user_name, now).await;
        result
    }

    /// DELETE /Users/{id}: the member is deprovisioned and the SCIM resource is gone.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, user = %id))]
    pub async fn scim_delete_user(&self, actor: &Actor, id: Uuid, if_match: Option<&str>) -> ServiceResult<()> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let before = tx.get_scim_user(org.id, id).await?.ok_or(ServiceError::NotFound("User"))?;
        check_if_match(if_match, before.version)?;
        if let Some(member) = tx.get_member(org.id, before.member_id).await? {
            transition(&mut *tx, actor, &org, member, MemberStatus::Deprovisioned, now).await?;
        }
        tx.delete_scim_user(org.id, id).await?;
        let old = serde_json::json!({ "userName": before.user_name, "member": before.member_id });
        tx.insert_audit(actor.audit(now, "scim.user.deleted", id, Some(&old), None::<&()>)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A SCIM write refused for want of a seat changes nothing, but the
    /// refusal itself is recorded.
    async fn audit_seat_refusal<T>(
        &self,
        actor: &Actor,
        result: &ServiceResult<T>,
        user_name: &str,
        now: DateTime<Utc>,
    ) {
        let Err(ServiceError::SeatLimitReached { purchased, used, .. }) = result else { return };
        let detail = serde_json::json!({ "userName": user_name, "purchased": purchased, "used": used });
        let write = async {
            let mut tx = self.store.begin().await?;
            tx.insert_audit(actor.audit(now, "scim.user.refused_seat_limit", user_name, None::<&()>, Some(&detail)))
                .await?;
            tx.commit().await
        };
        if let Err(e) = write.await {
            tracing::warn!(error = %e, "could not audit a seat-limit refusal");
        }
        self.notify_no_free_seat(actor.org_id, user_name, "SCIM provisioning").await;
    }

    // ---- Groups -------------------------------------------------------------

    pub async fn scim_list_groups(&self, actor: &Actor, p: ScimListParams) -> ServiceResult<ScimPage<ScimGroup>> {
        let (query, start_index) = self.page_query(ResourceKind::Group, &p)?;
        let mut tx = self.store.read().await?;
        let records = if query.limit > 0 { tx.list_scim_groups(actor.org_id, &query).await? } else { Vec::new() };
        let total = match total_from_page(&query, records.len()) {
            Some(total) => total,
            None => tx.count_scim_groups(actor.org_id, &query).await?,
        };
        let mut items = Vec::with_capacity(records.len());
        for record in records {
            let members = if p.with_members { Some(tx.group_members(record.id).await?) } else { None };
            items.push(ScimGroup { record, members });
        }
        Ok(ScimPage { total, start_index, items })
    }

    pub async fn scim_get_group(&self, actor: &Actor, id: Uuid, with_members: bool) -> ServiceResult<ScimGroup> {
        let mut tx = self.store.read().await?;
        let record = tx.get_scim_group(actor.org_id, id).await?.ok_or(ServiceError::NotFound("Group"))?;
        let members = if with_members { Some(tx.group_members(record.id).await?) } else { None };
        Ok(ScimGroup { record, members })
    }

    /// GET /Groups/{id} for an answer that streams the members: the group
    /// (without them) and, with `with_members`, its members still to be read
    /// from the same read transaction.
    pub async fn scim_get_group_streamed(
        &self,
        actor: &Actor,
        id: Uuid,
        with_members: bool,
    ) -> ServiceResult<(ScimGroup, Option<GroupMemberPages>)> {
        let mut tx = self.store.read().await?;
        let record = tx.get_scim_group(actor.org_id, id).await?.ok_or(ServiceError::NotFound("Group"))?;
        let pages = with_members.then(|| GroupMemberPages { tx, group_id: record.id });
        Ok((ScimGroup { record, members: None }, pages))
    }

    /// POST /Groups.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn scim_create_group(&self, actor: &Actor, body: &Value) -> ServiceResult<ScimGroup> {
        let (resource, members) = group_parts(registry().validate(ResourceKind::Group, body, WriteMode::Create)?)?;
        let display_name =
            str_at(&resource, "displayName").ok_or_else(|| ScimError::invalid_value("displayName is required"))?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let members = members.map(|m| parse_ids(&m, "member")).transpose()?.unwrap_or_default();
        ensure_users_exist(&mut *tx, org.id, &members).await?;
        let record = ScimGroupRecord {
            id: Uuid::now_v7(),
            org_id: org.id,
            display_name,
            external_id: str_at(&resource, "externalId"),
            resource,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        tx.insert_scim_group(&record).await?;
        tx.add_group_members(org.id, record.id, &members).await?;
        if !members.is_empty() && has_group_mappings(&mut *tx, org.id).await? {
            let affected = tx.member_ids_of_scim_users(org.id, &members).await?;
            recompute_roles(&mut *tx, actor, &org, &affected, now).await?;
        }
        let after = serde_json::json!({ "displayName": record.display_name, "members": members.len() });
        tx.insert_audit(actor.audit(now, "scim.group.created", record.id, None::<&()>, Some(&after))).await?;
        let listed = tx.group_members(record.id).await?;
        tx.commit().await?;
        Ok(ScimGroup { record, members: Some(listed) })
    }

    /// PUT /Groups/{id}: replaces the representation, members included.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, group = %id))]
    pub async fn scim_replace_group(
        &self,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        if_match: Option<&str>,
    ) -> ServiceResult<ScimGroup> {
        let (resource, members) = group_parts(registry().validate(ResourceKind::Group, body, WriteMode::Replace)?)?;
        let members = parse_ids(&members.unwrap_or_default(), "member")?;
        self.save_group(actor, id, if_match, "scim.group.replaced", move |_current, _| {
            Ok((resource, MemberEdit::ReplaceAll(members)))
        })
        .await
    }

    /// PATCH /Groups/{id}: member changes touch only the members named.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, group = %id))]
    pub async fn scim_patch_group(
        &self,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        if_match: Option<&str>,
    ) -> ServiceResult<ScimGroup> {
        let request = PatchRequest::parse(body)?;
        self.save_group(actor, id, if_match, "scim.group.patched", |current, _| {
            let mut resource = current.clone();
            let outcome = patch::apply(ResourceKind::Group, &mut resource, &request)?;
            let resource = if outcome.changed {
                registry().validate(ResourceKind::Group, &resource, WriteMode::Replace)?
            } else {
                current.clone()
            };
            let m = outcome.members;
            let edit = match m.replace_all {
                Some(all) => {
                    let mut all = parse_ids(&all, "member")?;
                    all.extend(parse_ids(&m.add, "member")?);
                    MemberEdit::ReplaceAll(all)
                }
                None => {
                    MemberEdit::Change { add: parse_ids(&m.add, "member")?, remove: parse_ids(&m.remove, "member")? }
                }
            };
            Ok((resource, edit))
        })
        .await
    }

    async fn save_group(
        &self,
        actor: &Actor,
        id: Uuid,
        if_match: Option<&str>,
        action: &str,
        change: impl FnOnce(&Value, &ScimGroupRecord) -> ServiceResult<(Value, MemberEdit)>,
    ) -> ServiceResult<ScimGroup> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        // The group's own row lock, not the organization's: membership
        // changes of different groups do not wait for each other. When group
        // mappings decide roles, membership changes re-derive members' roles,
        // which needs the organization lock (taken first, as everywhere).
        let org = match has_group_mappings(&mut *tx, actor.org_id).await? {
            true => Some(lock_org(&mut *tx, actor.org_id).await?),
            false => None,
        };
        let before = tx.lock_scim_group(actor.org_id, id).await?.ok_or(ServiceError::NotFound("Group"))?;
        check_if_match(if_match, before.version)?;
        let (resource, edit) = change(&before.resource, &before)?;
        let display_name =
            str_at(&resource, "displayName").ok_or_else(|| ScimError::invalid_value("displayName is required"))?;
        let (to_add, to_remove) = match edit {
            MemberEdit::Change { add, remove } => (add, remove),
            MemberEdit::ReplaceAll(wanted) => {
                let current: BTreeSet<Uuid> = tx.group_members(id).await?.into_iter().map(|(u, _)| u).collect();
                let wanted_set: BTreeSet<Uuid> = wanted.iter().copied().collect();
                (
                    wanted.into_iter().filter(|u| !current.contains(u)).collect(),
                    current.into_iter().filter(|u| !wanted_set.contains(u)).collect(),
                )
            }
        };
        ensure_users_exist(&mut *tx, actor.org_id, &to_add).await?;
        let added = tx.add_group_members(actor.org_id, id, &to_add).await?;
        let removed = tx.remove_group_members(id, &to_remove).await?;
        let record = ScimGroupRecord {
            display_name,
            external_id: str_at(&resource, "externalId"),
            resource,
            version: before.version + 1,
            updated_at: now,
            ..before.clone()
        };
        let changed = record.resource != before.resource || !added.is_empty() || !removed.is_empty();
        if !changed {
            return Ok(ScimGroup { record: before, members: None });
        }
        tx.update_scim_group(&record).await?;
        if let Some(org) = &org {
            let renamed = record.display_name != before.display_name || record.external_id != before.external_id;
            let affected = if renamed {
                // Every member's groups changed name: all are re-derived.
                let mut all = tx.member_ids_of_group(id).await?;
                all.extend(tx.member_ids_of_scim_users(org.id, &removed).await?);
                all
            } else {
                let touched: Vec<Uuid> = added.iter().chain(&removed).copied().collect();
                tx.member_ids_of_scim_users(org.id, &touched).await?
            };
            recompute_roles(&mut *tx, actor, org, &affected, now).await?;
        }
        let old = serde_json::json!({ "displayName": before.display_name, "version": before.version });
        let new = serde_json::json!({
            "displayName": record.display_name,
            "version": record.version,
            "members_added": added,
            "members_removed": removed,
        });
        tx.insert_audit(actor.audit(now, action, record.id, Some(&old), Some(&new))).await?;
        tx.commit().await?;
        Ok(ScimGroup { record, members: None })
    }

    /// DELETE /Groups/{id}.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, group = %id))]
    pub async fn scim_delete_group(&self, actor: &Actor, id: Uuid, if_match: Option<&str>) -> ServiceResult<()> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = match has_group_mappings(&mut *tx, actor.org_id).await? {
            true => Some(lock_org(&mut *tx, actor.org_id).await?),
            false => None,
        };
        let before = tx.lock_scim_group(actor.org_id, id).await?.ok_or(ServiceError::NotFound("Group"))?;
        check_if_match(if_match, before.version)?;
        let affected = match &org {
            Some(_) => tx.member_ids_of_group(id).await?,
            None => Vec::new(),
        };
        tx.delete_scim_group(actor.org_id, id).await?;
        if let Some(org) = &org {
            recompute_roles(&mut *tx, actor, org, &affected, now).await?;
        }
        let old = serde_json::json!({ "displayName": before.display_name });
        tx.insert_audit(actor.audit(now, "scim.group.deleted", id, Some(&old), None::<&()>)).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How a write changes a group's members.
enum MemberEdit {
    Change { add: Vec<Uuid>, remove: Vec<Uuid> },
    ReplaceAll(Vec<Uuid>),
}

/// Splits a validated Group into the representation to store and its member ids.
fn group_parts(mut resource: Value) -> ServiceResult<(Value, Option<Vec<String>>)> {
    let members = match resource.as_object_mut().and_then(|o| o.remove("members")) {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|m| {
                    m.get("value")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| ScimError::invalid_value("every member needs a value"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(ScimError::invalid_value("members must be a list").into()),
    };
    Ok((resource, members))
}

/// Whether any mapping names a group, so that group membership decides roles.
async fn has_group_mappings(tx: &mut dyn Tx, org_id: Uuid) -> ServiceResult<bool> {
    Ok(tx.list_role_mappings(org_id).await?.iter().any(|m| m.source == RoleMappingSource::Group))
}

async fn ensure_users_exist(tx: &mut dyn Tx, org_id: Uuid, ids: &[Uuid]) -> ServiceResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let found: BTreeSet<Uuid> = tx.existing_scim_users(org_id, ids).await?.into_iter().collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
        return Err(ScimError::invalid_value(format!("member `{missing}` is not a User of this organization")).into());
    }
    Ok(())
}

/// A unique-index refusal on a SCIM write is a `uniqueness` error.
fn uniqueness(e: crate::store::StoreError) -> ServiceError {
    match e {
        crate::store::StoreError::Conflict(_) => ScimError::uniqueness("userName is already taken").into(),
        other => other.into(),
    }
}

/// The member a SCIM User of `email` stands for, made to match `active`:
/// created, adopted (an existing member or accepted invitation keeps its
/// one seat), re-activated or suspended; and whether the member was there
/// before.
async fn scim_member(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    email: &Email,
    active: bool,
    now: DateTime<Utc>,
) -> ServiceResult<(Member, bool)> {
    let person = tx.find_person(org.id, email).await?;
    let Some(member) = person.member.clone() else {
        let member = if active {
            insert_active_member(tx, actor, org, email, person, None, &[], MemberSource::Scim, now).await?
        } else {
            let (user, new_user) = match person.user {
                Some(u) => (u, false),
                None => (User { id: Uuid::now_v7(), email: Some(email.clone()), created_at: now }, true),
            };
            insert_scim_member(tx, actor, org, &user, new_user, false, now).await?
        };
        return Ok((member, false));
    };
    let member = match (member.status, active) {
        (MemberStatus::Deprovisioned, true) => {
            insert_active_member(tx, actor, org, email, person, None, &[], MemberSource::Scim, now).await?
        }
        (_, true) => transition(tx, actor, org, member, MemberStatus::Active, now).await?,
        (_, false) => transition(tx, actor, org, member, MemberStatus::Suspended, now).await?,
    };
    Ok((member, true))
}

/// A new SCIM member of `user` (stored with it when `new_user`), with no
/// invitation to settle (the User carries no email, or is provisioned
/// suspended): active (taking a seat) or suspended; audited.
async fn insert_scim_member(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    user: &User,
    new_user: bool,
    active: bool,
    now: DateTime<Utc>,
) -> ServiceResult<Member> {
    let reservation = if active { reserve_seats(tx, org, 1, now).await? } else { Reservation { overage: 0 } };
    if new_user {
        tx.insert_user(user).await?;
    }
    let status = if active { MemberStatus::Active } else { MemberStatus::Suspended };
    let mut member = Member::new(org.id, user, status, MemberSource::Scim, now);
    member.set_role(&derive_member(&member, None, &[], org));
    tx.insert_member(&member).await?;
    let after = audit_with_overage(&member, reservation);
    tx.insert_audit(actor.audit(now, "member.added", member.id, None::<&()>, Some(&after))).await?;
    Ok(member)
}

/// Gives a member without an email the `email` its SCIM User now carries.
/// When another Roster user already has that email (the person belongs to
/// another organization too), the member becomes that user's; when that
/// person is already a member here, the change is a `uniqueness` error. A
/// pending invitation of the email is settled: the member has its seat.
async fn adopt_email(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    member: Member,
    email: &Email,
    now: DateTime<Utc>,
) -> ServiceResult<Member> {
    let mut after = Member { email: Some(email.clone()), updated_at: now, ..member.clone() };
    match tx.find_user_by_email(email).await? {
        None => tx.set_user_email(member.user_id, email).await?,
        Some(user) => {
            if let Some(other) = tx.find_member_by_user(org.id, user.id).await? {
                return Err(ScimError::uniqueness(format!(
                    "{email} is already a member of this organization ({})",
                    other.status
                ))
                .into());
            }
            after.user_id = user.id;
        }
    }
    let pending = tx.find_pending_invitation(org.id, email).await?;
    if let Some(role) = settle_invitation(tx, actor, pending, now).await? {
        after.manual_role = Some(role);
        after.role_pinned = true;
    }
    tx.update_member(&after).await?;
    if after.user_id != member.user_id {
        tx.delete_user(member.user_id).await?;
    }
    tx.insert_audit(actor.audit(now, "member.email_set", after.id, Some(&member), Some(&after))).await?;
    if after.manual_role != member.manual_role {
        recompute_roles(tx, actor, org, &[after.id], now).await?;
        return tx.get_member(org.id, after.id).await?.ok_or(ServiceError::NotFound("User"));
    }
    Ok(after)
}

/// Moves a member to `status`: taking a seat to become active, never
/// leaving the organization without an active Owner; audited.
async fn transition(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    member: Member,
    status: MemberStatus,
    now: DateTime<Utc>,
) -> ServiceResult<Member> {
    if member.status == status {
        return Ok(member);
    }
    let reservation =
        if status == MemberStatus::Active { reserve_seats(tx, org, 1, now).await? } else { Reservation { overage: 0 } };
    if member.role == Role::Owner && member.status == MemberStatus::Active && tx.count_active_owners(org.id).await? <= 1
    {
        return Err(ServiceError::LastOwner);
    }
    let action = match status {
        MemberStatus::Active => "member.reactivated",
        MemberStatus::Suspended => "member.suspended",
        MemberStatus::Deprovisioned => "member.removed",
        MemberStatus::Invited => "member.invited",
    };
    let after = Member { status, updated_at: now, ..member.clone() };
    tx.update_member(&after).await?;
    if status != MemberStatus::Active {
        // Suspension and removal end the member's sessions.
        tx.end_member_sessions(after.id, now).await?;
    }
    let audited = audit_with_overage(&after, reservation);
    tx.insert_audit(actor.audit(now, action, after.id, Some(&member), Some(&audited))).await?;
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_tells_the_total_only_when_it_ends_the_results() {
        let query = |offset, limit| ScimQuery { filter: None, order: None, offset, limit };
        // (offset, limit, returned) → total known from the page alone
        let cases = [
            (0, 100, 0, Some(0)),      // nothing matches
            (0, 100, 1, Some(1)),      // a userName look-up
            (200, 100, 37, Some(237)), // the last page
            (0, 100, 100, None),       // a full page: more may follow
            (500, 100, 0, None),       // past the end: how far is unknown
            (0, 0, 0, None),           // count=0 asks for the total only
        ];
        for (offset, limit, returned, expected) in cases {
            assert_eq!(total_from_page(&query(offset, limit), returned), expected, "{offset} {limit} {returned}");
        }
    }
}
