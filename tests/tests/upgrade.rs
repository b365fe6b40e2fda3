//! Upgrades end to end, on a fake disk layout: plain files stand in for the
//! root slots, a directory for the ESP, and a file for the kernel command
//! line. The binary under test is built with `test-upgrade-keys`, so it
//! trusts the key this test writes to a file; it runs with `--no-reboot`,
//! or reboots through a request file.
//!
//! Covered: `poolgate upgrade --verify-only` on good and bad bundles, a
//! console upgrade (slot content, UKI with its boot counter, database
//! backup, events), a reboot asked for through the layout's request file,
//! a rollback after the new version failed to boot on a database it had
//! migrated, the upload API, and an install through the root step
//! (`poolgate system install-staged`, which the image runs as root) that
//! also refuses a bundle staged behind the upgrader's back. Every refusal
//! leaves both slots and the ESP byte-for-byte as they were.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use poolgate::system::bundle::{self, Manifest};
use poolgate_e2e::upgrade::{NEXT, fake_layout, root_image, write_keys, write_test_bundle};
use poolgate_e2e::{AdminClient, Poolgate, binary};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";

type Snapshot = (Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

struct Fake {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        write_keys(&dir.path().join("keys.txt"), &key);
        fake_layout(dir.path());
        Self { dir, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn data_dir(&self) -> PathBuf {
        self.path("var")
    }

    fn env(&self) -> [(&'static str, PathBuf); 1] {
        [("POOLGATE_TEST_UPGRADE_KEYS", self.path("keys.txt"))]
    }

    /// A bundle signed with `key`, as `make image` would make it.
    fn bundle_with(
        &self,
        name: &str,
        key: &SigningKey,
        edit: impl FnOnce(&mut Manifest),
    ) -> PathBuf {
        let path = self.path(name);
        write_test_bundle(&path, key, edit);
        path
    }

    fn bundle(&self, name: &str) -> PathBuf {
        self.bundle_with(name, &self.key, |_| {})
    }

    /// Good and bad bundles, each with a word its refusal must contain.
    fn bad_bundles(&self) -> Vec<(PathBuf, &'static str)> {
        let good = std::fs::read(self.bundle("good.pgup")).expect("read");
        let write = |name: &str, bytes: &[u8]| {
            let path = self.path(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let mut tampered = good.clone();
        let at = good.len() - 1000;
        tampered[at] ^= 0x20;
        let header = bundle::header_len(&good).expect("header").expect("length");
        let mut unsigned = good.clone();
        unsigned[header - bundle::SIGNATURE_LEN..header].fill(0);
        let stranger = SigningKey::from_bytes(&[42; 32]);
        vec![
            (write("tampered.pgup", &tampered), "does not match"),
            (
                write("truncated.pgup", &good[..good.len() / 2]),
                "truncated",
            ),
            (write("unsigned.pgup", &unsigned), "not signed"),
            (
                self.bundle_with("stranger.pgup", &stranger, |_| {}),
                "any trusted upgrade key",
            ),
            (
                self.bundle_with("other.pgup", &self.key, |m| m.product = "otherbox".into()),
                "not poolgate",
            ),
            (
                self.bundle_with("old.pgup", &self.key, |m| m.version = "0.0.9".into()),
                "downgrades",
            ),
            (
                self.bundle_with("far.pgup", &self.key, |m| {
                    m.min_from_version = "98.0.0".into();
                }),
                "upgrades only from 98.0.0",
            ),
        ]
    }

    /// Both slots and every file on the ESP.
    fn snapshot(&self) -> Snapshot {
        let mut esp: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.path("esp/EFI/Linux"))
            .expect("esp")
            .map(|entry| {
                let entry = entry.expect("entry");
                let content = std::fs::read(entry.path()).expect("read");
                (entry.file_name().to_string_lossy().into_owned(), content)
            })
            .collect();
        esp.sort();
        (
            std::fs::read(self.path("root-a.img")).expect("a"),
            std::fs::read(self.path("root-b.img")).expect("b"),
            esp,
        )
    }

    /// `poolgate upgrade FILE ARGS…` on this layout.
    fn upgrade(&self, file: &Path, args: &[&str]) -> Output {
        Command::new(binary())
            .envs(self.env())
            .arg("upgrade")
            .arg(file)
            .arg("--system-layout")
            .arg(self.path("layout.toml"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("run poolgate upgrade")
    }

    fn start(&self) -> (Poolgate, AdminClient) {
        let layout = self.path("layout.toml");
        let keys = self.path("keys.txt");
        let poolgate = Poolgate::start_with_env(
            &self.data_dir(),
            &[
                "--admin-listen",
                "127.0.0.1:0",
                "--no-reboot",
                "--system-layout",
                layout.to_str().expect("utf-8"),
            ],
            &[("POOLGATE_TEST_UPGRADE_KEYS", keys.to_str().expect("utf-8"))],
        );
        let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
        (poolgate, client)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn upgrade_events(client: &AdminClient) -> Vec<String> {
    let events = client.json("/api/v1/events?kind=upgrade&after=0");
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["message"].as_str().expect("message").to_owned())
        .collect()
}

#[test]
fn verify_only_checks_everything_and_writes_nothing() {
    let fake = Fake::new();
    let before = fake.snapshot();
    let good = fake.upgrade(&fake.bundle("good.pgup"), &["--verify-only"]);
    assert!(good.status.success(), "{good:?}");
    let out = text(&good.stdout);
    assert!(out.contains(&format!("poolgate {NEXT}")), "{out}");
    assert!(out.contains("installs into slot root-b"), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    for (bundle, reason) in fake.bad_bundles() {
        let output = fake.upgrade(&bundle, &["--verify-only"]);
        assert_eq!(output.status.code(), Some(65), "{bundle:?}: {output:?}");
        let error = text(&output.stderr);
        assert!(error.contains("refused"), "{error}");
        assert!(error.contains(reason), "{bundle:?}: {error}");
    }
    assert_eq!(fake.snapshot(), before, "nothing was written");
    assert!(!fake.data_dir().exists(), "not even the data dir");
}

/// The appliance image's way: poolgate may not run `systemctl reboot`, so
/// its layout names a file for a root unit to act on.
#[test]
fn a_layout_with_a_reboot_request_file_reboots_by_creating_it() {
    let fake = Fake::new();
    let request = fake.path("upgrade-reboot-request");
    let layout = fake.path("layout.toml");
    let mut toml = std::fs::read_to_string(&layout).expect("layout");
    toml.push_str(&format!(
        "reboot_request = {:?}\n",
        request.to_str().expect("utf-8")
    ));
    std::fs::write(&layout, toml).expect("layout");

    let output = fake.upgrade(&fake.bundle("good.pgup"), &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(text(&output.stdout).contains(&format!("Rebooting into {NEXT}")));
    assert_eq!(std::fs::read(&request).expect("the request file"), b"");
}

#[test]
fn console_upgrade_installs_and_a_failed_boot_rolls_back_with_the_backup() {
    let fake = Fake::new();
    let before = fake.snapshot();
    for (bundle, reason) in fake.bad_bundles() {
        let output = fake.upgrade(&bundle, &["--no-reboot"]);
        assert_eq!(output.status.code(), Some(65), "{bundle:?}: {output:?}");
        assert!(text(&output.stderr).contains(reason), "{output:?}");
    }
    assert_eq!(fake.snapshot(), before, "refusals write nothing");

    let output = fake.upgrade(&fake.bundle("good.pgup"), &["--no-reboot"]);
    assert!(output.status.success(), "{output:?}");
    assert!(text(&output.stdout).contains(&format!("Reboot to start {NEXT}")));
    let (a, b, esp) = fake.snapshot();
    assert_eq!(a, before.0, "the running slot is untouched");
    let root = root_image();
    assert_eq!(&b[..root.len()], &root[..], "the new root is in slot b");
    assert!(b[root.len()..].iter().all(|&x| x == b'B'));
    let names: Vec<&str> = esp.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["poolgate-a.efi", "poolgate-b+3.efi"]);
    assert_eq!(esp[1].1, b"MZ new kernel");
    let backup = fake.data_dir().join("upgrade/pre-upgrade.db");
    let conn = rusqlite::Connection::open(&backup).expect("the backup is a database");
    let schema: u32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("schema");
    assert_eq!(schema, poolgate::store::SCHEMA_VERSION);
    drop(conn);

    // The new version boots, migrates the database past what this one
    // reads, and never finishes booting: after three tries systemd-boot
    // has renamed its UKI and starts slot a again.
    let db = rusqlite::Connection::open(fake.data_dir().join("poolgate.db")).expect("db");
    db.pragma_update(None, "user_version", poolgate::store::SCHEMA_VERSION + 1)
        .expect("migrate");
    drop(db);
    let uki = fake.path("esp/EFI/Linux");
    std::fs::rename(uki.join("poolgate-b+3.efi"), uki.join("poolgate-b+0-3.efi")).expect("count");

    let (mut poolgate, client) = fake.start();
    let events = upgrade_events(&client);
    let joined = events.join("\n");
    assert!(
        joined.contains("refused: the bundle is not signed"),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("console started an upgrade from 0.1.0 to {NEXT}")),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("Version {NEXT} installed in slot root-b")),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("Reboot into {NEXT} skipped")),
        "{joined}"
    );
    let rollback = events.last().expect("rollback event");
    assert!(
        rollback.starts_with(&format!("Rolled back to 0.1.0 from {NEXT}")),
        "{rollback}"
    );
    assert!(
        rollback.contains("did not finish booting in 3 attempts"),
        "{rollback}"
    );
    assert!(rollback.contains("restored from the backup"), "{rollback}");
    let system = client.json("/api/v1/system");
    assert_eq!(system["slot"], "a");
    assert_eq!(system["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(system["previous_version"], Value::Null);
    assert_eq!(system["pending_upgrade"], Value::Null);
    assert_eq!(system["last_upgrade"]["outcome"], "rolled_back");
    assert_eq!(system["last_upgrade"]["restored_backup"], true);
    assert!(
        fake.data_dir()
            .join(format!("upgrade/poolgate.db.from-{NEXT}"))
            .is_file(),
        "the migrated database is kept aside"
    );
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn the_api_refuses_bad_uploads_then_installs_and_schedules_the_reboot() {
    let fake = Fake::new();
    let (mut poolgate, client) = fake.start();
    let post = |bundle: &Path, query: &str| {
        let response = client
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/system/upgrade{query}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(std::fs::read(bundle).expect("bundle"))
            .send()
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json::<Value>().expect("JSON"))
    };
    let before = fake.snapshot();
    for (bundle, reason) in fake.bad_bundles() {
        let (status, body) = post(&bundle, "");
        let expected = if reason.contains("downgrades") || reason.contains("upgrades only") {
            409
        } else {
            422
        };
        assert_eq!(status, expected, "{bundle:?}: {body}");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains(reason), "{bundle:?}: {error}");
    }
    let good = fake.bundle("good.pgup");
    let (status, body) = post(&good, "?verify_only=true");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verified"], true);
    assert_eq!(body["slot"], "b");
    assert_eq!(fake.snapshot(), before, "refusals and checks write nothing");
    assert!(!fake.data_dir().join("upgrade/incoming.pgup").exists());

    let (status, body) = post(&good, "?reboot=later");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["installed"], NEXT);
    assert_eq!(body["reboot"], Value::Null);
    let (_, b, esp) = fake.snapshot();
    assert_eq!(&b[..root_image().len()], &root_image()[..]);
    assert!(esp.iter().any(|(name, _)| name == "poolgate-b+3.efi"));
    let system = client.json("/api/v1/system");
    assert_eq!(system["slot"], "a");
    assert_eq!(system["pending_upgrade"]["to_version"], NEXT);
    assert_eq!(system["pending_upgrade"]["to_slot"], "b");

    let (status, body) = post(&good, "?reboot=now&drain_timeout_s=5");
    assert_eq!(status, 200, "{body}");
    poolgate_e2e::wait_for("the reboot event", Duration::from_secs(20), || {
        upgrade_events(&client)
            .iter()
            .any(|e| e.contains("skipped: rebooting is disabled"))
    });
    let events = upgrade_events(&client).join("\n");
    assert!(
        events.contains("admin offered an upgrade bundle; refused"),
        "{events}"
    );
    assert!(
        events.contains(&format!("admin started an upgrade from 0.1.0 to {NEXT}")),
        "{events}"
    );
    let (status, body) = post(&good, "?reboot=tomorrow");
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(&good, "?reboot_at=now");
    assert_eq!(status, 400, "{body}");
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

/// The image's split: poolgate (unprivileged) stages a bundle it verified
/// and asks; a root step, here run by the test in place of
/// `poolgate-install.path`, verifies it again and writes slot and ESP.
#[test]
fn with_an_install_request_a_root_step_writes_slot_and_esp_after_its_own_check() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let fake = Fake::new();
    let request = fake.data_dir().join("upgrade/install-request");
    let layout = fake.path("layout.toml");
    let mut toml = std::fs::read_to_string(&layout).expect("layout");
    toml.push_str(&format!("install_request = {request:?}\n"));
    std::fs::write(&layout, toml).expect("layout");
    let work_dir = fake.path("install-work");
    let installer = |request: &Path| {
        let output = Command::new(binary())
            .envs(fake.env())
            .args(["system", "install-staged", "--system-layout"])
            .arg(&layout)
            .arg("--work-dir")
            .arg(&work_dir)
            .output()
            .expect("run the install step");
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(!request.exists(), "the step takes the request");
        text(&output.stdout)
    };
    let (mut poolgate, client) = fake.start();
    let stop = Arc::new(AtomicBool::new(false));
    let results = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut results = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            // Bounded by the deadline.
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                if request.exists() {
                    results.push(installer(&request));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            results
        });
        let response = client
            .request(reqwest::Method::POST, "/api/v1/system/upgrade?reboot=later")
            .header("Content-Type", "application/octet-stream")
            .body(std::fs::read(fake.bundle("good.pgup")).expect("bundle"))
            .send()
            .expect("POST");
        let status = response.status().as_u16();
        let body: Value = response.json().expect("JSON");
        stop.store(true, Ordering::Relaxed);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["installed"], NEXT);
        watcher.join().expect("watcher")
    });
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0].contains("\"installed\""), "{}", results[0]);
    let installed = fake.snapshot();
    assert_eq!(&installed.1[..root_image().len()], &root_image()[..]);
    assert!(
        installed
            .2
            .iter()
            .any(|(name, _)| name == "poolgate-b+3.efi")
    );
    let upgrade_dir = fake.data_dir().join("upgrade");
    for left in ["staged.pgup", "install-request", "install-result.json"] {
        assert!(!upgrade_dir.join(left).exists(), "{left} left behind");
    }
    let events = upgrade_events(&client).join("\n");
    assert!(
        events.contains(&format!("Version {NEXT} installed in slot root-b")),
        "{events}"
    );

    // Staged behind the upgrader's back (what code running as poolgate
    // could do): the step checks for itself and writes nothing.
    for (bundle, reason) in fake.bad_bundles().into_iter().take(4) {
        std::fs::copy(&bundle, upgrade_dir.join("staged.pgup")).expect("stage");
        std::fs::write(&request, r#"{"id":"5eed"}"#).expect("request");
        let result = installer(&request);
        assert!(
            result.contains("\"refused\"") && result.contains(reason),
            "{bundle:?}: {result}"
        );
    }
    assert_eq!(
        fake.snapshot(),
        installed,
        "refused by the step: nothing written"
    );
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}
