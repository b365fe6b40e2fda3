//! The web UI in a real browser: headless Chromium driven by Playwright
//! (`tests/browser/ui.mjs`). Screenshots land in `target/browser-artifacts/`.
//! `.ci/run` installs Chromium and the npm package.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use poolgate_e2e::{Poolgate, loopback_example};

#[test]
fn setup_login_dashboard_drain_enable_logout() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut poolgate =
        Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let admin = poolgate.address("admin");
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    let output = Command::new("node")
        .arg(browser_dir.join("ui.mjs"))
        .arg(format!("https://{admin}/"))
        .arg(&artifacts)
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
