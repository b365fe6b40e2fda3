//! Remote syslog end to end: a real rsyslog, started here with a config
//! this test writes, receives poolgate's events over TLS (imtcp with the
//! gtls driver and a server certificate from a test CA made here) and over
//! UDP (imudp). rsyslog's own RFC 5424 parser splits each message into its
//! fields, so the test checks what a collector makes of poolgate's lines:
//! version 1, app-name `poolgate`, msgid = the event kind, structured data
//! naming the pool and member.
//!
//! A member of a pool goes down (its listener closes): the down event
//! arrives on both collectors; a drain (an admin action, a notice) arrives
//! over TLS only, since the UDP collector asks for warnings and worse.
//! Settings errors name their field and store nothing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use poolgate_e2e::{AdminClient, Peer, Poolgate, free_port, wait_for};
use serde_json::{Value, json};

const MEMBER_IP: &str = "127.0.0.61";

/// A member that accepts and closes TCP connections until dropped.
struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    fn start(address: SocketAddr) -> Self {
        let listener = TcpListener::bind(address).expect("bind the member");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => drop(stream),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A test CA's PEM and a server certificate and key for 127.0.0.1.
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Syslog Test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "collector");
    let cert = leaf.signed_by(&key, &issuer).expect("server cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// rsyslog receiving on a TLS port and a UDP port, writing each message's
/// parsed RFC 5424 fields to `tls.log` and `udp.log`.
struct Collector {
    _peer: Peer,
    dir: PathBuf,
    tls_port: u16,
    udp_port: u16,
}

impl Collector {
    fn start(dir: &Path, ca: &str, cert: &str, key: &str) -> Self {
        std::fs::create_dir_all(dir).expect("collector dir");
        for (name, pem) in [("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)] {
            std::fs::write(dir.join(name), pem).expect("write PEM");
        }
        let (tls_port, udp_port) = (free_port(), free_port());
        let d = dir.display();
        let conf = format!(
            r#"global(workDirectory="{d}"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/cert.pem"
       DefaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
module(load="imudp")
template(name="fields" type="string"
         string="%protocol-version%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="fields") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="fields") }}
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="tls")
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="udp")
"#
        );
        let path = dir.join("rsyslog.conf");
        std::fs::write(&path, conf).expect("write rsyslog.conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&path)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its complaints (such as the plain connect below that checks
            // the port) go to a file the failure messages name.
            .stderr(std::fs::File::create(dir.join("rsyslogd.err")).expect("stderr file"))
            .spawn()
            .expect("start rsyslogd (Debian package rsyslog and rsyslog-gnutls)");
        let peer = Peer(child);
        wait_for("rsyslog's TLS port", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
        });
        Self {
            _peer: peer,
            dir: dir.to_owned(),
            tls_port,
            udp_port,
        }
    }

    /// The messages received on `input` (`tls` or `udp`), split into
    /// version, hostname, app-name, procid, msgid, structured data, text.
    fn messages(&self, input: &str) -> Vec<Vec<String>> {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{input}.log"))).unwrap_or_default();
        text.lines()
            .map(|line| {
                line.splitn(7, '|')
                    .map(|field| field.trim_start_matches('\u{feff}').to_owned())
                    .collect()
            })
            .collect()
    }

    fn wait_message(&self, input: &str, what: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut found = None;
        wait_for(
            &format!(
                "a message over {input} (rsyslog's files are in {})",
                self.dir.display()
            ),
            Duration::from_secs(15),
            || {
                found = self.messages(input).into_iter().find(|m| what(m));
                found.is_some()
            },
        );
        found.expect("found")
    }
}

fn config(monitor_port: u16) -> toml::Table {
    format!(
        r#"[listen]
admin = "127.0.0.1:0"

[dns]
fail_open = false

[[zone]]
name = "test"

[[monitor]]
name = "fe-sip"
type = "tcp"
port = {monitor_port}
interval_ms = 200
timeout_ms = 100
rise = 1
fall = 2

[[pool]]
name = "pool01"
fqdn = "pool01.test"
monitor = "fe-sip"

[[pool.member]]
name = "fe01"
address = "{MEMBER_IP}"

[[pool.member]]
name = "fe02"
address = "127.0.0.62"
"#
    )
    .parse()
    .expect("test config is TOML")
}

fn health_of(admin: &AdminClient, member: &str) -> String {
    admin
        .members()
        .into_iter()
        .find(|m| m["name"] == member)
        .and_then(|m| m["health"]["fe-sip"]["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn a_member_down_reaches_rsyslog_over_tls_and_udp_as_rfc_5424() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates();
    let collector = Collector::start(&dir.path().join("collector"), &ca, &cert, &key);

    let monitor_port = {
        let probe = TcpListener::bind((MEMBER_IP, 0)).expect("free port on the member");
        probe.local_addr().expect("addr").port()
    };
    let member = Member::start(format!("{MEMBER_IP}:{monitor_port}").parse().expect("addr"));
    let mut poolgate =
        Poolgate::start_with_config(&dir.path().join("data"), &config(monitor_port), &[]);
    let admin_address = poolgate.address("admin");
    let admin = AdminClient::setup_and_login(admin_address, "correct horse battery");

    // Off until set.
    let view = admin.json("/api/v1/system/syslog");
    assert_eq!(view["settings"], Value::Null);

    let tls_server = json!({"host": "127.0.0.1", "port": collector.tls_port,
        "transport": "tcp+tls", "ca_bundle": "syslog-ca"});
    let udp_server = json!({"host": "127.0.0.1", "port": collector.udp_port,
        "transport": "udp", "min_severity": "warning"});
    let settings = json!({"servers": [tls_server, udp_server]});

    // The bundle is not uploaded yet: the field is named, nothing stored.
    let response = admin.put("/api/v1/system/syslog", &settings);
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().expect("JSON");
    assert_eq!(body["fields"][0]["field"], "servers[0].ca_bundle", "{body}");
    let bad = json!({"servers": [{"host": "udp://x", "transport": "udp"},
                                 {"host": "127.0.0.1", "transport": "tcp", "port": 0}]});
    let body: Value = admin
        .put("/api/v1/system/syslog", &bad)
        .json()
        .expect("JSON");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["servers[0].host", "servers[1].port"], "{body}");
    assert_eq!(admin.json("/api/v1/system/syslog")["settings"], Value::Null);

    let response = admin
        .request(reqwest::Method::PUT, "/api/v1/ca-bundles/syslog-ca")
        .body(ca.clone())
        .send()
        .expect("PUT CA bundle");
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());
    let response = admin.put("/api/v1/system/syslog", &settings);
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());

    wait_for("fe01 up", Duration::from_secs(10), || {
        health_of(&admin, "fe01") == "up"
    });
    wait_for(
        "the TLS collector connected",
        Duration::from_secs(15),
        || admin.json("/api/v1/system/syslog")["servers"][0]["connected"] == true,
    );

    // An admin action: a notice, over TLS only.
    let response = admin.post("/api/v1/pools/pool01/members/fe02/drain", &json!({}));
    assert!(response.status().is_success(), "{:?}", response.text());
    let drained = collector.wait_message("tls", |m| m.get(4).is_some_and(|id| id == "admin"));
    assert_eq!(drained[0], "1", "RFC 5424 version: {drained:?}");
    assert_eq!(drained[2], "poolgate");
    assert!(
        drained[5].contains(r#"pool="pool01""#) && drained[5].contains(r#"member="fe02""#),
        "{drained:?}"
    );

    // The member goes down.
    drop(member);
    let is_down = |m: &[String]| {
        m.get(4).is_some_and(|id| id == "health")
            && m.get(5)
                .is_some_and(|sd| sd.contains(r#"member="fe01""#) && sd.contains(r#"state="down""#))
    };
    for input in ["tls", "udp"] {
        let down = collector.wait_message(input, is_down);
        assert_eq!(down[0], "1", "{input}: {down:?}");
        assert_eq!(down[2], "poolgate", "{input}: {down:?}");
        assert_eq!(down[3], poolgate.pid().to_string(), "{input}: procid");
        assert!(
            down[5].starts_with("[poolgate@32473 event_id=\"")
                && down[5].contains(r#"pool="pool01""#)
                && down[5].contains(r#"monitor="fe-sip""#),
            "{input}: {down:?}"
        );
        assert!(
            down[6].starts_with("fe-sip: up -> down"),
            "{input}: {down:?}"
        );
    }
    // The UDP collector asked for warnings: the drain (sent before the
    // down event on the same socket) never came.
    assert!(
        collector
            .messages("udp")
            .iter()
            .all(|m| m.get(4).is_none_or(|id| id != "admin")),
        "{:?}",
        collector.messages("udp")
    );

    let view = admin.json("/api/v1/system/syslog");
    assert_eq!(
        view["servers"][0]["server"],
        format!("127.0.0.1:{}/tcp+tls", collector.tls_port)
    );
    assert!(view["servers"][0]["sent"].as_u64() >= Some(2), "{view}");
    assert_eq!(view["servers"][1]["dropped"], 0, "{view}");
    let metrics = admin.get("/metrics").text().expect("metrics");
    assert!(
        metrics.contains(&format!(
            "poolgate_syslog_sent_total{{server=\"127.0.0.1:{}/udp\"}}",
            collector.udp_port
        )),
        "{metrics}"
    );

    let response = admin.delete("/api/v1/system/syslog");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(admin.json("/api/v1/system/syslog")["settings"], Value::Null);
    poolgate.terminate(Duration::from_secs(10));
}
