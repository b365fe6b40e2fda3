//! Attacks on the accept layer of the TCP listeners (admin, DNS over TCP,
//! virtual services) and on the admin listener's HTTP/2 and TLS handling:
//! slow header senders are closed after the header deadline while others
//! are served, per-source caps refuse at once, TCP DNS holders cannot lock
//! out a newcomer, an HTTP/2 request refused before its body is read still
//! gets its answer, and IP addresses as SNI cannot flood the log.
//!
//! Sources are spread over 127.0.0.0/8 (each test its own addresses), so a
//! per-source cap hit by one attack never touches another test's client.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolgate_e2e::{
    AdminClient, Poolgate, loopback_example, parse_listening, raise_open_files, wait_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PASSWORD: &str = "correct horse battery staple";
/// The admin listener's default header deadline.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// A TCP connection to `to` from `from` (any port).
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether the peer closes (or resets) `stream` within `within`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether a connection from `from` to `to` is closed or reset within two
/// seconds (the reset may even beat `connect` returning).
async fn refused_at_once(from: IpAddr, to: SocketAddr) -> bool {
    match connect_from(from, to).await {
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(mut stream) => closed_within(&mut stream, Duration::from_secs(2)).await,
    }
}

/// A blocking client for the admin API from `source`, one connection per
/// request (no pooled keep-alive connection to be closed under it).
fn client_from(source: IpAddr) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(source)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn health_ok(client: &reqwest::blocking::Client, admin: SocketAddr) -> bool {
    client
        .get(format!("https://{admin}/api/v1/health"))
        .send()
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// The value of one sample of `/metrics`, 0 if absent.
fn metric(client: &AdminClient, sample: &str) -> u64 {
    let text = client.get("/metrics").text().expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Run `attack` on `rt` while polling health from `source` on this thread
/// every 250 ms; panics if health fails once. Returns the attack's output.
fn while_health_answers<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    admin: SocketAddr,
    source: IpAddr,
    attack: impl Future<Output = T> + Send + 'static,
) -> T {
    let task = rt.spawn(attack);
    let client = client_from(source);
    let mut polls = 0;
    while !task.is_finished() {
        assert!(
            health_ok(&client, admin),
            "health failed during the attack (poll {polls})"
        );
        polls += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(polls > 0);
    rt.block_on(task).expect("attack task")
}

/// The appliance's certificate is self-signed: accept any.
fn tls_client_config() -> Arc<rustls::ClientConfig> {
    use poolgate::health::probe::NoVerification;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn start_admin() -> (tempfile::TempDir, Poolgate, SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let admin = poolgate.address("admin");
    (dir, poolgate, admin)
}

/// What became of one slow header sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Refused at accept (or closed within two seconds).
    Refused,
    /// Closed by the server this long after its request began.
    ClosedAfter(Duration),
    /// Still open when the sender gave up.
    NeverClosed,
}

/// One slow header sender: connect from `from`, (TLS or plain) send the
/// start of a request, then a byte a second, until the server closes it.
async fn slow_sender(
    from: IpAddr,
    admin: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    give_up: Duration,
) -> Fate {
    let Ok(stream) = connect_from(from, admin).await else {
        return Fate::Refused;
    };
    let fate = match tls {
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = rustls::pki_types::ServerName::try_from("poolgate").expect("name");
            match tokio::time::timeout(give_up, connector.connect(name, stream)).await {
                Ok(Ok(stream)) => {
                    trickle(
                        stream,
                        b"GET /api/v1/health HTTP/1.1\r\nHost: poolgate\r\n",
                        give_up,
                    )
                    .await
                }
                Ok(Err(_)) => return Fate::Refused,
                Err(_) => return Fate::NeverClosed,
            }
        }
        None => trickle(stream, b"G", give_up).await,
    };
    match fate {
        Fate::ClosedAfter(after) if after < Duration::from_secs(2) => Fate::Refused,
        fate => fate,
    }
}

async fn trickle(
    mut stream: impl AsyncReadExt + AsyncWriteExt + Unpin,
    start: &[u8],
    give_up: Duration,
) -> Fate {
    let began = Instant::now();
    if stream.write_all(start).await.is_err() {
        return Fate::Refused;
    }
    while began.elapsed() < give_up {
        if closed_within(&mut stream, Duration::from_secs(1)).await
            || stream.write_all(b"X").await.is_err()
        {
            return Fate::ClosedAfter(began.elapsed());
        }
    }
    Fate::NeverClosed
}

#[test]
fn slow_header_senders_are_closed_after_the_header_deadline_while_health_answers() {
    let need = if crate::long() { 2_500 } else { 1_000 };
    assert!(
        raise_open_files(need) >= need,
        "this test needs {need} open files (ulimit -n)"
    );
    let (_dir, poolgate, admin) = start_admin();
    // Default: 240 held connections (under the listener's cap of 256) from
    // eight sources, so health from a ninth always finds room. Long: 2,000
    // from two sources, where the per-source cap refuses all but 64.
    let (tls_sources, plain_sources, per_source) = if crate::long() {
        (vec![ip(2, 0, 1)], vec![ip(2, 0, 2)], 1000)
    } else {
        (
            (1..=6).map(|i| ip(2, 1, i)).collect::<Vec<_>>(),
            (1..=2).map(|i| ip(2, 2, i)).collect::<Vec<_>>(),
            30,
        )
    };
    let give_up = HEADER_TIMEOUT + Duration::from_secs(8);
    let rt = crate::runtime();
    let config = tls_client_config();
    let attack = async move {
        let mut tasks = tokio::task::JoinSet::new();
        for (sources, tls) in [(tls_sources, true), (plain_sources, false)] {
            for source in sources {
                for _ in 0..per_source {
                    let config = tls.then(|| Arc::clone(&config));
                    tasks.spawn(
                        async move { (tls, slow_sender(source, admin, config, give_up).await) },
                    );
                }
            }
        }
        tasks.join_all().await
    };
    let results = while_health_answers(&rt, admin, ip(2, 9, 9), attack);
    let admitted: Vec<_> = results
        .iter()
        .filter(|(_, fate)| *fate != Fate::Refused)
        .collect();
    for (tls, fate) in &admitted {
        let Fate::ClosedAfter(after) = fate else {
            panic!("a slow sender (tls: {tls}) was never closed");
        };
        assert!(
            *after >= HEADER_TIMEOUT - Duration::from_secs(2)
                && *after <= HEADER_TIMEOUT + Duration::from_secs(4),
            "a slow sender (tls: {tls}) was closed after {after:?}"
        );
    }
    let expected = if crate::long() { 64 } else { 240 };
    assert_eq!(admitted.len(), expected, "held until the deadline");
    assert!(
        admitted.iter().any(|(tls, _)| *tls) && admitted.iter().any(|(tls, _)| !*tls),
        "both TLS and plain senders were held"
    );
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let timeouts = metric(
        &client,
        "poolgate_listener_timeouts_total{listener=\"admin\",kind=\"header\"}",
    );
    assert!(
        timeouts >= expected as u64,
        "{timeouts} header timeouts counted"
    );
    drop(poolgate);
}

#[test]
fn the_admin_listener_refuses_a_source_over_its_cap_at_once() {
    let (_dir, _poolgate, admin) = start_admin();
    let rt = crate::runtime();
    let cap = 32;
    let held = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..cap {
            held.push(connect_from(ip(3, 0, 1), admin).await.expect("connect"));
        }
        // Let the listener admit them all before the one over the cap.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            refused_at_once(ip(3, 0, 1), admin).await,
            "the connection over the per-source cap is closed at once"
        );
        // The held ones are still open: refused was only the one over.
        for stream in &mut held {
            assert!(!closed_within(stream, Duration::from_millis(10)).await);
        }
        held
    });
    assert!(
        health_ok(&client_from(ip(3, 0, 2)), admin),
        "other sources are served"
    );
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    assert!(
        metric(
            &client,
            "poolgate_listener_refused_total{listener=\"admin\",reason=\"source\"}"
        ) >= 1
    );
    drop(held);
}

/// A TCP DNS query for the pool's name, framed; the answer's length.
async fn tcp_query(stream: &mut TcpStream, id: u16) -> std::io::Result<usize> {
    let mut message = hickory_proto::op::Message::query();
    message.metadata.id = id;
    message.add_query(hickory_proto::op::Query::query(
        "pool01.contoso.test.".parse().expect("name"),
        hickory_proto::rr::RecordType::A,
    ));
    let bytes = message.to_vec().map_err(std::io::Error::other)?;
    let mut framed = u16::try_from(bytes.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await?;
    let length = tokio::time::timeout(Duration::from_secs(3), stream.read_u16())
        .await
        .map_err(|_| std::io::Error::other("no answer"))??;
    let mut body = vec![0; usize::from(length)];
    stream.read_exact(&mut body).await?;
    Ok(body.len())
}

#[test]
fn tcp_dns_holders_cannot_lock_out_a_new_client() {
    assert!(
        raise_open_files(1_000) >= 1_000,
        "this test needs 1,000 open files (ulimit -n)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let dns = poolgate.address("dns-tcp");
    let rt = crate::runtime();
    // 300 holders, each sending a query every 5 s: 32 from 127.4.0.1 (its
    // per-source cap), the rest spread over nine more sources, so both the
    // source's and the listener's cap (256) are reached. The 32 come 1.5 s
    // after the rest, so the listener's longest idle is never one of them:
    // the fresh client from elsewhere evicts one of the rest, and the
    // newcomer from 127.4.0.1 one of the 32 (two evictions at least).
    let hold = if crate::long() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(8)
    };
    let holders = rt.spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..300u16 {
            let source = if n < 32 {
                ip(4, 0, 1)
            } else {
                ip(4, 1, u8::try_from(1 + n % 9).expect("small"))
            };
            tasks.spawn(async move {
                if n < 32 {
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                }
                let Ok(mut stream) = connect_from(source, dns).await else {
                    return;
                };
                let began = Instant::now();
                while began.elapsed() < hold {
                    if tcp_query(&mut stream, n).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
        tasks.join_all().await;
    });
    // Let them settle and go idle for more than a second.
    std::thread::sleep(Duration::from_secs(3));
    // A fresh client from elsewhere, with real dig over TCP.
    let fresh = poolgate_e2e::dig::dig(
        dns,
        &["-b", "127.4.9.9", "+tcp", "pool01.contoso.test", "A"],
    );
    assert_eq!(
        fresh.status, "NOERROR",
        "dig from a new source:\n{}",
        fresh.raw
    );
    assert!(!fresh.data("A").is_empty(), "{}", fresh.raw);
    // A fresh client from the source at its cap: its longest idle gives way.
    rt.block_on(async {
        let mut stream = connect_from(ip(4, 0, 1), dns).await.expect("connect");
        let answered = tcp_query(&mut stream, 9999).await;
        assert!(
            answered.is_ok_and(|n| n > 12),
            "same-source newcomer answered"
        );
    });
    rt.block_on(holders).expect("holders");
    let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
    assert!(
        metric(
            &client,
            "poolgate_listener_evicted_total{listener=\"dns-tcp\"}"
        ) >= 2
    );
}

#[test]
fn http2_requests_refused_before_their_body_is_read_still_get_the_answer() {
    let (dir, _poolgate, admin) = start_admin();
    let curl_found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(curl_found, "curl is needed (Debian package curl)");
    let _client = AdminClient::setup_and_login(admin, PASSWORD);
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 4 << 20]).expect("body file");
    let rounds = if crate::long() { 200 } else { 20 };
    let mut answered = 0;
    for round in 0..rounds {
        let output = std::process::Command::new("curl")
            .args([
                "--http2",
                "-k",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args([
                "--max-time",
                "20",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", big.display()))
            .arg(format!("https://{admin}/api/v1/config/preview"))
            .output()
            .expect("curl runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "round {round}: curl {:?}: {stdout} {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(stdout, "401 2", "round {round}");
        answered += 1;
    }
    assert_eq!(answered, rounds);
}

/// A ClientHello as rustls writes it, with its server name swapped for
/// `127.0.0.1` (rustls itself never sends an address as SNI).
fn client_hello_with_ip_sni() -> Vec<u8> {
    let placeholder = "sni-x-x-x";
    let mut connection = rustls::ClientConnection::new(
        tls_client_config(),
        rustls::pki_types::ServerName::try_from(placeholder).expect("name"),
    )
    .expect("client");
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).expect("hello");
    let at = hello
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_bytes())
        .expect("SNI in the hello");
    hello[at..at + placeholder.len()].copy_from_slice(b"127.0.0.1");
    hello
}

#[test]
fn ip_addresses_as_sni_are_counted_not_warned() {
    let (_dir, poolgate, admin) = start_admin();
    let rounds = if crate::long() { 2000 } else { 50 };
    let hello = client_hello_with_ip_sni();
    let rt = crate::runtime();
    rt.block_on(async {
        for _ in 0..rounds {
            let mut stream = connect_from(ip(5, 0, 1), admin).await.expect("connect");
            stream.write_all(&hello).await.expect("hello");
            // The server answers (a ServerHello) or closes: either way it
            // has parsed the name.
            let mut first = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first)).await;
        }
    });
    // The log reader is a thread of its own: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let warned: Vec<String> = poolgate
        .log()
        .into_iter()
        .filter(|line| {
            line.contains("WARN") && (line.contains("SNI") || line.contains("server name"))
        })
        .collect();
    assert!(
        warned.is_empty(),
        "{} WARN lines, the first:\n{}",
        warned.len(),
        warned[0]
    );
    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let sample = "poolgate_listener_illegal_sni_total{listener=\"admin\"}";
    wait_for("illegal SNI counted", Duration::from_secs(5), || {
        metric(&client, sample) >= rounds
    });
}

/// Members that accept and hold every connection (as a busy web service
/// would), on `port` of each example member address.
async fn holding_members(port: u16) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for last in 11..=13u8 {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port))
            .await
            .expect("member bind");
        tasks.spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
    }
    tasks
}

#[test]
fn the_vip_proxy_refuses_a_source_over_its_cap_at_once() {
    // 1,000 client sockets and the members' 1,000 in this process, twice
    // that in poolgate, which inherits the limit.
    assert!(
        raise_open_files(5_000) >= 5_000,
        "this test needs 5,000 open files (ulimit -n)"
    );
    let mut config = loopback_example();
    let port = {
        let services = config
            .get_mut("virtual_service")
            .and_then(toml::Value::as_array_mut)
            .expect("virtual services");
        let web = services[0].as_table_mut().expect("table");
        web.insert("persistence".into(), "none".into());
        u16::try_from(web["port"].as_integer().expect("port")).expect("u16")
    };
    for monitor in config
        .get_mut("monitor")
        .and_then(toml::Value::as_array_mut)
        .expect("monitors")
    {
        let monitor = monitor.as_table_mut().expect("table");
        if monitor["name"].as_str() == Some("fe-web") {
            monitor.insert("port".into(), i64::from(port).into());
        }
    }
    let rt = crate::runtime();
    let members = rt.block_on(holding_members(port));
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &config, &[]);
    let vip = SocketAddr::new(ip(0, 0, 1), port);
    poolgate.wait_for_line(Duration::from_secs(30), |line| {
        (parse_listening(line) == Some(("vip:web-internal".to_owned(), vip))).then_some(())
    });
    let cap = 1000;
    let held = rt.block_on(async move {
        let mut held = Vec::new();
        for _ in 0..cap {
            held.push(connect_from(ip(6, 0, 1), vip).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            refused_at_once(ip(6, 0, 1), vip).await,
            "the connection over the per-source cap is closed at once"
        );
        // Another source is still relayed (held open by its member).
        let mut other = connect_from(ip(6, 0, 2), vip).await.expect("connect");
        assert!(
            !closed_within(&mut other, Duration::from_millis(500)).await,
            "another source is served"
        );
        held.push(other);
        held
    });
    let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
    let refused = metric(
        &client,
        "poolgate_listener_refused_total{listener=\"vip:web-internal\",reason=\"source\"}",
    );
    assert_eq!(refused, 1);
    let open = metric(
        &client,
        "poolgate_listener_open_connections{listener=\"vip:web-internal\"}",
    );
    assert_eq!(open, u64::try_from(cap + 1).expect("small"));
    drop(held);
    drop(members);
}

/// Open descriptors of process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// User plus system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn set_soft_open_files(pid: u32, soft: &str) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:"))
        .status()
        .expect("prlimit runs (util-linux)");
    assert!(status.success(), "prlimit");
}

#[test]
fn out_of_descriptors_the_listener_pauses_warns_once_and_recovers() {
    let (_dir, poolgate, admin) = start_admin();
    let pid = u32::try_from(poolgate.pid().as_raw()).expect("pid");
    assert!(health_ok(&client_from(ip(7, 0, 2)), admin));
    let before = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let original = before
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("soft limit")
        .to_owned();
    // Room for a few connections more than poolgate has open now.
    set_soft_open_files(pid, &(open_files(pid) + 4).to_string());
    let hold = if crate::long() {
        Duration::from_secs(8)
    } else {
        Duration::from_secs(3)
    };
    let rt = crate::runtime();
    let started_cpu = cpu_time(pid);
    let held = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..30 {
            // Connections beyond the descriptors wait in the backlog.
            held.push(connect_from(ip(7, 0, 1), admin).await.expect("connect"));
        }
        tokio::time::sleep(hold).await;
        held
    });
    let spent = cpu_time(pid).saturating_sub(started_cpu);
    let warned: Vec<String> = poolgate
        .log()
        .into_iter()
        .filter(|line| line.contains("WARN") && line.contains("ccept failed"))
        .collect();
    drop(held);
    set_soft_open_files(pid, &original);
    assert!(
        warned.len() <= 1,
        "{} WARN lines while out of descriptors, the first two:\n{}",
        warned.len(),
        warned
            .iter()
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        spent < hold / 2,
        "poolgate spent {spent:?} of CPU in {hold:?} out of descriptors"
    );
    let client = client_from(ip(7, 0, 2));
    wait_for(
        "health after the descriptors are back",
        Duration::from_secs(10),
        || health_ok(&client, admin),
    );
    let admin_client = AdminClient::setup_and_login(admin, PASSWORD);
    assert!(
        metric(
            &admin_client,
            "poolgate_listener_accept_errors_total{listener=\"admin\"}"
        ) >= 1
    );
}
