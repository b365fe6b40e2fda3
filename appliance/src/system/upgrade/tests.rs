//! Upgrades into a fake layout: plain files stand in for the root slots and
//! a directory for the ESP.

use ed25519_dalek::SigningKey;

use super::*;
use crate::system::bundle::{Manifest, PRODUCT, describe, write_bundle};
use crate::system::layout::Slot;

const SLOT_SIZE: usize = 64 * 1024;

/// Slot a, slot b, and the ESP's files (name, content).
type Snapshot = (Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

pub(crate) struct Fake {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) layout: Layout,
    pub(crate) data_dir: PathBuf,
}

impl Fake {
    pub(crate) fn new(running: Slot) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout {
            root_a: dir.path().join("root-a.img"),
            root_b: dir.path().join("root-b.img"),
            esp: dir.path().join("esp"),
            cmdline: dir.path().join("cmdline"),
            reboot_request: None,
            install_request: None,
            network: None,
            vrrp: None,
            snmp: None,
        };
        std::fs::write(&layout.root_a, vec![b'A'; SLOT_SIZE]).expect("slot a");
        std::fs::write(&layout.root_b, vec![b'B'; SLOT_SIZE]).expect("slot b");
        std::fs::create_dir_all(layout.uki_dir()).expect("esp");
        std::fs::write(layout.uki_dir().join("poolgate-a.efi"), "kernel a").expect("uki");
        std::fs::write(layout.uki_dir().join("poolgate-b.efi"), "kernel b").expect("uki");
        std::fs::write(
            &layout.cmdline,
            format!("quiet root=PARTLABEL={} ro\n", running.partlabel()),
        )
        .expect("cmdline");
        let data_dir = dir.path().join("data");
        Self {
            dir,
            layout,
            data_dir,
        }
    }

    pub(crate) fn upgrader(&self, running: &str) -> Upgrader {
        Upgrader {
            layout: self.layout.clone(),
            data_dir: self.data_dir.clone(),
            keys: vec![key().verifying_key()],
            running: Version::parse(running).expect("version"),
        }
    }

    pub(crate) fn bundle(&self, version: &str, root: &[u8], uki: &[u8]) -> PathBuf {
        let manifest = Manifest {
            product: PRODUCT.into(),
            version: version.into(),
            min_from_version: "1.0.0".into(),
            components: vec![
                describe(bundle::ROOT, root).expect("hash"),
                describe(bundle::UKI, uki).expect("hash"),
            ],
        };
        let path = self.dir.path().join(format!("poolgate-{version}.pgup"));
        let file = File::create(&path).expect("create");
        write_bundle(
            file,
            &manifest,
            &key(),
            &mut [&mut &root[..], &mut &uki[..]],
        )
        .expect("write");
        path
    }

    /// Every byte of both slots and every file on the ESP.
    fn snapshot(&self) -> Snapshot {
        let mut esp: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.layout.uki_dir())
            .expect("esp")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .collect();
        esp.sort();
        (
            std::fs::read(&self.layout.root_a).expect("a"),
            std::fs::read(&self.layout.root_b).expect("b"),
            esp,
        )
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

pub(crate) fn root_image() -> Vec<u8> {
    (0..40_000u32).map(|i| (i * 13 % 251) as u8).collect()
}

/// The upgrade event log's messages, oldest first.
pub(crate) fn upgrade_events(store: &Store) -> Vec<String> {
    store
        .events(&crate::store::EventFilter {
            after: Some(0),
            limit: 100,
            kind: Some(EventKind::Upgrade),
            ..Default::default()
        })
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn installs_into_the_inactive_slot_with_a_counted_uki_and_a_backup() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let root = root_image();
    let path = fake.bundle("1.1.0", &root, b"new kernel");
    let store = Store::open(&fake.data_dir).expect("store");
    store.set_setting("marker", "before").expect("setting");

    let plan = upgrader.verify_file(&path).expect("verified");
    assert_eq!((plan.from_slot, plan.target_slot), (Slot::A, Slot::B));
    let _lock = upgrader.lock().expect("lock");
    assert!(matches!(upgrader.lock(), Err(UpgradeError::Busy)));
    let pending = upgrader
        .install_file(&path, &plan, &store, "admin")
        .expect("installed");
    assert_eq!(pending.to_version, "1.1.0");

    let (a, b, esp) = fake.snapshot();
    assert_eq!(a, vec![b'A'; SLOT_SIZE], "the running slot is untouched");
    assert_eq!(&b[..root.len()], &root[..]);
    assert!(b[root.len()..].iter().all(|&x| x == b'B'));
    let names: Vec<&str> = esp.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["poolgate-a.efi", "poolgate-b+3.efi"]);
    assert_eq!(esp[1].1, b"new kernel");

    let backup = Store::open(&fake.data_dir.join("backup-check")).expect("dir");
    drop(backup);
    let copy = fake.data_dir.join("upgrade").join(BACKUP_FILE);
    let conn = rusqlite::Connection::open(&copy).expect("backup opens");
    let marker: String = conn
        .query_row("SELECT value FROM settings WHERE key = 'marker'", [], |r| {
            r.get(0)
        })
        .expect("backup has the data");
    assert_eq!(marker, "before");

    let state = UpgradeState::load(&fake.data_dir).expect("state");
    assert_eq!(state.pending, Some(pending));
    let events = upgrade_events(&store);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].contains("admin started an upgrade from 1.0.0 to 1.1.0"));
    assert!(events[1].contains("1.1.0 installed in slot root-b"));
}

#[test]
fn refused_bundles_write_nothing() {
    let fake = Fake::new(Slot::B);
    let upgrader = fake.upgrader("1.0.0");
    let root = root_image();
    let good = fake.bundle("1.1.0", &root, b"kernel");
    let bytes = std::fs::read(&good).expect("read");
    let before = fake.snapshot();
    let write = |name: &str, content: &[u8]| {
        let path = fake.dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path
    };
    let mut tampered = bytes.clone();
    let at = bytes.len() - 100;
    tampered[at] ^= 0xff;
    let cases = [
        (write("tampered.pgup", &tampered), "does not match"),
        (
            write("truncated.pgup", &bytes[..bytes.len() - 1]),
            "truncated",
        ),
        (write("empty.pgup", b""), "truncated"),
        (fake.bundle("0.9.0", &root, b"k"), "downgrades"),
        (fake.bundle("1.0.0", &root, b"k"), "downgrades"),
        (
            fake.bundle("1.2.0", &vec![1u8; SLOT_SIZE + 1], b"k"),
            "does not fit",
        ),
    ];
    for (path, reason) in &cases {
        let error = upgrader.verify_file(path).expect_err("refused");
        assert!(error.to_string().contains(reason), "{error}");
    }
    let mut other = upgrader.clone();
    other.keys = vec![SigningKey::from_bytes(&[6; 32]).verifying_key()];
    let error = other.verify_file(&good).expect_err("untrusted");
    assert!(matches!(
        error,
        UpgradeError::Bundle(BundleError::BadSignature)
    ));
    let mut outside = upgrader.clone();
    outside.layout.cmdline = fake.dir.path().join("no-such-cmdline");
    assert!(matches!(
        outside.verify_file(&good),
        Err(UpgradeError::UnknownSlot { .. })
    ));
    assert_eq!(fake.snapshot(), before, "nothing was written");
    assert!(!fake.data_dir.exists(), "not even the data dir");
    assert!(upgrader.verify_file(&good).is_ok());
}

#[test]
fn a_bundle_that_changes_during_install_leaves_the_target_unbootable() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let path = fake.bundle("1.1.0", &root_image(), b"kernel");
    let store = Store::open(&fake.data_dir).expect("store");
    let plan = upgrader.verify_file(&path).expect("verified");
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() - 200;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).expect("swap");
    let error = upgrader
        .install_file(&path, &plan, &store, "admin")
        .expect_err("refused");
    assert!(error.to_string().contains("does not match"), "{error}");
    let (a, _, esp) = fake.snapshot();
    assert_eq!(a, vec![b'A'; SLOT_SIZE]);
    let names: Vec<&str> = esp.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["poolgate-a.efi"],
        "no UKI boots the half-written slot"
    );
    assert!(
        UpgradeState::load(&fake.data_dir)
            .expect("state")
            .pending
            .is_none()
    );
    let events = upgrade_events(&store);
    assert!(
        events
            .last()
            .expect("event")
            .contains("Upgrade to 1.1.0 failed")
    );
}

#[test]
fn the_new_version_records_success_and_its_predecessor() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let path = fake.bundle("1.1.0", &root_image(), b"kernel");
    {
        let store = Store::open(&fake.data_dir).expect("store");
        let plan = upgrader.verify_file(&path).expect("verified");
        upgrader
            .install_file(&path, &plan, &store, "admin")
            .expect("installed");
    }
    // The reboot: slot b, version 1.1.0.
    std::fs::write(&fake.layout.cmdline, "root=PARTLABEL=root-b").expect("cmdline");
    let new = fake.upgrader("1.1.0");
    let (store, last) = open_store(&fake.data_dir, &fake.layout, &new.running).expect("open");
    assert_eq!(last.map(|l| l.outcome), Some(Outcome::Succeeded));
    let info = new.info().expect("info");
    assert_eq!(info.slot, Some(Slot::B));
    assert_eq!(info.previous_version.as_deref(), Some("1.0.0"));
    assert!(info.pending_upgrade.is_none());
    let events = upgrade_events(&store);
    assert!(
        events
            .last()
            .expect("event")
            .contains("Upgrade from 1.0.0 to 1.1.0 succeeded: running from slot root-b"),
        "{events:?}"
    );
    drop(store);
    // Settled once: the next start records nothing more.
    let (store, last) = open_store(&fake.data_dir, &fake.layout, &new.running).expect("open");
    assert!(last.is_none());
    assert_eq!(upgrade_events(&store).len(), events.len());
}

/// The old version comes back on data the new one migrated: the database
/// refuses to open (its schema is newer), so the pre-upgrade backup is put
/// back and the newer database is kept aside.
#[test]
fn a_rollback_restores_the_backup_when_the_new_version_migrated() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let path = fake.bundle("1.1.0", &root_image(), b"kernel");
    {
        let store = Store::open(&fake.data_dir).expect("store");
        store.set_setting("marker", "before").expect("setting");
        let plan = upgrader.verify_file(&path).expect("verified");
        upgrader
            .install_file(&path, &plan, &store, "admin")
            .expect("installed");
    }
    // 1.1.0 boots once, migrates to a schema 1.0.0 does not know, and fails
    // to finish booting three times; systemd-boot renamed its UKI.
    {
        let conn =
            rusqlite::Connection::open(fake.data_dir.join(crate::store::DB_FILE)).expect("db");
        conn.execute_batch(&format!(
            "CREATE TABLE newer_feature (x); UPDATE settings SET value = 'after' WHERE key = 'marker';
             PRAGMA user_version = {};",
            crate::store::SCHEMA_VERSION + 1
        ))
        .expect("migrate");
    }
    assert!(matches!(
        Store::open(&fake.data_dir),
        Err(StoreError::SchemaTooNew { .. })
    ));
    let uki = fake.layout.uki_dir();
    std::fs::rename(uki.join("poolgate-b+3.efi"), uki.join("poolgate-b+0-3.efi")).expect("count");

    let (store, last) =
        open_store(&fake.data_dir, &fake.layout, &upgrader.running).expect("rolled back");
    let last = last.expect("settled");
    assert_eq!(last.outcome, Outcome::RolledBack);
    assert!(last.restored_backup);
    assert!(
        last.reason
            .as_deref()
            .is_some_and(|r| r.contains("did not finish booting in 3 attempts")),
        "{last:?}"
    );
    assert_eq!(
        store.setting("marker").expect("read").as_deref(),
        Some("before")
    );
    assert_eq!(
        store.schema_version().expect("schema"),
        crate::store::SCHEMA_VERSION
    );
    let kept = fake.data_dir.join("upgrade").join("poolgate.db.from-1.1.0");
    assert!(kept.is_file(), "the newer database is kept");
    let events = upgrade_events(&store);
    assert!(
        events
            .iter()
            .any(|e| e.contains("1.1.0 installed in slot root-b")),
        "the restored log still has the install: {events:?}"
    );
    let rollback = events.last().expect("event");
    assert!(
        rollback.starts_with("Rolled back to 1.0.0 from 1.1.0"),
        "{rollback}"
    );
    assert!(rollback.contains("restored from the backup"), "{rollback}");
    let info = upgrader.info().expect("info");
    assert_eq!(info.previous_version, None);
    assert_eq!(
        info.last_upgrade.map(|l| l.outcome),
        Some(Outcome::RolledBack)
    );
}

#[test]
fn a_rollback_keeps_the_data_when_the_schema_did_not_change() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let path = fake.bundle("1.1.0", &root_image(), b"kernel");
    let store = Store::open(&fake.data_dir).expect("store");
    let plan = upgrader.verify_file(&path).expect("verified");
    upgrader
        .install_file(&path, &plan, &store, "admin")
        .expect("installed");
    store.set_setting("marker", "after").expect("setting");
    drop(store);
    // Chosen in the boot menu before 1.1.0 ever booted: b keeps its tries.
    let (store, last) = open_store(&fake.data_dir, &fake.layout, &upgrader.running).expect("open");
    let last = last.expect("settled");
    assert_eq!(last.outcome, Outcome::RolledBack);
    assert!(!last.restored_backup);
    assert!(
        last.reason
            .as_deref()
            .is_some_and(|r| r.contains("3 boot attempts left")),
        "{last:?}"
    );
    assert_eq!(
        store.setting("marker").expect("read").as_deref(),
        Some("after")
    );
}

#[test]
fn without_a_backup_a_newer_schema_stops_start_up_with_the_reason() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let path = fake.bundle("1.1.0", &root_image(), b"kernel");
    {
        let store = Store::open(&fake.data_dir).expect("store");
        let plan = upgrader.verify_file(&path).expect("verified");
        upgrader
            .install_file(&path, &plan, &store, "admin")
            .expect("installed");
    }
    std::fs::remove_file(fake.data_dir.join("upgrade").join(BACKUP_FILE)).expect("remove");
    let conn = rusqlite::Connection::open(fake.data_dir.join(crate::store::DB_FILE)).expect("db");
    conn.pragma_update(None, "user_version", crate::store::SCHEMA_VERSION + 1)
        .expect("bump");
    drop(conn);
    let error = open_store(&fake.data_dir, &fake.layout, &upgrader.running).expect_err("refused");
    assert!(matches!(error, UpgradeError::NoBackup { .. }), "{error}");
    assert!(error.to_string().contains("start 1.1.0 again"), "{error}");
    // Nothing was moved: the newer database is where it was.
    assert!(fake.data_dir.join(crate::store::DB_FILE).is_file());
    assert!(
        UpgradeState::load(&fake.data_dir)
            .expect("state")
            .pending
            .is_some()
    );
}

#[test]
fn uploads_in_any_chunking_are_checked_early_and_leave_no_file() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let store = Store::open(&fake.data_dir).expect("store");
    let good = std::fs::read(fake.bundle("1.1.0", &root_image(), b"kernel")).expect("read");
    let chunks = |bytes: &[u8], size: usize| -> Vec<Result<Vec<u8>, String>> {
        bytes.chunks(size).map(|c| Ok(c.to_vec())).collect()
    };
    let before = fake.snapshot();

    // Signed by someone else: refused once the header is in, long before
    // the image has arrived.
    let mut stranger = upgrader.clone();
    stranger.keys = vec![SigningKey::from_bytes(&[6; 32]).verifying_key()];
    let mut pulled = 0;
    let pieces = chunks(&good, 7);
    let counted = pieces.iter().cloned().inspect(|_| pulled += 1);
    let error = stranger
        .upload(&store, "admin", counted, false)
        .expect_err("refused");
    assert!(matches!(
        error,
        UpgradeError::Bundle(BundleError::BadSignature)
    ));
    let header = bundle::header_len(&good).expect("ok").expect("length");
    assert!(
        pulled <= header / 7 + 1,
        "read {pulled} of {} pieces",
        pieces.len()
    );

    let mut longer = good.clone();
    longer.extend_from_slice(b"extra");
    let error = upgrader
        .upload(&store, "admin", chunks(&longer, 4096).into_iter(), false)
        .expect_err("refused");
    assert!(matches!(
        error,
        UpgradeError::Bundle(BundleError::TrailingData)
    ));
    let cut = chunks(&good, 4096)
        .into_iter()
        .take(3)
        .chain([Err("connection reset".to_owned())]);
    let error = upgrader
        .upload(&store, "admin", cut, false)
        .expect_err("refused");
    assert!(error.to_string().contains("connection reset"), "{error}");
    let short = chunks(&good[..good.len() - 1], 4096);
    let error = upgrader
        .upload(&store, "admin", short.into_iter(), true)
        .expect_err("refused");
    assert!(error.to_string().contains("ended early"), "{error}");
    assert_eq!(fake.snapshot(), before);
    assert!(!upgrader.incoming_path().exists());
    let refusals = upgrade_events(&store);
    assert_eq!(
        refusals.len(),
        3,
        "check-only uploads record nothing: {refusals:?}"
    );

    let checked = upgrader
        .upload(&store, "admin", chunks(&good, 1).into_iter(), true)
        .expect("verified");
    assert!(matches!(checked, Uploaded::Verified(_)));
    assert_eq!(fake.snapshot(), before);
    let installed = upgrader
        .upload(&store, "admin", chunks(&good, 1000).into_iter(), false)
        .expect("installed");
    assert!(matches!(installed, Uploaded::Installed(p) if p.to_slot == Slot::B));
    assert!(!upgrader.incoming_path().exists());
    assert_ne!(fake.snapshot(), before);
}

/// The new version starts (and records its success) but never finishes
/// booting; boot counting goes back to the old slot, which still rolls back.
#[test]
fn a_new_version_that_started_but_never_booted_fully_is_still_rolled_back() {
    let fake = Fake::new(Slot::A);
    let upgrader = fake.upgrader("1.0.0");
    let path = fake.bundle("1.1.0", &root_image(), b"kernel");
    {
        let store = Store::open(&fake.data_dir).expect("store");
        store.set_setting("marker", "before").expect("setting");
        let plan = upgrader.verify_file(&path).expect("verified");
        upgrader
            .install_file(&path, &plan, &store, "admin")
            .expect("installed");
    }
    std::fs::write(&fake.layout.cmdline, "root=PARTLABEL=root-b").expect("cmdline");
    let new = fake.upgrader("1.1.0");
    let (store, last) = open_store(&fake.data_dir, &fake.layout, &new.running).expect("open");
    assert_eq!(last.map(|l| l.outcome), Some(Outcome::Succeeded));
    store.set_setting("marker", "after").expect("setting");
    store
        .record_event(&NewEvent {
            kind: EventKind::Admin,
            message: "written by 1.1.0".into(),
            pool: None,
            member: None,
            detail: None,
        })
        .expect("event");
    drop(store);
    let conn = rusqlite::Connection::open(fake.data_dir.join(crate::store::DB_FILE)).expect("db");
    conn.pragma_update(None, "user_version", crate::store::SCHEMA_VERSION + 1)
        .expect("migrate");
    drop(conn);
    let uki = fake.layout.uki_dir();
    std::fs::rename(uki.join("poolgate-b+3.efi"), uki.join("poolgate-b+0-3.efi")).expect("count");
    std::fs::write(&fake.layout.cmdline, "root=PARTLABEL=root-a").expect("cmdline");

    let (store, last) =
        open_store(&fake.data_dir, &fake.layout, &upgrader.running).expect("rolled back");
    let last = last.expect("settled");
    assert_eq!(last.outcome, Outcome::RolledBack);
    assert!(last.restored_backup);
    assert_eq!(
        store.setting("marker").expect("read").as_deref(),
        Some("before")
    );
    drop(store);
    // Settled: the next start of the old version changes nothing.
    let (store, last) = open_store(&fake.data_dir, &fake.layout, &upgrader.running).expect("open");
    assert!(last.is_none());
    assert_eq!(
        store.setting("marker").expect("read").as_deref(),
        Some("before")
    );
}

/// A stand-in for `poolgate-install.path`: runs the root step whenever the
/// request appears, until `stop`; bounded by a deadline.
fn installer_thread(
    installer: Upgrader,
    request: PathBuf,
    work_dir: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<crate::system::install::InstallResult>> {
    std::thread::spawn(move || {
        let mut results = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !stop.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            if request.exists()
                && let Some(result) = installer
                    .install_staged(&request, &work_dir)
                    .expect("the root step runs")
            {
                results.push(result);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        results
    })
}

#[test]
fn with_an_install_request_the_root_step_writes_slot_and_esp() {
    use crate::system::install::InstallOutcome;
    let fake = Fake::new(Slot::A);
    let request = fake.data_dir.join("upgrade/install-request");
    let installer = fake.upgrader("1.0.0");
    let mut upgrader = fake.upgrader("1.0.0");
    upgrader.layout.install_request = Some(request.clone());
    let work_dir = fake.dir.path().join("work");
    std::fs::create_dir_all(&work_dir).expect("work dir");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = installer_thread(installer, request.clone(), work_dir, stop.clone());

    let root = root_image();
    let path = fake.bundle("1.1.0", &root, b"new kernel");
    let store = Store::open(&fake.data_dir).expect("store");
    let plan = upgrader.verify_file(&path).expect("verified");
    let pending = upgrader
        .install_file(&path, &plan, &store, "admin")
        .expect("installed through the root step");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = thread.join().expect("installer");
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].outcome,
        InstallOutcome::Installed {
            version: "1.1.0".into(),
            slot: Slot::B
        }
    );
    assert_eq!(pending.to_slot, Slot::B);
    let (a, b, esp) = fake.snapshot();
    assert_eq!(a, vec![b'A'; SLOT_SIZE]);
    assert_eq!(&b[..root.len()], &root[..]);
    let names: Vec<&str> = esp.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["poolgate-a.efi", "poolgate-b+3.efi"]);
    let upgrade_dir = fake.data_dir.join("upgrade");
    for left in ["install-request", "staged.pgup", "install-result.json"] {
        assert!(!upgrade_dir.join(left).exists(), "{left} left behind");
    }
    let events = upgrade_events(&store);
    assert!(
        events[1].contains("1.1.0 installed in slot root-b"),
        "{events:?}"
    );
}

/// What a compromised poolgate could stage without the upgrader: the root
/// step checks the bundle itself and writes nothing it did not verify.
#[test]
fn the_root_step_refuses_a_staged_bundle_it_cannot_verify() {
    use crate::system::install::{InstallOutcome, RESULT_FILE, STAGED_FILE};
    let fake = Fake::new(Slot::A);
    let upgrade_dir = fake.data_dir.join("upgrade");
    std::fs::create_dir_all(&upgrade_dir).expect("dir");
    let request = upgrade_dir.join("install-request");
    let installer = fake.upgrader("1.0.0");
    let work_dir = fake.dir.path().join("work");
    std::fs::create_dir_all(&work_dir).expect("work dir");
    let before = fake.snapshot();
    let run = |staged: &[u8]| {
        std::fs::write(upgrade_dir.join(STAGED_FILE), staged).expect("stage");
        std::fs::write(&request, br#"{"id":"00ff"}"#).expect("request");
        let result = installer
            .install_staged(&request, &work_dir)
            .expect("runs")
            .expect("a result");
        assert!(!request.exists(), "the request is taken");
        let written: crate::system::install::InstallResult = serde_json::from_slice(
            &std::fs::read(upgrade_dir.join(RESULT_FILE)).expect("result file"),
        )
        .expect("typed result");
        assert_eq!(written, result);
        result.outcome
    };
    let mut unsigned = std::fs::read(fake.bundle("1.1.0", &root_image(), b"k")).expect("read");
    let other = SigningKey::from_bytes(&[6; 32]);
    let foreign = {
        let mut fake_other = fake.upgrader("1.0.0");
        fake_other.keys = vec![other.verifying_key()];
        let manifest = Manifest {
            product: PRODUCT.into(),
            version: "1.1.0".into(),
            min_from_version: "1.0.0".into(),
            components: vec![
                describe(bundle::ROOT, &root_image()[..]).expect("hash"),
                describe(bundle::UKI, &b"evil"[..]).expect("hash"),
            ],
        };
        let mut out = Vec::new();
        write_bundle(
            &mut out,
            &manifest,
            &other,
            &mut [&mut &root_image()[..], &mut &b"evil"[..]],
        )
        .expect("write");
        out
    };
    let at = unsigned.len() - 100;
    unsigned[at] ^= 0xff;
    for staged in [&foreign[..], &unsigned[..], b"not a bundle"] {
        assert!(
            matches!(run(staged), InstallOutcome::Refused { .. }),
            "refused"
        );
    }
    // A link planted in place of the staged bundle is not followed.
    std::fs::remove_file(upgrade_dir.join(STAGED_FILE)).expect("rm");
    std::os::unix::fs::symlink(&fake.layout.root_a, upgrade_dir.join(STAGED_FILE))
        .expect("symlink");
    std::fs::write(&request, br#"{"id":"01"}"#).expect("request");
    let result = installer
        .install_staged(&request, &work_dir)
        .expect("runs")
        .expect("a result");
    assert!(
        matches!(&result.outcome, InstallOutcome::Failed { reason } if reason.contains("cannot open")),
        "{result:?}"
    );
    // Request text that is not a request: nothing is done.
    std::fs::write(&request, b"{\"id\":\"../../etc\"}").expect("request");
    assert!(installer.install_staged(&request, &work_dir).is_err());
    assert_eq!(fake.snapshot(), before, "nothing was written");
}

/// Every error's verdict, as the API's status and the console's exit code
/// depend on it.
#[test]
fn every_upgrade_error_has_its_verdict() {
    let io = || std::io::Error::other("disk");
    let cases = [
        (
            UpgradeError::Bundle(BundleError::NotABundle),
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::Truncated("x")),
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::ManifestSize(0)),
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::Unsigned),
            Verdict::Refused,
        ),
        (UpgradeError::Bundle(BundleError::NoKeys), Verdict::Refused),
        (
            UpgradeError::Bundle(BundleError::BadSignature),
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::Manifest("x".into())),
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::WrongProduct { found: "x".into() }),
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::HashMismatch {
                name: "root".into(),
            }),
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::TrailingData),
            Verdict::Refused,
        ),
        (
            UpgradeError::TooBig {
                slot: "root-b",
                device: PathBuf::from("/dev/null"),
                size: 2,
                capacity: 1,
            },
            Verdict::Refused,
        ),
        (
            UpgradeError::Installer {
                refused: true,
                reason: "x".into(),
            },
            Verdict::Refused,
        ),
        (
            UpgradeError::Bundle(BundleError::NotNewer {
                version: "1.0.0".into(),
                running: "1.0.0".into(),
            }),
            Verdict::DoesNotApply,
        ),
        (
            UpgradeError::Bundle(BundleError::TooOld {
                version: "3.0.0".into(),
                min_from: "2.0.0".into(),
                running: "1.0.0".into(),
            }),
            Verdict::DoesNotApply,
        ),
        (
            UpgradeError::UnknownSlot {
                cmdline: PathBuf::from("/proc/cmdline"),
            },
            Verdict::DoesNotApply,
        ),
        (UpgradeError::Busy, Verdict::DoesNotApply),
        (UpgradeError::Upload("reset".into()), Verdict::Interrupted),
        (UpgradeError::Bundle(BundleError::Io(io())), Verdict::Failed),
        (
            UpgradeError::ReadBack {
                slot: "root-b",
                what: "root image",
            },
            Verdict::Failed,
        ),
        (
            UpgradeError::NoBackup {
                version: "2.0.0".into(),
                found: 9,
                supported: 8,
            },
            Verdict::Failed,
        ),
        (
            UpgradeError::Io(crate::system::FileError {
                what: "cannot open",
                path: PathBuf::from("/x"),
                source: io(),
            }),
            Verdict::Failed,
        ),
        (UpgradeError::Reboot("x".into()), Verdict::Failed),
        (
            UpgradeError::Installer {
                refused: false,
                reason: "x".into(),
            },
            Verdict::Failed,
        ),
        (
            UpgradeError::Store(StoreError::WeakPassword),
            Verdict::Failed,
        ),
    ];
    for (error, verdict) in cases {
        assert_eq!(error.verdict(), verdict, "{error}");
    }
}
