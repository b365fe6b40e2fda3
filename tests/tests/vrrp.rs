//! An HA pair's VIP moves with keepalived. Six network namespaces on one
//! bridge (a seventh): appliances A (198.51.100.11) and B (.12), each with a
//! poolgate and a real keepalived (`--vrrp`, foreground) running the
//! keepalived.conf that poolgate rendered from its VRRP settings; a member
//! (.30); a client (.1) that opens new TCP connections to the VIP
//! 198.51.100.20 without pause; and an intruder (.66).
//!
//! * A becomes master and holds the VIP; poolgate itself adds none
//!   (keepalived owns the addresses) and shows keepalived's state per
//!   instance from the notify FIFO.
//! * `kill -9` of A's poolgate: its health file goes stale, A's keepalived
//!   goes to FAULT and B takes over. The test prints how long the move took
//!   and how many of the client's attempts failed meanwhile, and asserts
//!   that every attempt after the first success through B succeeded.
//! * A's poolgate comes back (A stands by, no failback: `nopreempt`), then
//!   the active's link (B's, pulled at the bridge) goes down: A takes over.
//! * B's link comes back (B stands by). A's poolgate hangs (`SIGSTOP`): the
//!   same as a kill, B takes over; continued, A stands by.
//! * The intruder runs a keepalived
//!   with the pair's router id at priority 254, advertising to both
//!   appliances: they ignore it (`check_unicast_src`: the peer is the only
//!   accepted source), and with the nftables rule poolgate renders loaded
//!   in both namespaces its packets are dropped before keepalived sees
//!   them while the pair still hears each other; the VIP stays where it is.
//! * VRRP turned off on A (`DELETE`): poolgate holds the VIP itself again.
//!
//! Timing is printed, never asserted tightly (moves must happen within a
//! generous 15 s). Needs root, `ip netns` and keepalived (and nft for the
//! rule); skips with a message otherwise. Namespaces and processes are removed by guards, even
//! when the test fails.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use poolgate_e2e::netns::{in_netns, ip};
use poolgate_e2e::{AdminClient, Poolgate, wait_for};

const PORT: u16 = 15070;
const VIP: &str = "198.51.100.20";
const A: &str = "198.51.100.11";
const B: &str = "198.51.100.12";
const INTRUDER: &str = "198.51.100.66";
const PASSWORD: &str = "vrrp-test-password";
/// The most any move may take before the test calls it broken.
const MOVE_BOUND: Duration = Duration::from_secs(15);

/// The namespaces of one run, removed on drop.
struct Lab {
    a: String,
    b: String,
    members: String,
    client: String,
    intruder: String,
    bridge: String,
}

impl Lab {
    fn all(&self) -> [&String; 6] {
        [
            &self.a,
            &self.b,
            &self.members,
            &self.client,
            &self.intruder,
            &self.bridge,
        ]
    }

    fn new() -> Self {
        let tag = format!("{}{:04x}", std::process::id(), rand::random::<u16>());
        let lab = Self {
            a: format!("pva{tag}"),
            b: format!("pvb{tag}"),
            members: format!("pvm{tag}"),
            client: format!("pvc{tag}"),
            intruder: format!("pvi{tag}"),
            bridge: format!("pvr{tag}"),
        };
        for ns in lab.all() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let br = lab.bridge.as_str();
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        for (port, ns, address) in [
            ("pa", &lab.a, A),
            ("pb", &lab.b, B),
            ("pm", &lab.members, "198.51.100.30"),
            ("pc", &lab.client, "198.51.100.1"),
            ("pi", &lab.intruder, INTRUDER),
        ] {
            ip(&[
                "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["-n", br, "link", "set", port, "master", "br0", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        // The client takes the new master's gratuitous ARP at once.
        ip(&[
            "netns",
            "exec",
            &lab.client,
            "sysctl",
            "-qw",
            "net.ipv4.neigh.eth0.locktime=0",
        ]);
        lab
    }

    fn holds_vip(&self, ns: &str) -> bool {
        ip(&["-n", ns, "-br", "addr", "show", "dev", "eth0"]).contains(&format!("{VIP}/32"))
    }

    /// Pull (or plug back) the cable of `port` at the bridge.
    fn link(&self, port: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.bridge, "link", "set", port, state]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns(ns, f).join().expect("thread in namespace")
}

/// keepalived in the foreground in `ns`, stopped (it and its VRRP child)
/// on drop.
struct Keepalived {
    child: Child,
    vrrp_pid: PathBuf,
    log: PathBuf,
}

impl Keepalived {
    fn start(ns: &str, dir: &Path, name: &str, conf: &str) -> Self {
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).expect("write keepalived.conf");
        let log = dir.join(format!("{name}.log"));
        let vrrp_pid = dir.join(format!("{name}.vrrp.pid"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "keepalived",
                "-n",
                "-l",
                "-D",
                "--vrrp",
                "-f",
            ])
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.join(format!("{name}.pid")))
            .arg("-r")
            .arg(&vrrp_pid)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            ))
            .spawn()
            .expect("start keepalived");
        Self {
            child,
            vrrp_pid,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let vrrp: Option<i32> = std::fs::read_to_string(&self.vrrp_pid)
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        let parent = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = kill(parent, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pid) = vrrp {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn keepalived_available() -> bool {
    Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The member: answers every connection with one line.
fn serve_member(ns: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    in_netns(ns, move || {
        let listener = TcpListener::bind(("0.0.0.0", PORT)).expect("member listens");
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    use std::io::Write;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(b"member\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

fn config(admin: &str, with_service: bool) -> serde_json::Value {
    let mut config = serde_json::json!({
        "listen": {"admin": format!("{admin}:8443")},
        "zone": [{"name": "example.test"}],
        "monitor": [{"name": "m", "type": "tcp", "port": PORT, "interval_ms": 500, "timeout_ms": 400}],
        "pool": [
            {"name": "p", "fqdn": "p.example.test", "monitor": "m",
             "member": [{"name": "m1", "address": "198.51.100.30"}]},
        ],
    });
    if with_service {
        config["virtual_service"] =
            serde_json::json!([{"name": "vs", "address": VIP, "port": PORT, "pool": "p"}]);
    }
    config
}

fn to_toml(json: &serde_json::Value) -> toml::Table {
    toml::Table::try_from(json).expect("config as TOML")
}

fn settings(source: &str, peer: &str, priority: u8) -> serde_json::Value {
    serde_json::json!({
        "interface": "eth0",
        "source_v4": source,
        "peer_v4": peer,
        "virtual_router_id": 51,
        "priority": priority,
    })
}

/// One attempt of the client: when it started, and whether the member
/// answered through the VIP.
type Attempts = Arc<Mutex<Vec<(Instant, bool)>>>;

/// Open a new connection to the VIP every 20 ms until `stop` (at most
/// 90 s, at most 5,000 attempts).
fn client_loop(ns: &str, attempts: Attempts, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    in_netns(ns, move || {
        let vip = SocketAddr::new(VIP.parse().expect("ip"), PORT);
        let deadline = Instant::now() + Duration::from_secs(90);
        for _ in 0..5_000 {
            if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                break;
            }
            let started = Instant::now();
            let ok = TcpStream::connect_timeout(&vip, Duration::from_millis(300))
                .and_then(|mut stream| {
                    stream.set_read_timeout(Some(Duration::from_millis(700)))?;
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer)?;
                    Ok(answer == "member\n")
                })
                .unwrap_or(false);
            attempts.lock().expect("attempts").push((started, ok));
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Failed attempts from `from` to the first success after `moved`, and the
/// attempts after that success up to `until`, with how many of them failed.
fn tally(
    attempts: &Attempts,
    from: Instant,
    moved: Instant,
    until: Instant,
) -> (usize, usize, usize) {
    let attempts = attempts.lock().expect("attempts").clone();
    let first_ok = attempts
        .iter()
        .find(|(at, ok)| *at >= moved && *ok)
        .map(|(at, _)| *at)
        .expect("a success after the move");
    let failed_during = attempts
        .iter()
        .filter(|(at, ok)| *at >= from && *at <= first_ok && !ok)
        .count();
    let after: Vec<bool> = attempts
        .iter()
        .filter(|(at, _)| *at > first_ok && *at < until)
        .map(|(_, ok)| *ok)
        .collect();
    let failed_after = after.iter().filter(|ok| !**ok).count();
    (failed_during, after.len(), failed_after)
}

/// Wait until `n` attempts after now have succeeded.
fn wait_for_successes(attempts: &Attempts, n: usize) {
    let since = Instant::now();
    wait_for("the client to be served", MOVE_BOUND, || {
        attempts
            .lock()
            .expect("attempts")
            .iter()
            .filter(|(at, ok)| *at >= since && *ok)
            .count()
            >= n
    });
}

fn vrrp_state(admin: &AdminClient) -> serde_json::Value {
    admin.json("/api/v1/ha/vrrp")
}

fn instance_state(view: &serde_json::Value) -> Option<String> {
    view["instances"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == "poolgate_v4")
        .and_then(|i| i["state"].as_str())
        .map(str::to_owned)
}

/// Log in to the appliance at `address` from the client namespace; the
/// client is only used from threads in that namespace.
struct Admin {
    ns: String,
    client: Option<AdminClient>,
}

impl Admin {
    fn setup(ns: &str, address: &str) -> Self {
        let address: SocketAddr = format!("{address}:8443").parse().expect("addr");
        let client = in_ns(ns, move || AdminClient::setup_and_login(address, PASSWORD));
        Self {
            ns: ns.to_owned(),
            client: Some(client),
        }
    }

    fn login(ns: &str, address: &str) -> Self {
        let address: SocketAddr = format!("{address}:8443").parse().expect("addr");
        let client = in_ns(ns, move || {
            let mut client = AdminClient::new(address);
            wait_for("the admin listener", Duration::from_secs(20), || {
                TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
            });
            client.login("admin", PASSWORD);
            client
        });
        Self {
            ns: ns.to_owned(),
            client: Some(client),
        }
    }

    fn with<T: Send + 'static>(&mut self, f: impl FnOnce(&AdminClient) -> T + Send + 'static) -> T {
        let client = self.client.take().expect("client");
        let (client, out) = in_ns(&self.ns, move || {
            let out = f(&client);
            (client, out)
        });
        self.client = Some(client);
        out
    }

    fn state(&mut self) -> Option<String> {
        self.with(|admin| instance_state(&vrrp_state(admin)))
    }
}

fn wait_for_state(admin: &mut Admin, what: &str, state: &str) {
    let started = Instant::now();
    loop {
        if admin.state().as_deref() == Some(state) {
            return;
        }
        assert!(
            started.elapsed() < MOVE_BOUND,
            "timed out waiting for {what} to be {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until `ns` holds the VIP; how long it took from `since`.
fn wait_for_vip(lab: &Lab, ns: &str, since: Instant) -> Duration {
    loop {
        if lab.holds_vip(ns) {
            return since.elapsed();
        }
        assert!(since.elapsed() < MOVE_BOUND, "the VIP did not move to {ns}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_vip_moves_to_the_peer_when_poolgate_dies_hangs_or_loses_its_link() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    if !keepalived_available() {
        eprintln!("skipped: keepalived is not installed (tests/install-deps installs it)");
        return;
    }
    let lab = Lab::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));
    let member = serve_member(&lab.members, Arc::clone(&stop));

    // Both appliances: no VIP yet, VRRP settings, then the virtual service.
    let data_a = dir.path().join("a");
    let data_b = dir.path().join("b");
    let mut poolgate_a = Poolgate::start_in_netns(&lab.a, &data_a, &to_toml(&config(A, false)));
    let poolgate_b = Poolgate::start_in_netns(&lab.b, &data_b, &to_toml(&config(B, false)));
    poolgate_a.listening(&["admin"]);
    poolgate_b.listening(&["admin"]);
    let mut admin_a = Admin::setup(&lab.client, A);
    let mut admin_b = Admin::setup(&lab.client, B);

    // A field-named refusal first: nothing stored.
    let refused = admin_a.with(|admin| {
        let mut bad = settings(A, A, 255);
        bad["virtual_router_id"] = 0.into();
        let response = admin.put("/api/v1/ha/vrrp", &bad);
        (response.status().as_u16(), response.text().expect("body"))
    });
    assert_eq!(refused.0, 422, "{}", refused.1);
    for field in ["peer_v4", "priority", "virtual_router_id"] {
        assert!(refused.1.contains(field), "{field}: {}", refused.1);
    }

    let mut confs = Vec::new();
    for (admin, own, peer, priority) in [(&mut admin_a, A, B, 150), (&mut admin_b, B, A, 100)] {
        let own_config = config(own, true);
        let view = admin.with(move |admin| {
            let put = admin.put("/api/v1/ha/vrrp", &settings(own, peer, priority));
            assert_eq!(
                put.status().as_u16(),
                200,
                "{}",
                put.text().unwrap_or_default()
            );
            let config = admin.put("/api/v1/config", &own_config);
            assert_eq!(
                config.status().as_u16(),
                200,
                "{}",
                config.text().unwrap_or_default()
            );
            vrrp_state(admin)
        });
        assert_eq!(view["addresses_held_by"], "keepalived", "{view}");
        let conf = view["keepalived_conf"]
            .as_str()
            .expect("rendered")
            .to_owned();
        assert!(
            conf.contains(&format!("        {VIP}/32 dev eth0\n")),
            "{conf}"
        );
        assert!(
            conf.contains(&format!("    unicast_src_ip {own}\n")),
            "{conf}"
        );
        confs.push(conf);
    }
    // A VIP of a family VRRP has no source and peer for: 422 naming it.
    let mut v6 = config(A, true);
    v6["virtual_service"]
        .as_array_mut()
        .expect("services")
        .push(serde_json::json!({"name": "vs6", "address": "2001:db8:100::20", "port": PORT, "pool": "p"}));
    let refused = admin_a.with(move |admin| {
        let response = admin.put("/api/v1/config", &v6);
        (response.status().as_u16(), response.text().expect("body"))
    });
    assert_eq!(refused.0, 422, "{}", refused.1);
    assert!(
        refused.1.contains("virtual_service[1].address"),
        "{}",
        refused.1
    );
    assert!(refused.1.contains("source_v6"), "{}", refused.1);

    // poolgate added no address: keepalived holds them.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!lab.holds_vip(&lab.a) && !lab.holds_vip(&lab.b));

    let keepalived_a = Keepalived::start(&lab.a, dir.path(), "a", &confs[0]);
    let keepalived_b = Keepalived::start(&lab.b, dir.path(), "b", &confs[1]);
    let started = Instant::now();
    let first = wait_for_vip(&lab, &lab.a, started);
    eprintln!(
        "A became master {} ms after keepalived started",
        first.as_millis()
    );
    assert!(!lab.holds_vip(&lab.b), "one master");
    wait_for_state(&mut admin_a, "A", "MASTER");
    wait_for_state(&mut admin_b, "B", "BACKUP");

    let attempts: Attempts = Arc::default();
    let client = client_loop(&lab.client, Arc::clone(&attempts), Arc::clone(&stop));
    wait_for_successes(&attempts, 20);

    // 1. A's poolgate is killed.
    let killed = Instant::now();
    poolgate_a.signal(Signal::SIGKILL);
    let _ = poolgate_a.wait_timeout(Duration::from_secs(10));
    let moved = wait_for_vip(&lab, &lab.b, killed);
    let moved_at = Instant::now();
    wait_for("A to give up the VIP", MOVE_BOUND, || {
        !lab.holds_vip(&lab.a)
    });
    wait_for_successes(&attempts, 50);
    let (failed, after, failed_after) = tally(&attempts, killed, moved_at, Instant::now());
    eprintln!(
        "kill -9 of A's poolgate: the VIP moved to B in {} ms; {failed} attempts failed during the failover, {after} after it ({failed_after} failed)",
        moved.as_millis()
    );
    assert_eq!(failed_after, 0, "every attempt after the failover succeeds");
    wait_for_state(&mut admin_b, "B", "MASTER");
    let events_b = admin_b.with(|admin| admin.get("/api/v1/events").text().expect("events"));
    assert!(
        events_b.contains("VRRP poolgate_v4 is MASTER (was BACKUP)"),
        "{events_b}"
    );

    // A's poolgate comes back: A stands by, B keeps the VIP (no failback).
    let poolgate_a = Poolgate::start_in_netns(&lab.a, &data_a, &to_toml(&config(A, true)));
    poolgate_a.listening(&["admin"]);
    let mut admin_a = Admin::login(&lab.client, A);
    wait_for_state(&mut admin_a, "A", "BACKUP");
    assert!(
        lab.holds_vip(&lab.b) && !lab.holds_vip(&lab.a),
        "no failback"
    );

    // 2. The active's (B's) cable is pulled.
    let pulled = Instant::now();
    lab.link("pb", false);
    let moved = wait_for_vip(&lab, &lab.a, pulled);
    let moved_at = Instant::now();
    wait_for_successes(&attempts, 50);
    let (failed, after, failed_after) = tally(&attempts, pulled, moved_at, Instant::now());
    eprintln!(
        "B's link down: the VIP moved to A in {} ms; {failed} attempts failed during the failover, {after} after it ({failed_after} failed)",
        moved.as_millis()
    );
    assert_eq!(failed_after, 0, "every attempt after the failover succeeds");
    wait_for_state(&mut admin_a, "A", "MASTER");
    let events_a = admin_a.with(|admin| admin.get("/api/v1/events").text().expect("events"));
    assert!(events_a.contains("took them over"), "{events_a}");

    // B's cable back: B stands by, A keeps the VIP.
    lab.link("pb", true);
    wait_for_state(&mut admin_b, "B", "BACKUP");
    assert!(
        lab.holds_vip(&lab.a) && !lab.holds_vip(&lab.b),
        "no failback"
    );

    // 3. A's poolgate hangs (SIGSTOP): its health file goes stale too.
    let hung = Instant::now();
    poolgate_a.signal(Signal::SIGSTOP);
    let moved = wait_for_vip(&lab, &lab.b, hung);
    let moved_at = Instant::now();
    wait_for("A to give up the VIP", MOVE_BOUND, || {
        !lab.holds_vip(&lab.a)
    });
    wait_for_successes(&attempts, 50);
    let (failed, after, failed_after) = tally(&attempts, hung, moved_at, Instant::now());
    eprintln!(
        "A's poolgate hung (SIGSTOP): the VIP moved to B in {} ms; {failed} attempts failed during the failover, {after} after it ({failed_after} failed)",
        moved.as_millis()
    );
    assert_eq!(failed_after, 0, "every attempt after the failover succeeds");
    poolgate_a.signal(Signal::SIGCONT);
    wait_for_state(&mut admin_a, "A", "BACKUP");
    wait_for_state(&mut admin_b, "B", "MASTER");

    // 4. An intruder with the pair's router id and a higher priority,
    // advertising to both: ignored. Its own address for the VIP list sits
    // on a veth pair of its own, so it cannot answer for the VIP itself.
    ip(&[
        "-n",
        &lab.intruder,
        "link",
        "add",
        "d0",
        "type",
        "veth",
        "peer",
        "name",
        "d1",
    ]);
    for link in ["d0", "d1"] {
        ip(&["-n", &lab.intruder, "link", "set", link, "up"]);
    }
    let intruder_conf = confs[0]
        .lines()
        .filter(|line| !line.contains("vrrp_notify_fifo"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            &format!("unicast_src_ip {A}"),
            &format!("unicast_src_ip {INTRUDER}"),
        )
        .replace(
            &format!("        {B}\n"),
            &format!("        {A}\n        {B}\n"),
        )
        .replace("priority 150", "priority 254")
        .replace(&format!("{VIP}/32 dev eth0"), &format!("{VIP}/32 dev d0"))
        .replace("    track_script {\n        poolgate_serving\n    }\n", "")
        .replace("nopreempt", "");
    let refused = format!("unicast source address {INTRUDER} not a unicast peer");
    let intruder = Keepalived::start(&lab.intruder, dir.path(), "intruder", &intruder_conf);
    wait_for("the intruder to advertise as master", MOVE_BOUND, || {
        intruder.log().contains("Entering MASTER STATE")
    });
    // (a) keepalived alone: its adverts reach B and are refused for their
    // source (`check_unicast_src`).
    let intruding = Instant::now();
    wait_for("B to refuse the intruder's adverts", MOVE_BOUND, || {
        keepalived_b.log().matches(&refused).count() >= 3
    });
    // (b) with the nftables rule poolgate renders: VRRP from anyone but
    // the peer is dropped before keepalived sees it, and the pair still
    // hears each other (A stays backup).
    let nft = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nft {
        eprintln!(
            "nft not installed (tests/install-deps installs it): the nftables rule is not tested"
        );
    }
    if nft {
        for (ns, admin) in [(&lab.a, &mut admin_a), (&lab.b, &mut admin_b)] {
            let rule = admin.with(|admin| {
                vrrp_state(admin)["nftables"]
                    .as_str()
                    .expect("nftables")
                    .to_owned()
            });
            let file = dir.path().join(format!("{ns}.nft"));
            std::fs::write(&file, rule).expect("write rule");
            ip(&[
                "netns",
                "exec",
                ns,
                "nft",
                "-f",
                file.to_str().expect("utf-8"),
            ]);
        }
        let before = keepalived_b.log().matches(&refused).count();
        std::thread::sleep(Duration::from_secs(5));
        let counted = ip(&[
            "netns",
            "exec",
            &lab.b,
            "nft",
            "list",
            "table",
            "inet",
            "poolgate_vrrp",
        ]);
        let dropped: u64 = counted
            .split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("a drop counter");
        let after = keepalived_b.log().matches(&refused).count();
        eprintln!("nftables on B dropped {dropped} VRRP packets from the intruder");
        assert!(dropped >= 3, "{counted}");
        assert!(
            after <= before + 1,
            "keepalived still sees the intruder: {before} -> {after}"
        );
    }
    assert!(
        lab.holds_vip(&lab.b),
        "B keeps the VIP:\n{}",
        keepalived_b.log()
    );
    assert!(!lab.holds_vip(&lab.a), "A stays backup");
    assert_eq!(admin_b.state().as_deref(), Some("MASTER"));
    assert_eq!(admin_a.state().as_deref(), Some("BACKUP"));
    let (_, after, failed_after) = tally(&attempts, intruding, intruding, Instant::now());
    eprintln!(
        "intruder at priority 254: ignored; {after} attempts meanwhile, {failed_after} failed"
    );
    assert_eq!(failed_after, 0);
    drop(intruder);

    // VRRP off on A (keepalived stopped first): poolgate holds the VIP
    // itself again.
    drop(keepalived_a);
    drop(keepalived_b);
    let view = admin_a.with(|admin| {
        let response = admin.delete("/api/v1/ha/vrrp");
        assert_eq!(response.status().as_u16(), 200);
        vrrp_state(admin)
    });
    assert_eq!(view["addresses_held_by"], "poolgate", "{view}");
    assert!(view["settings"].is_null(), "{view}");
    wait_for("A's poolgate to add the VIP itself", MOVE_BOUND, || {
        lab.holds_vip(&lab.a)
    });
    wait_for_successes(&attempts, 5);

    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    member.join().expect("member thread");
    let total = attempts.lock().expect("attempts").len();
    eprintln!("{total} connection attempts in all");
}
