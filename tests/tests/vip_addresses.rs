//! poolgate owns its VIP addresses: on a link of its own (three network
//! namespaces, "appliance", "members" and "client", joined by veth pairs to
//! a bridge in a fourth), poolgate runs in the appliance namespace with
//! only its interface addresses, adds the virtual services' 198.51.100.20
//! and 2001:db8:100::20, announces them (the client's neighbour table
//! learns the appliance's MAC before the client ever asks), proxies the
//! client to the members through them, refuses a VIP in no subnet or on an
//! unknown interface (422 naming the field), removes an address once its
//! service is gone, binds a VIP added live before its address is there,
//! and gives up all of them when it stops.
//!
//! Needs root and `ip netns` (iproute2); skips with a message otherwise.
//! Every namespace is removed by a guard, even when the test fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use poolgate_e2e::netns::{in_netns, ip};
use poolgate_e2e::{AdminClient, Poolgate, wait_for};

const PORT: u16 = 15060;
const VIP4: &str = "198.51.100.20";
const VIP6: &str = "2001:db8:100::20";
/// What the client's neighbour table says before poolgate announces.
const STALE_MAC: &str = "02:00:00:00:00:99";

fn in_ns(ns: &str, command: &[&str]) -> String {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(command);
    ip(&args)
}

/// The namespaces of one run, removed on drop.
struct Lab {
    appliance: String,
    members: String,
    client: String,
    bridge: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.appliance, &self.members, &self.client, &self.bridge] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Lab {
    fn new() -> Self {
        let tag = format!("{}{:04x}", std::process::id(), rand::random::<u16>());
        let lab = Self {
            appliance: format!("pga{tag}"),
            members: format!("pgm{tag}"),
            client: format!("pgc{tag}"),
            bridge: format!("pgb{tag}"),
        };
        for ns in [&lab.appliance, &lab.members, &lab.client, &lab.bridge] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let br = lab.bridge.as_str();
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        for (i, (ns, v4, v6)) in [
            (&lab.appliance, "198.51.100.10/24", "2001:db8:100::10/64"),
            (&lab.members, "198.51.100.30/24", "2001:db8:100::30/64"),
            (&lab.client, "198.51.100.1/24", "2001:db8:100::1/64"),
        ]
        .into_iter()
        .enumerate()
        {
            let port = format!("p{i}");
            ip(&[
                "-n", br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["-n", br, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", "eth0"]);
            ip(&["-n", ns, "addr", "add", v6, "dev", "eth0", "nodad"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    fn mac(&self, ns: &str) -> String {
        in_ns(ns, &["cat", "/sys/class/net/eth0/address"])
            .trim()
            .to_owned()
    }

    /// The appliance's addresses on eth0 (`ip -br addr`).
    fn appliance_addresses(&self) -> String {
        ip(&["-n", &self.appliance, "-br", "addr", "show", "dev", "eth0"])
    }
}

/// The member: answers each connection with the family it came in on.
fn serve_member(members: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    in_netns(members, move || {
        let listener = TcpListener::bind(("::", PORT)).expect("member listens");
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let family = match peer {
                        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => "v6",
                        _ => "v4",
                    };
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(format!("member {family}\n").as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

fn config(services: &[(&str, &str, Option<&str>)]) -> serde_json::Value {
    let vs: Vec<serde_json::Value> = services
        .iter()
        .map(|(name, address, interface)| {
            let mut service = serde_json::json!({
                "name": name, "address": address, "port": PORT,
                "pool": if address.contains(':') { "p6" } else { "p4" },
            });
            if let Some(interface) = interface {
                service["interface"] = (*interface).into();
            }
            service
        })
        .collect();
    serde_json::json!({
        "listen": {"admin": "198.51.100.10:8443"},
        "zone": [{"name": "example.test"}],
        "monitor": [{"name": "m", "type": "tcp", "port": PORT, "interval_ms": 500, "timeout_ms": 400}],
        "pool": [
            {"name": "p4", "fqdn": "p4.example.test", "monitor": "m",
             "member": [{"name": "m4", "address": "198.51.100.30"}]},
            {"name": "p6", "fqdn": "p6.example.test", "monitor": "m",
             "member": [{"name": "m6", "address": "2001:db8:100::30"}]},
        ],
        "virtual_service": vs,
    })
}

fn to_toml(json: &serde_json::Value) -> toml::Table {
    toml::Table::try_from(json).expect("config as TOML")
}

/// Connect through the VIP until the member answers.
fn through(address: SocketAddr) -> String {
    let mut answer = String::new();
    wait_for(
        &format!("the member through {address}"),
        Duration::from_secs(20),
        || {
            let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            answer.clear();
            stream.read_to_string(&mut answer).is_ok() && !answer.is_empty()
        },
    );
    answer
}

#[test]
fn poolgate_adds_announces_serves_and_removes_its_vips() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let lab = Lab::new();
    let client_ns = lab.client.clone();
    // Neighbour entries the client holds before poolgate starts: only an
    // announcement can change them (the client sends nothing to the VIPs
    // before the check). No lock time, so a gratuitous ARP may override.
    in_ns(
        &client_ns,
        &["sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0"],
    );
    for vip in [VIP4, VIP6] {
        ip(&[
            "-n", &client_ns, "neigh", "add", vip, "lladdr", STALE_MAC, "dev", "eth0", "nud",
            "stale",
        ]);
    }
    let appliance_mac = lab.mac(&lab.appliance);
    let stop = Arc::new(AtomicBool::new(false));
    let member = serve_member(&lab.members, Arc::clone(&stop));

    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let both = config(&[("vs4", VIP4, None), ("vs6", VIP6, Some("eth0"))]);
    let mut poolgate = Poolgate::start_in_netns(&lab.appliance, &data_dir, &to_toml(&both));
    poolgate.listening(&["admin"]);

    wait_for(
        "both VIPs on the appliance",
        Duration::from_secs(15),
        || {
            let addresses = lab.appliance_addresses();
            addresses.contains(&format!("{VIP4}/32")) && addresses.contains(&format!("{VIP6}/128"))
        },
    );
    // The announcements reached the client.
    for vip in [VIP4, VIP6] {
        wait_for(
            &format!("the client to learn {vip}"),
            Duration::from_secs(10),
            || ip(&["-n", &client_ns, "neigh", "show", vip]).contains(&appliance_mac),
        );
    }

    let body = both.clone();
    let results = in_netns(&client_ns, move || {
        let v4 = through(SocketAddr::new(VIP4.parse().expect("ip"), PORT));
        let v6 = through(SocketAddr::new(VIP6.parse().expect("ip"), PORT));
        let admin = AdminClient::setup_and_login(
            "198.51.100.10:8443".parse().expect("addr"),
            "vip-test-password",
        );
        // A VIP in no subnet of the appliance, and one on an interface it
        // does not have: 422 naming the field, nothing written.
        let mut bad = body.clone();
        bad["virtual_service"][1]["address"] = "192.0.2.50".into();
        bad["virtual_service"][1]["interface"] = serde_json::Value::Null;
        bad["virtual_service"][1]["pool"] = "p4".into();
        let no_subnet = admin.put("/api/v1/config", &bad);
        let no_subnet = (no_subnet.status().as_u16(), no_subnet.text().expect("body"));
        let mut bad = body.clone();
        bad["virtual_service"][1]["interface"] = "eth9".into();
        let no_interface = admin.put("/api/v1/config", &bad);
        let no_interface = (
            no_interface.status().as_u16(),
            no_interface.text().expect("body"),
        );
        // Remove the IPv6 service.
        let only_v4 = config(&[("vs4", VIP4, None)]);
        let removed = admin.put("/api/v1/config", &only_v4).status().as_u16();
        (v4, v6, no_subnet, no_interface, removed, admin)
    })
    .join()
    .expect("client thread");
    let (v4, v6, no_subnet, no_interface, removed, admin) = results;
    assert_eq!(v4.trim(), "member v4");
    assert_eq!(v6.trim(), "member v6");
    assert_eq!(no_subnet.0, 422, "{}", no_subnet.1);
    assert!(
        no_subnet.1.contains("virtual_service[1].address"),
        "{}",
        no_subnet.1
    );
    assert_eq!(no_interface.0, 422, "{}", no_interface.1);
    assert!(
        no_interface.1.contains("virtual_service[1].interface"),
        "{}",
        no_interface.1
    );
    assert_eq!(removed, 200);

    wait_for("the IPv6 VIP to go", Duration::from_secs(15), || {
        !lab.appliance_addresses().contains(VIP6)
    });
    assert!(
        lab.appliance_addresses().contains(VIP4),
        "the IPv4 VIP stays"
    );

    let (metrics, events, admin) = in_netns(&client_ns, move || {
        let metrics = admin.get("/metrics").text().expect("metrics");
        let events = admin.get("/api/v1/events").text().expect("events");
        (metrics, events, admin)
    })
    .join()
    .expect("client thread");
    assert!(
        metrics.contains("poolgate_addresses_added_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("poolgate_addresses_removed_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("poolgate_addresses_held 1"), "{metrics}");
    assert!(
        events.contains(&format!("Added address {VIP4} to eth0")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Removed address {VIP6} from eth0")),
        "{events}"
    );

    // A VIP added live: its listener binds at once, before the address is
    // on the interface (no failed bind, no second's retry), and serves as
    // soon as it is.
    let readded = both.clone();
    let v6 = in_netns(&client_ns, move || {
        assert_eq!(admin.put("/api/v1/config", &readded).status().as_u16(), 200);
        through(SocketAddr::new(VIP6.parse().expect("ip"), PORT))
    })
    .join()
    .expect("client thread");
    assert_eq!(v6.trim(), "member v6");
    let failed: Vec<String> = poolgate
        .log()
        .into_iter()
        .filter(|line| line.contains("cannot listen"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    // Stopping gives every address up.
    assert!(poolgate.terminate(Duration::from_secs(30)).success());
    assert!(
        !lab.appliance_addresses().contains(VIP4),
        "{}",
        lab.appliance_addresses()
    );
    stop.store(true, Ordering::Relaxed);
    member.join().expect("member thread");
}
