//! The admin API under `/api/v1`: thin handlers that extract, call one
//! service function and shape the answer. The OpenAPI document is generated
//! from these handlers' annotations.

use super::error::Problem;
use super::extract::{AdminActor, ApiBytes, ApiJson, ApiPath, ApiQuery, WebhookCaller};
use super::AppState;
use crate::domains::DomainName;
use crate::model::*;
use crate::roles::RoleMapping;
use crate::service::*;
use crate::store::{
    AuditEntry, BillingRequest, Credential, Features, Invitation, Member, Organization, SsoSettings, WebhookEndpoint,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

type ApiResult<T> = Result<T, Problem>;

#[derive(OpenApi)]
#[openapi(
    info(title = "Roster admin API", description = "Manage an organization's members, invitations, seats, settings and credentials. Authenticate with an organization API key: `Authorization: Bearer roster_ak_…`, or with the deployment's operator key (`roster_op_…`) and a `Roster-Organization: <organization id>` header. The operator routes under `/api/v1/operator` take only an operator key."),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new("roster_session"),
            )),
        );
    }
}

/// The admin routes with their OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(get_organization, update_organization, delete_organization))
        .routes(routes!(get_features, set_features))
        .routes(routes!(get_sso, set_sso, change_sso))
        .routes(routes!(get_seats, set_seats))
        .routes(routes!(list_billing_requests, create_billing_request))
        .routes(routes!(cancel_billing_request))
        .routes(routes!(list_members, add_member))
        .routes(routes!(get_member, change_member_role, remove_member))
        .routes(routes!(suspend_member))
        .routes(routes!(reactivate_member))
        .routes(routes!(list_invitations, create_invitation))
        .routes(routes!(bulk_invite))
        .routes(routes!(revoke_invitation))
        .routes(routes!(resend_invitation))
        .routes(routes!(list_role_mappings, create_role_mapping))
        .routes(routes!(delete_role_mapping))
        .routes(routes!(reconcile_plan))
        .routes(routes!(reconcile_apply))
        .routes(routes!(list_events))
        .routes(routes!(list_scim_tokens, create_scim_token))
        .routes(routes!(revoke_scim_token))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(list_domains, add_domain))
        .routes(routes!(get_domain, remove_domain))
        .routes(routes!(verify_domain))
        .routes(routes!(list_audit_log))
        .routes(routes!(list_sso_clients, create_sso_client))
        .routes(routes!(revoke_sso_client))
        .routes(routes!(get_sso_connection, set_sso_connection, delete_sso_connection))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_webhook_deliveries))
        .routes(routes!(replay_webhook_delivery))
        .routes(routes!(replay_webhook_events))
        .routes(routes!(list_setup_links, create_setup_link))
        .routes(routes!(revoke_setup_link))
        .routes(routes!(setup_status))
        .routes(routes!(list_scim_requests))
}

// ---- Organization ----------------------------------------------------------

/// The organization the API key belongs to.
#[utoipa::path(get, path = "/api/v1/organization", tag = "organization",
    responses((status = 200, body = Organization), (status = 401, body = Problem)))]
async fn get_organization(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<Organization>> {
    Ok(Json(s.roster.organization(&a).await?))
}

/// Changes the name, contact email or plan (Owner, Admin). Unless the
/// deployment is self-serve (`billing.self_serve_seats`), a change of plan
/// becomes a billing request for the operator: 202 with the request (the
/// other fields are saved).
#[utoipa::path(patch, path = "/api/v1/organization", tag = "organization", request_body = OrganizationChange,
    responses((status = 200, body = Organization), (status = 202, body = BillingRequest),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn update_organization(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(change): ApiJson<OrganizationChange>,
) -> ApiResult<Response> {
    Ok(match s.roster.update_organization(&a, change).await? {
        (_, Some(request)) => (StatusCode::ACCEPTED, Json(request)).into_response(),
        (org, None) => Json(org).into_response(),
    })
}

/// Deletes the organization and everything in it but its audit trail (Owner only).
#[utoipa::path(delete, path = "/api/v1/organization", tag = "organization",
    responses((status = 204), (status = 403, body = Problem)))]
async fn delete_organization(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<StatusCode> {
    s.roster.delete_organization(&a).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organization's features.
#[utoipa::path(get, path = "/api/v1/organization/features", tag = "organization",
    responses((status = 200, body = Features)))]
async fn get_features(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<Features>> {
    Ok(Json(s.roster.organization(&a).await?.features))
}

/// Sets the organization's features (Owner, Admin).
#[utoipa::path(put, path = "/api/v1/organization/features", tag = "organization", request_body = Features,
    responses((status = 200, body = Features), (status = 403, body = Problem)))]
async fn set_features(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(features): ApiJson<Features>,
) -> ApiResult<Json<Features>> {
    Ok(Json(s.roster.set_features(&a, features).await?.features))
}

/// The organization's single sign-on settings.
#[utoipa::path(get, path = "/api/v1/organization/sso", tag = "organization",
    responses((status = 200, body = SsoSettings)))]
async fn get_sso(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<SsoSettings>> {
    Ok(Json(s.roster.organization(&a).await?.sso))
}

/// Sets the organization's single sign-on settings (Owner, Admin).
#[utoipa::path(put, path = "/api/v1/organization/sso", tag = "organization", request_body = SsoSettings,
    responses((status = 200, body = SsoSettings), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn set_sso(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(sso): ApiJson<SsoSettings>,
) -> ApiResult<Json<SsoSettings>> {
    Ok(Json(s.roster.set_sso(&a, sso.into()).await?.sso))
}

/// Changes some of the organization's single sign-on settings (Owner,
/// Admin); absent fields stay as they are, `"tenant_id": null` clears it.
/// A tenant ID needs the deployment's tenant connection; enforcement needs
/// a working connection (422 otherwise).
#[utoipa::path(patch, path = "/api/v1/organization/sso", tag = "organization", request_body = SsoSettingsChange,
    responses((status = 200, body = SsoSettings), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn change_sso(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(change): ApiJson<SsoSettingsChange>,
) -> ApiResult<Json<SsoSettings>> {
    Ok(Json(s.roster.set_sso(&a, change).await?.sso))
}

// ---- Seats -----------------------------------------------------------------

/// Purchased, used, available and pending seats.
#[utoipa::path(get, path = "/api/v1/seats", tag = "seats", responses((status = 200, body = Seats)))]
async fn get_seats(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<Seats>> {
    Ok(Json(s.roster.seats(&a).await?))
}

/// Sets purchased seats, the seat policy and enforcement (Owner, Admin).
/// Seats and the policy are sold by the deployment's operator: unless the
/// deployment is self-serve (`billing.self_serve_seats`), an
/// organization's change of them becomes a billing request (202 with the
/// request; the event `seats.change_requested`) that the operator approves
/// or rejects. With an operator key the change is made at once.
#[utoipa::path(put, path = "/api/v1/seats", tag = "seats", request_body = SeatsChange,
    responses((status = 200, body = Seats), (status = 202, body = BillingRequest),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn set_seats(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(change): ApiJson<SeatsChange>,
) -> ApiResult<Response> {
    Ok(match s.roster.set_seats(&a, change).await? {
        SeatsOutcome::Changed(seats) => Json(seats).into_response(),
        SeatsOutcome::Requested(request) => (StatusCode::ACCEPTED, Json(request)).into_response(),
    })
}

/// The organization's billing requests, newest first (Owner, Admin).
#[utoipa::path(get, path = "/api/v1/billing/requests", tag = "seats",
    responses((status = 200, body = Vec<BillingRequest>), (status = 403, body = Problem)))]
async fn list_billing_requests(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
) -> ApiResult<Json<Vec<BillingRequest>>> {
    Ok(Json(s.roster.billing_requests(&a).await?))
}

/// Asks the operator for a number of seats, a seat policy or a plan (Owner,
/// Admin); supersedes the organization's earlier pending request. In a
/// self-serve deployment, change them directly instead.
#[utoipa::path(post, path = "/api/v1/billing/requests", tag = "seats", request_body = BillingAsk,
    responses((status = 201, body = BillingRequest), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_billing_request(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(ask): ApiJson<BillingAsk>,
) -> ApiResult<(StatusCode, Json<BillingRequest>)> {
    Ok((StatusCode::CREATED, Json(s.roster.request_billing_change(&a, ask).await?)))
}

/// Withdraws a pending billing request (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/billing/requests/{id}", tag = "seats",
    params(("id" = Uuid, Path, description = "Billing request id")),
    responses((status = 200, body = BillingRequest), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn cancel_billing_request(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<BillingRequest>> {
    Ok(Json(s.roster.cancel_billing_request(&a, id).await?))
}

// ---- Members ---------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MemberParams {
    status: Option<MemberStatus>,
    role: Option<Role>,
    /// Only members that came through this door.
    source: Option<MemberSource>,
    /// Only members whose email or name contains this, in any case.
    #[param(max_length = 254, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    q: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// Members, filtered by status, role, source and a search of email and name, in joining order.
#[utoipa::path(get, path = "/api/v1/members", tag = "members", params(MemberParams),
    responses((status = 200, body = MemberPage), (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn list_members(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiQuery(p): ApiQuery<MemberParams>,
) -> ApiResult<Json<MemberPage>> {
    let q =
        MemberQuery { status: p.status, role: p.role, source: p.source, search: p.q, cursor: p.cursor, limit: p.limit };
    Ok(Json(s.roster.list_members(&a, q).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewMember {
    email: Email,
    role: Role,
}

/// Adds a person as an active member; takes a seat (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/members", tag = "members", request_body = NewMember,
    responses((status = 201, body = Member), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_member(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewMember>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    Ok((StatusCode::CREATED, Json(s.roster.add_member(&a, new.email, new.role).await?)))
}

/// One member.
#[utoipa::path(get, path = "/api/v1/members/{id}", tag = "members", params(("id" = Uuid, Path)),
    responses((status = 200, body = Member), (status = 404, body = Problem)))]
async fn get_member(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Member>> {
    Ok(Json(s.roster.member(&a, id).await?))
}

/// Assigns a member's role by hand (pinned unless `role_managed_by` is
/// `idp`), or hands the role to the identity provider (Owner, Admin; only an
/// Owner grants or takes away Owner). The answer shows which source decided
/// the role (`role_source`, `role_reason`).
#[utoipa::path(patch, path = "/api/v1/members/{id}", tag = "members", params(("id" = Uuid, Path)), request_body = RoleAssignment,
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn change_member_role(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<RoleAssignment>,
) -> ApiResult<Json<Member>> {
    Ok(Json(s.roster.assign_role(&a, id, change).await?))
}

/// Removes a member from the organization; frees the seat (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/members/{id}", tag = "members", params(("id" = Uuid, Path)),
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn remove_member(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Member>> {
    Ok(Json(s.roster.remove_member(&a, id).await?))
}

/// Suspends a member; frees the seat (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/members/{id}/suspend", tag = "members", params(("id" = Uuid, Path)),
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn suspend_member(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Member>> {
    Ok(Json(s.roster.suspend_member(&a, id).await?))
}

/// Re-activates a suspended member; takes a seat (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/members/{id}/reactivate", tag = "members", params(("id" = Uuid, Path)),
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn reactivate_member(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Member>> {
    Ok(Json(s.roster.reactivate_member(&a, id).await?))
}

// ---- Invitations -----------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct InvitationParams {
    status: Option<InvitationStatus>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// Invitations, in creation order.
#[utoipa::path(get, path = "/api/v1/invitations", tag = "invitations", params(InvitationParams),
    responses((status = 200, body = Page<Invitation>)))]
async fn list_invitations(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiQuery(p): ApiQuery<InvitationParams>,
) -> ApiResult<Json<Page<Invitation>>> {
    let q = InvitationQuery { status: p.status, cursor: p.cursor, limit: p.limit };
    Ok(Json(s.roster.list_invitations(&a, q).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewInvitation {
    email: Email,
    role: Role,
}

/// An invitation and its token, shown once; the invitee accepts by signing in with the invited email.
#[derive(Debug, Serialize, ToSchema)]
struct InvitationCreated {
    #[serde(flatten)]
    invitation: Invitation,
    token: String,
}

impl From<CreatedInvitation> for InvitationCreated {
    fn from(c: CreatedInvitation) -> Self {
        Self { token: c.token.expose().to_string(), invitation: c.invitation }
    }
}

/// Invites one person; reserves a seat (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/invitations", tag = "invitations", request_body = NewInvitation,
    responses((status = 201, body = InvitationCreated), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_invitation(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewInvitation>,
) -> ApiResult<(StatusCode, Json<InvitationCreated>)> {
    let created = s.roster.invite(&a, new.email, new.role).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[derive(Debug, Serialize, ToSchema)]
struct BulkInvited {
    created: Vec<InvitationCreated>,
}

/// Invites everyone in a CSV body of `email,role` lines (header optional).
/// All or nothing: a bad line, a duplicate or too few seats rejects the whole upload with per-line errors.
#[utoipa::path(post, path = "/api/v1/invitations/bulk", tag = "invitations",
    request_body(content = String, content_type = "text/csv", example = "email,role\nada@example.com,admin\nbob@example.com,read\n"),
    responses((status = 201, body = BulkInvited), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn bulk_invite(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<BulkInvited>)> {
    let created = s.roster.invite_csv(&a, &body).await?;
    Ok((StatusCode::CREATED, Json(BulkInvited { created: created.into_iter().map(Into::into).collect() })))
}

/// Revokes a pending invitation; frees its seat (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/invitations/{id}", tag = "invitations", params(("id" = Uuid, Path)),
    responses((status = 200, body = Invitation), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn revoke_invitation(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Invitation>> {
    Ok(Json(s.roster.revoke_invitation(&a, id).await?))
}

/// Sends a pending or expired invitation again with a new token and expiry;
/// the old link stops working (Owner, Admin). An expired one needs a free seat.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/resend", tag = "invitations", params(("id" = Uuid, Path)),
    responses((status = 200, body = InvitationCreated), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn resend_invitation(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<InvitationCreated>> {
    Ok(Json(s.roster.resend_invitation(&a, id).await?.into()))
}

// ---- Role mappings and reconcile ---------------------------------------------

/// The organization's group and IdP-role mappings.
#[utoipa::path(get, path = "/api/v1/role-mappings", tag = "roles",
    responses((status = 200, body = Vec<RoleMapping>), (status = 401, body = Problem)))]
async fn list_role_mappings(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<Vec<RoleMapping>>> {
    Ok(Json(s.roster.role_mappings(&a).await?))
}

/// Maps a SCIM group (by `displayName` or `externalId`) or an IdP role to a
/// role, at most Admin (Owner, Admin). Members follow when the reconcile plan
/// is applied, so the plan shows who changes first.
#[utoipa::path(post, path = "/api/v1/role-mappings", tag = "roles", request_body = NewRoleMapping,
    responses((status = 201, body = RoleMapping), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_role_mapping(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewRoleMapping>,
) -> ApiResult<(StatusCode, Json<RoleMapping>)> {
    Ok((StatusCode::CREATED, Json(s.roster.create_role_mapping(&a, new).await?)))
}

/// Removes a mapping (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/role-mappings/{id}", tag = "roles", params(("id" = Uuid, Path)),
    responses((status = 200, body = RoleMapping), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_role_mapping(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RoleMapping>> {
    Ok(Json(s.roster.delete_role_mapping(&a, id).await?))
}

/// Every change reconcile would make now, each with its reason (Owner, Admin).
#[utoipa::path(get, path = "/api/v1/reconcile/plan", tag = "reconcile",
    responses((status = 200, body = ReconcilePlan), (status = 403, body = Problem)))]
async fn reconcile_plan(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<ReconcilePlan>> {
    Ok(Json(s.roster.reconcile_plan(&a).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    /// The `fingerprint` of the plan that was read: the apply is refused
    /// (409) when the plan has changed since.
    fingerprint: Option<String>,
}

/// Plans again and applies the plan in one transaction, with an audit record
/// per change (Owner, Admin). The body is optional.
#[utoipa::path(post, path = "/api/v1/reconcile/apply", tag = "reconcile", request_body(content = Option<ApplyRequest>, description = "optional"),
    responses((status = 200, body = ReconcileOutcome), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn reconcile_apply(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<ReconcileOutcome>> {
    // No body, or `null`, applies whatever the plan is now.
    let request: ApplyRequest = optional_json(&body, "apply request")?;
    Ok(Json(s.roster.reconcile_apply(&a, request.fingerprint.as_deref()).await?))
}

/// An optional JSON body: none (or `null`) is the default request.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8], what: &str) -> ServiceResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map_err(|e| ServiceError::invalid("body", format!("not a valid {what}: {e}")))
        .map(Option::unwrap_or_default)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventParams {
    /// The last position already read; 0 (the default) reads from the start.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many events (1 to 1000, default 200).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Every membership, role and seat change, in order, resumable from the
/// last position read: no gaps, no repeats.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventParams),
    responses((status = 200, body = EventPage), (status = 422, body = Problem)))]
async fn list_events(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiQuery(p): ApiQuery<EventParams>,
) -> ApiResult<Json<EventPage>> {
    Ok(Json(s.roster.events(&a, p.after, p.limit).await?))
}

// ---- Credentials -----------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewScimToken {
    name: Name,
    /// 1 to 3650; none for a credential that does not expire.
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, with = "crate::model::whole_number::option")]
    expires_in_days: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    name: Name,
    role: Role,
    /// 1 to 3650; none for a key that does not expire.
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, with = "crate::model::whole_number::option")]
    expires_in_days: Option<u32>,
}

/// A new credential with its secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CredentialCreated {
    #[serde(flatten)]
    pub(super) credential: Credential,
    pub(super) secret: String,
}

impl From<CreatedCredential> for CredentialCreated {
    fn from(c: CreatedCredential) -> Self {
        Self { secret: c.secret.expose().to_string(), credential: c.credential }
    }
}

/// SCIM tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/scim-tokens", tag = "credentials", responses((status = 200, body = Vec<Credential>)))]
async fn list_scim_tokens(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<Vec<Credential>>> {
    Ok(Json(s.roster.list_credentials(&a, CredentialKind::ScimToken).await?))
}

/// Creates a SCIM token for the identity provider (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/scim-tokens", tag = "credentials", request_body = NewScimToken,
    responses((status = 201, body = CredentialCreated), (status = 403, body = Problem)))]
async fn create_scim_token(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewScimToken>,
) -> ApiResult<(StatusCode, Json<CredentialCreated>)> {
    let new = NewCredential {
        kind: CredentialKind::ScimToken,
        name: new.name,
        role: None,
        expires_in_days: new.expires_in_days,
    };
    Ok((StatusCode::CREATED, Json(s.roster.create_credential(&a, new).await?.into())))
}

/// Revokes a SCIM token (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/scim-tokens/{id}", tag = "credentials", params(("id" = Uuid, Path)),
    responses((status = 200, body = Credential), (status = 404, body = Problem)))]
async fn revoke_scim_token(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Credential>> {
    Ok(Json(s.roster.revoke_credential(&a, CredentialKind::ScimToken, id).await?))
}

/// API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "credentials", responses((status = 200, body = Vec<Credential>)))]
async fn list_api_keys(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<Vec<Credential>>> {
    Ok(Json(s.roster.list_credentials(&a, CredentialKind::ApiKey).await?))
}

/// Creates an API key with a role no higher than the caller's (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "credentials", request_body = NewApiKey,
    responses((status = 201, body = CredentialCreated), (status = 403, body = Problem)))]
async fn create_api_key(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewApiKey>,
) -> ApiResult<(StatusCode, Json<CredentialCreated>)> {
    let new = NewCredential {
        kind: CredentialKind::ApiKey,
        name: new.name,
        role: Some(new.role),
        expires_in_days: new.expires_in_days,
    };
    Ok((StatusCode::CREATED, Json(s.roster.create_credential(&a, new).await?.into())))
}

/// Revokes an API key (Owner, Admin; only an Owner revokes an Owner key).
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "credentials", params(("id" = Uuid, Path)),
    responses((status = 200, body = Credential), (status = 404, body = Problem)))]
async fn revoke_api_key(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Credential>> {
    Ok(Json(s.roster.revoke_credential(&a, CredentialKind::ApiKey, id).await?))
}

// ---- Domains ---------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    /// The email domain, e.g. `acme.com` (internationalized names are accepted and stored in IDNA form).
    #[schema(value_type = String, max_length = 253)]
    name: String,
}

/// The organization's domains with their status and the TXT record to publish for each.
#[utoipa::path(get, path = "/api/v1/domains", tag = "domains", responses((status = 200, body = Vec<DomainView>)))]
async fn list_domains(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<Json<Vec<DomainView>>> {
    Ok(Json(s.roster.list_domains(&a).await?))
}

/// Adds an email domain; the answer says which TXT record proves it (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/domains", tag = "domains", request_body = NewDomain,
    responses((status = 201, body = DomainView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_domain(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewDomain>,
) -> ApiResult<(StatusCode, Json<DomainView>)> {
    let name = DomainName::parse(&new.name).map_err(|e| Problem::from(ServiceError::invalid("name", e)))?;
    Ok((StatusCode::CREATED, Json(s.roster.add_domain(&a, name).await?)))
}

/// One domain.
#[utoipa::path(get, path = "/api/v1/domains/{id}", tag = "domains", params(("id" = Uuid, Path)),
    responses((status = 200, body = DomainView), (status = 404, body = Problem)))]
async fn get_domain(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DomainView>> {
    Ok(Json(s.roster.domain(&a, id).await?))
}

/// Removes a domain; it stops routing sign-ins and assigning members at once (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/domains/{id}", tag = "domains", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn remove_domain(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    s.roster.remove_domain(&a, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the domain's TXT record now and says what DNS showed (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/domains/{id}/verify", tag = "domains", params(("id" = Uuid, Path)),
    responses((status = 200, body = DomainCheck), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn verify_domain(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DomainCheck>> {
    Ok(Json(s.roster.verify_domain(&a, id).await?))
}

// ---- Audit log -------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    /// Only this action, e.g. `member.suspended`.
    #[param(max_length = 512, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    action: Option<String>,
    /// Only this actor id (an API key id, `cli:<user>`, …).
    #[param(max_length = 512, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    actor: Option<String>,
    /// From this time on (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// The audit log, newest first (Owner, Admin).
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit", params(AuditParams),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_audit_log(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let q = AuditQuery {
        action: p.action,
        actor: p.actor,
        since: p.since,
        until: p.until,
        cursor: p.cursor,
        limit: p.limit,
    };
    Ok(Json(s.roster.audit_log(&a, q).await?))
}

// ---- Single sign-on: product clients and the organization's own connection --

/// A product client as created: its secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
struct SsoClientCreated {
    #[serde(flatten)]
    client: crate::store::SsoClient,
    /// The client secret the product's backend sends to `POST /sso/token`; shown only now.
    client_secret: String,
}

/// The organization's product clients (never their secrets).
#[utoipa::path(get, path = "/api/v1/sso/clients", tag = "sso",
    responses((status = 200, body = Vec<crate::store::SsoClient>)))]
async fn list_sso_clients(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
) -> ApiResult<Json<Vec<crate::store::SsoClient>>> {
    Ok(Json(s.roster.list_sso_clients(Some(&a)).await?))
}

/// Registers a product client with its exact redirect URIs (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/sso/clients", tag = "sso", request_body = NewSsoClient,
    responses((status = 201, body = SsoClientCreated), (status = 422, body = Problem)))]
async fn create_sso_client(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewSsoClient>,
) -> ApiResult<(StatusCode, Json<SsoClientCreated>)> {
    let created = s.roster.create_sso_client(&a, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(SsoClientCreated { client: created.client, client_secret: created.secret.expose().to_string() }),
    ))
}

/// Revokes a product client: its unredeemed codes stop working at once (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/sso/clients/{id}", tag = "sso", params(("id" = Uuid, Path)),
    responses((status = 200, body = crate::store::SsoClient), (status = 404, body = Problem)))]
async fn revoke_sso_client(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<crate::store::SsoClient>> {
    Ok(Json(s.roster.revoke_sso_client(&a, id).await?))
}

/// The organization's own OpenID connection (without its secret).
#[utoipa::path(get, path = "/api/v1/sso/connection", tag = "sso",
    responses((status = 200, body = DirectConnectionView), (status = 404, body = Problem)))]
async fn get_sso_connection(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
) -> ApiResult<Json<DirectConnectionView>> {
    Ok(Json(s.roster.sso_connection(&a).await?))
}

/// Sets the organization's own OpenID connection (an Okta or Entra OIDC app);
/// the provider's discovery document must answer (Owner, Admin).
#[utoipa::path(put, path = "/api/v1/sso/connection", tag = "sso", request_body = DirectConnectionInput,
    responses((status = 200, body = DirectConnectionView), (status = 422, body = Problem)))]
async fn set_sso_connection(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(input): ApiJson<DirectConnectionInput>,
) -> ApiResult<Json<DirectConnectionView>> {
    Ok(Json(s.roster.set_sso_connection(&a, input).await?))
}

/// Removes the organization's own connection (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/sso/connection", tag = "sso",
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_sso_connection(State(s): State<AppState>, AdminActor(a): AdminActor) -> ApiResult<StatusCode> {
    s.roster.delete_sso_connection(&a).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Webhooks ----------------------------------------------------------------

/// The organization's webhook endpoints (never their secrets; Owner, Admin).
/// With an operator key and no `Roster-Organization` header, every webhook
/// route manages the deployment's endpoints, which hear every organization.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookEndpoint>), (status = 403, body = Problem)))]
async fn list_webhooks(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
) -> ApiResult<Json<Vec<WebhookEndpoint>>> {
    Ok(Json(s.roster.list_webhooks(&scope).await?))
}

/// Adds an endpoint that hears the organization's events; its signing
/// secret is in this answer only (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_webhook(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiJson(new): ApiJson<NewWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    Ok((StatusCode::CREATED, Json(s.roster.create_webhook(&scope, new).await?)))
}

/// One endpoint (Owner, Admin).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookEndpoint), (status = 404, body = Problem)))]
async fn get_webhook(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<WebhookEndpoint>> {
    Ok(Json(s.roster.get_webhook(&scope, id).await?))
}

/// Changes an endpoint's URL, event filter, description, or enables or
/// disables it; enabling delivers its held events at once (Owner, Admin).
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    request_body = WebhookChange,
    responses((status = 200, body = WebhookEndpoint), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_webhook(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<WebhookChange>,
) -> ApiResult<Json<WebhookEndpoint>> {
    Ok(Json(s.roster.update_webhook(&scope, id, change).await?))
}

/// Deletes an endpoint with its delivery log (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_webhook(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    s.roster.delete_webhook(&scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateWebhookSecret {
    /// How long the previous secret keeps signing too, 0 to 168 hours (default 24).
    #[schema(minimum = 0, maximum = 168)]
    #[serde(default, with = "crate::model::whole_number::option")]
    overlap_hours: Option<i64>,
}

/// Gives an endpoint a new secret, shown in this answer only; during the
/// overlap every delivery carries both signatures (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate", tag = "webhooks", params(("id" = Uuid, Path)),
    request_body(content = Option<RotateWebhookSecret>, description = "optional"),
    responses((status = 200, body = CreatedWebhook), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn rotate_webhook_secret(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiPath(id): ApiPath<Uuid>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<CreatedWebhook>> {
    let request: RotateWebhookSecret = optional_json(&body, "rotation")?;
    Ok(Json(s.roster.rotate_webhook_secret(&scope, id, request.overlap_hours).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryParams {
    /// From a previous page's `next_cursor`.
    cursor: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// The endpoint's delivery attempts, newest first: status, latency and the
/// start of the receiver's answer (Owner, Admin).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path), DeliveryParams),
    responses((status = 200, body = DeliveryPage), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_webhook_deliveries(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(p): ApiQuery<DeliveryParams>,
) -> ApiResult<Json<DeliveryPage>> {
    Ok(Json(s.roster.list_webhook_deliveries(&scope, id, p.limit, p.cursor).await?))
}

/// Sends a delivery's event again, once, outside the feed's order (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 202, body = ReplayQueued), (status = 404, body = Problem)))]
async fn replay_webhook_delivery(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiPath((id, delivery_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<(StatusCode, Json<ReplayQueued>)> {
    Ok((StatusCode::ACCEPTED, Json(s.roster.replay_webhook_delivery(&scope, id, delivery_id).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayEvents {
    /// The first event number (`seq` in `GET /api/v1/events`) to deliver again.
    #[schema(minimum = 1)]
    #[serde(with = "crate::model::whole_number")]
    since_seq: i64,
}

/// Delivers again, in order, every event of the organization from
/// `since_seq` on (Owner, Admin).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/replay", tag = "webhooks", params(("id" = Uuid, Path)),
    request_body = ReplayEvents,
    responses((status = 202, body = ReplayQueued), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn replay_webhook_events(
    State(s): State<AppState>,
    WebhookCaller(scope): WebhookCaller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<ReplayEvents>,
) -> ApiResult<(StatusCode, Json<ReplayQueued>)> {
    let queued = s.roster.replay_webhook_events(&scope, id, request.since_seq, None).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

// ---- Setup links and the SCIM request log ----------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSetupLinkBody {
    /// What the link may set up.
    #[schema(min_items = 1)]
    scopes: Vec<SetupScope>,
    /// 1 to 168 (7 days); 24 when absent.
    #[schema(minimum = 1, maximum = 168)]
    #[serde(default, with = "crate::model::whole_number::option")]
    expires_in_hours: Option<u32>,
}

/// The organization's setup links (never their URLs).
#[utoipa::path(get, path = "/api/v1/setup-links", tag = "setup",
    responses((status = 200, body = Page<SetupLinkView>), (status = 403, body = Problem)))]
async fn list_setup_links(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
) -> ApiResult<Json<Page<SetupLinkView>>> {
    Ok(Json(Page { items: s.roster.list_setup_links(&a).await?, next_cursor: None }))
}

/// Creates a setup link for the organization's IT admin (Owner, Admin): its
/// URL opens the set-up pages of its scopes, for this organization only,
/// until it expires or is revoked. The URL is shown this once.
#[utoipa::path(post, path = "/api/v1/setup-links", tag = "setup", request_body = NewSetupLinkBody,
    responses((status = 201, body = CreatedSetupLink), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_setup_link(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiJson(new): ApiJson<NewSetupLinkBody>,
) -> ApiResult<(StatusCode, Json<CreatedSetupLink>)> {
    let new = NewSetupLink { scopes: new.scopes, expires_in_hours: new.expires_in_hours };
    Ok((StatusCode::CREATED, Json(s.roster.create_setup_link(&a, new).await?)))
}

/// Revokes a setup link at once (Owner, Admin).
#[utoipa::path(delete, path = "/api/v1/setup-links/{id}", tag = "setup", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn revoke_setup_link(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    s.roster.revoke_setup_link(&a, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How far the organization's set-up has come: the checklist the set-up
/// pages and the portal show (Owner, Admin).
#[utoipa::path(get, path = "/api/v1/setup-status", tag = "setup",
    responses((status = 200, body = crate::store::SetupStatus), (status = 403, body = Problem)))]
async fn setup_status(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
) -> ApiResult<Json<crate::store::SetupStatus>> {
    Ok(Json(s.roster.setup_status(&a).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ScimRequestParams {
    /// How many, 1 to 200 (default 200).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// A logged SCIM request, with an error explained in plain words.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ScimRequestView {
    #[serde(flatten)]
    pub request: crate::store::ScimRequestRecord,
    /// How long Roster took to answer, in milliseconds.
    pub latency_ms: f64,
    /// For an error: what went wrong and what to change, in plain words.
    pub explanation: Option<String>,
}

impl From<crate::store::ScimRequestRecord> for ScimRequestView {
    fn from(request: crate::store::ScimRequestRecord) -> Self {
        Self {
            latency_ms: request.latency_us as f64 / 1000.0,
            explanation: super::scim_log::explain(&request),
            request,
        }
    }
}

/// The last SCIM requests the organization's identity provider sent,
/// newest first (Owner, Admin): method, path, status, latency and, for
/// errors, the `scimType` and detail; bodies with secrets and personal
/// attributes other than `userName` masked. The newest 200 are kept.
#[utoipa::path(get, path = "/api/v1/scim/requests", tag = "setup", params(ScimRequestParams),
    responses((status = 200, body = Page<ScimRequestView>), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_scim_requests(
    State(s): State<AppState>,
    AdminActor(a): AdminActor,
    ApiQuery(p): ApiQuery<ScimRequestParams>,
) -> ApiResult<Json<Page<ScimRequestView>>> {
    let items = s.roster.scim_requests(&a, p.limit).await?.into_iter().map(ScimRequestView::from).collect();
    Ok(Json(Page { items, next_cursor: None }))
}
