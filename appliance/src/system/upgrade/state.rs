//! What survives the reboot: `<data>/upgrade/state.json` (the upgrade
//! waiting for its reboot, and how the last one ended), and what
//! `GET /api/v1/system` shows of it.
//!
//! Invariant: any version reads what another wrote. Unknown fields are
//! ignored, new fields have defaults, and an unreadable file counts as
//! empty rather than stopping a start.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{STATE_FILE, UPGRADE_DIR, UpgradeError, Upgrader, io, write_atomically};
use crate::system::layout::Slot;

/// An upgrade written and waiting for its reboot; also the record a rebooted
/// appliance reads to learn what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub from_version: String,
    pub to_version: String,
    pub from_slot: Slot,
    pub to_slot: Slot,
    pub installed_at: String,
    /// Schema version of the backup, so a rollback knows whether it helps.
    pub backup_schema: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Succeeded,
    RolledBack,
    /// The appliance came up on a version that is neither.
    Unexpected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LastUpgrade {
    pub from_version: String,
    pub to_version: String,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub at: String,
    /// After a rollback: whether the pre-upgrade database was restored.
    #[serde(default)]
    pub restored_backup: bool,
    /// The upgrade this settled. After a success it is kept: the new version
    /// may still fail before its boot is blessed, and the old version that
    /// the boot loader then starts needs it to roll back.
    #[serde(default)]
    pub upgrade: Option<Pending>,
}

/// `<data>/upgrade/state.json`. Unknown fields are ignored, so any version
/// reads what another wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UpgradeState {
    pub pending: Option<Pending>,
    pub last: Option<LastUpgrade>,
}

impl UpgradeState {
    pub(crate) fn load(data_dir: &Path) -> Result<Self, UpgradeError> {
        let path = data_dir.join(UPGRADE_DIR).join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, path = %path.display(), "Unreadable upgrade state; ignoring it");
                Self::default()
            })),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(io("cannot read", &path)(error)),
        }
    }

    pub(crate) fn save(&self, data_dir: &Path) -> Result<(), UpgradeError> {
        let dir = data_dir.join(UPGRADE_DIR);
        let bytes = serde_json::to_vec_pretty(self).expect("upgrade state serialises");
        write_atomically(&dir, STATE_FILE, &bytes)
    }
}

/// What `GET /api/v1/system` shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SystemInfo {
    pub version: String,
    pub build: String,
    /// The running root slot (`a`/`b`), `None` off the appliance image.
    pub slot: Option<Slot>,
    /// The version that ran before this one, after a successful upgrade.
    pub previous_version: Option<String>,
    pub last_upgrade: Option<LastUpgrade>,
    /// Installed, waiting for the reboot.
    pub pending_upgrade: Option<Pending>,
}

impl Upgrader {
    pub(crate) fn info(&self) -> Result<SystemInfo, UpgradeError> {
        let state = UpgradeState::load(&self.data_dir)?;
        let previous_version = state
            .last
            .as_ref()
            .filter(|last| {
                last.outcome == Outcome::Succeeded && last.to_version == self.running.to_string()
            })
            .map(|last| last.from_version.clone());
        Ok(SystemInfo {
            version: self.running.to_string(),
            build: crate::build_info(),
            slot: self.layout.running_slot(),
            previous_version,
            last_upgrade: state.last,
            pending_upgrade: state.pending,
        })
    }
}
