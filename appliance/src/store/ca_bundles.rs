//! CA bundles for TLS health checks, by name: the PEM text as uploaded
//! (checked by `health::ca` before it gets here, through the control task).
//! A write and its event are one transaction.

use rusqlite::params;

use super::{Store, StoreError};
use crate::events::NewEvent;

impl Store {
    /// Every stored bundle: (name, PEM text), by name.
    pub(crate) fn ca_bundles(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, pem FROM ca_bundles ORDER BY name")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Store bundle `name` (replacing one of that name) with its event.
    pub(crate) fn put_ca_bundle(
        &self,
        name: &str,
        pem: &str,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        self.transact(|tx, now| {
            tx.execute(
                "INSERT INTO ca_bundles (name, pem, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET pem = excluded.pem, updated_at = excluded.updated_at",
                params![name, pem, now],
            )?;
            Ok(((), Some(event)))
        })
    }

    /// Remove bundle `name` with its event; whether it existed.
    pub(crate) fn delete_ca_bundle(&self, name: &str, event: NewEvent) -> Result<bool, StoreError> {
        self.transact(|tx, _| {
            let removed = tx.execute("DELETE FROM ca_bundles WHERE name = ?1", params![name])? > 0;
            Ok((removed, removed.then_some(event)))
        })
    }
}
