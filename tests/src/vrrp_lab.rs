//! The lab of the VRRP and HA failover tests (root only): six network
//! namespaces on one bridge (a seventh): appliances A (198.51.100.11) and B
//! (.12), a member (.30), a client (.1) and an intruder (.66); a real
//! keepalived per appliance, the member's one-line TCP service, and the
//! client's bounded loop of new connections to the VIP (198.51.100.20),
//! with the tally of failed attempts around a move. Everything is removed
//! on drop, however the test ends.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{in_netns, ip};
use crate::{AdminClient, wait_for};

pub const PORT: u16 = 15070;
pub const VIP: &str = "198.51.100.20";
pub const A: &str = "198.51.100.11";
pub const B: &str = "198.51.100.12";
pub const INTRUDER: &str = "198.51.100.66";
pub const PASSWORD: &str = "vrrp-test-password";
/// The most any move may take before the test calls it broken.
pub const MOVE_BOUND: Duration = Duration::from_secs(15);

/// The namespaces of one run, removed on drop.
#[derive(Debug)]
pub struct Lab {
    pub a: String,
    pub b: String,
    pub members: String,
    pub client: String,
    pub intruder: String,
    pub bridge: String,
}

impl Lab {
    pub fn all(&self) -> [&String; 6] {
        [
            &self.a,
            &self.b,
            &self.members,
            &self.client,
            &self.intruder,
            &self.bridge,
        ]
    }

    /// The namespaces, named `prefix` (two letters) and a letter each,
    /// with the process id and a random tag.
    pub fn new(prefix: &str) -> Self {
        let tag = format!("{}{:04x}", std::process::id(), rand::random::<u16>());
        let lab = Self {
            a: format!("{prefix}a{tag}"),
            b: format!("{prefix}b{tag}"),
            members: format!("{prefix}m{tag}"),
            client: format!("{prefix}c{tag}"),
            intruder: format!("{prefix}i{tag}"),
            bridge: format!("{prefix}r{tag}"),
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

    pub fn holds_vip(&self, ns: &str) -> bool {
        ip(&["-n", ns, "-br", "addr", "show", "dev", "eth0"]).contains(&format!("{VIP}/32"))
    }

    /// Pull (or plug back) the cable of `port` at the bridge.
    pub fn link(&self, port: &str, up: bool) {
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

pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns(ns, f).join().expect("thread in namespace")
}

/// keepalived in the foreground in `ns`, stopped (it and its VRRP child)
/// on drop.
#[derive(Debug)]
pub struct Keepalived {
    pub child: Child,
    pub vrrp_pid: PathBuf,
    pub log: PathBuf,
}

impl Keepalived {
    pub fn start(ns: &str, dir: &Path, name: &str, conf: &str) -> Self {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // A failed test shows what keepalived saw.
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
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

pub fn keepalived_available() -> bool {
    Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The member: answers every connection with one line.
pub fn serve_member(ns: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
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

pub fn config(admin: &str, with_service: bool) -> serde_json::Value {
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

pub fn to_toml(json: &serde_json::Value) -> toml::Table {
    toml::Table::try_from(json).expect("config as TOML")
}

pub fn settings(source: &str, peer: &str, priority: u8) -> serde_json::Value {
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
pub type Attempts = Arc<Mutex<Vec<(Instant, bool)>>>;

/// Open a new connection to the VIP every 20 ms until `stop` (at most
/// 90 s, at most 5,000 attempts).
pub fn client_loop(
    ns: &str,
    attempts: Attempts,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
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
pub fn tally(
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
pub fn wait_for_successes(attempts: &Attempts, n: usize) {
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

pub fn vrrp_state(admin: &AdminClient) -> serde_json::Value {
    admin.json("/api/v1/ha/vrrp")
}

pub fn instance_state(view: &serde_json::Value) -> Option<String> {
    view["instances"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == "poolgate_v4")
        .and_then(|i| i["state"].as_str())
        .map(str::to_owned)
}

/// Log in to the appliance at `address` from the client namespace; the
/// client is only used from threads in that namespace.
#[derive(Debug)]
pub struct Admin {
    pub ns: String,
    pub client: Option<AdminClient>,
}

impl Admin {
    pub fn setup(ns: &str, address: &str) -> Self {
        let address: SocketAddr = format!("{address}:8443").parse().expect("addr");
        let client = in_ns(ns, move || AdminClient::setup_and_login(address, PASSWORD));
        Self {
            ns: ns.to_owned(),
            client: Some(client),
        }
    }

    pub fn login(ns: &str, address: &str) -> Self {
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

    pub fn with<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&AdminClient) -> T + Send + 'static,
    ) -> T {
        let client = self.client.take().expect("client");
        let (client, out) = in_ns(&self.ns, move || {
            let out = f(&client);
            (client, out)
        });
        self.client = Some(client);
        out
    }

    pub fn state(&mut self) -> Option<String> {
        self.with(|admin| instance_state(&vrrp_state(admin)))
    }
}

pub fn wait_for_state(admin: &mut Admin, what: &str, state: &str) {
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

/// One failover as a client sees it: wait until `to` holds the VIP (since
/// `since`, when it was provoked) and `served` more attempts succeeded, then
/// print how long the move took and what the client loop saw as `what`, and
/// check every attempt after the move succeeded. Returns the move's time.
pub fn measure_move(
    lab: &Lab,
    attempts: &Attempts,
    to: &str,
    since: Instant,
    served: usize,
    what: &str,
) -> Duration {
    let moved = wait_for_vip(lab, to, since);
    let moved_at = Instant::now();
    wait_for_successes(attempts, served);
    let (failed, after, failed_after) = tally(attempts, since, moved_at, Instant::now());
    eprintln!(
        "{what}: the VIP moved in {} ms; {failed} attempts failed during the failover, {after} after it ({failed_after} failed)",
        moved.as_millis()
    );
    assert_eq!(failed_after, 0, "every attempt after the failover succeeds");
    moved
}

/// Wait until `ns` holds the VIP; how long it took from `since`.
pub fn wait_for_vip(lab: &Lab, ns: &str, since: Instant) -> Duration {
    loop {
        if lab.holds_vip(ns) {
            return since.elapsed();
        }
        assert!(since.elapsed() < MOVE_BOUND, "the VIP did not move to {ns}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
