//! TLS health checks against Front End simulators whose certificates come
//! from a test CA made here, the way a customer's internal CA issues them:
//! each names the server's FQDN, not its address. Four Front Ends on
//! 127.0.0.4x serve the roles of a Lync Front End: SIP over TLS ("5061",
//! OPTIONS answered 200), HTTPS ("443" internal web, "4443" external web)
//! and plain HTTP ("80", "8080"), each role on a free port shared by all
//! members (a monitor has one port). fe01 and fe02 are sound, fe03's
//! certificate has expired, fe04's is for another name.
//!
//! Without the CA the TLS roles are red with "unknown issuer"; after the CA
//! is uploaded through the API and chosen with `ca_bundle`, everything on
//! fe01 and fe02 is green and fe03 and fe04 are red with their reasons; a
//! replaced bundle takes effect without a restart; a bundle in use cannot
//! be deleted.

use std::sync::Arc;
use std::time::Duration;

use poolgate_e2e::{AdminClient, Poolgate, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const MEMBERS: [(&str, &str); 4] = [
    ("fe01", "127.0.0.41"),
    ("fe02", "127.0.0.42"),
    ("fe03", "127.0.0.43"),
    ("fe04", "127.0.0.44"),
];

/// (monitor, role, speaks TLS, monitor TOML without its port).
const ROLES: [(&str, &str, bool, &str); 5] = [
    (
        "fe-sip",
        "5061",
        true,
        "type = \"sip-options\"\ntransport = \"tls\"",
    ),
    ("fe-web-int", "443", true, "type = \"https\""),
    ("fe-web-ext", "4443", true, "type = \"https\""),
    ("fe-http-int", "80", false, "type = \"http\""),
    ("fe-http-ext", "8080", false, "type = \"http\""),
];

const TLS_MONITORS: [&str; 3] = ["fe-sip", "fe-web-int", "fe-web-ext"];

/// A CA that issues Front End certificates.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(cn: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("CA cert");
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server config presenting a certificate for `names`, valid now
    /// unless `expired`.
    fn server(&self, names: &[&str], expired: bool) -> tokio_rustls::TlsAcceptor {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("leaf params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2025, 1, 31);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A port free on every member address, TCP.
fn shared_free_port() -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind((MEMBERS[0].1, 0)).expect("bind");
        let port = first.local_addr().expect("addr").port();
        if MEMBERS[1..]
            .iter()
            .all(|(_, ip)| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on every member address");
}

/// Read a request head (up to the blank line), or `None` if the peer left.
async fn read_head<S>(stream: &mut S) -> Option<String>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() > 16 * 1024 {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8(request).ok()
}

/// Answer like a Front End: SIP OPTIONS gets 200 OK with the request's
/// dialog headers, anything else an HTTP 200 naming the member.
async fn answer<S>(mut stream: S, member: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(request) = read_head(&mut stream).await else {
        return;
    };
    let response = if request.starts_with("OPTIONS ") {
        let mut response = String::from("SIP/2.0 200 OK\r\n");
        for line in request.lines() {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
                response.push_str(line);
                response.push_str("\r\n");
            }
        }
        response.push_str("Content-Length: 0\r\n\r\n");
        response
    } else {
        let body = format!("Front End {member} OK");
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Every member on every role; the listeners close when the set drops.
async fn front_ends(ca: &TestCa, ports: &[u16]) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for (member, ip) in MEMBERS {
        let fqdn = format!("{member}.contoso.test");
        let acceptor = match member {
            "fe03" => ca.server(&[&fqdn], true),
            "fe04" => ca.server(&["fe99.contoso.test", "fabrikam.test"], false),
            _ => ca.server(&[&fqdn], false),
        };
        for ((_, _, tls, _), port) in ROLES.iter().zip(ports) {
            let listener = TcpListener::bind((ip, *port))
                .await
                .expect("bind Front End role");
            let (tls, acceptor) = (*tls, acceptor.clone());
            tasks.spawn(async move {
                let mut connections = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        if tls {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(stream, member).await;
                            }
                        } else {
                            answer(stream, member).await;
                        }
                    });
                    // Reap finished connections so the set stays small.
                    while connections.try_join_next().is_some() {}
                }
            });
        }
    }
    tasks
}

/// The pool config, shaped like a Lync Front End pool behind a hardware
/// load balancer: pool01 probed on SIP over TLS, and a virtual service per
/// web role (each on a free port of 127.0.0.1) probed on its own role; the
/// TLS monitors choose `ca_bundle` if given. As TOML text.
fn config_text(ports: &[u16], vip_ports: &[u16], ca_bundle: Option<&str>) -> String {
    let mut text = String::from(
        "[listen]\nadmin = \"127.0.0.1:0\"\n\n[dns]\nfail_open = false\n\n[[zone]]\nname = \"contoso.test\"\n",
    );
    for ((name, _, tls, kind), port) in ROLES.iter().zip(ports) {
        text.push_str(&format!(
            "\n[[monitor]]\nname = \"{name}\"\n{kind}\nport = {port}\ninterval_ms = 500\ntimeout_ms = 500\nrise = 1\nfall = 1\n"
        ));
        if let (true, Some(bundle)) = (tls, ca_bundle) {
            text.push_str(&format!("ca_bundle = \"{bundle}\"\n"));
        }
    }
    text.push_str(&format!(
        "\n[[pool]]\nname = \"pool01\"\nfqdn = \"pool01.contoso.test\"\nmonitor = \"fe-sip\"\nregistrar_port = {}\nregistrar_transport = \"tls\"\n",
        ports[0]
    ));
    for (member, ip) in MEMBERS {
        text.push_str(&format!(
            "\n[[pool.member]]\nname = \"{member}\"\nfqdn = \"{member}.contoso.test\"\naddress = \"{ip}\"\n"
        ));
    }
    for ((name, role, _, _), vip_port) in ROLES[1..].iter().zip(vip_ports) {
        text.push_str(&format!(
            "\n[[virtual_service]]\nname = \"web-{role}\"\naddress = \"127.0.0.1\"\nport = {vip_port}\npool = \"pool01\"\nmonitor = \"{name}\"\n"
        ));
    }
    text
}

/// The same config as JSON, for `PUT /api/v1/config`.
fn config(ports: &[u16], vip_ports: &[u16], ca_bundle: Option<&str>) -> Value {
    let table: toml::Table = config_text(ports, vip_ports, ca_bundle)
        .parse()
        .expect("test config is TOML");
    serde_json::to_value(table).expect("config as JSON")
}

/// (monitor, member, state, reason), from `GET /api/v1/status`.
fn health(admin: &AdminClient) -> Vec<(String, String, String, String)> {
    let status = admin.json("/api/v1/status");
    let mut out = Vec::new();
    for pool in status["pools"].as_array().expect("pools") {
        for member in pool["members"].as_array().expect("members") {
            for (monitor, health) in member["health"].as_object().expect("health") {
                out.push((
                    monitor.clone(),
                    member["name"].as_str().unwrap_or_default().to_owned(),
                    health["state"].as_str().unwrap_or_default().to_owned(),
                    health["reason"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

/// Wait until every (monitor, member) satisfies `want` (given its state
/// and reason); panics with the whole table after `timeout`.
fn wait_health(
    admin: &AdminClient,
    what: &str,
    want: impl Fn(&str, &str, &str, &str) -> bool,
) -> Vec<(String, String, String, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let table = health(admin);
        if table.len() == ROLES.len() * MEMBERS.len()
            && table
                .iter()
                .all(|(monitor, member, state, reason)| want(monitor, member, state, reason))
        {
            return table;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; health now:\n{table:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn put_pem(admin: &AdminClient, name: &str, pem: &str) -> (u16, Value) {
    let response = admin
        .request(reqwest::Method::PUT, &format!("/api/v1/ca-bundles/{name}"))
        .header("Content-Type", "application/x-pem-file")
        .body(pem.to_owned())
        .send()
        .expect("PUT CA bundle");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn put_config(admin: &AdminClient, config: &Value) -> (u16, Value) {
    let response = admin.put("/api/v1/config", config);
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_ends_with_an_internal_ca_are_green_and_bad_certificates_are_explained() {
    let ca = TestCa::new("Contoso Test Root CA");
    let ports: Vec<u16> = ROLES.iter().map(|_| shared_free_port()).collect();
    let _front_ends = front_ends(&ca, &ports).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let vip_ports: Vec<u16> = ROLES[1..]
        .iter()
        .map(|_| poolgate_e2e::free_port())
        .collect();
    let initial: toml::Table = config_text(&ports, &vip_ports, None)
        .parse()
        .expect("test config is TOML");
    let mut poolgate = Poolgate::start_with_config(&data, &initial, &[]);
    let admin_address = poolgate.address("admin");
    let admin = tokio::task::spawn_blocking(move || {
        AdminClient::setup_and_login(admin_address, "correct horse battery staple")
    })
    .await
    .expect("login");

    let tls = |monitor: &str| TLS_MONITORS.contains(&monitor);
    let pem = ca.pem.clone();
    tokio::task::spawn_blocking(move || {
        // Without the CA: the TLS roles verify against the public web
        // roots and fail, naming the issuer; plain HTTP is green.
        wait_health(&admin, "unknown issuer on the TLS roles", |monitor, member, state, reason| {
            match (tls(monitor), member) {
                (false, _) => state == "up",
                (true, "fe01" | "fe02") => {
                    state == "down"
                        && reason == "TLS: unknown issuer CN=Contoso Test Root CA (not in the public web roots)"
                }
                (true, _) => state == "down",
            }
        });

        // A config cannot name a bundle that is not uploaded.
        let (status, body) = put_config(&admin, &config(&ports, &vip_ports, Some("contoso")));
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["fields"][0]["field"], "monitor[0].ca_bundle", "{body}");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("\"contoso\""),
            "{body}"
        );

        // Uploads that are not CA certificates are refused, naming why.
        let (status, body) = put_pem(&admin, "contoso", "not a certificate");
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["fields"][0]["field"], "body");
        let key = rcgen::KeyPair::generate().expect("key").serialize_pem();
        let (status, body) = put_pem(&admin, "contoso", &format!("{pem}{key}"));
        assert_eq!(status, 422, "{body}");
        assert!(body["fields"][0]["message"].as_str().unwrap_or_default().contains("private key"));
        let (status, body) = put_pem(&admin, "no/such", &pem);
        assert!(status == 422 || status == 404, "{status} {body}");
        assert!(admin.json("/api/v1/ca-bundles")["ca_bundles"].as_array().expect("list").is_empty());

        // Upload the CA, then choose it.
        let (status, body) = put_pem(&admin, "contoso", &pem);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["certificates"][0]["subject"], "CN=Contoso Test Root CA");
        let (status, body) = put_config(&admin, &config(&ports, &vip_ports, Some("contoso")));
        assert_eq!(status, 200, "{body}");

        let table = wait_health(&admin, "fe01/fe02 green, fe03/fe04 red with reasons", |monitor, member, state, reason| {
            match (tls(monitor), member) {
                (false, _) | (true, "fe01" | "fe02") => state == "up",
                (true, "fe03") => state == "down" && reason == "TLS: certificate expired on 2025-01-31",
                (true, _) => {
                    state == "down"
                        && reason == "TLS: certificate is for fe99.contoso.test, fabrikam.test, not fe04.contoso.test"
                }
            }
        });
        assert_eq!(table.len(), 20);

        // The list shows the bundle, its certificate and who uses it.
        let list = admin.json("/api/v1/ca-bundles");
        let bundle = &list["ca_bundles"][0];
        assert_eq!(bundle["name"], "contoso");
        assert_eq!(bundle["certificates"][0]["subject"], "CN=Contoso Test Root CA");
        assert!(bundle["certificates"][0]["not_after"].is_string());
        assert_eq!(
            bundle["certificates"][0]["sha256_fingerprint"].as_str().map(str::len),
            Some(95)
        );
        assert_eq!(bundle["used_by"], json!(TLS_MONITORS));
        assert_eq!(admin.json("/api/v1/ca-bundles/contoso")["pem"], pem);

        // In use: no delete, and the answer names the monitors.
        let response = admin.delete("/api/v1/ca-bundles/contoso");
        assert_eq!(response.status().as_u16(), 409);
        let body: Value = response.json().expect("JSON");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(TLS_MONITORS.iter().all(|m| error.contains(m)), "{error}");

        // Replaced by another CA: the next probes use it, no restart.
        let other = TestCa::new("Fabrikam Root CA");
        let (status, body) = put_pem(&admin, "contoso", &other.pem);
        assert_eq!(status, 200, "{body}");
        wait_health(&admin, "unknown issuer after the bundle was replaced", |monitor, member, state, reason| {
            match (tls(monitor), member) {
                (false, _) => state == "up",
                (true, "fe01" | "fe02") => {
                    state == "down"
                        && reason == "TLS: unknown issuer CN=Contoso Test Root CA (not in CA bundle \"contoso\")"
                }
                (true, _) => state == "down",
            }
        });
        let (status, body) = put_pem(&admin, "contoso", &pem);
        assert_eq!(status, 200, "{body}");
        wait_health(&admin, "green again with the right CA", |monitor, member, state, _| {
            !matches!(member, "fe01" | "fe02") || !tls(monitor) || state == "up"
        });

        // Unused: deleted.
        let (status, body) = put_config(&admin, &config(&ports, &vip_ports, None));
        assert_eq!(status, 200, "{body}");
        assert_eq!(admin.delete("/api/v1/ca-bundles/contoso").status().as_u16(), 200);
        assert_eq!(admin.delete("/api/v1/ca-bundles/contoso").status().as_u16(), 404);
        wait_for("the bundle gone from the list", Duration::from_secs(5), || {
            admin.json("/api/v1/ca-bundles")["ca_bundles"].as_array().is_some_and(Vec::is_empty)
        });
    })
    .await
    .expect("checks");
    poolgate.terminate(Duration::from_secs(10));
}
