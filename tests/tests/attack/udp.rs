//! Attacks over UDP and on the SIP parser: floods of REGISTERs with unique
//! users (the seen-users table), REGISTERs for foreign domains, crafted
//! requests that try to get control characters echoed, a request line whose
//! version is not UTF-8, and reflection floods of DNS queries and SIP
//! requests from one source prefix. Every socket is on loopback; every loop
//! is bounded in count and time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use poolgate_e2e::{AdminClient, Poolgate, free_port, loopback_example};

const PASSWORD: &str = "correct horse battery staple";

/// The example pool with every member answering its TCP health monitor (so
/// REGISTERs get 301s), and `extra` merged in as top-level tables.
fn config_with(extra: &str) -> (toml::Table, Vec<TcpListener>) {
    let mut config = loopback_example();
    let port = free_port();
    for monitor in config
        .get_mut("monitor")
        .and_then(toml::Value::as_array_mut)
        .expect("[[monitor]]")
    {
        let monitor = monitor.as_table_mut().expect("table");
        if monitor.get("name").and_then(toml::Value::as_str) == Some("fe-sip") {
            monitor.insert("port".into(), i64::from(port).into());
        }
    }
    let extra: toml::Table = extra.parse().expect("extra config is TOML");
    for (key, value) in extra {
        config.insert(key, value);
    }
    let listeners = (11..=13)
        .filter_map(|last| TcpListener::bind((format!("127.0.0.{last}"), port)).ok())
        .collect();
    (config, listeners)
}

/// A UDP socket on `local` that waits at most `timeout` for a datagram.
fn udp_socket(local: &str, timeout: Duration) -> UdpSocket {
    let socket = UdpSocket::bind(local).expect("bind a loopback UDP socket");
    socket
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    socket
}

/// How long an answer may take on loopback before it counts as dropped.
const ANSWER_WAIT: Duration = Duration::from_millis(500);
/// In a flood, how long the server may stay silent before the rest of a
/// window counts as dropped.
const FLOOD_WAIT: Duration = Duration::from_millis(50);

fn register(local: SocketAddr, user: &str, domain: &str, n: usize) -> String {
    format!(
        "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKflood{n}\r\n\
         From: <sip:{user}@{domain}>;tag={n}\r\nTo: <sip:{user}@{domain}>\r\n\
         Call-ID: flood-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{local}>\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn options(local: SocketAddr, n: usize) -> String {
    format!(
        "OPTIONS sip:pool01.contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKopt{n}\r\n\
         From: <sip:probe@contoso.test>;tag={n}\r\nTo: <sip:pool01.contoso.test>\r\n\
         Call-ID: opt-{n}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Send `messages` in windows of `window`, reading the answers of each
/// window before the next (so the server's socket buffer never overflows);
/// the answers received.
fn exchange(
    socket: &UdpSocket,
    to: SocketAddr,
    messages: &[Vec<u8>],
    window: usize,
) -> Vec<Vec<u8>> {
    let mut answers = Vec::new();
    let mut buffer = vec![0u8; 65_536];
    for chunk in messages.chunks(window) {
        for message in chunk {
            socket.send_to(message, to).expect("send");
        }
        // Until the window is answered, or the server has been silent for
        // the read timeout (dropped answers never come).
        let mut got = 0;
        while got < chunk.len() {
            match socket.recv_from(&mut buffer) {
                Ok((n, _)) => {
                    answers.push(buffer[..n].to_vec());
                    got += 1;
                }
                Err(_) => break,
            }
        }
    }
    answers
}

/// A counter or gauge from `/metrics`.
fn metric(client: &AdminClient, name: &str) -> u64 {
    let text = client.get("/metrics").text().expect("metrics body");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

fn rss_kib(poolgate: &Poolgate) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", poolgate.pid())).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Rows of the seen-users table whose AoR ends with `suffix`, read from the
/// store in the data directory (read-only, beside the running process).
fn seen_rows(poolgate: &Poolgate, suffix: &str) -> u64 {
    let db = rusqlite::Connection::open_with_flags(
        poolgate.data_dir.join("poolgate.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the store read-only");
    db.query_row(
        "SELECT COUNT(*) FROM seen_aors WHERE aor LIKE ?1",
        [format!("%{suffix}")],
        |row| row.get(0),
    )
    .expect("count seen users")
}

#[test]
fn a_register_flood_with_unique_users_leaves_the_seen_table_at_its_cap() {
    let (users, cap) = if crate::long() {
        (40_000, 10_000)
    } else {
        (5_000, 1_000)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // One flooding source: the per-source rate limit is its own test.
    let (config, _members) = config_with(&format!("[sip]\nudp_rate = 0\nseen_users_max = {cap}\n"));
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["admin", "sip-udp"]);
    let sip = listening["sip-udp"][0];
    let client = AdminClient::setup_and_login(listening["admin"][0], PASSWORD);
    let rss_before = rss_kib(&poolgate);

    let socket = udp_socket("127.0.0.1:0", ANSWER_WAIT);
    let local = socket.local_addr().expect("local");
    let messages: Vec<Vec<u8>> = (0..users)
        .map(|i| register(local, &format!("u{i}"), "contoso.test", i).into_bytes())
        .collect();
    let started = Instant::now();
    let answers = exchange(&socket, sip, &messages, 50);
    let redirected = answers
        .iter()
        .filter(|a| a.starts_with(b"SIP/2.0 301"))
        .count();
    assert!(
        redirected >= users * 9 / 10,
        "only {redirected} of {users} REGISTERs were redirected"
    );
    eprintln!(
        "{users} REGISTERs in {:?}, {redirected} redirected",
        started.elapsed()
    );

    // The writer writes a batch at most once a second: wait until it has
    // settled at the cap with every redirected user accounted for.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = metric(&client, "poolgate_sip_seen_users");
        let accounted = metric(&client, "poolgate_sip_seen_evicted_total")
            + metric(&client, "poolgate_sip_seen_dropped_total")
            + stored;
        if stored == cap as u64 && accounted >= redirected as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seen users at {stored}, cap {cap}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen_rows(&poolgate, "@contoso.test"), cap as u64);
    let evicted = metric(&client, "poolgate_sip_seen_evicted_total");
    let dropped = metric(&client, "poolgate_sip_seen_dropped_total");
    assert!(
        evicted + dropped + cap as u64 >= redirected as u64,
        "evicted {evicted} + dropped {dropped} + cap {cap} < {redirected}"
    );
    let rss_after = rss_kib(&poolgate);
    eprintln!("RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The newest users are the ones kept.
    assert_eq!(
        seen_rows(&poolgate, &format!("u{}@contoso.test", users - 1)),
        1
    );
}

#[test]
fn registers_for_a_foreign_domain_are_redirected_but_not_remembered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _members) = config_with("");
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["admin", "sip-udp"]);
    let sip = listening["sip-udp"][0];
    let client = AdminClient::setup_and_login(listening["admin"][0], PASSWORD);
    let socket = udp_socket("127.0.0.1:0", ANSWER_WAIT);
    let local = socket.local_addr().expect("local");
    let mut messages: Vec<Vec<u8>> = (0..100)
        .map(|i| register(local, &format!("x{i}"), "evil.example", i).into_bytes())
        .collect();
    // Made-up subdomains of the pool's domain and IP hosts are foreign too.
    messages.extend(
        (100..150).map(|i| {
            register(local, &format!("y{i}"), &format!("n{i}.contoso.test"), i).into_bytes()
        }),
    );
    messages.extend((150..160).map(|i| register(local, "z", "127.0.0.9", i).into_bytes()));
    // And a few real users, to know the writer has run.
    messages.extend(
        (160..170).map(|i| register(local, &format!("real{i}"), "contoso.test", i).into_bytes()),
    );
    let answers = exchange(&socket, sip, &messages, 20);
    assert_eq!(answers.len(), messages.len(), "every REGISTER is answered");
    // The writer stores batches in order: once the last users are in, so
    // is anything before them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen_rows(&poolgate, "@contoso.test") < 10 {
        assert!(
            Instant::now() < deadline,
            "the real users were never stored"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen_rows(&poolgate, ""), 10, "only the pool's own users");
    assert_eq!(metric(&client, "poolgate_sip_seen_users"), 10);
    assert_eq!(seen_rows(&poolgate, "@evil.example"), 0);
    assert_eq!(metric(&client, "poolgate_sip_seen_foreign_total"), 160);
}

/// Requests crafted to get a CR, LF or NUL back inside a header value.
fn crafted(local: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    let base = |via: &str, extra: &str| {
        format!(
            "REGISTER sip:contoso.test SIP/2.0\r\nVia: {via}\r\n\
             From: <sip:eve@contoso.test>;tag=1\r\nTo: <sip:eve@contoso.test>\r\n\
             Call-ID: crafted-1\r\nCSeq: 1 REGISTER\r\n{extra}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let via = format!("SIP/2.0/UDP {local};branch=z9hG4bKcrafted");
    vec![
        (
            "bare CR in Via",
            base(&format!("{via}\rSet-Cookie: injected=1"), ""),
        ),
        ("NUL in Via", base(&format!("{via}\0tail"), "")),
        ("NUL in User-Agent", base(&via, "User-Agent: a\0b\r\n")),
        (
            "bare CR in Call-ID",
            base(&via, "").replace_all(b"Call-ID: crafted-1", b"Call-ID: a\rInjected: 1"),
        ),
        (
            "bare LF in From",
            base(&via, "").replace_all(
                b"From: <sip:eve@contoso.test>;tag=1",
                b"From: <sip:eve@contoso.test>;tag=1\nInjected: 1",
            ),
        ),
        (
            "escaped NUL in a To display name",
            base(&via, "").replace_all(
                b"To: <sip:eve@contoso.test>",
                b"To: \"a\\\0b\\\rc\" <sip:eve@contoso.test>",
            ),
        ),
        (
            "folded empty continuation",
            base(&via, "").replace_all(
                b"To: <sip:eve@contoso.test>",
                b"To: <sip:eve@contoso.test>\r\n \r\n\tInjected: 1",
            ),
        ),
        (
            "control characters in the reason",
            base(&via, "X-Junk\x01\x1b[2J: 1\r\n"),
        ),
    ]
}

trait ReplaceAll {
    fn replace_all(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceAll for Vec<u8> {
    fn replace_all(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        let mut out = self[..at].to_vec();
        out.extend_from_slice(to);
        out.extend_from_slice(&self[at + from.len()..]);
        out
    }
}

/// Every line ends with CRLF, no line holds another control character, and
/// no header was injected.
fn assert_clean(what: &str, response: &[u8]) {
    let text = String::from_utf8_lossy(response);
    let head = text
        .strip_suffix("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: no blank line at the end: {text:?}"));
    for line in head.split("\r\n") {
        assert!(
            !line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f),
            "{what}: control character in {line:?}"
        );
        let name = line.split(':').next().unwrap_or_default();
        assert!(
            !name.eq_ignore_ascii_case("Injected") && !name.eq_ignore_ascii_case("Set-Cookie"),
            "{what}: injected header {line:?}"
        );
    }
}

#[test]
fn crafted_requests_never_get_control_characters_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _members) = config_with("");
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["sip-udp", "sip-tcp"]);
    let socket = udp_socket("127.0.0.1:0", ANSWER_WAIT);
    let local = socket.local_addr().expect("local");
    let mut buffer = vec![0u8; 65_536];
    let mut answered = BTreeMap::new();
    for (what, request) in crafted(local) {
        socket
            .send_to(&request, listening["sip-udp"][0])
            .expect("send");
        if let Ok((n, _)) = socket.recv_from(&mut buffer) {
            assert_clean(what, &buffer[..n]);
            answered.insert(what, String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        // Over TCP too, one connection per request.
        let mut stream = TcpStream::connect(listening["sip-tcp"][0]).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        stream.write_all(&request).expect("write");
        let mut reply = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !reply.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buffer[..n]),
            }
        }
        if !reply.is_empty() {
            assert_clean(what, &reply);
        }
    }
    // Where the path back was readable, the client is told what was wrong.
    for what in ["NUL in User-Agent", "control characters in the reason"] {
        let response = answered
            .get(what)
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert!(response.starts_with("SIP/2.0 400 "), "{what}: {response}");
    }
    // A valid request whose To has an escaped NUL is still answered.
    assert!(
        answered.contains_key("escaped NUL in a To display name"),
        "{answered:?}"
    );
}

#[test]
fn a_version_that_is_not_utf8_gets_a_400_and_the_listeners_keep_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _members) = config_with("");
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["sip-udp", "sip-tcp"]);
    let udp = listening["sip-udp"][0];
    let socket = udp_socket("127.0.0.1:0", ANSWER_WAIT);
    let local = socket.local_addr().expect("local");
    let request = register(local, "alice", "contoso.test", 1)
        .into_bytes()
        .replace_all(b" SIP/2.0\r\n", b" SI\xff/2.0\r\n");
    assert!(request.starts_with(b"REGISTER sip:contoso.test SI\xff/2.0\r\n"));
    let mut buffer = vec![0u8; 65_536];
    // More times than there are UDP workers: on a panic each would be lost.
    for round in 0..8 {
        socket.send_to(&request, udp).expect("send");
        let (n, _) = socket
            .recv_from(&mut buffer)
            .unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
        assert!(
            buffer[..n].starts_with(b"SIP/2.0 400 "),
            "{}",
            String::from_utf8_lossy(&buffer[..n])
        );
    }
    let mut stream = TcpStream::connect(listening["sip-tcp"][0]).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream.write_all(&request).expect("write");
    stream
        .write_all(options(local, 2).as_bytes())
        .expect("write");
    let mut reply = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while reply.windows(8).filter(|w| *w == b"SIP/2.0 ").count() < 2 && Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("SIP/2.0 400 "), "{text}");
    assert!(
        text.contains("SIP/2.0 200 OK"),
        "the connection lives on: {text}"
    );
    // The UDP listener and the process still answer everyone.
    socket
        .send_to(options(local, 3).as_bytes(), udp)
        .expect("send");
    let (n, _) = socket.recv_from(&mut buffer).expect("OPTIONS answered");
    assert!(buffer[..n].starts_with(b"SIP/2.0 200 OK"));
    assert!(
        !poolgate.log().iter().any(|l| l.contains("panicked")),
        "{}",
        poolgate.log().join("\n")
    );
}

/// A DNS query for `name` A with `id`, no EDNS.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("short label"));
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// (full answers, truncated answers) among `answers`.
fn tally(answers: &[Vec<u8>]) -> (usize, usize) {
    let truncated = answers
        .iter()
        .filter(|a| a.len() >= 12 && a[2] & 0x02 != 0)
        .count();
    (answers.len() - truncated, truncated)
}

#[test]
fn a_dns_burst_from_one_prefix_slips_and_drops_while_another_prefix_is_answered() {
    let queries = if crate::long() { 20_000 } else { 2_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    // The defaults: 200 answers a second per /24, slip 2.
    let (config, _members) = config_with("");
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["admin", "dns-udp"]);
    let dns = listening["dns-udp"][0];
    let client = AdminClient::setup_and_login(listening["admin"][0], PASSWORD);

    let attacker = udp_socket("127.0.0.1:0", FLOOD_WAIT);
    let burst: Vec<Vec<u8>> = (0..queries)
        .map(|i| dns_query(i as u16, "pool01.contoso.test"))
        .collect();
    let started = Instant::now();
    let answers = exchange(&attacker, dns, &burst, 100);
    let elapsed = started.elapsed();
    let (full, truncated) = tally(&answers);
    let silent = queries - answers.len();
    eprintln!(
        "{queries} queries in {elapsed:?}: {full} answered, {truncated} TC, {silent} dropped"
    );
    // The burst, plus what the rate refills while the flood lasts.
    let allowed = 200 + (200.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        full <= allowed,
        "{full} full answers, at most {allowed} allowed"
    );
    let limited = queries - full;
    assert!(
        truncated >= limited / 3 && silent >= limited / 3,
        "over the rate, about half slip (TC) and half are dropped: {truncated} TC, {silent} dropped of {limited}"
    );
    // Another /24 is its own source: answered in full, no TC.
    let bystander = udp_socket("127.0.1.1:0", ANSWER_WAIT);
    let checks: Vec<Vec<u8>> = (0..20)
        .map(|i| dns_query(50_000 + i, "pool01.contoso.test"))
        .collect();
    let answers = exchange(&bystander, dns, &checks, 1);
    assert_eq!(
        tally(&answers),
        (20, 0),
        "the other prefix is answered in full"
    );
    assert!(metric(&client, "poolgate_dns_rrl_slipped_total") >= truncated as u64);
    assert!(metric(&client, "poolgate_dns_rrl_dropped_total") >= silent as u64);
}

#[test]
fn a_sip_udp_flood_from_one_prefix_is_dropped_beyond_the_rate() {
    let messages = if crate::long() { 20_000 } else { 2_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    // The default: 200 requests a second per /24.
    let (config, _members) = config_with("");
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["admin", "sip-udp"]);
    let sip = listening["sip-udp"][0];
    let client = AdminClient::setup_and_login(listening["admin"][0], PASSWORD);

    let attacker = udp_socket("127.0.0.1:0", FLOOD_WAIT);
    let local = attacker.local_addr().expect("local");
    let flood: Vec<Vec<u8>> = (0..messages)
        .map(|i| options(local, i).into_bytes())
        .collect();
    let started = Instant::now();
    let answers = exchange(&attacker, sip, &flood, 100);
    let elapsed = started.elapsed();
    eprintln!(
        "{messages} OPTIONS in {elapsed:?}: {} answered",
        answers.len()
    );
    let allowed = 200 + (200.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        answers.len() <= allowed,
        "{} answers, at most {allowed} allowed",
        answers.len()
    );
    assert!(
        answers.len() >= 150,
        "the burst is answered: {}",
        answers.len()
    );
    let limited = metric(&client, "poolgate_sip_udp_rate_limited_total");
    assert!(
        limited >= (messages - allowed) as u64,
        "{limited} counted as rate-limited"
    );
    // Another /24 is answered.
    let bystander = udp_socket("127.0.1.1:0", ANSWER_WAIT);
    let local = bystander.local_addr().expect("local");
    let checks: Vec<Vec<u8>> = (0..20).map(|i| options(local, i).into_bytes()).collect();
    let answers = exchange(&bystander, sip, &checks, 1);
    assert_eq!(answers.len(), 20);
    assert!(answers.iter().all(|a| a.starts_with(b"SIP/2.0 200 OK")));
}
