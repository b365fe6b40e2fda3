//! Full backup and restore between two real appliances with separate data
//! directories, and the support bundle.
//!
//! Appliance A (config from a file, a drained and a disabled member, an API
//! token, a CA bundle) is backed up; a fresh appliance B (another appliance
//! id, its own admin password) previews the archive, refuses a flipped byte
//! and a wrong passphrase with nothing changed, then restores it: B has A's
//! config version, admin states, users (A's password logs in, B's old one
//! does not, B's session ended), CA bundle and certificate. A's support
//! bundle holds none of A's secrets.

use std::path::Path;

use base64::Engine;
use poolgate::license::document::{self, Licence, Limits};
use poolgate_e2e::{AdminClient, Poolgate, loopback_example};
use serde_json::{Value, json};

const PASSWORD_A: &str = "correct horse battery staple";
const PASSWORD_B: &str = "another appliance's password";
const PASSPHRASE: &str = "a passphrase for the backup";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn admin_states(client: &AdminClient) -> Vec<(String, String)> {
    let status = client.json("/api/v1/status");
    let mut states = Vec::new();
    for pool in status["pools"].as_array().into_iter().flatten() {
        for m in pool["members"].as_array().into_iter().flatten() {
            states.push((
                m["name"].as_str().expect("name").to_owned(),
                m["admin_state"].as_str().expect("state").to_owned(),
            ));
        }
    }
    states
}

fn status_of(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// What B holds, to show a refused restore changed nothing.
fn state_of(client: &AdminClient) -> (Value, Vec<(String, String)>, Value, Value) {
    (
        client.json("/api/v1/system")["config_version"].clone(),
        admin_states(client),
        client.json("/api/v1/certificate")["sha256_fingerprint"].clone(),
        client.json("/api/v1/ca-bundles"),
    )
}

/// A vendor key the test binary trusts (`test-license-keys`), and a
/// licence for `appliance_id` signed with it.
fn vendor_key(dir: &Path) -> (ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let file = dir.join("keys.txt");
    std::fs::write(&file, document::key_hex(&key.verifying_key())).expect("write keys");
    (key, file.to_str().expect("utf-8").to_owned())
}

fn licence(key: &ed25519_dalek::SigningKey, appliance_id: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    document::sign(
        &Licence {
            id: "L-1001".into(),
            customer: "Contoso Ltd".into(),
            issued: now - time::Duration::minutes(1),
            not_before: None,
            expires: None,
            appliance_id: appliance_id.into(),
            limits: Limits::default(),
        },
        key,
    )
}

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Contoso Test Root CA");
    params.self_signed(&key).expect("CA cert").pem()
}

fn db_values(data_dir: &Path, sql: &str) -> Vec<String> {
    let db = rusqlite::Connection::open(data_dir.join("poolgate.db")).expect("open A's database");
    let mut stmt = db.prepare(sql).expect("prepare");
    stmt.query_map([], |row| row.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn a_backup_of_a_restored_onto_a_fresh_b_gives_b_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let (vendor, keys) = vendor_key(dir.path());
    let env = [("POOLGATE_TEST_LICENSE_KEYS", keys.as_str())];
    let a = Poolgate::start_with_config_env(&dir_a, &loopback_example(), &[], &env);
    let client_a = AdminClient::setup_and_login(a.address("admin"), PASSWORD_A);
    // A's state: a licence, two admin states set, an API token, a CA bundle.
    let id_a = client_a.json("/api/v1/system")["appliance_id"]
        .as_str()
        .expect("appliance id")
        .to_owned();
    let licence_a = licence(&vendor, &id_a);
    let (code, status) =
        status_of(client_a.post("/api/v1/license", &json!({"license": licence_a})));
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["state"], "licensed", "{status}");
    let members = admin_states(&client_a);
    assert!(members.len() >= 2, "{members:?}");
    for (member, action) in [(&members[0].0, "drain"), (&members[1].0, "disable")] {
        let response = client_a.post(
            &format!("/api/v1/pools/pool01/members/{member}/{action}"),
            &json!({}),
        );
        assert_eq!(response.status().as_u16(), 200, "{action} {member}");
    }
    let (code, token) = status_of(client_a.post("/api/v1/tokens", &json!({"name": "scripts"})));
    assert!(code == 200 || code == 201, "token: {code} {token}");
    let token_secret = token["token"].as_str().expect("token secret").to_owned();
    let uploaded = client_a
        .request(reqwest::Method::PUT, "/api/v1/ca-bundles/contoso")
        .body(ca_pem())
        .send()
        .expect("PUT CA bundle");
    assert_eq!(uploaded.status().as_u16(), 200);
    let state_a = state_of(&client_a);
    assert!(state_a.0.as_i64().expect("version") >= 1);

    // A short passphrase makes no backup.
    let (code, body) =
        status_of(client_a.post("/api/v1/system/backup", &json!({"passphrase": "short"})));
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "passphrase", "{body}");
    let response = client_a.post(
        "/api/v1/system/backup",
        &json!({"passphrase": PASSPHRASE, "network": true}),
    );
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(".pgbackup")),
        "{:?}",
        response.headers()
    );
    let archive = response.bytes().expect("archive").to_vec();
    assert_eq!(&archive[..8], b"PGBACKUP");
    let key_pem = std::fs::read_to_string(dir_a.join("tls/admin-key.pem")).expect("A's key");
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !String::from_utf8_lossy(&archive).contains(&key_body[..40]),
        "the key is not readable in the archive"
    );

    // A's support bundle: what support needs, no secret.
    let response = client_a.get("/api/v1/system/support-bundle");
    assert_eq!(response.status().as_u16(), 200);
    let bundle = response.bytes().expect("bundle").to_vec();
    let unpacked = dir.path().join("support");
    std::fs::create_dir_all(&unpacked).expect("mkdir");
    std::fs::write(dir.path().join("support.tar.gz"), &bundle).expect("write bundle");
    let untar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(dir.path().join("support.tar.gz"))
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("tar");
    assert!(untar.success());
    let root = unpacked.join("poolgate-support");
    let mut text = String::new();
    for name in [
        "manifest.json",
        "system.json",
        "status.json",
        "config.toml",
        "events.json",
        "licence.json",
        "network.json",
    ] {
        let file = std::fs::read_to_string(root.join(name))
            .unwrap_or_else(|e| panic!("{name} in the bundle: {e}"));
        text.push_str(&file);
    }
    assert!(text.contains("pool01"), "the config and status are there");
    assert!(text.contains("committed from"), "events are there");
    let mut secrets = vec![
        PASSWORD_A.to_owned(),
        token_secret.clone(),
        key_body,
        licence_a,
    ];
    secrets.extend(db_values(&dir_a, "SELECT password_hash FROM admin_users"));
    secrets.extend(db_values(&dir_a, "SELECT token_hash FROM api_tokens"));
    secrets.extend(db_values(&dir_a, "SELECT id_hash FROM sessions"));
    assert!(secrets.len() >= 5);
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret is in the bundle");
    }
    assert!(!text.contains("PRIVATE KEY"));

    // A fails: B replaces it (and takes over its virtual service ports).
    let mut a = a;
    a.terminate(std::time::Duration::from_secs(20));

    // B: a fresh appliance of its own.
    let b = Poolgate::start_with_env(&dir_b, &["--admin-listen", "127.0.0.1:0"], &env);
    let mut client_b = AdminClient::setup_and_login(b.address("admin"), PASSWORD_B);
    let before = state_of(&client_b);
    assert_ne!(before.2, state_a.2, "B made a certificate of its own");

    // Refused, with the reason, and nothing changed.
    let mut flipped = archive.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (what, body) in [
        (
            "flipped byte",
            json!({"passphrase": PASSPHRASE, "archive": b64(&flipped)}),
        ),
        (
            "wrong passphrase",
            json!({"passphrase": "not the passphrase", "archive": b64(&archive)}),
        ),
        (
            "not a backup",
            json!({"passphrase": PASSPHRASE, "archive": b64(b"PK\x03\x04 a zip file")}),
        ),
    ] {
        for path in ["/api/v1/system/restore/preview", "/api/v1/system/restore"] {
            let (code, answer) = status_of(client_b.post(path, &body));
            assert_eq!(code, 422, "{what} at {path}: {answer}");
            assert_eq!(answer["fields"][0]["field"], "archive", "{answer}");
            let message = answer["fields"][0]["message"].as_str().unwrap_or("");
            let expected = if what == "not a backup" {
                "not a poolgate backup"
            } else {
                "wrong passphrase, or the archive was changed"
            };
            assert!(message.contains(expected), "{what}: {answer}");
        }
    }
    assert_eq!(
        state_of(&client_b),
        before,
        "a refused restore changed nothing"
    );
    AdminClient::new(b.address("admin")).login("admin", PASSWORD_B);

    // The preview says what would change.
    let body = json!({"passphrase": PASSPHRASE, "archive": b64(&archive)});
    let (code, preview) = status_of(client_b.post("/api/v1/system/restore/preview", &body));
    assert_eq!(code, 200, "{preview}");
    assert_eq!(preview["config_version_now"], before.0, "{preview}");
    assert_eq!(preview["config_version_restored"], state_a.0, "{preview}");
    assert_eq!(preview["other_appliance"], true, "{preview}");
    assert_eq!(preview["users_changed"], json!(["admin"]), "{preview}");
    assert_eq!(preview["certificate_now"], before.2, "{preview}");
    assert_eq!(preview["certificate_restored"], state_a.2, "{preview}");
    assert_eq!(
        preview["ca_bundles_restored"],
        json!(["contoso"]),
        "{preview}"
    );
    assert_eq!(preview["sessions_end"], true, "{preview}");
    // A's licence is bound to A: reported with what to do, not installed.
    let verdict = &preview["licences"][0];
    assert_eq!(verdict["license_id"], "L-1001", "{preview}");
    assert_eq!(verdict["restored"], false, "{preview}");
    assert_eq!(verdict["bound_to"], id_a.as_str(), "{preview}");
    assert!(
        verdict["message"]
            .as_str()
            .is_some_and(|m| m.contains("re-issue")),
        "{preview}"
    );
    assert_eq!(state_of(&client_b), before, "a preview changes nothing");

    // The restore.
    let (code, restored) = status_of(client_b.post("/api/v1/system/restore", &body));
    assert_eq!(code, 200, "{restored}");
    assert_eq!(restored["version"], state_a.0, "{restored}");
    assert_eq!(restored["certificate_installed"], true, "{restored}");
    // B's session ended; B's old password no longer logs in, A's does.
    assert_eq!(client_b.get("/api/v1/session").status().as_u16(), 401);
    let refused = AdminClient::new(b.address("admin")).post(
        "/api/v1/session",
        &json!({"username": "admin", "password": PASSWORD_B}),
    );
    assert_eq!(refused.status().as_u16(), 401);
    client_b.login("admin", PASSWORD_A);
    assert_eq!(state_of(&client_b), state_a, "B has A's state");
    // B keeps its own evaluation; A's licence is kept for the re-issue.
    let licence_b = client_b.json("/api/v1/license");
    assert_eq!(licence_b["state"], "evaluation", "{licence_b}");
    assert_eq!(
        licence_b["other_appliance_licences"][0]["bound_to"],
        id_a.as_str(),
        "{licence_b}"
    );
    // A's API token works on B.
    let mut scripted = AdminClient::new(b.address("admin"));
    scripted.bearer = Some(token_secret.clone());
    assert_eq!(scripted.get("/api/v1/status").status().as_u16(), 200);
    // B presents A's certificate on its TLS handshakes from now on.
    let events = client_b.json("/api/v1/events?kind=system");
    assert!(
        events.to_string().contains("Restored from a backup"),
        "{events}"
    );
    // And after a restart, B reads back what it restored.
    drop(scripted);
    let mut b = b;
    b.terminate(std::time::Duration::from_secs(20));
    let b = Poolgate::start(&dir_b, &["--admin-listen", "127.0.0.1:0"]);
    let mut client_b = AdminClient::new(b.address("admin"));
    client_b.login("admin", PASSWORD_A);
    assert_eq!(
        state_of(&client_b),
        state_a,
        "B keeps A's state over a restart"
    );
}

/// The console: a backup of a stopped appliance, restored into another's
/// data directory (preview first, a wrong passphrase refused), and the
/// restored appliance starts with it.
#[test]
fn the_console_backs_up_a_stopped_appliance_and_restores_it_into_another() {
    use poolgate_e2e::poolgate_cli;
    let dir = tempfile::tempdir().expect("tempdir");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let a = Poolgate::start_with_config(&dir_a, &loopback_example(), &[]);
    let client_a = AdminClient::setup_and_login(a.address("admin"), PASSWORD_A);
    let member = admin_states(&client_a)[0].0.clone();
    let drained = client_a.post(
        &format!("/api/v1/pools/pool01/members/{member}/drain"),
        &json!({}),
    );
    assert_eq!(drained.status().as_u16(), 200);
    let state_a = state_of(&client_a);
    drop(client_a);
    let mut a = a;
    a.terminate(std::time::Duration::from_secs(20));

    let archive = dir.path().join("a.pgbackup");
    let out = poolgate_cli(
        &[
            "admin",
            "backup",
            "--data-dir",
            &path(&dir_a),
            &path(&archive),
        ],
        &format!("{PASSPHRASE}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Never overwritten.
    let again = poolgate_cli(
        &[
            "admin",
            "backup",
            "--data-dir",
            &path(&dir_a),
            &path(&archive),
        ],
        &format!("{PASSPHRASE}\n"),
    );
    assert!(!again.status.success());

    // B ran once (it has an appliance id and a password of its own).
    let b = Poolgate::start(&dir_b, &["--admin-listen", "127.0.0.1:0"]);
    drop(AdminClient::setup_and_login(b.address("admin"), PASSWORD_B));
    let mut b = b;
    b.terminate(std::time::Duration::from_secs(20));
    let restore = |extra: &[&str], passphrase: &str| {
        let mut args = vec!["admin", "restore", "--data-dir"];
        let (data, file) = (path(&dir_b), path(&archive));
        args.push(&data);
        args.extend_from_slice(extra);
        args.push(&file);
        poolgate_cli(&args, &format!("{passphrase}\n"))
    };
    let wrong = restore(&[], "not the passphrase");
    assert_eq!(wrong.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let preview = restore(&["--preview"], PASSPHRASE);
    assert!(
        preview.status.success(),
        "{}",
        String::from_utf8_lossy(&preview.stderr)
    );
    let shown: Value = serde_json::from_slice(&preview.stdout).expect("preview JSON");
    assert_eq!(shown["config_version_now"], 0, "{shown}");
    assert_eq!(shown["config_version_restored"], state_a.0, "{shown}");
    let restored = restore(&[], PASSPHRASE);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );

    let b = Poolgate::start(&dir_b, &["--admin-listen", "127.0.0.1:0"]);
    let mut client_b = AdminClient::new(b.address("admin"));
    let refused = client_b.post(
        "/api/v1/session",
        &json!({"username": "admin", "password": PASSWORD_B}),
    );
    assert_eq!(refused.status().as_u16(), 401);
    client_b.login("admin", PASSWORD_A);
    assert_eq!(state_of(&client_b), state_a, "B starts with A's state");
}

/// The System page's Backup & restore panel in headless Chromium
/// (`tests/browser/backup.mjs`).
#[test]
fn the_system_page_backs_up_previews_and_restores() {
    let browser = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut poolgate =
        Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    drop(AdminClient::setup_and_login(
        poolgate.address("admin"),
        PASSWORD_A,
    ));
    let artifacts = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/browser-artifacts/backup");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = std::process::Command::new("node")
        .arg(browser.join("backup.mjs"))
        .arg(format!("https://{}/", poolgate.address("admin")))
        .arg(&artifacts)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        poolgate
            .terminate(std::time::Duration::from_secs(10))
            .success()
    );
}

/// An appliance in an HA pair refuses a restore (its peer would be left
/// out of step) and says how to do it instead.
#[test]
fn an_appliance_in_an_ha_pair_refuses_a_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_example();
    config.remove("virtual_service");
    let sync_a = format!("127.0.0.1:{}", poolgate_e2e::free_port());
    let sync_b = format!("127.0.0.2:{}", poolgate_e2e::free_port());
    let a = Poolgate::start_with_config(&dir.path().join("a"), &config, &["--ha-listen", &sync_a]);
    let client_a = AdminClient::setup_and_login(a.address("admin"), PASSWORD_A);
    let b = Poolgate::start(
        &dir.path().join("b"),
        &["--admin-listen", "127.0.0.2:0", "--ha-listen", &sync_b],
    );
    let client_b = AdminClient::setup_and_login(b.address("admin"), PASSWORD_A);
    let archive = client_a
        .post("/api/v1/system/backup", &json!({"passphrase": PASSPHRASE}))
        .bytes()
        .expect("archive")
        .to_vec();
    let code: Value = client_a
        .post("/api/v1/ha/pairing-code", &json!({}))
        .json()
        .expect("JSON");
    let joined = client_b.post(
        "/api/v1/ha/join",
        &json!({"peer": sync_a, "code": code["code"]}),
    );
    assert_eq!(
        joined.status().as_u16(),
        200,
        "{}",
        joined.text().unwrap_or_default()
    );
    let body = json!({"passphrase": PASSPHRASE, "archive": b64(&archive)});
    for client in [&client_a, &client_b] {
        let (code, answer) = status_of(client.post("/api/v1/system/restore", &body));
        assert_eq!(code, 409, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("unpair")),
            "{answer}"
        );
    }
}
