//! Members' admin state (enabled, draining, disabled): one row per member
//! of the desired config, created and removed with config versions
//! (`config_versions`), changed here by member actions. A change and its
//! event are written in one transaction.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::config::{AdminState, MemberKey};
use crate::events::{EventKind, NewEvent};

impl Store {
    /// Every member's admin state.
    pub fn admin_states(&self) -> Result<BTreeMap<MemberKey, AdminState>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT pool, member, state FROM member_admin_state")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut states = BTreeMap::new();
        for row in rows {
            let (pool, member, state) = row?;
            // The CHECK constraint guarantees one of the three names.
            let state = AdminState::parse(&state).unwrap_or(AdminState::Enabled);
            states.insert((pool, member), state);
        }
        Ok(states)
    }

    /// When a member's admin state last changed (RFC 3339).
    pub(crate) fn admin_state_changed_at(
        &self,
        pool: &str,
        member: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT changed_at FROM member_admin_state WHERE pool = ?1 AND member = ?2",
                params![pool, member],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Every member's admin state with the time it was set (RFC 3339),
    /// as the HA peer receives them.
    pub(crate) fn admin_rows(&self) -> Result<Vec<(MemberKey, AdminState, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pool, member, state, changed_at FROM member_admin_state ORDER BY pool, member",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut states = Vec::new();
        for row in rows {
            let (pool, member, state, changed_at) = row?;
            let state = AdminState::parse(&state).unwrap_or(AdminState::Enabled);
            states.push(((pool, member), state, changed_at));
        }
        Ok(states)
    }

    /// Set one member's admin state as the HA peer set it, with the peer's
    /// time (a drain keeps its start, so its deadline is the same on both),
    /// and log it. Returns the previous state.
    pub(crate) fn set_admin_state_at(
        &self,
        pool: &str,
        member: &str,
        state: AdminState,
        changed_at: &str,
        actor: &str,
    ) -> Result<AdminState, StoreError> {
        self.write_admin_state(pool, member, state, actor, Some(changed_at))
    }

    /// Set one member's admin state and log it, durably. Returns the previous
    /// state.
    pub fn set_admin_state(
        &self,
        pool: &str,
        member: &str,
        state: AdminState,
        actor: &str,
    ) -> Result<AdminState, StoreError> {
        self.write_admin_state(pool, member, state, actor, None)
    }

    fn write_admin_state(
        &self,
        pool: &str,
        member: &str,
        state: AdminState,
        actor: &str,
        at: Option<&str>,
    ) -> Result<AdminState, StoreError> {
        self.transact(|tx, now| {
        let changed_at = at.unwrap_or(now);
        let previous: Option<String> = tx
            .query_row(
                "SELECT state FROM member_admin_state WHERE pool = ?1 AND member = ?2",
                params![pool, member],
                |row| row.get(0),
            )
            .optional()?;
        let Some(previous) = previous.as_deref().and_then(AdminState::parse) else {
            return Err(StoreError::UnknownMember {
                pool: pool.to_owned(),
                member: member.to_owned(),
            });
        };
        tx.execute(
            "UPDATE member_admin_state SET state = ?3, changed_at = ?4 WHERE pool = ?1 AND member = ?2",
            params![pool, member, state.as_str(), changed_at],
        )?;
        let event = NewEvent {
                kind: EventKind::Admin,
                pool: Some(pool.to_owned()),
                member: Some(member.to_owned()),
                message: format!(
                    "{actor} set {pool}/{member} {} (was {})",
                    state.as_str(),
                    previous.as_str()
                ),
                detail: Some(
                    serde_json::json!({"from": previous.as_str(), "to": state.as_str(), "actor": actor}),
                ),
            };
        Ok((previous, Some(event)))
        })
    }
}
