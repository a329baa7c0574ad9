//! Background jobs, coordinated through the database so that exactly one
//! replica runs each: a job runs only while its replica holds the job's
//! lease, which it renews every tick and which another replica may take once
//! it has expired (its holder stopped or hung).

use crate::service::{Roster, RECONCILE_JOB};
use std::time::Duration;
use uuid::Uuid;

/// The lease name of domain re-verification.
pub const DOMAIN_CHECKS: &str = "domain-checks";

/// How many due domains one tick checks at most.
const DOMAIN_BATCH: i64 = 500;

/// Runs one tick of domain re-verification as `holder`, if it can take the
/// lease for `lease`. Returns how many domains it checked, or `None` when
/// another replica holds the lease.
pub async fn domain_checks_tick(
    roster: &Roster,
    holder: &str,
    lease: Duration,
    concurrency: usize,
) -> anyhow::Result<Option<usize>> {
    let now = roster.now();
    let until = now + chrono::Duration::from_std(lease)?;
    let mut tx = roster.store().begin().await?;
    let held = tx.try_acquire_lease(DOMAIN_CHECKS, holder, now, until).await?;
    tx.commit().await?;
    if !held {
        return Ok(None);
    }
    Ok(Some(roster.check_due_domains(DOMAIN_BATCH, concurrency).await?))
}

/// Queues the notices of credentials expiring within a week, as `holder`,
/// if it can take the lease (one replica at a time, so none is sent twice).
/// Returns how many credentials, or `None` when another replica holds it.
pub async fn credential_notices_tick(roster: &Roster, holder: &str, lease: Duration) -> anyhow::Result<Option<usize>> {
    let now = roster.now();
    let until = now + chrono::Duration::from_std(lease)?;
    let mut tx = roster.store().begin().await?;
    let held = tx.try_acquire_lease(crate::service::CREDENTIAL_NOTICES, holder, now, until).await?;
    tx.commit().await?;
    if !held {
        return Ok(None);
    }
    Ok(Some(roster.notify_expiring_credentials().await?))
}

/// Runs the reconciler if its run is due and no other replica claimed it:
/// the claim moves the next run `interval` ahead, so across all replicas it
/// runs once per interval. Returns the run, or `None` when not due here.
pub async fn reconcile_tick(
    roster: &Roster,
    holder: &str,
    interval: Duration,
) -> anyhow::Result<Option<crate::store::JobRun>> {
    let now = roster.now();
    let next = now + chrono::Duration::from_std(interval)?;
    let mut tx = roster.store().begin().await?;
    let claimed = tx.claim_job_run(RECONCILE_JOB, holder, now, next).await?;
    tx.commit().await?;
    if !claimed {
        return Ok(None);
    }
    let summary = match roster.reconcile_all(holder).await {
        Ok((applied, left)) => serde_json::json!({ "applied": applied, "left_for_admins": left }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    let run = crate::store::JobRun {
        id: Uuid::now_v7(),
        job: RECONCILE_JOB.to_string(),
        holder: holder.to_string(),
        started_at: now,
        summary: Some(summary),
    };
    let mut tx = roster.store().begin().await?;
    tx.insert_job_run(&run).await?;
    tx.commit().await?;
    Ok(Some(run))
}

/// Runs `round` for ever: again at once after a round that says there may
/// be more (`true`), else once `wake` is notified or `poll` (±10%) has
/// passed. A notification during a round wakes the next wait.
pub async fn woken_or_polled<F, Fut>(wake: std::sync::Arc<tokio::sync::Notify>, poll: Duration, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        // Registered before the round, so a notification during it counts.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if round().await {
            continue;
        }
        let jitter = rand::random::<f64>() * 0.2 + 0.9;
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(poll.mul_f64(jitter)) => {}
        }
    }
}

/// When the background jobs run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// How often a replica looks for due work.
    pub tick: Duration,
    /// How many domain checks run at once.
    pub concurrency: usize,
    /// How often the reconciler runs, across all replicas.
    pub reconcile_interval: Duration,
}

/// Starts the background jobs of this replica; they stop when the returned handle is aborted.
pub fn spawn(roster: Roster, schedule: Schedule) -> tokio::task::JoinHandle<()> {
    let holder = format!("replica-{}", Uuid::new_v4());
    let Schedule { tick, concurrency, reconcile_interval } = schedule;
    tokio::spawn(async move {
        // A lease outlives a few ticks, so a busy tick does not hand the job over.
        let lease = tick * 3;
        loop {
            match domain_checks_tick(&roster, &holder, lease, concurrency).await {
                Ok(Some(n)) if n > 0 => tracing::info!(checked = n, "domain re-verification tick"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "domain re-verification tick failed"),
            }
            match reconcile_tick(&roster, &holder, reconcile_interval).await {
                Ok(Some(run)) => tracing::info!(summary = ?run.summary, "reconcile run"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reconcile run failed"),
            }
            match credential_notices_tick(&roster, &holder, lease).await {
                Ok(Some(n)) if n > 0 => tracing::info!(credentials = n, "expiring-credential notices queued"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring-credential notices failed"),
            }
            if let Err(e) = roster.store().optimize().await {
                tracing::warn!(error = %e, "refreshing planner statistics failed");
            }
            // Expired SSO attempts, codes and sessions; deleting is idempotent, so every replica may.
            match roster.purge_sso().await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "expired SSO records purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "SSO purge failed"),
            }
            // Jitter keeps replicas from ticking in lock-step.
            let jitter = rand::random::<f64>() * 0.2 + 0.9;
            tokio::time::sleep(tick.mul_f64(jitter)).await;
        }
    })
}
