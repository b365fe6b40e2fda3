//! Simulated pool members for `make run` and UI tests: for every member of
//! every pool, listen on the member's address at each port poolgate would
//! probe or proxy to (monitor ports, virtual-service ports) and answer like a
//! Front End would: SIP OPTIONS and REGISTER get `200 OK`, HTTP gets a small
//! page naming the member. A port that a TLS-speaking monitor probes
//! (`sip-options` over TLS, `tls`, `https`) is served over TLS with a
//! self-signed certificate made at start, as a Front End serves SIP on 5061;
//! such a monitor needs `tls_verify = false` (or that certificate) against
//! the demo. Members live on 127.0.0.x, so this needs no privileges (except
//! for ports below 1024). Never used by the appliance itself.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Monitor, MonitorKind, Transport};

/// Every (member name, address:port) the demo serves.
pub(crate) fn endpoints(config: &Config) -> Vec<(String, SocketAddr)> {
    let mut out = BTreeSet::new();
    for pool in &config.pools {
        let mut ports: BTreeSet<u16> = config
            .monitors
            .iter()
            .filter(|m| {
                m.name == pool.monitor
                    || config
                        .virtual_services
                        .iter()
                        .any(|s| s.pool == pool.name && s.monitor == m.name)
            })
            .filter_map(|m| m.port)
            .collect();
        ports.insert(pool.registrar_port);
        for service in config
            .virtual_services
            .iter()
            .filter(|s| s.pool == pool.name)
        {
            ports.extend(&service.member_ports);
        }
        for member in &pool.members {
            for (address, port) in member
                .addresses
                .iter()
                .flat_map(|a| ports.iter().map(move |p| (a, p)))
            {
                out.insert((member.name.clone(), SocketAddr::new(*address, *port)));
            }
        }
    }
    out.into_iter().collect()
}

fn speaks_tls(monitor: &Monitor) -> bool {
    match monitor.kind {
        MonitorKind::Tls | MonitorKind::Https => true,
        MonitorKind::SipOptions => monitor.transport == Transport::Tls,
        MonitorKind::Tcp | MonitorKind::Http => false,
    }
}

/// The (member address, port) pairs a TLS-speaking monitor probes: served
/// over TLS on TCP.
pub(crate) fn tls_endpoints(config: &Config) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for pool in &config.pools {
        for monitor in config.monitors.iter().filter(|m| speaks_tls(m)) {
            let used = monitor.name == pool.monitor
                || config
                    .virtual_services
                    .iter()
                    .any(|s| s.pool == pool.name && s.monitor == monitor.name);
            if let (true, Some(port)) = (used, monitor.port) {
                out.extend(
                    pool.members
                        .iter()
                        .flat_map(|m| &m.addresses)
                        .map(|a| SocketAddr::new(*a, port)),
                );
            }
        }
    }
    out
}

/// A TLS acceptor with a fresh self-signed certificate for the demo.
fn acceptor() -> std::io::Result<TlsAcceptor> {
    let generated = rcgen::generate_simple_self_signed(vec!["poolgate-demo-member".to_owned()])
        .map_err(std::io::Error::other)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(vec![generated.cert.der().clone()], key)
    .map_err(std::io::Error::other)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve every endpoint until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> std::io::Result<()> {
    let tls_ports = tls_endpoints(config);
    let tls = if tls_ports.is_empty() {
        None
    } else {
        Some(acceptor()?)
    };
    for (name, address) in endpoints(config) {
        let tcp = TcpListener::bind(address).await?;
        let udp = UdpSocket::bind(address).await?;
        let tls = tls.clone().filter(|_| tls_ports.contains(&address));
        tracing::info!(member = %name, %address, tls = tls.is_some(), "Demo member listening");
        tokio::spawn(serve_tcp(tcp, tls, name.clone(), shutdown.clone()));
        tokio::spawn(serve_udp(udp, name, shutdown.clone()));
    }
    shutdown.cancelled().await;
    Ok(())
}

async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    name: String,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let name = name.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1800), async {
                match tls {
                    Some(tls) => answer_tcp(tls.accept(stream).await?, local.ip(), &name).await,
                    None => answer_tcp(stream, local.ip(), &name).await,
                }
            })
            .await;
        });
    }
}

async fn answer_tcp<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    local: IpAddr,
    name: &str,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        let request = String::from_utf8_lossy(&buffer[..n]);
        let response = if is_sip(&request) {
            sip_ok(&request, local)
        } else {
            let body = format!("poolgate demo member {name}\n");
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Member: {name}\r\n\r\n{body}",
                body.len()
            )
        };
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await?;
    }
}

async fn serve_udp(socket: UdpSocket, _name: String, shutdown: CancellationToken) {
    let mut buffer = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(_) => continue,
            },
        };
        let request = String::from_utf8_lossy(&buffer[..n]);
        if is_sip(&request) && !request.starts_with("ACK ") {
            let local = socket.local_addr().map_or(peer.ip(), |a| a.ip());
            let _ = socket
                .send_to(sip_ok(&request, local).as_bytes(), peer)
                .await;
        }
    }
}

fn is_sip(request: &str) -> bool {
    request
        .lines()
        .next()
        .is_some_and(|line| line.ends_with("SIP/2.0"))
}

/// `200 OK` echoing the headers a SIP response must copy.
fn sip_ok(request: &str, local: IpAddr) -> String {
    let mut response = String::from("SIP/2.0 200 OK\r\n");
    for line in request.lines().skip(1) {
        if line.is_empty() {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq"
        ) {
            response.push_str(line);
            response.push_str("\r\n");
        } else if matches!(name.as_str(), "to" | "t") {
            response.push_str(line);
            if !line.contains(";tag=") {
                response.push_str(";tag=demo");
            }
            response.push_str("\r\n");
        }
    }
    response.push_str(&format!(
        "Contact: <sip:{local}>\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER, SERVICE, NEGOTIATE\r\nContent-Length: 0\r\n\r\n"
    ));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_monitor_registrar_and_service_ports_of_every_member() {
        let path =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/lync-pool.toml");
        let config = crate::config::load(&path).expect("example");
        let endpoints = endpoints(&config);
        let fe01: Vec<u16> = endpoints
            .iter()
            .filter(|(n, _)| n == "fe01")
            .map(|(_, a)| a.port())
            .collect();
        assert_eq!(fe01, vec![14443, 15061, 18080]);
        assert_eq!(endpoints.len(), 9);
    }

    #[test]
    fn serves_tls_where_a_tls_speaking_monitor_probes() {
        let examples = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let plain = crate::config::load(&examples.join("lync-pool.toml")).expect("example");
        assert!(tls_endpoints(&plain).is_empty(), "tcp monitors only");
        let appliance =
            crate::config::load(&examples.join("appliance-pool.toml")).expect("example");
        let tls: Vec<String> = tls_endpoints(&appliance)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            tls,
            ["192.0.2.11:5061", "192.0.2.12:5061", "192.0.2.13:5061"]
        );
    }

    #[test]
    fn answers_sip_options_with_the_dialog_headers() {
        let request = "OPTIONS sip:fe01 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:poolgate>;tag=a\r\nTo: <sip:fe01>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert!(is_sip(request));
        let response = sip_ok(request, "127.0.0.11".parse().expect("ip"));
        assert!(response.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(response.contains("To: <sip:fe01>;tag=demo\r\n"));
        assert!(response.contains("CSeq: 1 OPTIONS\r\n"));
        assert!(!is_sip("GET / HTTP/1.1\r\n"));
    }
}
