//! Billing requests: what an organization buys (purchased seats, the seat
//! policy, the plan) is sold by the deployment's operator. Unless the
//! deployment lets organizations serve themselves (`billing.self_serve_seats`),
//! an Owner's or Admin's change of these becomes a request, an event
//! (`seats.change_requested`) the product's billing answers through the
//! operator API: approved, the change is made (a decrease shows its
//! reconcile plan first); rejected, the requester sees why.

use super::*;
use crate::model::*;
use crate::store::{BillingRequest, Organization};
use chrono::{DateTime, Utc};

/// The longest note a requester may leave, and the longest reason for a rejection.
const MAX_NOTE_CHARS: usize = 1000;

/// What an organization's change of seats came to.
#[derive(Debug, Clone)]
pub enum SeatsOutcome {
    /// Made at once (the operator, or a self-serve deployment).
    Changed(Seats),
    /// Waiting for the operator.
    Requested(BillingRequest),
}

/// A change of seats, seat policy or plan that an organization asks for.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingAsk {
    #[schema(minimum = 0, maximum = 1_000_000)]
    #[serde(default, with = "crate::model::whole_number::option")]
    pub purchased: Option<i64>,
    pub seat_policy: Option<SeatPolicy>,
    pub plan: Option<Plan>,
    /// Words for the operator (at most 1,000 characters).
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

/// A request as the operator reviews it: the organization as it is, its
/// seats, and for a number of seats the reconcile plan that would follow
/// (who would be suspended or lose an invitation, when it is a decrease).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BillingRequestReview {
    pub request: BillingRequest,
    pub organization: Organization,
    pub seats: Seats,
    pub plan_after: Option<ReconcilePlan>,
}

/// The operator's rejection.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingRejection {
    /// Why, in words the requester will read (at most 1,000 characters).
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub reason: String,
}

/// An approved request and the seats that followed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BillingApproval {
    pub request: BillingRequest,
    pub organization: Organization,
    pub seats: Seats,
}

fn text(field: &str, value: Option<&str>) -> ServiceResult<Option<String>> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if value.chars().count() > MAX_NOTE_CHARS {
        return Err(ServiceError::invalid(field, format!("at most {MAX_NOTE_CHARS} characters")));
    }
    Ok(Some(value.to_string()))
}

impl Roster {
    /// Whether organizations change their own seats and plan in this deployment.
    pub fn self_serve_seats(&self) -> bool {
        self.settings.self_serve_seats
    }

    /// Whether `actor`'s change of seats or plan waits for the operator.
    pub(super) fn needs_approval(&self, actor: &Actor) -> bool {
        !self.settings.self_serve_seats && !actor.is_operator()
    }

    /// Asks the operator for a change of seats, seat policy or plan (Owner, Admin).
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn request_billing_change(&self, actor: &Actor, ask: BillingAsk) -> ServiceResult<BillingRequest> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let request = file_request(&mut *tx, actor, &org, ask, now).await?;
        tx.commit().await?;
        Ok(request)
    }

    /// The organization's requests, newest first (Owner, Admin).
    pub async fn billing_requests(&self, actor: &Actor) -> ServiceResult<Vec<BillingRequest>> {
        actor.require(Role::Admin)?;
        Ok(self.store.read().await?.list_billing_requests(Some(actor.org_id), None, 100).await?)
    }

    /// Withdraws the organization's pending request (Owner, Admin).
    #[tracing::instrument(skip_all, fields(org = %actor.org_id, request = %id))]
    pub async fn cancel_billing_request(&self, actor: &Actor, id: Uuid) -> ServiceResult<BillingRequest> {
        actor.require(Role::Admin)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org = lock_org(&mut *tx, actor.org_id).await?;
        let before = pending_request(&mut *tx, Some(org.id), id).await?;
        let reason = Some("withdrawn by the organization".to_string());
        let request = decided(&before, BillingRequestStatus::Cancelled, reason, &actor.id, now);
        tx.update_billing_request(&request).await?;
        tx.insert_audit(actor.audit(now, "seats.change_cancelled", id, Some(&before), Some(&request))).await?;
        tx.commit().await?;
        Ok(request)
    }

    /// Every organization's requests (pending only, or of `status`), newest first, for the operator.
    pub async fn billing_requests_for_operator(
        &self,
        status: Option<BillingRequestStatus>,
    ) -> ServiceResult<Vec<BillingRequest>> {
        Ok(self.store.read().await?.list_billing_requests(None, status, 1000).await?)
    }

    /// A request with what approving it would lead to.
    pub async fn review_billing_request(&self, id: Uuid) -> ServiceResult<BillingRequestReview> {
        let mut tx = self.store.read().await?;
        let request = tx.get_billing_request(id).await?.ok_or(ServiceError::NotFound("billing request"))?;
        let organization = tx.get_org(request.org_id).await?.ok_or(ServiceError::NotFound("organization"))?;
        let now = self.clock.now();
        let seats = Seats::of(&organization, tx.seat_usage(organization.id, now).await?);
        let plan_after = match (request.status, request.purchased) {
            (BillingRequestStatus::Pending, Some(purchased)) => {
                let mut after = organization.clone();
                after.purchased_seats = purchased;
                after.seat_policy = request.seat_policy.unwrap_or(after.seat_policy);
                Some(plan_in(&mut *tx, &after, now).await?)
            }
            _ => None,
        };
        Ok(BillingRequestReview { request, organization, seats, plan_after })
    }

    /// Approves a pending request: the organization's seats, policy and
    /// plan become what was asked, audited as the operator's change.
    #[tracing::instrument(skip_all, fields(request = %id))]
    pub async fn approve_billing_request(&self, by: &Operator, id: Uuid) -> ServiceResult<BillingApproval> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org_id = tx.get_billing_request(id).await?.ok_or(ServiceError::NotFound("billing request"))?.org_id;
        let before = lock_org(&mut *tx, org_id).await?;
        let actor = by.on(org_id);
        let pending = pending_request(&mut *tx, Some(org_id), id).await?;
        let mut org = before.clone();
        org.purchased_seats = pending.purchased.unwrap_or(org.purchased_seats);
        org.seat_policy = pending.seat_policy.unwrap_or(org.seat_policy);
        org.plan = pending.plan.unwrap_or(org.plan);
        org.updated_at = now;
        tx.update_org(&org).await?;
        let seats = Seats::of(&org, tx.seat_usage(org.id, now).await?);
        if org.plan != before.plan {
            tx.insert_audit(actor.audit(now, "organization.updated", org.id, Some(&before), Some(&org))).await?;
        }
        if (org.purchased_seats, org.seat_policy) != (before.purchased_seats, before.seat_policy) {
            tx.insert_audit(seats_updated(&actor, now, &before, &seats)).await?;
        }
        let request = decided(&pending, BillingRequestStatus::Approved, None, &by.id, now);
        tx.update_billing_request(&request).await?;
        tx.insert_audit(actor.audit(now, "seats.change_approved", id, Some(&pending), Some(&request))).await?;
        tx.commit().await?;
        metrics::gauge!("roster_seats_overage", "org" => org.id.to_string()).set(seats.overage as f64);
        Ok(BillingApproval { request, organization: org, seats })
    }

    /// Rejects a pending request with a reason its requester sees.
    #[tracing::instrument(skip_all, fields(request = %id))]
    pub async fn reject_billing_request(
        &self,
        by: &Operator,
        id: Uuid,
        rejection: BillingRejection,
    ) -> ServiceResult<BillingRequest> {
        let reason = text("reason", Some(&rejection.reason))?
            .ok_or_else(|| ServiceError::invalid("reason", "say why, for the requester"))?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let org_id = tx.get_billing_request(id).await?.ok_or(ServiceError::NotFound("billing request"))?.org_id;
        lock_org(&mut *tx, org_id).await?;
        let pending = pending_request(&mut *tx, Some(org_id), id).await?;
        let request = decided(&pending, BillingRequestStatus::Rejected, Some(reason), &by.id, now);
        tx.update_billing_request(&request).await?;
        let actor = by.on(org_id);
        tx.insert_audit(actor.audit(now, "seats.change_rejected", id, Some(&pending), Some(&request))).await?;
        tx.commit().await?;
        Ok(request)
    }
}

/// `request` answered (or withdrawn) by `by` at `now`.
fn decided(
    request: &BillingRequest,
    status: BillingRequestStatus,
    reason: Option<String>,
    by: &str,
    now: DateTime<Utc>,
) -> BillingRequest {
    BillingRequest { status, reason, decided_by: Some(by.to_string()), decided_at: Some(now), ..request.clone() }
}

/// The pending request `id` (of `org_id` when given); 404 when there is
/// none, 409 when it was answered or withdrawn already.
async fn pending_request(tx: &mut dyn Tx, org_id: Option<Uuid>, id: Uuid) -> ServiceResult<BillingRequest> {
    let request = tx
        .get_billing_request(id)
        .await?
        .filter(|r| org_id.is_none_or(|o| o == r.org_id))
        .ok_or(ServiceError::NotFound("billing request"))?;
    if request.status != BillingRequestStatus::Pending {
        return Err(ServiceError::Conflict(format!("the request is {} already", request.status)));
    }
    Ok(request)
}

/// Files `ask` for `org` (locked in `tx`): what it would change, compared
/// with the organization as it is, becomes the pending request. An earlier
/// pending request is superseded (cancelled), and what it asked that `ask`
/// does not name is carried over: seats asked for, then a plan, make one
/// request for both. Audited as `seats.change_requested`, an event the
/// product's billing hears.
pub(super) async fn file_request(
    tx: &mut dyn Tx,
    actor: &Actor,
    org: &Organization,
    ask: BillingAsk,
    now: DateTime<Utc>,
) -> ServiceResult<BillingRequest> {
    let earlier = tx.list_billing_requests(Some(org.id), Some(BillingRequestStatus::Pending), 10).await?;
    let purchased = ask
        .purchased
        .map(|p| parse_seats(p).map_err(|e| ServiceError::invalid("purchased", e)))
        .transpose()?
        .or_else(|| earlier.iter().find_map(|r| r.purchased))
        .filter(|p| *p != org.purchased_seats);
    let seat_policy =
        ask.seat_policy.or_else(|| earlier.iter().find_map(|r| r.seat_policy)).filter(|p| *p != org.seat_policy);
    let plan = ask.plan.or_else(|| earlier.iter().find_map(|r| r.plan)).filter(|p| *p != org.plan);
    if purchased.is_none() && seat_policy.is_none() && plan.is_none() {
        return Err(ServiceError::invalid(
            "purchased",
            "the request changes nothing: name a number of seats, seat policy or plan other than the current one",
        ));
    }
    let note = text("note", ask.note.as_deref())?.or_else(|| earlier.iter().find_map(|r| r.note.clone()));
    for earlier in earlier {
        let reason = Some("superseded by a newer request".to_string());
        let superseded = decided(&earlier, BillingRequestStatus::Cancelled, reason, &actor.id, now);
        tx.update_billing_request(&superseded).await?;
        let action = "seats.change_cancelled";
        tx.insert_audit(actor.audit(now, action, earlier.id, Some(&earlier), Some(&superseded))).await?;
    }
    let request = BillingRequest {
        id: Uuid::now_v7(),
        org_id: org.id,
        purchased,
        seat_policy,
        plan,
        note,
        status: BillingRequestStatus::Pending,
        reason: None,
        requested_by: actor.id.clone(),
        created_at: now,
        decided_by: None,
        decided_at: None,
    };
    tx.insert_billing_request(&request).await?;
    tx.insert_audit(actor.audit(now, "seats.change_requested", request.id, None::<&()>, Some(&request))).await?;
    Ok(request)
}
