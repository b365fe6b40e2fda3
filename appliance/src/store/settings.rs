//! Appliance settings (`key` → `value`), such as the stable appliance id,
//! and the installed licences (the newest is in force; installing one logs
//! it in the same transaction).

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Store, StoreError};
use crate::events::{EventKind, NewEvent};

/// A setting written in the same transaction as another change, so that
/// neither is stored without the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingWrite<'a> {
    Set { key: &'a str, value: &'a str },
    Remove { key: &'a str },
}

impl SettingWrite<'_> {
    pub(super) fn run(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        match self {
            Self::Set { key, value } => tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?,
            Self::Remove { key } => {
                tx.execute("DELETE FROM settings WHERE key = ?1", params![key])?
            }
        };
        Ok(())
    }
}

impl Store {
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    }

    pub(crate) fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write_setting(SettingWrite::Set { key, value })
    }

    pub(crate) fn remove_setting(&self, key: &str) -> Result<(), StoreError> {
        self.write_setting(SettingWrite::Remove { key })
    }

    fn write_setting(&self, write: SettingWrite<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        write.run(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// The text of the licence in force (the newest installed).
    pub(crate) fn current_licence(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT text FROM licences ORDER BY id DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Store a verified licence and log it.
    pub(crate) fn install_licence(
        &self,
        licence_id: &str,
        customer: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        self.transact(|tx, now| {
            tx.execute(
                "INSERT INTO licences (licence_id, text, installed_at) VALUES (?1, ?2, ?3)",
                params![licence_id, text, now],
            )?;
            let event = NewEvent {
                kind: EventKind::License,
                message: format!("Licence {licence_id} for {customer} installed"),
                pool: None,
                member: None,
                detail: None,
            };
            Ok(((), Some(event)))
        })
    }

    /// Read a setting, or store `make()`'s value if there is none yet.
    pub(crate) fn setting_or_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![key, make()],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![key],
            |row| row.get(0),
        )?)
    }
}
