//! The vendor tool's upgrade bundles verify in the appliance's code.

use std::process::Command;

use poolgate::license::document;
use poolgate::system::bundle::{BundleError, Reader};

#[test]
fn keygen_then_sign_makes_a_bundle_the_appliance_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = env!("CARGO_BIN_EXE_poolgate-bundle");
    let keygen = Command::new(tool)
        .args(["keygen", "--out"])
        .arg(dir.path())
        .output()
        .expect("keygen");
    assert!(keygen.status.success(), "{keygen:?}");
    let public = String::from_utf8(keygen.stdout).expect("utf-8");
    let key = document::parse_key(public.trim()).expect("public key printed");
    let root = dir.path().join("root.squashfs");
    let uki = dir.path().join("poolgate.efi");
    std::fs::write(&root, vec![7u8; 100_000]).expect("root");
    std::fs::write(&uki, b"MZ kernel").expect("uki");
    let out = dir.path().join("poolgate-1.2.0.pgup");
    let sign = |version: &str, min_from: &str| {
        Command::new(tool)
            .arg("sign")
            .arg("--key")
            .arg(dir.path().join("upgrade-signing.key"))
            .args(["--version", version, "--min-from", min_from, "--root"])
            .arg(&root)
            .arg("--uki")
            .arg(&uki)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("sign")
    };
    let signed = sign("1.2.0", "1.0.0");
    assert!(signed.status.success(), "{signed:?}");
    let manifest = Reader::open(std::fs::File::open(&out).expect("bundle"), &[key])
        .expect("header")
        .verify_to_end()
        .expect("verifies");
    assert_eq!(manifest.version, "1.2.0");
    assert_eq!(manifest.components[0].size, 100_000);
    let other = document::parse_key(&"11".repeat(32)).expect("a key");
    assert!(matches!(
        Reader::open(std::fs::File::open(&out).expect("bundle"), &[other]),
        Err(BundleError::BadSignature)
    ));

    let verify = Command::new(tool)
        .arg("verify")
        .arg(&out)
        .arg("--pub")
        .arg(dir.path().join("upgrade-signing.pub"))
        .output()
        .expect("verify");
    assert!(verify.status.success(), "{verify:?}");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("\"min_from_version\": \"1.0.0\""));

    let backwards = sign("1.2.0", "1.3.0");
    assert!(!backwards.status.success(), "min-from after version");
    let not_semver = sign("1.2", "1.0.0");
    assert!(!not_semver.status.success(), "a version must be semver");
}
