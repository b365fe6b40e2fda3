//! The web UI in a real browser: headless Chromium driven by Playwright
//! (`tests/browser/ui.mjs`) through the acceptance flow, from first-boot
//! password to logout, including a firmware upgrade on a fake disk (the
//! binary under test is built with `test-license-keys,test-upgrade-keys`
//! and runs with `--no-reboot`). Screenshots, and the exported config,
//! land in `target/browser-artifacts/`.
//! `.ci/run` installs Chromium and the npm package.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use poolgate::license::document;
use poolgate_e2e::{Peer, Poolgate, loopback_example, upgrade};

#[test]
fn acceptance_flow_from_first_boot_to_logout() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // A vendor key of the test's own, trusted by the binary under test.
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let keys_file = dir.path().join("keys.txt");
    std::fs::write(&keys_file, document::key_hex(&key.verifying_key())).expect("keys");
    // Simulated Front Ends; the browser script asks (through a file in
    // `control`) for fe03 to be stopped, and this test restarts them without it.
    let config = loopback_example();
    let demo_all = dir.path().join("demo-all.toml");
    std::fs::write(&demo_all, toml::to_string(&config).expect("toml")).expect("write");
    let mut without_fe03 = config.clone();
    without_fe03["pool"].as_array_mut().expect("pools")[0]["member"]
        .as_array_mut()
        .expect("members")
        .retain(|m| m["name"].as_str() != Some("fe03"));
    let demo_some = dir.path().join("demo-some.toml");
    std::fs::write(&demo_some, toml::to_string(&without_fe03).expect("toml")).expect("write");
    let control = dir.path().join("control");
    std::fs::create_dir(&control).expect("control dir");
    let demo = |file: &std::path::Path| {
        Peer(
            Command::new(poolgate_e2e::binary())
                .args(["demo-members", "--config"])
                .arg(file)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("demo members"),
        )
    };
    let all = demo(&demo_all);
    let watcher = {
        let control = control.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(240);
            let mut all = Some(all);
            while std::time::Instant::now() < deadline && !control.join("done").exists() {
                if all.is_some() && control.join("stop-fe03").exists() {
                    drop(all.take());
                    return Some(demo(&demo_some));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    };
    // A fake disk to upgrade (never rebooting), an upgrade key of the
    // test's own, and two bundles signed with it: one good, one tampered.
    let system = dir.path().join("system");
    std::fs::create_dir(&system).expect("system dir");
    let layout = upgrade::fake_layout(&system);
    let upgrade_key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let upgrade_keys = dir.path().join("upgrade-keys.txt");
    upgrade::write_keys(&upgrade_keys, &upgrade_key);
    let good = dir.path().join(format!("poolgate-{}.pgup", upgrade::NEXT));
    upgrade::write_test_bundle(&good, &upgrade_key, |_| {});
    let tampered = dir.path().join("tampered.pgup");
    upgrade::write_tampered(&good, &tampered);
    let mut poolgate = Poolgate::start_with_config_env(
        &dir.path().join("var"),
        &config,
        &[
            "--no-reboot",
            "--system-layout",
            layout.to_str().expect("utf-8"),
        ],
        &[
            (
                "POOLGATE_TEST_LICENSE_KEYS",
                keys_file.to_str().expect("utf-8"),
            ),
            (
                "POOLGATE_TEST_UPGRADE_KEYS",
                upgrade_keys.to_str().expect("utf-8"),
            ),
        ],
    );
    let admin = poolgate.address("admin");
    let store = poolgate::store::Store::open(&dir.path().join("var")).expect("store");
    let appliance_id = store
        .setting("appliance_id")
        .expect("setting")
        .expect("appliance id");
    let now = time::OffsetDateTime::now_utc();
    let licence = document::sign(
        &document::Licence {
            id: "UI-1".into(),
            customer: "Contoso Ltd".into(),
            issued: now - time::Duration::minutes(1),
            not_before: None,
            expires: Some(now + time::Duration::days(365)),
            appliance_id,
            limits: document::Limits::default(),
        },
        &key,
    );
    let licence_file = dir.path().join("contoso.lic");
    std::fs::write(&licence_file, licence).expect("licence");
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg(browser_dir.join("ui.mjs"))
        .arg(format!("https://{admin}/"))
        .arg(&artifacts)
        .arg(&licence_file)
        .arg(&control)
        .env("UPGRADE_BUNDLE", &good)
        .env("UPGRADE_TAMPERED", &tampered)
        .output()
        .expect("run node");
    std::fs::write(control.join("done"), "").expect("done");
    let _remaining = watcher.join().expect("watcher");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // What the browser installed is on the disk: the new root in slot b,
    // its kernel with three boot tries, slot a as it was.
    let root = upgrade::root_image();
    let slot_b = std::fs::read(system.join("root-b.img")).expect("slot b");
    assert_eq!(&slot_b[..root.len()], &root[..], "the new root is in slot b");
    assert!(system.join("esp/EFI/Linux/poolgate-b+3.efi").is_file());
    let slot_a = std::fs::read(system.join("root-a.img")).expect("slot a");
    assert!(slot_a.iter().all(|&byte| byte == b'A'), "slot a untouched");
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}
