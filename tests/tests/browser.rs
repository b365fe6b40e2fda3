//! The web UI in a real browser: headless Chromium driven by Playwright
//! (`tests/browser/ui.mjs`) through the acceptance flow, from first-boot
//! password to logout, including a firmware upgrade on a fake disk; and
//! (`tests/browser/rollback.mjs`) the System page after an upgrade that
//! rolled back; and System → Network on a fake host
//! (`poolgate_e2e::network::Host`): editing, confirming and a revert
//! (`tests/browser/network.mjs`), and a change that moves the admin
//! address, in a network namespace of the test's own
//! (`tests/browser/network-move.mjs`; needs root, skipped otherwise); and
//! a Skype for Business pool built with the pool-template wizard on an
//! empty appliance against simulated Front Ends (`tests/browser/wizard.mjs`;
//! the web VIPs take 443 and 80, so it needs root or low unprivileged ports);
//! and two appliances on loopback (127.0.0.1 and 127.0.0.2, their own data
//! directories, ports and `--ha-listen`) paired through the HA card of one
//! with a code made on the other's, the standby read-only with a link to
//! the active, a failover from the standby's page, and an unpair
//! (`tests/browser/ha.mjs`);
//! and roles (`tests/browser/roles.mjs`): the admin adds an operator, who
//! drains a member and cannot open the configuration editor; and the
//! Statistics page (`tests/browser/statistics.mjs`) charting traffic the
//! script sends through a VIP to simulated Front Ends and to the DNS
//! listener, and a viewer opening it.
//! The binary under test is built with
//! `test-license-keys,test-upgrade-keys` and runs with `--no-reboot`.
//! Screenshots, and the exported config, land in `target/browser-artifacts/`
//! (the rollback's in its `rollback/` folder, the network's in `network/`
//! and `network-move/`, the wizard's in `wizard/`, the HA pair's in `ha/`,
//! the statistics' in `statistics/`).
//! `.ci/run` installs Chromium and the npm package.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use poolgate::license::document;
use poolgate_e2e::netns::{Netns, ip};
use poolgate_e2e::{
    AdminClient, Peer, Poolgate, free_port, loopback_example, network, upgrade, wait_for,
};

/// One browser at a time: each runs a poolgate and a Chromium.
static BROWSER: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/browser first (.ci/run does)"
    );
    dir
}

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts")
}

fn assert_passed(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Simulated Front Ends for the members of `config` (`poolgate
/// demo-members`), stopped on drop.
fn demo_members(config: &Path) -> Peer {
    Peer(
        Command::new(poolgate_e2e::binary())
            .args(["demo-members", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("demo members"),
    )
}

#[test]
fn acceptance_flow_from_first_boot_to_logout() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    // A vendor key of the test's own, trusted by the binary under test.
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let keys_file = dir.path().join("keys.txt");
    std::fs::write(&keys_file, document::key_hex(&key.verifying_key())).expect("keys");
    // Simulated Front Ends; the browser script asks (through a file in
    // `control`) for fe03 to be stopped, and this test restarts them without it.
    let config = loopback_example();
    let demo_all = dir.path().join("demo-all.toml");
    std::fs::write(&demo_all, toml::to_string(&config).expect("toml")).expect("write");
    let mut without_fe03 = config.clone();
    without_fe03["pool"].as_array_mut().expect("pools")[0]["member"]
        .as_array_mut()
        .expect("members")
        .retain(|m| m["name"].as_str() != Some("fe03"));
    let demo_some = dir.path().join("demo-some.toml");
    std::fs::write(&demo_some, toml::to_string(&without_fe03).expect("toml")).expect("write");
    let control = dir.path().join("control");
    std::fs::create_dir(&control).expect("control dir");
    let all = demo_members(&demo_all);
    let watcher = {
        let control = control.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(240);
            let mut all = Some(all);
            while std::time::Instant::now() < deadline && !control.join("done").exists() {
                if all.is_some() && control.join("stop-fe03").exists() {
                    drop(all.take());
                    return Some(demo_members(&demo_some));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    };
    // A fake disk to upgrade (never rebooting), an upgrade key of the
    // test's own, and two bundles signed with it: one good, one tampered.
    let system = dir.path().join("system");
    std::fs::create_dir(&system).expect("system dir");
    let layout = upgrade::fake_layout(&system);
    let upgrade_key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let upgrade_keys = dir.path().join("upgrade-keys.txt");
    upgrade::write_keys(&upgrade_keys, &upgrade_key);
    let good = dir.path().join(format!("poolgate-{}.pgup", upgrade::NEXT));
    upgrade::write_test_bundle(&good, &upgrade_key, |_| {});
    let tampered = dir.path().join("tampered.pgup");
    upgrade::write_tampered(&good, &tampered);
    let mut poolgate = Poolgate::start_with_config_env(
        &dir.path().join("var"),
        &config,
        &[
            "--no-reboot",
            "--system-layout",
            layout.to_str().expect("utf-8"),
        ],
        &[
            (
                "POOLGATE_TEST_LICENSE_KEYS",
                keys_file.to_str().expect("utf-8"),
            ),
            (
                "POOLGATE_TEST_UPGRADE_KEYS",
                upgrade_keys.to_str().expect("utf-8"),
            ),
        ],
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
    // A CA for the System page's CA bundles card.
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Contoso UI Root CA");
    let ca_file = dir.path().join("contoso-ca.pem");
    std::fs::write(&ca_file, ca.self_signed(&ca_key).expect("CA").pem()).expect("CA file");
    // This flow's files only: the rollback's folder is its own.
    let artifacts = artifacts();
    for entry in std::fs::read_dir(&artifacts)
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let output = Command::new("node")
        .arg(browser_dir.join("ui.mjs"))
        .arg(format!("https://{admin}/"))
        .arg(&artifacts)
        .arg(&licence_file)
        .arg(&control)
        .env("UPGRADE_BUNDLE", &good)
        .env("UPGRADE_TAMPERED", &tampered)
        .env("UPGRADE_VERSION", upgrade::NEXT)
        .env("CA_BUNDLE_FILE", &ca_file)
        .output()
        .expect("run node");
    std::fs::write(control.join("done"), "").expect("done");
    let _remaining = watcher.join().expect("watcher");
    assert_passed(&output);
    // What the browser installed is on the disk: the new root in slot b,
    // its kernel with three boot tries, slot a as it was.
    let root = upgrade::root_image();
    let slot_b = std::fs::read(system.join("root-b.img")).expect("slot b");
    assert_eq!(
        &slot_b[..root.len()],
        &root[..],
        "the new root is in slot b"
    );
    assert!(system.join("esp/EFI/Linux/poolgate-b+3.efi").is_file());
    let slot_a = std::fs::read(system.join("root-a.img")).expect("slot a");
    assert!(slot_a.iter().all(|&byte| byte == b'A'), "slot a untouched");
    assert!(
        !dir.path().join("var/upgrade/incoming.pgup").exists(),
        "no upload, cancelled or refused, is left behind"
    );
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn the_system_page_shows_a_rollback_and_its_reason() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = upgrade::fake_layout(dir.path());
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let keys = dir.path().join("upgrade-keys.txt");
    upgrade::write_keys(&keys, &key);
    let bundle = dir.path().join("next.pgup");
    upgrade::write_test_bundle(&bundle, &key, |_| {});
    let data_dir = dir.path().join("var");
    // Installed from the console; the new version then migrated the
    // database and never finished booting, so after three tries
    // systemd-boot has marked its kernel and starts slot a again.
    let output = Command::new(poolgate_e2e::binary())
        .env("POOLGATE_TEST_UPGRADE_KEYS", &keys)
        .arg("upgrade")
        .arg(&bundle)
        .arg("--system-layout")
        .arg(&layout)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--no-reboot")
        .output()
        .expect("run poolgate upgrade");
    assert!(output.status.success(), "{output:?}");
    let db = rusqlite::Connection::open(data_dir.join("poolgate.db")).expect("db");
    db.pragma_update(None, "user_version", poolgate::store::SCHEMA_VERSION + 1)
        .expect("migrate");
    drop(db);
    let ukis = dir.path().join("esp/EFI/Linux");
    std::fs::rename(
        ukis.join("poolgate-b+3.efi"),
        ukis.join("poolgate-b+0-3.efi"),
    )
    .expect("boot counter");

    let mut poolgate = Poolgate::start_with_env(
        &data_dir,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--no-reboot",
            "--system-layout",
            path_str(&layout),
        ],
        &[("POOLGATE_TEST_UPGRADE_KEYS", path_str(&keys))],
    );
    let artifacts = artifacts().join("rollback");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg(browser_dir.join("rollback.mjs"))
        .arg(format!("https://{}/", poolgate.address("admin")))
        .arg(&artifacts)
        .output()
        .expect("run node");
    assert_passed(&output);
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn an_operator_drains_a_member_but_cannot_open_the_config_editor() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut poolgate =
        Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let artifacts = artifacts().join("roles");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg(browser_dir.join("roles.mjs"))
        .arg(format!("https://{}/", poolgate.address("admin")))
        .arg(&artifacts)
        .output()
        .expect("run node");
    assert_passed(&output);
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn the_statistics_page_charts_traffic_through_a_vip() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    // Simulated Front Ends behind the example's virtual service.
    let config = loopback_example();
    let demo_config = dir.path().join("demo.toml");
    std::fs::write(&demo_config, toml::to_string(&config).expect("toml")).expect("write");
    let _demo = demo_members(&demo_config);
    let mut poolgate = Poolgate::start_with_config(&dir.path().join("var"), &config, &[]);
    let listening = poolgate.listening(&["admin", "dns-udp"]);
    let service = &config["virtual_service"][0];
    let vip = format!(
        "{}:{}",
        service["address"].as_str().expect("VIP address"),
        service["port"].as_integer().expect("VIP port")
    );
    let artifacts = artifacts().join("statistics");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg(browser_dir.join("statistics.mjs"))
        .arg(format!("https://{}/", listening["admin"][0]))
        .arg(&artifacts)
        .arg(&vip)
        .arg(listening["dns-udp"][0].to_string())
        .output()
        .expect("run node");
    assert_passed(&output);
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

/// Long enough for the browser to edit, preview, apply and confirm; short
/// enough to watch one change be reverted.
const NETWORK_WINDOW_S: u64 = 20;

#[test]
fn the_system_page_edits_the_network_and_confirms_it() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    let host = network::Host::new(false);
    // Set up and logged in here only to set up: the browser logs in itself
    // (and last moves the admin listener away from this address).
    let (mut poolgate, _setup) = host.start(NETWORK_WINDOW_S);
    let artifacts = artifacts().join("network");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg(browser_dir.join("network.mjs"))
        .arg(format!("https://{}/", poolgate.address("admin")))
        .arg(&artifacts)
        .arg(NETWORK_WINDOW_S.to_string())
        .output()
        .expect("run node");
    assert_passed(&output);
    // What the browser confirmed is on the host; the last network change,
    // never confirmed, was reverted; the refused VLAN never written.
    assert_eq!(host.host_file("hostname"), "lb-moved\n");
    let sources = host.host_file("chrony/poolgate.sources");
    assert!(
        sources.contains("server 192.0.2.123 iburst") && sources.contains("ntp.contoso.test"),
        "{sources}"
    );
    assert!(
        host.files().iter().all(|(name, _)| !name.contains("eth1")),
        "{:?}",
        host.files()
    );
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

#[test]
fn a_network_change_that_moves_the_admin_address_is_confirmed_at_the_new_one() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    // Interface pg0 (one end of a veth pair) with the address the browser
    // comes in on.
    let ns = Netns::new("pgui");
    // No IPv6 in the namespace: link-local addresses finishing DAD after
    // the browser starts are network changes it aborts navigations for.
    for key in ["all", "default"] {
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
            .status()
            .expect("run sysctl");
        assert!(status.success(), "sysctl in {}", ns.0);
    }
    ip(&[
        "-n", &ns.0, "link", "add", "pg0", "type", "veth", "peer", "name", "pg1",
    ]);
    ip(&["-n", &ns.0, "addr", "add", "198.51.100.10/24", "dev", "pg0"]);
    ip(&["-n", &ns.0, "link", "set", "pg1", "up"]);
    ip(&["-n", &ns.0, "link", "set", "pg0", "up"]);
    // Up before the browser starts (it drops requests when links change).
    wait_for("pg0 up", Duration::from_secs(10), || {
        let output = Command::new("ip")
            .args(["-n", &ns.0, "-o", "link", "show", "pg0"])
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&output.stdout).contains("state UP")
    });
    let host = network::Host::new(false);
    let mut config = loopback_example();
    config
        .get_mut("listen")
        .and_then(toml::Value::as_table_mut)
        .expect("[listen]")
        .insert("admin".into(), "0.0.0.0:0".into());
    let window = NETWORK_WINDOW_S.to_string();
    let mut poolgate = Poolgate::start_in_netns_with(
        &ns.0,
        &host.dir.path().join("var"),
        &config,
        &[
            "--system-layout",
            path_str(&host.layout),
            "--confirm-timeout-s",
            &window,
        ],
    );
    let port = poolgate.address("admin").port();
    let artifacts = artifacts().join("network-move");
    let _ = std::fs::remove_dir_all(&artifacts);
    let done = std::sync::atomic::AtomicBool::new(false);
    let output = std::thread::scope(|scope| {
        // What systemd-networkd does with the file poolgate wrote: the
        // address moves from .10 to .20.
        scope.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while !done.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                if host
                    .file("20-poolgate-pg0.network")
                    .contains("Address=198.51.100.20/24")
                {
                    // In this order: deleting a primary address takes
                    // the others of its subnet with it.
                    ip(&["-n", &ns.0, "addr", "del", "198.51.100.10/24", "dev", "pg0"]);
                    ip(&["-n", &ns.0, "addr", "add", "198.51.100.20/24", "dev", "pg0"]);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let output = Command::new("ip")
            .args(["netns", "exec", &ns.0, "node"])
            .arg(browser_dir.join("network-move.mjs"))
            .arg(format!("https://198.51.100.10:{port}/"))
            .arg(&artifacts)
            .arg("198.51.100.20")
            .output()
            .expect("run node");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        output
    });
    assert_passed(&output);
    assert!(
        host.file("20-poolgate-pg0.network")
            .contains("Address=198.51.100.20/24"),
        "the confirmed change stays"
    );
    // The browser's connection to the old address is left hanging, so
    // poolgate closes it at the end of its 10 s grace.
    assert!(poolgate.terminate(Duration::from_secs(20)).success());
}

/// `GET /` over plain HTTP: what arrives within 5 s, up to 4 KiB (the
/// demo member keeps the connection open).
fn plain_http_get(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: webint.contoso.test\r\n\r\n")
        .expect("request");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while answer.len() < 4096 && !String::from_utf8_lossy(&answer).contains("demo member") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether this process may bind ports below 1024.
fn may_bind_low_ports() -> bool {
    nix::unistd::geteuid().is_root()
        || std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
            .is_some_and(|start| start <= 80)
}

#[test]
fn the_wizard_builds_a_skype_for_business_pool_on_an_empty_appliance() {
    if !may_bind_low_ports() {
        eprintln!("skipped: the web VIPs and simulated Front Ends need ports 80 and 443");
        return;
    }
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    // Loopback addresses of this run's own: a /24 of 127.0.0.0/8 few
    // others use, its third byte drawn so parallel runs do not collide.
    let net = format!("127.77.{}", 1 + rand::random::<u8>() % 250);
    let members: Vec<String> = (11..14).map(|host| format!("{net}.{host}")).collect();
    let (vip_internal, vip_external) = (format!("{net}.20"), format!("{net}.21"));
    // The simulated Front Ends serve what the wizard's pool probes and
    // proxies to: SIP over TLS on 5061, 443 and 80, 4443 and 8080.
    let member_tables: String = members
        .iter()
        .enumerate()
        .map(|(i, address)| {
            format!(
                "[[pool.member]]\nname = \"fe0{}\"\naddress = \"{address}\"\n",
                i + 1
            )
        })
        .collect();
    let demo_config = dir.path().join("demo.toml");
    std::fs::write(
        &demo_config,
        format!(
            r#"[listen]
admin = "127.0.0.1:0"

[[zone]]
name = "contoso.test"
name_servers = [{{ name = "ns1.contoso.test", addresses = ["127.0.0.1"] }}]

[[monitor]]
name = "sip"
type = "sip-options"
transport = "tls"
port = 5061
tls_verify = false

[[pool]]
name = "pool01"
fqdn = "pool01.contoso.test"
monitor = "sip"

{member_tables}
[[virtual_service]]
name = "internal"
address = "{vip_internal}"
port = 443
extra_ports = [80]
pool = "pool01"

[[virtual_service]]
name = "external"
address = "{vip_external}"
port = 443
member_port = 4443
extra_ports = [{{ port = 80, member_port = 8080 }}]
pool = "pool01"
"#
        ),
    )
    .expect("demo config");
    let check = Command::new(poolgate_e2e::binary())
        .arg("check-config")
        .arg(&demo_config)
        .output()
        .expect("check-config");
    assert_passed(&check);
    let _demo = demo_members(&demo_config);
    // First boot: no configuration, no administrator.
    let mut poolgate = Poolgate::start(&dir.path().join("var"), &["--admin-listen", "127.0.0.1:0"]);
    let artifacts = artifacts().join("wizard");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg(browser_dir.join("wizard.mjs"))
        .arg(format!("https://{}/", poolgate.address("admin")))
        .arg(&artifacts)
        .arg(members.join(","))
        .arg(&vip_internal)
        .arg(&vip_external)
        .output()
        .expect("run node");
    assert_passed(&output);
    // What the browser applied carries traffic: the internal VIP's 80 to
    // a member's 80, the external VIP's 80 to a member's 8080.
    for vip in [&vip_internal, &vip_external] {
        let answer = plain_http_get(&format!("{vip}:80"));
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("poolgate demo member fe0"),
            "{vip}: {answer}"
        );
    }
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}

/// One appliance of an HA pair on loopback address `ip`: its own admin
/// port (fixed, since the peer is told the configured admin address) and
/// DNS listener, no SIP listeners or virtual services (both share a host).
/// Set up with the harness's password (the browser logs in with it).
fn ha_appliance(dir: &Path, ip: &str, sync: &str) -> (Poolgate, String) {
    let mut config = loopback_example();
    let listen = config["listen"].as_table_mut().expect("[listen]");
    let admin = format!("{ip}:{}", free_port());
    listen.insert("admin".into(), admin.clone().into());
    listen.insert(
        "dns".into(),
        vec![toml::Value::from(format!("{ip}:0"))].into(),
    );
    listen.remove("sip_udp");
    listen.remove("sip_tcp");
    config.remove("virtual_service");
    let poolgate = Poolgate::start_with_config(&dir.join(ip), &config, &["--ha-listen", sync]);
    let _setup = AdminClient::setup_and_login(poolgate.address("admin"), HA_PASSWORD);
    (poolgate, admin)
}

/// The harness's password (`tests/browser/harness.mjs`).
const HA_PASSWORD: &str = "correct horse battery staple";

#[test]
fn the_ha_page_pairs_two_appliances_fails_over_and_unpairs() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let browser_dir = browser_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    let sync_a = format!("127.0.0.1:{}", free_port());
    let sync_b = format!("127.0.0.2:{}", free_port());
    let (mut a, admin_a) = ha_appliance(dir.path(), "127.0.0.1", &sync_a);
    let (mut b, admin_b) = ha_appliance(dir.path(), "127.0.0.2", &sync_b);
    let control = dir.path().join("control");
    std::fs::create_dir(&control).expect("control dir");
    let artifacts = artifacts().join("ha");
    let _ = std::fs::remove_dir_all(&artifacts);
    let mut node = Peer(
        Command::new("node")
            .arg(browser_dir.join("ha.mjs"))
            .arg(format!("https://{admin_a}/"))
            .arg(format!("https://{admin_b}/"))
            .arg(&sync_a)
            .arg(&artifacts)
            .arg(&control)
            .stdout(std::fs::File::create(dir.path().join("node.out")).expect("node.out"))
            .stderr(std::fs::File::create(dir.path().join("node.err")).expect("node.err"))
            .spawn()
            .expect("run node"),
    );
    // The split the browser asks for: A restarted on a sync address B
    // does not know (B's dials fail, A takes changes alone), then on its
    // own again.
    let restart_a = |a: &mut Poolgate, sync: &str| {
        assert!(a.terminate(Duration::from_secs(10)).success());
        *a = Poolgate::start(&dir.path().join("127.0.0.1"), &["--ha-listen", sync]);
        a.address("admin");
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(200);
    let (mut isolated, mut back) = (false, false);
    while node.0.try_wait().expect("node status").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the browser test runs too long"
        );
        if !isolated && control.join("isolate-a").exists() {
            restart_a(&mut a, &format!("127.0.0.1:{}", free_port()));
            std::fs::write(control.join("a-isolated"), "").expect("control file");
            isolated = true;
        }
        if !back && control.join("rejoin-a").exists() {
            restart_a(&mut a, &sync_a);
            std::fs::write(control.join("a-back"), "").expect("control file");
            back = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Files rather than pipes: nothing reads them while the browser runs.
    let output = std::process::Output {
        status: node.0.wait().expect("node status"),
        stdout: std::fs::read(dir.path().join("node.out")).expect("node.out"),
        stderr: std::fs::read(dir.path().join("node.err")).expect("node.err"),
    };
    assert_passed(&output);
    // What the browser did holds on both: unpaired, each on its own, and
    // A's change of the split replaced by B's history.
    for address in [&admin_a, &admin_b] {
        let mut client = AdminClient::new(address.parse().expect("address"));
        client.login("admin", HA_PASSWORD);
        let ha = client.json("/api/v1/ha");
        assert_eq!(ha["role"], "standalone", "{address}: {ha}");
        let ttl = client.json("/api/v1/config")["dns"]["ttl"].clone();
        assert_eq!(ttl, 62, "{address}: the TTL B set last");
    }
    assert!(a.terminate(Duration::from_secs(10)).success());
    assert!(b.terminate(Duration::from_secs(10)).success());
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
