//! The vendor tool's keys and licences verify in the appliance's code.

use std::process::Command;

use poolgate::license::document;

#[test]
fn keygen_then_issue_makes_a_licence_the_appliance_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = env!("CARGO_BIN_EXE_poolgate-license");
    let keygen = Command::new(tool)
        .args(["keygen", "--out"])
        .arg(dir.path())
        .output()
        .expect("keygen");
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let public = String::from_utf8(keygen.stdout).expect("utf-8");
    let key = document::parse_key(public.trim()).expect("public key printed");

    let again = Command::new(tool)
        .args(["keygen", "--out"])
        .arg(dir.path())
        .output()
        .expect("keygen");
    assert!(
        !again.status.success(),
        "an existing signing key is never overwritten"
    );

    let issue = Command::new(tool)
        .args(["issue", "--key"])
        .arg(dir.path().join("license-signing.key"))
        .args([
            "--customer",
            "Contoso",
            "--appliance-id",
            "abc",
            "--days",
            "30",
            "--members",
            "12",
        ])
        .output()
        .expect("issue");
    assert!(
        issue.status.success(),
        "{}",
        String::from_utf8_lossy(&issue.stderr)
    );
    let text = String::from_utf8(issue.stdout).expect("utf-8");
    let licence =
        document::verify(&text, &[key], "abc", time::OffsetDateTime::now_utc()).expect("verifies");
    assert_eq!(licence.customer, "Contoso");
    assert_eq!(licence.limits.members, Some(12));
    assert!(licence.expires.is_some());
}
