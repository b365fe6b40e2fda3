//! The web UI in a real browser: headless Chromium driven by Playwright
//! (`tests/browser/ui.mjs`). Screenshots land in `target/browser-artifacts/`.
//! `.ci/run` installs Chromium and the npm package.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use poolgate::license::document;
use poolgate_e2e::{Poolgate, loopback_example};

#[test]
fn setup_login_dashboard_drain_enable_logout() {
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
    let mut poolgate = Poolgate::start_with_config_env(
        &dir.path().join("var"),
        &loopback_example(),
        &[],
        &[(
            "POOLGATE_TEST_LICENSE_KEYS",
            keys_file.to_str().expect("utf-8"),
        )],
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
    let output = Command::new("node")
        .arg(browser_dir.join("ui.mjs"))
        .arg(format!("https://{admin}/"))
        .arg(&artifacts)
        .arg(&licence_file)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}
