//! The operator API under `/api/v1/operator`, for the product's back office
//! and billing system with an operator key (`roster operator-key create`):
//! organizations across the deployment, and the answers to their billing
//! requests. Every admin route also takes an operator key with a
//! `Roster-Organization` header, acting on that organization as its Owner.

use super::admin::CredentialCreated;
use super::error::Problem;
use super::extract::{ApiJson, ApiPath, ApiQuery, OperatorCaller};
use super::AppState;
use crate::domains::DomainName;
use crate::model::*;
use crate::service::*;
use crate::store::{BillingRequest, Member, Organization};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

type ApiResult<T> = Result<T, Problem>;

/// The operator routes with their OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(operator_list_organizations, operator_create_organization))
        .routes(routes!(operator_get_organization, operator_change_organization, operator_delete_organization))
        .routes(routes!(operator_list_billing_requests))
        .routes(routes!(operator_review_billing_request))
        .routes(routes!(operator_approve_billing_request))
        .routes(routes!(operator_reject_billing_request))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct OrganizationParams {
    /// Only the organization with this SSO tenant ID.
    #[param(value_type = Option<String>, pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[A-Za-z0-9._:-]{1,128}[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
    tenant_id: Option<TenantId>,
    /// Only the organization that verified this email domain (a name that
    /// cannot be a domain names none).
    #[param(max_length = 253)]
    domain: Option<String>,
}

/// Every organization, or those a tenant ID or verified domain names.
#[utoipa::path(get, path = "/api/v1/operator/organizations", tag = "operator", params(OrganizationParams),
    responses((status = 200, body = Vec<Organization>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn operator_list_organizations(
    State(s): State<AppState>,
    OperatorCaller(_op): OperatorCaller,
    ApiQuery(p): ApiQuery<OrganizationParams>,
) -> ApiResult<Json<Vec<Organization>>> {
    if p.domain.as_ref().is_some_and(|d| d.chars().count() > 253) {
        return Err(Problem::bad_request("domain: a domain name has at most 253 characters"));
    }
    let domain = match p.domain.as_deref().map(DomainName::parse) {
        Some(Err(_)) => return Ok(Json(Vec::new())),
        other => other.and_then(Result::ok),
    };
    let lookup = OrganizationLookup { tenant_id: p.tenant_id, domain };
    Ok(Json(s.roster.find_organizations(&lookup).await?))
}

/// A new organization as the back office sells it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OrganizationOrder {
    name: Name,
    /// Its first Owner, an active member at once.
    owner_email: Email,
    /// Purchased seats, at least 1 (the Owner's).
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(with = "crate::model::whole_number")]
    purchased: i64,
    /// `enterprise_seat_yearly` when not given.
    plan: Option<Plan>,
    contact_email: Option<Email>,
}

/// A created organization, its Owner, and the Owner's API key (shown once).
#[derive(Debug, Serialize, ToSchema)]
struct OrganizationCreated {
    organization: Organization,
    owner: Member,
    api_key: CredentialCreated,
}

/// Creates an organization with its first Owner and an Owner API key.
#[utoipa::path(post, path = "/api/v1/operator/organizations", tag = "operator", request_body = OrganizationOrder,
    responses((status = 201, body = OrganizationCreated), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn operator_create_organization(
    State(s): State<AppState>,
    OperatorCaller(op): OperatorCaller,
    ApiJson(order): ApiJson<OrganizationOrder>,
) -> ApiResult<(StatusCode, Json<OrganizationCreated>)> {
    let new = NewOrganization {
        name: order.name,
        seats: order.purchased,
        owner_email: order.owner_email,
        plan: order.plan.unwrap_or(Plan::EnterpriseSeatYearly),
        contact_email: order.contact_email,
    };
    let created = s.roster.create_organization(new, &op).await?;
    let api_key =
        CredentialCreated { credential: created.api_key, secret: created.api_key_secret.expose().to_string() };
    Ok((
        StatusCode::CREATED,
        Json(OrganizationCreated { organization: created.organization, owner: created.owner, api_key }),
    ))
}

/// An organization with its seats.
#[derive(Debug, Serialize, ToSchema)]
struct OrganizationWithSeats {
    #[serde(flatten)]
    organization: Organization,
    seats: Seats,
}

/// One organization, with its seats.
#[utoipa::path(get, path = "/api/v1/operator/organizations/{id}", tag = "operator",
    params(("id" = Uuid, Path, description = "Organization id")),
    responses((status = 200, body = OrganizationWithSeats), (status = 404, body = Problem)))]
async fn operator_get_organization(
    State(s): State<AppState>,
    OperatorCaller(op): OperatorCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<OrganizationWithSeats>> {
    let actor = op.on(id);
    let organization = s.roster.organization(&actor).await?;
    let seats = s.roster.seats(&actor).await?;
    Ok(Json(OrganizationWithSeats { organization, seats }))
}

/// Changes an organization's name, contact, plan, purchased seats, seat
/// policy, enforcement or features. Lowering seats below those in use cuts
/// nobody here: the reconcile plan lists who would be cut.
#[utoipa::path(patch, path = "/api/v1/operator/organizations/{id}", tag = "operator",
    params(("id" = Uuid, Path, description = "Organization id")), request_body = OperatorOrganizationChange,
    responses((status = 200, body = OrganizationWithSeats), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn operator_change_organization(
    State(s): State<AppState>,
    OperatorCaller(op): OperatorCaller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<OperatorOrganizationChange>,
) -> ApiResult<Json<OrganizationWithSeats>> {
    let actor = op.on(id);
    let organization = s.roster.change_organization_as_operator(&actor, change).await?;
    let seats = s.roster.seats(&actor).await?;
    Ok(Json(OrganizationWithSeats { organization, seats }))
}

/// Deletes an organization and everything in it but its audit trail.
#[utoipa::path(delete, path = "/api/v1/operator/organizations/{id}", tag = "operator",
    params(("id" = Uuid, Path, description = "Organization id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn operator_delete_organization(
    State(s): State<AppState>,
    OperatorCaller(op): OperatorCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    s.roster.delete_organization(&op.on(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct BillingRequestParams {
    /// Only requests in this state; every state when not given.
    status: Option<BillingRequestStatus>,
}

/// Billing requests of every organization, newest first (at most 1,000).
#[utoipa::path(get, path = "/api/v1/operator/billing/requests", tag = "operator", params(BillingRequestParams),
    responses((status = 200, body = Vec<BillingRequest>), (status = 403, body = Problem)))]
async fn operator_list_billing_requests(
    State(s): State<AppState>,
    OperatorCaller(_op): OperatorCaller,
    ApiQuery(p): ApiQuery<BillingRequestParams>,
) -> ApiResult<Json<Vec<BillingRequest>>> {
    Ok(Json(s.roster.billing_requests_for_operator(p.status).await?))
}

/// A billing request with its organization, seats and, for a pending
/// number of seats, the reconcile plan approving it would lead to.
#[utoipa::path(get, path = "/api/v1/operator/billing/requests/{id}", tag = "operator",
    params(("id" = Uuid, Path, description = "Billing request id")),
    responses((status = 200, body = BillingRequestReview), (status = 404, body = Problem)))]
async fn operator_review_billing_request(
    State(s): State<AppState>,
    OperatorCaller(_op): OperatorCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<BillingRequestReview>> {
    Ok(Json(s.roster.review_billing_request(id).await?))
}

/// Approves a pending request: the organization's seats, policy or plan
/// become what was asked (events `seats.updated`, `seats.change_approved`).
#[utoipa::path(post, path = "/api/v1/operator/billing/requests/{id}/approve", tag = "operator",
    params(("id" = Uuid, Path, description = "Billing request id")),
    responses((status = 200, body = BillingApproval), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn operator_approve_billing_request(
    State(s): State<AppState>,
    OperatorCaller(op): OperatorCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<BillingApproval>> {
    Ok(Json(s.roster.approve_billing_request(&op, id).await?))
}

/// Rejects a pending request with a reason the requester sees (event `seats.change_rejected`).
#[utoipa::path(post, path = "/api/v1/operator/billing/requests/{id}/reject", tag = "operator",
    params(("id" = Uuid, Path, description = "Billing request id")), request_body = BillingRejection,
    responses((status = 200, body = BillingRequest), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn operator_reject_billing_request(
    State(s): State<AppState>,
    OperatorCaller(op): OperatorCaller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(rejection): ApiJson<BillingRejection>,
) -> ApiResult<Json<BillingRequest>> {
    Ok(Json(s.roster.reject_billing_request(&op, id, rejection).await?))
}
