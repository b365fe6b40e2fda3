//! Library-level tests of the proxy runtime: real sockets on loopback,
//! members on 127.0.0.11…, health and admin state pushed into a real
//! publisher (the monitors and the admin API are not needed for that).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{self, AdminState, Config};
use crate::state::{self, HealthStatus, Inputs, Update};

/// Bytes moved in each direction by the integrity test. The acceptance asks
/// for 1 GiB; `make test` runs a bounded 256 MiB per direction and engine so
/// it stays fast on a small CI machine. `POOLGATE_TEST_INTEGRITY_MIB=1024`
/// runs the full size.
fn integrity_bytes() -> usize {
    std::env::var("POOLGATE_TEST_INTEGRITY_MIB")
        .ok()
        .and_then(|mib| mib.parse::<usize>().ok())
        .unwrap_or(256)
        << 20
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn member_ip(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + n as u8))
}

/// A config with one pool of `weights.len()` members (fe01 on 127.0.0.11…)
/// and one service `web` on 127.0.0.1 with `ports`; `service` adds keys.
fn config_text(ports: &[u16], weights: &[u32], service: &str) -> String {
    let mut text = String::from(
        "[listen]\nadmin = \"127.0.0.1:0\"\n\n[[zone]]\nname = \"test\"\n\n\
         [[monitor]]\nname = \"web\"\ntype = \"tcp\"\nport = 443\n\n\
         [[pool]]\nname = \"pool\"\nfqdn = \"pool.test\"\nmonitor = \"web\"\n",
    );
    for (i, weight) in weights.iter().enumerate() {
        text += &format!(
            "\n[[pool.member]]\nname = \"fe{:02}\"\naddress = \"{}\"\nweight = {weight}\n",
            i + 1,
            member_ip(i)
        );
    }
    let extra: Vec<String> = ports[1..].iter().map(u16::to_string).collect();
    text += &format!(
        "\n[[virtual_service]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = {}\nextra_ports = [{}]\npool = \"pool\"\n{service}\n",
        ports[0],
        extra.join(", ")
    );
    text
}

fn parse(text: &str) -> Config {
    config::from_toml(text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

struct Proxy {
    publisher: PublisherHandle,
    config: Config,
    version: i64,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    vip: SocketAddr,
}

impl Proxy {
    async fn start(text: &str, mode: RelayMode) -> Self {
        Self::start_on(Workers::current(), text, mode).await
    }

    async fn start_on(workers: Workers, text: &str, mode: RelayMode) -> Self {
        let config = parse(text);
        let vip = SocketAddr::new(
            config.virtual_services[0].address,
            config.virtual_services[0].ports[0],
        );
        let shutdown = CancellationToken::new();
        let inputs = Inputs::new(Arc::new(config.clone()), 1, BTreeMap::new());
        let (publisher, _) = state::spawn(inputs, shutdown.child_token());
        let task = tokio::spawn(serve(
            workers,
            publisher.clone(),
            EventLog::for_tests().0,
            mode,
            shutdown.child_token(),
            Duration::from_secs(1),
            Arc::default(),
        ));
        let proxy = Self {
            publisher,
            config,
            version: 1,
            shutdown,
            task,
            vip,
        };
        proxy.wait_listening(vip).await;
        proxy
    }

    async fn wait_listening(&self, address: SocketAddr) {
        // Probing with bind, not connect, so no connection is proxied.
        // Generous: a loaded CI machine can take seconds to schedule it.
        for _ in 0..1000 {
            if std::net::TcpListener::bind(address).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("proxy never listened on {address}");
    }

    async fn reconfigure(&mut self, text: &str) {
        let new = parse(text);
        let diff = config::diff(Some(&self.config), &new);
        self.version += 1;
        self.publisher
            .apply(Update::Config {
                config: Arc::new(new.clone()),
                version: self.version,
                diff,
            })
            .await
            .expect("publisher runs");
        self.config = new;
    }

    async fn health(&self, member: &str, up: bool) {
        let state = if up { Health::Up } else { Health::Down };
        self.publisher
            .apply(Update::health_of(
                &self.config,
                ("pool".into(), member.into()),
                "web",
                HealthStatus {
                    state,
                    reason: None,
                    since: None,
                },
            ))
            .await
            .expect("publisher runs");
    }

    async fn admin(&self, member: &str, state: AdminState) {
        self.publisher
            .apply(Update::AdminState {
                member: ("pool".into(), member.into()),
                state,
            })
            .await
            .expect("publisher runs");
    }

    fn counters(&self, member: &str) -> Arc<MemberCounters> {
        let view = self.publisher.current();
        let pool = view.pool("pool").expect("pool");
        let member = pool
            .members
            .iter()
            .find(|m| m.name == member)
            .expect("member");
        Arc::clone(&member.counters)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// What member servers tell the test.
#[derive(Debug)]
enum Seen {
    /// Bytes received before EOF and their hash.
    Received { len: usize, hash: u64 },
    /// A read failed (a reset from the proxy).
    ReadError(io::ErrorKind),
}

/// A member: on each connection writes `NAME:PORT\n`, then obeys the first
/// byte from the client:
/// `e` echo until EOF, then FIN; `s` swallow until EOF and report;
/// `g` + u64 length: send that many pattern bytes, then FIN;
/// `h` FIN at once, then swallow until EOF and report; `r` reset at once;
/// `w` wait for EOF or an error and report.
struct Members {
    tasks: Vec<JoinHandle<()>>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn members(count: usize, ports: &[u16]) -> Members {
    members_on(&(0..count).collect::<Vec<_>>(), ports).await
}

async fn members_on(which: &[usize], ports: &[u16]) -> Members {
    let (tx, seen) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for &n in which {
        for &port in ports {
            let listener = TcpListener::bind(SocketAddr::new(member_ip(n), port))
                .await
                .expect("member bind");
            let name = format!("fe{:02}:{port}\n", n + 1);
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(member_connection(stream, name.clone(), tx.clone()));
                }
            }));
        }
    }
    Members { tasks, seen }
}

fn pattern() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..(1 << 20))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn send_pattern(stream: &mut (impl AsyncWriteExt + Unpin), len: usize) -> u64 {
    let block = pattern();
    let mut hasher = DefaultHasher::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        stream.write_all(&block[..n]).await.expect("send");
        hasher.write(&block[..n]);
        left -= n;
    }
    hasher.finish()
}

async fn swallow(stream: &mut (impl AsyncReadExt + Unpin)) -> io::Result<(usize, u64)> {
    let mut buffer = vec![0; 64 * 1024];
    let mut hasher = DefaultHasher::new();
    let mut len = 0;
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Ok((len, hasher.finish()));
        }
        hasher.write(&buffer[..n]);
        len += n;
    }
}

async fn member_connection(mut stream: TcpStream, name: String, tx: mpsc::UnboundedSender<Seen>) {
    if stream.write_all(name.as_bytes()).await.is_err() {
        return;
    }
    let mut command = [0_u8; 1];
    if stream.read_exact(&mut command).await.is_err() {
        return;
    }
    let report = |result: io::Result<(usize, u64)>| {
        let _ = tx.send(match result {
            Ok((len, hash)) => Seen::Received { len, hash },
            Err(error) => Seen::ReadError(error.kind()),
        });
    };
    match command[0] {
        b'e' => {
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            let _ = writer.shutdown().await;
        }
        b's' | b'w' => report(swallow(&mut stream).await),
        b'g' => {
            let mut len = [0_u8; 8];
            if stream.read_exact(&mut len).await.is_ok() {
                send_pattern(&mut stream, u64::from_be_bytes(len) as usize).await;
                let _ = stream.shutdown().await;
                // Hold the socket until the client closes, so the FIN is the
                // only thing the client sees.
                let _ = swallow(&mut stream).await;
            }
        }
        b'h' => {
            let _ = stream.shutdown().await;
            report(swallow(&mut stream).await);
        }
        b'r' => {
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        _ => {}
    }
}

/// Connect to `vip` (from `source` if given), read the member's greeting.
async fn open(vip: SocketAddr, source: Option<IpAddr>) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind source");
    }
    let mut stream = socket.connect(vip).await.expect("connect to VIP");
    let greeting = read_line(&mut stream).await;
    (stream, greeting)
}

async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0_u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == b'\n' => break,
            Ok(Ok(1)) => line.push(byte[0]),
            other => panic!("no greeting from the member: {other:?} after {line:?}"),
        }
    }
    String::from_utf8(line).expect("ascii")
}

fn member_of(greeting: &str) -> &str {
    greeting.split(':').next().expect("name")
}

async fn echo_once(stream: &mut TcpStream, what: &[u8]) {
    stream.write_all(what).await.expect("write");
    let mut back = vec![0; what.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, what);
}

async fn next_seen(members: &mut Members) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), members.seen.recv())
        .await
        .expect("member report in time")
        .expect("members run")
}

const MODES: [RelayMode; 3] = [RelayMode::Copy, RelayMode::Splice, RelayMode::Auto];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfers_keep_their_checksums_in_both_directions() {
    let integrity_bytes = integrity_bytes();
    for mode in MODES {
        let port = free_port();
        let mut m = members(1, &[port]).await;
        let proxy = Proxy::start(&config_text(&[port], &[1], ""), mode).await;

        // Client → member.
        let (mut stream, _) = open(proxy.vip, None).await;
        stream.write_all(b"s").await.expect("command");
        let sent = send_pattern(&mut stream, integrity_bytes).await;
        stream.shutdown().await.expect("FIN");
        match next_seen(&mut m).await {
            Seen::Received { len, hash } => {
                assert_eq!(len, integrity_bytes, "{mode:?}");
                assert_eq!(hash, sent, "{mode:?}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }

        // Member → client.
        let (mut stream, _) = open(proxy.vip, None).await;
        stream.write_all(b"g").await.expect("command");
        stream
            .write_all(&(integrity_bytes as u64).to_be_bytes())
            .await
            .expect("length");
        let (len, hash) = swallow(&mut stream).await.expect("receive");
        let mut expected = DefaultHasher::new();
        let block = pattern();
        let mut left = integrity_bytes;
        while left > 0 {
            let n = left.min(block.len());
            expected.write(&block[..n]);
            left -= n;
        }
        assert_eq!(len, integrity_bytes, "{mode:?}");
        assert_eq!(hash, expected.finish(), "{mode:?}");
        drop(stream);

        let counters = proxy.counters("fe01");
        assert!(counters.bytes_in.load(Ordering::Relaxed) >= integrity_bytes as u64);
        assert!(counters.bytes_out.load(Ordering::Relaxed) >= integrity_bytes as u64);
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_the_other_direction_open() {
    for mode in MODES {
        let port = free_port();
        let mut m = members(1, &[port]).await;
        let proxy = Proxy::start(&config_text(&[port], &[1], ""), mode).await;

        // The client closes its side first; the member's echo still arrives.
        let (mut stream, _) = open(proxy.vip, None).await;
        stream.write_all(b"ehello").await.expect("write");
        stream.shutdown().await.expect("FIN");
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(back, b"hello", "{mode:?}");

        // The member closes its side first; the client can still send.
        let (mut stream, _) = open(proxy.vip, None).await;
        stream.write_all(b"h").await.expect("command");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("FIN in time")
            .expect("read");
        assert!(rest.is_empty());
        stream
            .write_all(b"after the member's FIN")
            .await
            .expect("write");
        stream.shutdown().await.expect("FIN");
        match next_seen(&mut m).await {
            Seen::Received { len, .. } => assert_eq!(len, 22, "{mode:?}"),
            other => panic!("{mode:?}: {other:?}"),
        }
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_propagate_both_ways() {
    for mode in MODES {
        let port = free_port();
        let mut m = members(1, &[port]).await;
        let proxy = Proxy::start(&config_text(&[port], &[1], ""), mode).await;

        // The member resets: the client sees a reset, not a clean EOF.
        let (mut stream, _) = open(proxy.vip, None).await;
        stream.write_all(b"r").await.expect("command");
        let mut buffer = [0_u8; 16];
        let result = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("in time");
        assert_eq!(
            result.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset),
            "{mode:?}"
        );

        // The client resets: the member sees a reset.
        let (mut stream, _) = open(proxy.vip, None).await;
        stream.write_all(b"w").await.expect("command");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.set_zero_linger().expect("linger");
        drop(stream);
        match next_seen(&mut m).await {
            Seen::ReadError(kind) => assert_eq!(kind, io::ErrorKind::ConnectionReset, "{mode:?}"),
            other => panic!("{mode:?}: {other:?}"),
        }
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_ports_reach_the_same_port_on_the_member() {
    let ports = [free_port(), free_port(), free_port()];
    let _m = members(2, &ports).await;
    let proxy = Proxy::start(&config_text(&ports, &[1, 1], ""), RelayMode::default()).await;
    for &port in &ports[1..] {
        proxy
            .wait_listening(SocketAddr::new(proxy.vip.ip(), port))
            .await;
    }
    for &port in &ports {
        for _ in 0..2 {
            let (_, greeting) = open(SocketAddr::new(proxy.vip.ip(), port), None).await;
            assert_eq!(greeting.split(':').nth(1), Some(port.to_string().as_str()));
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_ports_reach_their_member_port_and_follow_a_reload() {
    let (port, extra) = (free_port(), free_port());
    let (first, second, extra_member) = (free_port(), free_port(), free_port());
    let _m = members(1, &[first, second, extra_member]).await;
    let text = |member_port: u16| {
        config_text(&[port], &[1], "").replacen(
            "extra_ports = []",
            &format!(
                "member_port = {member_port}\n\
                 extra_ports = [{{ port = {extra}, member_port = {extra_member} }}]"
            ),
            1,
        )
    };
    let mut proxy = Proxy::start(&text(first), RelayMode::default()).await;
    let extra_vip = SocketAddr::new(proxy.vip.ip(), extra);
    proxy.wait_listening(extra_vip).await;
    let (mut kept, greeting) = open(proxy.vip, None).await;
    assert_eq!(greeting, format!("fe01:{first}"));
    kept.write_all(b"e").await.expect("command");
    let (_, greeting) = open(extra_vip, None).await;
    assert_eq!(greeting, format!("fe01:{extra_member}"));
    // A new member port for the same listening port: the listener stays,
    // new connections go to the new port, the open one is left alone.
    proxy.reconfigure(&text(second)).await;
    let (_, greeting) = open(proxy.vip, None).await;
    assert_eq!(greeting, format!("fe01:{second}"));
    echo_once(&mut kept, b"still here").await;
    proxy.stop().await;
}

/// A member that reads a PROXY v2 header (16 fixed bytes, then its length)
/// and reports it with the bytes that came after it in the same read.
async fn proxy_member(address: SocketAddr) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind(address).await.expect("member bind");
    let bound = listener.local_addr().expect("bound");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut fixed = [0u8; 16];
                if stream.read_exact(&mut fixed).await.is_err() {
                    return;
                }
                let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
                let mut rest = vec![0u8; len];
                if stream.read_exact(&mut rest).await.is_err() {
                    return;
                }
                let mut header = fixed.to_vec();
                header.extend(rest);
                let _ = stream.write_all(b"ok\n").await;
                let mut line = [0u8; 5];
                if stream.read_exact(&mut line).await.is_ok() {
                    header.extend(line);
                }
                let _ = tx.send(header);
            });
        }
    });
    (bound, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_v2_starts_the_member_connection_with_the_clients_address() {
    let port = free_port();
    let (member, mut seen) = proxy_member(SocketAddr::new(member_ip(0), port)).await;
    let proxy = Proxy::start(
        &config_text(&[port], &[1], "send_proxy = \"v2\""),
        RelayMode::default(),
    )
    .await;
    assert_eq!(member.port(), port);
    // A client that speaks first: its bytes follow the header.
    let mut client = TcpStream::connect(proxy.vip).await.expect("connect");
    let me = client.local_addr().expect("local");
    client.write_all(b"hello").await.expect("write");
    assert_eq!(read_line(&mut client).await, "ok");
    let header = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("member reports")
        .expect("member runs");
    let mut want = proxy_v2::Header::new(me, proxy.vip).as_bytes().to_vec();
    want.extend(b"hello");
    assert_eq!(header, want);
    // A client that waits for the server first still gets its answer.
    let mut client = TcpStream::connect(proxy.vip).await.expect("connect");
    let me = client.local_addr().expect("local");
    assert_eq!(read_line(&mut client).await, "ok");
    client.write_all(b"later").await.expect("write");
    let header = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("member reports")
        .expect("member runs");
    let mut want = proxy_v2::Header::new(me, proxy.vip).as_bytes().to_vec();
    want.extend(b"later");
    assert_eq!(header, want);
    proxy.stop().await;
}

async fn distribution(scheduler: &str, weights: &[u32], hold: bool) -> BTreeMap<String, usize> {
    let port = free_port();
    let _m = members(weights.len(), &[port]).await;
    let service = format!("scheduler = \"{scheduler}\"");
    let proxy = Proxy::start(
        &config_text(&[port], weights, &service),
        RelayMode::default(),
    )
    .await;
    let mut counts = BTreeMap::new();
    let mut held = Vec::new();
    for i in 0..1000_u32 {
        // Source-hash needs many clients: 127.0.1.0/26 gives 50 addresses.
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i % 50) as u8 + 1));
        let (stream, greeting) = open(proxy.vip, Some(source)).await;
        *counts.entry(member_of(&greeting).to_owned()).or_insert(0) += 1;
        if hold {
            held.push(stream);
        }
    }
    drop(held);
    proxy.stop().await;
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scheduler_distributes_as_promised() {
    let rr = distribution("round-robin", &[1, 1, 1], false).await;
    assert_eq!(
        rr.values().copied().collect::<Vec<_>>(),
        vec![334, 333, 333]
    );

    let wrr = distribution("weighted-round-robin", &[3, 2, 1], false).await;
    assert_eq!(
        wrr.values().copied().collect::<Vec<_>>(),
        vec![500, 333, 167]
    );

    // Every connection stays open, so least-connections fills members in
    // proportion to their weights.
    let lc = distribution("least-connections", &[1, 1, 2], true).await;
    for (member, expected) in [("fe01", 250), ("fe02", 250), ("fe03", 500)] {
        let got = lc.get(member).copied().unwrap_or(0);
        assert!(got.abs_diff(expected) <= 2, "{lc:?}");
    }

    // Source-hash: each of the 50 client addresses always lands on one
    // member (20 connections each), and the addresses spread over members.
    let sh = distribution("source-hash", &[1, 1, 1], false).await;
    assert_eq!(sh.values().sum::<usize>(), 1000);
    assert!(sh.values().all(|count| count % 20 == 0), "{sh:?}");
    assert_eq!(sh.len(), 3, "{sh:?}");
    assert!(sh.values().all(|&count| count >= 100), "{sh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_moves_only_the_failed_members_clients() {
    let port = free_port();
    let _m = members(3, &[port]).await;
    let text = config_text(&[port], &[1, 1, 1], "scheduler = \"source-hash\"");
    let proxy = Proxy::start(&text, RelayMode::default()).await;
    let source = |i: u8| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 2, i + 1)));
    let mut before = Vec::new();
    for i in 0..60 {
        before.push(member_of(&open(proxy.vip, source(i)).await.1).to_owned());
    }
    proxy.health("fe02", false).await;
    for i in 0..60 {
        let after = member_of(&open(proxy.vip, source(i)).await.1).to_owned();
        if before[i as usize] == "fe02" {
            assert_ne!(after, "fe02");
        } else {
            assert_eq!(after, before[i as usize]);
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_holds_expires_and_moves_only_when_ineligible() {
    let port = free_port();
    let _m = members(3, &[port]).await;
    let text = config_text(
        &[port],
        &[1, 1, 1],
        "persistence = \"source-ip\"\npersistence_timeout_s = 1",
    );
    let proxy = Proxy::start(&text, RelayMode::default()).await;
    let a = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1)));
    let b = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 2)));

    // Holds: round-robin would rotate, persistence keeps each client put.
    let first_a = member_of(&open(proxy.vip, a).await.1).to_owned();
    let first_b = member_of(&open(proxy.vip, b).await.1).to_owned();
    assert_ne!(first_a, first_b);
    for _ in 0..10 {
        assert_eq!(member_of(&open(proxy.vip, a).await.1), first_a);
        assert_eq!(member_of(&open(proxy.vip, b).await.1), first_b);
    }

    // Moves only when its member becomes ineligible; the other client stays.
    proxy.health(&first_a, false).await;
    let moved_a = member_of(&open(proxy.vip, a).await.1).to_owned();
    assert_ne!(moved_a, first_a);
    assert_eq!(member_of(&open(proxy.vip, b).await.1), first_b);
    // And sticks to the new member even once the old one is back.
    proxy.health(&first_a, true).await;
    for _ in 0..5 {
        assert_eq!(member_of(&open(proxy.vip, a).await.1), moved_a);
    }

    // Expires: after the timeout round-robin decides again (three clients'
    // worth of picks happen in between, so at least one lands elsewhere).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let c = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 9)));
        seen.insert(member_of(&open(proxy.vip, c).await.1).to_owned());
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(seen.len() > 1, "an expired entry must not stick: {seen:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_member_keeps_its_connection_and_gets_no_new_ones() {
    let port = free_port();
    let _m = members(2, &[port]).await;
    let proxy = Proxy::start(&config_text(&[port], &[1, 1], ""), RelayMode::default()).await;
    let (mut long, greeting) = open(proxy.vip, None).await;
    let draining = member_of(&greeting).to_owned();
    long.write_all(b"e").await.expect("command");
    echo_once(&mut long, b"before").await;
    assert_eq!(proxy.counters(&draining).active(), 1);

    proxy.admin(&draining, AdminState::Draining).await;
    for _ in 0..20 {
        let (_, greeting) = open(proxy.vip, None).await;
        assert_ne!(member_of(&greeting), draining);
        echo_once(&mut long, b"still flowing").await;
    }
    assert_eq!(proxy.counters(&draining).active(), 1);
    drop(long);
    // Drain completion depends on the count reaching zero.
    for _ in 0..100 {
        if proxy.counters(&draining).active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.counters(&draining).active(), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_member_gets_no_new_connections_and_keeps_or_drops_old_ones() {
    for drop_on_down in [false, true] {
        let port = free_port();
        let _m = members(2, &[port]).await;
        let service = format!("drop_on_down = {drop_on_down}");
        let proxy = Proxy::start(
            &config_text(&[port], &[1, 1], &service),
            RelayMode::default(),
        )
        .await;
        let (mut long, greeting) = open(proxy.vip, None).await;
        let down = member_of(&greeting).to_owned();
        long.write_all(b"e").await.expect("command");
        echo_once(&mut long, b"before").await;

        proxy.health(&down, false).await;
        for _ in 0..10 {
            assert_ne!(member_of(&open(proxy.vip, None).await.1), down);
        }
        if drop_on_down {
            let mut buffer = [0_u8; 8];
            let result = tokio::time::timeout(Duration::from_secs(5), long.read(&mut buffer))
                .await
                .expect("dropped in time");
            assert!(matches!(result, Ok(0) | Err(_)), "{result:?}");
        } else {
            echo_once(&mut long, b"kept").await;
        }
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connect_is_retried_on_another_member() {
    let port = free_port();
    // fe02 (127.0.0.12) has nothing listening: connection refused.
    let _m = members_on(&[0, 2], &[port]).await;
    let text = config_text(&[port], &[1, 1, 1], "connect_timeout_ms = 500");
    let proxy = Proxy::start(&text, RelayMode::default()).await;
    for _ in 0..30 {
        let (_, greeting) = open(proxy.vip, None).await;
        assert_ne!(member_of(&greeting), "fe02");
    }
    assert!(
        proxy
            .counters("fe02")
            .connect_failures
            .load(Ordering::Relaxed)
            >= 5
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_silent_connection_but_not_a_busy_one() {
    let port = free_port();
    let _m = members(1, &[port]).await;
    let text = config_text(&[port], &[1], "idle_timeout_s = 1");
    let proxy = Proxy::start(&text, RelayMode::default()).await;

    let (mut silent, _) = open(proxy.vip, None).await;
    silent.write_all(b"e").await.expect("command");
    let (mut busy, _) = open(proxy.vip, None).await;
    busy.write_all(b"e").await.expect("command");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        echo_once(&mut busy, b"tick").await;
    }
    // 2.5 s in: the silent one was closed after ~1 s, the busy one is alive.
    let mut buffer = [0_u8; 8];
    let closed = tokio::time::timeout(Duration::from_millis(100), silent.read(&mut buffer))
        .await
        .expect("the silent connection is already closed");
    assert!(matches!(closed, Ok(0)), "{closed:?}");
    echo_once(&mut busy, b"still here").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reconfig_keeps_100_open_connections() {
    let port = free_port();
    let _m = members(4, &[port]).await;
    let mut proxy = Proxy::start(&config_text(&[port], &[1, 1, 1], ""), RelayMode::default()).await;
    let mut open_connections = Vec::new();
    for _ in 0..100 {
        let (mut stream, greeting) = open(proxy.vip, None).await;
        stream.write_all(b"e").await.expect("command");
        open_connections.push((stream, member_of(&greeting).to_owned()));
    }
    // Add a member, change the scheduler and weights.
    proxy
        .reconfigure(&config_text(
            &[port],
            &[1, 2, 1, 3],
            "scheduler = \"least-connections\"",
        ))
        .await;
    let (_, greeting) = open(proxy.vip, None).await;
    assert_eq!(member_of(&greeting), "fe04", "the new, empty member wins");
    // Remove two members (fe03 and fe04 are no longer configured).
    proxy
        .reconfigure(&config_text(
            &[port],
            &[1, 1],
            "scheduler = \"weighted-round-robin\"",
        ))
        .await;
    for _ in 0..10 {
        let (_, greeting) = open(proxy.vip, None).await;
        assert!(
            ["fe01", "fe02"].contains(&member_of(&greeting)),
            "{greeting}"
        );
    }
    for (stream, _) in &mut open_connections {
        echo_once(stream, b"survived").await;
    }
    assert!(open_connections.iter().any(|(_, member)| member == "fe03"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_follow_the_config_and_a_bind_failure_spares_the_others() {
    let port = free_port();
    let other = free_port();
    let _m = members(1, &[port, other]).await;
    let mut proxy = Proxy::start(&config_text(&[port], &[1], ""), RelayMode::default()).await;
    let (mut kept, _) = open(proxy.vip, None).await;
    kept.write_all(b"e").await.expect("command");

    // Add a second service, plus one on an address this host does not have.
    let mut text = config_text(&[port], &[1], "");
    text += &format!(
        "\n[[virtual_service]]\nname = \"second\"\naddress = \"127.0.0.1\"\nport = {other}\npool = \"pool\"\n\
         \n[[virtual_service]]\nname = \"elsewhere\"\naddress = \"192.0.2.1\"\nport = {other}\npool = \"pool\"\n"
    );
    proxy.reconfigure(&text).await;
    let second = SocketAddr::new(proxy.vip.ip(), other);
    proxy.wait_listening(second).await;
    let (_, greeting) = open(second, None).await;
    assert_eq!(greeting, format!("fe01:{other}"));

    // Remove the first service: its listener goes, its connection stays.
    let text = text.replacen(&format!("name = \"web\"\naddress = \"127.0.0.1\"\nport = {port}\nextra_ports = []\npool = \"pool\"\n"), "name = \"web\"\naddress = \"127.0.0.2\"\nport = 1\npool = \"pool\"\n", 1);
    proxy.reconfigure(&text).await;
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(proxy.vip).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the removed service's port still accepts");
    echo_once(&mut kept, b"still open").await;
    proxy.stop().await;
}

/// Within a second of shutdown, `vip` refuses connections.
async fn assert_stops_accepting(vip: SocketAddr) {
    for _ in 0..100 {
        if TcpStream::connect(vip).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still accepting after shutdown");
}

/// `stream` is closed or reset by the proxy within 5 s.
async fn assert_cut(stream: &mut TcpStream) {
    let mut buffer = [0_u8; 8];
    let cut = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("cut in time");
    assert!(matches!(cut, Ok(0) | Err(_)), "{cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_cuts_what_is_left_after_the_grace_period() {
    let port = free_port();
    let _m = members(1, &[port]).await;
    let proxy = Proxy::start(&config_text(&[port], &[1], ""), RelayMode::default()).await;
    let (mut open_connection, _) = open(proxy.vip, None).await;
    open_connection.write_all(b"e").await.expect("command");
    let counters = proxy.counters("fe01");

    proxy.shutdown.cancel();
    // The listener goes at once; the open connection keeps working.
    assert_stops_accepting(proxy.vip).await;
    echo_once(&mut open_connection, b"within the grace period").await;
    assert!(!proxy.task.is_finished());

    // The grace period (1 s here) ends: the connection is cut, the task ends.
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .expect("proxy stops after the grace period")
        .expect("proxy task");
    assert_cut(&mut open_connection).await;
    assert_eq!(counters.active(), 0);
}

#[tokio::test]
async fn per_core_workers_each_accept_and_shutdown_waits_for_all_their_connections() {
    let port = free_port();
    let _m = members(2, &[port]).await;
    let workers = Workers::start(2).expect("worker threads");
    let proxy = Proxy::start_on(workers, &config_text(&[port], &[1, 1], ""), MODES[2]).await;
    // The kernel spreads connections over the workers' listeners by the
    // client's port, so 32 connections reach both (all on one has odds of
    // 2^-31). A connection queued on a listener no worker accepts on would
    // hang here.
    let mut open_connections = Vec::new();
    for i in 0..32 {
        let (mut stream, greeting) = open(proxy.vip, None).await;
        assert!(greeting.starts_with("fe0"), "{greeting}");
        stream.write_all(b"e").await.expect("command");
        echo_once(&mut stream, format!("connection {i}").as_bytes()).await;
        open_connections.push(stream);
    }

    // Shutdown stops both listeners; the connections keep working in the
    // grace period, then are cut, on both workers.
    proxy.shutdown.cancel();
    assert_stops_accepting(proxy.vip).await;
    for stream in &mut open_connections {
        echo_once(stream, b"within the grace period").await;
    }
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .expect("proxy stops after the grace period")
        .expect("proxy task");
    for stream in &mut open_connections {
        assert_cut(stream).await;
    }
}

#[tokio::test]
async fn a_port_held_elsewhere_is_listened_on_once_it_is_free() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let port = holder.local_addr().expect("address").port();
    let config = parse(&config_text(&[port], &[1], ""));
    let shutdown = CancellationToken::new();
    let inputs = Inputs::new(Arc::new(config), 1, BTreeMap::new());
    let (publisher, _) = state::spawn(inputs, shutdown.child_token());
    let (events, mut recorded) = EventLog::for_tests();
    let task = tokio::spawn(serve(
        Workers::start(2).expect("worker threads"),
        publisher,
        events,
        MODES[0],
        shutdown.child_token(),
        Duration::from_secs(1),
        Arc::default(),
    ));
    // The first bind fails while the port is held; once it is free the
    // proxy listens without waiting for a config change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the proxy never listened on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    task.await.expect("proxy task");
    // The failure was recorded once, not at every retry.
    let event = recorded.try_recv().expect("a proxy event");
    assert_eq!(event.kind, EventKind::Proxy);
    assert_eq!(event.pool.as_deref(), Some("pool"));
    assert!(
        recorded.try_recv().is_err(),
        "one event per failing address"
    );
}

/// Every open connection holds its relay's state for as long as it lives
/// (RSS per idle connection, `bench/proxy.sh`): it stays small. A future
/// bound to a local and then moved, for one, keeps its room twice.
#[tokio::test]
async fn an_idle_connections_relay_state_stays_small() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let client = TcpStream::connect(address).await.expect("connect");
    let (member, _) = listener.accept().await.expect("accept");
    let (member_counters, service_counters) =
        (MemberCounters::default(), ServiceCounters::default());
    let seldom = OwnWaker::new();
    for mode in [RelayMode::Auto, RelayMode::Copy, RelayMode::Splice] {
        let relayed = relay::relay(
            mode,
            &client,
            &member,
            Duration::from_secs(60),
            relay::Meters {
                member: &member_counters,
                service: &service_counters,
            },
            &seldom,
        );
        let size = size_of_val(&relayed);
        println!("relay state: {size} bytes");
        assert!(
            size <= 1280,
            "{mode:?}: {size} bytes (2,184 when the pumps were bound to locals)"
        );
    }
}
