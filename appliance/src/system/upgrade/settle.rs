//! Settling at start-up what a reboot did to a pending upgrade: the new
//! version records its success; the old version, back after a fall-back,
//! records the rollback and why it happened, and restores the pre-upgrade
//! database if the new version migrated it beyond what the old one reads.
//!
//! Invariants: the store is opened here, before anything else reads it, so
//! nobody sees a database the running version cannot read; a newer database
//! that a rollback replaces is kept beside the backup, never deleted; the
//! outcome is recorded in the event log and in `state.json` before the
//! pending upgrade is cleared.

use std::fs::File;
use std::path::{Path, PathBuf};

use semver::Version;

use super::{
    BACKUP_FILE, LastUpgrade, Outcome, Pending, UPGRADE_DIR, UpgradeError, UpgradeState, event, io,
    sync_dir,
};
use crate::store::{Store, StoreError};
use crate::system::layout::{self, Layout};

/// Why the appliance came back on the old slot, from the new slot's UKI.
pub(crate) fn rollback_reason(layout: &Layout, pending: &Pending) -> String {
    let ukis: Vec<layout::UkiName> = std::fs::read_dir(layout.uki_dir())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(layout::parse_uki_name))
                .filter(|uki| uki.slot == pending.to_slot)
                .collect()
        })
        .unwrap_or_default();
    match ukis.first().map(|uki| uki.tries) {
        Some(Some((0, done))) => format!(
            "version {} did not finish booting in {done} attempts, so the boot loader started {} from slot {} again",
            pending.to_version,
            pending.from_version,
            pending.from_slot.partlabel()
        ),
        Some(Some((left, _))) => format!(
            "slot {} was started instead of {} while it had {left} boot attempts left (chosen in the boot menu?)",
            pending.from_slot.partlabel(),
            pending.to_version
        ),
        Some(None) => format!(
            "slot {} was started instead of {} although that had booted successfully (chosen in the boot menu?)",
            pending.from_slot.partlabel(),
            pending.to_version
        ),
        None => format!(
            "the kernel image of version {} is no longer on the ESP",
            pending.to_version
        ),
    }
}

/// Open the store at start-up, settling a pending upgrade first: the new
/// version records its success; the old version, back after a fall-back,
/// records the rollback and its reason and, if the new version migrated the
/// database beyond what it reads, restores the pre-upgrade backup (the newer
/// database is kept beside it). Returns the store and the settled upgrade.
pub(crate) fn open_store(
    data_dir: &Path,
    layout: &Layout,
    running: &Version,
) -> Result<(Store, Option<LastUpgrade>), UpgradeError> {
    let mut state = UpgradeState::load(data_dir)?;
    // Pending, or recorded as a success by a new version that then never
    // finished booting (boot counting went back to the old slot after it).
    let late = state
        .last
        .as_ref()
        .filter(|last| {
            last.outcome == Outcome::Succeeded && last.from_version == running.to_string()
        })
        .and_then(|last| last.upgrade.clone());
    let Some(pending) = state.pending.clone().or(late) else {
        return Ok((Store::open(data_dir)?, None));
    };
    let to = Version::parse(&pending.to_version).ok();
    let from = Version::parse(&pending.from_version).ok();
    let now = crate::store::now_rfc3339();
    let (store, last, message) = if to.as_ref() == Some(running) {
        let store = Store::open(data_dir)?;
        let message = format!(
            "Upgrade from {} to {} succeeded: running from slot {}",
            pending.from_version,
            pending.to_version,
            layout.running_slot().unwrap_or(pending.to_slot).partlabel()
        );
        let last = LastUpgrade::settled(&pending, Outcome::Succeeded, None, now, false);
        (store, last, message)
    } else if from.as_ref() == Some(running) {
        let reason = rollback_reason(layout, &pending);
        let (store, restored) = match Store::open(data_dir) {
            Ok(store) => (store, false),
            Err(StoreError::SchemaTooNew { found, supported }) => {
                restore_backup(data_dir, &pending, found, supported)?;
                (Store::open(data_dir)?, true)
            }
            Err(error) => return Err(error.into()),
        };
        let restored_note = if restored {
            format!(
                "; the database was restored from the backup taken before the upgrade (changes made under {} are kept in {}/{})",
                pending.to_version,
                UPGRADE_DIR,
                moved_db_name(&pending)
            )
        } else {
            String::new()
        };
        let message = format!(
            "Rolled back to {} from {}: {reason}{restored_note}",
            pending.from_version, pending.to_version
        );
        let last = LastUpgrade::settled(&pending, Outcome::RolledBack, Some(reason), now, restored);
        (store, last, message)
    } else {
        let store = Store::open(data_dir)?;
        let message = format!(
            "Started as {running}, neither the version upgraded from ({}) nor to ({}); the pending upgrade is cleared",
            pending.from_version, pending.to_version
        );
        let reason = Some(format!("started as {running}"));
        let last = LastUpgrade::settled(&pending, Outcome::Unexpected, reason, now, false);
        (store, last, message)
    };
    store.record_event(&event(
        message.clone(),
        serde_json::to_value(&last).expect("serialises"),
    ))?;
    match last.outcome {
        Outcome::Succeeded => tracing::info!(to = %last.to_version, "{message}"),
        Outcome::RolledBack | Outcome::Unexpected => tracing::error!("{message}"),
    }
    state.pending = None;
    state.last = Some(last.clone());
    state.save(data_dir)?;
    Ok((store, Some(last)))
}

impl LastUpgrade {
    /// How `pending` ended, as the next start found it.
    fn settled(
        pending: &Pending,
        outcome: Outcome,
        reason: Option<String>,
        at: String,
        restored_backup: bool,
    ) -> Self {
        Self {
            from_version: pending.from_version.clone(),
            to_version: pending.to_version.clone(),
            outcome,
            reason,
            at,
            restored_backup,
            upgrade: Some(pending.clone()),
        }
    }
}

fn moved_db_name(pending: &Pending) -> String {
    format!("{}.from-{}", crate::store::DB_FILE, pending.to_version)
}

/// Put the pre-upgrade backup in place of a database the newer version
/// migrated; the newer one (with its WAL) moves to `upgrade/`.
fn restore_backup(
    data_dir: &Path,
    pending: &Pending,
    found: u32,
    supported: u32,
) -> Result<(), UpgradeError> {
    let dir = data_dir.join(UPGRADE_DIR);
    let backup = dir.join(BACKUP_FILE);
    let usable = pending
        .backup_schema
        .is_none_or(|schema| schema <= supported);
    if !backup.is_file() || !usable {
        return Err(UpgradeError::NoBackup {
            version: pending.to_version.clone(),
            found,
            supported,
        });
    }
    let db = data_dir.join(crate::store::DB_FILE);
    let moved = dir.join(moved_db_name(pending));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        let to = PathBuf::from(format!("{}{suffix}", moved.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io("cannot move aside", &from)(error)),
        }
    }
    let part = data_dir.join(format!("{}.part", crate::store::DB_FILE));
    std::fs::copy(&backup, &part).map_err(io("cannot copy", &backup))?;
    File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync", &part))?;
    std::fs::rename(&part, &db).map_err(io("cannot rename", &part))?;
    sync_dir(data_dir)?;
    sync_dir(&dir)
}
