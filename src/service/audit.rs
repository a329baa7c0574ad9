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
