//! The SQL both backends run.
//!
//! SQLite and PostgreSQL accept the same statements here (`$n` parameters,
//! `RETURNING`, partial unique indexes), and every column decodes into the
//! same Rust type on both, so the statements and row types are written once
//! and [`impl_tx!`] implements [`Tx`](super::Tx) for each backend's
//! transaction type. What differs (pool set-up, locking, migrations) lives in
//! `sqlite.rs` and `postgres.rs`.

use super::*;
use sqlx::types::Json;
use std::str::FromStr;

/// An audit record: binds `$1`–`$11`.
pub(super) const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (id, org_id, actor_kind, actor_id, action, target, before_json, \
    after_json, request_id, at, client_address) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Statements whose text differs between the backends.
pub(super) trait Statements {
    /// An audit record that is also an event, in one round trip: binds
    /// `$1`–`$11` as [`INSERT_AUDIT`] does and `$12`, the event's id. The
    /// event takes the organization's next number by updating its row, whose
    /// lock orders the feed: a number is taken only after the previous
    /// holder committed or rolled back.
    const INSERT_AUDIT_AND_EVENT: &'static str;
    /// The groups of a User `r`: a JSON array of `[id, displayName]` of
    /// its groups, by display name, `[]` for none.
    const USER_GROUPS: &'static str;
    /// Whether a string of several statements with parameters goes to the
    /// database in one round trip: then writes are [`Deferred`] and sent
    /// together, and look-ups of one use case (`find_person`) share a string.
    const SENDS_STATEMENTS_TOGETHER: bool;
    /// What a queue's `SELECT … LIMIT n` ends with so that two claimers
    /// never wait on, or take, the same rows: PostgreSQL's `FOR UPDATE SKIP
    /// LOCKED`; nothing on SQLite, whose one writer claims alone.
    const SKIP_LOCKED: &'static str;
    /// `r.id` among the ids `subquery` picks (a page's, picked first, then
    /// their rows by primary key). PostgreSQL takes them as an array
    /// computed once before the rows: as `IN`, its generic plan (which does
    /// not know the LIMIT) may hash the page against a scan of the table.
    fn id_among(subquery: &str) -> String {
        format!("r.id IN ({subquery})")
    }
    /// A list's page as one row: `SELECT` of a JSON array holding, in
    /// `order`, each row's `columns` as an array (each column as JSON takes
    /// it: `json(…)` around JSON text), or `None` to read the rows
    /// themselves. SQLite's connection hands over each row from its worker
    /// thread to the reader, often a thread wake-up per row; as one row a
    /// page is one hand-off.
    fn page_as_one_row(_columns: &str, _from_where: &str, _order: &str) -> Option<String> {
        None
    }
}

/// A transaction on one backend, or a pooled connection whose statements
/// each run on their own (see [`Store::lookup`]).
///
/// Inserts that nothing in the transaction waits on (audit records, new
/// rows whose ids the caller chose) are [`Deferred`] on a backend that can
/// send several statements at once: they go to the database with the
/// transaction's next statement, or with its commit.
pub(super) struct SqlTx<DB: sqlx::Database> {
    pub(super) conn: Conn<DB>,
    pub(super) deferred: Deferred<DB>,
    /// Told when a transaction that appended to the events outbox commits.
    events: Option<Arc<tokio::sync::Notify>>,
    pub(super) wrote_event: bool,
}

pub(super) enum Conn<DB: sqlx::Database> {
    Tx(sqlx::Transaction<'static, DB>),
    Autocommit(sqlx::pool::PoolConnection<DB>),
    Held(Box<dyn Held<DB>>),
}

impl<DB: sqlx::Database> SqlTx<DB> {
    pub(super) fn tx(tx: sqlx::Transaction<'static, DB>) -> Self {
        Self::on(Conn::Tx(tx))
    }

    pub(super) fn autocommit(conn: sqlx::pool::PoolConnection<DB>) -> Self {
        Self::on(Conn::Autocommit(conn))
    }

    pub(super) fn held(tx: Box<dyn Held<DB>>) -> Self {
        Self::on(Conn::Held(tx))
    }

    fn on(conn: Conn<DB>) -> Self {
        Self { conn, deferred: Deferred::default(), events: None, wrote_event: false }
    }

    /// Tells `events` when this transaction commits events.
    pub(super) fn telling(mut self, events: &Arc<tokio::sync::Notify>) -> Self {
        self.events = Some(events.clone());
        self
    }

    /// Commits what was sent: [`Deferred`] writes must have gone first.
    pub(super) async fn commit_conn(self) -> StoreResult<()> {
        let told = self.events.filter(|_| self.wrote_event);
        match self.conn {
            Conn::Tx(tx) => tx.commit().await?,
            // Each statement already took effect.
            Conn::Autocommit(_) => {}
            Conn::Held(tx) => tx.commit().await?,
        }
        if let Some(events) = told {
            events.notify_waiters();
        }
        Ok(())
    }
}

/// Writes waiting to go to the database as one string of statements, each
/// statement's `$n` parameters renumbered to follow those before it.
pub(super) struct Deferred<DB: sqlx::Database> {
    pub(super) sql: String,
    pub(super) args: DB::Arguments<'static>,
    statements: usize,
    /// A statement whose parameters could not all be added: the ones after
    /// it would be numbered wrong, so nothing more is sent.
    pub(super) broken: bool,
}

impl<DB: sqlx::Database> Default for Deferred<DB> {
    fn default() -> Self {
        Self { sql: String::new(), args: Default::default(), statements: 0, broken: false }
    }
}

/// How many statements, and parameters, [`Deferred`] writes gather at most
/// before they are sent: SQLite numbers parameters up to 32,766 in a string.
const DEFERRED_STATEMENTS: usize = 32;
const DEFERRED_PARAMETERS: usize = 2_000;

impl<DB: sqlx::Database> Deferred<DB> {
    pub(super) fn is_empty(&self) -> bool {
        self.statements == 0 && !self.broken
    }

    pub(super) fn is_full(&self) -> bool {
        self.statements >= DEFERRED_STATEMENTS || sqlx::Arguments::len(&self.args) >= DEFERRED_PARAMETERS
    }

    /// Appends `sql`, whose parameters `bind` adds in order `$1`, `$2`, ….
    pub(super) fn push(
        &mut self,
        sql: &str,
        bind: impl FnOnce(&mut DB::Arguments<'static>) -> Result<(), sqlx::error::BoxDynError>,
    ) -> StoreResult<()> {
        if self.broken {
            return Err(StoreError::Other(anyhow::anyhow!("an earlier write of the transaction could not be encoded")));
        }
        let shifted = shift_parameters(sql, sqlx::Arguments::len(&self.args));
        if let Err(e) = bind(&mut self.args) {
            self.broken = true;
            return Err(sqlx::Error::Encode(e).into());
        }
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        self.sql.push_str(&shifted);
        self.statements += 1;
        Ok(())
    }
}

/// `sql` with each parameter `$n` outside quotes renumbered `$(n + by)`.
fn shift_parameters(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quoted = false;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        let digits = if c == '$' && !quoted {
            let start = i + 1;
            let mut end = start;
            while let Some((j, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                end = j + d.len_utf8();
                chars.next();
            }
            &sql[start..end]
        } else {
            ""
        };
        match digits.parse::<usize>() {
            Ok(n) => {
                out.push('$');
                out.push_str(&(n + by).to_string());
            }
            Err(_) => out.push(c),
        }
    }
    out
}

/// A transaction on a connection that belongs to the store alone, outside
/// any pool (SQLite's one writer): its statements run on [`Held::conn`],
/// and it is committed by [`Held::commit`] or undone when dropped unended.
#[async_trait]
pub(super) trait Held<DB: sqlx::Database>: Send {
    fn conn(&self) -> &DB::Connection;
    fn conn_mut(&mut self) -> &mut DB::Connection;
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

impl<DB: sqlx::Database> std::ops::Deref for Conn<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self {
            Conn::Tx(tx) => tx,
            Conn::Autocommit(conn) => conn,
            Conn::Held(tx) => tx.conn(),
        }
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Conn<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Conn::Tx(tx) => tx,
            Conn::Autocommit(conn) => conn,
            Conn::Held(tx) => tx.conn_mut(),
        }
    }
}

pub(super) fn parse<T: FromStr>(column: &str, raw: &str) -> StoreResult<T> {
    raw.parse().map_err(|_| StoreError::Other(anyhow::anyhow!("stored {column} `{raw}` is not valid")))
}

pub(super) fn uuid(column: &str, raw: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| StoreError::Other(anyhow::anyhow!("stored {column} `{raw}` is not a UUID")))
}

/// A timestamp as SQLite stores it (RFC 3339, or with a space for the `T`
/// and no offset, meaning UTC), read from JSON text rather than a column.
pub(super) fn time(column: &str, raw: &str) -> StoreResult<DateTime<Utc>> {
    let rfc3339 = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    let with_t = raw.replacen(' ', "T", 1);
    rfc3339(raw)
        .or_else(|_| rfc3339(&with_t))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&with_t, "%FT%T%.f").map(|t| t.and_utc()))
        .map_err(|_| StoreError::Other(anyhow::anyhow!("stored {column} `{raw}` is not a timestamp")))
}

pub(super) fn email(raw: &str) -> StoreResult<Email> {
    Email::parse(raw).map_err(|_| StoreError::Other(anyhow::anyhow!("stored email `{raw}` is not valid")))
}

pub(super) const ORG_COLUMNS: &str = "id, name, contact_email, plan, purchased_seats, seat_policy, \
    seat_enforcement, feature_external_cloud, feature_analytics, sso_tenant_id, sso_enforce, sso_auto_assign, \
    sso_default_role, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct OrgRow {
    id: String,
    name: String,
    contact_email: Option<String>,
    plan: String,
    purchased_seats: i64,
    seat_policy: String,
    seat_enforcement: String,
    feature_external_cloud: bool,
    feature_analytics: bool,
    sso_tenant_id: Option<String>,
    sso_enforce: bool,
    sso_auto_assign: bool,
    sso_default_role: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl OrgRow {
    pub(super) fn into_model(self) -> StoreResult<Organization> {
        Ok(Organization {
            id: uuid("organizations.id", &self.id)?,
            name: self.name,
            contact_email: self.contact_email,
            plan: parse("plan", &self.plan)?,
            purchased_seats: self.purchased_seats,
            seat_policy: parse("seat_policy", &self.seat_policy)?,
            seat_enforcement: parse("seat_enforcement", &self.seat_enforcement)?,
            features: Features { external_cloud: self.feature_external_cloud, analytics: self.feature_analytics },
            sso: SsoSettings {
                tenant_id: self
                    .sso_tenant_id
                    .map(|t| TenantId::parse(&t).map_err(|e| StoreError::Other(e.into())))
                    .transpose()?,
                enforce: self.sso_enforce,
                auto_assign: self.sso_auto_assign,
                default_role: parse("sso_default_role", &self.sso_default_role)?,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    email: Option<String>,
    created_at: DateTime<Utc>,
}

impl UserRow {
    pub(super) fn into_model(self) -> StoreResult<User> {
        Ok(User {
            id: uuid("users.id", &self.id)?,
            email: self.email.as_deref().map(email).transpose()?,
            created_at: self.created_at,
        })
    }
}

pub(super) const MEMBER_SELECT: &str = "SELECT m.id, m.org_id, m.user_id, u.email, m.role, m.status, m.source, \
    m.manual_role, m.role_pinned, m.sso_roles, m.role_source, m.created_at, m.updated_at \
    FROM members m JOIN users u ON u.id = m.user_id";

/// A page's cursor for `id > $n`: the last id of the page before, or the
/// empty string, which sorts before every id. Always a value, so that the
/// condition is the index's whatever the page (`$n IS NULL OR id > $n`
/// would make every plan read the organization's rows from the first).
pub(super) fn cursor(after: Option<Uuid>) -> String {
    after.map(|a| a.to_string()).unwrap_or_default()
}

/// An organization's member by email (`$1` the organization, `$2` the
/// normalized address), as a condition on [`MEMBER_SELECT`]. The user is
/// found first, by the unique address, then their memberships, the
/// organization checked as in [`ORG_CHECKED`]: a plan that walked the
/// organization's members and checked each one's user got slower with every
/// member provisioned.
pub(super) const MEMBER_BY_EMAIL: &str =
    "m.user_id = (SELECT id FROM users WHERE email_normalized = $2) AND m.org_id || '' = $1";

/// A member's organization (`$1`) checked, not searched by: `org_id || ''`
/// is the column of no index, so a look-up by a member's unique key (its
/// id, its user) starts from that key whatever the planner's statistics.
/// Given statistics from a nearly empty table, PostgreSQL costs an index
/// led by `org_id` the same as the unique one, and picks either: the wrong
/// one reads every member of the organization.
pub(super) const ORG_CHECKED: &str = "m.org_id || '' = $1";

/// The portal's member filters, with the statement's parameters `$n`
/// (source) and, when `searching`, `$n+1` (a `LIKE` pattern over the email
/// and the SCIM display name, both lower-cased). A listing without a search
/// keeps to the organization's index on `members`.
pub(super) fn member_search(n: usize, searching: bool) -> String {
    let mut clause = format!("AND (${n} IS NULL OR m.source = ${n})");
    if searching {
        let p = n + 1;
        clause.push_str(&format!(
            " AND (u.email_normalized LIKE ${p} ESCAPE '\\' \
             OR EXISTS (SELECT 1 FROM scim_users s WHERE s.member_id = m.id AND s.display_name_lc LIKE ${p} ESCAPE '\\'))"
        ));
    }
    clause
}

/// A member's SCIM User: (member, SCIM user, active, `roles`).
type ScimUserLink = (String, String, bool, Option<Json<serde_json::Value>>);

/// Records a member's SCIM User in `links`, and whose it is in `member_of_user`.
pub(super) fn link_scim_user(
    links: &mut std::collections::HashMap<Uuid, MemberLinks>,
    member_of_user: &mut std::collections::HashMap<Uuid, Uuid>,
    (member, user, active, roles): ScimUserLink,
) -> StoreResult<()> {
    let member = uuid("scim_users.member_id", &member)?;
    let user = uuid("scim_users.id", &user)?;
    member_of_user.insert(user, member);
    let entry = links.entry(member).or_default();
    entry.scim_user = Some(user);
    entry.scim_active = Some(active);
    entry.scim_roles = crate::roles::scim_role_values(roles.as_ref().map(|r| &r.0));
    Ok(())
}

/// Records a group membership (SCIM user, group name, group external id) of a member in `links`.
pub(super) fn link_group(
    links: &mut std::collections::HashMap<Uuid, MemberLinks>,
    member_of_user: &std::collections::HashMap<Uuid, Uuid>,
    (user, display_name, external_id): (String, String, Option<String>),
) -> StoreResult<()> {
    let user = uuid("scim_group_members.user_id", &user)?;
    if let Some(member) = member_of_user.get(&user) {
        links.entry(*member).or_default().groups.push(crate::roles::GroupRef { display_name, external_id });
    }
    Ok(())
}

/// `%needle%` for `LIKE`, lower-cased, its wildcards taken literally.
pub(super) fn like_pattern(needle: &str) -> String {
    let mut p = String::from("%");
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[derive(sqlx::FromRow)]
pub(super) struct MemberRow {
    id: String,
    org_id: String,
    user_id: String,
    email: Option<String>,
    role: String,
    status: String,
    source: String,
    manual_role: Option<String>,
    role_pinned: bool,
    sso_roles: Json<Vec<String>>,
    role_source: Json<RoleSource>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl MemberRow {
    pub(super) fn into_model(self) -> StoreResult<Member> {
        let role: Role = parse("role", &self.role)?;
        Ok(Member {
            id: uuid("members.id", &self.id)?,
            org_id: uuid("members.org_id", &self.org_id)?,
            user_id: uuid("members.user_id", &self.user_id)?,
            email: self.email.as_deref().map(email).transpose()?,
            status: parse("status", &self.status)?,
            source: parse("source", &self.source)?,
            manual_role: self.manual_role.as_deref().map(|r| parse("manual_role", r)).transpose()?,
            role_pinned: self.role_pinned,
            sso_roles: self.sso_roles.0,
            role_reason: self.role_source.0.explain(role),
            role,
            role_source: self.role_source.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(super) const ROLE_MAPPING_COLUMNS: &str = "id, org_id, source, value, role, created_by, created_at";

#[derive(sqlx::FromRow)]
pub(super) struct RoleMappingRow {
    id: String,
    org_id: String,
    source: String,
    value: String,
    role: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

impl RoleMappingRow {
    pub(super) fn into_model(self) -> StoreResult<RoleMapping> {
        Ok(RoleMapping {
            id: uuid("role_mappings.id", &self.id)?,
            org_id: uuid("role_mappings.org_id", &self.org_id)?,
            source: parse("role_mappings.source", &self.source)?,
            value: self.value,
            role: parse("role_mappings.role", &self.role)?,
            created_by: self.created_by,
            created_at: self.created_at,
        })
    }
}

pub(super) const INVITATION_COLUMNS: &str =
    "id, org_id, email, role, status, expires_at, invited_by, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct InvitationRow {
    id: String,
    org_id: String,
    email: String,
    role: String,
    status: String,
    expires_at: DateTime<Utc>,
    invited_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl InvitationRow {
    pub(super) fn into_model(self) -> StoreResult<Invitation> {
        Ok(Invitation {
            id: uuid("invitations.id", &self.id)?,
            org_id: uuid("invitations.org_id", &self.org_id)?,
            email: email(&self.email)?,
            role: parse("role", &self.role)?,
            status: parse("status", &self.status)?,
            expires_at: self.expires_at,
            invited_by: self.invited_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            email_delivery: None,
        })
    }
}

pub(super) const MAIL_COLUMNS: &str =
    "id, org_id, kind, subject_id, recipient, subject, body_text, body_html, attempts, give_up_at, created_at";

#[derive(sqlx::FromRow)]
pub(super) struct MailRow {
    id: String,
    org_id: Option<String>,
    kind: String,
    subject_id: Option<String>,
    recipient: String,
    subject: Option<String>,
    body_text: Option<String>,
    body_html: Option<String>,
    attempts: i64,
    give_up_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl MailRow {
    pub(super) fn into_model(self) -> StoreResult<OutboxMail> {
        Ok(OutboxMail {
            id: uuid("mail_outbox.id", &self.id)?,
            org_id: self.org_id.as_deref().map(|o| uuid("mail_outbox.org_id", o)).transpose()?,
            kind: self.kind,
            subject_id: self.subject_id.as_deref().map(|s| uuid("mail_outbox.subject_id", s)).transpose()?,
            recipient: self.recipient,
            subject: self.subject.unwrap_or_default(),
            text: self.body_text.unwrap_or_default(),
            html: self.body_html.unwrap_or_default(),
            attempts: self.attempts,
            give_up_at: self.give_up_at,
            created_at: self.created_at,
        })
    }
}

/// A webhook queue `q` with an event due at `$1`: unclaimed, its endpoint
/// enabled, and its organization's feed past it or a replay asked for.
pub(super) const WEBHOOK_QUEUE_DUE: &str = "q.next_attempt_at <= $1 \
    AND (q.claimed_until IS NULL OR q.claimed_until <= $1) \
    AND q.endpoint_id IN (SELECT e.id FROM webhook_endpoints e WHERE e.enabled) \
    AND (q.delivered_seq < (SELECT o.event_seq FROM organizations o WHERE o.id = q.org_id) \
    OR EXISTS (SELECT 1 FROM webhook_replays r WHERE r.endpoint_id = q.endpoint_id AND r.org_id = q.org_id))";

pub(super) const WEBHOOK_COLUMNS: &str = "id, org_id, url, description, event_types, secret, previous_secret, \
    previous_secret_expires_at, enabled, disabled_reason, created_by, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct WebhookRow {
    id: String,
    org_id: Option<String>,
    url: String,
    description: String,
    event_types: Json<Vec<String>>,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    enabled: bool,
    disabled_reason: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl WebhookRow {
    pub(super) fn into_model(self) -> StoreResult<WebhookEndpoint> {
        Ok(WebhookEndpoint {
            id: uuid("webhook_endpoints.id", &self.id)?,
            org_id: self.org_id.as_deref().map(|o| uuid("webhook_endpoints.org_id", o)).transpose()?,
            url: self.url,
            description: self.description,
            event_types: self.event_types.0,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            previous_secret_expires_at: self.previous_secret_expires_at,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            secret: self.secret,
            previous_secret: self.previous_secret,
        })
    }
}

pub(super) const DELIVERY_COLUMNS: &str = "id, endpoint_id, org_id, event_id, event_seq, event_type, attempt, \
    replay, outcome, status_code, latency_ms, response, at";

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    id: String,
    endpoint_id: String,
    org_id: String,
    event_id: String,
    event_seq: i64,
    event_type: String,
    attempt: i64,
    replay: bool,
    outcome: String,
    status_code: Option<i64>,
    latency_ms: i64,
    response: String,
    at: DateTime<Utc>,
}

impl DeliveryRow {
    pub(super) fn into_model(self) -> StoreResult<WebhookDelivery> {
        let outcome = match self.outcome.as_str() {
            "delivered" => DeliveryOutcome::Delivered,
            "failed" => DeliveryOutcome::Failed,
            other => return Err(StoreError::Other(anyhow::anyhow!("stored delivery outcome `{other}`"))),
        };
        Ok(WebhookDelivery {
            id: uuid("webhook_deliveries.id", &self.id)?,
            endpoint_id: uuid("webhook_deliveries.endpoint_id", &self.endpoint_id)?,
            org_id: uuid("webhook_deliveries.org_id", &self.org_id)?,
            event_id: uuid("webhook_deliveries.event_id", &self.event_id)?,
            event_seq: self.event_seq,
            event_type: self.event_type,
            attempt: self.attempt,
            replay: self.replay,
            outcome,
            status_code: self.status_code,
            latency_ms: self.latency_ms,
            response: self.response,
            at: self.at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MailDeliveryRow {
    subject_id: String,
    status: String,
    attempts: i64,
    last_reply: Option<String>,
    next_attempt_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl MailDeliveryRow {
    pub(super) fn into_model(self) -> StoreResult<(Uuid, MailDelivery)> {
        let status: MailStatus = parse("mail_outbox.status", &self.status)?;
        Ok((
            uuid("mail_outbox.subject_id", &self.subject_id)?,
            MailDelivery {
                status,
                attempts: self.attempts,
                reply: self.last_reply,
                next_attempt_at: (status == MailStatus::Queued).then_some(self.next_attempt_at),
                sent_at: self.sent_at,
                updated_at: self.updated_at,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SignInLinkRow {
    org_id: String,
    email: String,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    browser_hash: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl SignInLinkRow {
    pub(super) fn into_model(self) -> StoreResult<SignInLink> {
        Ok(SignInLink {
            org_id: uuid("sign_in_links.org_id", &self.org_id)?,
            email: email(&self.email)?,
            client_id: uuid("sign_in_links.client_id", &self.client_id)?,
            redirect_uri: self.redirect_uri,
            state: self.state,
            browser_hash: self.browser_hash,
            created_at: self.created_at,
            expires_at: self.expires_at,
            used_at: self.used_at,
        })
    }
}

pub(super) const CREDENTIAL_COLUMNS: &str =
    "id, org_id, kind, name, role, created_by, created_at, expires_at, last_used_at, revoked_at, token_hash";

#[derive(sqlx::FromRow)]
pub(super) struct CredentialRow {
    id: String,
    org_id: String,
    kind: String,
    name: String,
    role: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    token_hash: String,
}

impl CredentialRow {
    pub(super) fn into_model(self) -> StoreResult<(Credential, String)> {
        Ok((
            Credential {
                id: uuid("credentials.id", &self.id)?,
                org_id: uuid("credentials.org_id", &self.org_id)?,
                kind: parse("kind", &self.kind)?,
                name: self.name,
                role: self.role.as_deref().map(|r| parse("role", r)).transpose()?,
                created_by: self.created_by,
                created_at: self.created_at,
                expires_at: self.expires_at,
                last_used_at: self.last_used_at,
                revoked_at: self.revoked_at,
            },
            self.token_hash,
        ))
    }
}

pub(super) const OPERATOR_KEY_COLUMNS: &str =
    "id, name, created_by, created_at, expires_at, last_used_at, revoked_at, token_hash";

#[derive(sqlx::FromRow)]
pub(super) struct OperatorKeyRow {
    id: String,
    name: String,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    token_hash: String,
}

impl OperatorKeyRow {
    pub(super) fn into_model(self) -> StoreResult<(OperatorKey, String)> {
        Ok((
            OperatorKey {
                id: uuid("operator_keys.id", &self.id)?,
                name: self.name,
                created_by: self.created_by,
                created_at: self.created_at,
                expires_at: self.expires_at,
                last_used_at: self.last_used_at,
                revoked_at: self.revoked_at,
            },
            self.token_hash,
        ))
    }
}

pub(super) const BILLING_REQUEST_COLUMNS: &str = "id, org_id, purchased, seat_policy, plan, note, status, reason, \
    requested_by, created_at, decided_by, decided_at";

#[derive(sqlx::FromRow)]
pub(super) struct BillingRequestRow {
    id: String,
    org_id: String,
    purchased: Option<i64>,
    seat_policy: Option<String>,
    plan: Option<String>,
    note: Option<String>,
    status: String,
    reason: Option<String>,
    requested_by: String,
    created_at: DateTime<Utc>,
    decided_by: Option<String>,
    decided_at: Option<DateTime<Utc>>,
}

impl BillingRequestRow {
    pub(super) fn into_model(self) -> StoreResult<BillingRequest> {
        Ok(BillingRequest {
            id: uuid("billing_requests.id", &self.id)?,
            org_id: uuid("billing_requests.org_id", &self.org_id)?,
            purchased: self.purchased,
            seat_policy: self.seat_policy.as_deref().map(|p| parse("seat_policy", p)).transpose()?,
            plan: self.plan.as_deref().map(|p| parse("plan", p)).transpose()?,
            note: self.note,
            status: parse("status", &self.status)?,
            reason: self.reason,
            requested_by: self.requested_by,
            created_at: self.created_at,
            decided_by: self.decided_by,
            decided_at: self.decided_at,
        })
    }
}

pub(super) const SETUP_LINK_COLUMNS: &str =
    "id, org_id, scopes, created_by, created_at, expires_at, revoked_at, token_hash";

#[derive(sqlx::FromRow)]
pub(super) struct SetupLinkRow {
    id: String,
    org_id: String,
    scopes: String,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    token_hash: String,
}

impl SetupLinkRow {
    pub(super) fn into_model(self) -> StoreResult<(SetupLink, String)> {
        let scopes: StoreResult<Vec<SetupScope>> =
            self.scopes.split(',').filter(|s| !s.is_empty()).map(|s| parse::<SetupScope>("scopes", s)).collect();
        let link = SetupLink {
            id: uuid("setup_links.id", &self.id)?,
            org_id: uuid("setup_links.org_id", &self.org_id)?,
            scopes: scopes?,
            created_by: self.created_by,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        };
        Ok((link, self.token_hash))
    }
}

pub(super) const SCIM_REQUEST_COLUMNS: &str =
    "seq, org_id, at, method, path, status, latency_us, client, scim_type, detail, body";

#[derive(sqlx::FromRow)]
pub(super) struct ScimRequestRow {
    seq: i64,
    org_id: String,
    at: DateTime<Utc>,
    method: String,
    path: String,
    status: i64,
    latency_us: i64,
    client: String,
    scim_type: Option<String>,
    detail: Option<String>,
    body: Option<String>,
}

impl ScimRequestRow {
    pub(super) fn into_model(self) -> StoreResult<ScimRequestRecord> {
        Ok(ScimRequestRecord {
            seq: self.seq,
            org_id: uuid("scim_requests.org_id", &self.org_id)?,
            at: self.at,
            method: self.method,
            path: self.path,
            status: u16::try_from(self.status).map_err(|_| {
                StoreError::Other(anyhow::anyhow!("stored scim_requests.status {} is not valid", self.status))
            })?,
            latency_us: self.latency_us,
            client: self.client,
            scim_type: self.scim_type,
            detail: self.detail,
            body: self.body,
        })
    }
}

pub(super) const SSO_TEST_COLUMNS: &str = "id, org_id, link_id, tested_by, at, ok, result";

#[derive(sqlx::FromRow)]
pub(super) struct SsoTestRow {
    id: String,
    org_id: String,
    link_id: Option<String>,
    tested_by: String,
    at: DateTime<Utc>,
    ok: bool,
    result: String,
}

impl SsoTestRow {
    pub(super) fn into_model(self) -> StoreResult<SsoTest> {
        Ok(SsoTest {
            id: uuid("sso_tests.id", &self.id)?,
            org_id: uuid("sso_tests.org_id", &self.org_id)?,
            link_id: self.link_id.as_deref().map(|l| uuid("sso_tests.link_id", l)).transpose()?,
            tested_by: self.tested_by,
            at: self.at,
            ok: self.ok,
            result: serde_json::from_str(&self.result)
                .map_err(|e| StoreError::Other(anyhow::anyhow!("stored sso_tests.result is not JSON: {e}")))?,
        })
    }
}

pub(super) const DOMAIN_COLUMNS: &str = "id, org_id, name, status, verification_token, failures, last_result, \
    checked_at, verified_at, next_check_at, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct DomainRow {
    id: String,
    org_id: String,
    name: String,
    status: String,
    verification_token: String,
    failures: i64,
    last_result: Option<String>,
    checked_at: Option<DateTime<Utc>>,
    verified_at: Option<DateTime<Utc>>,
    next_check_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
}

impl DomainRow {
    pub(super) fn into_model(self) -> StoreResult<Domain> {
        Ok(Domain {
            id: uuid("domains.id", &self.id)?,
            org_id: uuid("domains.org_id", &self.org_id)?,
            name: self.name,
            status: parse("status", &self.status)?,
            verification_token: self.verification_token,
            failures: self.failures,
            last_result: self.last_result,
            checked_at: self.checked_at,
            verified_at: self.verified_at,
            next_check_at: self.next_check_at,
            updated_at: self.updated_at.unwrap_or(self.created_at),
            created_at: self.created_at,
        })
    }
}

pub(super) const SCIM_USER_COLUMNS: &str = "r.id, r.org_id, r.member_id, r.user_name, r.external_id, \
    r.display_name, r.active, r.resource, r.version, r.created_at, r.updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct ScimUserRow {
    id: String,
    org_id: String,
    member_id: String,
    user_name: String,
    external_id: Option<String>,
    display_name: Option<String>,
    active: bool,
    resource: Json<serde_json::Value>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ScimUserRow {
    pub(super) fn into_model(self) -> StoreResult<ScimUserRecord> {
        Ok(ScimUserRecord {
            id: uuid("scim_users.id", &self.id)?,
            org_id: uuid("scim_users.org_id", &self.org_id)?,
            member_id: uuid("scim_users.member_id", &self.member_id)?,
            user_name: self.user_name,
            external_id: self.external_id,
            display_name: self.display_name,
            active: self.active,
            resource: self.resource.0,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// [`SCIM_USER_COLUMNS`] and a User's groups as one element of a page read
/// as one row ([`Statements::page_as_one_row`]).
pub(super) const SCIM_USER_JSON_COLUMNS: &str = "r.id, r.org_id, r.member_id, r.user_name, r.external_id, \
    r.display_name, r.active, json(r.resource), r.version, r.created_at, r.updated_at";

/// The rows of a page read as one row (its one column, a JSON array).
pub(super) fn page_rows<T, R>(rows: &[R]) -> StoreResult<Vec<T>>
where
    T: serde::de::DeserializeOwned,
    R: sqlx::Row,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let Some(row) = rows.first() else { return Ok(Vec::new()) };
    let text: &str = row.try_get(0)?;
    serde_json::from_str(text).map_err(|e| StoreError::Other(anyhow::anyhow!("a page read as one row: {e}")))
}

/// A row of [`SCIM_USER_JSON_COLUMNS`] with `json(groups)`.
#[derive(serde::Deserialize)]
pub(super) struct ScimUserJson(
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    serde_json::Value,
    i64,
    String,
    String,
    Vec<(String, String)>,
);

impl ScimUserJson {
    pub(super) fn into_model(self) -> StoreResult<(ScimUserRecord, UserGroups)> {
        let Self(id, org_id, member_id, user_name, external_id, display_name, active, resource, version, c, u, groups) =
            self;
        let user = ScimUserRow {
            id,
            org_id,
            member_id,
            user_name,
            external_id,
            display_name,
            active: active != 0,
            resource: Json(resource),
            version,
            created_at: time("scim_users.created_at", &c)?,
            updated_at: time("scim_users.updated_at", &u)?,
        };
        ScimUserGroupsRow { user, groups: Json(groups) }.into_model()
    }
}

/// A User with the groups it is in, read in the same statement (see
/// [`Statements::USER_GROUPS`]).
#[derive(sqlx::FromRow)]
pub(super) struct ScimUserGroupsRow {
    #[sqlx(flatten)]
    user: ScimUserRow,
    groups: Json<Vec<(String, String)>>,
}

impl ScimUserGroupsRow {
    pub(super) fn into_model(self) -> StoreResult<(ScimUserRecord, UserGroups)> {
        let groups = self
            .groups
            .0
            .into_iter()
            .map(|(id, name)| Ok((uuid("scim_groups.id", &id)?, name)))
            .collect::<StoreResult<_>>()?;
        Ok((self.user.into_model()?, groups))
    }
}

pub(super) const SCIM_GROUP_COLUMNS: &str =
    "r.id, r.org_id, r.display_name, r.external_id, r.resource, r.version, r.created_at, r.updated_at";

/// [`SCIM_GROUP_COLUMNS`] as one element of a page read as one row.
pub(super) const SCIM_GROUP_JSON_COLUMNS: &str =
    "r.id, r.org_id, r.display_name, r.external_id, json(r.resource), r.version, r.created_at, r.updated_at";

/// A row of [`SCIM_GROUP_JSON_COLUMNS`].
#[derive(serde::Deserialize)]
pub(super) struct ScimGroupJson(String, String, String, Option<String>, serde_json::Value, i64, String, String);

impl ScimGroupJson {
    pub(super) fn into_model(self) -> StoreResult<ScimGroupRecord> {
        let Self(id, org_id, display_name, external_id, resource, version, c, u) = self;
        ScimGroupRow {
            id,
            org_id,
            display_name,
            external_id,
            resource: Json(resource),
            version,
            created_at: time("scim_groups.created_at", &c)?,
            updated_at: time("scim_groups.updated_at", &u)?,
        }
        .into_model()
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ScimGroupRow {
    id: String,
    org_id: String,
    display_name: String,
    external_id: Option<String>,
    resource: Json<serde_json::Value>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ScimGroupRow {
    pub(super) fn into_model(self) -> StoreResult<ScimGroupRecord> {
        Ok(ScimGroupRecord {
            id: uuid("scim_groups.id", &self.id)?,
            org_id: uuid("scim_groups.org_id", &self.org_id)?,
            display_name: self.display_name,
            external_id: self.external_id,
            resource: self.resource.0,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// `$from, $from+1, …` for `n` values.
pub(super) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The parts of a SCIM list statement: the filter (after `r.org_id = $1`),
/// the order (always ending in `r.id`, so pages are stable) and the next
/// placeholder number. A page is picked by ids first (`r.id IN (… LIMIT
/// OFFSET)`), so skipping to a deep `startIndex` walks the `(org_id, id)`
/// index instead of whole rows.
pub(super) fn scim_page_sql(q: &ScimQuery) -> (String, String, usize) {
    let filter = q.filter.as_ref().map(|f| format!(" AND ({})", f.sql)).unwrap_or_default();
    let order = q.order.as_ref().map(|o| format!("{}, r.id", o.sql)).unwrap_or_else(|| "r.id".into());
    let next = 2 + q.filter.as_ref().map_or(0, |f| f.binds.len()) + q.order.as_ref().map_or(0, |o| o.binds.len());
    (filter, order, next)
}

/// Binds a fragment's values, in order, to a query.
macro_rules! bind_fragment {
    ($query:expr, $fragment:expr) => {{
        let mut q = $query;
        if let Some(fragment) = $fragment {
            for v in &fragment.binds {
                q = match v {
                    crate::scim::filter::SqlValue::Text(s) => q.bind(s.clone()),
                    crate::scim::filter::SqlValue::Int(i) => q.bind(*i),
                    crate::scim::filter::SqlValue::Float(f) => q.bind(*f),
                    crate::scim::filter::SqlValue::Bool(b) => q.bind(*b),
                    crate::scim::filter::SqlValue::Timestamp(t) => q.bind(*t),
                };
            }
        }
        q
    }};
}

pub(super) use bind_fragment;

/// Rows per statement when a list of ids becomes an `IN (…)` or `VALUES` list.
pub(super) const ID_CHUNK: usize = 500;

pub(super) const AUDIT_COLUMNS: &str =
    "seq, id, org_id, actor_kind, actor_id, action, target, before_json, after_json, request_id, at, client_address";

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    seq: i64,
    id: String,
    org_id: String,
    actor_kind: String,
    actor_id: String,
    action: String,
    target: String,
    before_json: Option<Json<serde_json::Value>>,
    after_json: Option<Json<serde_json::Value>>,
    request_id: Option<String>,
    at: DateTime<Utc>,
    client_address: Option<String>,
}

impl AuditRow {
    pub(super) fn into_model(self) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            seq: self.seq,
            id: uuid("audit_log.id", &self.id)?,
            org_id: uuid("audit_log.org_id", &self.org_id)?,
            actor_kind: parse("actor_kind", &self.actor_kind)?,
            actor_id: self.actor_id,
            action: self.action,
            target: self.target,
            before: self.before_json.map(|j| j.0),
            after: self.after_json.map(|j| j.0),
            request_id: self.request_id,
            client_address: self.client_address,
            at: self.at,
        })
    }
}

pub(super) const SSO_CLIENT_COLUMNS: &str =
    "id, org_id, name, secret_hash, redirect_uris, created_by, created_at, revoked_at";

#[derive(sqlx::FromRow)]
pub(super) struct SsoClientRow {
    id: String,
    org_id: Option<String>,
    name: String,
    secret_hash: String,
    redirect_uris: String,
    created_by: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl SsoClientRow {
    pub(super) fn into_model(self) -> StoreResult<(SsoClient, String)> {
        let redirect_uris = serde_json::from_str(&self.redirect_uris)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("stored redirect_uris are not a JSON list: {e}")))?;
        Ok((
            SsoClient {
                id: uuid("sso_clients.id", &self.id)?,
                org_id: self.org_id.as_deref().map(|o| uuid("sso_clients.org_id", o)).transpose()?,
                name: self.name,
                redirect_uris,
                created_by: self.created_by,
                created_at: self.created_at,
                revoked_at: self.revoked_at,
            },
            self.secret_hash,
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SsoConnectionRow {
    org_id: String,
    issuer: String,
    client_id: String,
    client_secret: String,
    scopes: String,
    require_email_verified: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SsoConnectionRow {
    pub(super) fn into_model(self) -> StoreResult<SsoConnectionRecord> {
        Ok(SsoConnectionRecord {
            org_id: uuid("sso_connections.org_id", &self.org_id)?,
            issuer: self.issuer,
            client_id: self.client_id,
            client_secret: crate::secrets::Secret::new(self.client_secret),
            scopes: self.scopes.split_whitespace().map(str::to_string).collect(),
            require_email_verified: self.require_email_verified,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(super) const SSO_ATTEMPT_COLUMNS: &str = "id, org_id, connection, issuer, nonce, pkce_verifier, client_id, \
    redirect_uri, product_state, login_hint, browser_hash, created_at, expires_at, used_at";

#[derive(sqlx::FromRow)]
pub(super) struct SsoAttemptRow {
    id: String,
    org_id: String,
    connection: String,
    issuer: String,
    nonce: String,
    pkce_verifier: String,
    client_id: String,
    redirect_uri: String,
    product_state: Option<String>,
    login_hint: Option<String>,
    browser_hash: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl SsoAttemptRow {
    pub(super) fn into_model(self) -> StoreResult<SsoAttempt> {
        Ok(SsoAttempt {
            id: uuid("sso_attempts.id", &self.id)?,
            org_id: uuid("sso_attempts.org_id", &self.org_id)?,
            connection: self.connection,
            issuer: self.issuer,
            nonce: self.nonce,
            pkce_verifier: self.pkce_verifier,
            client_id: uuid("sso_attempts.client_id", &self.client_id)?,
            redirect_uri: self.redirect_uri,
            product_state: self.product_state,
            login_hint: self.login_hint,
            browser_hash: self.browser_hash,
            created_at: self.created_at,
            expires_at: self.expires_at,
            used_at: self.used_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SsoCodeRow {
    client_id: String,
    org_id: String,
    member_id: String,
    profile: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl SsoCodeRow {
    pub(super) fn into_model(self) -> StoreResult<SsoCode> {
        Ok(SsoCode {
            client_id: uuid("sso_codes.client_id", &self.client_id)?,
            org_id: uuid("sso_codes.org_id", &self.org_id)?,
            member_id: uuid("sso_codes.member_id", &self.member_id)?,
            profile: serde_json::from_str(&self.profile)
                .map_err(|e| StoreError::Other(anyhow::anyhow!("stored profile is not JSON: {e}")))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            used_at: self.used_at,
        })
    }
}

pub(super) const SSO_SESSION_COLUMNS: &str =
    "id, org_id, member_id, issuer, client_id, id_token, created_at, expires_at, ended_at, last_seen_at";

#[derive(sqlx::FromRow)]
pub(super) struct SsoSessionRow {
    id: String,
    org_id: String,
    member_id: String,
    issuer: String,
    client_id: String,
    id_token: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    last_seen_at: Option<DateTime<Utc>>,
}

impl SsoSessionRow {
    pub(super) fn into_model(self) -> StoreResult<SsoSession> {
        Ok(SsoSession {
            id: uuid("sso_sessions.id", &self.id)?,
            org_id: uuid("sso_sessions.org_id", &self.org_id)?,
            member_id: uuid("sso_sessions.member_id", &self.member_id)?,
            issuer: self.issuer,
            client_id: self.client_id,
            id_token: self.id_token,
            created_at: self.created_at,
            expires_at: self.expires_at,
            ended_at: self.ended_at,
            last_seen_at: self.last_seen_at,
        })
    }
}

/// Implements [`Tx`] for `SqlTx<$db>` with the statements above.
macro_rules! impl_tx {
    ($db:ty) => {
        use sqlx::Arguments as _;

        impl $crate::store::sql::SqlTx<$db> {
            /// The connection, once the deferred writes have gone to it.
            async fn conn(&mut self) -> StoreResult<&mut <$db as sqlx::Database>::Connection> {
                self.send_deferred().await?;
                Ok(&mut *self.conn)
            }

            async fn send_deferred(&mut self) -> StoreResult<()> {
                if self.deferred.is_empty() {
                    return Ok(());
                }
                if self.deferred.broken {
                    return Err(StoreError::Other(anyhow::anyhow!("a write of the transaction could not be encoded")));
                }
                let $crate::store::sql::Deferred { sql, args, .. } = std::mem::take(&mut self.deferred);
                sqlx::query_with(&sql, args).execute(&mut *self.conn).await?;
                Ok(())
            }

            /// Runs the write `sql` (its parameters added by `bind`) with
            /// the transaction's next statement where the backend sends
            /// several at once, at once otherwise. Its failure is that
            /// statement's (or the commit's) failure.
            async fn write_later(
                &mut self,
                sql: &str,
                bind: impl FnOnce(&mut <$db as sqlx::Database>::Arguments<'static>) -> Result<(), sqlx::error::BoxDynError>,
            ) -> StoreResult<()> {
                if self.deferred.is_full() {
                    self.send_deferred().await?;
                }
                self.deferred.push(sql, bind)?;
                let together = <$db as $crate::store::sql::Statements>::SENDS_STATEMENTS_TOGETHER
                    && !matches!(self.conn, $crate::store::sql::Conn::Autocommit(_));
                if !together {
                    self.send_deferred().await?;
                }
                Ok(())
            }

            /// Writes the user's `emails.value`s, lower-cased and de-duplicated.
            async fn set_scim_emails(&mut self, u: &ScimUserRecord, emails: &[String]) -> StoreResult<()> {
                let mut seen = std::collections::BTreeSet::new();
                for email in emails {
                    let lc = email.to_lowercase();
                    if !seen.insert(lc.clone()) {
                        continue;
                    }
                    let (id, org_id) = (u.id.to_string(), u.org_id.to_string());
                    self.write_later(
                        "INSERT INTO scim_user_emails (user_id, org_id, value_lc) VALUES ($1, $2, $3)",
                        |args| {
                            args.add(id)?;
                            args.add(org_id)?;
                            args.add(lc)
                        },
                    )
                    .await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Tx for $crate::store::sql::SqlTx<$db> {
            async fn commit(mut self: Box<Self>) -> StoreResult<()> {
                self.send_deferred().await?;
                self.commit_conn().await
            }

            async fn insert_org(&mut self, o: &Organization) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO organizations (id, name, contact_email, plan, purchased_seats, seat_policy, \
                     feature_external_cloud, feature_analytics, sso_tenant_id, sso_enforce, sso_auto_assign, \
                     sso_default_role, created_at, updated_at, seat_enforcement) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(o.id.to_string())
                .bind(&o.name)
                .bind(&o.contact_email)
                .bind(o.plan.as_str())
                .bind(o.purchased_seats)
                .bind(o.seat_policy.as_str())
                .bind(o.features.external_cloud)
                .bind(o.features.analytics)
                .bind(o.sso.tenant_id.as_ref().map(|t| t.as_str().to_string()))
                .bind(o.sso.enforce)
                .bind(o.sso.auto_assign)
                .bind(o.sso.default_role.as_str())
                .bind(o.created_at)
                .bind(o.updated_at)
                .bind(o.seat_enforcement.as_str())
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn get_org(&mut self, id: Uuid) -> StoreResult<Option<Organization>> {
                let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1");
                sqlx::query_as::<_, OrgRow>(&sql)
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(OrgRow::into_model)
                    .transpose()
            }

            async fn list_orgs(&mut self) -> StoreResult<Vec<Organization>> {
                let sql = format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY id");
                sqlx::query_as::<_, OrgRow>(&sql)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(OrgRow::into_model)
                    .collect()
            }

            async fn update_org(&mut self, o: &Organization) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE organizations SET name = $2, contact_email = $3, plan = $4, purchased_seats = $5, \
                     seat_policy = $6, feature_external_cloud = $7, feature_analytics = $8, sso_tenant_id = $9, \
                     sso_enforce = $10, sso_auto_assign = $11, sso_default_role = $12, updated_at = $13, \
                     seat_enforcement = $14 WHERE id = $1",
                )
                .bind(o.id.to_string())
                .bind(&o.name)
                .bind(&o.contact_email)
                .bind(o.plan.as_str())
                .bind(o.purchased_seats)
                .bind(o.seat_policy.as_str())
                .bind(o.features.external_cloud)
                .bind(o.features.analytics)
                .bind(o.sso.tenant_id.as_ref().map(|t| t.as_str().to_string()))
                .bind(o.sso.enforce)
                .bind(o.sso.auto_assign)
                .bind(o.sso.default_role.as_str())
                .bind(o.updated_at)
                .bind(o.seat_enforcement.as_str())
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_org(&mut self, id: Uuid) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM organizations WHERE id = $1")
                    .bind(id.to_string())
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn lock_org(&mut self, id: Uuid) -> StoreResult<Option<Organization>> {
                // An UPDATE takes PostgreSQL's row lock and SQLite's write lock
                // alike, and holds it until the transaction ends.
                let sql = format!(
                    "UPDATE organizations SET lock_version = lock_version + 1 WHERE id = $1 RETURNING {ORG_COLUMNS}"
                );
                sqlx::query_as::<_, OrgRow>(&sql)
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(OrgRow::into_model)
                    .transpose()
            }

            async fn seat_usage(&mut self, org_id: Uuid, now: DateTime<Utc>) -> StoreResult<SeatUsage> {
                // `active_members` is kept by triggers on `members`; pending
                // invitations are few and their expiry moves with the clock.
                let (active_members, pending_invitations): (i64, i64) = sqlx::query_as(
                    "SELECT o.active_members, \
                       (SELECT COUNT(*) FROM invitations WHERE org_id = $1 AND status = 'pending' AND expires_at > $2) \
                     FROM organizations o WHERE o.id = $1",
                )
                .bind(org_id.to_string())
                .bind(now)
                .fetch_one(self.conn().await?)
                .await?;
                Ok(SeatUsage { active_members, pending_invitations })
            }

            async fn find_user_by_email(&mut self, email: &Email) -> StoreResult<Option<User>> {
                sqlx::query_as::<_, UserRow>("SELECT id, email, created_at FROM users WHERE email_normalized = $1")
                    .bind(email.normalized())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(UserRow::into_model)
                    .transpose()
            }

            async fn insert_user(&mut self, u: &User) -> StoreResult<()> {
                let (id, email, created_at) = (u.id.to_string(), u.email.clone(), u.created_at);
                self.write_later(
                    "INSERT INTO users (id, email, email_normalized, created_at) VALUES ($1, $2, $3, $4)",
                    |args| {
                        args.add(id)?;
                        args.add(email.as_ref().map(|e| e.as_str().to_string()))?;
                        args.add(email.as_ref().map(|e| e.normalized().to_string()))?;
                        args.add(created_at)
                    },
                )
                .await
            }

            async fn set_user_email(&mut self, user_id: Uuid, email: &Email) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE users SET email = $2, email_normalized = $3 WHERE id = $1 AND email IS NULL",
                )
                .bind(user_id.to_string())
                .bind(email.as_str())
                .bind(email.normalized())
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_user(&mut self, user_id: Uuid) -> StoreResult<()> {
                sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id.to_string()).execute(self.conn().await?).await?;
                Ok(())
            }

            async fn insert_member(&mut self, m: &Member) -> StoreResult<()> {
                let m = m.clone();
                self.write_later(
                    "INSERT INTO members (id, org_id, user_id, role, status, source, created_at, updated_at, \
                     manual_role, role_pinned, sso_roles, role_source) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    |args| {
                        args.add(m.id.to_string())?;
                        args.add(m.org_id.to_string())?;
                        args.add(m.user_id.to_string())?;
                        args.add(m.role.as_str())?;
                        args.add(m.status.as_str())?;
                        args.add(m.source.as_str())?;
                        args.add(m.created_at)?;
                        args.add(m.updated_at)?;
                        args.add(m.manual_role.map(|r| r.as_str()))?;
                        args.add(m.role_pinned)?;
                        args.add(sqlx::types::Json(m.sso_roles))?;
                        args.add(sqlx::types::Json(m.role_source))
                    },
                )
                .await
            }

            async fn get_member(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<Member>> {
                let sql = format!("{MEMBER_SELECT} WHERE m.id = $2 AND {ORG_CHECKED}");
                sqlx::query_as::<_, MemberRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(MemberRow::into_model)
                    .transpose()
            }

            async fn find_member_by_user(&mut self, org_id: Uuid, user_id: Uuid) -> StoreResult<Option<Member>> {
                let sql = format!("{MEMBER_SELECT} WHERE m.user_id = $2 AND {ORG_CHECKED}");
                sqlx::query_as::<_, MemberRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(user_id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(MemberRow::into_model)
                    .transpose()
            }

            async fn find_member_by_email(&mut self, org_id: Uuid, email: &Email) -> StoreResult<Option<Member>> {
                let sql = format!("{MEMBER_SELECT} WHERE {MEMBER_BY_EMAIL}");
                sqlx::query_as::<_, MemberRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(email.normalized())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(MemberRow::into_model)
                    .transpose()
            }

            async fn find_person(&mut self, org_id: Uuid, email: &Email) -> StoreResult<Person> {
                if !<$db as $crate::store::sql::Statements>::SENDS_STATEMENTS_TOGETHER {
                    return Ok(Person {
                        user: self.find_user_by_email(email).await?,
                        member: self.find_member_by_email(org_id, email).await?,
                        invitation: self.find_pending_invitation(org_id, email).await?,
                    });
                }
                // The three look-ups as one string: each statement's rows,
                // then its result, in order.
                let sql = format!(
                    "SELECT id, email, created_at FROM users WHERE email_normalized = $2; \
                     {MEMBER_SELECT} WHERE {MEMBER_BY_EMAIL}; \
                     SELECT {INVITATION_COLUMNS} FROM invitations \
                     WHERE org_id = $1 AND email_normalized = $2 AND status = 'pending'"
                );
                let (mut users, mut members, mut invitations) = (Vec::new(), Vec::new(), Vec::new());
                let mut statement = 0;
                let query = sqlx::query(&sql).bind(org_id.to_string()).bind(email.normalized());
                let mut rows = sqlx::Executor::fetch_many(self.conn().await?, query);
                while let Some(item) = futures::TryStreamExt::try_next(&mut rows).await? {
                    match (item, statement) {
                        (sqlx::Either::Left(_), _) => statement += 1,
                        (sqlx::Either::Right(row), 0) => users.push(<UserRow as sqlx::FromRow<_>>::from_row(&row)?),
                        (sqlx::Either::Right(row), 1) => members.push(<MemberRow as sqlx::FromRow<_>>::from_row(&row)?),
                        (sqlx::Either::Right(row), _) => {
                            invitations.push(<InvitationRow as sqlx::FromRow<_>>::from_row(&row)?)
                        }
                    }
                }
                Ok(Person {
                    user: users.pop().map(UserRow::into_model).transpose()?,
                    member: members.pop().map(MemberRow::into_model).transpose()?,
                    invitation: invitations.pop().map(InvitationRow::into_model).transpose()?,
                })
            }

            async fn list_members(&mut self, org_id: Uuid, f: &MemberFilter) -> StoreResult<Vec<Member>> {
                let sql = format!(
                    "{MEMBER_SELECT} WHERE m.org_id = $1 AND ($2 IS NULL OR m.status = $2) \
                     AND ($3 IS NULL OR m.role = $3) AND m.id > $4 {} \
                     ORDER BY m.id LIMIT $5",
                    member_search(6, f.search.is_some())
                );
                let mut query = sqlx::query_as::<_, MemberRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(f.status.map(|s| s.as_str()))
                    .bind(f.role.map(|r| r.as_str()))
                    .bind(cursor(f.after))
                    .bind(f.limit)
                    .bind(f.source.map(|s| s.as_str()));
                if let Some(search) = &f.search {
                    query = query.bind(like_pattern(search));
                }
                query.fetch_all(self.conn().await?).await?.into_iter().map(MemberRow::into_model).collect()
            }

            async fn count_members(&mut self, org_id: Uuid, f: &MemberFilter) -> StoreResult<i64> {
                let join = if f.search.is_some() { " JOIN users u ON u.id = m.user_id" } else { "" };
                let sql = format!(
                    "SELECT COUNT(*) FROM members m{join} WHERE m.org_id = $1 \
                     AND ($2 IS NULL OR m.status = $2) AND ($3 IS NULL OR m.role = $3) {}",
                    member_search(4, f.search.is_some())
                );
                let mut query = sqlx::query_as(&sql)
                    .bind(org_id.to_string())
                    .bind(f.status.map(|s| s.as_str()))
                    .bind(f.role.map(|r| r.as_str()))
                    .bind(f.source.map(|s| s.as_str()));
                if let Some(search) = &f.search {
                    query = query.bind(like_pattern(search));
                }
                let (n,): (i64,) = query.fetch_one(self.conn().await?).await?;
                Ok(n)
            }

            async fn update_member(&mut self, m: &Member) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE members SET role = $3, status = $4, source = $5, updated_at = $6, manual_role = $7, \
                     role_pinned = $8, sso_roles = $9, role_source = $10, user_id = $11 WHERE id = $2 AND org_id || '' = $1",
                )
                .bind(m.org_id.to_string())
                .bind(m.id.to_string())
                .bind(m.role.as_str())
                .bind(m.status.as_str())
                .bind(m.source.as_str())
                .bind(m.updated_at)
                .bind(m.manual_role.map(|r| r.as_str()))
                .bind(m.role_pinned)
                .bind(sqlx::types::Json(&m.sso_roles))
                .bind(sqlx::types::Json(&m.role_source))
                .bind(m.user_id.to_string())
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn count_active_owners(&mut self, org_id: Uuid) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM members WHERE org_id = $1 AND role = 'owner' AND status = 'active'",
                )
                .bind(org_id.to_string())
                .fetch_one(self.conn().await?)
                .await?;
                Ok(n)
            }

            async fn insert_invitation(&mut self, i: &Invitation, token_hash: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO invitations (id, org_id, email, email_normalized, role, token_hash, status, \
                     expires_at, invited_by, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(i.id.to_string())
                .bind(i.org_id.to_string())
                .bind(i.email.as_str())
                .bind(i.email.normalized())
                .bind(i.role.as_str())
                .bind(token_hash)
                .bind(i.status.as_str())
                .bind(i.expires_at)
                .bind(&i.invited_by)
                .bind(i.created_at)
                .bind(i.updated_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn get_invitation(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<Invitation>> {
                let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 AND id = $2");
                sqlx::query_as::<_, InvitationRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(InvitationRow::into_model)
                    .transpose()
            }

            async fn find_pending_invitation(&mut self, org_id: Uuid, email: &Email) -> StoreResult<Option<Invitation>> {
                let sql = format!(
                    "SELECT {INVITATION_COLUMNS} FROM invitations \
                     WHERE org_id = $1 AND email_normalized = $2 AND status = 'pending'"
                );
                sqlx::query_as::<_, InvitationRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(email.normalized())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(InvitationRow::into_model)
                    .transpose()
            }

            async fn list_invitations(&mut self, org_id: Uuid, f: &InvitationFilter) -> StoreResult<Vec<Invitation>> {
                let sql = format!(
                    "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 \
                     AND ($2 IS NULL \
                       OR ($2 = 'pending' AND status = 'pending' AND expires_at > $5) \
                       OR ($2 = 'expired' AND (status = 'expired' OR (status = 'pending' AND expires_at <= $5))) \
                       OR ($2 NOT IN ('pending', 'expired') AND status = $2)) \
                     AND id > $3 ORDER BY id LIMIT $4"
                );
                sqlx::query_as::<_, InvitationRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(f.status.map(|s| s.as_str()))
                    .bind(cursor(f.after))
                    .bind(f.limit)
                    .bind(f.now)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(InvitationRow::into_model)
                    .collect()
            }

            async fn update_invitation(&mut self, i: &Invitation) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE invitations SET role = $3, status = $4, expires_at = $5, updated_at = $6 \
                     WHERE org_id = $1 AND id = $2",
                )
                .bind(i.org_id.to_string())
                .bind(i.id.to_string())
                .bind(i.role.as_str())
                .bind(i.status.as_str())
                .bind(i.expires_at)
                .bind(i.updated_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn insert_credential(&mut self, c: &Credential, token_hash: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO credentials (id, org_id, kind, name, role, token_hash, created_by, created_at, \
                     expires_at, last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(c.id.to_string())
                .bind(c.org_id.to_string())
                .bind(c.kind.as_str())
                .bind(&c.name)
                .bind(c.role.map(|r| r.as_str()))
                .bind(token_hash)
                .bind(&c.created_by)
                .bind(c.created_at)
                .bind(c.expires_at)
                .bind(c.last_used_at)
                .bind(c.revoked_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn list_credentials(&mut self, org_id: Uuid, kind: CredentialKind) -> StoreResult<Vec<Credential>> {
                let sql = format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE org_id = $1 AND kind = $2 ORDER BY id"
                );
                sqlx::query_as::<_, CredentialRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(kind.as_str())
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|r| r.into_model().map(|(c, _)| c))
                    .collect()
            }

            async fn get_credential(&mut self, org_id: Uuid, kind: CredentialKind, id: Uuid) -> StoreResult<Option<Credential>> {
                let sql = format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE org_id = $1 AND kind = $2 AND id = $3"
                );
                sqlx::query_as::<_, CredentialRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(kind.as_str())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(|r| r.into_model().map(|(c, _)| c))
                    .transpose()
            }

            async fn find_credential_by_hash(&mut self, token_hash: &str) -> StoreResult<Option<(Credential, String)>> {
                let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE token_hash = $1");
                sqlx::query_as::<_, CredentialRow>(&sql)
                    .bind(token_hash)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(CredentialRow::into_model)
                    .transpose()
            }

            async fn insert_operator_key(&mut self, k: &OperatorKey, token_hash: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO operator_keys (id, name, token_hash, created_by, created_at, expires_at, \
                     last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(k.id.to_string())
                .bind(&k.name)
                .bind(token_hash)
                .bind(&k.created_by)
                .bind(k.created_at)
                .bind(k.expires_at)
                .bind(k.last_used_at)
                .bind(k.revoked_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn list_operator_keys(&mut self) -> StoreResult<Vec<OperatorKey>> {
                let sql = format!("SELECT {OPERATOR_KEY_COLUMNS} FROM operator_keys ORDER BY id");
                sqlx::query_as::<_, OperatorKeyRow>(&sql)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|r| r.into_model().map(|(k, _)| k))
                    .collect()
            }

            async fn find_operator_key_by_hash(&mut self, token_hash: &str) -> StoreResult<Option<(OperatorKey, String)>> {
                let sql = format!("SELECT {OPERATOR_KEY_COLUMNS} FROM operator_keys WHERE token_hash = $1");
                sqlx::query_as::<_, OperatorKeyRow>(&sql)
                    .bind(token_hash)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(OperatorKeyRow::into_model)
                    .transpose()
            }

            async fn update_operator_key(&mut self, k: &OperatorKey) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE operator_keys SET name = $2, last_used_at = $3, revoked_at = $4, expires_at = $5 WHERE id = $1",
                )
                .bind(k.id.to_string())
                .bind(&k.name)
                .bind(k.last_used_at)
                .bind(k.revoked_at)
                .bind(k.expires_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn insert_billing_request(&mut self, r: &BillingRequest) -> StoreResult<()> {
                let sql = format!(
                    "INSERT INTO billing_requests ({BILLING_REQUEST_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                );
                sqlx::query(&sql)
                    .bind(r.id.to_string())
                    .bind(r.org_id.to_string())
                    .bind(r.purchased)
                    .bind(r.seat_policy.map(|p| p.as_str()))
                    .bind(r.plan.map(|p| p.as_str()))
                    .bind(&r.note)
                    .bind(r.status.as_str())
                    .bind(&r.reason)
                    .bind(&r.requested_by)
                    .bind(r.created_at)
                    .bind(&r.decided_by)
                    .bind(r.decided_at)
                    .execute(self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn update_billing_request(&mut self, r: &BillingRequest) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE billing_requests SET status = $3, reason = $4, decided_by = $5, decided_at = $6 \
                     WHERE org_id = $1 AND id = $2",
                )
                .bind(r.org_id.to_string())
                .bind(r.id.to_string())
                .bind(r.status.as_str())
                .bind(&r.reason)
                .bind(&r.decided_by)
                .bind(r.decided_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn get_billing_request(&mut self, id: Uuid) -> StoreResult<Option<BillingRequest>> {
                let sql = format!("SELECT {BILLING_REQUEST_COLUMNS} FROM billing_requests WHERE id = $1");
                sqlx::query_as::<_, BillingRequestRow>(&sql)
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(BillingRequestRow::into_model)
                    .transpose()
            }

            async fn list_billing_requests(
                &mut self,
                org_id: Option<Uuid>,
                status: Option<BillingRequestStatus>,
                limit: i64,
            ) -> StoreResult<Vec<BillingRequest>> {
                // Each filter only when given, so that the organization's or
                // the pending requests' index serves the query.
                let mut conditions = vec!["TRUE".to_string()];
                let mut n = 1;
                if org_id.is_some() {
                    conditions.push(format!("org_id = ${n}"));
                    n += 1;
                }
                if status.is_some() {
                    conditions.push(format!("status = ${n}"));
                    n += 1;
                }
                let sql = format!(
                    "SELECT {BILLING_REQUEST_COLUMNS} FROM billing_requests WHERE {} ORDER BY id DESC LIMIT ${n}",
                    conditions.join(" AND ")
                );
                let mut query = sqlx::query_as::<_, BillingRequestRow>(&sql);
                if let Some(org_id) = org_id {
                    query = query.bind(org_id.to_string());
                }
                if let Some(status) = status {
                    query = query.bind(status.as_str());
                }
                query
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(BillingRequestRow::into_model)
                    .collect()
            }

            async fn insert_setup_link(&mut self, l: &SetupLink, token_hash: &str) -> StoreResult<()> {
                let scopes: Vec<&str> = l.scopes.iter().map(|s| s.as_str()).collect();
                let sql = format!("INSERT INTO setup_links ({SETUP_LINK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
                sqlx::query(&sql)
                    .bind(l.id.to_string())
                    .bind(l.org_id.to_string())
                    .bind(scopes.join(","))
                    .bind(&l.created_by)
                    .bind(l.created_at)
                    .bind(l.expires_at)
                    .bind(l.revoked_at)
                    .bind(token_hash)
                    .execute(self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn list_setup_links(&mut self, org_id: Uuid) -> StoreResult<Vec<SetupLink>> {
                let sql = format!("SELECT {SETUP_LINK_COLUMNS} FROM setup_links WHERE org_id = $1 ORDER BY id DESC");
                sqlx::query_as::<_, SetupLinkRow>(&sql)
                    .bind(org_id.to_string())
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|row| row.into_model().map(|(link, _)| link))
                    .collect()
            }

            async fn find_setup_link_by_hash(&mut self, token_hash: &str) -> StoreResult<Option<(SetupLink, String)>> {
                let sql = format!("SELECT {SETUP_LINK_COLUMNS} FROM setup_links WHERE token_hash = $1");
                sqlx::query_as::<_, SetupLinkRow>(&sql)
                    .bind(token_hash)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(SetupLinkRow::into_model)
                    .transpose()
            }

            async fn revoke_setup_link(&mut self, org_id: Uuid, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE setup_links SET revoked_at = $3 WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL",
                )
                .bind(org_id.to_string())
                .bind(id.to_string())
                .bind(at)
                .execute(self.conn().await?)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_sso_test(&mut self, t: &SsoTest) -> StoreResult<()> {
                let sql = format!("INSERT INTO sso_tests ({SSO_TEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
                sqlx::query(&sql)
                    .bind(t.id.to_string())
                    .bind(t.org_id.to_string())
                    .bind(t.link_id.map(|l| l.to_string()))
                    .bind(&t.tested_by)
                    .bind(t.at)
                    .bind(t.ok)
                    .bind(t.result.to_string())
                    .execute(self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn latest_sso_test(&mut self, org_id: Uuid, link_id: Option<Uuid>) -> StoreResult<Option<SsoTest>> {
                let sql = format!(
                    "SELECT {SSO_TEST_COLUMNS} FROM sso_tests WHERE org_id = $1 AND ($2 IS NULL OR link_id = $2) \
                     ORDER BY at DESC, id DESC LIMIT 1"
                );
                sqlx::query_as::<_, SsoTestRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(link_id.map(|l| l.to_string()))
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(SsoTestRow::into_model)
                    .transpose()
            }

            async fn setup_status(&mut self, org_id: Uuid) -> StoreResult<SetupStatus> {
                // A test counts when it passed through the connection as it is
                // now: one made before the connection last changed does not.
                let (domain_verified, sso_tested, scim_received, user_provisioned): (bool, bool, bool, bool) =
                    sqlx::query_as(
                        "SELECT \
                           EXISTS (SELECT 1 FROM domains WHERE org_id = $1 AND status = 'verified'), \
                           EXISTS (SELECT 1 FROM sso_tests t WHERE t.org_id = $1 AND t.ok \
                             AND NOT EXISTS (SELECT 1 FROM sso_connections c WHERE c.org_id = $1 AND c.updated_at > t.at)), \
                           EXISTS (SELECT 1 FROM scim_requests WHERE org_id = $1), \
                           EXISTS (SELECT 1 FROM scim_users WHERE org_id = $1)",
                    )
                    .bind(org_id.to_string())
                    .fetch_one(self.conn().await?)
                    .await?;
                Ok(SetupStatus { domain_verified, sso_tested, scim_received, user_provisioned })
            }

            async fn insert_scim_requests(&mut self, requests: &[ScimRequestRecord]) -> StoreResult<()> {
                // One statement per organization for its rows (an
                // organization deleted meanwhile is skipped), then the trim.
                let mut orgs: Vec<Uuid> = Vec::new();
                for r in requests {
                    if !orgs.contains(&r.org_id) {
                        orgs.push(r.org_id);
                    }
                }
                for org_id in orgs {
                    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)")
                        .bind(org_id.to_string())
                        .fetch_one(self.conn().await?)
                        .await?;
                    if !exists {
                        continue;
                    }
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO scim_requests (org_id, at, method, path, status, latency_us, client, scim_type, \
                         detail, body) ",
                    );
                    insert.push_values(requests.iter().filter(|r| r.org_id == org_id), |mut row, r| {
                        row.push_bind(r.org_id.to_string())
                            .push_bind(r.at)
                            .push_bind(r.method.clone())
                            .push_bind(r.path.clone())
                            .push_bind(i64::from(r.status))
                            .push_bind(r.latency_us)
                            .push_bind(r.client.clone())
                            .push_bind(r.scim_type.clone())
                            .push_bind(r.detail.clone())
                            .push_bind(r.body.clone());
                    });
                    insert.build().execute(self.conn().await?).await?;
                    sqlx::query(
                        "DELETE FROM scim_requests WHERE org_id = $1 AND seq <= \
                         (SELECT seq FROM scim_requests WHERE org_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                    )
                    .bind(org_id.to_string())
                    .bind(SCIM_REQUESTS_KEPT)
                    .execute(self.conn().await?)
                    .await?;
                }
                Ok(())
            }

            async fn list_scim_requests(&mut self, org_id: Uuid, limit: i64) -> StoreResult<Vec<ScimRequestRecord>> {
                let sql = format!(
                    "SELECT {SCIM_REQUEST_COLUMNS} FROM scim_requests WHERE org_id = $1 ORDER BY seq DESC LIMIT $2"
                );
                sqlx::query_as::<_, ScimRequestRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(ScimRequestRow::into_model)
                    .collect()
            }

            async fn update_credential(&mut self, c: &Credential) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE credentials SET name = $3, last_used_at = $4, revoked_at = $5, expires_at = $6 \
                     WHERE org_id = $1 AND id = $2",
                )
                .bind(c.org_id.to_string())
                .bind(c.id.to_string())
                .bind(&c.name)
                .bind(c.last_used_at)
                .bind(c.revoked_at)
                .bind(c.expires_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn insert_domain(&mut self, d: &Domain) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO domains (id, org_id, name, status, verification_token, failures, last_result, \
                     checked_at, verified_at, next_check_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(d.id.to_string())
                .bind(d.org_id.to_string())
                .bind(&d.name)
                .bind(d.status.as_str())
                .bind(&d.verification_token)
                .bind(d.failures)
                .bind(&d.last_result)
                .bind(d.checked_at)
                .bind(d.verified_at)
                .bind(d.next_check_at)
                .bind(d.created_at)
                .bind(d.updated_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn get_domain(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<Domain>> {
                let sql = format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE org_id = $1 AND id = $2");
                sqlx::query_as::<_, DomainRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(DomainRow::into_model)
                    .transpose()
            }

            async fn list_domains(&mut self, org_id: Uuid) -> StoreResult<Vec<Domain>> {
                let sql = format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE org_id = $1 ORDER BY name");
                sqlx::query_as::<_, DomainRow>(&sql)
                    .bind(org_id.to_string())
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(DomainRow::into_model)
                    .collect()
            }

            async fn update_domain(&mut self, d: &Domain) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE domains SET status = $3, failures = $4, last_result = $5, checked_at = $6, \
                     verified_at = $7, next_check_at = $8, updated_at = $9 WHERE org_id = $1 AND id = $2",
                )
                .bind(d.org_id.to_string())
                .bind(d.id.to_string())
                .bind(d.status.as_str())
                .bind(d.failures)
                .bind(&d.last_result)
                .bind(d.checked_at)
                .bind(d.verified_at)
                .bind(d.next_check_at)
                .bind(d.updated_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_domain(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM domains WHERE org_id = $1 AND id = $2")
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn find_verified_domain(&mut self, name: &str) -> StoreResult<Option<Domain>> {
                let sql = format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1 AND status = 'verified'");
                sqlx::query_as::<_, DomainRow>(&sql)
                    .bind(name)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(DomainRow::into_model)
                    .transpose()
            }

            async fn due_domains(&mut self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Domain>> {
                let sql = format!(
                    "SELECT {DOMAIN_COLUMNS} FROM domains WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT $2"
                );
                sqlx::query_as::<_, DomainRow>(&sql)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(DomainRow::into_model)
                    .collect()
            }

            async fn insert_scim_user(&mut self, u: &ScimUserRecord, emails: &[String]) -> StoreResult<()> {
                let ids = (u.id.to_string(), u.org_id.to_string(), u.member_id.to_string());
                let user_name = (u.user_name.clone(), u.user_name.to_lowercase());
                let display_name = (u.display_name.clone(), u.display_name.as_ref().map(|d| d.to_lowercase()));
                let (external_id, resource) = (u.external_id.clone(), sqlx::types::Json(u.resource.clone()));
                let (active, version, created_at, updated_at) = (u.active, u.version, u.created_at, u.updated_at);
                self.write_later(
                    "INSERT INTO scim_users (id, org_id, member_id, user_name, user_name_lc, external_id, display_name, \
                     display_name_lc, active, resource, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    |args| {
                        args.add(ids.0)?;
                        args.add(ids.1)?;
                        args.add(ids.2)?;
                        args.add(user_name.0)?;
                        args.add(user_name.1)?;
                        args.add(external_id)?;
                        args.add(display_name.0)?;
                        args.add(display_name.1)?;
                        args.add(active)?;
                        args.add(resource)?;
                        args.add(version)?;
                        args.add(created_at)?;
                        args.add(updated_at)
                    },
                )
                .await?;
                self.set_scim_emails(u, emails).await
            }

            async fn update_scim_user(&mut self, u: &ScimUserRecord, emails: &[String]) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE scim_users SET user_name = $3, user_name_lc = $4, external_id = $5, display_name = $6, \
                     display_name_lc = $7, active = $8, resource = $9, version = $10, updated_at = $11 \
                     WHERE org_id = $1 AND id = $2",
                )
                .bind(u.org_id.to_string())
                .bind(u.id.to_string())
                .bind(&u.user_name)
                .bind(u.user_name.to_lowercase())
                .bind(&u.external_id)
                .bind(&u.display_name)
                .bind(u.display_name.as_ref().map(|d| d.to_lowercase()))
                .bind(u.active)
                .bind(sqlx::types::Json(&u.resource))
                .bind(u.version)
                .bind(u.updated_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                // The emails are written again, with the transaction's next
                // statement: nothing reads them back before.
                let id = u.id.to_string();
                self.write_later("DELETE FROM scim_user_emails WHERE user_id = $1", |args| args.add(id)).await?;
                self.set_scim_emails(u, emails).await
            }

            async fn delete_scim_user(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM scim_users WHERE org_id = $1 AND id = $2")
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn get_scim_user(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<ScimUserRecord>> {
                let sql = format!("SELECT {SCIM_USER_COLUMNS} FROM scim_users r WHERE r.org_id = $1 AND r.id = $2");
                sqlx::query_as::<_, ScimUserRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(ScimUserRow::into_model)
                    .transpose()
            }

            async fn find_scim_user_by_member(&mut self, member_id: Uuid) -> StoreResult<Option<ScimUserRecord>> {
                let sql = format!("SELECT {SCIM_USER_COLUMNS} FROM scim_users r WHERE r.member_id = $1");
                sqlx::query_as::<_, ScimUserRow>(&sql)
                    .bind(member_id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(ScimUserRow::into_model)
                    .transpose()
            }

            async fn find_scim_user_by_user_name(&mut self, org_id: Uuid, user_name: &str) -> StoreResult<Option<ScimUserRecord>> {
                let sql = format!("SELECT {SCIM_USER_COLUMNS} FROM scim_users r WHERE r.org_id = $1 AND r.user_name_lc = $2");
                sqlx::query_as::<_, ScimUserRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(user_name.to_lowercase())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(ScimUserRow::into_model)
                    .transpose()
            }

            async fn get_scim_user_with_groups(
                &mut self,
                org_id: Uuid,
                id: Uuid,
            ) -> StoreResult<Option<(ScimUserRecord, UserGroups)>> {
                let groups = <$db as $crate::store::sql::Statements>::USER_GROUPS;
                let sql =
                    format!("SELECT {SCIM_USER_COLUMNS}, {groups} AS groups FROM scim_users r WHERE r.org_id = $1 AND r.id = $2");
                sqlx::query_as::<_, ScimUserGroupsRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(ScimUserGroupsRow::into_model)
                    .transpose()
            }

            async fn list_scim_users(
                &mut self,
                org_id: Uuid,
                q: &ScimQuery,
            ) -> StoreResult<Vec<(ScimUserRecord, UserGroups)>> {
                let (filter, order, next) = scim_page_sql(q);
                let groups = <$db as $crate::store::sql::Statements>::USER_GROUPS;
                let page = <$db as $crate::store::sql::Statements>::id_among(&format!(
                    "SELECT r.id FROM scim_users r WHERE r.org_id = $1{filter} ORDER BY {order} LIMIT ${next} OFFSET ${}",
                    next + 1
                ));
                let one_row = <$db as $crate::store::sql::Statements>::page_as_one_row(
                    &format!("{SCIM_USER_JSON_COLUMNS}, json({groups})"),
                    &format!("scim_users r WHERE {page}"),
                    &order,
                );
                let as_one_row = one_row.is_some();
                let sql = one_row.unwrap_or_else(|| {
                    format!("SELECT {SCIM_USER_COLUMNS}, {groups} AS groups FROM scim_users r WHERE {page} ORDER BY {order}")
                });
                let query = sqlx::query(&sql).bind(org_id.to_string());
                let query = bind_fragment!(query, q.filter.as_ref());
                let query = bind_fragment!(query, q.order.as_ref());
                let rows = query.bind(q.limit).bind(q.offset).fetch_all(self.conn().await?).await?;
                match as_one_row {
                    true => page_rows::<ScimUserJson, _>(&rows)?.into_iter().map(ScimUserJson::into_model).collect(),
                    false => rows.iter().map(|r| <ScimUserGroupsRow as sqlx::FromRow<_>>::from_row(r)?.into_model()).collect(),
                }
            }

            async fn count_scim_users(&mut self, org_id: Uuid, q: &ScimQuery) -> StoreResult<i64> {
                if q.filter.is_none() {
                    // Kept by triggers on `scim_users`.
                    let counted: Option<(i64,)> = sqlx::query_as("SELECT scim_users FROM organizations WHERE id = $1")
                        .bind(org_id.to_string())
                        .fetch_optional(self.conn().await?)
                        .await?;
                    return Ok(counted.map_or(0, |(n,)| n));
                }
                let (filter, _, _) = scim_page_sql(q);
                let sql = format!("SELECT COUNT(*) FROM scim_users r WHERE r.org_id = $1{filter}");
                let query = sqlx::query_as::<_, (i64,)>(&sql).bind(org_id.to_string());
                let query = bind_fragment!(query, q.filter.as_ref());
                Ok(query.fetch_one(self.conn().await?).await?.0)
            }

            async fn existing_scim_users(&mut self, org_id: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
                let mut found = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT id FROM scim_users WHERE org_id = $1 AND id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(org_id.to_string());
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for (id,) in query.fetch_all(self.conn().await?).await? {
                        found.push(uuid("scim_users.id", &id)?);
                    }
                }
                Ok(found)
            }

            async fn insert_scim_group(&mut self, g: &ScimGroupRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO scim_groups (id, org_id, display_name, display_name_lc, external_id, resource, version, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(g.id.to_string())
                .bind(g.org_id.to_string())
                .bind(&g.display_name)
                .bind(g.display_name.to_lowercase())
                .bind(&g.external_id)
                .bind(sqlx::types::Json(&g.resource))
                .bind(g.version)
                .bind(g.created_at)
                .bind(g.updated_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn update_scim_group(&mut self, g: &ScimGroupRecord) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE scim_groups SET display_name = $3, display_name_lc = $4, external_id = $5, resource = $6, \
                     version = $7, updated_at = $8 WHERE org_id = $1 AND id = $2",
                )
                .bind(g.org_id.to_string())
                .bind(g.id.to_string())
                .bind(&g.display_name)
                .bind(g.display_name.to_lowercase())
                .bind(&g.external_id)
                .bind(sqlx::types::Json(&g.resource))
                .bind(g.version)
                .bind(g.updated_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_scim_group(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM scim_groups WHERE org_id = $1 AND id = $2")
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn get_scim_group(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<ScimGroupRecord>> {
                let sql = format!("SELECT {SCIM_GROUP_COLUMNS} FROM scim_groups r WHERE r.org_id = $1 AND r.id = $2");
                sqlx::query_as::<_, ScimGroupRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(ScimGroupRow::into_model)
                    .transpose()
            }

            async fn lock_scim_group(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<ScimGroupRecord>> {
                // RETURNING cannot name a table alias on SQLite: the columns go unqualified.
                let sql = format!(
                    "UPDATE scim_groups SET version = version WHERE org_id = $1 AND id = $2 RETURNING {}",
                    SCIM_GROUP_COLUMNS.replace("r.", "")
                );
                sqlx::query_as::<_, ScimGroupRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(ScimGroupRow::into_model)
                    .transpose()
            }

            async fn list_scim_groups(&mut self, org_id: Uuid, q: &ScimQuery) -> StoreResult<Vec<ScimGroupRecord>> {
                let (filter, order, next) = scim_page_sql(q);
                let page = <$db as $crate::store::sql::Statements>::id_among(&format!(
                    "SELECT r.id FROM scim_groups r WHERE r.org_id = $1{filter} ORDER BY {order} LIMIT ${next} OFFSET ${}",
                    next + 1
                ));
                let one_row = <$db as $crate::store::sql::Statements>::page_as_one_row(
                    SCIM_GROUP_JSON_COLUMNS,
                    &format!("scim_groups r WHERE {page}"),
                    &order,
                );
                let as_one_row = one_row.is_some();
                let sql = one_row.unwrap_or_else(|| format!("SELECT {SCIM_GROUP_COLUMNS} FROM scim_groups r WHERE {page} ORDER BY {order}"));
                let query = sqlx::query(&sql).bind(org_id.to_string());
                let query = bind_fragment!(query, q.filter.as_ref());
                let query = bind_fragment!(query, q.order.as_ref());
                let rows = query.bind(q.limit).bind(q.offset).fetch_all(self.conn().await?).await?;
                match as_one_row {
                    true => page_rows::<ScimGroupJson, _>(&rows)?.into_iter().map(ScimGroupJson::into_model).collect(),
                    false => rows.iter().map(|r| <ScimGroupRow as sqlx::FromRow<_>>::from_row(r)?.into_model()).collect(),
                }
            }

            async fn count_scim_groups(&mut self, org_id: Uuid, q: &ScimQuery) -> StoreResult<i64> {
                let (filter, _, _) = scim_page_sql(q);
                let sql = format!("SELECT COUNT(*) FROM scim_groups r WHERE r.org_id = $1{filter}");
                let query = sqlx::query_as::<_, (i64,)>(&sql).bind(org_id.to_string());
                let query = bind_fragment!(query, q.filter.as_ref());
                Ok(query.fetch_one(self.conn().await?).await?.0)
            }

            async fn add_group_members(&mut self, org_id: Uuid, group_id: Uuid, user_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
                let mut added = Vec::with_capacity(user_ids.len());
                for chunk in user_ids.chunks(ID_CHUNK) {
                    let rows = (0..chunk.len())
                        .map(|i| format!("($1, ${}, $2)", i + 3))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = format!(
                        "INSERT INTO scim_group_members (group_id, user_id, org_id) VALUES {rows} \
                         ON CONFLICT DO NOTHING RETURNING user_id"
                    );
                    let mut query = sqlx::query_as::<_, (String,)>(&sql)
                        .bind(group_id.to_string())
                        .bind(org_id.to_string());
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for (id,) in query.fetch_all(self.conn().await?).await? {
                        added.push(uuid("scim_group_members.user_id", &id)?);
                    }
                }
                Ok(added)
            }

            async fn remove_group_members(&mut self, group_id: Uuid, user_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
                let mut removed = Vec::with_capacity(user_ids.len());
                for chunk in user_ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "DELETE FROM scim_group_members WHERE group_id = $1 AND user_id IN ({}) RETURNING user_id",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(group_id.to_string());
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for (id,) in query.fetch_all(self.conn().await?).await? {
                        removed.push(uuid("scim_group_members.user_id", &id)?);
                    }
                }
                Ok(removed)
            }

            async fn group_members(&mut self, group_id: Uuid) -> StoreResult<Vec<(Uuid, Option<String>)>> {
                // Each member's name by its primary key, whatever the planner
                // believes of the group's size (see `Statements::USER_GROUPS` of PostgreSQL).
                let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT gm.user_id, (SELECT u.display_name FROM scim_users u WHERE u.id = gm.user_id) \
                     FROM scim_group_members gm WHERE gm.group_id = $1 ORDER BY gm.user_id",
                )
                .bind(group_id.to_string())
                .fetch_all(self.conn().await?)
                .await?;
                rows.into_iter().map(|(id, name)| Ok((uuid("scim_group_members.user_id", &id)?, name))).collect()
            }

            async fn group_members_after(
                &mut self,
                group_id: Uuid,
                after: Option<Uuid>,
                limit: i64,
            ) -> StoreResult<Vec<(Uuid, Option<String>)>> {
                // The page's ids first, then their names: joined before the
                // LIMIT, PostgreSQL merge-joins from the first user on every
                // page, which makes walking a large group quadratic; joined
                // after it, a generic plan may hash the page against every
                // user. Each name is looked up by its key instead. Ids are
                // TEXT on both backends and every id sorts after the empty
                // string, so the first page needs no statement of its own.
                let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT gm.user_id, (SELECT u.display_name FROM scim_users u WHERE u.id = gm.user_id) \
                     FROM (SELECT user_id FROM scim_group_members \
                     WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3) gm ORDER BY gm.user_id",
                )
                .bind(group_id.to_string())
                .bind(after.map(|id| id.to_string()).unwrap_or_default())
                .bind(limit)
                .fetch_all(self.conn().await?)
                .await?;
                rows.into_iter().map(|(id, name)| Ok((uuid("scim_group_members.user_id", &id)?, name))).collect()
            }

            async fn find_org_by_tenant_id(&mut self, tenant_id: &str) -> StoreResult<Option<Organization>> {
                let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE sso_tenant_id = $1");
                sqlx::query_as::<_, OrgRow>(&sql)
                    .bind(tenant_id)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(OrgRow::into_model)
                    .transpose()
            }

            async fn upsert_sso_connection(&mut self, c: &SsoConnectionRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO sso_connections (org_id, issuer, client_id, client_secret, scopes, \
                     require_email_verified, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (org_id) DO UPDATE SET issuer = excluded.issuer, client_id = excluded.client_id, \
                     client_secret = excluded.client_secret, scopes = excluded.scopes, \
                     require_email_verified = excluded.require_email_verified, updated_at = excluded.updated_at",
                )
                .bind(c.org_id.to_string())
                .bind(&c.issuer)
                .bind(&c.client_id)
                .bind(c.client_secret.expose())
                .bind(c.scopes.join(" "))
                .bind(c.require_email_verified)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn get_sso_connection(&mut self, org_id: Uuid) -> StoreResult<Option<SsoConnectionRecord>> {
                sqlx::query_as::<_, SsoConnectionRow>(
                    "SELECT org_id, issuer, client_id, client_secret, scopes, require_email_verified, created_at, \
                     updated_at FROM sso_connections WHERE org_id = $1",
                )
                .bind(org_id.to_string())
                .fetch_optional(self.conn().await?)
                .await?
                .map(SsoConnectionRow::into_model)
                .transpose()
            }

            async fn list_sso_connections(&mut self) -> StoreResult<Vec<SsoConnectionRecord>> {
                sqlx::query_as::<_, SsoConnectionRow>(
                    "SELECT org_id, issuer, client_id, client_secret, scopes, require_email_verified, created_at, \
                     updated_at FROM sso_connections ORDER BY org_id",
                )
                .fetch_all(self.conn().await?)
                .await?
                .into_iter()
                .map(SsoConnectionRow::into_model)
                .collect()
            }

            async fn delete_sso_connection(&mut self, org_id: Uuid) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM sso_connections WHERE org_id = $1")
                    .bind(org_id.to_string())
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_sso_client(&mut self, c: &SsoClient, secret_hash: &str) -> StoreResult<()> {
                let uris = serde_json::to_string(&c.redirect_uris).map_err(|e| StoreError::Other(e.into()))?;
                sqlx::query(
                    "INSERT INTO sso_clients (id, org_id, name, secret_hash, redirect_uris, created_by, created_at, \
                     revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(c.id.to_string())
                .bind(c.org_id.map(|o| o.to_string()))
                .bind(&c.name)
                .bind(secret_hash)
                .bind(uris)
                .bind(&c.created_by)
                .bind(c.created_at)
                .bind(c.revoked_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn list_sso_clients(&mut self, org_id: Option<Uuid>) -> StoreResult<Vec<SsoClient>> {
                let sql = format!(
                    "SELECT {SSO_CLIENT_COLUMNS} FROM sso_clients \
                     WHERE ($1 IS NULL AND org_id IS NULL) OR org_id = $1 ORDER BY id"
                );
                sqlx::query_as::<_, SsoClientRow>(&sql)
                    .bind(org_id.map(|o| o.to_string()))
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|r| r.into_model().map(|(c, _)| c))
                    .collect()
            }

            async fn get_sso_client(&mut self, id: Uuid) -> StoreResult<Option<(SsoClient, String)>> {
                let sql = format!("SELECT {SSO_CLIENT_COLUMNS} FROM sso_clients WHERE id = $1");
                sqlx::query_as::<_, SsoClientRow>(&sql)
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(SsoClientRow::into_model)
                    .transpose()
            }

            async fn sso_clients_for(&mut self, org_id: Uuid) -> StoreResult<Vec<SsoClient>> {
                let sql = format!(
                    "SELECT {SSO_CLIENT_COLUMNS} FROM sso_clients \
                     WHERE (org_id = $1 OR org_id IS NULL) AND revoked_at IS NULL ORDER BY id"
                );
                sqlx::query_as::<_, SsoClientRow>(&sql)
                    .bind(org_id.to_string())
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|r| r.into_model().map(|(c, _)| c))
                    .collect()
            }

            async fn revoke_sso_client(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE sso_clients SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id.to_string())
                    .bind(at)
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_sso_attempt(&mut self, a: &SsoAttempt, state_hash: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO sso_attempts (id, state_hash, browser_hash, org_id, connection, issuer, nonce, \
                     pkce_verifier, client_id, redirect_uri, product_state, login_hint, created_at, expires_at, used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(a.id.to_string())
                .bind(state_hash)
                .bind(&a.browser_hash)
                .bind(a.org_id.to_string())
                .bind(&a.connection)
                .bind(&a.issuer)
                .bind(&a.nonce)
                .bind(&a.pkce_verifier)
                .bind(a.client_id.to_string())
                .bind(&a.redirect_uri)
                .bind(&a.product_state)
                .bind(&a.login_hint)
                .bind(a.created_at)
                .bind(a.expires_at)
                .bind(a.used_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn find_sso_attempt(&mut self, state_hash: &str) -> StoreResult<Option<SsoAttempt>> {
                let sql = format!("SELECT {SSO_ATTEMPT_COLUMNS} FROM sso_attempts WHERE state_hash = $1");
                sqlx::query_as::<_, SsoAttemptRow>(&sql)
                    .bind(state_hash)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(SsoAttemptRow::into_model)
                    .transpose()
            }

            async fn use_sso_attempt(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE sso_attempts SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
                    .bind(id.to_string())
                    .bind(at)
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_sso_code(&mut self, code_hash: &str, c: &SsoCode) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO sso_codes (code_hash, client_id, org_id, member_id, profile, created_at, expires_at, \
                     used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(code_hash)
                .bind(c.client_id.to_string())
                .bind(c.org_id.to_string())
                .bind(c.member_id.to_string())
                .bind(c.profile.to_string())
                .bind(c.created_at)
                .bind(c.expires_at)
                .bind(c.used_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn find_sso_code(&mut self, code_hash: &str) -> StoreResult<Option<SsoCode>> {
                sqlx::query_as::<_, SsoCodeRow>(
                    "SELECT client_id, org_id, member_id, profile, created_at, expires_at, used_at \
                     FROM sso_codes WHERE code_hash = $1",
                )
                .bind(code_hash)
                .fetch_optional(self.conn().await?)
                .await?
                .map(SsoCodeRow::into_model)
                .transpose()
            }

            async fn use_sso_code(&mut self, code_hash: &str, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE sso_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL")
                    .bind(code_hash)
                    .bind(at)
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_sso_session(&mut self, s: &SsoSession, token_hash: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO sso_sessions (id, token_hash, org_id, member_id, issuer, client_id, id_token, \
                     created_at, expires_at, ended_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(s.id.to_string())
                .bind(token_hash)
                .bind(s.org_id.to_string())
                .bind(s.member_id.to_string())
                .bind(&s.issuer)
                .bind(&s.client_id)
                .bind(&s.id_token)
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(s.ended_at)
                .bind(s.last_seen_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn find_sso_session(&mut self, token_hash: &str) -> StoreResult<Option<SsoSession>> {
                let sql = format!("SELECT {SSO_SESSION_COLUMNS} FROM sso_sessions WHERE token_hash = $1");
                sqlx::query_as::<_, SsoSessionRow>(&sql)
                    .bind(token_hash)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(SsoSessionRow::into_model)
                    .transpose()
            }

            async fn touch_sso_session(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query("UPDATE sso_sessions SET last_seen_at = $2 WHERE id = $1 AND ended_at IS NULL")
                    .bind(id.to_string())
                    .bind(at)
                    .execute(self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn active_memberships(&mut self, user_id: Uuid) -> StoreResult<Vec<(Uuid, String, Role)>> {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT o.id, o.name, m.role FROM members m JOIN organizations o ON o.id = m.org_id \
                     WHERE m.user_id = $1 AND m.status = 'active' ORDER BY o.name, o.id",
                )
                .bind(user_id.to_string())
                .fetch_all(self.conn().await?)
                .await?;
                rows.into_iter()
                    .map(|(id, name, role)| {
                        let role: Role = role.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("members.role: {e}")))?;
                        Ok((uuid("organizations.id", &id)?, name, role))
                    })
                    .collect()
            }

            async fn end_sso_session(&mut self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE sso_sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL")
                    .bind(id.to_string())
                    .bind(at)
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn end_member_sessions(&mut self, member_id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
                // Nothing reads back how many ended.
                let member_id = member_id.to_string();
                self.write_later("UPDATE sso_sessions SET ended_at = $2 WHERE member_id = $1 AND ended_at IS NULL", |args| {
                    args.add(member_id)?;
                    args.add(at)
                })
                .await
            }

            async fn purge_sso(&mut self, before: DateTime<Utc>) -> StoreResult<u64> {
                let mut n = 0;
                for sql in [
                    "DELETE FROM sso_attempts WHERE expires_at < $1",
                    "DELETE FROM sso_codes WHERE expires_at < $1",
                    "DELETE FROM sso_sessions WHERE expires_at < $1 OR ended_at < $1",
                    "DELETE FROM sign_in_links WHERE expires_at < $1",
                ] {
                    n += sqlx::query(sql).bind(before).execute(self.conn().await?).await?.rows_affected();
                }
                Ok(n)
            }

            async fn insert_sign_in_link(&mut self, token_hash: &str, l: &SignInLink) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO sign_in_links (token_hash, org_id, email, client_id, redirect_uri, state, \
                     browser_hash, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(token_hash)
                .bind(l.org_id.to_string())
                .bind(l.email.as_str())
                .bind(l.client_id.to_string())
                .bind(&l.redirect_uri)
                .bind(&l.state)
                .bind(&l.browser_hash)
                .bind(l.created_at)
                .bind(l.expires_at)
                .bind(l.used_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn find_sign_in_link(&mut self, token_hash: &str) -> StoreResult<Option<SignInLink>> {
                sqlx::query_as::<_, SignInLinkRow>(
                    "SELECT org_id, email, client_id, redirect_uri, state, browser_hash, created_at, expires_at, \
                     used_at FROM sign_in_links WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(self.conn().await?)
                .await?
                .map(SignInLinkRow::into_model)
                .transpose()
            }

            async fn use_sign_in_link(&mut self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<bool> {
                let done =
                    sqlx::query("UPDATE sign_in_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL")
                        .bind(token_hash)
                        .bind(at)
                        .execute(self.conn().await?)
                        .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn orgs_for_email(&mut self, email: &Email, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
                let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT m.org_id, m.created_at FROM users u JOIN members m ON m.user_id = u.id \
                     WHERE u.email_normalized = $1 AND m.status = 'active' \
                     UNION SELECT i.org_id, i.created_at FROM invitations i \
                     WHERE i.email_normalized = $1 AND i.status = 'pending' AND i.expires_at > $2",
                )
                .bind(email.normalized())
                .bind(now)
                .fetch_all(self.conn().await?)
                .await?;
                let mut rows = rows
                    .into_iter()
                    .map(|(org, at)| Ok((at, uuid("org_id", &org)?)))
                    .collect::<StoreResult<Vec<_>>>()?;
                rows.sort();
                let mut orgs: Vec<Uuid> = Vec::with_capacity(rows.len());
                for (_, org) in rows {
                    if !orgs.contains(&org) {
                        orgs.push(org);
                    }
                }
                Ok(orgs)
            }

            async fn insert_mail(&mut self, m: &OutboxMail) -> StoreResult<()> {
                let row = (
                    m.id.to_string(),
                    m.org_id.map(|o| o.to_string()),
                    m.kind.clone(),
                    m.subject_id.map(|s| s.to_string()),
                    m.recipient.clone(),
                    m.subject.clone(),
                    m.text.clone(),
                    m.html.clone(),
                );
                let (give_up_at, created_at) = (m.give_up_at, m.created_at);
                self.write_later(
                    "INSERT INTO mail_outbox (id, org_id, kind, subject_id, recipient, subject, body_text, body_html, \
                     status, attempts, next_attempt_at, give_up_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $9, $9)",
                    move |args| {
                        args.add(row.0)?;
                        args.add(row.1)?;
                        args.add(row.2)?;
                        args.add(row.3)?;
                        args.add(row.4)?;
                        args.add(row.5)?;
                        args.add(row.6)?;
                        args.add(row.7)?;
                        args.add(created_at)?;
                        args.add(give_up_at)
                    },
                )
                .await
            }

            async fn mail_due(&mut self, now: DateTime<Utc>) -> StoreResult<bool> {
                let due: Option<(String,)> = sqlx::query_as(
                    "SELECT id FROM mail_outbox WHERE status = 'queued' AND next_attempt_at <= $1 \
                     AND (claimed_until IS NULL OR claimed_until <= $1) LIMIT 1",
                )
                .bind(now)
                .fetch_optional(self.conn().await?)
                .await?;
                Ok(due.is_some())
            }

            async fn claim_mail(
                &mut self,
                holder: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<OutboxMail>> {
                let sql = format!(
                    "UPDATE mail_outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM mail_outbox WHERE status = 'queued' AND next_attempt_at <= $3 \
                     AND (claimed_until IS NULL OR claimed_until <= $3) ORDER BY next_attempt_at LIMIT $4{}) \
                     RETURNING {MAIL_COLUMNS}",
                    <$db as $crate::store::sql::Statements>::SKIP_LOCKED
                );
                let mut claimed = sqlx::query_as::<_, MailRow>(&sql)
                    .bind(holder)
                    .bind(until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(MailRow::into_model)
                    .collect::<StoreResult<Vec<_>>>()?;
                // Oldest first: `RETURNING` keeps no order.
                claimed.sort_by_key(|m| (m.created_at, m.id));
                Ok(claimed)
            }

            async fn record_mail_attempt(&mut self, id: Uuid, holder: &str, a: &MailAttempt) -> StoreResult<bool> {
                let done = if a.status == MailStatus::Queued {
                    sqlx::query(
                        "UPDATE mail_outbox SET last_reply = $3, next_attempt_at = $4, claimed_by = NULL, \
                         claimed_until = NULL, updated_at = $5 WHERE id = $1 AND claimed_by = $2 AND status = 'queued'",
                    )
                    .bind(id.to_string())
                    .bind(holder)
                    .bind(&a.reply)
                    .bind(a.next_attempt_at.unwrap_or(a.at))
                    .bind(a.at)
                    .execute(self.conn().await?)
                    .await?
                } else {
                    sqlx::query(
                        "UPDATE mail_outbox SET status = $3, last_reply = $4, sent_at = $5, claimed_by = NULL, \
                         claimed_until = NULL, subject = NULL, body_text = NULL, body_html = NULL, updated_at = $6 \
                         WHERE id = $1 AND claimed_by = $2 AND status = 'queued'",
                    )
                    .bind(id.to_string())
                    .bind(holder)
                    .bind(a.status.as_str())
                    .bind(&a.reply)
                    .bind((a.status == MailStatus::Sent).then_some(a.at))
                    .bind(a.at)
                    .execute(self.conn().await?)
                    .await?
                };
                Ok(done.rows_affected() == 1)
            }

            async fn mail_queued_since(&mut self, org_id: Uuid, kind: &str, since: DateTime<Utc>) -> StoreResult<bool> {
                let found: Option<(String,)> = sqlx::query_as(
                    "SELECT id FROM mail_outbox WHERE org_id = $1 AND kind = $2 AND created_at >= $3 LIMIT 1",
                )
                .bind(org_id.to_string())
                .bind(kind)
                .bind(since)
                .fetch_optional(self.conn().await?)
                .await?;
                Ok(found.is_some())
            }

            async fn admin_emails(&mut self, org_id: Uuid) -> StoreResult<Vec<Email>> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT u.email FROM members m JOIN users u ON u.id = m.user_id \
                     WHERE m.org_id = $1 AND m.status = 'active' AND m.role IN ('owner', 'admin') ORDER BY m.id",
                )
                .bind(org_id.to_string())
                .fetch_all(self.conn().await?)
                .await?;
                rows.into_iter().map(|(e,)| email(&e)).collect()
            }

            async fn credentials_expiring(
                &mut self,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
                kind: &str,
            ) -> StoreResult<Vec<Credential>> {
                let sql = format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials c WHERE c.revoked_at IS NULL \
                     AND c.expires_at > $1 AND c.expires_at <= $2 AND NOT EXISTS \
                     (SELECT 1 FROM mail_outbox o WHERE o.subject_id = c.id AND o.kind = $3) ORDER BY c.expires_at"
                );
                sqlx::query_as::<_, CredentialRow>(&sql)
                    .bind(now)
                    .bind(until)
                    .bind(kind)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(|r| r.into_model().map(|(c, _)| c))
                    .collect()
            }

            async fn mail_deliveries(
                &mut self,
                subject_ids: &[Uuid],
            ) -> StoreResult<std::collections::HashMap<Uuid, MailDelivery>> {
                let mut out = std::collections::HashMap::new();
                for chunk in subject_ids.chunks(ID_CHUNK) {
                    // Oldest first, so each record keeps its latest message's delivery.
                    let sql = format!(
                        "SELECT subject_id, status, attempts, last_reply, next_attempt_at, sent_at, updated_at \
                         FROM mail_outbox WHERE subject_id IN ({}) ORDER BY created_at, id",
                        placeholders(1, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, MailDeliveryRow>(&sql);
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for row in query.fetch_all(self.conn().await?).await? {
                        let (subject, delivery) = row.into_model()?;
                        out.insert(subject, delivery);
                    }
                }
                Ok(out)
            }

            async fn try_acquire_lease(
                &mut self,
                name: &str,
                holder: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE leases.expires_at <= $4 OR leases.holder = $2",
                )
                .bind(name)
                .bind(holder)
                .bind(until)
                .bind(now)
                .execute(self.conn().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_audit(&mut self, a: NewAudit) -> StoreResult<()> {
                let sql = if is_event(&a.action) {
                    <$db as $crate::store::sql::Statements>::INSERT_AUDIT_AND_EVENT
                } else {
                    INSERT_AUDIT
                };
                let event = is_event(&a.action).then(|| Uuid::now_v7().to_string());
                self.wrote_event |= event.is_some();
                self.write_later(sql, |args| {
                    args.add(Uuid::now_v7().to_string())?;
                    args.add(a.org_id.to_string())?;
                    args.add(a.actor_kind.as_str())?;
                    args.add(a.actor_id)?;
                    args.add(a.action)?;
                    args.add(a.target)?;
                    args.add(a.before.map(sqlx::types::Json))?;
                    args.add(a.after.map(sqlx::types::Json))?;
                    args.add(a.request_id)?;
                    args.add(a.at)?;
                    args.add(a.client_address)?;
                    match event {
                        Some(id) => args.add(id),
                        None => Ok(()),
                    }
                })
                .await
            }

            async fn list_events(&mut self, org_id: Uuid, after: i64, limit: i64) -> StoreResult<Vec<Event>> {
                let rows: Vec<(i64, String, String, String, Option<sqlx::types::Json<serde_json::Value>>, DateTime<Utc>)> =
                    sqlx::query_as(
                        "SELECT seq, id, kind, subject, data, at FROM events WHERE org_id = $1 AND seq > $2 \
                         ORDER BY seq LIMIT $3",
                    )
                    .bind(org_id.to_string())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?;
                rows.into_iter()
                    .map(|(seq, id, kind, subject, data, at)| {
                        Ok(Event { seq, id: uuid("events.id", &id)?, kind, subject, data: data.map(|d| d.0), at })
                    })
                    .collect()
            }

            async fn insert_webhook_endpoint(&mut self, e: &WebhookEndpoint, now: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO webhook_endpoints (id, org_id, url, description, event_types, secret, previous_secret, \
                     previous_secret_expires_at, enabled, disabled_reason, created_by, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(e.id.to_string())
                .bind(e.org_id.map(|o| o.to_string()))
                .bind(&e.url)
                .bind(&e.description)
                .bind(sqlx::types::Json(&e.event_types))
                .bind(&e.secret)
                .bind(&e.previous_secret)
                .bind(e.previous_secret_expires_at)
                .bind(e.enabled)
                .bind(&e.disabled_reason)
                .bind(&e.created_by)
                .bind(e.created_at)
                .bind(e.updated_at)
                .execute(self.conn().await?)
                .await?;
                // Each queue starts after its organization's latest event.
                sqlx::query(
                    "INSERT INTO webhook_queues (endpoint_id, org_id, delivered_seq, next_attempt_at) \
                     SELECT $1, o.id, o.event_seq, $2 FROM organizations o WHERE $3 IS NULL OR o.id = $3",
                )
                .bind(e.id.to_string())
                .bind(now)
                .bind(e.org_id.map(|o| o.to_string()))
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn get_webhook_endpoint(&mut self, id: Uuid) -> StoreResult<Option<WebhookEndpoint>> {
                let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE id = $1");
                sqlx::query_as::<_, WebhookRow>(&sql)
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(WebhookRow::into_model)
                    .transpose()
            }

            async fn list_webhook_endpoints(&mut self, org_id: Option<Uuid>) -> StoreResult<Vec<WebhookEndpoint>> {
                let sql = match org_id {
                    Some(_) => format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 ORDER BY id"),
                    None => format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE org_id IS NULL ORDER BY id"),
                };
                let mut query = sqlx::query_as::<_, WebhookRow>(&sql);
                if let Some(org) = org_id {
                    query = query.bind(org.to_string());
                }
                query.fetch_all(self.conn().await?).await?.into_iter().map(WebhookRow::into_model).collect()
            }

            async fn all_webhook_endpoints(&mut self) -> StoreResult<Vec<WebhookEndpoint>> {
                let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints ORDER BY id");
                sqlx::query_as::<_, WebhookRow>(&sql)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(WebhookRow::into_model)
                    .collect()
            }

            async fn update_webhook_endpoint(&mut self, e: &WebhookEndpoint) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE webhook_endpoints SET url = $2, description = $3, event_types = $4, secret = $5, \
                     previous_secret = $6, previous_secret_expires_at = $7, enabled = $8, disabled_reason = $9, \
                     updated_at = $10 WHERE id = $1",
                )
                .bind(e.id.to_string())
                .bind(&e.url)
                .bind(&e.description)
                .bind(sqlx::types::Json(&e.event_types))
                .bind(&e.secret)
                .bind(&e.previous_secret)
                .bind(e.previous_secret_expires_at)
                .bind(e.enabled)
                .bind(&e.disabled_reason)
                .bind(e.updated_at)
                .execute(self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_webhook_endpoint(&mut self, id: Uuid) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
                    .bind(id.to_string())
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn add_webhook_queues(&mut self, org_id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO webhook_queues (endpoint_id, org_id, delivered_seq, next_attempt_at) \
                     SELECT e.id, $1, 0, $2 FROM webhook_endpoints e WHERE e.org_id IS NULL",
                )
                .bind(org_id.to_string())
                .bind(now)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn retry_webhook_queues(&mut self, endpoint_id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE webhook_queues SET attempts = 0, failing_since = NULL, next_attempt_at = $2 \
                     WHERE endpoint_id = $1",
                )
                .bind(endpoint_id.to_string())
                .bind(now)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn rewind_webhook_queue(&mut self, endpoint_id: Uuid, org_id: Uuid, seq: i64) -> StoreResult<i64> {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT q.delivered_seq, o.event_seq FROM webhook_queues q JOIN organizations o ON o.id = q.org_id \
                     WHERE q.endpoint_id = $1 AND q.org_id = $2",
                )
                .bind(endpoint_id.to_string())
                .bind(org_id.to_string())
                .fetch_optional(self.conn().await?)
                .await?;
                let Some((delivered, latest)) = row else { return Err(StoreError::NotFound) };
                let to = seq.clamp(0, delivered);
                if to < delivered {
                    // A new head: its attempts start over.
                    sqlx::query(
                        "UPDATE webhook_queues SET delivered_seq = $3, attempts = 0, failing_since = NULL \
                         WHERE endpoint_id = $1 AND org_id = $2",
                    )
                    .bind(endpoint_id.to_string())
                    .bind(org_id.to_string())
                    .bind(to)
                    .execute(self.conn().await?)
                    .await?;
                }
                Ok(latest - to)
            }

            async fn insert_webhook_replay(
                &mut self,
                endpoint_id: Uuid,
                org_id: Uuid,
                seq: i64,
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO webhook_replays (endpoint_id, org_id, seq, requested_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (endpoint_id, org_id, seq) DO NOTHING",
                )
                .bind(endpoint_id.to_string())
                .bind(org_id.to_string())
                .bind(seq)
                .bind(now)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn webhooks_due(&mut self, now: DateTime<Utc>) -> StoreResult<bool> {
                let sql = format!("SELECT q.endpoint_id FROM webhook_queues q WHERE {WEBHOOK_QUEUE_DUE} LIMIT 1");
                let due: Option<(String,)> =
                    sqlx::query_as(&sql).bind(now).fetch_optional(self.conn().await?).await?;
                Ok(due.is_some())
            }

            async fn claim_webhook_queues(
                &mut self,
                holder: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<WebhookQueue>> {
                let sql = format!(
                    "UPDATE webhook_queues SET claimed_by = $2, claimed_until = $3 \
                     WHERE (endpoint_id, org_id) IN (SELECT q.endpoint_id, q.org_id FROM webhook_queues q \
                     WHERE {WEBHOOK_QUEUE_DUE} ORDER BY q.next_attempt_at LIMIT $4{}) \
                     RETURNING endpoint_id, org_id, delivered_seq, attempts, failing_since",
                    <$db as $crate::store::sql::Statements>::SKIP_LOCKED
                );
                let rows: Vec<(String, String, i64, i64, Option<DateTime<Utc>>)> = sqlx::query_as(&sql)
                    .bind(now)
                    .bind(holder)
                    .bind(until)
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?;
                let mut queues = Vec::with_capacity(rows.len());
                for (endpoint, org, delivered_seq, attempts, failing_since) in rows {
                    let (endpoint_id, org_id) =
                        (uuid("webhook_queues.endpoint_id", &endpoint)?, uuid("webhook_queues.org_id", &org)?);
                    let replays: Vec<(i64,)> = sqlx::query_as(
                        "SELECT seq FROM webhook_replays WHERE endpoint_id = $1 AND org_id = $2 ORDER BY seq",
                    )
                    .bind(&endpoint)
                    .bind(&org)
                    .fetch_all(self.conn().await?)
                    .await?;
                    let replays = replays.into_iter().map(|(s,)| s).collect();
                    queues.push(WebhookQueue { endpoint_id, org_id, delivered_seq, attempts, failing_since, replays });
                }
                Ok(queues)
            }

            async fn get_event(&mut self, org_id: Uuid, seq: i64) -> StoreResult<Option<Event>> {
                Ok(self.list_events(org_id, seq - 1, 1).await?.into_iter().find(|e| e.seq == seq))
            }

            async fn record_webhook_round(
                &mut self,
                queue: &WebhookQueue,
                holder: &str,
                deliveries: &[WebhookDelivery],
                progress: &WebhookProgress,
            ) -> StoreResult<bool> {
                for d in deliveries {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, endpoint_id, org_id, event_id, event_seq, event_type, \
                         attempt, replay, outcome, status_code, latency_ms, response, at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(d.id.to_string())
                    .bind(d.endpoint_id.to_string())
                    .bind(d.org_id.to_string())
                    .bind(d.event_id.to_string())
                    .bind(d.event_seq)
                    .bind(&d.event_type)
                    .bind(d.attempt)
                    .bind(d.replay)
                    .bind(d.outcome.as_str())
                    .bind(d.status_code)
                    .bind(d.latency_ms)
                    .bind(&d.response)
                    .bind(d.at)
                    .execute(self.conn().await?)
                    .await?;
                }
                let (endpoint, org) = (queue.endpoint_id.to_string(), queue.org_id.to_string());
                if !progress.replays_done.is_empty() {
                    let sql = format!(
                        "DELETE FROM webhook_replays WHERE endpoint_id = $1 AND org_id = $2 AND seq IN ({})",
                        placeholders(3, progress.replays_done.len())
                    );
                    let mut query = sqlx::query(&sql).bind(&endpoint).bind(&org);
                    for seq in &progress.replays_done {
                        query = query.bind(*seq);
                    }
                    query.execute(self.conn().await?).await?;
                }
                // A rewind while the round ran (the head moved) stands.
                let done = sqlx::query(
                    "UPDATE webhook_queues SET \
                     delivered_seq = CASE WHEN delivered_seq = $4 THEN $5 ELSE delivered_seq END, \
                     attempts = CASE WHEN delivered_seq = $4 THEN $6 ELSE 0 END, \
                     failing_since = CASE WHEN delivered_seq = $4 THEN $7 ELSE NULL END, \
                     next_attempt_at = $8, claimed_by = NULL, claimed_until = NULL \
                     WHERE endpoint_id = $1 AND org_id = $2 AND claimed_by = $3",
                )
                .bind(&endpoint)
                .bind(&org)
                .bind(holder)
                .bind(queue.delivered_seq)
                .bind(progress.delivered_seq)
                .bind(progress.attempts)
                .bind(progress.failing_since)
                .bind(progress.next_attempt_at)
                .execute(self.conn().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_webhook_deliveries(
                &mut self,
                endpoint_id: Uuid,
                before: Option<Uuid>,
                limit: i64,
            ) -> StoreResult<Vec<WebhookDelivery>> {
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 \
                     AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
                );
                sqlx::query_as::<_, DeliveryRow>(&sql)
                    .bind(endpoint_id.to_string())
                    .bind(before.map(|b| b.to_string()))
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(DeliveryRow::into_model)
                    .collect()
            }

            async fn get_webhook_delivery(
                &mut self,
                endpoint_id: Uuid,
                id: Uuid,
            ) -> StoreResult<Option<WebhookDelivery>> {
                let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 AND id = $2");
                sqlx::query_as::<_, DeliveryRow>(&sql)
                    .bind(endpoint_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(DeliveryRow::into_model)
                    .transpose()
            }

            async fn purge_webhook_deliveries(&mut self, before: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM webhook_deliveries WHERE at < $1")
                    .bind(before)
                    .execute(self.conn().await?)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn claim_job_run(
                &mut self,
                name: &str,
                holder: &str,
                now: DateTime<Utc>,
                next_at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE leases.expires_at <= $4",
                )
                .bind(name)
                .bind(holder)
                .bind(next_at)
                .bind(now)
                .execute(self.conn().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_job_run(&mut self, r: &JobRun) -> StoreResult<()> {
                sqlx::query("INSERT INTO job_runs (id, job, holder, started_at, summary) VALUES ($1, $2, $3, $4, $5)")
                    .bind(r.id.to_string())
                    .bind(&r.job)
                    .bind(&r.holder)
                    .bind(r.started_at)
                    .bind(r.summary.as_ref().map(sqlx::types::Json))
                    .execute(self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn list_job_runs(&mut self, job: &str, limit: i64) -> StoreResult<Vec<JobRun>> {
                let rows: Vec<(String, String, String, DateTime<Utc>, Option<sqlx::types::Json<serde_json::Value>>)> =
                    sqlx::query_as(
                        "SELECT id, job, holder, started_at, summary FROM job_runs WHERE job = $1 \
                         ORDER BY started_at DESC, id DESC LIMIT $2",
                    )
                    .bind(job)
                    .bind(limit)
                    .fetch_all(self.conn().await?)
                    .await?;
                rows.into_iter()
                    .map(|(id, job, holder, started_at, summary)| {
                        Ok(JobRun { id: uuid("job_runs.id", &id)?, job, holder, started_at, summary: summary.map(|s| s.0) })
                    })
                    .collect()
            }

            async fn members_by_ids(&mut self, org_id: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Member>> {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "{MEMBER_SELECT} WHERE m.id IN ({}) AND {ORG_CHECKED} ORDER BY m.id",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, MemberRow>(&sql).bind(org_id.to_string());
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for row in query.fetch_all(self.conn().await?).await? {
                        out.push(row.into_model()?);
                    }
                }
                Ok(out)
            }

            async fn current_members(&mut self, org_id: Uuid) -> StoreResult<Vec<Member>> {
                let sql = format!("{MEMBER_SELECT} WHERE m.org_id = $1 AND m.status <> 'deprovisioned' ORDER BY m.id");
                // Row by row: the reconciler reads every member of the
                // organization, and holding their rows beside their models
                // doubled its memory.
                let mut rows = sqlx::query_as::<_, MemberRow>(&sql).bind(org_id.to_string()).fetch(self.conn().await?);
                let mut members = Vec::new();
                while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                    members.push(row.into_model()?);
                }
                Ok(members)
            }

            async fn member_links(
                &mut self,
                org_id: Uuid,
                ids: Option<&[Uuid]>,
                now: DateTime<Utc>,
            ) -> StoreResult<std::collections::HashMap<Uuid, MemberLinks>> {
                let mut links: std::collections::HashMap<Uuid, MemberLinks> = std::collections::HashMap::new();
                // The SCIM Users of the members asked about. A whole
                // organization's are read one row at a time: a reconcile reads
                // every member's, and holding all the rows beside the links
                // they become doubled its memory.
                let mut member_of_user = std::collections::HashMap::new();
                let roles = "r.resource -> 'roles'";
                match ids {
                    None => {
                        let sql = format!(
                            "SELECT r.member_id, r.id, r.active, {roles} FROM scim_users r WHERE r.org_id = $1"
                        );
                        let mut rows = sqlx::query_as(&sql).bind(org_id.to_string()).fetch(self.conn().await?);
                        while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                            link_scim_user(&mut links, &mut member_of_user, row)?;
                        }
                    }
                    Some(ids) => {
                        for chunk in ids.chunks(ID_CHUNK) {
                            let sql = format!(
                                "SELECT r.member_id, r.id, r.active, {roles} FROM scim_users r \
                                 WHERE r.org_id = $1 AND r.member_id IN ({})",
                                placeholders(2, chunk.len())
                            );
                            let mut query = sqlx::query_as(&sql).bind(org_id.to_string());
                            for id in chunk {
                                query = query.bind(id.to_string());
                            }
                            for row in query.fetch_all(self.conn().await?).await? {
                                link_scim_user(&mut links, &mut member_of_user, row)?;
                            }
                        }
                    }
                }
                // Their groups.
                let user_ids: Vec<Uuid> = member_of_user.keys().copied().collect();
                let group_select = "SELECT gm.user_id, g.display_name, g.external_id FROM scim_group_members gm \
                    JOIN scim_groups g ON g.id = gm.group_id";
                match ids {
                    None => {
                        let sql = format!("{group_select} WHERE gm.org_id = $1");
                        let mut rows = sqlx::query_as(&sql).bind(org_id.to_string()).fetch(self.conn().await?);
                        while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                            link_group(&mut links, &member_of_user, row)?;
                        }
                    }
                    Some(_) => {
                        for chunk in user_ids.chunks(ID_CHUNK) {
                            let sql = format!("{group_select} WHERE gm.user_id IN ({})", placeholders(1, chunk.len()));
                            let mut query = sqlx::query_as(&sql);
                            for id in chunk {
                                query = query.bind(id.to_string());
                            }
                            for row in query.fetch_all(self.conn().await?).await? {
                                link_group(&mut links, &member_of_user, row)?;
                            }
                        }
                    }
                }
                // Live sessions: of the members named (their own index), or of the organization.
                let live = "SELECT member_id, COUNT(*) FROM sso_sessions WHERE ended_at IS NULL AND expires_at > $1";
                let mut sessions: Vec<(String, i64)> = Vec::new();
                match ids {
                    None => {
                        let sql = format!("{live} AND org_id = $2 GROUP BY member_id");
                        sessions =
                            sqlx::query_as(&sql).bind(now).bind(org_id.to_string()).fetch_all(self.conn().await?).await?;
                    }
                    Some(ids) => {
                        for chunk in ids.chunks(ID_CHUNK) {
                            let sql = format!(
                                "{live} AND member_id IN ({}) GROUP BY member_id",
                                placeholders(2, chunk.len())
                            );
                            let mut query = sqlx::query_as(&sql).bind(now);
                            for id in chunk {
                                query = query.bind(id.to_string());
                            }
                            sessions.extend(query.fetch_all(self.conn().await?).await?);
                        }
                    }
                }
                for (member, n) in sessions {
                    links.entry(uuid("sso_sessions.member_id", &member)?).or_default().live_sessions = n;
                }
                for l in links.values_mut() {
                    l.groups.sort_by(|a, b| a.display_name.cmp(&b.display_name));
                }
                Ok(links)
            }

            async fn member_ids_of_group(&mut self, group_id: Uuid) -> StoreResult<Vec<Uuid>> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT r.member_id FROM scim_group_members gm JOIN scim_users r ON r.id = gm.user_id \
                     WHERE gm.group_id = $1",
                )
                .bind(group_id.to_string())
                .fetch_all(self.conn().await?)
                .await?;
                rows.into_iter().map(|(id,)| uuid("scim_users.member_id", &id)).collect()
            }

            async fn member_ids_of_scim_users(&mut self, org_id: Uuid, user_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
                let mut out = Vec::with_capacity(user_ids.len());
                for chunk in user_ids.chunks(ID_CHUNK) {
                    let sql = format!(
                        "SELECT member_id FROM scim_users WHERE org_id = $1 AND id IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(org_id.to_string());
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for (id,) in query.fetch_all(self.conn().await?).await? {
                        out.push(uuid("scim_users.member_id", &id)?);
                    }
                }
                Ok(out)
            }

            async fn list_role_mappings(&mut self, org_id: Uuid) -> StoreResult<Vec<RoleMapping>> {
                let sql = format!(
                    "SELECT {ROLE_MAPPING_COLUMNS} FROM role_mappings WHERE org_id = $1 ORDER BY source, value_lc"
                );
                sqlx::query_as::<_, RoleMappingRow>(&sql)
                    .bind(org_id.to_string())
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(RoleMappingRow::into_model)
                    .collect()
            }

            async fn insert_role_mapping(&mut self, m: &RoleMapping) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO role_mappings (id, org_id, source, value, value_lc, role, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(m.id.to_string())
                .bind(m.org_id.to_string())
                .bind(m.source.as_str())
                .bind(&m.value)
                .bind(m.value.to_lowercase())
                .bind(m.role.as_str())
                .bind(&m.created_by)
                .bind(m.created_at)
                .execute(self.conn().await?)
                .await?;
                Ok(())
            }

            async fn delete_role_mapping(&mut self, org_id: Uuid, id: Uuid) -> StoreResult<Option<RoleMapping>> {
                let sql = format!("DELETE FROM role_mappings WHERE org_id = $1 AND id = $2 RETURNING {ROLE_MAPPING_COLUMNS}");
                sqlx::query_as::<_, RoleMappingRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(RoleMappingRow::into_model)
                    .transpose()
            }

            async fn pending_invitations(&mut self, org_id: Uuid) -> StoreResult<Vec<Invitation>> {
                let sql = format!(
                    "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 AND status = 'pending' \
                     ORDER BY created_at, id"
                );
                sqlx::query_as::<_, InvitationRow>(&sql)
                    .bind(org_id.to_string())
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(InvitationRow::into_model)
                    .collect()
            }

            async fn find_invitation_by_token(&mut self, token_hash: &str) -> StoreResult<Option<Invitation>> {
                let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1");
                sqlx::query_as::<_, InvitationRow>(&sql)
                    .bind(token_hash)
                    .fetch_optional(self.conn().await?)
                    .await?
                    .map(InvitationRow::into_model)
                    .transpose()
            }

            async fn set_invitation_token(&mut self, org_id: Uuid, id: Uuid, token_hash: &str) -> StoreResult<()> {
                sqlx::query("UPDATE invitations SET token_hash = $3 WHERE org_id = $1 AND id = $2")
                    .bind(org_id.to_string())
                    .bind(id.to_string())
                    .bind(token_hash)
                    .execute(self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn list_audit(&mut self, org_id: Uuid, f: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
                let sql = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE org_id = $1 \
                     AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR actor_id = $3) \
                     AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) AND ($6 IS NULL OR seq < $6) \
                     ORDER BY seq DESC LIMIT $7"
                );
                sqlx::query_as::<_, AuditRow>(&sql)
                    .bind(org_id.to_string())
                    .bind(f.action.as_deref())
                    .bind(f.actor_id.as_deref())
                    .bind(f.since)
                    .bind(f.until)
                    .bind(f.before)
                    .bind(f.limit)
                    .fetch_all(self.conn().await?)
                    .await?
                    .into_iter()
                    .map(AuditRow::into_model)
                    .collect()
            }
        }
    };
}

pub(super) use impl_tx;

#[cfg(test)]
mod tests {
    use super::{shift_parameters, time};

    #[test]
    fn timestamps_read_from_json_text_as_sqlite_stores_them() {
        let at = |s: &str| time("t", s).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        let cases = [
            ("2026-12-07T02:48:42.729123+00:00", "2026-12-07T02:48:42.729123Z"),
            ("2026-12-07T03:48:42.7+01:00", "2026-12-07T02:48:42.700000Z"),
            ("2026-12-07T02:48:42Z", "2026-12-07T02:48:42.000000Z"),
            ("2026-12-07 02:48:42.5", "2026-12-07T02:48:42.500000Z"),
            ("2026-12-07 02:48:42", "2026-12-07T02:48:42.000000Z"),
            ("2026-12-07 02:48:42+00:00", "2026-12-07T02:48:42.000000Z"),
        ];
        for (stored, read) in cases {
            assert_eq!(at(stored).unwrap(), read, "{stored}");
        }
        for bad in ["", "yesterday", "2026-13-07 02:48:42", "2026-12-07"] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deferred_statements_number_their_parameters_after_those_before() {
        assert_eq!(shift_parameters("VALUES ($1, $2, $10)", 0), "VALUES ($1, $2, $10)");
        assert_eq!(shift_parameters("VALUES ($1, $2, $10)", 12), "VALUES ($13, $14, $22)");
        // A `$` in a literal, or with no number, is left alone.
        assert_eq!(
            shift_parameters("SELECT json_extract(r, '$.a$1') WHERE x = $2 AND y = '$'", 3),
            "SELECT json_extract(r, '$.a$1') WHERE x = $5 AND y = '$'"
        );
        assert_eq!(shift_parameters("a $ b $", 1), "a $ b $");
    }
}
