//! HA pairing and config sync between two real poolgate processes on
//! loopback (127.0.0.1 and 127.0.0.2, their own data directories and
//! ports): pairing through the API, a config change and a drain reaching
//! the standby under the same version, the standby's 409, sync attempts
//! that are refused (no client certificate, another certificate, a
//! replayed version, a wrong pairing code), unpairing, and a split brain
//! resolved by the documented rule. Foreign sync clients are real
//! `openssl s_client` processes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::Signal;
use poolgate_e2e::{AdminClient, Peer, Poolgate, free_port, loopback_example, wait_for};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const SYNC: Duration = Duration::from_secs(20);

/// The loopback example for one appliance at `ip`: its own listeners,
/// no virtual services (both appliances share one host here).
fn config_for(ip: &str) -> toml::Table {
    let mut config = loopback_example();
    let listen = config["listen"].as_table_mut().expect("[listen]");
    listen.insert("admin".into(), format!("{ip}:0").into());
    listen.insert(
        "dns".into(),
        vec![toml::Value::from(format!("{ip}:0"))].into(),
    );
    listen.remove("sip_udp");
    listen.remove("sip_tcp");
    config.remove("virtual_service");
    config
}

struct Appliance {
    process: Poolgate,
    client: AdminClient,
    sync: SocketAddr,
    data_dir: PathBuf,
}

impl Appliance {
    /// First start with the config file; later starts from the store.
    fn start(dir: &Path, ip: &str, sync: SocketAddr) -> Self {
        let data_dir = dir.join(ip);
        let sync_arg = sync.to_string();
        let process =
            Poolgate::start_with_config(&data_dir, &config_for(ip), &["--ha-listen", &sync_arg]);
        let client = AdminClient::setup_and_login(process.address("admin"), PASSWORD);
        Self {
            process,
            client,
            sync,
            data_dir,
        }
    }

    fn restart(&mut self) {
        let sync_arg = self.sync.to_string();
        self.process = Poolgate::start(&self.data_dir, &["--ha-listen", &sync_arg]);
        let mut client = AdminClient::new(self.process.address("admin"));
        client.login("admin", PASSWORD);
        self.client = client;
    }

    fn ha(&self) -> Value {
        self.client.json("/api/v1/ha")
    }

    fn version(&self) -> i64 {
        self.ha()["config_version"].as_i64().expect("version")
    }

    fn set_ttl(&self, ttl: i64) -> i64 {
        let mut config = self.client.json("/api/v1/config");
        config["dns"]["ttl"] = json!(ttl);
        let response = self.client.put("/api/v1/config", &config);
        assert_eq!(response.status().as_u16(), 200, "PUT config");
        let body: Value = response.json().expect("JSON");
        body["version"].as_i64().expect("version")
    }

    fn ttl(&self) -> i64 {
        self.client.json("/api/v1/config")["dns"]["ttl"]
            .as_i64()
            .expect("ttl")
    }

    fn id(&self) -> String {
        self.ha()["appliance_id"].as_str().expect("id").to_owned()
    }
}

fn sync_address(ip: &str) -> SocketAddr {
    format!("{ip}:{}", free_port()).parse().expect("address")
}

/// Pair `b` with `a` through the API; both end in sync.
fn pair(a: &Appliance, b: &Appliance) {
    let code = a
        .client
        .post("/api/v1/ha/pairing-code", &json!({}))
        .json::<Value>()
        .expect("JSON")["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let response = b.client.post(
        "/api/v1/ha/join",
        &json!({"peer": a.sync.to_string(), "code": code}),
    );
    let status = response.status().as_u16();
    assert_eq!(status, 200, "join: {}", response.text().unwrap_or_default());
    wait_in_sync(a, b);
}

fn wait_in_sync(a: &Appliance, b: &Appliance) {
    wait_for("the standby in sync", SYNC, || {
        let (ha_a, ha_b) = (a.ha(), b.ha());
        ha_b["link"] == "up"
            && ha_b["sync"] == "in_sync"
            && ha_a["config_version"] == ha_b["config_version"]
    });
}

/// `openssl s_client` to a sync listener, optionally with a client
/// certificate; stdin and stdout piped, killed on drop.
fn s_client(address: SocketAddr, identity: Option<(&Path, &Path)>) -> Peer {
    let mut command = Command::new("openssl");
    command.args([
        "s_client",
        "-quiet",
        "-connect",
        &address.to_string(),
        "-alpn",
        "poolgate-ha/1",
    ]);
    if let Some((cert, key)) = identity {
        command.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    Peer(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client"),
    )
}

/// Lines the s_client prints, read on a thread.
fn lines(peer: &mut Peer) -> mpsc::Receiver<String> {
    let stdout = peer.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn refused_in_log(process: &Poolgate, needle: &'static str) {
    process.wait_for_line(Duration::from_secs(10), |line| {
        line.contains(needle).then_some(())
    });
}

#[test]
fn a_pair_syncs_configs_and_drains_refuses_strangers_and_unpairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Appliance::start(dir.path(), "127.0.0.1", sync_address("127.0.0.1"));
    let b = Appliance::start(dir.path(), "127.0.0.2", sync_address("127.0.0.2"));
    assert_eq!(a.ha()["role"], "standalone");

    // A wrong code, with none open and with one open, is refused by field.
    for open in [false, true] {
        if open {
            let response = a.client.post("/api/v1/ha/pairing-code", &json!({}));
            assert_eq!(response.status().as_u16(), 200);
        }
        let response = b.client.post(
            "/api/v1/ha/join",
            &json!({"peer": a.sync.to_string(), "code": "AAAA-BBBB-CCCC-DDDD"}),
        );
        assert_eq!(response.status().as_u16(), 422);
        let body: Value = response.json().expect("JSON");
        assert_eq!(body["fields"][0]["field"], "code", "{body}");
    }
    refused_in_log(&a.process, "HA pairing refused");
    assert_eq!(b.ha()["paired"], false);

    pair(&a, &b);
    let (ha_a, ha_b) = (a.ha(), b.ha());
    assert_eq!(ha_a["role"], "active");
    assert_eq!(ha_b["role"], "standby");
    assert_eq!(ha_a["peer"]["fingerprint"], ha_b["fingerprint"], "A pins B");
    assert_eq!(ha_b["peer"]["fingerprint"], ha_a["fingerprint"], "B pins A");
    assert_eq!(ha_b["peer"]["appliance_id"], ha_a["appliance_id"]);
    assert!(ha_b["peer"]["licence"]["state"].is_string(), "{ha_b}");
    let b_admin = b.client.json("/api/v1/config")["listen"]["admin"].clone();

    // A config change on the active reaches the standby with its version;
    // the standby keeps its own listeners.
    let version = a.set_ttl(77);
    wait_for("the change on the standby", SYNC, || b.version() == version);
    assert_eq!(b.ttl(), 77);
    assert_eq!(b.client.json("/api/v1/config")["listen"]["admin"], b_admin);

    // A drain, with its start time.
    let response = a
        .client
        .post("/api/v1/pools/pool01/members/fe02/drain", &json!({}));
    assert_eq!(response.status().as_u16(), 200);
    wait_for("the drain on the standby", SYNC, || {
        b.client.members()[1]["admin_state"] == "draining"
    });
    let since = |client: &AdminClient| client.members()[1]["drain"]["since"].clone();
    wait_for("the drain's start on both", SYNC, || {
        since(&a.client).is_string() && since(&b.client).is_string()
    });
    assert_eq!(since(&a.client), since(&b.client), "the same drain start");
    assert_eq!(b.version(), a.version());

    // Users and API tokens: a token made on the active works on the
    // standby; revoked there, it stops working on both.
    let token: Value = a
        .client
        .post("/api/v1/tokens", &json!({"name": "script"}))
        .json()
        .expect("JSON");
    let secret = token["token"].as_str().expect("secret").to_owned();
    let mut scripted = AdminClient::new(b.process.address("admin"));
    scripted.bearer = Some(secret);
    wait_for("the token on the standby", SYNC, || {
        scripted.get("/api/v1/status").status().as_u16() == 200
    });
    let response = a.client.delete(&format!("/api/v1/tokens/{}", token["id"]));
    assert_eq!(response.status().as_u16(), 204);
    wait_for("the token revoked on the standby", SYNC, || {
        scripted.get("/api/v1/status").status().as_u16() == 401
    });

    // CA bundles: uploaded and deleted on the active, on the standby too;
    // the standby refuses its own.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&ca_key).expect("CA").pem();
    let put_pem = |client: &AdminClient| {
        client
            .request(reqwest::Method::PUT, "/api/v1/ca-bundles/contoso")
            .header("Content-Type", "application/x-pem-file")
            .body(pem.clone())
            .send()
            .expect("PUT CA bundle")
            .status()
            .as_u16()
    };
    assert!(matches!(put_pem(&a.client), 200 | 201));
    wait_for("the CA bundle on the standby", SYNC, || {
        b.client.get("/api/v1/ca-bundles/contoso").status().as_u16() == 200
    });
    assert_eq!(
        b.client.json("/api/v1/ca-bundles/contoso")["pem"],
        json!(pem)
    );
    assert_eq!(put_pem(&b.client), 409);
    assert_eq!(
        a.client
            .delete("/api/v1/ca-bundles/contoso")
            .status()
            .as_u16(),
        200
    );
    wait_for("the CA bundle gone from the standby", SYNC, || {
        b.client.get("/api/v1/ca-bundles/contoso").status().as_u16() == 404
    });

    // One writer: the standby refuses config PUTs and member actions.
    let config = b.client.json("/api/v1/config");
    let response = b.client.put("/api/v1/config", &config);
    assert_eq!(response.status().as_u16(), 409);
    let message = response.json::<Value>().expect("JSON")["error"].to_string();
    let a_admin = a.client.json("/api/v1/config")["listen"]["admin"]
        .as_str()
        .expect("admin")
        .to_owned();
    assert!(message.contains("standby"), "{message}");
    assert!(message.contains(&a_admin), "names the active: {message}");
    let response = b
        .client
        .post("/api/v1/pools/pool01/members/fe01/disable", &json!({}));
    assert_eq!(response.status().as_u16(), 409);

    // Strangers: no client certificate, then another certificate. Both
    // are counted; refusals are logged (at WARN at most every 10 s).
    let refused = || a.ha()["refused_connections"].as_u64().expect("count");
    let refused_before = refused();
    let mut stranger = s_client(a.sync, None);
    wait_for("no certificate refused", SYNC, || {
        refused() > refused_before
    });
    refused_in_log(&a.process, "HA sync connection refused");
    let _ = stranger.0.kill();
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    let (cert, key) = (other.join("cert.pem"), other.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=intruder", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(made.success());
    let refused_before = refused();
    let mut stranger = s_client(a.sync, Some((&cert, &key)));
    wait_for("the other certificate refused", SYNC, || {
        refused() > refused_before
    });
    let _ = stranger.0.kill();

    // A replayed old version, sent with the active's own sync identity
    // (certificate and key in one file) to the standby, is refused and
    // logged; nothing changes.
    let a_cert = a.data_dir.join("tls/ha-sync.pem");
    let a_key = a_cert.clone();
    let mut replayer = s_client(b.sync, Some((&a_cert, &a_key)));
    let replies = lines(&mut replayer);
    let current = b.version();
    let hello = json!({"protocol": 1, "type": "hello", "appliance_id": a.id(), "role": "active",
        "version": current, "synced": current, "admin_address": a_admin, "joiner": false});
    let replay = json!({"protocol": 1, "type": "config", "version": 1,
        "toml": "[listen]\nadmin = \"127.0.0.1:1\"\n", "origin": "replayed"});
    let stdin = replayer.0.stdin.as_mut().expect("stdin");
    writeln!(stdin, "{hello}\n{replay}").expect("write");
    stdin.flush().expect("flush");
    let refused = (0..20)
        .filter_map(|_| replies.recv_timeout(Duration::from_secs(1)).ok())
        .find(|line| line.contains("\"refused\""))
        .expect("a refusal from the standby");
    assert!(refused.contains("replay"), "{refused}");
    refused_in_log(&b.process, "Replayed config version refused");
    let _ = replayer.0.kill();
    assert_eq!(b.version(), current);
    assert_eq!(b.ttl(), 77);

    // A failover through the link, asked on the active: the roles swap and
    // changes flow the other way.
    let response = a.client.post("/api/v1/ha/failover", &json!({}));
    assert_eq!(response.status().as_u16(), 200);
    wait_for("the roles swapped", SYNC, || {
        a.ha()["role"] == "standby" && b.ha()["role"] == "active"
    });
    wait_in_sync(&b, &a);
    let version = b.set_ttl(88);
    wait_for("B's change on A", SYNC, || a.version() == version);
    assert_eq!(a.ttl(), 88);
    let events = a.client.json("/api/v1/events?kind=ha");
    assert!(
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("now standby: failover requested"))),
        "a role change with its reason: {events}"
    );
    // And back, asked on the standby.
    let response = a.client.post("/api/v1/ha/failover", &json!({}));
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.text().unwrap_or_default()
    );
    assert_eq!(a.ha()["role"], "active");
    wait_for("B standby again", SYNC, || b.ha()["role"] == "standby");
    wait_in_sync(&a, &b);

    // Unpair from the standby: the active hears of it; both write again.
    let response = b.client.delete("/api/v1/ha");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().expect("JSON")["peer_told"], true);
    wait_for("the active unpaired", SYNC, || a.ha()["paired"] == false);
    assert_eq!(b.ha()["role"], "standalone");
    b.set_ttl(78);
}

#[test]
fn after_a_split_the_higher_version_wins_and_the_losers_changes_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Appliance::start(dir.path(), "127.0.0.1", sync_address("127.0.0.1"));
    let mut b = Appliance::start(dir.path(), "127.0.0.2", sync_address("127.0.0.2"));
    pair(&a, &b);

    // The link is cut (the active dies); the standby is made active by hand.
    a.process.signal(Signal::SIGKILL);
    let _ = a.process.wait_timeout(Duration::from_secs(10));
    wait_for("the link down", SYNC, || b.ha()["link"] == "down");
    let response = b
        .client
        .post("/api/v1/ha/failover", &json!({"force": true}));
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(b.ha()["role"], "active");
    let lost = b.set_ttl(11);
    let response = b
        .client
        .post("/api/v1/pools/pool01/members/fe01/drain", &json!({}));
    assert_eq!(
        response.status().as_u16(),
        200,
        "a member action during the split"
    );
    b.process.terminate(Duration::from_secs(20));

    // The old active comes back alone and commits twice.
    a.restart();
    assert_eq!(a.ha()["role"], "active");
    a.set_ttl(21);
    let winner = a.set_ttl(22);
    assert!(winner > lost);

    // The link returns: both active; the higher version wins.
    b.restart();
    wait_in_sync(&a, &b);
    let (ha_a, ha_b) = (a.ha(), b.ha());
    assert_eq!(ha_a["role"], "active");
    assert_eq!(ha_b["role"], "standby");
    assert_eq!(ha_b["config_version"], json!(winner));
    assert_eq!(b.ttl(), 22);
    let not_applied = ha_b["not_applied"].as_array().expect("list");
    let (members, configs): (Vec<&Value>, Vec<&Value>) = not_applied
        .iter()
        .partition(|entry| entry["member"].is_string());
    assert_eq!(configs.len(), 1, "{ha_b}");
    assert_eq!(configs[0]["version"], json!(lost));
    assert!(
        configs[0]["source"]
            .as_str()
            .is_some_and(|s| s.contains("admin")),
        "{ha_b}"
    );
    // The member action made on the losing side is listed too, and the
    // member is as the winner has it.
    assert_eq!(members.len(), 1, "{ha_b}");
    assert_eq!(members[0]["member"], "pool01/fe01");
    assert_eq!(members[0]["admin_state"], "draining");
    wait_for("the winner's admin state on the loser", SYNC, || {
        b.client.members()[0]["admin_state"] == "enabled"
    });
    let events = b.client.json("/api/v1/events?kind=ha");
    let messages: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&format!("Config version {lost}")) && m.contains("not applied")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("Member action on pool01/fe01") && m.contains("not applied")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("now standby")),
        "a role change with its reason: {messages:?}"
    );
    // From now on the winner's changes flow again.
    let next = a.set_ttl(23);
    wait_for("the next change on the standby", SYNC, || {
        b.version() == next
    });
}

/// A new self-signed admin certificate and key (PEM) for `name`.
fn admin_certificate(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(90);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

#[test]
fn replacing_an_appliance_certificate_keeps_the_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Appliance::start(dir.path(), "127.0.0.1", sync_address("127.0.0.1"));
    let b = Appliance::start(dir.path(), "127.0.0.2", sync_address("127.0.0.2"));
    pair(&a, &b);
    let (pinned_a, pinned_b) = (a.ha()["fingerprint"].clone(), b.ha()["fingerprint"].clone());
    assert_eq!(b.ha()["peer"]["fingerprint"], pinned_a);

    // The sync link has its own certificate, not the admin one.
    let admin_fingerprint = |client: &AdminClient| {
        client.json("/api/v1/certificate")["sha256_fingerprint"]
            .as_str()
            .expect("fingerprint")
            .replace(':', "")
            .to_ascii_lowercase()
    };
    assert_ne!(
        Some(admin_fingerprint(&a.client).as_str()),
        pinned_a.as_str()
    );

    // The admin certificate installed on the active is installed on the
    // standby too (the standby refuses its own install: one writer); the
    // link stays up and changes flow.
    let (cert, key) = admin_certificate("pool.contoso.test");
    let body = json!({"certificate": cert, "key": key});
    let refused = b.client.put("/api/v1/certificate", &body);
    assert_eq!(
        refused.status().as_u16(),
        409,
        "the standby installs nothing"
    );
    let before = admin_fingerprint(&a.client);
    let response = a.client.put("/api/v1/certificate", &body);
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.text().unwrap_or_default()
    );
    let installed = admin_fingerprint(&a.client);
    assert_ne!(installed, before, "replaced");
    wait_for("the certificate on the standby", SYNC, || {
        admin_fingerprint(&b.client) == installed
    });
    assert_eq!(a.ha()["fingerprint"], pinned_a, "the pin did not move");
    assert_eq!(b.ha()["fingerprint"], pinned_b);
    let version = a.set_ttl(61);
    wait_for("the change on the standby", SYNC, || b.version() == version);

    // A new link (the active restarted) with the new admin certificates in
    // place: the pins still hold.
    a.process.terminate(Duration::from_secs(20));
    a.restart();
    wait_in_sync(&a, &b);
    assert_eq!(a.ha()["fingerprint"], pinned_a);
    assert_eq!(
        admin_fingerprint(&a.client),
        installed,
        "kept across the restart"
    );
    assert_eq!(admin_fingerprint(&b.client), installed);
    let version = a.set_ttl(62);
    wait_for("the next change on the standby", SYNC, || {
        b.version() == version
    });
    assert_eq!(a.ha()["refused_connections"], 0, "{}", a.ha());
}
