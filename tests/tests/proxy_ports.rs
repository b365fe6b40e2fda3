//! Virtual services in the real binary with port mapping and PROXY v2:
//! a listening port reaches its mapped member port (and an extra port its
//! own), and a real HAProxy member with `accept-proxy` sees the address and
//! port of the test's own IPv4 and IPv6 clients. Loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use poolgate_e2e::sipp::Peer;
use poolgate_e2e::{Poolgate, free_port, loopback_example, parse_listening, poolgate_cli};

const MEMBERS: [(&str, &str); 3] = [
    ("fe01", "127.0.0.11"),
    ("fe02", "127.0.0.12"),
    ("fe03", "127.0.0.13"),
];

/// A member that answers each connection with `NAME:PORT\n` and closes.
/// The threads end with the test process.
fn member(name: &'static str, address: &str, port: u16) {
    let listener = TcpListener::bind((address, port)).expect("member bind");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = writeln!(stream, "{name}:{port}");
        }
    });
}

fn greeting(address: SocketAddr) -> String {
    let stream = TcpStream::connect(address).expect("connect to the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("greeting");
    line.trim_end().to_owned()
}

fn haproxy_available() -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("haproxy not installed (Debian package haproxy); skipping");
    }
    found
}

/// HAProxy on every member address at `port`, reading a PROXY header
/// (`accept-proxy`) and answering each HTTP request with the source
/// address and port that header gave it.
fn haproxy(dir: &std::path::Path, port: u16) -> Peer {
    let binds: String = MEMBERS
        .iter()
        .map(|(_, address)| format!("    bind {address}:{port} accept-proxy\n"))
        .collect();
    let config = format!(
        "global\n    maxconn 64\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n\n\
         frontend members\n{binds}    \
         http-request return status 200 content-type text/plain lf-string \"%[src]:%[src_port]\"\n"
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, config).expect("write haproxy.cfg");
    let peer = Peer(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    // Bound once binding the same address fails; nothing is sent to it.
    for (_, address) in MEMBERS {
        let mut bound = false;
        for _ in 0..500 {
            if TcpListener::bind((address, port)).is_err() {
                bound = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(bound, "haproxy never listened on {address}:{port}");
    }
    peer
}

/// One HTTP request to `vip` from a socket of `vip`'s family: the body
/// HAProxy answered and the client's own address.
fn seen_by_member(vip: SocketAddr) -> (String, SocketAddr) {
    let mut stream = TcpStream::connect(vip).expect("connect to the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let me = stream.local_addr().expect("local address");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: member\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned())
        .unwrap_or_default();
    (body, me)
}

fn table(text: &str) -> toml::Value {
    toml::Value::Table(toml::from_str(text).expect("TOML"))
}

#[test]
fn mapped_ports_reach_their_member_ports_and_haproxy_sees_the_real_client() {
    let mut config = loopback_example();
    let (p1, p2) = (free_port(), free_port());
    let (m1, m2) = (free_port(), free_port());
    let (v4_port, v6_port, haproxy_port) = (free_port(), free_port(), free_port());
    let v6_ok = TcpListener::bind(("::1", v6_port)).is_ok();
    assert!(v6_ok, "IPv6 loopback (::1) is needed for this test");

    // web-internal: P1 -> M1, P2 -> M2, probed on M1.
    let services = config
        .get_mut("virtual_service")
        .and_then(toml::Value::as_array_mut)
        .expect("example has a virtual service");
    let web = services[0].as_table_mut().expect("table");
    web.insert("port".into(), i64::from(p1).into());
    web.insert("member_port".into(), i64::from(m1).into());
    web.insert(
        "extra_ports".into(),
        toml::Value::Array(vec![table(&format!("port = {p2}\nmember_port = {m2}"))]),
    );
    web.insert("persistence".into(), "none".into());
    web.insert("scheduler".into(), "round-robin".into());
    // The PROXY v2 services, IPv4 and IPv6, to HAProxy on the members.
    for (name, address, port) in [
        ("proxied-v4", "127.0.0.1", v4_port),
        ("proxied-v6", "::1", v6_port),
    ] {
        services.push(table(&format!(
            "name = \"{name}\"\naddress = \"{address}\"\nport = {port}\n\
             member_port = {haproxy_port}\nsend_proxy = \"v2\"\npool = \"pool01\"\n\
             monitor = \"haproxy\"\n"
        )));
    }
    let monitors = config
        .get_mut("monitor")
        .and_then(toml::Value::as_array_mut)
        .expect("monitors");
    for monitor in monitors.iter_mut() {
        let monitor = monitor.as_table_mut().expect("table");
        if monitor["name"].as_str() == Some("fe-web") {
            monitor.insert("port".into(), i64::from(m1).into());
        }
    }
    monitors.push(table(&format!(
        "name = \"haproxy\"\ntype = \"tcp\"\nport = {haproxy_port}\n\
         interval_ms = 1000\ntimeout_ms = 500\n"
    )));

    for (name, address) in MEMBERS {
        member(name, address, m1);
        member(name, address, m2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let haproxy = if haproxy_available() {
        Some(haproxy(dir.path(), haproxy_port))
    } else {
        None
    };

    let data = dir.path().join("data");
    let mut poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let mut vips: Vec<(String, SocketAddr)> = Vec::new();
    poolgate.wait_for_line(Duration::from_secs(30), |line| {
        if let Some(found) = parse_listening(line)
            && found.0.starts_with("vip:")
        {
            vips.push(found);
        }
        (vips.len() == 4).then_some(())
    });
    let vip = |port: u16| {
        vips.iter()
            .find(|(_, address)| address.port() == port)
            .map(|(_, address)| *address)
            .unwrap_or_else(|| panic!("no VIP listens on port {port}: {vips:?}"))
    };

    // Port mapping: each listening port reaches its own member port, on
    // every member (round robin over three).
    for (port, member_port) in [(p1, m1), (p2, m2)] {
        let mut members = Vec::new();
        for _ in 0..3 {
            let answer = greeting(vip(port));
            let (name, seen_port) = answer.split_once(':').expect("NAME:PORT");
            assert_eq!(seen_port, member_port.to_string(), "via {port}");
            members.push(name.to_owned());
        }
        members.sort();
        assert_eq!(members, ["fe01", "fe02", "fe03"], "via {port}");
    }

    // PROXY v2: HAProxy logs (here: answers) the test client's own address
    // and port, not poolgate's.
    if haproxy.is_some() {
        for (port, family) in [(v4_port, "IPv4"), (v6_port, "IPv6")] {
            let vip = vip(port);
            for _ in 0..3 {
                let (seen, me) = seen_by_member(vip);
                assert_eq!(seen, format!("{}:{}", me.ip(), me.port()), "{family}");
            }
            let expected: IpAddr = if family == "IPv4" {
                "127.0.0.1".parse().expect("ip")
            } else {
                "::1".parse().expect("ip")
            };
            assert_eq!(vip.ip(), expected);
        }
    }

    poolgate.terminate(Duration::from_secs(10));
    drop(haproxy);
    // Export prints the mapping as it was given.
    let exported = poolgate_cli(
        &["export", "--data-dir", data.to_str().expect("utf-8 path")],
        "",
    );
    assert!(exported.status.success(), "{exported:?}");
    let exported = String::from_utf8(exported.stdout).expect("utf-8");
    let again: toml::Table = toml::from_str(&exported).expect("export is TOML");
    let services = again["virtual_service"].as_array().expect("services");
    let web = services
        .iter()
        .find(|s| s["name"].as_str() == Some("web-internal"))
        .expect("web-internal exported");
    assert_eq!(web["member_port"].as_integer(), Some(i64::from(m1)));
    assert_eq!(
        web["extra_ports"][0]["member_port"].as_integer(),
        Some(i64::from(m2))
    );
    let proxied = services
        .iter()
        .find(|s| s["name"].as_str() == Some("proxied-v6"))
        .expect("proxied-v6 exported");
    assert_eq!(proxied["send_proxy"].as_str(), Some("v2"));
}
