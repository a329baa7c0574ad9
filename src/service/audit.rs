//! Reading the audit log.

use super::*;
use crate::store::{AuditEntry, AuditFilter};
use chrono::{DateTime, Utc};

/// Which audit records to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

impl Roster {
    pub async fn audit_log(&self, actor: &Actor, q: AuditQuery) -> ServiceResult<Page<AuditEntry>> {
        actor.require(Role::Admin)?;
        let limit = page_size(q.limit)?;
        for (field, value) in [("actor", &q.actor), ("action", &q.action)] {
            if value.as_deref().is_some_and(|v| !plain_text(v, 512)) {
                return Err(ServiceError::invalid(field, "at most 512 characters, without control characters"));
            }
        }
        let before = q
            .cursor
            .as_deref()
            .map(|c| c.parse::<i64>().map_err(|_| ServiceError::invalid("cursor", "is not a cursor this API returned")))
            .transpose()?;
        let filter = AuditFilter {
            action: q.action,
            actor_id: q.actor,
            since: q.since,
            until: q.until,
            before,
            limit: limit + 1,
        };
        let mut items = self.store.read().await?.list_audit(actor.org_id, &filter).await?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

/// A page of the events feed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<crate::store::Event>,
    /// Pass as `after` to read on; the same `after` when there is nothing new yet.
    pub next_after: i64,
}

impl Roster {
    /// The organization's events after position `after` (0: from the start),
    /// in order. Positions are gapless, so a reader that resumes from the
    /// last position it saw misses nothing and sees nothing twice.
    pub async fn events(&self, actor: &Actor, after: Option<i64>, limit: Option<i64>) -> ServiceResult<EventPage> {
        actor.require(Role::Read)?;
        let after = after.unwrap_or(0);
        if after < 0 {
            return Err(ServiceError::invalid("after", "must be 0 or a position the feed returned"));
        }
        let limit = match limit {
            None => MAX_PAGE_SIZE,
            Some(n) if (1..=MAX_EVENT_PAGE).contains(&n) => n,
            Some(n) => {
                return Err(ServiceError::invalid("limit", format!("must be between 1 and {MAX_EVENT_PAGE}, got {n}")))
            }
        };
        let events = self.store.read().await?.list_events(actor.org_id, after, limit).await?;
        let next_after = events.last().map_or(after, |e| e.seq);
        Ok(EventPage { events, next_after })
    }
}

/// The most events one read returns.
pub const MAX_EVENT_PAGE: i64 = 1000;
