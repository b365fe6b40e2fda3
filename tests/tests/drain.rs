//! Drain orchestration through the API: progress, the drain agent, and
//! resuming after a restart.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use poolgate_e2e::{AdminClient, Poolgate, free_port, loopback_example, wait_for};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn member(client: &AdminClient, index: usize) -> Value {
    client.members()[index].clone()
}

#[test]
fn an_idle_member_drains_at_once_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe02/drain", &json!({}))
            .status()
            .as_u16(),
        200
    );
    wait_for("drained", Duration::from_secs(5), || {
        member(&client, 1)["drain"]["state"] == "drained"
    });
    let fe02 = member(&client, 1);
    assert_eq!(fe02["admin_state"], "draining");
    assert_eq!(fe02["drain"]["overdue"], false);
    assert!(fe02["drain"]["since"].is_string(), "{fe02}");
    let events = client.json("/api/v1/events?kind=drain");
    assert!(
        events["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ready to take offline")),
        "{events}"
    );
    // Enable returns it to service and clears the drain.
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe02/enable", &json!({}))
            .status()
            .as_u16(),
        200
    );
    assert!(member(&client, 1)["drain"].is_null());
}

/// A drain agent on the member: answers the session count it is told.
fn agent(port: u16, sessions: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.12", port)).expect("bind agent");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && sessions.load(Ordering::SeqCst) != u64::MAX {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf);
                    let body = sessions.load(Ordering::SeqCst).to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

#[test]
fn the_drain_agent_holds_the_drain_until_sessions_end_and_a_deadline_marks_it_overdue() {
    let port = free_port();
    let sessions = Arc::new(AtomicU64::new(3));
    let agent_thread = agent(port, Arc::clone(&sessions));

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = loopback_example();
    let pool = config["pool"].as_array_mut().expect("pools")[0]
        .as_table_mut()
        .expect("pool");
    pool.insert("drain_agent_port".into(), i64::from(port).into());
    pool.insert("drain_agent_path".into(), "/sessions".into());
    pool.insert("drain_timeout_s".into(), 2.into());
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &config, &[]);
    let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe02/drain", &json!({}))
            .status()
            .as_u16(),
        200
    );

    wait_for("overdue", Duration::from_secs(6), || {
        member(&client, 1)["drain"]["overdue"] == true
    });
    assert_eq!(member(&client, 1)["drain"]["state"], "draining");
    sessions.store(0, Ordering::SeqCst);
    wait_for("drained", Duration::from_secs(5), || {
        member(&client, 1)["drain"]["state"] == "drained"
    });
    sessions.store(u64::MAX, Ordering::SeqCst);
    agent_thread.join().expect("agent");
}

#[test]
fn a_drain_resumes_after_sigkill_with_its_original_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("var");
    let config = loopback_example();
    let poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
    assert_eq!(
        client
            .post("/api/v1/pools/pool01/members/fe03/drain", &json!({}))
            .status()
            .as_u16(),
        200
    );
    wait_for("drained", Duration::from_secs(5), || {
        member(&client, 2)["drain"]["state"] == "drained"
    });
    let since = member(&client, 2)["drain"]["since"].clone();
    poolgate.signal(nix::sys::signal::Signal::SIGKILL);
    drop(poolgate);

    let poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let mut client = AdminClient::new(poolgate.address("admin"));
    client.login("admin", PASSWORD);
    let fe03 = member(&client, 2);
    assert_eq!(fe03["admin_state"], "draining");
    assert_eq!(fe03["eligible"], false);
    wait_for("drained again", Duration::from_secs(5), || {
        member(&client, 2)["drain"]["state"] == "drained"
    });
    assert_eq!(member(&client, 2)["drain"]["since"], since);
}
