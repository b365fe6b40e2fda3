//! The statistics an admin reads at a glance, end to end: connections and
//! bytes proxied through a real VIP, DNS answers from `dig`, SIP redirects
//! of real REGISTERs and a member's listener stopped by the test come back
//! from `GET /api/v1/statistics` as rates per interval, and from the status
//! document and `/metrics` as counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use poolgate_e2e::dig::dig;
use poolgate_e2e::{AdminClient, Poolgate, free_port};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const PASSWORD: &str = "correct horse battery staple";

/// An echo server on a member address; closes its port on drop.
struct Echo(JoinHandle<()>);

impl Drop for Echo {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn echo(address: SocketAddr) -> Echo {
    let listener = TcpListener::bind(address).await.expect("bind member");
    Echo(tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                    if stream.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

/// Send `bytes` through `vip` and read them back.
async fn round_trip(vip: SocketAddr, bytes: usize) {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(vip))
            .await
            .expect("connect in time")
            .expect("connect to the VIP");
    stream.write_all(&vec![b'x'; bytes]).await.expect("write");
    let mut back = vec![0u8; bytes];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
}

/// Sum of `rate × seconds` over `samples` at `path` (a JSON pointer in
/// each sample), or of the value itself with `per_s` false.
fn total(samples: &[Value], path: &str, per_s: bool) -> f64 {
    samples
        .iter()
        .map(|s| {
            let value = s.pointer(path).and_then(Value::as_f64).unwrap_or(0.0);
            if per_s {
                value * s["seconds"].as_f64().unwrap_or(0.0)
            } else {
                value
            }
        })
        .sum()
}

#[test]
fn proxied_bytes_dns_answers_redirects_and_transitions_are_charted() {
    let port = free_port();
    let vip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("vip");
    let text = format!(
        "[listen]\nadmin = \"127.0.0.1:0\"\ndns = [\"127.0.0.1:0\"]\nsip_udp = \"127.0.0.1:0\"\n\n\
         [dns]\nfail_open = false\n\n[[zone]]\nname = \"contoso.test\"\n\n\
         [[monitor]]\nname = \"fe\"\ntype = \"tcp\"\nport = {port}\ninterval_ms = 200\ntimeout_ms = 200\nrise = 1\nfall = 1\n\n\
         [[pool]]\nname = \"pool01\"\nfqdn = \"pool01.contoso.test\"\nmonitor = \"fe\"\nregistrar_port = {port}\n\n\
         [[pool.member]]\nname = \"fe01\"\naddress = \"127.0.0.11\"\n\n\
         [[pool.member]]\nname = \"fe02\"\naddress = \"127.0.0.12\"\n\n\
         [[virtual_service]]\nname = \"web\"\naddress = \"127.0.0.1\"\nport = {}\nmember_port = {port}\npool = \"pool01\"\nmonitor = \"fe\"\nscheduler = \"round-robin\"\n",
        vip.port()
    );
    let config: toml::Table = text.parse().expect("TOML");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _fe01 = rt.block_on(echo(format!("127.0.0.11:{port}").parse().expect("fe01")));
    let fe02 = rt.block_on(echo(format!("127.0.0.12:{port}").parse().expect("fe02")));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["admin", "dns-udp", "sip-udp"]);
    let client = AdminClient::setup_and_login(listening["admin"][0], PASSWORD);
    poolgate_e2e::wait_for("both members up", Duration::from_secs(15), || {
        client
            .members()
            .iter()
            .all(|m| m["health"]["fe"]["state"] == "up")
    });

    // Ten connections of 1000 bytes each way.
    for _ in 0..10 {
        rt.block_on(round_trip(vip, 1000));
    }
    // Three answers with data, two for a name that does not exist.
    let dns = listening["dns-udp"][0];
    for _ in 0..3 {
        assert!(!dig(dns, &["pool01.contoso.test", "A"]).data("A").is_empty());
    }
    for _ in 0..2 {
        dig(dns, &["nothere.contoso.test", "A"]);
    }
    // Four REGISTERs, each redirected.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    for i in 0..4 {
        let register = format!(
            "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKstat{i}\r\n\
             From: <sip:user{i}@contoso.test>;tag={i}\r\nTo: <sip:user{i}@contoso.test>\r\n\
             Call-ID: stat-{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        socket
            .send_to(register.as_bytes(), listening["sip-udp"][0])
            .expect("send");
        let mut buffer = [0u8; 2048];
        let (n, _) = socket.recv_from(&mut buffer).expect("an answer");
        assert!(
            buffer[..n].starts_with(b"SIP/2.0 301"),
            "{}",
            String::from_utf8_lossy(&buffer[..n])
        );
    }
    // fe02 stops listening: its probe goes down.
    drop(fe02);
    poolgate_e2e::wait_for("fe02 down", Duration::from_secs(15), || {
        client.members()[1]["health"]["fe"]["state"] == "down"
    });

    // Within two sampling intervals every figure is in the samples.
    let deadline = Instant::now() + Duration::from_secs(35);
    let samples = loop {
        let body = client.json("/api/v1/statistics");
        assert_eq!(body["interval_s"], 10, "{body}");
        let samples = body["samples"].as_array().cloned().unwrap_or_default();
        let seen = total(&samples, "/services/web/connections_per_s", true) >= 9.9
            && total(&samples, "/members/pool01~1fe02/went_down", false) >= 1.0
            && total(&samples, "/dns/answers_per_s/nxdomain", true) >= 1.9
            && total(&samples, "/sip/redirects_per_s", true) >= 3.9;
        if seen {
            break samples;
        }
        assert!(Instant::now() < deadline, "not charted in time: {body}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let near = |path: &str, want: f64| {
        let got = total(&samples, path, true);
        assert!(
            (got - want).abs() < 0.1 * want + 0.5,
            "{path}: {got}, want {want}"
        );
    };
    near("/services/web/connections_per_s", 10.0);
    near("/services/web/bytes_in_per_s", 10_000.0);
    near("/services/web/bytes_out_per_s", 10_000.0);
    // Round robin: five each.
    near("/members/pool01~1fe01/connections_per_s", 5.0);
    near("/members/pool01~1fe02/bytes_in_per_s", 5_000.0);
    near("/dns/answers_per_s/data", 3.0);
    near("/dns/answers_per_s/nxdomain", 2.0);
    near("/sip/redirects_per_s", 4.0);
    assert_eq!(
        total(&samples, "/members/pool01~1fe01/went_down", false),
        0.0
    );
    // Every sample is one interval, oldest first, with its own seq.
    let seqs: Vec<u64> = samples.iter().filter_map(|s| s["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        samples
            .iter()
            .all(|s| s["seconds"].as_f64().is_some_and(|t| t > 5.0))
    );

    // A poller asks only for what it has not seen.
    let last = seqs.last().copied().unwrap_or(0);
    let newer = client.json(&format!("/api/v1/statistics?after={last}&minutes=5"));
    assert!(
        newer["samples"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["seq"].as_u64() > Some(last))),
        "{newer}"
    );
    // Out of range is a field error; not a number or not a parameter, a
    // bad request.
    for (bad, status) in [
        ("minutes=0", 422),
        ("minutes=61", 422),
        ("after=soon", 400),
        ("colour=blue", 400),
    ] {
        let response = client.get(&format!("/api/v1/statistics?{bad}"));
        assert_eq!(response.status().as_u16(), status, "{bad}");
    }

    // The same counters in the status document and in /metrics.
    let status = client.json("/api/v1/status");
    let web = &status["virtual_services"][0];
    assert_eq!(
        (web["total_connections"].as_u64(), web["bytes_in"].as_u64()),
        (Some(10), Some(10_000)),
        "{web}"
    );
    let metrics = client.get("/metrics").text().expect("text");
    let lines: BTreeMap<&str, &str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    for (series, want) in [
        ("poolgate_service_connections_total{service=\"web\"}", "10"),
        ("poolgate_service_bytes_out_total{service=\"web\"}", "10000"),
        ("poolgate_dns_answers_total{kind=\"nxdomain\"}", "2"),
        (
            "poolgate_member_went_down_total{pool=\"pool01\",member=\"fe02\"}",
            "1",
        ),
    ] {
        assert_eq!(
            lines.get(series).copied(),
            Some(want),
            "{series}:\n{metrics}"
        );
    }
    poolgate.terminate(Duration::from_secs(10));
}
