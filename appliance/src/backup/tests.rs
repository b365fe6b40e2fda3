use super::*;

fn snapshot() -> Snapshot {
    Snapshot {
        format: PAYLOAD_FORMAT,
        made_at: "2026-01-01T00:00:00Z".into(),
        poolgate_version: "0.1.0".into(),
        appliance_id: "pg-a".into(),
        config_versions: vec![StoredVersion {
            id: 3,
            created_at: "2026-01-01T00:00:00Z".into(),
            source: "API (admin)".into(),
            toml: "x".into(),
        }],
        admin_states: Vec::new(),
        credentials: Credentials::default(),
        certificate: None,
        ca_bundles: Vec::new(),
        licences: Vec::new(),
        network: None,
        vrrp: None,
    }
}

#[test]
fn a_snapshot_comes_back_whole_from_its_archive() {
    let archive = seal(&snapshot(), "a long passphrase").expect("seal");
    assert_eq!(
        open(&archive, "a long passphrase").expect("open"),
        snapshot()
    );
}

#[test]
fn a_payload_of_another_format_is_named() {
    let payload = br#"{"format": 2}"#;
    let archive = format::seal(
        payload,
        "a long passphrase",
        format::KdfCost {
            memory_kib: 64,
            passes: 1,
            lanes: 1,
        },
    )
    .expect("seal");
    let error = open(&archive, "a long passphrase").expect_err("format 2 is unknown");
    assert!(error.to_string().contains("payload format 2"), "{error}");
}
