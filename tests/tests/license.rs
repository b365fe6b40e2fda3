//! Licensing end to end: evaluation on a fresh appliance, activation through
//! the API and the console, limits on config changes, and an expired licence
//! that blocks config changes while everything else keeps working.
//!
//! The binary under test is built with `test-license-keys`, so it trusts the
//! key this test writes to a file.

use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use poolgate::license::document::{self, Licence, Limits};
use poolgate_e2e::dig::dig;
use poolgate_e2e::{AdminClient, Peer, Poolgate, loopback_example};
use serde_json::{Value, json};
use time::OffsetDateTime;

const PASSWORD: &str = "correct horse battery staple";

fn vendor_key(dir: &Path) -> (SigningKey, String) {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let file = dir.join("keys.txt");
    std::fs::write(&file, document::key_hex(&key.verifying_key())).expect("write keys");
    (key, file.to_str().expect("utf-8").to_owned())
}

fn issue(
    key: &SigningKey,
    appliance_id: &str,
    expires: Option<OffsetDateTime>,
    members: Option<u32>,
) -> String {
    let now = OffsetDateTime::now_utc();
    document::sign(
        &Licence {
            id: format!("T-{}", now.unix_timestamp_nanos()),
            customer: "Contoso Ltd".into(),
            issued: now - time::Duration::minutes(1),
            not_before: None,
            expires,
            appliance_id: appliance_id.into(),
            limits: Limits {
                virtual_services: None,
                members,
                features: vec![],
            },
        },
        key,
    )
}

/// One HTTP request through the VIP answered by a simulated member.
fn vip_answers(vip: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(vip) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buffer = [0u8; 512];
    matches!(stream.read(&mut buffer), Ok(n) if String::from_utf8_lossy(&buffer[..n]).contains("X-Member: fe"))
}

#[test]
fn evaluation_activation_limits_and_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, keys_file) = vendor_key(dir.path());
    let config = loopback_example();
    // Simulated Front Ends behind the VIP, so traffic can be checked too.
    let demo_config = dir.path().join("demo.toml");
    std::fs::write(&demo_config, toml::to_string(&config).expect("toml")).expect("write");
    let _demo = Peer(
        std::process::Command::new(poolgate_e2e::binary())
            .args(["demo-members", "--config"])
            .arg(&demo_config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("demo members"),
    );
    let poolgate = Poolgate::start_with_config_env(
        &dir.path().join("var"),
        &config,
        &[],
        &[("POOLGATE_TEST_LICENSE_KEYS", &keys_file)],
    );
    let listening = poolgate.listening(&["admin", "dns-udp", "vip:web-internal"]);
    let dns = listening["dns-udp"][0];
    let vip = listening["vip:web-internal"][0];
    assert!(vip_answers(vip), "the VIP serves before activation");
    let client = AdminClient::setup_and_login(listening["admin"][0], PASSWORD);
    let answer_before = dig(dns, &["pool01.contoso.test", "A"]).data("A");
    assert!(!answer_before.is_empty());

    let status = client.json("/api/v1/license");
    assert_eq!(status["state"], "evaluation", "{status}");
    assert_eq!(status["days_left"], 30);
    assert_eq!(status["usage"]["members"], 3);
    let appliance_id = status["appliance_id"]
        .as_str()
        .expect("appliance id")
        .to_owned();

    // Rejected licences say why and change nothing.
    for (text, reason) in [
        (
            issue(&key, "another-appliance", None, None),
            "this appliance is",
        ),
        (
            issue(&SigningKey::from_bytes(&[9; 32]), &appliance_id, None, None),
            "signature",
        ),
        ("PGLIC1.garbage".to_owned(), "damaged"),
    ] {
        let response = client.post("/api/v1/license", &json!({"license": text}));
        assert_eq!(response.status().as_u16(), 422);
        let body: Value = response.json().expect("JSON");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .expect("message")
                .contains(reason),
            "{body}"
        );
    }
    assert_eq!(client.json("/api/v1/license")["state"], "evaluation");

    // A licence for two members: the three-member config can no longer be changed.
    let small = issue(&key, &appliance_id, None, Some(2));
    let response = client.post("/api/v1/license", &json!({"license": small}));
    assert_eq!(response.status().as_u16(), 200);
    let status: Value = response.json().expect("JSON");
    assert_eq!(status["state"], "licensed");
    assert_eq!(status["customer"], "Contoso Ltd");
    let mut config = client.json("/api/v1/config");
    config["dns"]["ttl"] = json!(20);
    let refused = client.put("/api/v1/config", &config);
    assert_eq!(refused.status().as_u16(), 403);
    let body: Value = refused.json().expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("2 pool members"),
        "{body}"
    );

    // A short-lived licence without limits, installed from the console.
    let short = issue(
        &key,
        &appliance_id,
        Some(OffsetDateTime::now_utc() + time::Duration::seconds(3)),
        None,
    );
    let file = dir.path().join("short.lic");
    std::fs::write(&file, &short).expect("write licence");
    let output = std::process::Command::new(poolgate_e2e::binary())
        .args([
            "license",
            "install",
            file.to_str().expect("utf-8"),
            "--data-dir",
        ])
        .arg(dir.path().join("var"))
        .env("POOLGATE_TEST_LICENSE_KEYS", &keys_file)
        .output()
        .expect("license install");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(client.put("/api/v1/config", &config).status().as_u16(), 200);

    // Once it expires: config changes are refused, everything else works.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.json("/api/v1/license")["state"] != "expired" {
        assert!(Instant::now() < deadline, "licence never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    config["dns"]["ttl"] = json!(25);
    let refused = client.put("/api/v1/config", &config);
    assert_eq!(refused.status().as_u16(), 403);
    let body: Value = refused.json().expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("Traffic keeps flowing"),
        "{body}"
    );
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe01/drain", &json!({}))
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client.json("/api/v1/status")["pools"][0]["members"][0]["admin_state"],
        "draining"
    );
    assert_eq!(client.json("/api/v1/health")["status"], "ok");
    // DNS keeps answering (fe01 now draining leaves the answer; the rest stay).
    let mut expected = answer_before;
    expected.remove("127.0.0.11");
    assert_eq!(dig(dns, &["pool01.contoso.test", "A"]).data("A"), expected);
    assert!(
        vip_answers(vip),
        "the VIP keeps serving with an expired licence"
    );
}
