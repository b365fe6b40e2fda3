//! Upgrade by image swap: check a bundle, write it to the inactive slot and
//! the ESP, back up the database, and reboot; after the reboot, record what
//! happened (the new version started, or systemd-boot fell back to the old
//! one) and, after a fall-back, restore the pre-upgrade database if the new
//! version had migrated it (docs/decisions/0600-upgrade.md).
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
//! * Rebooting runs a fixed argv (`systemctl reboot`); nothing from a request
//!   reaches a command line.
//! * Where the layout names an `install_request`, this process writes no
//!   slot and no ESP: the root step of `system::install` does, after its own
//!   verification; everything else (events, backup, state) stays here.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bundle::{self, BundleError, Manifest, Reader};
use super::layout::{self, Layout, Slot};
use crate::events::{EventKind, NewEvent};
use crate::store::{Store, StoreError};

/// Below the data dir: state, backup, lock, and an upload being received.
pub const UPGRADE_DIR: &str = "upgrade";
pub const STATE_FILE: &str = "state.json";
pub const BACKUP_FILE: &str = "pre-upgrade.db";
pub const INCOMING_FILE: &str = "incoming.pgup";
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
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    let path = path.to_owned();
    move |source| UpgradeError::Io { what, path, source }
}

/// This build's version.
pub fn running_version() -> Version {
    Version::parse(env!("POOLGATE_VERSION")).expect("the crate version is semver")
}

/// How the appliance reboots into a new slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootMode {
    /// `systemctl reboot`: an orderly shutdown (poolgate gets SIGTERM and
    /// its grace period).
    Systemd,
    /// Never reboot (development and tests): log and record it instead.
    Disabled,
}

impl RebootMode {
    /// Reboot now: through the layout's request file if it has one,
    /// otherwise with `systemctl reboot`.
    pub fn reboot(self, layout: &Layout) -> Result<(), UpgradeError> {
        match self {
            Self::Systemd if layout.reboot_request.is_some() => {
                let path = layout.reboot_request.as_deref().expect("checked above");
                super::reboot::request(path)
            }
            Self::Systemd => {
                let status = std::process::Command::new("systemctl")
                    .arg("reboot")
                    .status()
                    .map_err(|error| UpgradeError::Reboot(error.to_string()))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(UpgradeError::Reboot(format!("systemctl reboot: {status}")))
                }
            }
            Self::Disabled => {
                tracing::warn!("Reboot disabled; start the new slot by rebooting");
                Ok(())
            }
        }
    }
}

/// What a verified bundle will do here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub manifest: Manifest,
    pub from_version: String,
    pub from_slot: Slot,
    pub target_slot: Slot,
}

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
pub enum Outcome {
    Succeeded,
    RolledBack,
    /// The appliance came up on a version that is neither.
    Unexpected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpgrade {
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
pub struct UpgradeState {
    pub pending: Option<Pending>,
    pub last: Option<LastUpgrade>,
}

impl UpgradeState {
    pub fn load(data_dir: &Path) -> Result<Self, UpgradeError> {
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
    pub fn incoming_path(&self) -> PathBuf {
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

    /// What this appliance says about a verified manifest: versions, the
    /// running slot, room in the other.
    pub fn plan(&self, manifest: &Manifest) -> Result<Plan, UpgradeError> {
        manifest.check_upgrade(&self.running)?;
        let from_slot = self
            .layout
            .running_slot()
            .ok_or_else(|| UpgradeError::UnknownSlot {
                cmdline: self.layout.cmdline.clone(),
            })?;
        let target_slot = from_slot.other();
        let device = self.layout.device(target_slot);
        let capacity = match File::open(device).and_then(|mut f| f.seek(SeekFrom::End(0))) {
            Ok(capacity) => Some(capacity),
            // Unprivileged, with a root step that writes the slot: poolgate
            // may not even see the device; the root step checks the room.
            Err(_) if self.layout.install_request.is_some() => None,
            Err(error) => return Err(io("cannot open the target slot", device)(error)),
        };
        let size = manifest.component(bundle::ROOT).map_or(0, |c| c.size);
        if let Some(capacity) = capacity
            && size > capacity
        {
            return Err(UpgradeError::TooBig {
                slot: target_slot.partlabel(),
                device: device.to_owned(),
                size,
                capacity,
            });
        }
        let uki_dir = self.layout.uki_dir();
        if !uki_dir.is_dir() {
            return Err(UpgradeError::Io {
                what: "the ESP has no UKI directory",
                path: uki_dir,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        Ok(Plan {
            manifest: manifest.clone(),
            from_version: self.running.to_string(),
            from_slot,
            target_slot,
        })
    }

    /// Every check, writing nothing: header, plan, then every payload hash.
    pub fn verify_file(&self, path: &Path) -> Result<Plan, UpgradeError> {
        let file = File::open(path).map_err(io("cannot open", path))?;
        let reader = Reader::open(std::io::BufReader::with_capacity(CHUNK, file), &self.keys)?;
        let plan = self.plan(reader.manifest())?;
        reader.verify_to_end()?;
        Ok(plan)
    }

    /// Install a bundle that `verify_file` accepted (it is checked again as
    /// it is copied), back up the database, and record the pending upgrade.
    /// Refused or failed, it records why in the event log.
    pub fn install_file(
        &self,
        path: &Path,
        plan: &Plan,
        store: &Store,
        actor: &str,
    ) -> Result<Pending, UpgradeError> {
        let to = plan.manifest.version.clone();
        let target = plan.target_slot;
        store.record_event(&event(
            format!(
                "{actor} started an upgrade from {} to {to}: writing slot {}",
                plan.from_version,
                target.partlabel()
            ),
            serde_json::json!({"step": "started", "from": plan.from_version, "to": to,
                "slot": target.partlabel(), "actor": actor}),
        ))?;
        // An upgrade installed before into the same slot is about to be
        // overwritten: it is no longer pending, whatever happens next.
        let mut state = UpgradeState::load(&self.data_dir)?;
        if state.pending.take().is_some() {
            state.save(&self.data_dir)?;
        }
        // The "installed" event goes in before the backup, so a database
        // restored after a rollback still tells the whole story.
        let installed = self.install_slot(path, plan).and_then(|()| {
            store.record_event(&event(
                format!(
                    "Version {to} installed in slot {}; it starts at the next reboot (with {} boot attempts before falling back to {})",
                    target.partlabel(),
                    layout::BOOT_TRIES,
                    plan.from_version
                ),
                serde_json::json!({"step": "installed", "from": plan.from_version, "to": to,
                    "slot": target.partlabel()}),
            ))?;
            let backup_schema = self.backup(store)?;
            let pending = Pending {
                from_version: plan.from_version.clone(),
                to_version: to.clone(),
                from_slot: plan.from_slot,
                to_slot: target,
                installed_at: crate::store::now_rfc3339(),
                backup_schema: Some(backup_schema),
            };
            let mut state = UpgradeState::load(&self.data_dir)?;
            state.pending = Some(pending.clone());
            state.save(&self.data_dir)?;
            Ok(pending)
        });
        if let Err(error) = &installed {
            store.record_event(&event(
                format!(
                    "Upgrade to {to} failed: {error}. {} keeps running from slot {}",
                    plan.from_version,
                    plan.from_slot.partlabel()
                ),
                serde_json::json!({"step": "failed", "from": plan.from_version, "to": to,
                    "reason": error.to_string()}),
            ))?;
        }
        installed
    }

    /// Write slot and UKI in this process (the root step's work, or all of
    /// an install where the layout names no root step).
    pub(super) fn write_slot_and_uki(&self, path: &Path, plan: &Plan) -> Result<(), UpgradeError> {
        let target = plan.target_slot;
        let uki_dir = self.layout.uki_dir();
        // First make the target unbootable, then overwrite it.
        remove_slot_ukis(&uki_dir, target)?;
        let device_path = self.layout.device(target);
        let mut device = OpenOptions::new()
            .write(true)
            .open(device_path)
            .map_err(io("cannot open the target slot", device_path))?;
        let final_name = layout::new_uki_name(target);
        let part_path = uki_dir.join(format!("{final_name}.part"));
        let result = self.copy_and_check(path, plan, &mut device, device_path, &part_path);
        if result.is_err() {
            // Ignored by the boot loader, but leave no debris.
            let _ = std::fs::remove_file(&part_path);
        }
        result?;
        let final_path = uki_dir.join(&final_name);
        std::fs::rename(&part_path, &final_path).map_err(io("cannot rename", &part_path))?;
        sync_dir(&uki_dir)
    }

    /// Copy the root to the slot and the UKI to `part_path`, sync both and
    /// read both back.
    fn copy_and_check(
        &self,
        path: &Path,
        plan: &Plan,
        device: &mut File,
        device_path: &Path,
        part_path: &Path,
    ) -> Result<(), UpgradeError> {
        let target = plan.target_slot;
        let mut uki = File::create(part_path).map_err(io("cannot create", part_path))?;
        let file = File::open(path).map_err(io("cannot open", path))?;
        let mut reader = Reader::open(std::io::BufReader::with_capacity(CHUNK, file), &self.keys)?;
        if reader.manifest() != &plan.manifest {
            return Err(
                BundleError::Manifest("the bundle changed since it was checked".into()).into(),
            );
        }
        let mut buffer = vec![0u8; CHUNK];
        // Bounded: every round consumes bytes of a verified, finite bundle.
        while let Some((index, n)) = reader.read(&mut buffer)? {
            let (sink, sink_path) = match index {
                0 => (&mut *device, device_path),
                _ => (&mut uki, part_path),
            };
            sink.write_all(&buffer[..n])
                .map_err(io("cannot write", sink_path))?;
        }
        device.sync_all().map_err(io("cannot sync", device_path))?;
        let root = plan.manifest.component(bundle::ROOT).expect("validated");
        if read_back(device_path, root.size)? != root.sha256 {
            return Err(UpgradeError::ReadBack {
                slot: target.partlabel(),
                what: "root image",
            });
        }
        uki.sync_all().map_err(io("cannot sync", part_path))?;
        drop(uki);
        let kernel = plan.manifest.component(bundle::UKI).expect("validated");
        if read_back(part_path, kernel.size)? != kernel.sha256 {
            return Err(UpgradeError::ReadBack {
                slot: target.partlabel(),
                what: "kernel image",
            });
        }
        Ok(())
    }

    /// An online backup of the database to `<data>/upgrade/pre-upgrade.db`,
    /// complete or not at all; returns its schema version.
    pub fn backup(&self, store: &Store) -> Result<u32, UpgradeError> {
        let dir = self.upgrade_dir();
        std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
        let part = dir.join(format!("{BACKUP_FILE}.part"));
        let _ = std::fs::remove_file(&part);
        store.backup_to(&part)?;
        File::open(&part)
            .and_then(|f| f.sync_all())
            .map_err(io("cannot sync", &part))?;
        let path = dir.join(BACKUP_FILE);
        std::fs::rename(&part, &path).map_err(io("cannot rename", &part))?;
        sync_dir(&dir)?;
        Ok(store.schema_version()?)
    }
}

fn event(message: String, detail: serde_json::Value) -> NewEvent {
    NewEvent {
        kind: EventKind::Upgrade,
        message,
        detail: Some(detail),
        pool: None,
        member: None,
    }
}

/// Remove every UKI (and half-written one) of `slot` from the ESP.
fn remove_slot_ukis(uki_dir: &Path, slot: Slot) -> Result<(), UpgradeError> {
    let entries = std::fs::read_dir(uki_dir).map_err(io("cannot list", uki_dir))?;
    for entry in entries {
        let entry = entry.map_err(io("cannot list", uki_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = layout::parse_uki_name(name.strip_suffix(".part").unwrap_or(name))
            .is_some_and(|uki| uki.slot == slot);
        if ours {
            std::fs::remove_file(entry.path()).map_err(io("cannot remove", &entry.path()))?;
        }
    }
    sync_dir(uki_dir)
}

/// SHA-256 (hex) of the first `size` bytes, read from the device rather than
/// the page cache where the kernel lets us.
fn read_back(path: &Path, size: u64) -> Result<String, UpgradeError> {
    let file = File::open(path).map_err(io("cannot read back", path))?;
    // Best effort: drop cached pages so the read comes from the disk.
    let _ = nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut hasher = Sha256::new();
    let mut limited = file.take(size);
    let mut buffer = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match limited.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io("cannot read back", path)(error)),
        };
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    if total != size {
        return Ok(String::new());
    }
    Ok(bundle::sha256_hex(&hasher.finalize()))
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

/// Why the appliance came back on the old slot, from the new slot's UKI.
pub fn rollback_reason(layout: &Layout, pending: &Pending) -> String {
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
pub fn open_store(
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

/// An upload being received into `<data>/upgrade/incoming.pgup`. Its header
/// is checked as soon as it has arrived, so a bundle for another product,
/// unsigned, signed by another key, or not an upgrade for this appliance is
/// refused after a few kilobytes rather than after the whole image. The
/// file is removed when this is dropped.
#[derive(Debug)]
pub struct Receiving {
    file: File,
    path: PathBuf,
    header: Vec<u8>,
    expected: Option<u64>,
    received: u64,
}

impl Receiving {
    /// Append the next piece of the upload.
    pub fn push(&mut self, upgrader: &Upgrader, mut bytes: &[u8]) -> Result<(), UpgradeError> {
        if self.expected.is_none() {
            let total = match bundle::header_len(&self.header)? {
                Some(total) => total,
                None => {
                    bundle::header_len(&[&self.header[..], bytes].concat())?.unwrap_or(usize::MAX)
                }
            };
            let take = total.saturating_sub(self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            self.write(&bytes[..take])?;
            bytes = &bytes[take..];
            if self.header.len() == total {
                let manifest = bundle::parse_header(&self.header, &upgrader.keys)?;
                upgrader.plan(&manifest)?;
                let payload: u64 = manifest.components.iter().map(|c| c.size).sum();
                self.expected = Some(total as u64 + payload);
            }
        }
        if let Some(expected) = self.expected
            && self.received + bytes.len() as u64 > expected
        {
            return Err(BundleError::TrailingData.into());
        }
        self.write(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), UpgradeError> {
        self.file
            .write_all(bytes)
            .map_err(io("cannot write", &self.path))?;
        self.received += bytes.len() as u64;
        Ok(())
    }

    /// The whole upload is here: the file to check and install from.
    pub fn finish(&mut self) -> Result<&Path, UpgradeError> {
        if self.expected != Some(self.received) {
            return Err(BundleError::Truncated("the upload ended early").into());
        }
        self.file.flush().map_err(io("cannot write", &self.path))?;
        Ok(&self.path)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Upgrader {
    /// Start receiving an upload (hold the lock first).
    pub fn receive(&self, _lock: &UpgradeLock) -> Result<Receiving, UpgradeError> {
        let path = self.incoming_path();
        let file = File::create(&path).map_err(io("cannot create", &path))?;
        Ok(Receiving {
            file,
            path,
            header: Vec::new(),
            expected: None,
            received: 0,
        })
    }

    /// Record a refused bundle in the event log (nothing else was written).
    pub fn record_refusal(
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

    /// Reboot into whatever is pending when the lock is free (an upgrade
    /// being written is waited for, up to `wait`); nothing pending, no
    /// reboot.
    pub fn reboot_into_pending(
        &self,
        mode: RebootMode,
        store: &Store,
        wait: std::time::Duration,
    ) -> Result<Option<Pending>, UpgradeError> {
        let started = std::time::Instant::now();
        // Bounded by `wait`.
        let _lock = loop {
            match self.lock() {
                Ok(lock) => break lock,
                Err(UpgradeError::Busy) if started.elapsed() < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(error) => return Err(error),
            }
        };
        let Some(pending) = UpgradeState::load(&self.data_dir)?.pending else {
            tracing::warn!("No upgrade is pending any more; not rebooting");
            return Ok(None);
        };
        self.reboot(mode, store, &pending)?;
        Ok(Some(pending))
    }

    /// Record the reboot into the new slot, refresh the backup (so a
    /// rollback loses nothing done since the install), then reboot.
    pub fn reboot(
        &self,
        mode: RebootMode,
        store: &Store,
        pending: &Pending,
    ) -> Result<(), UpgradeError> {
        let message = match mode {
            RebootMode::Systemd => format!("Rebooting into {}", pending.to_version),
            RebootMode::Disabled => format!(
                "Reboot into {} skipped: rebooting is disabled on this appliance",
                pending.to_version
            ),
        };
        store.record_event(&event(
            message,
            serde_json::json!({"step": "reboot", "to": pending.to_version, "mode": mode}),
        ))?;
        self.backup(store)?;
        mode.reboot(&self.layout)
    }
}

/// What an upload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploaded {
    /// `verify_only`: every check passed; nothing was written.
    Verified(Plan),
    Installed(Pending),
}

impl Upgrader {
    /// Receive a bundle piece by piece, check it, and (unless `verify_only`)
    /// install it. A refusal is recorded in the event log, except for a
    /// check-only upload, which writes nothing at all.
    pub fn upload<B: AsRef<[u8]>>(
        &self,
        store: &Store,
        actor: &str,
        chunks: impl Iterator<Item = Result<B, String>>,
        verify_only: bool,
    ) -> Result<Uploaded, UpgradeError> {
        let lock = self.lock()?;
        let mut receiving = self.receive(&lock)?;
        let checked = (|| {
            // Bounded: `push` refuses anything past the declared size.
            for chunk in chunks {
                receiving.push(self, chunk.map_err(UpgradeError::Upload)?.as_ref())?;
            }
            let path = receiving.finish()?;
            self.verify_file(path).map(|plan| (path.to_owned(), plan))
        })();
        let (path, plan) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                if !verify_only {
                    self.record_refusal(store, actor, &error)?;
                }
                return Err(error);
            }
        };
        if verify_only {
            return Ok(Uploaded::Verified(plan));
        }
        let pending = self.install_file(&path, &plan, store, actor)?;
        drop(receiving);
        Ok(Uploaded::Installed(pending))
    }
}

/// What `GET /api/v1/system` shows.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
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
    pub fn info(&self) -> Result<SystemInfo, UpgradeError> {
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

#[cfg(test)]
pub(crate) mod tests;
