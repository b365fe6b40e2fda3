//! The audit log table (`crate::audit`): appended one entry per change,
//! bounded to the newest [`AUDIT_KEPT`] in the same transaction, read newest
//! first with the filters in SQL.

use rusqlite::params;

use super::{Store, StoreError, now_rfc3339};
use crate::audit::{AUDIT_KEPT, Actor, AuditEntry, AuditFilter, AuditKind, Interface, NewAudit};

impl Store {
    pub(crate) fn record_audit(&self, entry: &NewAudit) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = insert_audit(&tx, &now_rfc3339(), entry)?;
        tx.commit()?;
        Ok(id)
    }

    /// Record what the console (`poolgate admin …`) changed, as the local
    /// system user running it.
    pub fn record_console_change(
        &self,
        kind: AuditKind,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<i64, StoreError> {
        let username = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "console".to_owned());
        self.record_audit(&NewAudit {
            actor: Actor {
                username: crate::web::auth::for_log(&username).to_owned(),
                role: None,
                address: None,
                interface: Interface::Console,
                token_id: None,
            },
            kind,
            action: action.to_owned(),
            target: Some(target.to_owned()),
            status: None,
            detail: Some(detail),
        })
    }

    /// Entries matching `filter`, newest first.
    pub(crate) fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, username, role, address, interface, token_id, kind, action, target, status, detail
             FROM audit_log
             WHERE (?1 IS NULL OR username = ?1) AND (?2 IS NULL OR kind = ?2)
               AND (?3 IS NULL OR julianday(at) >= julianday(?3)) AND (?4 IS NULL OR julianday(at) <= julianday(?4))
               AND (?5 IS NULL OR id < ?5)
             ORDER BY id DESC LIMIT ?6",
        )?;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![
                filter.username,
                filter.kind.map(|kind| kind.as_str()),
                filter.since,
                filter.until,
                filter.before,
                limit
            ],
            |row| {
                let detail: Option<String> = row.get(11)?;
                Ok(AuditEntry {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    username: row.get(2)?,
                    role: row.get(3)?,
                    address: row.get(4)?,
                    interface: row.get(5)?,
                    token_id: row.get(6)?,
                    kind: row.get(7)?,
                    action: row.get(8)?,
                    target: row.get(9)?,
                    status: row.get(10)?,
                    detail: detail.and_then(|text| serde_json::from_str(&text).ok()),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Append `entry` and drop what falls beyond [`AUDIT_KEPT`]; the caller
/// commits (a change recorded with its entry writes both at once).
pub(super) fn insert_audit(
    conn: &rusqlite::Connection,
    at: &str,
    entry: &NewAudit,
) -> Result<i64, StoreError> {
    let actor = &entry.actor;
    conn.execute(
        "INSERT INTO audit_log (at, username, role, address, interface, token_id, kind, action, target, status, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            at,
            actor.username,
            actor.role.map(|role| role.as_str()),
            actor.address.map(|address| address.to_string()),
            actor.interface.as_str(),
            actor.token_id,
            entry.kind.as_str(),
            entry.action,
            entry.target,
            entry.status,
            entry.detail.as_ref().map(|detail| detail.to_string()),
        ],
    )?;
    let id = conn.last_insert_rowid();
    // Ids only grow, so the oldest are a range of the primary key.
    conn.execute(
        "DELETE FROM audit_log WHERE id <= ?1",
        params![id - AUDIT_KEPT],
    )?;
    Ok(id)
}
