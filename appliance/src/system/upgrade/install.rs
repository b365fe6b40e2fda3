//! Installing a verified bundle: the plan (versions, the running slot, room
//! in the other), writing slot and ESP in this process or through the root
//! step, the database backup, and the pending state that the reboot and the
//! next start read. Also the root step's own work (`install_staged`): the
//! same checks and writes, for the bundle `system::install` staged.
//!
//! Invariants: the bundle is verified again as it is copied, and a manifest
//! that changed since the plan stops the copy; the target's old UKI goes
//! before its root is overwritten, and the new one gets its boot name only
//! after both read back right; the "installed" event is recorded before the
//! backup, so a database restored after a rollback tells the whole story.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    BACKUP_FILE, CHUNK, Pending, UpgradeError, UpgradeState, Upgrader, event, io, sync_dir,
};
use crate::store::Store;
use crate::system::bundle::{self, BundleError, Manifest, Reader};
use crate::system::install::{self, InstallError, InstallOutcome, InstallResult};
use crate::system::layout::{self, Slot};

/// What a verified bundle will do here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub manifest: Manifest,
    pub from_version: String,
    pub from_slot: Slot,
    pub target_slot: Slot,
}

impl Upgrader {
    /// What this appliance says about a verified manifest: versions, the
    /// running slot, room in the other.
    pub(crate) fn plan(&self, manifest: &Manifest) -> Result<Plan, UpgradeError> {
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
            return Err(UpgradeError::Io(crate::system::FileError {
                what: "the ESP has no UKI directory",
                path: uki_dir,
                source: std::io::ErrorKind::NotFound.into(),
            }));
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

    /// Write the verified bundle at `path` to the slot and ESP `plan` names:
    /// in this process, or through the root step if the layout says so.
    fn install_slot(&self, path: &Path, plan: &Plan) -> Result<(), UpgradeError> {
        let Some(request_path) = self.layout.install_request.as_deref() else {
            return self.write_slot_and_uki(path, plan);
        };
        let outcome =
            install::request(request_path, path, install::RESULT_WAIT).map_err(|error| {
                UpgradeError::Installer {
                    refused: false,
                    reason: error.to_string(),
                }
            })?;
        match outcome {
            InstallOutcome::Installed { version, slot }
                if version == plan.manifest.version && slot == plan.target_slot =>
            {
                Ok(())
            }
            InstallOutcome::Installed { version, slot } => Err(UpgradeError::Installer {
                refused: false,
                reason: format!(
                    "the installer wrote {version} to slot {} instead of {} to slot {}",
                    slot.partlabel(),
                    plan.manifest.version,
                    plan.target_slot.partlabel()
                ),
            }),
            InstallOutcome::Refused { reason } => Err(UpgradeError::Installer {
                refused: true,
                reason,
            }),
            InstallOutcome::Failed { reason } => Err(UpgradeError::Installer {
                refused: false,
                reason,
            }),
        }
    }

    /// The root step (`poolgate system install-staged`): take the request at
    /// `request_path` (the layout's `install_request`), check the bundle
    /// staged beside it again, through a copy in `work_dir` (a root-only
    /// directory), write slot and ESP exactly as an in-process install does,
    /// and write the result. `Ok(None)`: no request. This upgrader's own
    /// layout must install in process.
    pub fn install_staged(
        &self,
        request_path: &Path,
        work_dir: &Path,
    ) -> Result<Option<InstallResult>, InstallError> {
        if self.layout.install_request.is_some() {
            // It would ask itself.
            return Err(InstallError::Request(
                "the installer's layout must install in process".into(),
            ));
        }
        install::serve_staged(request_path, work_dir, |copy| {
            match self.verify_file(copy) {
                Err(error) => InstallOutcome::Refused {
                    reason: error.to_string(),
                },
                Ok(plan) => match self.write_slot_and_uki(copy, &plan) {
                    Ok(()) => InstallOutcome::Installed {
                        version: plan.manifest.version.clone(),
                        slot: plan.target_slot,
                    },
                    Err(error) => InstallOutcome::Failed {
                        reason: error.to_string(),
                    },
                },
            }
        })
    }

    /// Write slot and UKI in this process (the root step's work, or all of
    /// an install where the layout names no root step).
    fn write_slot_and_uki(&self, path: &Path, plan: &Plan) -> Result<(), UpgradeError> {
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
    pub(crate) fn backup(&self, store: &Store) -> Result<u32, UpgradeError> {
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
