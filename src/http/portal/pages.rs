//! The portal's pages and forms. Each GET renders a page from what one or
//! two service calls return; each POST calls one service function and
//! renders the page again with its outcome (a notice, or why nothing was
//! changed).

use super::views::{admins_only, capitalized, line_count, render, Frame, Outcome};
use super::{path_id, posted, signed_in, Form, Signed};
use crate::domains::DomainName;
use crate::http::AppState;
use crate::model::*;
use crate::roles::RoleMapping;
use crate::service::*;
use crate::store::{AuditEntry, BillingRequest, Credential, Invitation, Member};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Rows of the "Invite people" form.
const INVITE_ROWS: usize = 5;

type Page = Result<Response, Response>;

fn done(r: Page) -> Response {
    r.unwrap_or_else(|answer| answer)
}

fn when(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map(human_time).unwrap_or_else(|| "—".into())
}

/// The admin-only sections: signed in, and at least Admin (403 otherwise).
async fn admin(s: &AppState, parts: &Parts) -> Result<Signed, Response> {
    let signed = signed_in(s, parts).await?;
    if !signed.admin() {
        return Err(admins_only());
    }
    Ok(signed)
}

/// A posted form of an Owner or Admin.
async fn admin_post(s: &AppState, parts: &Parts, body: &[u8]) -> Result<(Signed, Form), Response> {
    let (signed, form) = posted(s, parts, body).await?;
    if !signed.admin() {
        return Err(admins_only());
    }
    Ok((signed, form))
}

// ---- Home ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/home.html")]
struct HomePage {
    f: Frame,
    email: String,
    sso_enforced: bool,
    seats: Seats,
    plan: &'static str,
    domains_verified: usize,
    domains: usize,
    sso_configured: bool,
    scim_tokens: usize,
    scim_members: i64,
    resources: Vec<crate::config::PortalResource>,
    /// The identity provider set-up checklist (admins only).
    checks: Vec<crate::http::setup::Check>,
}

pub(super) async fn home(State(s): State<AppState>, parts: Parts) -> Response {
    done(
        async {
            let signed = signed_in(&s, &parts).await?;
            let summary = s.roster.portal_home(signed.actor()).await.map_err(|e| super::views::failure(&e))?;
            let checks = if signed.admin() {
                let status = s.roster.setup_status(signed.actor()).await.map_err(|e| super::views::failure(&e))?;
                crate::http::setup::checks(status)
            } else {
                Vec::new()
            };
            let page = HomePage {
                checks,
                f: Frame::new(&signed, "home", "Home"),
                email: signed.session.member.label(),
                sso_enforced: signed.session.org.sso.enforce,
                seats: summary.seats,
                plan: plan_title(signed.session.org.plan),
                domains_verified: summary.domains_verified,
                domains: summary.domains,
                sso_configured: summary.sso_configured,
                scim_tokens: summary.scim_tokens,
                scim_members: summary.scim_members,
                resources: s.config.portal_resources.clone(),
            };
            Ok(render(StatusCode::OK, page.render()))
        }
        .await,
    )
}

pub(super) fn plan_title(plan: Plan) -> &'static str {
    match plan {
        Plan::EnterpriseSeatYearly => "Enterprise Seat Yearly",
        Plan::EnterpriseSeatQuarterly => "Enterprise Seat Quarterly",
        Plan::EnterpriseSeatMonthly => "Enterprise Seat Monthly",
    }
}

// ---- Members ---------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub(super) struct MemberFilters {
    q: Option<String>,
    role: Option<String>,
    status: Option<String>,
    source: Option<String>,
    cursor: Option<String>,
}

struct MemberRow {
    id: String,
    label: String,
    role: &'static str,
    role_reason: String,
    status: String,
    source: String,
    joined: String,
}

struct InvitationRow {
    id: String,
    email: String,
    role: &'static str,
    expires: String,
    delivery: String,
    delivery_failed: bool,
}

struct InviteLine {
    email: String,
    role: String,
}

#[derive(Template)]
#[template(path = "portal/members.html")]
struct MembersPage {
    f: Frame,
    rows: Vec<MemberRow>,
    total: i64,
    seats: Seats,
    seat_percent: i64,
    q: String,
    role: String,
    status: String,
    source: String,
    next: Option<String>,
    invitations: Vec<InvitationRow>,
    invite: Vec<InviteLine>,
}

fn member_row(m: &Member) -> MemberRow {
    MemberRow {
        id: m.id.to_string(),
        label: m.label(),
        role: role_title(m.role),
        role_reason: m.role_reason.clone(),
        status: m.status.to_string(),
        source: m.source.to_string(),
        joined: human_time(m.created_at),
    }
}

fn delivery_text(i: &Invitation) -> (String, bool) {
    match &i.email_delivery {
        None => ("not emailed".into(), false),
        Some(d) => {
            let reply = d.reply.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            match d.status {
                crate::store::MailStatus::Sent => (format!("sent {}", when(d.sent_at)), false),
                crate::store::MailStatus::Failed => (format!("failed{reply}"), true),
                _ if d.attempts > 0 => {
                    (format!("retrying (attempt {}{reply}), next {}", d.attempts, when(d.next_attempt_at)), false)
                }
                _ => ("queued".into(), false),
            }
        }
    }
}

fn parse_filter<T: std::str::FromStr>(raw: Option<&str>) -> Option<T> {
    raw.map(str::trim).filter(|r| !r.is_empty()).and_then(|r| r.parse().ok())
}

async fn members_page(
    s: &AppState,
    signed: &Signed,
    q: MemberFilters,
    outcome: Outcome,
    invite: Vec<InviteLine>,
) -> Page {
    let query = MemberQuery {
        status: parse_filter(q.status.as_deref()),
        role: parse_filter(q.role.as_deref()),
        source: parse_filter(q.source.as_deref()),
        search: q.q.clone(),
        cursor: q.cursor.clone().filter(|c| !c.is_empty()),
        limit: Some(50),
    };
    let fail = |e: ServiceError| super::views::failure(&e);
    let page = s.roster.list_members(signed.actor(), query).await.map_err(fail)?;
    let seats = s.roster.seats(signed.actor()).await.map_err(fail)?;
    let invitations = if signed.admin() {
        let q = InvitationQuery { status: Some(InvitationStatus::Pending), cursor: None, limit: Some(200) };
        s.roster.list_invitations(signed.actor(), q).await.map_err(fail)?.items
    } else {
        Vec::new()
    };
    let next = page.next_cursor.map(|cursor| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("q", &q.q), ("role", &q.role), ("status", &q.status), ("source", &q.source)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(k, v);
            }
        }
        query.append_pair("cursor", &cursor);
        format!("/portal/members?{}", query.finish())
    });
    let mut invite = invite;
    invite.resize_with(INVITE_ROWS.max(invite.len()), || InviteLine { email: String::new(), role: "read".into() });
    let seat_percent = if seats.purchased > 0 { (seats.used * 100 / seats.purchased).min(100) } else { 100 };
    let status = outcome.status();
    let page = MembersPage {
        f: outcome.frame(signed, "members", "Members"),
        rows: page.items.iter().map(member_row).collect(),
        total: page.total,
        seat_percent,
        seats,
        q: q.q.unwrap_or_default(),
        role: q.role.unwrap_or_default(),
        status: q.status.unwrap_or_default(),
        source: q.source.unwrap_or_default(),
        next,
        invitations: invitations
            .iter()
            .map(|i| {
                let (delivery, delivery_failed) = delivery_text(i);
                InvitationRow {
                    id: i.id.to_string(),
                    email: i.email.to_string(),
                    role: role_title(i.role),
                    expires: human_time(i.expires_at),
                    delivery,
                    delivery_failed,
                }
            })
            .collect(),
        invite,
    };
    Ok(render(status, page.render()))
}

pub(super) async fn members(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<MemberFilters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    done(
        async {
            let signed = signed_in(&s, &parts).await?;
            let q = query.map(|q| q.0).unwrap_or_default();
            members_page(&s, &signed, q, Outcome::default(), Vec::new()).await
        }
        .await,
    )
}

/// "Invite people": several addresses, each with a role, all or none.
pub(super) async fn invite(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let lines: Vec<InviteLine> = (0..INVITE_ROWS)
                .map(|i| InviteLine {
                    email: form.get(&format!("email{i}")).unwrap_or("").trim().to_string(),
                    role: form.get(&format!("role{i}")).unwrap_or("read").to_string(),
                })
                .collect();
            // The rows as the CSV upload takes them, numbered as the form shows them.
            let mut csv = String::new();
            for line in &lines {
                if line.email.is_empty() {
                    csv.push('\n');
                } else {
                    csv.push_str(&format!("\"{}\",{}\n", line.email.replace('"', "\"\""), line.role));
                }
            }
            if lines.iter().all(|l| l.email.is_empty()) {
                let e = ServiceError::invalid("the form", "enter at least one email address");
                return members_page(&s, &signed, MemberFilters::default(), Outcome::failed(e), lines).await;
            }
            match s.roster.invite_csv(signed.actor(), csv.as_bytes()).await {
                Ok(created) => {
                    let notice = format!(
                        "Invited {}. Each gets an email with a link to join.",
                        created.iter().map(|c| c.invitation.email.to_string()).collect::<Vec<_>>().join(", ")
                    );
                    members_page(&s, &signed, MemberFilters::default(), Outcome::done(notice), Vec::new()).await
                }
                Err(ServiceError::BulkRejected(errors)) => {
                    // Line numbers are the form's rows.
                    let errors = errors.into_iter().map(|e| LineError { line: e.line, message: e.message }).collect();
                    let e = ServiceError::BulkRejected(errors);
                    members_page(&s, &signed, MemberFilters::default(), Outcome::failed(e), lines).await
                }
                Err(e) => members_page(&s, &signed, MemberFilters::default(), Outcome::failed(e), lines).await,
            }
        }
        .await,
    )
}

#[derive(Template)]
#[template(path = "portal/upload.html")]
struct UploadPage {
    f: Frame,
    rows: Vec<(usize, String, &'static str)>,
    errors: Vec<LineError>,
    seats_free: i64,
    seats_short: i64,
    can_send: bool,
    csv: String,
}

/// The CSV upload (`email,role`): a preview of every line, its problems
/// and the seats it needs; nothing is sent yet.
pub(super) async fn upload(
    State(s): State<AppState>,
    parts: Parts,
    multipart: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    done(
        async {
            let signed = signed_in(&s, &parts).await?;
            let mut multipart = multipart.map_err(|_| {
                super::views::refused(
                    StatusCode::BAD_REQUEST,
                    "No file",
                    "Choose a CSV file of `email,role` lines to upload.",
                )
            })?;
            let (mut csrf, mut file) = (String::new(), Vec::new());
            while let Ok(Some(field)) = multipart.next_field().await {
                match field.name() {
                    Some("csrf") => csrf = field.text().await.unwrap_or_default(),
                    Some("file") => file = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                    _ => {}
                }
            }
            // The same checks as any form, with the token from the multipart body.
            let check = format!("csrf={}", url::form_urlencoded::byte_serialize(csrf.as_bytes()).collect::<String>());
            let (signed, _) = posted(&s, &parts, check.as_bytes()).await.map(|(_, f)| (signed, f))?;
            if !signed.admin() {
                return Err(admins_only());
            }
            let preview = match s.roster.preview_invitations(signed.actor(), &file).await {
                Ok(p) => p,
                Err(e) => {
                    return members_page(&s, &signed, MemberFilters::default(), Outcome::failed(e), Vec::new()).await
                }
            };
            let csv = String::from_utf8_lossy(&file).into_owned();
            let mut f = Frame::new(&signed, "members", "Upload invitations");
            if preview.rows.is_empty() && preview.errors.is_empty() {
                f.problem = Some("The file has no `email,role` lines.".into());
            } else if !preview.errors.is_empty() {
                f.problem = Some(format!(
                    "{} cannot be accepted. Nothing was sent; fix the file and upload it again.",
                    line_count(preview.errors.len())
                ));
            } else if preview.seats_short() > 0 {
                f.problem = Some(format!(
                    "These invitations need {} seats and {} are free: {} short. Nothing was sent; add seats on the \
                 Billing page or invite fewer people.",
                    preview.rows.len(),
                    preview.seats_free.max(0),
                    preview.seats_short()
                ));
            }
            let status = if preview.can_send() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
            let page = UploadPage {
                rows: preview.rows.iter().map(|r| (r.line, r.email.to_string(), role_title(r.role))).collect(),
                seats_free: preview.seats_free.max(0),
                seats_short: preview.seats_short(),
                can_send: preview.can_send(),
                errors: preview.errors,
                csv,
                f,
            };
            Ok(render(status, page.render()))
        }
        .await,
    )
}

/// Sends a previewed upload: all or nothing, checked again.
pub(super) async fn upload_send(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let csv = form.get("csv").unwrap_or("");
            let outcome = match s.roster.invite_csv(signed.actor(), csv.as_bytes()).await {
                Ok(created) => Outcome::done(format!("Sent {} invitations.", created.len())),
                Err(e) => Outcome::failed(e),
            };
            members_page(&s, &signed, MemberFilters::default(), outcome, Vec::new()).await
        }
        .await,
    )
}

#[derive(Template)]
#[template(path = "portal/member.html")]
struct MemberPage {
    f: Frame,
    m: MemberRow,
    active: bool,
    suspended: bool,
    pinned: bool,
    manual_role: String,
    role_value: &'static str,
    owner: bool,
}

async fn member_page(s: &AppState, signed: &Signed, id: uuid::Uuid, outcome: Outcome) -> Page {
    let m = s.roster.member(signed.actor(), id).await.map_err(|e| super::views::failure(&e))?;
    let status = outcome.status();
    let page = MemberPage {
        f: outcome.frame(signed, "members", &m.label()),
        active: m.status == MemberStatus::Active,
        suspended: m.status == MemberStatus::Suspended,
        pinned: m.role_pinned,
        manual_role: m.manual_role.map(|r| role_title(r).to_string()).unwrap_or_else(|| "none".into()),
        role_value: m.role.as_str(),
        owner: signed.actor().role == Role::Owner,
        m: member_row(&m),
    };
    Ok(render(status, page.render()))
}

pub(super) async fn member(State(s): State<AppState>, parts: Parts, id: Path<String>) -> Response {
    done(
        async {
            let signed = signed_in(&s, &parts).await?;
            let id = path_id(&id).await?;
            member_page(&s, &signed, id, Outcome::default()).await
        }
        .await,
    )
}

/// Role, suspend, reactivate, remove.
pub(super) async fn member_action(
    State(s): State<AppState>,
    parts: Parts,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&Path(id)).await?;
            let a = signed.actor();
            let result = match action.as_str() {
                "role" => {
                    let role = form.text("role").and_then(|r| r.parse::<Role>().ok());
                    let managed_by = match form.get("managed_by") {
                        Some("idp") => RoleManager::Idp,
                        _ => RoleManager::Admin,
                    };
                    match role {
                        None => Err(ServiceError::invalid("role", "choose a role")),
                        Some(role) => s
                            .roster
                            .assign_role(a, id, RoleAssignment { role: Some(role), managed_by: Some(managed_by) })
                            .await
                            .map(|m| format!("{} is now {} ({}).", m.label(), role_title(m.role), m.role_reason)),
                    }
                }
                "suspend" => s.roster.suspend_member(a, id).await.map(|m| format!("{} is suspended.", m.label())),
                "reactivate" => {
                    s.roster.reactivate_member(a, id).await.map(|m| format!("{} is active again.", m.label()))
                }
                "remove" => match s.roster.remove_member(a, id).await {
                    Ok(m) => {
                        let notice = format!("{} was removed from the organization.", m.label());
                        return members_page(&s, &signed, MemberFilters::default(), Outcome::done(notice), Vec::new())
                            .await;
                    }
                    Err(e) => Err(e),
                },
                _ => return Err(super::views::failure(&ServiceError::NotFound("page"))),
            };
            let outcome = result.map_or_else(Outcome::failed, Outcome::done);
            member_page(&s, &signed, id, outcome).await
        }
        .await,
    )
}

/// Resend or revoke a pending invitation.
pub(super) async fn invitation_action(
    State(s): State<AppState>,
    parts: Parts,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&Path(id)).await?;
            let result = match action.as_str() {
                "resend" => s
                    .roster
                    .resend_invitation(signed.actor(), id)
                    .await
                    .map(|c| format!("Sent the invitation to {} again.", c.invitation.email)),
                "revoke" => s
                    .roster
                    .revoke_invitation(signed.actor(), id)
                    .await
                    .map(|i| format!("Revoked the invitation of {}; its seat is free.", i.email)),
                _ => return Err(super::views::failure(&ServiceError::NotFound("page"))),
            };
            let outcome = result.map_or_else(Outcome::failed, Outcome::done);
            members_page(&s, &signed, MemberFilters::default(), outcome, Vec::new()).await
        }
        .await,
    )
}

// ---- Billing ---------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/billing.html")]
struct BillingPage {
    f: Frame,
    plans: Vec<(&'static str, &'static str, bool)>,
    seats: Seats,
    contact: String,
    /// Whether seats and plan change at once, or by request to the operator.
    self_serve: bool,
    requests: Vec<RequestRow>,
}

/// A billing request as the Billing page lists it.
struct RequestRow {
    id: String,
    what: String,
    status: &'static str,
    /// When it was asked, and the answer's reason if any.
    detail: String,
    pending: bool,
}

fn request_row(r: &BillingRequest) -> RequestRow {
    let mut what = Vec::new();
    if let Some(n) = r.purchased {
        what.push(format!("{n} seats"));
    }
    if let Some(policy) = r.seat_policy {
        what.push(format!("seat policy {policy}"));
    }
    if let Some(plan) = r.plan {
        what.push(format!("plan {}", plan_title(plan)));
    }
    let mut detail = format!("Asked {} by {}", r.created_at.format("%Y-%m-%d %H:%M UTC"), r.requested_by);
    if let Some(reason) = &r.reason {
        detail.push_str(&format!(". {}", capitalized(reason)));
    }
    RequestRow {
        id: r.id.to_string(),
        what: what.join(", "),
        status: match r.status {
            BillingRequestStatus::Pending => "Waiting for approval",
            BillingRequestStatus::Approved => "Approved",
            BillingRequestStatus::Rejected => "Rejected",
            BillingRequestStatus::Cancelled => "Withdrawn",
        },
        detail,
        pending: r.status == BillingRequestStatus::Pending,
    }
}

async fn billing_page(s: &AppState, signed: &Signed, outcome: Outcome) -> Page {
    let fail = |e: ServiceError| super::views::failure(&e);
    let org = s.roster.organization(signed.actor()).await.map_err(fail)?;
    let seats = s.roster.seats(signed.actor()).await.map_err(fail)?;
    let plans = [Plan::EnterpriseSeatYearly, Plan::EnterpriseSeatQuarterly, Plan::EnterpriseSeatMonthly]
        .into_iter()
        .map(|p| (p.as_str(), plan_title(p), p == org.plan))
        .collect();
    let requests = s.roster.billing_requests(signed.actor()).await.map_err(fail)?;
    let status = outcome.status();
    let page = BillingPage {
        f: outcome.frame(signed, "billing", "Billing"),
        plans,
        seats,
        contact: org.contact_email.unwrap_or_default(),
        self_serve: s.roster.self_serve_seats(),
        requests: requests.iter().take(5).map(request_row).collect(),
    };
    Ok(render(status, page.render()))
}

pub(super) async fn billing(State(s): State<AppState>, parts: Parts) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            billing_page(&s, &signed, Outcome::default()).await
        }
        .await,
    )
}

struct PlannedRow {
    what: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "portal/seats_plan.html")]
struct SeatsPlanPage {
    f: Frame,
    purchased: i64,
    used: i64,
    used_after: i64,
    overage_after: i64,
    changes: Vec<PlannedRow>,
    kept: Vec<String>,
    fingerprint: String,
}

fn planned_row(c: &PlannedChange) -> PlannedRow {
    let who = |e: &Option<Email>, id: &uuid::Uuid| e.as_ref().map_or_else(|| format!("member {id}"), |e| e.to_string());
    let (what, reason) = match c {
        PlannedChange::ExpireInvitation { email, reason, .. } => (format!("Expire the invitation of {email}"), reason),
        PlannedChange::RevokeInvitation { email, reason, .. } => (format!("Revoke the invitation of {email}"), reason),
        PlannedChange::SuspendMember { member, email, role, reason } => {
            (format!("Suspend {} ({})", who(email, member), role_title(*role)), reason)
        }
        PlannedChange::ChangeRole { member, email, from, to, reason, .. } => {
            (format!("Change {} from {} to {}", who(email, member), role_title(*from), role_title(*to)), reason)
        }
        PlannedChange::EndSessions { member, email, reason, .. } => {
            (format!("End the sessions of {}", who(email, member)), reason)
        }
    };
    PlannedRow { what, reason: reason.clone() }
}

fn seats_field(form: &Form) -> Result<i64, ServiceError> {
    form.text("purchased")
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(|| ServiceError::invalid("seats", "enter a whole number of seats"))
}

/// A new number of seats: applied at once, unless it is below the seats
/// in use; then the plan of who would lose a seat comes first.
pub(super) async fn change_seats(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let purchased = match seats_field(&form) {
                Ok(p) => p,
                Err(e) => return billing_page(&s, &signed, Outcome::failed(e)).await,
            };
            let seats = s.roster.seats(signed.actor()).await.map_err(|e| super::views::failure(&e))?;
            // By request, the operator reviews what a decrease would cut.
            if purchased >= seats.used || !s.roster.self_serve_seats() {
                let change = SeatsChange { purchased, policy: None, enforcement: None };
                let outcome = match s.roster.set_seats(signed.actor(), change).await {
                    Ok(SeatsOutcome::Changed(seats)) => {
                        Outcome::done(format!("The organization now has {} seats.", seats.purchased))
                    }
                    Ok(SeatsOutcome::Requested(_)) => Outcome::done(format!(
                        "Requested {purchased} seats. They take effect once the request is approved."
                    )),
                    Err(e) => Outcome::failed(e),
                };
                return billing_page(&s, &signed, outcome).await;
            }
            let plan = match s.roster.preview_seats(signed.actor(), purchased).await {
                Ok(plan) => plan,
                Err(e) => return billing_page(&s, &signed, Outcome::failed(e)).await,
            };
            let page = SeatsPlanPage {
                f: Frame::new(&signed, "billing", "Review the seat change"),
                purchased,
                used: plan.seats.used,
                used_after: plan.seats.used_after,
                overage_after: plan.seats.overage_after,
                changes: plan.changes.iter().map(planned_row).collect(),
                kept: plan.kept.clone(),
                fingerprint: plan.fingerprint.clone(),
            };
            Ok(render(StatusCode::OK, page.render()))
        }
        .await,
    )
}

/// Applies a reviewed seat decrease and its plan.
pub(super) async fn apply_seats(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let outcome = match seats_field(&form) {
                Err(e) => Outcome::failed(e),
                Ok(purchased) => {
                    let fingerprint = form.get("fingerprint").unwrap_or("");
                    match s.roster.set_seats_and_apply(signed.actor(), purchased, fingerprint).await {
                        Ok(outcome) => Outcome::done(format!(
                            "The organization now has {purchased} seats; {} change(s) applied.",
                            outcome.applied.changes.len()
                        )),
                        Err(e) => Outcome::failed(e),
                    }
                }
            };
            billing_page(&s, &signed, outcome).await
        }
        .await,
    )
}

/// Withdraws the organization's pending billing request.
pub(super) async fn withdraw_request(
    State(s): State<AppState>,
    parts: Parts,
    id: Path<String>,
    body: Bytes,
) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&id).await?;
            let outcome = s
                .roster
                .cancel_billing_request(signed.actor(), id)
                .await
                .map_or_else(Outcome::failed, |_| Outcome::done("Withdrew the request."));
            billing_page(&s, &signed, outcome).await
        }
        .await,
    )
}

pub(super) async fn change_plan(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let plan = form.text("plan").and_then(|p| p.parse::<Plan>().ok());
            let contact = form.get("contact_email").map(str::trim);
            let outcome = match (plan, contact) {
                (Some(plan), _) => {
                    let change = OrganizationChange { plan: Some(plan), ..Default::default() };
                    s.roster.update_organization(signed.actor(), change).await.map_or_else(Outcome::failed, |o| match o
                    {
                        (_, Some(_)) => Outcome::done(format!(
                            "Requested the {} plan. It takes effect once the request is approved.",
                            plan_title(plan)
                        )),
                        (o, None) => Outcome::done(format!("The plan is now {}.", plan_title(o.plan))),
                    })
                }
                (None, Some(contact)) => match contact_change(contact) {
                    Err(e) => Outcome::failed(e),
                    Ok(change) => s
                        .roster
                        .update_organization(signed.actor(), change)
                        .await
                        .map_or_else(Outcome::failed, |_| Outcome::done("Saved the billing contact.")),
                },
                (None, None) => Outcome::failed(ServiceError::invalid("plan", "choose a plan")),
            };
            billing_page(&s, &signed, outcome).await
        }
        .await,
    )
}

fn contact_change(contact: &str) -> Result<OrganizationChange, ServiceError> {
    let contact_email = match contact {
        "" => None,
        c => Some(Email::parse(c).map_err(|e| ServiceError::invalid("contact email", e.0))?),
    };
    Ok(OrganizationChange { contact_email: Some(contact_email), ..Default::default() })
}

// ---- Settings: general and features -----------------------------------------

#[derive(Template)]
#[template(path = "portal/settings.html")]
struct SettingsPage {
    f: Frame,
    name: String,
    contact: String,
    external_cloud: bool,
    analytics: bool,
}

async fn settings_page(s: &AppState, signed: &Signed, outcome: Outcome) -> Page {
    let org = s.roster.organization(signed.actor()).await.map_err(|e| super::views::failure(&e))?;
    let status = outcome.status();
    let page = SettingsPage {
        f: outcome.frame(signed, "settings", "Settings"),
        name: org.name,
        contact: org.contact_email.unwrap_or_default(),
        external_cloud: org.features.external_cloud,
        analytics: org.features.analytics,
    };
    Ok(render(status, page.render()))
}

pub(super) async fn settings(State(s): State<AppState>, parts: Parts) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            settings_page(&s, &signed, Outcome::default()).await
        }
        .await,
    )
}

pub(super) async fn change_general(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let change = (|| {
                let name =
                    Name::parse(form.get("name").unwrap_or("")).map_err(|e| ServiceError::invalid("name", e.0))?;
                let mut change = contact_change(form.get("contact_email").unwrap_or("").trim())?;
                change.name = Some(name);
                Ok::<_, ServiceError>(change)
            })();
            let outcome = match change {
                Err(e) => Outcome::failed(e),
                Ok(change) => match s.roster.update_organization(signed.actor(), change).await {
                    Ok(_) => Outcome::done("Saved."),
                    Err(e) => Outcome::failed(e),
                },
            };
            // The frame shows the organization's name as it is now.
            let signed = signed_in(&s, &parts).await?;
            settings_page(&s, &signed, outcome).await
        }
        .await,
    )
}

pub(super) async fn change_features(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let features = crate::store::Features {
                external_cloud: form.checked("external_cloud"),
                analytics: form.checked("analytics"),
            };
            let outcome = s
                .roster
                .set_features(signed.actor(), features)
                .await
                .map_or_else(Outcome::failed, |_| Outcome::done("Saved the features."));
            settings_page(&s, &signed, outcome).await
        }
        .await,
    )
}

// ---- Settings: domains -------------------------------------------------------

/// A domain as the portal's and the set-up pages' domain lists show it.
pub(in crate::http) struct DomainRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub record_name: String,
    pub record_value: String,
    pub checked: String,
    pub last_result: String,
}

impl From<DomainView> for DomainRow {
    fn from(d: DomainView) -> Self {
        DomainRow {
            id: d.domain.id.to_string(),
            status: d.domain.status.to_string(),
            checked: when(d.domain.checked_at),
            last_result: d.domain.last_result.unwrap_or_default(),
            name: d.domain.name,
            record_name: d.record.name,
            record_value: d.record.value,
        }
    }
}

#[derive(Template)]
#[template(path = "portal/domains.html")]
struct DomainsPage {
    f: Frame,
    domains: Vec<DomainRow>,
    name: String,
}

async fn domains_page(s: &AppState, signed: &Signed, outcome: Outcome, name: String) -> Page {
    let list = s.roster.list_domains(signed.actor()).await.map_err(|e| super::views::failure(&e))?;
    let status = outcome.status();
    let page = DomainsPage {
        f: outcome.frame(signed, "settings", "Domains"),
        domains: list.into_iter().map(DomainRow::from).collect(),
        name,
    };
    Ok(render(status, page.render()))
}

pub(super) async fn domains(State(s): State<AppState>, parts: Parts) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            domains_page(&s, &signed, Outcome::default(), String::new()).await
        }
        .await,
    )
}

pub(super) async fn add_domain(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let raw = form.get("name").unwrap_or("").trim().to_string();
            let result = match DomainName::parse(&raw) {
                Err(e) => Err(ServiceError::invalid("domain", e)),
                Ok(name) => s.roster.add_domain(signed.actor(), name).await,
            };
            match result {
                Ok(d) => {
                    let notice = format!(
                        "Added {}. Publish the TXT record below at your DNS provider, then press Verify now.",
                        d.domain.name
                    );
                    domains_page(&s, &signed, Outcome::done(notice), String::new()).await
                }
                Err(e) => domains_page(&s, &signed, Outcome::failed(e), raw).await,
            }
        }
        .await,
    )
}

pub(super) async fn domain_action(
    State(s): State<AppState>,
    parts: Parts,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&Path(id)).await?;
            let outcome = match action.as_str() {
                "verify" => match s.roster.verify_domain(signed.actor(), id).await {
                    Ok(check) if check.domain.domain.status == DomainStatus::Verified => {
                        Outcome::done(format!("{} is verified.", check.domain.domain.name))
                    }
                    Ok(check) => {
                        let found = if check.found.is_empty() {
                            String::new()
                        } else {
                            format!(" DNS showed: {}.", check.found.join(", "))
                        };
                        Outcome::failed(ServiceError::Conflict(format!(
                            "{} is not verified yet. {}{found}",
                            check.domain.domain.name, check.message
                        )))
                    }
                    Err(e) => Outcome::failed(e),
                },
                "remove" => s
                    .roster
                    .remove_domain(signed.actor(), id)
                    .await
                    .map_or_else(Outcome::failed, |_| Outcome::done("Removed the domain.")),
                _ => return Err(super::views::failure(&ServiceError::NotFound("page"))),
            };
            domains_page(&s, &signed, outcome, String::new()).await
        }
        .await,
    )
}

// ---- Settings: single sign-on ------------------------------------------------

#[derive(Template)]
#[template(path = "portal/sso.html")]
struct SsoPage {
    f: Frame,
    tenant_id: String,
    enforce: bool,
    auto_assign: bool,
    default_role: &'static str,
    connection: Option<DirectConnectionView>,
    callback_url: String,
    clients: Vec<crate::store::SsoClient>,
    /// A client created just now, with its secret (shown once).
    created: Option<(String, String)>,
}

async fn sso_page(s: &AppState, signed: &Signed, outcome: Outcome, created: Option<(String, String)>) -> Page {
    let fail = |e: ServiceError| super::views::failure(&e);
    let org = s.roster.organization(signed.actor()).await.map_err(fail)?;
    let connection = match s.roster.sso_connection(signed.actor()).await {
        Ok(c) => Some(c),
        Err(ServiceError::NotFound(_)) => None,
        Err(e) => return Err(fail(e)),
    };
    let clients = s.roster.list_sso_clients(Some(signed.actor())).await.map_err(fail)?;
    let status = outcome.status();
    let page = SsoPage {
        f: outcome.frame(signed, "settings", "Single sign-on"),
        tenant_id: org.sso.tenant_id.as_ref().map(|t| t.as_str().to_string()).unwrap_or_default(),
        enforce: org.sso.enforce,
        auto_assign: org.sso.auto_assign,
        default_role: org.sso.default_role.as_str(),
        connection,
        callback_url: s.config.public_base_url.join("sso/callback").map(|u| u.to_string()).unwrap_or_default(),
        clients: clients.into_iter().filter(|c| c.revoked_at.is_none()).collect(),
        created,
    };
    Ok(render(status, page.render()))
}

pub(super) async fn sso(State(s): State<AppState>, parts: Parts) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            sso_page(&s, &signed, Outcome::default(), None).await
        }
        .await,
    )
}

pub(super) async fn change_sso(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let change = (|| {
                let tenant_id = match form.text("tenant_id") {
                    None => None,
                    Some(t) => Some(TenantId::parse(t).map_err(|e| ServiceError::invalid("tenant ID", e.0))?),
                };
                let default_role = form
                    .text("default_role")
                    .map(|r| r.parse::<Role>().map_err(|e| ServiceError::invalid("default role", e.0)))
                    .transpose()?;
                Ok::<_, ServiceError>(SsoSettingsChange {
                    tenant_id: Some(tenant_id),
                    enforce: Some(form.checked("enforce")),
                    auto_assign: Some(form.checked("auto_assign")),
                    default_role,
                })
            })();
            let outcome = match change {
                Err(e) => Outcome::failed(e),
                Ok(change) => s
                    .roster
                    .set_sso(signed.actor(), change)
                    .await
                    .map_or_else(Outcome::failed, |_| Outcome::done("Saved the single sign-on settings.")),
            };
            sso_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}

pub(super) async fn set_connection(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let input = DirectConnectionInput {
                issuer: form.get("issuer").unwrap_or("").trim().to_string(),
                client_id: form.get("client_id").unwrap_or("").trim().to_string(),
                client_secret: crate::secrets::Secret::new(form.get("client_secret").unwrap_or("").trim()),
                scopes: None,
                require_email_verified: Some(form.checked("require_email_verified")),
            };
            let outcome = s
                .roster
                .set_sso_connection(signed.actor(), input)
                .await
                .map_or_else(Outcome::failed, |c| Outcome::done(format!("Connected to {}.", c.issuer)));
            sso_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}

pub(super) async fn remove_connection(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let outcome = s
                .roster
                .delete_sso_connection(signed.actor())
                .await
                .map_or_else(Outcome::failed, |_| Outcome::done("Removed the OpenID connection."));
            sso_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}

pub(super) async fn create_client(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let new = Name::parse(form.get("name").unwrap_or("")).map_err(|e| ServiceError::invalid("name", e.0)).map(
                |name| NewSsoClient {
                    name,
                    redirect_uris: form
                        .get("redirect_uris")
                        .unwrap_or("")
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                },
            );
            match async { s.roster.create_sso_client(signed.actor(), new?).await }.await {
                Ok(created) => {
                    let shown = (created.client.id.to_string(), created.secret.expose().to_string());
                    let notice =
                        format!("Registered {}. Copy its secret now: it is shown only once.", created.client.name);
                    sso_page(&s, &signed, Outcome::done(notice), Some(shown)).await
                }
                Err(e) => sso_page(&s, &signed, Outcome::failed(e), None).await,
            }
        }
        .await,
    )
}

pub(super) async fn revoke_client(State(s): State<AppState>, parts: Parts, id: Path<String>, body: Bytes) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&id).await?;
            let outcome = s
                .roster
                .revoke_sso_client(signed.actor(), id)
                .await
                .map_or_else(Outcome::failed, |c| Outcome::done(format!("Revoked {}.", c.name)));
            sso_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}

// ---- Settings: SCIM ------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/scim.html")]
struct ScimPage {
    f: Frame,
    base_url: String,
    tokens: Vec<Credential>,
    created: Option<String>,
    mappings: Vec<RoleMapping>,
}

async fn scim_page(s: &AppState, signed: &Signed, outcome: Outcome, created: Option<String>) -> Page {
    let fail = |e: ServiceError| super::views::failure(&e);
    let tokens = s.roster.list_credentials(signed.actor(), CredentialKind::ScimToken).await.map_err(fail)?;
    let mappings = s.roster.role_mappings(signed.actor()).await.map_err(fail)?;
    let status = outcome.status();
    let page = ScimPage {
        f: outcome.frame(signed, "settings", "SCIM provisioning"),
        base_url: s.config.public_base_url.join("scim/v2").map(|u| u.to_string()).unwrap_or_default(),
        tokens: tokens.into_iter().filter(|t| t.revoked_at.is_none()).collect(),
        created,
        mappings,
    };
    Ok(render(status, page.render()))
}

pub(super) async fn scim(State(s): State<AppState>, parts: Parts) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            scim_page(&s, &signed, Outcome::default(), None).await
        }
        .await,
    )
}

pub(super) async fn create_token(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let new = (|| {
                let name =
                    Name::parse(form.get("name").unwrap_or("")).map_err(|e| ServiceError::invalid("name", e.0))?;
                let expires_in_days = match form.text("expires_in_days") {
                    None => None,
                    Some(d) => {
                        Some(d.parse::<u32>().map_err(|_| ServiceError::invalid("expiry", "enter a number of days"))?)
                    }
                };
                Ok::<_, ServiceError>(NewCredential {
                    kind: CredentialKind::ScimToken,
                    name,
                    role: None,
                    expires_in_days,
                })
            })();
            match async { s.roster.create_credential(signed.actor(), new?).await }.await {
                Ok(created) => {
                    let notice = format!(
                        "Created the token {}. Copy it into your identity provider now: it is shown only once.",
                        created.credential.name
                    );
                    scim_page(&s, &signed, Outcome::done(notice), Some(created.secret.expose().to_string())).await
                }
                Err(e) => scim_page(&s, &signed, Outcome::failed(e), None).await,
            }
        }
        .await,
    )
}

pub(super) async fn revoke_token(State(s): State<AppState>, parts: Parts, id: Path<String>, body: Bytes) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&id).await?;
            let outcome = s
                .roster
                .revoke_credential(signed.actor(), CredentialKind::ScimToken, id)
                .await
                .map_or_else(Outcome::failed, |c| Outcome::done(format!("Revoked the token {}.", c.name)));
            scim_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}

pub(super) async fn create_mapping(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let new = (|| {
                let source = form
                    .text("source")
                    .and_then(|v| v.parse::<RoleMappingSource>().ok())
                    .ok_or_else(|| ServiceError::invalid("source", "choose a group or an identity provider role"))?;
                let role = form
                    .text("role")
                    .and_then(|v| v.parse::<Role>().ok())
                    .ok_or_else(|| ServiceError::invalid("role", "choose a role"))?;
                Ok::<_, ServiceError>(NewRoleMapping {
                    source,
                    value: form.get("value").unwrap_or("").to_string(),
                    role,
                })
            })();
            let outcome = match async { s.roster.create_role_mapping(signed.actor(), new?).await }.await {
                Ok(m) => Outcome::done(format!("Members from {} now get {}.", m.value, role_title(m.role))),
                Err(e) => Outcome::failed(e),
            };
            scim_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}

pub(super) async fn delete_mapping(State(s): State<AppState>, parts: Parts, id: Path<String>, body: Bytes) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&id).await?;
            let outcome = s
                .roster
                .delete_role_mapping(signed.actor(), id)
                .await
                .map_or_else(Outcome::failed, |m| Outcome::done(format!("Removed the mapping of {}.", m.value)));
            scim_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}

// ---- Audit -----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditFilters {
    actor: Option<String>,
    action: Option<String>,
    /// A date, `YYYY-MM-DD` (from its start, UTC).
    since: Option<String>,
    /// A date, `YYYY-MM-DD` (to its end, UTC).
    until: Option<String>,
    cursor: Option<String>,
}

impl AuditFilters {
    fn query(&self, limit: i64) -> Result<AuditQuery, ServiceError> {
        let day = |raw: &Option<String>, field: &str| {
            raw.as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| {
                    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                        .map_err(|_| ServiceError::invalid(field, "give a date as YYYY-MM-DD"))
                })
                .transpose()
        };
        let start = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        Ok(AuditQuery {
            action: self.action.clone().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()),
            actor: self.actor.clone().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()),
            since: day(&self.since, "from")?.and_then(start),
            until: day(&self.until, "to")?.and_then(|d| d.succ_opt()).and_then(start),
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
            limit: Some(limit),
        })
    }

    fn href(&self, path: &str, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("actor", &self.actor), ("action", &self.action), ("since", &self.since), ("until", &self.until)]
        {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(k, v);
            }
        }
        if let Some(c) = cursor {
            query.append_pair("cursor", c);
        }
        format!("{path}?{}", query.finish())
    }
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

fn audit_row(e: &AuditEntry) -> AuditRow {
    let detail = match (&e.before, &e.after) {
        (_, Some(after)) => after.to_string(),
        (Some(before), None) => before.to_string(),
        (None, None) => String::new(),
    };
    AuditRow {
        at: e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        actor: format!("{} {}", e.actor_kind, e.actor_id),
        action: e.action.clone(),
        target: e.target.clone(),
        detail: detail.chars().take(300).collect(),
    }
}

#[derive(Template)]
#[template(path = "portal/audit.html")]
struct AuditPage {
    f: Frame,
    rows: Vec<AuditRow>,
    actor: String,
    action: String,
    since: String,
    until: String,
    next: Option<String>,
    export: String,
}

pub(super) async fn audit(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<AuditFilters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            let filters = query.map(|q| q.0).unwrap_or_default();
            let (rows, next, outcome) = match filters.query(50) {
                Err(e) => (Vec::new(), None, Outcome::failed(e)),
                Ok(q) => match s.roster.audit_log(signed.actor(), q).await {
                    Ok(page) => (
                        page.items.iter().map(audit_row).collect(),
                        page.next_cursor.map(|c| filters.href("/portal/audit", Some(&c))),
                        Outcome::default(),
                    ),
                    Err(e) => (Vec::new(), None, Outcome::failed(e)),
                },
            };
            let status = outcome.status();
            let page = AuditPage {
                f: outcome.frame(&signed, "audit", "Audit log"),
                rows,
                export: filters.href("/portal/audit.csv", None),
                next,
                actor: filters.actor.clone().unwrap_or_default(),
                action: filters.action.clone().unwrap_or_default(),
                since: filters.since.clone().unwrap_or_default(),
                until: filters.until.clone().unwrap_or_default(),
            };
            Ok(render(status, page.render()))
        }
        .await,
    )
}

/// The most audit records one export carries.
const AUDIT_EXPORT_MAX: usize = 50_000;

/// The audit log under the same filters, as CSV, newest first.
pub(super) async fn audit_csv(
    State(s): State<AppState>,
    parts: Parts,
    query: Result<Query<AuditFilters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            let mut filters = query.map(|q| q.0).unwrap_or_default();
            let mut out = csv::Writer::from_writer(Vec::new());
            let header = ["time", "actor_kind", "actor", "action", "target", "before", "after", "request_id"];
            let write_failed = |_| super::views::failure(&ServiceError::invalid("export", "could not be written"));
            out.write_record(header).map_err(write_failed)?;
            let mut written = 0;
            loop {
                let q = filters.query(200).map_err(|e| super::views::failure(&e))?;
                let page = s.roster.audit_log(signed.actor(), q).await.map_err(|e| super::views::failure(&e))?;
                for e in &page.items {
                    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    out.write_record([
                        e.at.to_rfc3339(),
                        e.actor_kind.to_string(),
                        e.actor_id.clone(),
                        e.action.clone(),
                        e.target.clone(),
                        json(&e.before),
                        json(&e.after),
                        e.request_id.clone().unwrap_or_default(),
                    ])
                    .map_err(write_failed)?;
                }
                written += page.items.len();
                match page.next_cursor {
                    Some(c) if written < AUDIT_EXPORT_MAX => filters.cursor = Some(c),
                    _ => break,
                }
            }
            let body =
                out.into_inner().map_err(|_| super::views::failure(&ServiceError::invalid("export", "failed")))?;
            let mut res = body.into_response();
            let headers = res.headers_mut();
            headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            headers.insert(
                axum::http::header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"audit-log.csv\""),
            );
            headers.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        .await,
    )
}

// ---- Setup links -------------------------------------------------------------

/// A setup link as the Settings page lists it.
struct SetupLinkRow {
    id: String,
    scopes: String,
    status: &'static str,
    expires: String,
    created_by: String,
}

#[derive(Template)]
#[template(path = "portal/setup_links.html")]
struct SetupLinksPage {
    f: Frame,
    checks: Vec<crate::http::setup::Check>,
    links: Vec<SetupLinkRow>,
    created: Option<String>,
}

async fn setup_links_page(s: &AppState, signed: &Signed, outcome: Outcome, created: Option<String>) -> Page {
    let fail = |e: ServiceError| super::views::failure(&e);
    let status = s.roster.setup_status(signed.actor()).await.map_err(fail)?;
    let links = s.roster.list_setup_links(signed.actor()).await.map_err(fail)?;
    let code = outcome.status();
    let page = SetupLinksPage {
        f: outcome.frame(signed, "settings", "Setup links"),
        checks: crate::http::setup::checks(status),
        links: links
            .into_iter()
            .map(|l| SetupLinkRow {
                id: l.link.id.to_string(),
                scopes: l.link.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                status: l.status,
                expires: human_time(l.link.expires_at),
                created_by: l.link.created_by,
            })
            .collect(),
        created,
    };
    Ok(render(code, page.render()))
}

pub(super) async fn setup_links(State(s): State<AppState>, parts: Parts) -> Response {
    done(
        async {
            let signed = admin(&s, &parts).await?;
            setup_links_page(&s, &signed, Outcome::default(), None).await
        }
        .await,
    )
}

pub(super) async fn create_setup_link(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    done(
        async {
            let (signed, form) = admin_post(&s, &parts, &body).await?;
            let scopes =
                SetupScope::ALL.iter().copied().filter(|scope| form.checked(&format!("scope_{scope}"))).collect();
            let hours = form.text("expires_in_hours").map(|h| h.parse::<u32>().unwrap_or(0));
            match s.roster.create_setup_link(signed.actor(), NewSetupLink { scopes, expires_in_hours: hours }).await {
                Ok(created) => {
                    let notice = "Setup link created. Send it to your IT admin now: it is shown this once.";
                    setup_links_page(&s, &signed, Outcome::done(notice), Some(created.url)).await
                }
                Err(e) => setup_links_page(&s, &signed, Outcome::failed(e), None).await,
            }
        }
        .await,
    )
}

pub(super) async fn revoke_setup_link(
    State(s): State<AppState>,
    parts: Parts,
    id: Path<String>,
    body: Bytes,
) -> Response {
    done(
        async {
            let (signed, _) = admin_post(&s, &parts, &body).await?;
            let id = path_id(&id).await?;
            let outcome = match s.roster.revoke_setup_link(signed.actor(), id).await {
                Ok(()) => Outcome::done("Setup link revoked: it no longer opens anything."),
                Err(e) => Outcome::failed(e),
            };
            setup_links_page(&s, &signed, outcome, None).await
        }
        .await,
    )
}
