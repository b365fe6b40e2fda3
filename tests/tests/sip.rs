//! The SIP redirect service end to end: the real binary, real sipp clients
//! over UDP and TCP, answers checked against `poolgate registrar`.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use poolgate_e2e::sipp::{run_sipp, sipp_available};
use poolgate_e2e::{AdminClient, Poolgate, free_port, http_get, loopback_example, poolgate_cli};

/// The example pool, with every member answering its TCP health monitor on
/// a loopback port so the pool stays up once monitors run. The listeners
/// live as long as the returned guard.
fn config_with_live_members() -> (toml::Table, Vec<TcpListener>) {
    let mut config = loopback_example();
    let port = free_port();
    let monitors = config
        .get_mut("monitor")
        .and_then(toml::Value::as_array_mut)
        .expect("[[monitor]]");
    for monitor in monitors {
        let monitor = monitor.as_table_mut().expect("table");
        if monitor.get("name").and_then(toml::Value::as_str) == Some("fe-sip") {
            monitor.insert("port".into(), i64::from(port).into());
        }
    }
    let listeners = (11..=13)
        .filter_map(|last| {
            TcpListener::bind(("127.0.0.".to_owned() + &last.to_string(), port)).ok()
        })
        .collect();
    (config, listeners)
}

/// The 301's Contact headers poolgate must send for `user`, as a POSIX
/// extended regex, from the CLI's logical sequence (all members up).
fn expected_contacts(config_file: &Path, user: &str) -> String {
    let output = poolgate_cli(
        &[
            "registrar",
            "--config",
            config_file.to_str().expect("utf-8"),
            &format!("sip:{user}@contoso.test"),
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let members: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(members.len(), 3, "{members:?}");
    let q = ["0\\.7", "0\\.3", "0\\.2"];
    members
        .iter()
        .zip(q)
        .map(|(member, q)| {
            format!("Contact: <sip:{member}\\.contoso\\.test:15061;transport=tls>;q={q}")
        })
        .collect::<Vec<_>>()
        .join("[[:space:]]+")
}

#[test]
fn sipp_register_gets_the_registrar_sequence_over_udp_and_tcp() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _members) = config_with_live_members();
    let mut poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["admin", "sip-udp", "sip-tcp"]);
    let config_file = dir.path().join("data.toml");
    let template = include_str!("sipp/register-301.xml");

    for (transport, service, user) in [
        ("u1", "sip-udp", "alice"),
        ("t1", "sip-tcp", "bob"),
        ("u1", "sip-udp", "carol.jones"),
    ] {
        let scenario = dir.path().join(format!("register-{transport}-{user}.xml"));
        std::fs::write(
            &scenario,
            // The regex sits in an XML attribute.
            template.replace(
                "CONTACTS_REGEX",
                &expected_contacts(&config_file, user)
                    .replace('<', "&lt;")
                    .replace('>', "&gt;"),
            ),
        )
        .expect("write scenario");
        let target = listening[service][0];
        let (ok, errors) = run_sipp(&scenario, transport, user, target);
        assert!(
            ok,
            "sipp {transport} {user} against {target} failed:\n{errors}"
        );
    }
    poolgate.terminate(Duration::from_secs(10));
}

/// What real clients found: with sipp over UDP, rport is filled in, a
/// CANCEL after the 301 gets 200 (not 481) with the 301's To tag, and a
/// REGISTER that comes back addressed to a member gets 482 (no endless
/// redirects).
#[test]
fn sipp_rport_cancel_and_a_request_that_came_back_get_their_answers() {
    if !sipp_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _members) = config_with_live_members();
    let mut poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["sip-udp"]);
    let scenario = dir.path().join("invite-cancel-loop.xml");
    std::fs::write(&scenario, include_str!("sipp/invite-cancel-loop.xml")).expect("scenario");
    let target = listening["sip-udp"][0];
    let (ok, errors) = run_sipp(&scenario, "u1", "carol", target);
    assert!(ok, "sipp against {target} failed:\n{errors}");
    poolgate.terminate(Duration::from_secs(10));
}

#[test]
fn registrar_cli_exits_64_on_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[listen]\nadmin = \"nonsense\"\n").expect("write");
    let output = poolgate_cli(
        &[
            "registrar",
            "--config",
            file.to_str().expect("utf-8"),
            "sip:a@b.test",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn registrar_api_matches_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _members) = config_with_live_members();
    let mut poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let admin = poolgate.address("admin");
    let config_file = dir.path().join("data.toml");
    let cli = poolgate_cli(
        &[
            "registrar",
            "--config",
            config_file.to_str().expect("utf-8"),
            "sip:Alice@Contoso.test",
        ],
        "",
    );
    let logical: Vec<String> = String::from_utf8_lossy(&cli.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let (status, _) = http_get(admin, "/api/v1/registrar?uri=sip:Alice@Contoso.test");
    assert_eq!(status, 401, "the lookup needs a login");
    let client = AdminClient::setup_and_login(admin, "correct horse battery staple");
    let http_get = |_: SocketAddr, path: &str| {
        let response = client.get(path);
        let status = response.status().as_u16();
        (status, response.text().expect("body"))
    };
    let (status, body) = http_get(admin, "/api/v1/registrar?uri=sip:Alice@Contoso.test");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["uri"], "sip:Alice@Contoso.test");
    assert_eq!(json["aor"], "alice@contoso.test");
    assert_eq!(json["logical"], serde_json::json!(logical));
    assert_eq!(json["home"], serde_json::json!(logical[0]));
    assert_eq!(json["backup_mode"], false);
    let (status, _) = http_get(admin, "/api/v1/registrar?uri=sip:alice@");
    assert_eq!(status, 422);
    let (status, body) = http_get(admin, "/api/v1/registrar/what-if?pool=pool01&member=fe02");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let fraction = json["fraction_hash_space"].as_f64().expect("number");
    assert!((fraction - 1.0 / 3.0).abs() < 1e-9, "{body}");
    let (status, _) = http_get(admin, "/api/v1/registrar/what-if?pool=pool01&member=nope");
    assert_eq!(status, 404);
    poolgate.terminate(Duration::from_secs(10));
}

/// A REGISTER over TLS to `target`, trusting only the certificates in
/// `trusted` (PEM) for the name `localhost`: the reply, or why the
/// handshake failed.
fn register_over_tls(target: SocketAddr, trusted: &[u8]) -> Result<String, String> {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(trusted) {
        roots.add(cert.expect("PEM certificate")).expect("add root");
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(target)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .map_err(|error| error.to_string())?;
        let register = "REGISTER sip:contoso.test SIP/2.0\r\n\
            Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1\r\n\
            From: <sip:alice@contoso.test>;tag=1\r\n\
            To: <sip:alice@contoso.test>\r\n\
            Call-ID: tls-1\r\nCSeq: 1 REGISTER\r\n\
            Contact: <sip:127.0.0.1:5061;transport=tls>\r\n\
            Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        tls.write_all(register.as_bytes()).await.expect("send");
        let mut buffer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buffer))
            .await
            .expect("reply in time")
            .expect("read");
        Ok(String::from_utf8_lossy(&buffer[..n]).into_owned())
    })
}

#[test]
fn sip_over_tls_redirects_with_the_appliance_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, _members) = config_with_live_members();
    config["listen"]
        .as_table_mut()
        .expect("listen")
        .insert("sip_tls".into(), "127.0.0.1:0".into());
    let data = dir.path().join("data");
    let poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let target = poolgate.address("sip-tls");

    // Trust exactly the certificate the appliance generated on first start.
    let generated = std::fs::read(data.join(poolgate::certs::CERT_FILE)).expect("certificate");
    let reply = register_over_tls(target, &generated)
        .expect("TLS handshake verifies the appliance certificate");
    assert!(
        reply.starts_with("SIP/2.0 301 Redirect request to Home Server\r\n"),
        "{reply}"
    );
    assert!(reply.contains(";q=0.7"), "{reply}");

    // A certificate installed through the API is what SIP over TLS presents next.
    let key = rcgen::KeyPair::generate().expect("key");
    let installed = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate")
        .pem();
    let admin =
        AdminClient::setup_and_login(poolgate.address("admin"), "correct horse battery staple");
    let response = admin.put(
        "/api/v1/certificate",
        &serde_json::json!({"certificate": installed, "key": key.serialize_pem()}),
    );
    assert_eq!(response.status().as_u16(), 200);
    let reply = register_over_tls(target, installed.as_bytes())
        .expect("TLS handshake verifies the installed certificate");
    assert!(reply.starts_with("SIP/2.0 301 "), "{reply}");
    assert!(
        register_over_tls(target, &generated).is_err(),
        "the generated certificate is no longer presented"
    );
}

#[test]
fn what_if_counts_the_users_seen_in_registers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _members) = config_with_live_members();
    let poolgate = Poolgate::start_with_config(&dir.path().join("data"), &config, &[]);
    let listening = poolgate.listening(&["admin", "sip-udp"]);
    let sip = listening["sip-udp"][0];
    let config_file = dir.path().join("data.toml");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let mut homed_on_fe02 = 0;
    for i in 0..30 {
        let user = format!("seen{i}");
        let register = format!(
            "REGISTER sip:contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKseen{i}\r\n\
             From: <sip:{user}@contoso.test>;tag={i}\r\nTo: <sip:{user}@contoso.test>\r\n\
             Call-ID: seen-{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        socket.send_to(register.as_bytes(), sip).expect("send");
        let mut buffer = [0u8; 2048];
        let (n, _) = socket.recv_from(&mut buffer).expect("301");
        assert!(buffer[..n].starts_with(b"SIP/2.0 301"));
        let home = poolgate_cli(
            &[
                "registrar",
                "--config",
                config_file.to_str().expect("utf-8"),
                &format!("sip:{user}@contoso.test"),
            ],
            "",
        );
        if String::from_utf8_lossy(&home.stdout).lines().next() == Some("fe02") {
            homed_on_fe02 += 1;
        }
    }
    let client =
        AdminClient::setup_and_login(listening["admin"][0], "correct horse battery staple");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = client.json("/api/v1/registrar/what-if?pool=pool01&member=fe02");
        if body["seen_users"] == 30 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seen users never recorded: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let fraction = body["fraction_seen_users"].as_f64().expect("number");
    assert!(
        (fraction - f64::from(homed_on_fe02) / 30.0).abs() < 1e-9,
        "{body} vs {homed_on_fe02}/30"
    );
}
