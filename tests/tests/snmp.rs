//! SNMP end to end: net-snmp's snmpd, started here with a config this test
//! writes (master AgentX on a unix socket in a temp dir, one v3 user with
//! authPriv SHA/AES, a v2c trap sink), and poolgate connected to it as
//! AgentX subagent (`--agentx-socket`). `snmpwalk -v3 -l authPriv` shows
//! each member's admin state and health; draining a member and stopping
//! another's listener make snmptrapd (also started here) log the MIB's
//! notifications; a wrong v3 password gets nothing. And POOLGATE-MIB
//! passes `smilint -l 6`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use poolgate_e2e::{AdminClient, Peer, Poolgate, free_port, wait_for};
use serde_json::json;

const ROOT: &str = ".1.3.6.1.4.1.32473";
const MEMBER_IP: &str = "127.0.0.71";
const USER: &str = "pgmonitor";
const AUTH: &str = "auth-secret-123";
const PRIV: &str = "priv-secret-456";

fn mib_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mib/POOLGATE-MIB.txt")
}

/// Debian ships no IETF MIB modules (they are non-free), and libsmi knows
/// the SMIv2 base modules' macros and types by name: these empty stand-ins
/// only let smilint locate the modules POOLGATE-MIB imports from.
fn smi_stand_ins(dir: &Path) {
    let modules = [
        (
            "SNMPv2-SMI",
            "enterprises OBJECT IDENTIFIER ::= { 1 3 6 1 4 1 }\n\
             MODULE-IDENTITY MACRO ::= BEGIN END\n\
             OBJECT-TYPE MACRO ::= BEGIN END\n\
             NOTIFICATION-TYPE MACRO ::= BEGIN END\n\
             Gauge32 ::= [APPLICATION 2] IMPLICIT INTEGER (0..4294967295)\n\
             Counter64 ::= [APPLICATION 6] IMPLICIT INTEGER (0..18446744073709551615)\n",
        ),
        (
            "SNMPv2-TC",
            "TEXTUAL-CONVENTION MACRO ::= BEGIN END\n\
             DisplayString ::= OCTET STRING (SIZE (0..255))\n",
        ),
        (
            "SNMPv2-CONF",
            "MODULE-COMPLIANCE MACRO ::= BEGIN END\n\
             OBJECT-GROUP MACRO ::= BEGIN END\n\
             NOTIFICATION-GROUP MACRO ::= BEGIN END\n",
        ),
    ];
    for (name, body) in modules {
        std::fs::write(
            dir.join(name),
            format!("{name} DEFINITIONS ::= BEGIN\n{body}END\n"),
        )
        .expect("write a stand-in module");
    }
}

#[test]
fn the_mib_passes_smilint() {
    let dir = tempfile::tempdir().expect("tempdir");
    smi_stand_ins(dir.path());
    let output = Command::new("smilint")
        .args(["-l", "6"])
        .arg(mib_path())
        .env("SMIPATH", dir.path())
        .output()
        .expect("run smilint (Debian package smitools)");
    // smilint exits 0 whatever it finds: what it prints is the verdict.
    let report = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && report.trim().is_empty(),
        "{report}"
    );

    // The check itself works: a broken reference is reported.
    let text = std::fs::read_to_string(mib_path()).expect("read the MIB");
    let broken = dir.path().join("BROKEN.txt");
    std::fs::write(
        &broken,
        text.replace("pgServiceBytesOut\n    }", "pgServiceBytesOutX\n    }"),
    )
    .expect("write");
    let output = Command::new("smilint")
        .args(["-l", "6"])
        .arg(&broken)
        .env("SMIPATH", dir.path())
        .output()
        .expect("run smilint");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(report.contains("pgServiceBytesOutX"), "{report}");
}

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

/// snmpd (master agent) and snmptrapd, with their files in `dir`.
struct Agents {
    _snmpd: Peer,
    _trapd: Peer,
    dir: PathBuf,
    port: u16,
    socket: PathBuf,
}

impl Agents {
    /// snmpd with a config this test writes.
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("agents dir");
        let (port, trap_port) = (free_port(), free_port());
        let socket = dir.join("agentx.sock");
        std::fs::write(
            dir.join("snmpd.conf"),
            format!(
                "agentAddress udp:127.0.0.1:{port}\n\
                 master agentx\n\
                 agentXSocket {socket}\n\
                 agentXPerms 0600 0700\n\
                 createUser {USER} SHA \"{AUTH}\" AES \"{PRIV}\"\n\
                 rouser {USER} priv\n\
                 trap2sink 127.0.0.1:{trap_port} traps\n",
                socket = socket.display()
            ),
        )
        .expect("write snmpd.conf");
        Self::launch(dir, port, trap_port, socket, &dir.join("snmpd.conf"))
    }

    /// snmptrapd on `trap_port`, then snmpd with `conf`, which listens on
    /// `port` and opens the AgentX `socket`.
    fn launch(dir: &Path, port: u16, trap_port: u16, socket: PathBuf, conf: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("agents dir");
        std::fs::write(dir.join("snmptrapd.conf"), "authCommunity log traps\n")
            .expect("write snmptrapd.conf");
        let trapd = Command::new("snmptrapd")
            .args(["-f", "-C", "-On", "-Lf"])
            .arg(dir.join("traps.log"))
            .arg("-c")
            .arg(dir.join("snmptrapd.conf"))
            .arg("-p")
            .arg(dir.join("snmptrapd.pid"))
            .arg(format!("udp:127.0.0.1:{trap_port}"))
            .env("SNMP_PERSISTENT_DIR", dir.join("trapd-state"))
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snmptrapd (Debian package snmptrapd)");
        let trapd = Peer(trapd);
        let snmpd = Command::new("snmpd")
            .args(["-f", "-C", "-Lf"])
            .arg(dir.join("snmpd.log"))
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(dir.join("snmpd.pid"))
            .env("SNMP_PERSISTENT_DIR", dir.join("snmpd-state"))
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snmpd (Debian package snmpd)");
        let snmpd = Peer(snmpd);
        wait_for("snmpd's AgentX socket", Duration::from_secs(10), || {
            socket.exists()
        });
        Self {
            _snmpd: snmpd,
            _trapd: trapd,
            dir: dir.to_owned(),
            port,
            socket,
        }
    }

    /// `snmpwalk -v3 -l authPriv` of POOLGATE-MIB with these passwords:
    /// its numeric output lines, and what it said on stderr.
    fn walk(&self, auth: &str, privacy: &str) -> (String, Vec<String>) {
        self.walk_with(&[
            "-v3", "-l", "authPriv", "-u", USER, "-a", "SHA", "-A", auth, "-x", "AES", "-X",
            privacy,
        ])
    }

    /// `snmpwalk` of POOLGATE-MIB with these security arguments.
    fn walk_with(&self, security: &[&str]) -> (String, Vec<String>) {
        let output = Command::new("snmpwalk")
            .args(security)
            .args(["-On", "-t", "1", "-r", "1"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(ROOT)
            .env("MIBS", "")
            .env("SNMP_PERSISTENT_DIR", self.dir.join("client-state"))
            .output()
            .expect("run snmpwalk (Debian package snmp)");
        let lines = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.starts_with(ROOT))
            .map(str::to_owned)
            .collect();
        (String::from_utf8_lossy(&output.stderr).into_owned(), lines)
    }

    fn traps(&self) -> String {
        std::fs::read_to_string(self.dir.join("traps.log")).unwrap_or_default()
    }
}

/// `.1.3.6.1.4.1.32473.1.1.1.<column>."pool01"."<member>"` in numbers.
fn member_oid(column: u32, member: &str) -> String {
    let mut oid = format!("{ROOT}.1.1.1.{column}.6");
    for b in "pool01".bytes() {
        oid.push_str(&format!(".{b}"));
    }
    oid.push_str(&format!(".{}", member.len()));
    for b in member.bytes() {
        oid.push_str(&format!(".{b}"));
    }
    oid
}

fn value_of<'a>(lines: &'a [String], oid: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(oid)?.strip_prefix(" = "))
}

fn config(port: u16) -> toml::Table {
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
port = {port}
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
address = "127.0.0.72"
"#
    )
    .parse()
    .expect("test config is TOML")
}

#[test]
fn snmpwalk_v3_shows_members_and_snmptrapd_gets_their_traps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = Agents::start(&dir.path().join("snmp"));
    let port = {
        let probe = TcpListener::bind((MEMBER_IP, 0)).expect("free port");
        probe.local_addr().expect("addr").port()
    };
    let member = Member::start(format!("{MEMBER_IP}:{port}").parse().expect("addr"));
    let socket = agents.socket.to_str().expect("utf-8 path").to_owned();
    let mut poolgate = Poolgate::start_with_config(
        &dir.path().join("data"),
        &config(port),
        &["--agentx-socket", &socket],
    );
    let admin = AdminClient::setup_and_login(poolgate.address("admin"), "correct horse battery");

    // fe01 up and enabled (health up(2), admin enabled(1)); fe02 has no
    // listener: down(3).
    let mut lines = Vec::new();
    wait_for("fe01 up over SNMP", Duration::from_secs(20), || {
        let (_, walked) = agents.walk(AUTH, PRIV);
        lines = walked;
        value_of(&lines, &member_oid(5, "fe01")) == Some("INTEGER: 2")
            && value_of(&lines, &member_oid(5, "fe02")) == Some("INTEGER: 3")
    });
    assert_eq!(
        value_of(&lines, &member_oid(4, "fe01")),
        Some("INTEGER: 1"),
        "{lines:#?}"
    );
    assert_eq!(
        value_of(&lines, &member_oid(3, "fe01")),
        Some(format!("STRING: \"{MEMBER_IP}\"").as_str()),
        "{lines:#?}"
    );
    // Health per monitor: pgHealthState."pool01"."fe01"."fe-sip" = up(2).
    let mut health = member_oid(2, "fe01").replacen(".1.1.1.2.", ".1.2.1.2.", 1);
    health.push_str(".6");
    for b in "fe-sip".bytes() {
        health.push_str(&format!(".{b}"));
    }
    assert_eq!(value_of(&lines, &health), Some("INTEGER: 2"), "{lines:#?}");

    // A wrong password: nothing at all.
    let (said, wrong) = agents.walk("not-the-password", PRIV);
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(said.contains("Authentication failure"), "{said}");

    // Drain fe02 (no connections: drained at once) and stop fe01's listener.
    let response = admin.post("/api/v1/pools/pool01/members/fe02/drain", &json!({}));
    assert!(response.status().is_success(), "{:?}", response.text());
    wait_for("fe02 drained(4) over SNMP", Duration::from_secs(20), || {
        let (_, walked) = agents.walk(AUTH, PRIV);
        value_of(&walked, &member_oid(4, "fe02")) == Some("INTEGER: 4")
    });
    drop(member);

    let drained_trap = format!("{ROOT}.0.3");
    let down_trap = format!("{ROOT}.0.1");
    let fe01_down = |traps: &str| {
        traps
            .lines()
            .find(|l| l.contains(&format!("{down_trap}\t")) && l.contains("\"fe01\""))
            .map(str::to_owned)
    };
    wait_for("fe01's member-down trap", Duration::from_secs(20), || {
        fe01_down(&agents.traps()).is_some()
    });
    let traps = agents.traps();
    assert!(traps.contains(&format!("{drained_trap}\t")), "{traps}");
    // The down trap names the pool, member and monitor.
    let down = fe01_down(&traps).expect("found");
    for want in ["\"pool01\"", "\"fe01\"", "\"fe-sip\"", "up -> down"] {
        assert!(down.contains(want), "{want} in {down}");
    }
    poolgate.terminate(Duration::from_secs(10));
}

/// The settings of the API, rendered by poolgate into the snmpd.conf of
/// its system layout (in process here: the layout names no root-step
/// request), are what a real snmpd runs with.
#[test]
fn settings_from_the_api_render_an_snmpd_conf_that_snmpd_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents_dir = dir.path().join("snmp");
    std::fs::create_dir_all(&agents_dir).expect("mkdir");
    let (port, trap_port) = (free_port(), free_port());
    let socket = agents_dir.join("agentx.sock");
    let conf = agents_dir.join("rendered/snmpd.conf");
    let layout = poolgate_e2e::upgrade::fake_layout(dir.path());
    let mut text = std::fs::read_to_string(&layout).expect("layout");
    text.push_str(&format!(
        "\n[snmp]\nsnmpd_conf = {conf:?}\nagent_address = \"udp:127.0.0.1:{port}\"\n\
         agentx_socket = {socket:?}\nagentx_group = \"root\"\nreload = false\n"
    ));
    std::fs::write(&layout, text).expect("write layout");

    let member_port = {
        let probe = TcpListener::bind((MEMBER_IP, 0)).expect("free port");
        probe.local_addr().expect("addr").port()
    };
    let _member = Member::start(format!("{MEMBER_IP}:{member_port}").parse().expect("addr"));
    let socket_arg = socket.to_str().expect("utf-8").to_owned();
    let layout_arg = layout.to_str().expect("utf-8").to_owned();
    let mut poolgate = Poolgate::start_with_config(
        &dir.path().join("data"),
        &config(member_port),
        &[
            "--agentx-socket",
            &socket_arg,
            "--system-layout",
            &layout_arg,
        ],
    );
    let admin = AdminClient::setup_and_login(poolgate.address("admin"), "correct horse battery");

    // Field-named refusals; nothing written.
    let bad = json!({"users": [{"name": USER, "auth_password": "short", "priv_password": PRIV}],
                     "trap_sinks": [{"host": "127.0.0.1", "version": "v3", "user": "nobody"}]});
    let response = admin.put("/api/v1/system/snmp", &bad);
    assert_eq!(response.status().as_u16(), 422);
    let body: serde_json::Value = response.json().expect("JSON");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["users[0].auth_password", "trap_sinks[0].user"],
        "{body}"
    );
    assert!(!conf.exists());

    let settings = json!({
        "community": "ro-public",
        "community_sources": ["127.0.0.0/8"],
        "users": [{"name": USER, "auth_password": AUTH, "priv_password": PRIV}],
        "trap_sinks": [{"host": "127.0.0.1", "port": trap_port, "version": "v2c", "community": "traps"}]
    });
    let response = admin.put("/api/v1/system/snmp", &settings);
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());
    let view = admin.json("/api/v1/system/snmp");
    assert_eq!(view["settings"]["users"][0]["auth_password"], "********");
    let shown = view["snmpd_conf"].as_str().expect("rendered text");
    assert!(
        !shown.contains(AUTH) && !shown.contains("ro-public"),
        "{shown}"
    );
    assert!(conf.exists());

    let agents = Agents::launch(&agents_dir, port, trap_port, socket, &conf);
    wait_for("fe01 up over SNMP v3", Duration::from_secs(20), || {
        let (_, walked) = agents.walk(AUTH, PRIV);
        value_of(&walked, &member_oid(5, "fe01")) == Some("INTEGER: 2")
    });
    let (_, v2c) = agents.walk_with(&["-v2c", "-c", "ro-public"]);
    assert_eq!(
        value_of(&v2c, &member_oid(4, "fe01")),
        Some("INTEGER: 1"),
        "{v2c:#?}"
    );
    let (_, wrong) = agents.walk_with(&["-v2c", "-c", "not-the-community"]);
    assert!(wrong.is_empty(), "{wrong:#?}");

    let response = admin.post("/api/v1/pools/pool01/members/fe02/drain", &json!({}));
    assert!(response.status().is_success(), "{:?}", response.text());
    let drained = format!("{ROOT}.0.3\t");
    wait_for("the drained trap", Duration::from_secs(20), || {
        agents.traps().contains(&drained)
    });

    let response = admin.delete("/api/v1/system/snmp");
    assert_eq!(response.status().as_u16(), 200);
    assert!(!conf.exists());
    poolgate.terminate(Duration::from_secs(10));
}
