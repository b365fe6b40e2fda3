//! Desired config versions: every committed config, newest last, as the
//! TOML of its validated form, with where it came from. Recording a version
//! also applies the admin-state changes its diff calls for (members that
//! left lose their row; new members, and those whose configured `state`
//! changed, get the configured one) and logs it, all in one transaction.
//!
//! Nothing here validates: the control task hands over a config it has
//! validated and the diff it computed against the version before; the
//! stored text is parsed again only once per start (by `crate::control`)
//! and by `poolgate export`.

use rusqlite::{OptionalExtension, params};

use super::{SettingWrite, Store, StoreError};
use crate::config::{self, Config, ConfigDiff};
use crate::events::{EventKind, NewEvent};

/// One committed config version as stored (and as a backup carries it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredVersion {
    pub id: i64,
    pub created_at: String,
    /// Where it came from, as its event names it (`API (admin)`, `file …`).
    pub source: String,
    pub toml: String,
}

/// A row of `id, created_at, source, toml`.
fn stored_version(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredVersion> {
    Ok(StoredVersion {
        id: row.get(0)?,
        created_at: row.get(1)?,
        source: row.get(2)?,
        toml: row.get(3)?,
    })
}

impl Store {
    /// The latest committed config version, if any, as stored.
    pub(crate) fn latest_config(&self) -> Result<Option<StoredVersion>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, created_at, source, toml FROM config_versions ORDER BY id DESC LIMIT 1",
                [],
                stored_version,
            )
            .optional()?)
    }

    /// One committed config version, as stored.
    pub(crate) fn config_version(&self, id: i64) -> Result<Option<StoredVersion>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, created_at, source, toml FROM config_versions WHERE id = ?1",
                params![id],
                stored_version,
            )
            .optional()?)
    }

    /// Record `config` (validated by the caller) as the next version, with
    /// the admin-state changes of `diff` (from the latest version to this
    /// one), its event and `also` (a setting that must change with it). The
    /// event is logged when the config changes something, or is the first.
    /// Returns the new version id.
    pub fn record_config(
        &self,
        config: &Config,
        source: &str,
        diff: &ConfigDiff,
        also: Option<SettingWrite<'_>>,
    ) -> Result<i64, StoreError> {
        self.insert_config(config, source, diff, also, None)
    }

    /// Record a config version the HA peer committed, under the peer's
    /// number `version` (`crate::ha`). With `rebase`, the versions after it
    /// are dropped first: the peer's history replaces this appliance's
    /// from there (the caller has reported them as not applied).
    pub(crate) fn record_peer_config(
        &self,
        config: &Config,
        source: &str,
        diff: &ConfigDiff,
        version: i64,
        rebase: Option<i64>,
    ) -> Result<i64, StoreError> {
        self.insert_config(config, source, diff, None, Some((version, rebase)))
    }

    /// The versions after `base`, oldest first, at most `limit`.
    pub(crate) fn config_versions_after(
        &self,
        base: i64,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, created_at, source, toml FROM config_versions WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![base, limit as i64], stored_version)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_config(
        &self,
        config: &Config,
        source: &str,
        diff: &ConfigDiff,
        also: Option<SettingWrite<'_>>,
        peer: Option<(i64, Option<i64>)>,
    ) -> Result<i64, StoreError> {
        let text = config::to_toml(config);
        self.transact(|tx, now| {
            if let Some(write) = also {
                write.run(tx)?;
            }
            let first: bool = tx.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM config_versions)",
                [],
                |row| row.get(0),
            )?;
            let id = match peer {
                None => {
                    tx.execute(
                        "INSERT INTO config_versions (created_at, source, toml) VALUES (?1, ?2, ?3)",
                        params![now, source, text],
                    )?;
                    tx.last_insert_rowid()
                }
                Some((version, rebase)) => {
                    if let Some(base) = rebase {
                        tx.execute("DELETE FROM config_versions WHERE id > ?1", params![base])?;
                        // The next local version follows the peer's, not
                        // the dropped ones.
                        tx.execute(
                            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'config_versions'",
                            params![base],
                        )?;
                    }
                    tx.execute(
                        "INSERT INTO config_versions (id, created_at, source, toml) VALUES (?1, ?2, ?3, ?4)",
                        params![version, now, source, text],
                    )?;
                    version
                }
            };
            for (pool, member) in &diff.members_removed {
                tx.execute(
                    "DELETE FROM member_admin_state WHERE pool = ?1 AND member = ?2",
                    params![pool, member],
                )?;
            }
            for ((pool, member), state) in &diff.admin_states {
                tx.execute(
                    "INSERT INTO member_admin_state (pool, member, state, changed_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (pool, member) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at",
                    params![pool, member, state.as_str(), now],
                )?;
            }
            let event = (!diff.is_empty() || first).then(|| {
                NewEvent::new(
                    EventKind::Config,
                    format!("Config version {id} committed from {source}"),
                )
                .detail(serde_json::json!({
                    "version": id,
                    "members_added": diff.members_added.len(),
                    "members_removed": diff.members_removed.len(),
                    "members_changed": diff.members_changed.len(),
                    "admin_states_set": diff.admin_states.len(),
                }))
            });
            Ok((id, event))
        })
    }

    /// The desired config as TOML that `poolgate run --config` accepts again,
    /// with each member's `state` set to its current admin state so that an
    /// export taken mid-drain restores the drain. For `poolgate export`,
    /// which runs beside (or without) a running appliance.
    pub fn export_toml(&self) -> Result<Option<String>, StoreError> {
        let Some(stored) = self.latest_config()? else {
            return Ok(None);
        };
        let mut file: config::ConfigFile =
            toml::from_str(&stored.toml).map_err(|error| StoreError::StoredConfig {
                id: stored.id,
                message: error.to_string(),
            })?;
        config::set_admin_states(&mut file, &self.admin_states()?);
        Ok(Some(config::file_to_toml(&file)))
    }
}

#[cfg(test)]
impl Store {
    /// The latest committed config, parsed and validated again, for tests
    /// that check what was stored.
    pub(crate) fn desired_config(&self) -> Result<Option<Config>, StoreError> {
        let Some(stored) = self.latest_config()? else {
            return Ok(None);
        };
        let config = config::from_toml(&stored.toml, &format!("stored config {}", stored.id))
            .map_err(|error| StoreError::StoredConfig {
                id: stored.id,
                message: error.to_string(),
            })?;
        Ok(Some(config))
    }

    /// Commit `config` with the diff from the latest version, as the control
    /// task does (without its licence and version checks). Returns the new
    /// version id and the diff.
    pub(crate) fn commit_config(
        &self,
        config: &Config,
        source: &str,
    ) -> Result<(i64, ConfigDiff), StoreError> {
        let previous = self.desired_config()?;
        let diff = config::diff(previous.as_ref(), config);
        let id = self.record_config(config, source, &diff, None)?;
        Ok((id, diff))
    }
}
