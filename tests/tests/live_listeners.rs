//! Listeners follow the config live: a PUT that moves the DNS or SIP
//! listener is answered on the new address at once and no longer on the
//! old; a virtual service port added while a proxied connection on an
//! unchanged port keeps flowing; a moved admin listener kept once confirmed
//! on its new address, and put back when the confirmation does not come
//! or poolgate restarts first.
//! Loopback only (127.0.0.x).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use poolgate_e2e::dig::dig;
use poolgate_e2e::{AdminClient, Poolgate, free_port, loopback_example, parse_listening, wait_for};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The loopback example with fixed ports, so a test knows the old address.
fn config(dns: SocketAddr, sip_udp: SocketAddr) -> toml::Table {
    let mut config = loopback_example();
    config["listen"]["dns"] = toml::Value::Array(vec![dns.to_string().into()]);
    config["listen"]["sip_udp"] = sip_udp.to_string().into();
    config
}

fn put(client: &AdminClient, config: &Value) -> Value {
    let response = client.put("/api/v1/config", config);
    assert_eq!(response.status().as_u16(), 200, "PUT /api/v1/config");
    let body: Value = response.json().expect("JSON");
    assert!(body.get("restart_required").is_none(), "{body}");
    body
}

/// A REGISTER over UDP: the status line of the answer, or `None` when
/// nothing answers within a second.
fn register(target: SocketAddr) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let message = format!(
        "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKlive\r\n\
         From: <sip:alice@contoso.test>;tag=1\r\nTo: <sip:alice@contoso.test>\r\n\
         Call-ID: live-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(message.as_bytes(), target).ok()?;
    let mut buffer = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    let text = String::from_utf8_lossy(&buffer[..n]);
    text.lines().next().map(str::to_owned)
}

fn answers_dns(server: SocketAddr) -> bool {
    dig(server, &["pool01.contoso.test", "A"]).status == "NOERROR"
}

#[test]
fn dns_and_sip_move_to_their_new_addresses_at_once() {
    let (old_dns, old_sip) = (
        SocketAddr::new([127, 0, 0, 1].into(), free_port()),
        SocketAddr::new([127, 0, 0, 1].into(), free_port()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(dir.path(), &config(old_dns, old_sip), &[]);
    let listening = poolgate.listening(&["admin", "dns-udp", "sip-udp"]);
    let admin = listening["admin"][0];
    assert!(answers_dns(old_dns));
    assert!(register(old_sip).is_some_and(|line| line.starts_with("SIP/2.0 301")));
    let client = AdminClient::setup_and_login(admin, PASSWORD);

    let new_dns = SocketAddr::new([127, 0, 0, 2].into(), free_port());
    let new_sip = SocketAddr::new([127, 0, 0, 2].into(), free_port());
    let mut desired = client.json("/api/v1/config");
    desired["listen"]["dns"] = json!([new_dns.to_string()]);
    desired["listen"]["sip_udp"] = json!(new_sip.to_string());
    let preview = client.post("/api/v1/config/preview", &desired);
    assert_eq!(preview.status().as_u16(), 200);
    let preview: Value = preview.json().expect("JSON");
    assert!(preview.get("restart_required").is_none(), "{preview}");
    assert!(preview["confirm_by"].is_null(), "admin stays: {preview}");

    let body = put(&client, &desired);
    assert!(body["confirm_by"].is_null(), "{body}");
    // Acknowledged means served: no waiting.
    assert!(answers_dns(new_dns), "DNS on the new address");
    assert!(
        register(new_sip).is_some_and(|line| line.starts_with("SIP/2.0 301")),
        "SIP on the new address"
    );
    assert!(!answers_dns(old_dns), "DNS no longer on the old address");
    assert_eq!(register(old_sip), None, "SIP no longer on the old address");
    // The admin listener was not touched.
    assert_eq!(client.get("/api/v1/health").status().as_u16(), 200);
}

/// A member that greets each connection with `NAME` and echoes every line.
fn echo_member(name: &'static str, address: &str, port: u16) {
    let listener = TcpListener::bind((address, port)).expect("member bind");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = writeln!(stream, "{name}");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                for _ in 0..100 {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if stream.write_all(line.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

struct Relayed {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Relayed {
    fn open(address: SocketAddr) -> Option<Self> {
        let stream = TcpStream::connect(address).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut greeting = String::new();
        reader.read_line(&mut greeting).ok()?;
        greeting
            .starts_with("fe")
            .then_some(Self { stream, reader })
    }

    fn echo(&mut self, text: &str) -> String {
        self.stream
            .write_all(format!("{text}\n").as_bytes())
            .expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("echo");
        line.trim_end().to_owned()
    }
}

#[test]
fn a_service_port_added_live_leaves_open_connections_flowing() {
    let mut config = loopback_example();
    let service = config["virtual_service"][0]
        .as_table_mut()
        .expect("service");
    service.insert("extra_ports".into(), toml::Value::Array(Vec::new()));
    service.insert("persistence".into(), "none".into());
    let port = u16::try_from(service["port"].as_integer().expect("port")).expect("u16");
    let added = free_port();
    for monitor in config["monitor"].as_array_mut().expect("monitors") {
        let monitor = monitor.as_table_mut().expect("table");
        if monitor["name"].as_str() == Some("fe-web") {
            monitor.insert("port".into(), i64::from(port).into());
        }
    }
    for (name, address) in [
        ("fe01", "127.0.0.11"),
        ("fe02", "127.0.0.12"),
        ("fe03", "127.0.0.13"),
    ] {
        echo_member(name, address, port);
        echo_member(name, address, added);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(dir.path(), &config, &[]);
    let admin = poolgate.listening(&["admin", "vip:web-internal"])["admin"][0];
    let vip = SocketAddr::new([127, 0, 0, 1].into(), port);
    let mut open = None;
    wait_for(
        "a member to take a connection",
        Duration::from_secs(20),
        || {
            open = Relayed::open(vip);
            open.is_some()
        },
    );
    let mut open = open.expect("connected");
    assert_eq!(open.echo("before"), "before");

    let client = AdminClient::setup_and_login(admin, PASSWORD);
    let mut desired = client.json("/api/v1/config");
    desired["virtual_service"][0]["extra_ports"] = json!([added]);
    put(&client, &desired);
    let mut new = Relayed::open(SocketAddr::new([127, 0, 0, 1].into(), added))
        .expect("the added port relays at once");
    assert_eq!(new.echo("new port"), "new port");
    assert_eq!(
        open.echo("after"),
        "after",
        "the open connection kept flowing"
    );
    let moved = poolgate
        .log()
        .iter()
        .filter_map(|line| parse_listening(line))
        .filter(|(service, address)| service == "vip:web-internal" && address.port() == port)
        .count();
    assert_eq!(moved, 1, "the unchanged port was bound once");
}

/// Start with the admin listener on 127.0.0.1:0 and move it to 127.0.0.3.
struct Moved {
    _dir: tempfile::TempDir,
    poolgate: Poolgate,
    client: AdminClient,
    old: SocketAddr,
    new: SocketAddr,
    desired: Value,
}

fn moved_admin(extra: &[&str]) -> Moved {
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate =
        Poolgate::start_with_config(&dir.path().join("data"), &loopback_example(), extra);
    let old = poolgate.address("admin");
    let client = AdminClient::setup_and_login(old, PASSWORD);
    let new = SocketAddr::new([127, 0, 0, 3].into(), free_port());
    let mut desired = client.json("/api/v1/config");
    desired["listen"]["admin"] = json!(new.to_string());
    let preview: Value = client
        .post("/api/v1/config/preview", &desired)
        .json()
        .expect("JSON");
    assert!(preview["confirm_by"].is_string(), "{preview}");
    let body = put(&client, &desired);
    assert!(body["confirm_by"].is_string(), "{body}");
    Moved {
        _dir: dir,
        poolgate,
        client,
        old,
        new,
        desired,
    }
}

fn reachable(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

#[test]
fn a_moved_admin_listener_confirmed_on_its_new_address_stays() {
    let Moved {
        client: old_client,
        old,
        new,
        mut desired,
        poolgate: _poolgate,
        _dir,
    } = moved_admin(&[]);
    // Both serve while the move awaits confirmation.
    assert_eq!(old_client.get("/api/v1/health").status().as_u16(), 200);
    let mut new_client = AdminClient::new(new);
    new_client.login("admin", PASSWORD);
    // Other config changes wait; a confirmation through the old address
    // does not count.
    desired["dns"]["ttl"] = json!(11);
    let refused = old_client.put("/api/v1/config", &desired);
    assert_eq!(refused.status().as_u16(), 409);
    let elsewhere = old_client.post("/api/v1/config/confirm", &json!({}));
    assert_eq!(elsewhere.status().as_u16(), 409);
    let unauthenticated = AdminClient::new(new).post("/api/v1/config/confirm", &json!({}));
    assert_eq!(unauthenticated.status().as_u16(), 401);

    // The generated certificate names the new address.
    wait_for(
        "the certificate to name the new address",
        Duration::from_secs(10),
        || {
            new_client.json("/api/v1/certificate")["ip_addresses"]
                .as_array()
                .is_some_and(|ips| ips.iter().any(|ip| ip == &json!(new.ip().to_string())))
        },
    );

    let confirmed = new_client.post("/api/v1/config/confirm", &json!({}));
    assert_eq!(confirmed.status().as_u16(), 200);
    let body: Value = confirmed.json().expect("JSON");
    assert_eq!(body["admin"], new.to_string());
    wait_for(
        "the old admin listener to close",
        Duration::from_secs(10),
        || !reachable(old),
    );
    let again = new_client.post("/api/v1/config/confirm", &json!({}));
    assert_eq!(again.status().as_u16(), 409, "nothing left to confirm");
    assert_eq!(
        new_client.json("/api/v1/config")["listen"]["admin"],
        new.to_string()
    );
    // Changes are taken again.
    assert_eq!(
        new_client.put("/api/v1/config", &desired).status().as_u16(),
        200
    );
}

#[test]
fn an_unconfirmed_admin_move_is_reverted_after_the_deadline() {
    let Moved {
        poolgate,
        client,
        new,
        _dir,
        ..
    } = moved_admin(&["--confirm-timeout-s", "2"]);
    assert!(reachable(new), "the new address is served meanwhile");
    poolgate.wait_for_line(Duration::from_secs(30), |line| {
        line.contains("not confirmed in time").then_some(())
    });
    wait_for(
        "the new admin listener to close",
        Duration::from_secs(10),
        || !reachable(new),
    );
    let config = client.json("/api/v1/config");
    assert_eq!(
        config["listen"]["admin"], "127.0.0.1:0",
        "the config before the move"
    );
    assert_eq!(client.json("/api/v1/health")["config_version"], 3);
    let events = client.json("/api/v1/events?kind=config");
    assert!(
        events.to_string().contains("not confirmed"),
        "the revert names its source: {events}"
    );
}

#[test]
fn an_admin_move_awaiting_confirmation_is_reverted_by_a_restart() {
    let Moved {
        mut poolgate,
        new,
        _dir: dir,
        ..
    } = moved_admin(&[]);
    assert!(reachable(new), "the new address is served meanwhile");
    // poolgate stops (an update, a power cut) before anyone confirms.
    assert!(poolgate.terminate(Duration::from_secs(20)).success());
    drop(poolgate);
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &loopback_example(), &[]);
    let old = poolgate.address("admin");
    assert_eq!(
        old.ip().to_string(),
        "127.0.0.1",
        "the address before the move"
    );
    assert!(!reachable(new), "the unconfirmed address is not served");
    let mut client = AdminClient::new(old);
    client.login("admin", PASSWORD);
    assert_eq!(
        client.json("/api/v1/config")["listen"]["admin"],
        "127.0.0.1:0"
    );
    let events = client.json("/api/v1/events?kind=config");
    assert!(
        events.to_string().contains("not confirmed"),
        "the revert names its source: {events}"
    );
    let again = client.post("/api/v1/config/confirm", &json!({}));
    assert_eq!(again.status().as_u16(), 409, "nothing left to confirm");
}
