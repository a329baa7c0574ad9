//! Seats: the one seat primitive every door uses, and the billing view.
//!
//! `used = active members + unexpired pending invitations`. A change that
//! needs seats calls [`reserve_seats`] inside its own transaction, after
//! [`lock_org`](super::lock_org): the lock serializes every seat-taking
//! change of the organization, on SQLite and PostgreSQL alike and across
//! `roster` processes, so the count read under it cannot go stale before
//! commit.

use super::*;
use crate::model::{parse_seats, SeatEnforcement, SeatPolicy};
use crate::store::Organization;
use chrono::{DateTime, Utc};

/// The seats an organization has.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Seats {
    pub purchased: i64,
    /// Active members plus pending invitations.
    pub used: i64,
    /// `purchased - used`, never below 0.
    pub available: i64,
    pub active_members: i64,
    pub pending_invitations: i64,
    pub policy: SeatPolicy,
    /// Whether the background reconciler applies seat cuts itself (`automatic`)
    /// or leaves them in the reconcile plan for an admin (`manual`).
    pub enforcement: SeatEnforcement,
    /// Seats used beyond those purchased (possible under the `overage` policy,
    /// or after purchased seats were lowered).
    pub overage: i64,
}

impl Seats {
    pub(super) fn of(org: &Organization, usage: crate::store::SeatUsage) -> Self {
        let used = usage.used();
        Seats {
            purchased: org.purchased_seats,
            used,
            available: (org.purchased_seats - used).max(0),
            active_members: usage.active_members,
            pending_invitations: usage.pending_invitations,
            policy: org.seat_policy,
            enforcement: org.seat_enforcement,
            overage: (used - org.purchased_seats).max(0),
        }
    }
}

/// The outcome of a reservation: how far over the purchased seats it went (0 normally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub overage: i64,
}

/// Reserves `n` seats in `org`, which the caller has locked in `tx`.
/// Under the strict policy it refuses when fewer than `n` are free; under
/// `overage` it grants them and reports the overage for the audit record.
pub async fn reserve_seats(
    tx: &mut dyn Tx,
    org: &Organization,
    n: i64,
    now: DateTime<Utc>,
) -> ServiceResult<Reservation> {
    let used = tx.seat_usage(org.id, now).await?.used();
    let after = used + n;
    if after <= org.purchased_seats {
        return Ok(Reservation { overage: 0 });
    }
    match org.seat_policy {
        SeatPolicy::Strict => {
            metrics::counter!("roster_seat_limit_refusals_total").increment(1);
            Err(ServiceError::SeatLimitReached { purchased: org.purchased_seats, used, requested: n })
        }
        SeatPolicy::Overage => {
            metrics::counter!("roster_seat_overage_grants_total").increment(1);
            Ok(Reservation { overage: after - org.purchased_seats })
        }
    }
}

/// The audit record of a change of seats: what they were, and are now.
pub(super) fn seats_updated(
    actor: &Actor,
    now: DateTime<Utc>,
    before: &Organization,
    after: &Seats,
) -> crate::store::NewAudit {
    let old = serde_json::json!({
        "purchased": before.purchased_seats,
        "policy": before.seat_policy,
        "enforcement": before.seat_enforcement,
    });
    actor.audit(now, "seats.updated", before.id, Some(&old), Some(after))
}

/// A change to the organization's seats.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatsChange {
    #[schema(minimum = 0, maximum = 1_000_000)]
    #[serde(with = "crate::model::whole_number")]
    pub purchased: i64,
    pub policy: Option<SeatPolicy>,
    pub enforcement: Option<SeatEnforcement>,
}

impl Roster {
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn seats(&self, actor: &Actor) -> ServiceResult<Seats> {
        actor.require(Role::Read)?;
        let mut tx = self.store.read().await?;
        let org = tx.get_org(actor.org_id).await?.ok_or(ServiceError::NotFound("organization"))?;
        let usage = tx.seat_usage(org.id, self.clock.now()).await?;
        Ok(Seats::of(&org, usage))
    }

    /// Sets purchased seats (and optionally the policy and enforcement).
    /// Lowering them below the seats in use cuts nobody here: the overage is
    /// shown in [`Seats`], and the reconcile plan lists who would be cut.
    ///
    /// Seats and the seat policy are sold by the operator: an Owner's or
    /// Admin's change of them becomes a billing request (the enforcement,
    /// the organization's own choice, is set at once), unless the
    /// deployment is self-serve.
    #[tracing::instrument(skip_all, fields(org = %actor.org_id))]
    pub async fn set_seats(&self, actor: &Actor, change: SeatsChange) -> ServiceResult<SeatsOutcome> {
        actor.require(Role::Admin)?;
        let purchased = parse_seats(change.purchased).map_err(|e| ServiceError::invalid("purchased", e))?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let before = lock_org(&mut *tx, actor.org_id).await?;
        let mut org = before.clone();
        let sold_changes = purchased != org.purchased_seats || change.policy.is_some_and(|p| p != org.seat_policy);
        let request = if sold_changes && self.needs_approval(actor) {
            let ask = BillingAsk { purchased: Some(purchased), seat_policy: change.policy, plan: None, note: None };
            Some(billing::file_request(&mut *tx, actor, &before, ask, now).await?)
        } else {
            org.purchased_seats = purchased;
            org.seat_policy = change.policy.unwrap_or(org.seat_policy);
            None
        };
        org.seat_enforcement = change.enforcement.unwrap_or(org.seat_enforcement);
        let seats = Seats::of(&org, tx.seat_usage(org.id, now).await?);
        if org != before || request.is_none() {
            org.updated_at = now;
            tx.update_org(&org).await?;
            tx.insert_audit(seats_updated(actor, now, &before, &seats)).await?;
        }
        tx.commit().await?;
        metrics::gauge!("roster_seats_overage", "org" => org.id.to_string()).set(seats.overage as f64);
        Ok(match request {
            Some(request) => SeatsOutcome::Requested(request),
            None => SeatsOutcome::Changed(seats),
        })
    }
}
