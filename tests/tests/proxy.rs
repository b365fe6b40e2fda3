//! The VIP proxy in the real binary: one `listening` line per service port,
//! each port forwarded to the same port on the member, and a service that
//! cannot bind reported without stopping the others.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use poolgate_e2e::{Poolgate, free_port, loopback_example, parse_listening};

/// Members answer each connection with `NAME:PORT\n`, then echo one line.
/// The threads end with the test process.
fn member(name: &'static str, address: &str, port: u16) {
    let listener = TcpListener::bind((address, port)).expect("member bind");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = writeln!(stream, "{name}:{port}");
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                if reader.read_line(&mut line).is_ok() {
                    let _ = stream.write_all(line.as_bytes());
                }
            });
        }
    });
}

fn greeting(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    stream.write_all(b"ping\n").expect("write");
    let mut echo = String::new();
    reader.read_line(&mut echo).expect("echo");
    assert_eq!(echo, "ping\n");
    line.trim_end().to_owned()
}

#[test]
fn every_service_port_listens_and_reaches_the_same_port_on_a_member() {
    let mut config = loopback_example();
    let services = config
        .get_mut("virtual_service")
        .and_then(toml::Value::as_array_mut)
        .expect("example has a virtual service");
    let web = services[0].as_table_mut().expect("table");
    web.insert("scheduler".into(), "round-robin".into());
    web.insert("persistence".into(), "none".into());
    let port = u16::try_from(web["port"].as_integer().expect("port")).expect("u16");
    let extra =
        u16::try_from(web["extra_ports"][0].as_integer().expect("extra port")).expect("u16");
    // Point the service's monitor at the members' port, so health probes
    // (when they run) find the members up.
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
    let services = config
        .get_mut("virtual_service")
        .and_then(toml::Value::as_array_mut)
        .expect("example has a virtual service");
    // A service on an address this host does not have: reported, not fatal.
    let elsewhere: toml::Table = toml::from_str(&format!(
        "name = \"elsewhere\"\naddress = \"192.0.2.1\"\nport = {}\npool = \"pool01\"",
        free_port()
    ))
    .expect("TOML");
    services.push(elsewhere.into());

    for (name, address) in [
        ("fe01", "127.0.0.11"),
        ("fe02", "127.0.0.12"),
        ("fe03", "127.0.0.13"),
    ] {
        member(name, address, port);
        member(name, address, extra);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut poolgate = Poolgate::start_with_config(dir.path(), &config, &[]);
    let mut vip: Vec<SocketAddr> = Vec::new();
    poolgate.wait_for_line(Duration::from_secs(30), |line| {
        if let Some((service, address)) = parse_listening(line)
            && service == "vip:web-internal"
        {
            vip.push(address);
        }
        (vip.len() == 2).then_some(())
    });
    vip.sort_by_key(|a| a.port() != port);
    assert_eq!(vip[0].port(), port);
    assert_eq!(vip[1].port(), extra);
    poolgate.wait_for_line(Duration::from_secs(10), |line| {
        (line.contains("cannot listen") && line.contains("192.0.2.1")).then_some(())
    });

    for address in &vip {
        let mut members = Vec::new();
        for _ in 0..3 {
            let answer = greeting(*address);
            let (name, member_port) = answer.split_once(':').expect("NAME:PORT");
            assert_eq!(member_port, address.port().to_string());
            members.push(name.to_owned());
        }
        members.sort();
        assert_eq!(
            members,
            ["fe01", "fe02", "fe03"],
            "round-robin over the pool"
        );
    }
    assert!(poolgate.terminate(Duration::from_secs(10)).success());
}
