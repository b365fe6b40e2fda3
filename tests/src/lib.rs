//! Harness for end-to-end tests: starts the real `poolgate` binary on
//! loopback, reads its `listening` log lines to learn the bound addresses,
//! and stops it (SIGTERM, or SIGKILL on drop) so no process outlives a test.
//!
//! The binary is `POOLGATE_BIN` if set, else `target/<profile>/poolgate`
//! beside the test executable (`make test` builds it first).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Path of the poolgate binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("POOLGATE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/poolgate
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("poolgate"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(
        path.exists(),
        "{} not found: build it first with `cargo build -p poolgate` (make test does)",
        path.display()
    );
    path
}

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A TCP and UDP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a free TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The loopback example with every listener on port 0 and each virtual
/// service port on a free port, so tests never collide.
pub fn loopback_example() -> toml::Table {
    let text =
        std::fs::read_to_string(examples_dir().join("lync-pool.toml")).expect("example readable");
    let mut config: toml::Table = text.parse().expect("example is TOML");
    let listen = config
        .get_mut("listen")
        .and_then(toml::Value::as_table_mut)
        .expect("[listen]");
    for (key, value) in listen.iter_mut() {
        match value {
            toml::Value::String(_) => *value = toml::Value::String("127.0.0.1:0".into()),
            toml::Value::Array(items) => {
                for item in items {
                    *item = toml::Value::String("127.0.0.1:0".into());
                }
            }
            _ => panic!("unexpected listen.{key}"),
        }
    }
    if let Some(services) = config
        .get_mut("virtual_service")
        .and_then(toml::Value::as_array_mut)
    {
        for service in services {
            let service = service.as_table_mut().expect("table");
            service.insert("port".into(), i64::from(free_port()).into());
            if let Some(extra) = service
                .get_mut("extra_ports")
                .and_then(toml::Value::as_array_mut)
            {
                for port in extra {
                    match port {
                        // `{ port = 80, member_port = 8080 }`: the member
                        // port stays; only the listening port must be free.
                        toml::Value::Table(map) => {
                            map.insert("port".into(), i64::from(free_port()).into());
                        }
                        _ => *port = i64::from(free_port()).into(),
                    }
                }
            }
        }
    }
    config
}

#[derive(Debug, Default)]
struct Log {
    lines: Vec<String>,
    closed: bool,
}

/// A running poolgate process.
#[derive(Debug)]
pub struct Poolgate {
    child: Child,
    log: Arc<(Mutex<Log>, Condvar)>,
    pub data_dir: PathBuf,
}

impl Poolgate {
    /// Start `poolgate run` with `args` after `run`.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(data_dir, args, &[])
    }

    /// `start` with extra environment variables.
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_command(Command::new(binary()), data_dir, args, env)
    }

    /// `start_with_config` inside network namespace `netns` (`ip netns
    /// exec`, which execs poolgate itself, so the child is poolgate).
    pub fn start_in_netns(netns: &str, data_dir: &Path, config: &toml::Table) -> Self {
        Self::start_in_netns_with(netns, data_dir, config, &["--manage-addresses"])
    }

    /// `start_with_config` inside network namespace `netns`, with `extra`
    /// arguments after the config.
    pub fn start_in_netns_with(
        netns: &str,
        data_dir: &Path,
        config: &toml::Table,
        extra: &[&str],
    ) -> Self {
        let file = data_dir.with_extension("toml");
        std::fs::write(&file, toml::to_string(config).expect("serialise config"))
            .expect("write config");
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(binary());
        let mut args = vec!["--config", file.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Self::start_command(command, data_dir, &args, &[])
    }

    /// `poolgate run` inside network namespace `netns` from what the data
    /// directory stores (no config file), with `extra` arguments.
    pub fn start_in_netns_stored(netns: &str, data_dir: &Path, extra: &[&str]) -> Self {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(binary());
        Self::start_command(command, data_dir, extra, &[])
    }

    fn start_command(
        mut command: Command,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = command
            .envs(env.iter().copied())
            .arg("run")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start poolgate");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("POOLGATE_TEST_LOG").is_some() {
                    eprintln!("poolgate| {line}");
                }
                let (lock, cond) = &*writer;
                lock.lock().expect("log lock").lines.push(line);
                cond.notify_all();
            }
            let (lock, cond) = &*writer;
            lock.lock().expect("log lock").closed = true;
            cond.notify_all();
        });
        Self {
            child,
            log,
            data_dir: data_dir.to_owned(),
        }
    }

    /// Write `config` to the data dir's parent and start with `--config`.
    pub fn start_with_config(data_dir: &Path, config: &toml::Table, extra: &[&str]) -> Self {
        Self::start_with_config_env(data_dir, config, extra, &[])
    }

    /// `start_with_config` with extra environment variables.
    pub fn start_with_config_env(
        data_dir: &Path,
        config: &toml::Table,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let file = data_dir.with_extension("toml");
        std::fs::write(&file, toml::to_string(config).expect("serialise config"))
            .expect("write config");
        let mut args = vec!["--config", file.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Self::start_with_env(data_dir, &args, env)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().expect("log lock").lines.clone()
    }

    /// Wait until some log line satisfies `predicate`; panics with the log on timeout.
    pub fn wait_for_line<T>(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.log;
        let mut log = lock.lock().expect("log lock");
        let mut seen = 0;
        loop {
            for line in &log.lines[seen..] {
                if let Some(found) = predicate(line) {
                    return found;
                }
            }
            seen = log.lines.len();
            let now = Instant::now();
            if log.closed || now >= deadline {
                panic!(
                    "poolgate log never matched (exited: {}):\n{}",
                    log.closed,
                    log.lines.join("\n")
                );
            }
            log = cond.wait_timeout(log, deadline - now).expect("log lock").0;
        }
    }

    /// Bound addresses by service, once `services` have all logged `listening`.
    pub fn listening(&self, services: &[&str]) -> HashMap<String, Vec<SocketAddr>> {
        let mut found: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        self.wait_for_line(Duration::from_secs(30), |line| {
            if let Some((service, address)) = parse_listening(line) {
                found.entry(service).or_default().push(address);
            }
            services
                .iter()
                .all(|s| found.contains_key(*s))
                .then_some(())
        });
        found
    }

    /// The first bound address of `service`.
    pub fn address(&self, service: &str) -> SocketAddr {
        self.listening(&[service])[service][0]
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal poolgate");
    }

    /// Wait for exit, or `None` on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; panics if it does not exit within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "poolgate did not exit within {timeout:?}:\n{}",
                self.log().join("\n")
            )
        })
    }
}

impl Drop for Poolgate {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `… listening service="dns-udp" address=127.0.0.1:5353` → (service, address).
pub fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains(" listening ") {
        return None;
    }
    let service = line.split("service=").nth(1)?;
    let service = service.trim_start_matches('"');
    let service = &service[..service.find(['"', ' '])?];
    let address = line.split("address=").nth(1)?.split_whitespace().next()?;
    Some((service.to_owned(), address.trim_matches('"').parse().ok()?))
}

/// Run the binary to completion with `args`, feeding `stdin`.
pub fn poolgate_cli(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start poolgate");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("poolgate output")
}

/// A blocking HTTPS GET to the admin listener without credentials (the
/// certificate is the appliance's self-signed one): status and body.
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let response = AdminClient::new(address).get(path);
    let status = response.status().as_u16();
    (status, response.text().expect("body"))
}

/// An HTTPS client for the admin API that keeps the session cookie and sends
/// the CSRF token on state-changing requests once logged in.
#[derive(Debug)]
pub struct AdminClient {
    pub base: String,
    pub http: reqwest::blocking::Client,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
}

impl AdminClient {
    pub fn new(address: SocketAddr) -> Self {
        let http = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("HTTP client");
        Self {
            base: format!("https://{address}"),
            http,
            csrf: None,
            bearer: None,
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(csrf) = &self.csrf {
            builder = builder.header("X-CSRF-Token", csrf);
        }
        if let Some(token) = &self.bearer {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .expect("GET")
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .expect("POST")
    }

    pub fn put(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        self.request(reqwest::Method::PUT, path)
            .json(body)
            .send()
            .expect("PUT")
    }

    pub fn delete(&self, path: &str) -> reqwest::blocking::Response {
        self.request(reqwest::Method::DELETE, path)
            .send()
            .expect("DELETE")
    }

    /// GET and parse JSON, asserting 200.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path);
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().expect("JSON body")
    }

    /// Log in and remember the CSRF token.
    pub fn login(&mut self, username: &str, password: &str) {
        let response = self.post(
            "/api/v1/session",
            &serde_json::json!({"username": username, "password": password}),
        );
        assert_eq!(response.status().as_u16(), 200, "login");
        let body: serde_json::Value = response.json().expect("JSON");
        self.csrf = body["csrf_token"].as_str().map(str::to_owned);
    }

    /// The members of the first pool, as `GET /api/v1/status` shows them.
    pub fn members(&self) -> Vec<serde_json::Value> {
        self.json("/api/v1/status")["pools"][0]["members"]
            .as_array()
            .expect("members")
            .clone()
    }

    /// First-boot setup plus login: a client ready for protected routes.
    pub fn setup_and_login(address: SocketAddr, password: &str) -> Self {
        let mut client = Self::new(address);
        let response = client.post("/api/v1/setup", &serde_json::json!({"password": password}));
        assert_eq!(response.status().as_u16(), 201, "setup");
        client.login("admin", password);
        client
    }
}

/// Poll `check` until it holds; panics naming `what` after `timeout`.
/// Returns how long it took.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// A peer process (sipp, simulated members) killed when the test ends.
pub use sipp::Peer;

/// Real sipp runs for the SIP tests.
pub mod sipp {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A peer process killed when the test ends, however it ends.
    #[derive(Debug)]
    pub struct Peer(pub Child);

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    pub fn sipp_available() -> bool {
        let found = Command::new("sipp")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("sipp not installed (Debian package sip-tester); skipping");
        }
        found
    }

    /// One call of `scenario` as `user` against `target`; success and the
    /// error log sipp wrote beside the scenario.
    pub fn run_sipp(
        scenario: &Path,
        transport: &str,
        user: &str,
        target: SocketAddr,
    ) -> (bool, String) {
        let dir = scenario.parent().expect("scenario dir");
        let mut peer = Peer(
            Command::new("sipp")
                .current_dir(dir)
                .args(["-sf", scenario.to_str().expect("utf-8")])
                .args(["-t", transport, "-m", "1", "-s", user])
                .args(["-i", "127.0.0.1", "-p", &super::free_port().to_string()])
                .args([
                    "-timeout",
                    "10s",
                    "-timeout_error",
                    "-nostdin",
                    "-trace_err",
                ])
                .arg(target.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start sipp"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = peer.0.try_wait().expect("sipp status") {
                break status;
            }
            assert!(Instant::now() < deadline, "sipp did not finish");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut errors = String::new();
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            if entry.file_name().to_string_lossy().contains("_errors.log") {
                errors.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        (status.success(), errors)
    }
}

/// Real `dig` runs for the DNS tests.
pub mod dig {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::process::Command;

    /// What dig printed, section by section.
    #[derive(Debug, Default)]
    pub struct Dig {
        pub status: String,
        pub flags: BTreeSet<String>,
        /// (name, ttl, type, data)
        pub answer: Vec<(String, u32, String, String)>,
        pub authority: Vec<(String, u32, String, String)>,
        pub additional: Vec<(String, u32, String, String)>,
        /// The flags of the reply's OPT record (`do`), if it has one.
        pub edns_flags: Option<BTreeSet<String>>,
        pub raw: String,
    }

    impl Dig {
        pub fn data(&self, rtype: &str) -> BTreeSet<String> {
            self.answer
                .iter()
                .filter(|(_, _, t, _)| t == rtype)
                .map(|(_, _, _, data)| data.clone())
                .collect()
        }
    }

    /// Run real `dig` against `server` (Debian package dnsutils).
    pub fn dig(server: SocketAddr, args: &[&str]) -> Dig {
        let output = Command::new("dig")
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string()])
            .args(["+norecurse", "+time=3", "+tries=1", "+nocookie"])
            .args(args)
            .output()
            .expect("dig runs (Debian package dnsutils)");
        let raw = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut dig = Dig {
            raw: raw.clone(),
            ..Dig::default()
        };
        let mut section = "";
        for line in raw.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                dig.status = rest.split(',').next().unwrap_or_default().to_owned();
            }
            if let Some(rest) = line.strip_prefix(";; flags: ") {
                dig.flags = rest
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
            }
            if let Some(rest) = line.strip_prefix("; EDNS: ") {
                // "; EDNS: version: 0, flags: do; udp: 1232"
                let flags = rest
                    .split("flags:")
                    .nth(1)
                    .and_then(|flags| flags.split(';').next())
                    .unwrap_or_default();
                dig.edns_flags = Some(flags.split_whitespace().map(str::to_owned).collect());
            }
            if line.starts_with(";; ANSWER SECTION") {
                section = "answer";
            } else if line.starts_with(";; AUTHORITY SECTION") {
                section = "authority";
            } else if line.starts_with(";; ADDITIONAL SECTION") {
                section = "additional";
            } else if line.starts_with(";;") || line.trim().is_empty() {
                if line.trim().is_empty() {
                    section = "";
                }
            } else if !line.starts_with(';') && !section.is_empty() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() >= 5 {
                    let record = (
                        fields[0].to_owned(),
                        fields[1].parse().unwrap_or(u32::MAX),
                        fields[3].to_owned(),
                        fields[4..].join(" "),
                    );
                    match section {
                        "answer" => dig.answer.push(record),
                        "additional" => dig.additional.push(record),
                        _ => dig.authority.push(record),
                    }
                }
            }
        }
        dig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        let line = "2026-01-01T00:00:00Z  INFO listening service=\"admin\" address=127.0.0.1:8443";
        assert_eq!(
            parse_listening(line),
            Some(("admin".to_owned(), "127.0.0.1:8443".parse().expect("addr")))
        );
        assert_eq!(parse_listening("INFO Ready"), None);
    }
}

/// Upgrades on a fake appliance disk: plain files stand in for the root
/// slots, a directory for the ESP, and a file for the kernel command line.
/// The binary under test (built with `test-upgrade-keys`) trusts the key
/// written by [`upgrade::write_keys`] through `POOLGATE_TEST_UPGRADE_KEYS`.
pub mod upgrade {
    use std::path::{Path, PathBuf};

    use ed25519_dalek::SigningKey;
    use poolgate::license::document;
    use poolgate::system::bundle::{self, Manifest, PRODUCT, describe, write_bundle};

    /// Larger than the body limit of JSON routes, so an upload is streamed.
    pub const SLOT_SIZE: usize = 4 << 20;
    /// Newer than the binary under test (the workspace version).
    pub const NEXT: &str = "99.0.0";
    /// The kernel image every test bundle carries.
    pub const UKI: &[u8] = b"MZ new kernel";

    /// Slots `root-a.img` (running, filled with `A`) and `root-b.img`, an
    /// ESP with a UKI for each, and a command line booted from slot a, all
    /// in `dir`. Returns the file `--system-layout` takes.
    pub fn fake_layout(dir: &Path) -> PathBuf {
        let path = |name: &str| dir.join(name);
        std::fs::write(path("root-a.img"), vec![b'A'; SLOT_SIZE]).expect("slot a");
        std::fs::write(path("root-b.img"), vec![b'B'; SLOT_SIZE]).expect("slot b");
        std::fs::create_dir_all(path("esp/EFI/Linux")).expect("esp");
        std::fs::write(path("esp/EFI/Linux/poolgate-a.efi"), "kernel a").expect("uki a");
        std::fs::write(path("esp/EFI/Linux/poolgate-b.efi"), "kernel b").expect("uki b");
        std::fs::write(path("cmdline"), "quiet root=PARTLABEL=root-a ro\n").expect("cmdline");
        let layout = format!(
            "root_a = {:?}\nroot_b = {:?}\nesp = {:?}\ncmdline = {:?}\n",
            path("root-a.img"),
            path("root-b.img"),
            path("esp"),
            path("cmdline")
        );
        std::fs::write(path("layout.toml"), layout).expect("layout");
        path("layout.toml")
    }

    /// The file `POOLGATE_TEST_UPGRADE_KEYS` names, trusting `key`.
    pub fn write_keys(path: &Path, key: &SigningKey) {
        std::fs::write(path, document::key_hex(&key.verifying_key())).expect("keys");
    }

    /// The root image every test bundle carries: fits a slot, and is not
    /// one repeated byte, so a misplaced block shows.
    pub fn root_image() -> Vec<u8> {
        (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect()
    }

    /// A bundle of [`NEXT`] signed with `key`, as `make image` would make
    /// it, after `edit` changed its manifest.
    pub fn write_test_bundle(path: &Path, key: &SigningKey, edit: impl FnOnce(&mut Manifest)) {
        let root = root_image();
        let mut manifest = Manifest {
            product: PRODUCT.into(),
            version: NEXT.into(),
            min_from_version: "0.1.0".into(),
            components: vec![
                describe(bundle::ROOT, &root[..]).expect("hash"),
                describe(bundle::UKI, UKI).expect("hash"),
            ],
        };
        edit(&mut manifest);
        let file = std::fs::File::create(path).expect("create");
        write_bundle(file, &manifest, key, &mut [&mut &root[..], &mut &UKI[..]]).expect("write");
    }

    /// A copy of the bundle at `good` with one byte of its root image
    /// flipped: signed and well-formed, but its hash does not match.
    pub fn write_tampered(good: &Path, path: &Path) {
        let mut bytes = std::fs::read(good).expect("read bundle");
        let at = bytes.len() - 1000;
        bytes[at] ^= 0x20;
        std::fs::write(path, bytes).expect("write");
    }
}

/// Raise this process's soft limit on open files towards `want` (never past
/// the hard limit); poolgate started afterwards inherits it. Returns the
/// soft limit now in force, so a test can size its connection counts.
pub fn raise_open_files(want: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let target = want.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

/// The appliance's network on a fake host: a system layout whose
/// `[network]` writes systemd-networkd's and chrony's files, the host name
/// and the time zone link into the test's directory and reloads nothing.
pub mod network {
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use crate::{AdminClient, Poolgate, loopback_example, upgrade::fake_layout};

    /// The admin password [`Host::start`] sets.
    pub const PASSWORD: &str = "correct horse battery staple";

    #[derive(Debug)]
    pub struct Host {
        pub dir: tempfile::TempDir,
        /// The file `--system-layout` takes.
        pub layout: PathBuf,
    }

    impl Host {
        /// A fake host whose zoneinfo has `Europe/Berlin`; with `request`,
        /// poolgate applies through the root step's request file.
        pub fn new(request: bool) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let layout = fake_layout(dir.path());
            let zoneinfo = dir.path().join("zoneinfo");
            std::fs::create_dir_all(zoneinfo.join("Europe")).expect("zoneinfo");
            std::fs::write(zoneinfo.join("Europe/Berlin"), "TZif").expect("zone");
            let mut text = std::fs::read_to_string(&layout).expect("layout");
            text.push_str(&format!(
                "\n[network]\nnetworkd_dir = {:?}\nchrony_sources = {:?}\nhostname_file = {:?}\nlocaltime = {:?}\nzoneinfo = {:?}\nreload = false\n",
                dir.path().join("network"),
                dir.path().join("chrony/poolgate.sources"),
                dir.path().join("hostname"),
                dir.path().join("localtime"),
                zoneinfo,
            ));
            if request {
                text.push_str(&format!(
                    "request = {:?}\n",
                    dir.path().join("var/network/network-request")
                ));
            }
            std::fs::write(&layout, text).expect("layout");
            Self { dir, layout }
        }

        /// Start poolgate on this host with a confirmation window of
        /// `window_s` seconds, set up (once) and logged in as `admin`.
        pub fn start(&self, window_s: u64) -> (Poolgate, AdminClient) {
            let window = window_s.to_string();
            let poolgate = Poolgate::start_with_config_env(
                &self.dir.path().join("var"),
                &loopback_example(),
                &[
                    "--system-layout",
                    self.layout.to_str().expect("utf-8"),
                    "--confirm-timeout-s",
                    &window,
                ],
                &[],
            );
            let admin = poolgate.address("admin");
            let mut client = AdminClient::new(admin);
            // Set up once; after a restart it is done already.
            let setup = client.post("/api/v1/setup", &json!({"password": PASSWORD}));
            assert!(
                setup.status().is_success() || setup.status().as_u16() == 409,
                "setup: {}",
                setup.status()
            );
            client.login("admin", PASSWORD);
            (poolgate, client)
        }

        pub fn network_dir(&self) -> PathBuf {
            self.dir.path().join("network")
        }

        /// The networkd files poolgate wrote, by name.
        pub fn files(&self) -> Vec<(String, String)> {
            let mut files: Vec<_> = std::fs::read_dir(self.network_dir())
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| {
                            let text = std::fs::read_to_string(e.path()).expect("read");
                            (e.file_name().to_string_lossy().into_owned(), text)
                        })
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files
        }

        pub fn file(&self, name: &str) -> String {
            std::fs::read_to_string(self.network_dir().join(name)).unwrap_or_default()
        }

        /// A file of the host outside the networkd directory (`hostname`,
        /// `chrony/poolgate.sources`); empty when there is none.
        pub fn host_file(&self, name: impl AsRef<Path>) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
        }
    }
}

pub mod vrrp_lab;

/// Network namespaces a test makes for itself (root only), and `ip` to
/// build them. Every namespace made here is removed on drop, however the
/// test ends.
pub mod netns {
    use std::os::fd::AsFd;
    use std::process::Command;

    /// Run `ip` with `args`; panics with its stderr if it fails. Its stdout.
    pub fn ip(args: &[&str]) -> String {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Run `f` on a thread inside namespace `ns`: sockets it opens, and
    /// processes and threads it starts, live there.
    pub fn in_netns<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// A network namespace of the test's own, named `prefix` plus the
    /// process id and a random tag, with `lo` up; removed on drop.
    #[derive(Debug)]
    pub struct Netns(pub String);

    impl Netns {
        pub fn new(prefix: &str) -> Self {
            let name = format!(
                "{prefix}{}{:04x}",
                std::process::id(),
                rand::random::<u16>()
            );
            ip(&["netns", "add", &name]);
            let netns = Self(name);
            ip(&["-n", &netns.0, "link", "set", "lo", "up"]);
            netns
        }

        /// [`in_netns`], waited for; a panic in `f` is the caller's.
        pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            match in_netns(&self.0, f).join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
}
