//! Upgrade by image swap: check a bundle, write it to the inactive slot and
//! the ESP, back up the database, and reboot; after the reboot, record what
//! happened (the new version started, or systemd-boot fell back to the old
//! one) and, after a fall-back, restore the pre-upgrade database if the new
//! version had migrated it (docs/decisions/0600-upgrade.md).
//!
//! This module keeps what every step shares: `UpgradeError` and its one
//! `Verdict` (what the API's status and the console's exit code are made
//! of), the files below the data dir, and `Upgrader`, the facade callers
//! use. The steps live beside it: `install` (the plan, the slot and ESP
//! writes, the backup), `receive` (an upload into `incoming.pgup`),
//! `settle` (what a start after a reboot finds, and the rollback of the
//! database), `state` (what survives the reboot). Rebooting is
//! `system::reboot`'s, which builds on this module, never the other way.
//!
//! Invariants:
//! * Nothing is written to a slot, the ESP or the database until the whole
//!   bundle verified (signature, product, versions, every hash, trailing
//!   bytes) and the target slot can hold it. A refused bundle leaves no trace
//!   but its event.
//! * The target slot's old UKI is removed before its root is overwritten, and
//!   the new UKI gets its boot name only after the root read back right, so
//!   at every instant each UKI on the ESP boots a complete root.
//! * One upgrade at a time, across processes (a lock file in the data dir).
//! * What survives the reboot lives in `<data>/upgrade/state.json` and the
//!   backup beside it, not in the database: an older version must be able to
//!   read it even when it cannot open a database a newer one migrated.
//! * Where the layout names an `install_request`, this process writes no
//!   slot and no ESP: the root step of `system::install` does, after its own
//!   verification; everything else (events, backup, state) stays here.
//! * Events go to the store directly (`Store::record_event`): settling runs
//!   before the event log's writer exists, and an install records its steps
//!   in order with the database backup taken between them.

mod install;
mod receive;
mod settle;
mod state;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use semver::Version;

use super::bundle::{self, BundleError};
use super::layout::Layout;
use crate::events::{EventKind, NewEvent};
use crate::store::{Store, StoreError};

pub use install::Plan;
pub(crate) use receive::Uploaded;
pub(crate) use settle::open_store;
pub(crate) use state::{LastUpgrade, Outcome, Pending, UpgradeState};

/// Below the data dir: state, backup, lock, and an upload being received.
pub(crate) const UPGRADE_DIR: &str = "upgrade";
pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const BACKUP_FILE: &str = "pre-upgrade.db";
pub(crate) const INCOMING_FILE: &str = "incoming.pgup";
const LOCK_FILE: &str = "lock";
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(
        "cannot tell which slot is running: {cmdline} has neither root=PARTLABEL=root-a nor root=PARTLABEL=root-b (upgrades need the appliance image)"
    )]
    UnknownSlot { cmdline: PathBuf },
    #[error(
        "the root image ({size} bytes) does not fit slot {slot} ({capacity} bytes at {device})"
    )]
    TooBig {
        slot: &'static str,
        device: PathBuf,
        size: u64,
        capacity: u64,
    },
    #[error("another upgrade is in progress")]
    Busy,
    #[error(
        "slot {slot} read back differently from what was written ({what}); it is left unbootable and the running version stays"
    )]
    ReadBack {
        slot: &'static str,
        what: &'static str,
    },
    #[error(
        "the database was migrated by version {version} (schema {found}, this version reads up to {supported}) and no pre-upgrade backup is left: start {version} again, or restore a backup"
    )]
    NoBackup {
        version: String,
        found: u32,
        supported: u32,
    },
    #[error(transparent)]
    Io(#[from] super::FileError),
    #[error("the upload was interrupted: {0}")]
    Upload(String),
    #[error("cannot reboot: {0}")]
    Reboot(String),
    /// The root step that writes slot and ESP refused the bundle (it checks
    /// it again) or could not install it.
    #[error("{reason}")]
    Installer { refused: bool, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UpgradeError + use<> {
    super::FileError::on(what, path)
}

/// This build's version.
pub(crate) fn running_version() -> Version {
    Version::parse(env!("POOLGATE_VERSION")).expect("the crate version is semver")
}

/// What an `UpgradeError` says about the bundle and the appliance: the one
/// decision the API's status (`web::error`) and the console's exit code
/// (`poolgate upgrade`) are both made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The bundle is not what it claims, or not for this appliance
    /// (422; the console exits 65).
    Refused,
    /// A good bundle that does not apply to what runs now, or another
    /// upgrade is running (409; the console's check exits 65).
    DoesNotApply,
    /// The upload did not arrive whole (400).
    Interrupted,
    /// The appliance could not do its part: reading, writing, rebooting, its
    /// database (500; the console exits 1).
    Failed,
}

impl UpgradeError {
    /// Exhaustive on purpose: a new error forces a decision about what the
    /// admin is told.
    pub fn verdict(&self) -> Verdict {
        match self {
            Self::Bundle(
                BundleError::NotABundle
                | BundleError::Truncated(_)
                | BundleError::ManifestSize(_)
                | BundleError::Unsigned
                | BundleError::NoKeys
                | BundleError::BadSignature
                | BundleError::Manifest(_)
                | BundleError::WrongProduct { .. }
                | BundleError::HashMismatch { .. }
                | BundleError::TrailingData,
            )
            | Self::TooBig { .. }
            | Self::Installer { refused: true, .. } => Verdict::Refused,
            Self::Bundle(BundleError::NotNewer { .. } | BundleError::TooOld { .. })
            | Self::UnknownSlot { .. }
            | Self::Busy => Verdict::DoesNotApply,
            Self::Upload(_) => Verdict::Interrupted,
            Self::Bundle(BundleError::Io(_))
            | Self::ReadBack { .. }
            | Self::NoBackup { .. }
            | Self::Io(_)
            | Self::Reboot(_)
            | Self::Installer { refused: false, .. }
            | Self::Store(_) => Verdict::Failed,
        }
    }
}

/// Checks and installs bundles for one appliance.
#[derive(Debug, Clone)]
pub struct Upgrader {
    pub layout: Layout,
    pub data_dir: PathBuf,
    pub keys: Vec<VerifyingKey>,
    pub running: Version,
}

/// Held while an upgrade runs; dropping it releases the lock.
#[derive(Debug)]
pub struct UpgradeLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl Upgrader {
    /// This build's keys and version.
    pub fn new(layout: Layout, data_dir: PathBuf) -> Self {
        Self {
            layout,
            data_dir,
            keys: bundle::upgrade_keys(),
            running: running_version(),
        }
    }

    fn upgrade_dir(&self) -> PathBuf {
        self.data_dir.join(UPGRADE_DIR)
    }

    /// Where a streamed upload is received before it is checked.
    pub(crate) fn incoming_path(&self) -> PathBuf {
        self.upgrade_dir().join(INCOMING_FILE)
    }

    /// Take the one-upgrade-at-a-time lock (`Busy` if held).
    pub fn lock(&self) -> Result<UpgradeLock, UpgradeError> {
        let dir = self.upgrade_dir();
        std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(UpgradeLock(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(UpgradeError::Busy),
            Err((_, errno)) => Err(io("cannot lock", &path)(errno.into())),
        }
    }

    /// Every check of the bundle at `path` (holding the lock), with a
    /// refusal recorded in the event log: what comes before `install_file`,
    /// for an upload and for the console alike.
    pub fn check_file(
        &self,
        _lock: &UpgradeLock,
        path: &Path,
        store: &Store,
        actor: &str,
    ) -> Result<Plan, UpgradeError> {
        let checked = self.verify_file(path);
        if let Err(error) = &checked {
            self.record_refusal(store, actor, error)?;
        }
        checked
    }

    /// Record a refused bundle in the event log (nothing else was written).
    pub(crate) fn record_refusal(
        &self,
        store: &Store,
        actor: &str,
        error: &UpgradeError,
    ) -> Result<(), StoreError> {
        store.record_event(&event(
            format!("{actor} offered an upgrade bundle; refused: {error}"),
            serde_json::json!({"step": "refused", "reason": error.to_string(), "actor": actor}),
        ))?;
        Ok(())
    }
}

/// An upgrade event for the store's log.
pub(crate) fn event(message: String, detail: serde_json::Value) -> NewEvent {
    NewEvent {
        kind: EventKind::Upgrade,
        message,
        detail: Some(detail),
        pool: None,
        member: None,
    }
}

fn sync_dir(dir: &Path) -> Result<(), UpgradeError> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        // Some file systems cannot sync a directory; their writes are
        // ordered by the file syncs before.
        Err(error) if error.raw_os_error() == Some(nix::libc::EINVAL) => Ok(()),
        other => other.map_err(io("cannot sync", dir)),
    }
}

/// Write `name` in `dir` as a whole: a temporary file, fsync, rename, fsync
/// the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), UpgradeError> {
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let part = dir.join(format!("{name}.part"));
    let mut file = File::create(&part).map_err(io("cannot create", &part))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("cannot write", &part))?;
    std::fs::rename(&part, dir.join(name)).map_err(io("cannot rename", &part))?;
    sync_dir(dir)
}

#[cfg(test)]
pub(crate) mod tests;
