use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::sip::message::tests::{LYNC_REGISTER, torture};
use crate::sip::redirect::tests::{POOL_CONFIG, TORTURE_ANSWERS};
use crate::state::{self, Inputs};

/// Generous: only a stalled server gets near it.
const PATIENCE: Duration = Duration::from_secs(5);

struct Server {
    publisher: PublisherHandle,
    udp: SocketAddr,
    tcp: SocketAddr,
    stats: Arc<SipStats>,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Server {
    let config = crate::config::from_toml(POOL_CONFIG, "test.toml").expect("valid config");
    let shutdown = CancellationToken::new();
    let (publisher, _task) = state::spawn(
        Inputs::new(Arc::new(config), 1, BTreeMap::new()),
        shutdown.clone(),
    );
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let (udp_address, tcp_address) = (
        udp.local_addr().expect("udp address"),
        tcp.local_addr().expect("tcp address"),
    );
    let stats = Arc::new(SipStats::default());
    tokio::spawn(serve_udp(
        udp,
        publisher.clone(),
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    tokio::spawn(serve_tcp(
        tcp,
        None,
        publisher.clone(),
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    Server {
        publisher,
        udp: udp_address,
        tcp: tcp_address,
        stats,
        shutdown,
    }
}

fn options(call_id: &str) -> String {
    format!(
        "OPTIONS sip:pool01.contoso.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{call_id}\r\n\
         From: <sip:probe@contoso.com>;tag=p\r\nTo: <sip:pool01.contoso.com>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn statuses(text: &str) -> Vec<u16> {
    text.split("SIP/2.0 ")
        .skip(1)
        .filter_map(|rest| rest.get(..3)?.parse().ok())
        .collect()
}

async fn udp_exchange(client: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> String {
    client.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    let (len, _) = tokio::time::timeout(PATIENCE, client.recv_from(&mut buf))
        .await
        .expect("the server answers in time")
        .expect("receive");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Every torture message over UDP gets the expected answer or none; an
/// OPTIONS sent right after is answered next, so a dropped message left
/// nothing behind and the server still serves.
#[tokio::test]
async fn torture_messages_over_udp() {
    let server = start().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    for (name, expected) in TORTURE_ANSWERS {
        let Some(bytes) = torture(name) else { return };
        if let Some(status) = expected {
            let text = udp_exchange(&client, server.udp, &bytes).await;
            assert_eq!(statuses(&text), [status], "{name}: {text}");
        } else {
            client.send_to(&bytes, server.udp).await.expect("send");
        }
        let text = udp_exchange(&client, server.udp, options(name).as_bytes()).await;
        assert_eq!(statuses(&text), [200], "after {name}: {text}");
        assert!(
            text.contains(&format!("Call-ID: {name}\r\n")),
            "after {name}"
        );
    }
    assert!(server.stats.dropped.load(Ordering::Relaxed) >= 6);
}

/// The same over TCP, one connection per message, the client closing its
/// sending side after the message; `dblreq` gets both answers.
#[tokio::test]
async fn torture_messages_over_tcp() {
    let server = start().await;
    for (name, expected) in TORTURE_ANSWERS {
        let Some(bytes) = torture(name) else { return };
        let mut stream = TcpStream::connect(server.tcp).await.expect("connect");
        stream.write_all(&bytes).await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
            .await
            .expect("the server closes in time")
            .expect("read");
        let text = String::from_utf8_lossy(&answer);
        let expected: Vec<u16> = match (name, expected) {
            ("dblreq", _) => vec![301, 301],
            (_, Some(status)) => vec![status],
            (_, None) => vec![],
        };
        assert_eq!(statuses(&text), expected, "{name}: {text}");
    }
}

#[tokio::test]
async fn many_messages_per_connection_and_keepalives() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.tcp).await.expect("connect");
    let mut batch = String::from("\r\n\r\n");
    for i in 0..20 {
        batch.push_str(&options(&format!("c{i}")));
    }
    // Split mid-message to exercise reassembly.
    let (first, second) = batch.split_at(batch.len() / 2 + 7);
    stream.write_all(first.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(second.as_bytes()).await.expect("write");
    let mut seen = String::new();
    let mut buf = vec![0u8; 16_384];
    while statuses(&seen).len() < 20 {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("answers in time")
            .expect("read");
        assert!(n > 0, "connection stays open");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("Call-ID: c19\r\n"));
}

/// A client that sends half a message and waits neither blocks UDP nor
/// other TCP clients.
#[tokio::test]
async fn a_stalled_client_does_not_stall_others() {
    let server = start().await;
    let mut stalled = TcpStream::connect(server.tcp).await.expect("connect");
    stalled
        .write_all(b"REGISTER sip:contoso.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n")
        .await
        .expect("write");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let text = udp_exchange(&client, server.udp, options("u1").as_bytes()).await;
    assert_eq!(statuses(&text), [200]);
    let mut other = TcpStream::connect(server.tcp).await.expect("connect");
    other
        .write_all(options("t1").as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, other.read(&mut buf))
        .await
        .expect("answers in time")
        .expect("read");
    assert_eq!(statuses(&String::from_utf8_lossy(&buf[..n])), [200]);
}

/// A client dripping a message a byte at a time, never silent for the idle
/// timeout, is closed at the header deadline of the message's first byte
/// (on a paused clock: the deadlines pass without waiting for them).
#[tokio::test(start_paused = true)]
async fn a_drip_fed_message_is_cut_off_at_the_header_deadline() {
    let server = start().await;
    let limits = net::Limits::sip();
    let step = limits.idle_timeout / 2;
    let steps = limits.header_timeout.as_secs() / step.as_secs() + 2;
    let message = options("drip");
    assert!(
        message.len() as u64 > steps,
        "the message outlasts the deadline"
    );
    let mut stream = TcpStream::connect(server.tcp).await.expect("connect");
    // Each byte leaves at once, not when the previous one is acknowledged
    // (which on a paused clock could be long after the idle timeout).
    stream.set_nodelay(true).expect("no delay");
    // First a whole message: it is answered, and its time does not count
    // against the next one.
    stream.write_all(message.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("answers in time")
        .expect("read");
    assert_eq!(statuses(&String::from_utf8_lossy(&buf[..n])), [200]);
    tokio::time::sleep(step).await;
    for byte in message.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(step).await;
    }
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("the server closed the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "no answer: {read:?}");
    let gate = server.stats.gates.gate("sip-tcp", limits);
    assert_eq!(
        gate.stats
            .timeouts(net::Timeout::Header)
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        gate.stats
            .timeouts(net::Timeout::Idle)
            .load(Ordering::Relaxed),
        0
    );
}

/// Each redirected REGISTER counts once for the member it is sent to first.
#[tokio::test]
async fn registrations_are_counted_per_member() {
    let server = start().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    let register = LYNC_REGISTER;
    for _ in 0..3 {
        let text = udp_exchange(&client, server.udp, register.as_bytes()).await;
        assert_eq!(statuses(&text), [301]);
    }
    let view = server.publisher.current();
    let pool = &view.pools[0];
    let first = crate::sip::registrar::rank_pool(pool, "alice@contoso.com")
        .serving()
        .expect("a member serves");
    for (index, member) in pool.members.iter().enumerate() {
        let expected = if index == first { 3 } else { 0 };
        assert_eq!(
            member.counters.registrations.load(Ordering::Relaxed),
            expected,
            "{}",
            member.name
        );
    }
    assert_eq!(server.stats.redirects.load(Ordering::Relaxed), 3);
}

#[test]
fn refused_connections_are_read_from_the_sip_gates_once() {
    let stats = SipStats::default();
    let tight = net::Limits {
        max_connections: 1,
        max_per_source: 1,
        ..net::Limits::sip()
    };
    let peer: SocketAddr = "127.0.0.1:5060".parse().expect("address");
    let mut held = Vec::new();
    // Two refusals on sip-tcp, one on sip-tls; another listener's refusals
    // are not SIP's.
    for (label, refusals) in [("sip-tcp", 2), ("sip-tls", 1), ("dns-tcp", 4)] {
        let gate = stats.gates.gate(label, tight);
        held.push(gate.admit(peer).expect("first one admitted"));
        for _ in 0..refusals {
            assert!(gate.admit(peer).is_err(), "over the cap");
        }
    }
    assert_eq!(stats.connections_refused(), 3);
    let mut out = MetricsWriter::new();
    stats.render(&mut out);
    let text = out.finish();
    assert!(
        text.lines()
            .any(|line| line == "poolgate_sip_connections_refused_total 3"),
        "{text}"
    );
}
