//! Drain and failover across the subsystems at once, end to end: the real
//! binary with simulated Front Ends (`poolgate demo-members`), a long-lived
//! VIP connection, new VIP connections, sipp REGISTERs and `dig`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolgate_e2e::dig::dig;
use poolgate_e2e::sipp::{run_sipp, sipp_available};
use poolgate_e2e::{
    AdminClient, Peer, Poolgate, binary, free_port, loopback_example, poolgate_cli, wait_for,
};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// The example pool on 127.0.0.31-33 with free ports everywhere, round-robin
/// without persistence so new connections spread over every member.
fn config() -> toml::Table {
    config_at(31)
}

/// The same on 127.0.0.`base`.. (tests running in parallel use their own).
fn config_at(base: u8) -> toml::Table {
    let mut config = loopback_example();
    let (sip_port, web_port) = (free_port(), free_port());
    for monitor in config["monitor"].as_array_mut().expect("monitors") {
        let port = if monitor["name"].as_str() == Some("fe-sip") {
            sip_port
        } else {
            web_port
        };
        monitor
            .as_table_mut()
            .expect("table")
            .insert("port".into(), i64::from(port).into());
    }
    let pool = config["pool"].as_array_mut().expect("pools")[0]
        .as_table_mut()
        .expect("pool");
    pool.insert("registrar_port".into(), i64::from(sip_port).into());
    for (i, member) in pool["member"]
        .as_array_mut()
        .expect("members")
        .iter_mut()
        .enumerate()
    {
        member.as_table_mut().expect("member").insert(
            "address".into(),
            format!("127.0.0.{}", usize::from(base) + i).into(),
        );
    }
    let service = config["virtual_service"].as_array_mut().expect("services")[0]
        .as_table_mut()
        .expect("vs");
    service.insert("scheduler".into(), "round-robin".into());
    service.insert("persistence".into(), "none".into());
    config
}

fn request(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .expect("write");
    let mut buffer = [0u8; 512];
    let n = stream.read(&mut buffer).expect("read");
    let text = String::from_utf8_lossy(&buffer[..n]);
    text.lines()
        .find_map(|line| line.strip_prefix("X-Member: "))
        .expect("a member answered")
        .to_owned()
}

/// Simulated members, poolgate on `config`, and a logged-in admin client,
/// ready once every member is up for `monitor`.
struct Running {
    demo: Peer,
    poolgate: Poolgate,
    listening: HashMap<String, Vec<SocketAddr>>,
    client: AdminClient,
}

fn start(dir: &Path, config: &toml::Table, monitor: &str) -> Running {
    let demo = demo(config, &dir.join("demo.toml"), &[]);
    let poolgate = Poolgate::start_with_config(&dir.join("var"), config, &[]);
    let listening = poolgate.listening(&["admin", "dns-udp", "sip-udp", "vip:web-internal"]);
    let client = AdminClient::setup_and_login(listening["admin"][0], PASSWORD);
    wait_for("every member up", Duration::from_secs(15), || {
        client
            .members()
            .iter()
            .all(|m| m["health"][monitor]["state"] == "up")
    });
    Running {
        demo,
        poolgate,
        listening,
        client,
    }
}

/// Open VIP connections until one lands on `member` (round-robin) and keep it.
fn connection_to(vip: SocketAddr, member: &str) -> TcpStream {
    (0..10)
        .find_map(|_| {
            let mut stream = TcpStream::connect(vip).expect("connect");
            (request(&mut stream) == member).then_some(stream)
        })
        .unwrap_or_else(|| panic!("round-robin never reached {member}"))
}

/// Drain, enable or disable `member` through the API.
fn act(client: &AdminClient, member: &str, action: &str) {
    let path = format!("/api/v1/pools/pool01/members/{member}/{action}");
    assert_eq!(
        client.post(&path, &json!({})).status().as_u16(),
        200,
        "{action} {member}"
    );
}

/// A user whose home (head of the logical sequence) is `home`, and the
/// member that comes next.
fn user_homed_on(config_file: &str, home: &str) -> (String, String) {
    (0..1000)
        .find_map(|i| {
            let user = format!("user{i}");
            let output = poolgate_cli(
                &[
                    "registrar",
                    "--config",
                    config_file,
                    &format!("sip:{user}@contoso.test"),
                ],
                "",
            );
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let sequence: Vec<&str> = text.lines().collect();
            (sequence.first() == Some(&home)).then(|| (user, sequence[1].to_owned()))
        })
        .expect("some user is homed on the member")
}

/// sipp REGISTER as `user`; the 301's first Contact (q=0.7) must be `first`.
fn register_redirects_first_to(dir: &Path, target: SocketAddr, user: &str, first: &str, port: i64) {
    if !sipp_available() {
        return;
    }
    let scenario = dir.join(format!("register-{user}-{first}.xml"));
    let regex =
        format!("Contact: &lt;sip:{first}\\.contoso\\.test:{port};transport=tls&gt;;q=0\\.7");
    std::fs::write(
        &scenario,
        include_str!("sipp/register-301.xml").replace("CONTACTS_REGEX", &regex),
    )
    .expect("scenario");
    let (ok, errors) = run_sipp(&scenario, "u1", user, target);
    assert!(
        ok,
        "REGISTER for {user} was not redirected to {first} first:\n{errors}"
    );
}

#[test]
fn a_drained_member_keeps_its_connections_gets_no_new_work_and_returns_home_on_enable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config();
    let Running {
        demo: _demo,
        poolgate: _poolgate,
        listening,
        client,
    } = start(dir.path(), &config, "fe-sip");
    let (vip, sip) = (listening["vip:web-internal"][0], listening["sip-udp"][0]);

    // A long-lived connection that lands on fe02.
    let mut long = connection_to(vip, "fe02");
    act(&client, "fe02", "drain");
    for _ in 0..3 {
        assert_eq!(
            request(&mut long),
            "fe02",
            "the existing connection keeps flowing"
        );
    }
    for i in 0..100 {
        let mut stream = TcpStream::connect(vip).expect("connect");
        assert_ne!(
            request(&mut stream),
            "fe02",
            "new connection {i} reached the draining member"
        );
    }
    let fe02 = &client.members()[1];
    assert_eq!(fe02["drain"]["state"], "draining", "{fe02}");
    assert_eq!(fe02["active_connections"], 1);

    // SIP: a user homed on fe02 is sent to the next member while it drains.
    let config_path = dir.path().join("var.toml");
    let (user, next) = user_homed_on(config_path.to_str().expect("utf-8"), "fe02");
    let port = config["pool"][0]["registrar_port"]
        .as_integer()
        .expect("port");
    register_redirects_first_to(dir.path(), sip, &user, &next, port);

    // The last connection closes: drained within a second.
    drop(long);
    let took = wait_for("drained", Duration::from_secs(5), || {
        client.members()[1]["drain"]["state"] == "drained"
    });
    assert!(
        took <= Duration::from_secs(1),
        "drained {took:?} after the last connection closed"
    );

    // Enable: users return home, and new connections reach fe02 again.
    act(&client, "fe02", "enable");
    register_redirects_first_to(dir.path(), sip, &user, "fe02", port);
    let reached = (0..6).any(|_| {
        let mut stream = TcpStream::connect(vip).expect("connect");
        request(&mut stream) == "fe02"
    });
    assert!(reached, "fe02 takes new connections after enable");
}

#[test]
fn a_disabled_member_loses_its_connections_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Running {
        demo: _demo,
        poolgate: _poolgate,
        listening,
        client,
    } = start(dir.path(), &config_at(41), "fe-web");
    let mut long = connection_to(listening["vip:web-internal"][0], "fe03");
    act(&client, "fe03", "disable");
    long.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let ended = loop {
        match long.read(&mut buffer) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => {}
        }
    };
    assert!(
        ended >= Duration::from_secs(4),
        "reset before the grace: {ended:?}"
    );
    assert!(ended < Duration::from_secs(12), "never reset: {ended:?}");
}

/// Simulated members for `config` (written to `file`), optionally without
/// some of them.
fn demo(config: &toml::Table, file: &Path, without: &[&str]) -> Peer {
    let mut config = config.clone();
    let pool = config["pool"].as_array_mut().expect("pools")[0]
        .as_table_mut()
        .expect("pool");
    pool["member"]
        .as_array_mut()
        .expect("members")
        .retain(|m| !without.contains(&m["name"].as_str().unwrap_or_default()));
    std::fs::write(file, toml::to_string(&config).expect("toml")).expect("write");
    Peer(
        Command::new(binary())
            .args(["demo-members", "--config"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("demo members"),
    )
}

fn pool_answer(dns: SocketAddr) -> std::collections::BTreeSet<String> {
    dig(dns, &["pool01.contoso.test", "A"]).data("A")
}

#[test]
fn dns_follows_drain_disable_restart_and_a_failed_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_at(51);
    let data = dir.path().join("var");
    let Running {
        demo: all_members,
        poolgate,
        listening,
        client,
    } = start(dir.path(), &config, "fe-sip");
    let dns = listening["dns-udp"][0];
    let all: std::collections::BTreeSet<String> = ["127.0.0.51", "127.0.0.52", "127.0.0.53"]
        .map(String::from)
        .into();
    assert_eq!(pool_answer(dns), all);

    // Draining: never in the pool answer, still under its own name.
    act(&client, "fe02", "drain");
    for _ in 0..20 {
        assert!(
            !pool_answer(dns).contains("127.0.0.52"),
            "a draining member was offered"
        );
    }
    assert_eq!(
        dig(dns, &["fe02.contoso.test", "A"]).data("A"),
        ["127.0.0.52".to_owned()].into()
    );

    // Killed while draining: the first answer after the restart still leaves it out.
    poolgate.signal(nix::sys::signal::Signal::SIGKILL);
    drop(poolgate);
    let poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let listening = poolgate.listening(&["admin", "dns-udp", "sip-udp"]);
    let dns = listening["dns-udp"][0];
    let first = pool_answer(dns);
    assert!(
        !first.contains("127.0.0.52") && first.len() == 2,
        "first answer after restart: {first:?}"
    );
    let mut client = AdminClient::new(listening["admin"][0]);
    client.login("admin", PASSWORD);
    assert_eq!(client.members()[1]["admin_state"], "draining");

    // Disabled: gone from every answer, its own name included.
    act(&client, "fe02", "enable");
    act(&client, "fe03", "disable");
    assert_eq!(dig(dns, &["fe03.contoso.test", "A"]).status, "NXDOMAIN");
    wait_for("fe02 back", Duration::from_secs(5), || {
        pool_answer(dns).contains("127.0.0.52")
    });
    assert!(!pool_answer(dns).contains("127.0.0.53"));

    // A member whose listeners die leaves the answer within interval × fall
    // + timeout (1 s × 2 + 0.5 s), and its users are sent to the next member.
    let config_path = dir.path().join("var.toml");
    let (user, next) = user_homed_on(config_path.to_str().expect("utf-8"), "fe01");
    drop(all_members);
    let _without_fe01 = demo(&config, &dir.path().join("demo-some.toml"), &["fe01"]);
    let gone = wait_for("fe01 out of DNS", Duration::from_secs(10), || {
        !pool_answer(dns).contains("127.0.0.51")
    });
    assert!(
        gone <= Duration::from_millis(2500 + 1500),
        "fe01 left the answer after {gone:?}"
    );
    let next = if next == "fe03" {
        "fe02".to_owned()
    } else {
        next
    };
    let port = config["pool"][0]["registrar_port"]
        .as_integer()
        .expect("port");
    register_redirects_first_to(dir.path(), listening["sip-udp"][0], &user, &next, port);
}

#[test]
fn a_drain_deadline_resets_stuck_connections_only_when_asked() {
    for (base, drop_at_deadline) in [(61u8, true), (64, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config_at(base);
        let pool = config["pool"].as_array_mut().expect("pools")[0]
            .as_table_mut()
            .expect("pool");
        pool.insert("drain_timeout_s".into(), 2.into());
        pool.insert("drop_at_deadline".into(), drop_at_deadline.into());
        let Running {
            demo: _demo,
            poolgate: _poolgate,
            listening,
            client,
        } = start(dir.path(), &config, "fe-web");
        let mut stuck = connection_to(listening["vip:web-internal"][0], "fe01");
        act(&client, "fe01", "drain");
        wait_for("overdue", Duration::from_secs(6), || {
            client.members()[0]["drain"]["overdue"] == true
        });
        std::thread::sleep(Duration::from_millis(500));
        stuck
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let alive = stuck
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            .is_ok()
            && {
                let mut buffer = [0u8; 256];
                matches!(stuck.read(&mut buffer), Ok(n) if n > 0)
            };
        if drop_at_deadline {
            assert!(!alive, "the stuck connection was not reset at the deadline");
        } else {
            assert!(alive, "without drop_at_deadline the connection continues");
            assert_eq!(client.members()[0]["drain"]["state"], "draining");
        }
    }
}
