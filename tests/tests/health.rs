//! Health monitors end to end: the real binary probes real listeners that
//! the test starts on 127.0.0.1x (and a real SIP peer, sipp), and the test
//! observes transitions through the event log, read concurrently from the
//! running process's data directory.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolgate::store::{Event, Store};
use poolgate_e2e::Poolgate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// A TCP server task on a member address; stops (and closes the port) on drop.
struct Server {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Accept and hand each connection to `serve`.
    async fn start<F, Fut>(address: SocketAddr, serve: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(address)
            .await
            .expect("bind member listener");
        let address = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream));
            }
        });
        Self { address, task }
    }

    /// Accept and close at once: enough for a `tcp` monitor.
    async fn tcp(address: SocketAddr) -> Self {
        Self::start(address, |_stream| async {}).await
    }

    /// Answer every request with `status` and `body`.
    async fn http(address: SocketAddr, status: &'static str, body: &'static str) -> Self {
        Self::start(address, move |stream| http_once(stream, status, body)).await
    }

    async fn tls(
        address: SocketAddr,
        acceptor: tokio_rustls::TlsAcceptor,
        body: &'static str,
    ) -> Self {
        Self::start(address, move |stream| {
            let acceptor = acceptor.clone();
            async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    http_once(stream, "200 OK", body).await;
                }
            }
        })
        .await
    }

    /// SIP over TLS (sipp as packaged has no TLS): answer each OPTIONS 200 OK.
    async fn sip_tls(address: SocketAddr, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::start(address, move |stream| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let Some(request) = read_head(&mut stream).await else {
                    return;
                };
                let mut response = String::from("SIP/2.0 200 OK\r\n");
                for line in request.lines() {
                    let name = line
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
                        response.push_str(line);
                        response.push_str("\r\n");
                    }
                }
                response.push_str("Content-Length: 0\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        })
        .await
    }

    /// Accept, then say nothing: a TLS handshake never completes.
    async fn silent(address: SocketAddr) -> Self {
        Self::start(address, |stream| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        })
        .await
    }
}

/// Read a request head (up to the blank line), or `None` if the peer left.
async fn read_head<S>(stream: &mut S) -> Option<String>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() > 16 * 1024 {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8(request).ok()
}

async fn http_once<S>(mut stream: S, status: &str, body: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if read_head(&mut stream).await.is_none() {
        return;
    }
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A sipp UAS answering every OPTIONS with `code phrase`; killed on drop.
struct Sipp {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sipp {
    fn start(address: SocketAddr, transport: &str, code: u16, phrase: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let scenario = dir.path().join("options.xml");
        std::fs::write(
            &scenario,
            format!(
                r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options responder">
  <recv request="OPTIONS" />
  <send>
    <![CDATA[
      SIP/2.0 {code} {phrase}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
            ),
        )
        .expect("write scenario");
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", &address.ip().to_string()])
            .args(["-p", &address.port().to_string()])
            .args(["-t", transport, "-nostdin"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir(dir.path())
            .spawn()
            .expect("start sipp (Debian package sip-tester)");
        let sipp = Self { child, _dir: dir };
        sipp.wait_ready(address, transport);
        sipp
    }

    /// sipp takes a moment to bind; a probe before that would be refused.
    fn wait_ready(&self, address: SocketAddr, transport: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ready = if transport == "t1" {
                std::net::TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok()
            } else {
                options_answered(address)
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sipp never answered on {address} ({transport})");
    }
}

/// Whether an OPTIONS sent over UDP gets any answer within 200 ms.
fn options_answered(address: SocketAddr) -> bool {
    let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let local = socket.local_addr().expect("local addr");
    let request = format!(
        "OPTIONS sip:{address} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKready\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@{local}>;tag=1\r\nTo: <sip:{address}>\r\n\
         Call-ID: ready-{}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        local.port()
    );
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buffer = [0u8; 2048];
    socket.send_to(request.as_bytes(), address).is_ok() && socket.recv(&mut buffer).is_ok()
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on `ip` (TCP and UDP).
fn free_port(ip: &str) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((ip, 0)).expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

fn address(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("socket address")
}

/// A config with one pool per (name, member address, monitor table).
fn config(pools: &[(&str, &str, toml::Table)]) -> toml::Table {
    let mut text = String::from(
        "[listen]\nadmin = \"127.0.0.1:0\"\n\n[dns]\nfail_open = false\n\n[[zone]]\nname = \"test\"\n",
    );
    for (name, _, monitor) in pools {
        let mut monitor = monitor.clone();
        monitor.insert("name".into(), (*name).into());
        text.push_str(&format!(
            "\n[[monitor]]\n{}",
            toml::to_string(&monitor).expect("toml")
        ));
    }
    for (name, member, _) in pools {
        text.push_str(&format!(
            "\n[[pool]]\nname = \"{name}\"\nfqdn = \"{name}.test\"\nmonitor = \"{name}\"\n\n[[pool.member]]\nname = \"{name}-fe\"\naddress = \"{member}\"\n"
        ));
    }
    text.parse().expect("test config is TOML")
}

fn monitor(text: &str) -> toml::Table {
    text.parse().expect("monitor TOML")
}

/// Poll the event log until a health event for `pool` after `after`
/// satisfies `want`; returns it.
fn wait_event(store: &Store, pool: &str, want: &str, timeout: Duration) -> Event {
    let deadline = Instant::now() + timeout;
    loop {
        let events = store.events_after(0, 10_000).expect("read events");
        if let Some(event) = events.into_iter().find(|e| {
            e.kind == "health" && e.pool.as_deref() == Some(pool) && e.message.contains(want)
        }) {
            return event;
        }
        if Instant::now() > deadline {
            let all: Vec<String> = store
                .events_after(0, 10_000)
                .expect("read events")
                .into_iter()
                .map(|e| format!("{:?} {:?} {}", e.pool, e.member, e.message))
                .collect();
            panic!(
                "no health event {want:?} for {pool} within {timeout:?}; events:\n{}",
                all.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start(config: &toml::Table) -> (tempfile::TempDir, Poolgate, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let poolgate = Poolgate::start_with_config(&data, config, &[]);
    poolgate.listening(&["admin"]);
    // WAL: a second reader beside the running process.
    let store = Store::open(&data).expect("open the running store");
    (dir, poolgate, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_goes_down_and_comes_back() {
    let member = address("127.0.0.11", free_port("127.0.0.11"));
    let (interval, timeout, rise, fall) = (200u64, 100u64, 2u64, 3u64);
    let config = config(&[(
        "web",
        "127.0.0.11",
        monitor(&format!(
            "type = \"tcp\"\nport = {}\ninterval_ms = {interval}\ntimeout_ms = {timeout}\nrise = {rise}\nfall = {fall}",
            member.port()
        )),
    )]);
    let server = Server::tcp(member).await;
    let (_dir, mut poolgate, store) = start(&config);
    let up = wait_event(&store, "web", "unknown -> up", Duration::from_secs(5));
    assert_eq!(up.member.as_deref(), Some("web-fe"));

    drop(server);
    let stopped = Instant::now();
    let down = wait_event(&store, "web", "up -> down", Duration::from_secs(10));
    let took = stopped.elapsed();
    assert_eq!(down.message, "web: up -> down (connection refused)");
    let detail = down.detail.expect("detail");
    assert_eq!(detail["monitor"], "web");
    assert_eq!(detail["from"], "up");
    assert_eq!(detail["to"], "down");
    assert_eq!(detail["reason"], "connection refused");
    let bound = Duration::from_millis(interval * fall + timeout);
    // Slack for a loaded 2-core machine (process start-up, scheduling).
    let slack = Duration::from_millis(1000);
    assert!(
        took <= bound + slack,
        "down after {took:?}, bound {bound:?} + {slack:?}"
    );

    let _server = Server::tcp(member).await;
    let restarted = Instant::now();
    let back = wait_event(&store, "web", "down -> up", Duration::from_secs(10));
    let took = restarted.elapsed();
    assert_eq!(back.message, "web: down -> up");
    let bound = Duration::from_millis(interval * rise);
    assert!(
        took <= bound + slack,
        "up after {took:?}, bound {bound:?} + {slack:?}"
    );

    poolgate.terminate(Duration::from_secs(10));
}

/// A CA and a leaf certificate for `ip`, valid or long expired.
fn certificates(ip: &str, expired: bool) -> (String, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "poolgate test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf = rcgen::CertificateParams::new(vec![ip.to_owned()]).expect("leaf params");
    if expired {
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf_cert.der().clone()], key)
    .expect("server config");
    (
        ca_cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_explained_in_plain_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = |name: &str, pem: &str| -> String {
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, pem).expect("write CA");
        path.to_str().expect("utf-8").to_owned()
    };
    let common = "interval_ms = 300\ntimeout_ms = 150\nrise = 2\nfall = 2";

    // Nothing listens.
    let refused = address("127.0.0.21", free_port("127.0.0.21"));
    // A UDP socket that never answers: no ICMP, no response.
    let mute_udp = UdpSocket::bind(address("127.0.0.22", 0))
        .await
        .expect("bind udp");
    let mute = mute_udp.local_addr().expect("addr");
    // TLS with an expired certificate.
    let (expired_ca, expired_acceptor) = certificates("127.0.0.23", true);
    let expired = Server::tls(address("127.0.0.23", 0), expired_acceptor, "ok").await;
    // HTTP answering 503.
    let unavailable = Server::http(address("127.0.0.24", 0), "503 Service Unavailable", "").await;
    // A real SIP peer answering 486.
    let busy = address("127.0.0.25", free_port("127.0.0.25"));
    let _busy = Sipp::start(busy, "u1", 486, "Busy Here");
    // A TCP peer that never speaks TLS.
    let silent = Server::silent(address("127.0.0.26", 0)).await;
    // HTTPS that is fine but lacks the expected body.
    let (good_ca, good_acceptor) = certificates("127.0.0.27", false);
    let wrong_body = Server::tls(address("127.0.0.27", 0), good_acceptor, "maintenance").await;
    // A listener whose accept queue is full (backlog 0, one connection
    // waiting, never accepted): the kernel drops further SYNs, as on a
    // member too busy to accept, and connecting times out.
    let backlog_socket = tokio::net::TcpSocket::new_v4().expect("socket");
    backlog_socket
        .bind(address("127.0.0.28", 0))
        .expect("bind backlog listener");
    let backlog = backlog_socket.local_addr().expect("addr");
    let _backlog_listener = backlog_socket.listen(0).expect("listen");
    let _queued = std::net::TcpStream::connect_timeout(&backlog, Duration::from_secs(1))
        .expect("fill the accept queue");

    let config = config(&[
        (
            "backlog",
            "127.0.0.28",
            monitor(&format!(
                "type = \"tcp\"\nport = {}\n{common}",
                backlog.port()
            )),
        ),
        (
            "refused",
            "127.0.0.21",
            monitor(&format!(
                "type = \"tcp\"\nport = {}\n{common}",
                refused.port()
            )),
        ),
        (
            "mute",
            "127.0.0.22",
            monitor(&format!(
                "type = \"sip-options\"\nport = {}\n{common}",
                mute.port()
            )),
        ),
        (
            "expired",
            "127.0.0.23",
            monitor(&format!(
                "type = \"tls\"\nport = {}\nca_file = {:?}\n{common}",
                expired.address.port(),
                ca_path("expired", &expired_ca)
            )),
        ),
        (
            "unavailable",
            "127.0.0.24",
            monitor(&format!(
                "type = \"http\"\nport = {}\npath = \"/health\"\n{common}",
                unavailable.address.port()
            )),
        ),
        (
            "busy",
            "127.0.0.25",
            monitor(&format!(
                "type = \"sip-options\"\nport = {}\n{common}",
                busy.port()
            )),
        ),
        (
            "silent",
            "127.0.0.26",
            monitor(&format!(
                "type = \"tls\"\nport = {}\ntls_verify = false\n{common}",
                silent.address.port()
            )),
        ),
        (
            "body",
            "127.0.0.27",
            monitor(&format!(
                "type = \"https\"\nport = {}\nca_file = {:?}\nbody_contains = \"all good\"\n{common}",
                wrong_body.address.port(),
                ca_path("good", &good_ca)
            )),
        ),
    ]);
    let (_data, mut poolgate, store) = start(&config);
    let wait = Duration::from_secs(10);
    for (pool, reason) in [
        ("refused", "connection refused"),
        ("backlog", "timeout after 150 ms"),
        ("mute", "timeout after 150 ms"),
        ("expired", "TLS: certificate expired on 2021-01-01"),
        ("unavailable", "HTTP 503"),
        ("busy", "SIP 486 Busy Here"),
        ("silent", "timeout after 150 ms"),
        ("body", "HTTP 200: body does not contain \"all good\""),
    ] {
        let event = wait_event(&store, pool, "unknown -> down", wait);
        assert_eq!(event.message, format!("{pool}: unknown -> down ({reason})"));
        assert_eq!(event.member.as_deref(), Some(format!("{pool}-fe").as_str()));
    }
    poolgate.terminate(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_peers_are_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = "interval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 2";
    let sip_udp = address("127.0.0.31", free_port("127.0.0.31"));
    let _sipp_udp = Sipp::start(sip_udp, "u1", 200, "OK");
    let sip_tcp = address("127.0.0.32", free_port("127.0.0.32"));
    let _sipp_tcp = Sipp::start(sip_tcp, "t1", 200, "OK");
    let (ca, acceptor) = certificates("127.0.0.33", false);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("write CA");
    let https = Server::tls(address("127.0.0.33", 0), acceptor, "status: all good").await;
    let http = Server::http(address("127.0.0.34", 0), "204 No Content", "").await;
    let (sip_ca, sip_acceptor) = certificates("127.0.0.35", false);
    let sip_ca_file = dir.path().join("sip-ca.pem");
    std::fs::write(&sip_ca_file, sip_ca).expect("write CA");
    let sip_tls = Server::sip_tls(address("127.0.0.35", 0), sip_acceptor).await;

    let config = config(&[
        (
            "sip-udp",
            "127.0.0.31",
            monitor(&format!(
                "type = \"sip-options\"\nport = {}\n{common}",
                sip_udp.port()
            )),
        ),
        (
            "sip-tcp",
            "127.0.0.32",
            monitor(&format!(
                "type = \"sip-options\"\ntransport = \"tcp\"\nport = {}\n{common}",
                sip_tcp.port()
            )),
        ),
        (
            "https",
            "127.0.0.33",
            monitor(&format!(
                "type = \"https\"\nport = {}\nca_file = {:?}\nbody_contains = \"all good\"\nhost = \"fe.test\"\n{common}",
                https.address.port(),
                ca_file.to_str().expect("utf-8")
            )),
        ),
        (
            "http",
            "127.0.0.34",
            monitor(&format!(
                "type = \"http\"\nport = {}\nexpect_status = [200, 204]\n{common}",
                http.address.port()
            )),
        ),
        (
            "sip-tls",
            "127.0.0.35",
            monitor(&format!(
                "type = \"sip-options\"\ntransport = \"tls\"\nport = {}\nca_file = {:?}\n{common}",
                sip_tls.address.port(),
                sip_ca_file.to_str().expect("utf-8")
            )),
        ),
    ]);
    let (_data, mut poolgate, store) = start(&config);
    for pool in ["sip-udp", "sip-tcp", "sip-tls", "https", "http"] {
        let event = wait_event(&store, pool, "unknown -> up", Duration::from_secs(10));
        assert_eq!(event.message, format!("{pool}: unknown -> up"));
    }
    // Nothing went down meanwhile.
    let events = store.events_after(0, 1000).expect("events");
    assert!(
        events.iter().all(|e| !e.message.contains("-> down")),
        "{events:?}"
    );
    poolgate.terminate(Duration::from_secs(10));
}

/// A member listener that greets each connection with `name` and closes.
async fn greeter(address: SocketAddr, name: &'static str) -> Server {
    Server::start(address, move |mut stream| async move {
        let _ = stream.write_all(name.as_bytes()).await;
    })
    .await
}

/// What the member behind `vip` says on a new connection.
async fn greeting(vip: SocketAddr) -> String {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(vip))
            .await
            .expect("connect in time")
            .expect("connect to the VIP");
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text)).await;
    text
}

/// Poll (bounded) until `check` holds on what `probe` returns.
fn until<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = probe();
        if check(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}: last saw {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dual_stack_member_is_answered_probed_connected_and_drained_on_both_families() {
    use poolgate_e2e::dig::dig;
    use std::collections::BTreeSet;
    let port = free_port("127.0.0.11");
    let vip = address("[::1]", free_port("::1"));
    let text = format!(
        "[listen]\nadmin = \"127.0.0.1:0\"\ndns = [\"127.0.0.1:0\"]\n\n[dns]\nfail_open = false\n\n\
         [[zone]]\nname = \"test\"\n\n\
         [[monitor]]\nname = \"fe\"\ntype = \"tcp\"\nport = {port}\ninterval_ms = 200\ntimeout_ms = 200\nrise = 1\nfall = 1\n\n\
         [[pool]]\nname = \"pool\"\nfqdn = \"pool.test\"\nmonitor = \"fe\"\n\n\
         [[pool.member]]\nname = \"fe01\"\nfqdn = \"fe01.test\"\naddresses = [\"127.0.0.11\", \"::1\"]\n\n\
         [[pool.member]]\nname = \"fe02\"\naddress = \"127.0.0.12\"\n\n\
         [[virtual_service]]\nname = \"web6\"\naddress = \"::1\"\nport = {}\nmember_port = {port}\npool = \"pool\"\nmonitor = \"fe\"\nscheduler = \"round-robin\"\n",
        vip.port()
    );
    let config: toml::Table = text.parse().expect("TOML");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _fe01_v4 = rt.block_on(greeter(address("127.0.0.11", port), "fe01 over IPv4"));
    let fe01_v6 = rt.block_on(greeter(address("[::1]", port), "fe01 over IPv6"));
    let _fe02 = rt.block_on(greeter(address("127.0.0.12", port), "fe02 over IPv4"));
    let (_dir, mut poolgate, store) = start(&config);
    let dns = poolgate.listening(&["dns-udp"])["dns-udp"][0];
    let client = poolgate_e2e::AdminClient::setup_and_login(
        poolgate.address("admin"),
        "correct horse battery staple",
    );
    let answers =
        |name: &str, rtype: &str| -> BTreeSet<String> { dig(dns, &[name, rtype]).data(rtype) };
    let set =
        |items: &[&str]| -> BTreeSet<String> { items.iter().map(|s| (*s).to_owned()).collect() };

    // A and AAAA: each address answered once its own probe says up.
    until(
        "A of the pool",
        || answers("pool.test", "A"),
        |a| *a == set(&["127.0.0.11", "127.0.0.12"]),
    );
    until(
        "AAAA of the pool",
        || answers("pool.test", "AAAA"),
        |a| *a == set(&["::1"]),
    );
    assert_eq!(answers("fe01.test", "AAAA"), set(&["::1"]));
    // An address not yet probed counts up under the monitor's start state, so
    // the AAAA can come before the IPv6 probe's first result: wait for that.
    let fe01 = until(
        "fe01's IPv6 address probed up",
        || client.members()[0].clone(),
        |m| m["addresses"][1]["health"]["fe"]["state"] == "up",
    );
    assert_eq!(fe01["addresses"][1]["address"], "::1", "{fe01}");

    // The IPv6 VIP connects to fe01's IPv6 address and, fe02 having none, to its IPv4 one.
    let seen: BTreeSet<String> = (0..6).map(|_| rt.block_on(greeting(vip))).collect();
    assert_eq!(seen, set(&["fe01 over IPv6", "fe02 over IPv4"]));

    // Draining takes both of fe01's addresses out of the pool's answers.
    let drain = client.post(
        "/api/v1/pools/pool/members/fe01/drain",
        &serde_json::json!({}),
    );
    assert_eq!(drain.status().as_u16(), 200);
    until(
        "A after the drain",
        || answers("pool.test", "A"),
        |a| *a == set(&["127.0.0.12"]),
    );
    assert!(answers("pool.test", "AAAA").is_empty());
    for _ in 0..4 {
        assert_eq!(
            rt.block_on(greeting(vip)),
            "fe02 over IPv4",
            "a drained member gets no new connection"
        );
    }
    let enable = client.post(
        "/api/v1/pools/pool/members/fe01/enable",
        &serde_json::json!({}),
    );
    assert_eq!(enable.status().as_u16(), 200);
    until(
        "AAAA after enable",
        || answers("pool.test", "AAAA"),
        |a| *a == set(&["::1"]),
    );

    // fe01's IPv6 address stops answering: its own probe says so, the AAAA
    // goes, the A stays, and the VIP connects to fe01 over IPv4.
    rt.block_on(async { drop(fe01_v6) });
    let down = wait_event(
        &store,
        "pool",
        "fe on ::1: up -> down",
        Duration::from_secs(10),
    );
    assert_eq!(down.member.as_deref(), Some("fe01"));
    assert_eq!(down.detail.expect("detail")["address"], "::1");
    until(
        "AAAA with IPv6 down",
        || answers("pool.test", "AAAA"),
        BTreeSet::is_empty,
    );
    assert_eq!(
        answers("pool.test", "A"),
        set(&["127.0.0.11", "127.0.0.12"])
    );
    let fe01 = client.members()[0].clone();
    assert_eq!(
        fe01["health"]["fe"]["state"], "up",
        "up while one address is: {fe01}"
    );
    assert_eq!(
        fe01["addresses"][1]["health"]["fe"]["state"], "down",
        "{fe01}"
    );
    let seen: BTreeSet<String> = (0..6).map(|_| rt.block_on(greeting(vip))).collect();
    assert_eq!(seen, set(&["fe01 over IPv4", "fe02 over IPv4"]));
    poolgate.terminate(Duration::from_secs(10));
}
