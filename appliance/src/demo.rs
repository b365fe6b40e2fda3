//! Simulated pool members for `make run` and UI tests: for every member of
//! every pool, listen on the member's address at each port poolgate would
//! probe or proxy to (monitor ports, virtual-service ports) and answer like a
//! Front End would: SIP OPTIONS and REGISTER get `200 OK`, HTTP gets a small
//! page naming the member. Members live on 127.0.0.x, so this needs no
//! privileges. Never used by the appliance itself.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

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
            for port in &ports {
                out.insert((member.name.clone(), SocketAddr::new(member.address, *port)));
            }
        }
    }
    out.into_iter().collect()
}

/// Serve every endpoint until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> std::io::Result<()> {
    for (name, address) in endpoints(config) {
        let tcp = TcpListener::bind(address).await?;
        let udp = UdpSocket::bind(address).await?;
        tracing::info!(member = %name, %address, "Demo member listening");
        tokio::spawn(serve_tcp(tcp, name.clone(), shutdown.clone()));
        tokio::spawn(serve_udp(udp, name, shutdown.clone()));
    }
    shutdown.cancelled().await;
    Ok(())
}

async fn serve_tcp(listener: TcpListener, name: String, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let name = name.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1800),
                answer_tcp(stream, &name),
            )
            .await;
        });
    }
}

async fn answer_tcp(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        let request = String::from_utf8_lossy(&buffer[..n]);
        let local = stream.local_addr()?.ip();
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
