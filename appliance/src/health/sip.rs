//! SIP OPTIONS probes: one request, the first final response decides. Over
//! UDP the response must carry our Call-ID (a stray datagram is ignored);
//! over TCP and TLS the stream is ours, responses are framed by
//! Content-Length and read up to `MAX_MESSAGE` bytes. Provisional (1xx)
//! responses are skipped. Building and parsing are pure and unit-tested.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::error::{ProbeError, io_error};
use crate::config::Monitor;
use crate::config::Transport;

/// Largest response (headers and body) a probe reads.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// The OPTIONS request and the Call-ID that identifies its response.
pub(crate) fn options_request(
    transport: Transport,
    target: SocketAddr,
    local: SocketAddr,
    nonce: u64,
) -> (String, String) {
    let via = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    };
    let scheme = if transport == Transport::Tls {
        "sips"
    } else {
        "sip"
    };
    let call_id = format!("{nonce:016x}-health@poolgate");
    let target_host = host_port(target);
    let local_host = host_port(local);
    let request = format!(
        "OPTIONS {scheme}:{target_host} SIP/2.0\r\n\
         Via: SIP/2.0/{via} {local_host};branch=z9hG4bK{nonce:016x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <{scheme}:poolgate@{local_host}>;tag={tag:08x}\r\n\
         To: <{scheme}:{target_host}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <{scheme}:poolgate@{local_host}>\r\n\
         Accept: application/sdp\r\n\
         User-Agent: poolgate-health\r\n\
         Content-Length: 0\r\n\r\n",
        tag = nonce as u32,
    );
    (request, call_id)
}

fn host_port(address: SocketAddr) -> String {
    match address {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub code: u16,
    pub phrase: String,
    pub call_id: Option<String>,
    pub content_length: usize,
    /// Bytes of the head including the blank line.
    pub head_len: usize,
}

/// Parse the head of a response at the start of `data`: `Ok(None)` if the
/// head is not complete yet.
pub(crate) fn parse_response(data: &[u8]) -> Result<Option<Response>, ProbeError> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        if data.len() >= MAX_MESSAGE {
            return Err(ProbeError::Sip("response header too large".into()));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&data[..end])
        .map_err(|_| ProbeError::Sip("response is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let malformed = || ProbeError::Sip(format!("malformed status line {:?}", truncate(status)));
    let rest = status.strip_prefix("SIP/2.0 ").ok_or_else(malformed)?;
    let (code, phrase) = rest.split_once(' ').unwrap_or((rest, ""));
    let code: u16 = code.parse().map_err(|_| malformed())?;
    if !(100..=699).contains(&code) {
        return Err(malformed());
    }
    let mut call_id = None;
    let mut content_length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let value = value.trim();
        if name.eq_ignore_ascii_case("call-id") || name == "i" {
            call_id = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") || name == "l" {
            content_length = value
                .parse()
                .map_err(|_| ProbeError::Sip(format!("bad Content-Length {value:?}")))?;
        }
    }
    Ok(Some(Response {
        code,
        phrase: phrase.trim().to_owned(),
        call_id,
        content_length,
        head_len: end + 4,
    }))
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(60);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether a final response counts as up for this monitor.
pub(crate) fn judge(monitor: &Monitor, response: &Response) -> Result<(), ProbeError> {
    if monitor.expect_status.contains(&response.code) {
        Ok(())
    } else {
        Err(ProbeError::SipStatus {
            code: response.code,
            phrase: response.phrase.clone(),
        })
    }
}

pub(crate) async fn probe_udp(monitor: &Monitor, target: SocketAddr) -> Result<(), ProbeError> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(io_error)?;
    // Connected: the kernel filters other senders and reports ICMP port
    // unreachable as "connection refused".
    socket.connect(target).await.map_err(io_error)?;
    let local = socket.local_addr().map_err(io_error)?;
    let (request, call_id) = options_request(Transport::Udp, target, local, rand::random());
    socket.send(request.as_bytes()).await.map_err(io_error)?;
    let mut buffer = vec![0; MAX_MESSAGE];
    loop {
        let len = socket.recv(&mut buffer).await.map_err(io_error)?;
        let Ok(Some(response)) = parse_response(&buffer[..len]) else {
            continue;
        };
        if response.call_id.as_deref() != Some(call_id.as_str()) || response.code < 200 {
            continue;
        }
        return judge(monitor, &response);
    }
}

pub(crate) async fn probe_stream<S>(
    monitor: &Monitor,
    target: SocketAddr,
    local: SocketAddr,
    mut stream: S,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (request, _) = options_request(monitor.transport, target, local, rand::random());
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(response) = parse_response(&data)? {
            let total = response.head_len + response.content_length;
            if data.len() < total {
                break;
            }
            if response.code >= 200 {
                return judge(monitor, &response);
            }
            data.drain(..total);
        }
        if data.len() >= MAX_MESSAGE {
            return Err(ProbeError::Sip("response too large".into()));
        }
        let read = stream.read(&mut chunk).await.map_err(io_error)?;
        if read == 0 {
            return Err(ProbeError::Sip(
                "connection closed before a response".into(),
            ));
        }
        data.extend_from_slice(&chunk[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_complete_options_message() {
        let target: SocketAddr = "127.0.0.11:5060".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let (request, call_id) = options_request(Transport::Udp, target, local, 0xabc);
        assert!(request.starts_with("OPTIONS sip:127.0.0.11:5060 SIP/2.0\r\n"));
        assert!(request.contains("Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK"));
        assert!(request.contains(&format!("Call-ID: {call_id}\r\n")));
        assert!(request.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn parses_a_final_response() {
        let data = b"SIP/2.0 486 Busy Here\r\nCall-ID: x@y\r\nl: 3\r\n\r\nabc";
        let response = parse_response(data).expect("valid").expect("complete");
        assert_eq!(response.code, 486);
        assert_eq!(response.phrase, "Busy Here");
        assert_eq!(response.call_id.as_deref(), Some("x@y"));
        assert_eq!(response.content_length, 3);
        assert_eq!(response.head_len, data.len() - 3);
    }

    #[test]
    fn incomplete_and_malformed_heads() {
        assert_eq!(parse_response(b"SIP/2.0 200 OK\r\n"), Ok(None));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"SIP/2.0 abc OK\r\n\r\n").is_err());
        assert!(parse_response(b"SIP/2.0 99 Low\r\n\r\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_response(&data);
        }
    }
}
