//! Delegation from a parent zone, end to end, the way an Active Directory
//! shop does it: NSD serves the parent zone `contoso.test` (standing in for
//! AD DNS) and delegates `pool01.contoso.test` and `sip.contoso.test` to
//! poolgate with the NS and glue records `poolgate dns delegation` prints;
//! Unbound is the resolver the clients ask. Through Unbound the pool name
//! returns the healthy members, a drain shows within the TTL, and the NS of
//! the pool zone resolves to poolgate's own address.
//!
//! A resolver follows a delegation to port 53 of the glue address, so the
//! test runs in a network namespace of its own, where poolgate (127.0.0.53),
//! NSD (127.0.0.54) and Unbound (127.0.0.1) each have port 53 on loopback to
//! themselves. Needs root for the namespace (skips with a message
//! otherwise) and the Debian packages nsd and unbound. The namespace is
//! removed and every process killed by guards, even when the test fails.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use poolgate_e2e::dig::{Dig, dig};
use poolgate_e2e::netns::Netns;
use poolgate_e2e::{AdminClient, Peer, Poolgate, poolgate_cli, wait_for};

const POOLGATE: &str = "127.0.0.53";
const NSD: &str = "127.0.0.54";
const UNBOUND: &str = "127.0.0.1";
/// The pool's DNS TTL: a drain must show through Unbound's cache within it.
const TTL: u32 = 3;
const MONITOR_PORT: u16 = 15061;

fn poolgate_config() -> String {
    let mut text = format!(
        r#"
[listen]
admin = "127.0.0.1:0"
dns = ["{POOLGATE}:53"]

[dns]
ttl = {TTL}

[[zone]]
name = "pool01.contoso.test"
name_servers = [{{ name = "ns1.pool01.contoso.test", addresses = ["{POOLGATE}"] }}]

# Names no name servers: ns.sip.contoso.test at the listener's address.
[[zone]]
name = "sip.contoso.test"

[[monitor]]
name = "fe-sip"
type = "tcp"
port = {MONITOR_PORT}
interval_ms = 200
timeout_ms = 200
rise = 1
fall = 1

[[pool]]
name = "pool01"
fqdn = "pool01.contoso.test"
aliases = ["sip.contoso.test"]
monitor = "fe-sip"
registrar_port = 5061
registrar_transport = "tls"
"#
    );
    for m in 1..=3 {
        text.push_str(&format!(
            "\n[[pool.member]]\nname = \"fe0{m}\"\naddress = \"127.0.0.1{m}\"\n"
        ));
    }
    text
}

/// NSD serving the parent zone with `delegation` (what poolgate printed).
fn start_nsd(dir: &Path, delegation: &str) -> Peer {
    let zone = format!(
        "$ORIGIN contoso.test.\n$TTL 3600\n\
         @ IN SOA ns.contoso.test. hostmaster.contoso.test. 1 3600 600 604800 60\n\
         @ IN NS ns.contoso.test.\n\
         ns IN A {NSD}\n\
         www IN A 127.0.0.80\n\
         {delegation}"
    );
    std::fs::write(dir.join("contoso.test.zone"), zone).expect("write zone");
    let d = dir.display();
    let conf = format!(
        "server:\n    ip-address: {NSD}@53\n    server-count: 1\n    username: \"\"\n    chroot: \"\"\n    \
         zonesdir: \"{d}\"\n    database: \"\"\n    zonelistfile: \"{d}/zone.list\"\n    \
         xfrdfile: \"{d}/xfrd.state\"\n    xfrdir: \"{d}\"\n    pidfile: \"{d}/nsd.pid\"\n    \
         logfile: \"{d}/nsd.log\"\n    verbosity: 1\n\
         remote-control:\n    control-enable: no\n\
         zone:\n    name: contoso.test\n    zonefile: contoso.test.zone\n"
    );
    let file = dir.join("nsd.conf");
    std::fs::write(&file, conf).expect("write nsd.conf");
    let check = Command::new("nsd-checkzone")
        .arg("contoso.test")
        .arg(dir.join("contoso.test.zone"))
        .output()
        .expect("nsd-checkzone runs (Debian package nsd)");
    assert!(
        check.status.success(),
        "the parent zone with poolgate's delegation records: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    spawn("nsd", &["-d", "-c", file.to_str().expect("utf-8")], dir)
}

/// Unbound resolving contoso.test through NSD (a stub zone, as a site's
/// resolvers point at AD DNS), nothing else; `test.` is one of Unbound's
/// built-in empty zones (RFC 6761), so that default is turned off.
fn start_unbound(dir: &Path) -> Peer {
    let d = dir.display();
    let conf = format!(
        "server:\n    interface: {UNBOUND}\n    port: 53\n    do-ip6: no\n    username: \"\"\n    \
         chroot: \"\"\n    directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n    \
         use-syslog: no\n    logfile: \"{d}/unbound.log\"\n    verbosity: 1\n    num-threads: 1\n    \
         do-not-query-localhost: no\n    access-control: 127.0.0.0/8 allow\n    \
         domain-insecure: \"contoso.test\"\n    prefetch: no\n    serve-expired: no\n    \
         local-zone: \"test.\" nodefault\n\
         stub-zone:\n    name: \"contoso.test\"\n    stub-addr: {NSD}@53\n\
         remote-control:\n    control-enable: no\n"
    );
    let file = dir.join("unbound.conf");
    std::fs::write(&file, conf).expect("write unbound.conf");
    spawn("unbound", &["-d", "-c", file.to_str().expect("utf-8")], dir)
}

fn spawn(program: &str, args: &[&str], dir: &Path) -> Peer {
    let stderr = std::fs::File::create(dir.join(format!("{program}.err"))).expect("stderr file");
    Peer(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("{program} runs (Debian package {program}): {error}")),
    )
}

/// Poll `check` every 50 ms until it holds (true) or `bound` passes (false).
fn poll(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < bound {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// NSD's and Unbound's logs, for a failure message.
fn logs(dir: &Path) -> String {
    ["nsd.log", "nsd.err", "unbound.log", "unbound.err"]
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            format!("--- {file}\n{text}")
        })
        .collect()
}

fn resolver() -> SocketAddr {
    SocketAddr::new(UNBOUND.parse().expect("ip"), 53)
}

/// Ask Unbound, recursion desired (the dig helper asks +norecurse).
fn resolve(name: &str, rtype: &str) -> Dig {
    dig(resolver(), &["+recurse", name, rtype])
}

fn addresses(reply: &Dig) -> BTreeSet<String> {
    reply.data("A")
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

#[test]
fn a_delegated_pool_resolves_through_nsd_and_unbound() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let netns = Netns::new("pgdel");
    netns.run(run);
}

fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("poolgate.toml");
    std::fs::write(&config_file, poolgate_config()).expect("write config");

    // The records the admin creates in AD DNS, as poolgate prints them.
    let output = poolgate_cli(
        &[
            "dns",
            "delegation",
            "--config",
            config_file.to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let delegation = String::from_utf8(output.stdout).expect("utf-8");
    for line in [
        "; pool01.contoso.test: create these records in the parent zone contoso.test",
        "pool01.contoso.test.\t3600\tIN\tNS\tns1.pool01.contoso.test.",
        &format!("ns1.pool01.contoso.test.\t3600\tIN\tA\t{POOLGATE}"),
        "sip.contoso.test.\t3600\tIN\tNS\tns.sip.contoso.test.",
        &format!("ns.sip.contoso.test.\t3600\tIN\tA\t{POOLGATE}"),
    ] {
        assert!(
            delegation.lines().any(|l| l == line),
            "{line:?} in\n{delegation}"
        );
    }

    // fe01 and fe02 answer their monitor; fe03 does not (it goes down).
    // A listening socket completes the monitor's handshakes from its backlog.
    let _members: Vec<TcpListener> = ["127.0.0.11", "127.0.0.12"]
        .iter()
        .map(|address| TcpListener::bind((*address, MONITOR_PORT)).expect("member listens"))
        .collect();

    let _nsd = start_nsd(dir.path(), &delegation);
    let _unbound = start_unbound(dir.path());
    let data_dir = dir.path().join("var");
    let mut poolgate = Poolgate::start(
        &data_dir,
        &["--config", config_file.to_str().expect("utf-8")],
    );
    let admin = poolgate.address("admin");
    let poolgate_dns = SocketAddr::new(POOLGATE.parse().expect("ip"), 53);

    // poolgate itself sees fe03 down first: only then is its answer final.
    wait_for("fe03 down at poolgate", Duration::from_secs(20), || {
        addresses(&dig(poolgate_dns, &["pool01.contoso.test", "A"]))
            == set(&["127.0.0.11", "127.0.0.12"])
    });
    // NSD and Unbound are up once the parent zone resolves.
    let mut last = Dig::default();
    let up = poll(Duration::from_secs(20), || {
        last = resolve("www.contoso.test", "A");
        last.data("A") == set(&["127.0.0.80"])
    });
    assert!(
        up,
        "Unbound resolves through NSD: {}\n{}",
        last.raw,
        logs(dir.path())
    );

    // The pool name and its alias through the delegation: healthy members.
    for name in ["pool01.contoso.test", "sip.contoso.test"] {
        let reply = resolve(name, "A");
        assert_eq!(reply.status, "NOERROR", "{}", reply.raw);
        assert_eq!(
            addresses(&reply),
            set(&["127.0.0.11", "127.0.0.12"]),
            "{}",
            reply.raw
        );
        assert!(
            reply.answer.iter().all(|(_, ttl, _, _)| *ttl <= TTL),
            "{}",
            reply.raw
        );
    }

    // The NS of the pool zone leads back to poolgate.
    let ns = resolve("pool01.contoso.test", "NS");
    assert_eq!(
        ns.data("NS"),
        set(&["ns1.pool01.contoso.test."]),
        "{}",
        ns.raw
    );
    let ns_address = resolve("ns1.pool01.contoso.test", "A");
    assert_eq!(ns_address.data("A"), set(&[POOLGATE]), "{}", ns_address.raw);
    let sip_ns = resolve("sip.contoso.test", "NS");
    assert_eq!(
        sip_ns.data("NS"),
        set(&["ns.sip.contoso.test."]),
        "{}",
        sip_ns.raw
    );

    // Drain fe02: through Unbound's cache the answer drops it within the TTL
    // (polled, with a bound well above it).
    let client = AdminClient::setup_and_login(admin, "correct horse battery");
    let response = client.post(
        "/api/v1/pools/pool01/members/fe02/drain",
        &serde_json::json!({}),
    );
    assert!(response.status().is_success(), "{}", response.status());
    wait_for(
        "the drain to show through Unbound",
        Duration::from_secs(u64::from(TTL) * 10),
        || addresses(&resolve("pool01.contoso.test", "A")) == set(&["127.0.0.11"]),
    );

    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}
